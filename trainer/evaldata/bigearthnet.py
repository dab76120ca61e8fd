"""BigEarthNet-S2: 120 x 120 px Sentinel-2 L2A patches (1.2 km), multi-label, 19 CORINE classes.

IBM's Llama3-MS-CLIP evaluation reads **v1.0** (``BigEarthNet-S2-v1.0.tar.gz``, labels in a
JSON file per patch, torchgeo's split CSVs); v2.0 (reBEN) is read too. The layout decides::

    v1.0  <root>/BigEarthNet-v1.0/<patch>/<patch>_B01.tif ... _B8A.tif      (IBM renames the
          <root>/BigEarthNet-v1.0/<patch>/<patch>_labels_metadata.json      folder "sentinel-2")
          <root>/bigearthnet-{train,val,test}.csv  (or {train,val,test}.csv), "S2 patch,S1 patch"
    v2.0  <root>/BigEarthNet-S2/<tile>/<patch>/<patch>_B01.tif ... _B8A.tif
          <root>/metadata.parquet  (patch_id, labels, split in train/validation/test, ...)

One single-band uint16 GeoTIFF per band at its native size: 10 m bands (B02 B03 B04 B08)
120 x 120, 20 m (B05 B06 B07 B8A B11 B12) 60 x 60, 60 m (B01 B09) 20 x 20; B10 is absent
(L2A). Every band is brought to 120 x 120 by :func:`upsample_bilinear` (bilinear, as IBM and
torchgeo do). Values are L2A bottom-of-atmosphere reflectance x 10000 without offset: v1.0 was
made by sen2cor from the 2017-18 products and released in 2019, before baseline 04.00; v2.0 by
sen2cor 2.11 from the same baseline 02.05/02.06 L1C products, which carry no radiometric
offset. Read as they are.

v1.0 labels use the 43-class CLC nomenclature and are mapped to the 19-class one
(:data:`V1_TO_19`); 11 of the 43 classes have no 19-class counterpart and are dropped, as in
BigEarthNet's 19-class models and IBM's reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from pipeline.dataset.bands import L2A_BANDS
from trainer.evaldata.base import BenchmarkDataError, BenchmarkDataset, BenchmarkEntry, read_tif
from trainer.evaldata.resample import upsample_bilinear
from trainer.evaldata.templates import BIGEARTHNET_PROMPT_NAMES

__all__ = ["IMAGE_SIZE", "V1_TO_19", "BigEarthNet"]

IMAGE_SIZE = (120, 120)
"""Every band is returned on the 10 m grid of a patch."""

CLASS_NAMES: tuple[str, ...] = tuple(BIGEARTHNET_PROMPT_NAMES)
"""The 19-class nomenclature in label order."""

V1_TO_19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Pastures": "Pastures",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None,
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Intertidal flats": None,
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}
"""v1.0's 43 class names (in v1.0's order) -> 19-class name, None where dropped (BigEarthNet's
``label_indices.json``, as used by torchgeo and IBM)."""

_V1_IMAGE_DIRS = ("BigEarthNet-v1.0", "sentinel-2")
_V2_IMAGE_DIR = "BigEarthNet-S2"
_V2_METADATA = "metadata.parquet"
_V2_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class BigEarthNet(BenchmarkDataset):
    """BigEarthNet-S2 v1.0 or v2.0, multi-label, 19 classes, L2A.

    Attributes:
        version: ``"1.0"`` or ``"2.0"``, from the layout found under ``root``.
    """

    name = "bigearthnet"
    classes = CLASS_NAMES
    multilabel = True
    level = "L2A"
    available_bands = tuple(band.name for band in L2A_BANDS)

    version: str

    def _index(self) -> list[BenchmarkEntry]:
        if (self.root / _V2_METADATA).is_file():
            self.version = "2.0"
            return self._index_v2()
        self.version = "1.0"
        return self._index_v1()

    def _read(self, entry: BenchmarkEntry) -> npt.NDArray[np.float32]:
        return np.stack(
            [
                upsample_bilinear(
                    read_tif(entry.location / f"{entry.key}_{band}.tif", [1])[0], IMAGE_SIZE
                )
                for band in self.bands
            ]
        )

    def _read_labels(self, entry: BenchmarkEntry) -> tuple[int, ...]:
        path = entry.location / f"{entry.key}_labels_metadata.json"
        if not path.is_file():
            raise BenchmarkDataError(f"missing file {path}")
        try:
            names = json.loads(path.read_text())["labels"]
        except (ValueError, KeyError, TypeError) as error:
            raise BenchmarkDataError(
                f"{path} is not a BigEarthNet label file: {error!r}"
            ) from error
        unknown = [name for name in names if name not in V1_TO_19]
        if unknown:
            raise BenchmarkDataError(f"{path}: labels outside the 43-class nomenclature: {unknown}")
        return _label_indices(V1_TO_19[name] for name in names)

    def _index_v1(self) -> list[BenchmarkEntry]:
        image_dir = next(
            (self.root / name for name in _V1_IMAGE_DIRS if (self.root / name).is_dir()), None
        )
        if image_dir is None:
            raise BenchmarkDataError(
                f"no BigEarthNet layout under {self.root}: expected {_V2_METADATA} (v2.0) or "
                f"a folder {' or '.join(_V1_IMAGE_DIRS)} (v1.0)"
            )
        if self.split is None:
            patches = sorted(path.name for path in image_dir.iterdir() if path.is_dir())
        else:
            patches = [
                line.split(",")[0].strip() for line in self._v1_split_lines() if line.strip()
            ]
        return [
            BenchmarkEntry(key=patch, location=image_dir / patch, labels=None) for patch in patches
        ]

    def _v1_split_lines(self) -> list[str]:
        names = (f"bigearthnet-{self.split}.csv", f"{self.split}.csv")
        for name in names:
            if (self.root / name).is_file():
                return (self.root / name).read_text().splitlines()
        raise BenchmarkDataError(
            f"missing split file: none of {', '.join(str(self.root / name) for name in names)}"
        )

    def _index_v2(self) -> list[BenchmarkEntry]:
        path = self.root / _V2_METADATA
        try:
            table = pq.read_table(path, columns=["patch_id", "labels", "split"])
        except (OSError, ValueError, KeyError) as error:
            raise BenchmarkDataError(f"cannot read {path}: {error}") from error
        rows = table.to_pylist()
        if self.split is not None:
            rows = [row for row in rows if row["split"] == _V2_SPLIT_NAMES[self.split]]
        unknown = sorted(
            {name for row in rows for name in row["labels"] if name not in CLASS_NAMES}
        )
        if unknown:
            raise BenchmarkDataError(f"{path}: labels outside the 19-class nomenclature: {unknown}")
        image_dir = self.root / _V2_IMAGE_DIR
        return [
            BenchmarkEntry(
                key=row["patch_id"],
                # A v2.0 patch sits in its tile's folder: the patch id less its "_<row>_<col>".
                location=image_dir / row["patch_id"].rsplit("_", 2)[0] / row["patch_id"],
                labels=_label_indices(row["labels"]),
            )
            for row in rows
        ]


def _label_indices(names: Iterable[str | None]) -> tuple[int, ...]:
    """19-class names -> sorted label indices (None, a dropped v1.0 class, is skipped)."""
    wanted = set(names)
    return tuple(index for index, name in enumerate(CLASS_NAMES) if name in wanted)
