"""METER-ML: methane-source infrastructure in the U.S., 720 m chips, 7 classes incl. Negative.

Layout (stanfordmlgroup.github.io/projects/meter-ml)::

    <root>/{train,val,test}_dataset.geojson      one Point feature per sample; properties
                                                  Latitude, Longitude, Type, Source, Image_Folder
    <root>/<Image_Folder>/sentinel-2-10m.npy      72 x 72 x 4  (B04 B03 B02 B08), uint16, HWC
    <root>/<Image_Folder>/sentinel-2-20m.npy      36 x 36 x 6  (B05 B06 B07 B8A B11 B12)
    <root>/<Image_Folder>/sentinel-2-60m.npy      12 x 12 x 3  (B01 B09 B10)
    (beside them naip.png and sentinel-1.npy, which this reader does not use)

``Image_Folder`` is ``<split>_images/<lat>_<lon>``; the train images are shipped in
``train_images/train_images_<k>/`` sub-folders, so a folder is looked for there too.
``Type`` is a class (``CAFOs``, ``Landfills``, ``Mines``, ``Negative``, ``ProcessingPlants``,
``RefineriesAndTerminals``, ``WWTreatment``) or several joined by ``-``. The protocol is
single-label (IBM's class folders), so multi-facility samples are left out and counted in
:attr:`MeterML.excluded_multilabel`; ``Roundabout`` means no facility and reads as Negative.

The 60 m file holds B10 (cirrus), which only Level-1C has: the imagery is L1C top-of-atmosphere
reflectance x 10000, read as it is. 20 m and 60 m bands are brought to the 72 x 72 grid of the
10 m file by :func:`upsample_bilinear`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trainer.evaldata.base import (
    SENTINEL2_BANDS,
    BenchmarkDataError,
    BenchmarkDataset,
    BenchmarkEntry,
)
from trainer.evaldata.resample import upsample_bilinear
from trainer.evaldata.templates import METERML_PROMPT_NAMES

__all__ = ["PRODUCTS", "MeterML"]

PRODUCTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "sentinel-2-10m.npy": (1, ("B04", "B03", "B02", "B08")),
    "sentinel-2-20m.npy": (2, ("B05", "B06", "B07", "B8A", "B11", "B12")),
    "sentinel-2-60m.npy": (6, ("B01", "B09", "B10")),
}
"""Sentinel-2 file -> (upsampling factor to the 10 m grid, bands in channel order)."""

TYPE_NAMES: tuple[str, ...] = tuple(METERML_PROMPT_NAMES)
"""GeoJSON ``Type`` values in label order."""

_BAND_SOURCE: dict[str, tuple[str, int, int]] = {
    band: (product, factor, channel)
    for product, (factor, bands) in PRODUCTS.items()
    for channel, band in enumerate(bands)
}
"""Band -> (file, upsampling factor, channel)."""

# Marked in the GeoJSON but meaning "none of the six facilities".
_NEGATIVE_ALIASES = {"Roundabout": "Negative"}


class MeterML(BenchmarkDataset):
    """METER-ML Sentinel-2, single-label, 7 classes, L1C (see the module docstring).

    Attributes:
        excluded_multilabel: Samples of the split left out because their ``Type`` names
            several facilities.
    """

    name = "meterml"
    classes = tuple(METERML_PROMPT_NAMES.values())
    multilabel = False
    level = "L1C"
    available_bands = SENTINEL2_BANDS

    excluded_multilabel: int

    def _index(self) -> list[BenchmarkEntry]:
        entries: list[BenchmarkEntry] = []
        self.excluded_multilabel = 0
        for split in self.splits if self.split is None else (self.split,):
            path = self.root / f"{split}_dataset.geojson"
            for folder, type_name in _features(path):
                facilities = {_NEGATIVE_ALIASES.get(part, part) for part in type_name.split("-")}
                unknown = facilities - set(TYPE_NAMES)
                if unknown:
                    raise BenchmarkDataError(f"{path}: unknown Type {type_name!r} for {folder}")
                if len(facilities) > 1:
                    self.excluded_multilabel += 1
                    continue
                entries.append(
                    BenchmarkEntry(
                        key=Path(folder).name,
                        location=self.root / folder,
                        labels=(TYPE_NAMES.index(facilities.pop()),),
                    )
                )
        return entries

    def _read(self, entry: BenchmarkEntry) -> npt.NDArray[np.float32]:
        folder = self._sample_folder(entry.location)
        arrays: dict[str, npt.NDArray[np.generic]] = {}
        planes = []
        for band in self.bands:
            product, factor, channel = _BAND_SOURCE[band]
            if product not in arrays:
                arrays[product] = _load_product(folder / product, len(PRODUCTS[product][1]))
            plane = arrays[product][:, :, channel]
            planes.append(
                upsample_bilinear(plane, (plane.shape[0] * factor, plane.shape[1] * factor))
            )
        return np.stack(planes)

    def _sample_folder(self, nominal: Path) -> Path:
        # <split>_images/<name> as written, else <split>_images/<split>_images_<k>/<name>.
        if nominal.is_dir():
            return nominal
        nested = sorted(nominal.parent.glob(f"{nominal.parent.name}_*/{nominal.name}"))
        if nested:
            return nested[0]
        raise BenchmarkDataError(
            f"missing sample folder {nominal} (also looked in {nominal.parent}/"
            f"{nominal.parent.name}_*/)"
        )


def _features(path: Path) -> list[tuple[str, str]]:
    """(Image_Folder, Type) of every feature of a split's GeoJSON."""
    if not path.is_file():
        raise BenchmarkDataError(f"missing split file {path}")
    try:
        features = json.loads(path.read_text())["features"]
        return [(f["properties"]["Image_Folder"], f["properties"]["Type"]) for f in features]
    except (ValueError, KeyError, TypeError) as error:
        raise BenchmarkDataError(f"{path} is not a METER-ML split file: {error!r}") from error


def _load_product(path: Path, channels: int) -> npt.NDArray[np.generic]:
    """Load one ``H x W x C`` Sentinel-2 array, checking its channel count."""
    if not path.is_file():
        raise BenchmarkDataError(f"missing file {path}")
    try:
        array: npt.NDArray[np.generic] = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BenchmarkDataError(f"cannot read {path}: {error}") from error
    if array.ndim != 3 or array.shape[2] != channels:
        raise BenchmarkDataError(f"{path} has shape {array.shape}, expected (H, W, {channels})")
    return array
