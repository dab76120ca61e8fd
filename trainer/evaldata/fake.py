"""Small fake copies of the benchmarks in their exact published layouts (torchgeo style).

Used by the tests and by the demo/CI ``eocap eval`` run. Files carry the real names, band
counts, band order, dtypes and sizes, and the real split and label files. Every band of a
fake file is constant, :func:`band_value` of the band and a tag (the sample's class for the
single-label datasets, its ordinal for BigEarthNet), so a test can tell which band, and whose,
a reader returned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.transform import from_origin

from pipeline.dataset.bands import band_by_name
from trainer.evaldata.base import SENTINEL2_BANDS
from trainer.evaldata.bigearthnet import CLASS_NAMES as BIGEARTHNET_CLASSES
from trainer.evaldata.bigearthnet import IMAGE_SIZE as BIGEARTHNET_SIZE
from trainer.evaldata.bigearthnet import V1_TO_19
from trainer.evaldata.eurosat import CLASS_FOLDERS as EUROSAT_FOLDERS
from trainer.evaldata.eurosat import FILE_BANDS as EUROSAT_BANDS
from trainer.evaldata.meterml import PRODUCTS as METERML_PRODUCTS
from trainer.evaldata.meterml import TYPE_NAMES as METERML_TYPES

__all__ = [
    "band_value",
    "write_fake_bigearthnet",
    "write_fake_eurosat",
    "write_fake_meterml",
]

_SPLITS = ("train", "val", "test")
_EUROSAT_SIZE = 64
_METERML_SIZE = 72  # 10 m pixels of a 720 m chip
_METERML_MIXED_TYPE = "CAFOs-Landfills"  # one multi-facility sample per split
_UTM_32N = "EPSG:32632"


def band_value(band: str, tag: int) -> int:
    """The DN every pixel of ``band`` holds in a fake file: 100 x spectral rank + ``tag``.

    Args:
        band: ESA band name.
        tag: 0..99, the sample's class (EuroSAT, METER-ML) or ordinal (BigEarthNet).
    """
    return 100 * (SENTINEL2_BANDS.index(band) + 1) + tag


def write_fake_eurosat(root: str | Path, *, per_class: int = 2, seed: int = 0) -> Path:
    """Write a fake EuroSAT-MS: ``EuroSAT_MS/<Class>/<Class>_<n>.tif`` + torchgeo split files.

    Each file is a 13-band uint16 64 x 64 GeoTIFF in the real band order (B8A last). Half of
    each class's files (rounded up) are in the test split, the rest in train and val, drawn
    with ``seed``.

    Returns:
        ``root``, to open the dataset at.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    split_names: dict[str, list[str]] = {split: [] for split in _SPLITS}
    for label, folder in enumerate(EUROSAT_FOLDERS):
        pixels = _constant_planes(EUROSAT_BANDS, label, (_EUROSAT_SIZE, _EUROSAT_SIZE))
        numbers = rng.permutation(per_class) + 1
        n_test = math.ceil(per_class / 2)
        for rank, number in enumerate(numbers):
            _write_tif(root / "EuroSAT_MS" / folder / f"{folder}_{number}.tif", pixels, 10)
            split = "test" if rank < n_test else _SPLITS[(rank - n_test) % 2]
            # The published split files list the RGB release's .jpg names.
            split_names[split].append(f"{folder}_{number}.jpg")
    for split, names in split_names.items():
        (root / f"eurosat-{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return root


def write_fake_bigearthnet(
    root: str | Path, *, per_split: int = 2, version: str = "1.0", seed: int = 0
) -> Path:
    """Write a fake BigEarthNet-S2 v1.0 or v2.0 (layouts in :mod:`trainer.evaldata.bigearthnet`).

    Each patch has 12 single-band uint16 GeoTIFFs at native size (10 m 120 px, 20 m 60 px,
    60 m 20 px) and 1-3 labels drawn with ``seed`` (43-class names for v1.0, 19-class for
    v2.0); ``per_split`` patches per split.

    Returns:
        ``root``, to open the dataset at.

    Raises:
        ValueError: for a version other than ``1.0`` and ``2.0``.
    """
    if version not in ("1.0", "2.0"):
        raise ValueError(f"BigEarthNet version {version!r}; versions are 1.0 and 2.0")
    root = Path(root)
    rng = np.random.default_rng(seed)
    nomenclature = list(V1_TO_19) if version == "1.0" else list(BIGEARTHNET_CLASSES)
    bands = tuple(band for band in SENTINEL2_BANDS if band != "B10")
    csv_lines: dict[str, list[str]] = {split: [] for split in _SPLITS}
    rows = []
    for ordinal, split in enumerate(split for split in _SPLITS for _ in range(per_split)):
        labels = sorted(rng.choice(nomenclature, size=int(rng.integers(1, 4)), replace=False))
        s1_name = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{ordinal}_0"
        if version == "1.0":
            patch = f"S2A_MSIL2A_20170613T101031_{ordinal}_0"
            folder = root / "BigEarthNet-v1.0" / patch
            _write_json(folder / f"{patch}_labels_metadata.json", _v1_label_file(labels))
            csv_lines[split].append(f"{patch},{s1_name}")
        else:
            tile = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
            patch = f"{tile}_{ordinal}_0"
            folder = root / "BigEarthNet-S2" / tile / patch
            rows.append(_v2_metadata_row(patch, labels, split, s1_name))
        for band in bands:
            factor = band_by_name(band).resolution_m // 10
            size = (BIGEARTHNET_SIZE[0] // factor, BIGEARTHNET_SIZE[1] // factor)
            plane = _constant_planes((band,), ordinal, size)
            _write_tif(folder / f"{patch}_{band}.tif", plane, 10 * factor)
    if version == "1.0":
        for split, lines in csv_lines.items():
            (root / f"bigearthnet-{split}.csv").write_text("".join(f"{line}\n" for line in lines))
    else:
        pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return root


def write_fake_meterml(root: str | Path, *, per_class: int = 2, seed: int = 0) -> Path:
    """Write a fake METER-ML: ``{split}_dataset.geojson`` + Sentinel-2 ``.npy`` files per sample.

    Per split, ``per_class`` samples of each of the 7 classes and one multi-facility sample
    (``CAFOs-Landfills``); locations drawn with ``seed``. The three Sentinel-2 arrays per
    sample are uint16 ``H x W x C`` (72, 36, 12 px); train samples sit in
    ``train_images/train_images_1/`` as in the download. NAIP and Sentinel-1 files are not
    written (no reader uses them).

    Returns:
        ``root``, to open the dataset at.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in _SPLITS:
        types = [name for name in METERML_TYPES for _ in range(per_class)] + [_METERML_MIXED_TYPE]
        features = []
        for type_name in types:
            latitude, longitude = rng.uniform(30, 45), rng.uniform(-120, -75)
            name = f"{latitude:.7f}_{longitude:.7f}"
            image_folder = f"{split}_images/{name}"
            nested = f"{split}_images/{split}_images_1/{name}" if split == "train" else image_folder
            tag = METERML_TYPES.index(type_name.split("-")[0])
            for product, (factor, bands) in METERML_PRODUCTS.items():
                size = (_METERML_SIZE // factor, _METERML_SIZE // factor)
                array = np.moveaxis(_constant_planes(bands, tag, size), 0, -1)
                (root / nested).mkdir(parents=True, exist_ok=True)
                np.save(root / nested / product, array)
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [longitude, latitude]},
                    "properties": {
                        "Latitude": latitude,
                        "Longitude": longitude,
                        "Type": type_name,
                        "Source": "fake",
                        "Image_Folder": image_folder,
                    },
                }
            )
        _write_json(
            root / f"{split}_dataset.geojson", {"type": "FeatureCollection", "features": features}
        )
    return root


def _constant_planes(
    bands: tuple[str, ...], tag: int, size: tuple[int, int]
) -> npt.NDArray[np.uint16]:
    values = np.array([band_value(band, tag) for band in bands], dtype=np.uint16)
    return np.broadcast_to(values[:, None, None], (len(bands), *size)).copy()


def _write_tif(path: Path, pixels: npt.NDArray[np.uint16], resolution_m: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = pixels.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype="uint16",
        crs=_UTM_32N,
        transform=from_origin(500_000, 5_000_000, resolution_m, resolution_m),
    ) as dst:
        dst.write(pixels)


def _write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=4))


def _v1_label_file(labels: list[str]) -> dict[str, object]:
    return {
        "labels": labels,
        "coordinates": {"ulx": 500_000, "uly": 5_000_000, "lrx": 501_200, "lry": 4_998_800},
        "projection": _UTM_32N,
        "tile_source": "S2A_MSIL1C_20170613T101031_N0205_R022_T33UUP_20170613T101525.SAFE",
        "acquisition_date": "2017-06-13 10:10:31",
    }


def _v2_metadata_row(patch: str, labels: list[str], split: str, s1_name: str) -> dict[str, object]:
    return {
        "patch_id": patch,
        "labels": labels,
        "split": {"val": "validation"}.get(split, split),
        "country": "Austria",
        "s1_name": s1_name,
        "s2v1_name": patch.replace("_N9999_R022_T33UUP", ""),
        "contains_seasonal_snow": False,
        "contains_cloud_or_shadow": False,
    }
