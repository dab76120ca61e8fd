"""EuroSAT-MS: 27,000 Sentinel-2 Level-1C chips, 64 x 64 px, 13 bands, 10 land-cover classes.

Layout (Zenodo ``EuroSAT_MS.zip``; torchgeo's ``EuroSATallBands.zip`` nests the same class
folders under ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif``)::

    <root>/EuroSAT_MS/<Class>/<Class>_<n>.tif     13-band uint16 GeoTIFF
    <root>/eurosat-{train,val,test}.txt           torchgeo's split files (file names)

The bands in each file are B01..B12 then **B8A last** (band 13): EuroSAT issue 7, torchgeo
issue 2458 / PR 2480. Values are L1C top-of-atmosphere reflectance x 10000 from products
processed before baseline 04.00 (no offset): eocap's convention already, read as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from trainer.evaldata.base import (
    SENTINEL2_BANDS,
    BenchmarkDataError,
    BenchmarkDataset,
    BenchmarkEntry,
    read_tif,
)
from trainer.evaldata.templates import EUROSAT_PROMPT_NAMES

__all__ = ["FILE_BANDS", "EuroSAT"]

FILE_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip
"""The band order inside every EuroSAT-MS file (B8A is band 13, not band 9)."""

CLASS_FOLDERS: tuple[str, ...] = tuple(EUROSAT_PROMPT_NAMES)
"""Class folder names in label order."""

# Where the class folders sit below ``root``, in the layouts the dataset is published in.
_IMAGE_DIRS = (
    Path("."),
    Path("EuroSAT_MS"),
    Path("ds/images/remote_sensing/otherDatasets/sentinel_2/tif"),
)


class EuroSAT(BenchmarkDataset):
    """EuroSAT-MS, single-label, 10 classes, L1C (see the module docstring for the layout)."""

    name = "eurosat"
    classes = tuple(EUROSAT_PROMPT_NAMES.values())
    multilabel = False
    level = "L1C"
    available_bands = SENTINEL2_BANDS

    def _index(self) -> list[BenchmarkEntry]:
        image_dir = self._image_dir()
        on_disk = {
            path.stem: (path, label)
            for label, folder in enumerate(CLASS_FOLDERS)
            for path in sorted((image_dir / folder).glob(f"{folder}_*.tif"))
        }
        if self.split is None:
            stems = list(on_disk)
        else:
            stems = self._split_stems()
            absent = [stem for stem in stems if stem not in on_disk]
            if absent:
                raise BenchmarkDataError(
                    f"eurosat-{self.split}.txt lists {len(absent)} file(s) missing under "
                    f"{image_dir}, e.g. {', '.join(absent[:3])}"
                )
        return [
            BenchmarkEntry(key=stem, location=on_disk[stem][0], labels=(on_disk[stem][1],))
            for stem in stems
        ]

    def _read(self, entry: BenchmarkEntry) -> npt.NDArray[np.float32]:
        return read_tif(entry.location, [FILE_BANDS.index(band) + 1 for band in self.bands])

    def _image_dir(self) -> Path:
        for relative in _IMAGE_DIRS:
            candidate = self.root / relative
            if all((candidate / folder).is_dir() for folder in CLASS_FOLDERS):
                return candidate
        tried = ", ".join(str(self.root / relative) for relative in _IMAGE_DIRS)
        raise BenchmarkDataError(
            f"no EuroSAT-MS class folders ({', '.join(CLASS_FOLDERS)}) under any of: {tried}"
        )

    def _split_stems(self) -> list[str]:
        # The split files come from the RGB release (torchgeo rewrites ``.jpg`` to ``.tif``):
        # names are matched by stem so either extension works.
        path = self.root / f"eurosat-{self.split}.txt"
        if not path.is_file():
            raise BenchmarkDataError(
                f"missing split file {path} (torchgeo's EuroSAT split files; "
                "see docs/evaluation-datasets.md)"
            )
        return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]
