"""The benchmark readers on fake copies in the published layouts (trainer/evaldata)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from pipeline.dataset.bands import BAND_PRESETS
from trainer.evaldata import (
    BENCHMARKS,
    TEMPLATES,
    BenchmarkDataError,
    BigEarthNet,
    EuroSAT,
    MeterML,
    open_benchmark,
    prompts,
)
from trainer.evaldata.fake import (
    band_value,
    write_fake_bigearthnet,
    write_fake_eurosat,
    write_fake_meterml,
)
from trainer.evaldata.resample import upsample_bilinear

LLAMA3_BANDS = BAND_PRESETS["llama3-ms-clip-10"]


@pytest.fixture(scope="module")
def eurosat_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_eurosat(tmp_path_factory.mktemp("eurosat"), per_class=3)


@pytest.fixture(scope="module")
def bigearthnet_v1_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_bigearthnet(tmp_path_factory.mktemp("ben1"), per_split=2, version="1.0")


@pytest.fixture(scope="module")
def bigearthnet_v2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_bigearthnet(tmp_path_factory.mktemp("ben2"), per_split=2, version="2.0")


@pytest.fixture(scope="module")
def meterml_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_meterml(tmp_path_factory.mktemp("meterml"), per_class=2)


def _copy(root: Path, tmp_path: Path) -> Path:
    """A private copy of a module-wide fake, for tests that damage it."""
    return Path(shutil.copytree(root, tmp_path / "copy"))


def _assert_fake_bands(pixels: np.ndarray, bands: tuple[str, ...], tag: int) -> None:
    expected = [band_value(band, tag) for band in bands]
    assert pixels[:, 0, 0].tolist() == expected
    assert (pixels == np.array(expected, dtype=np.float32)[:, None, None]).all()


# --- EuroSAT-MS ----------------------------------------------------------------------------


def test_eurosat_reads_the_test_split_with_folder_labels(eurosat_root: Path) -> None:
    dataset = open_benchmark("eurosat", eurosat_root, bands=LLAMA3_BANDS)

    assert isinstance(dataset, EuroSAT)
    assert (dataset.multilabel, dataset.level, len(dataset.classes)) == (False, "L1C", 10)
    assert len(dataset) == 10 * 2  # ceil(3 / 2) of each class's 3 files
    for index in range(len(dataset)):
        sample = dataset[index]
        (label,) = sample.labels
        folder = sample.key.rsplit("_", 1)[0]
        assert dataset.classes[label] == folder.lower()
        assert sample.pixels.shape == (10, 64, 64)
        assert sample.pixels.dtype == np.float32
        _assert_fake_bands(sample.pixels, LLAMA3_BANDS, tag=label)


def _keys(dataset: EuroSAT) -> list[str]:
    return [dataset[i].key for i in range(len(dataset))]


def test_eurosat_splits_partition_the_files(eurosat_root: Path) -> None:
    keys = {
        split: _keys(EuroSAT(eurosat_root, bands=["B04"], split=split)) for split in EuroSAT.splits
    }
    every = _keys(EuroSAT(eurosat_root, bands=["B04"], split=None))

    assert len(every) == len(set(every)) == 30
    assert sorted(key for split_keys in keys.values() for key in split_keys) == sorted(every)


def test_eurosat_maps_bands_of_a_file_written_in_the_real_13_band_order(
    eurosat_root: Path, tmp_path: Path
) -> None:
    # The published files hold B01..B12, then B8A as band 13 (EuroSAT issue 7, torchgeo
    # PR 2480). Band k of this file holds 100 * k, so each value names its file position.
    root = _copy(eurosat_root, tmp_path)
    path = root / "EuroSAT_MS" / "Forest" / "Forest_1.tif"
    positions = np.arange(1, 14, dtype=np.uint16) * 100
    with rasterio.open(
        path, "w", driver="GTiff", height=64, width=64, count=13, dtype="uint16",
        crs="EPSG:32632", transform=from_origin(500_000, 5_000_000, 10, 10),
    ) as dst:  # fmt: skip
        dst.write(np.broadcast_to(positions[:, None, None], (13, 64, 64)))
    dataset = EuroSAT(root, bands=LLAMA3_BANDS, split=None)
    sample = dataset[_keys(dataset).index("Forest_1")]

    got = (sample.pixels[:, 0, 0] / 100).astype(int).tolist()

    # B02 B03 B04 B05 B06 B07 B08 are bands 2..8; B8A is band 13; B11, B12 are bands 11, 12.
    assert got == [2, 3, 4, 5, 6, 7, 8, 13, 11, 12]
    # Not what dropping file indices [0, 9, 10] (IBM) feeds the B8A, B11, B12 slots:
    # bands 9 (B09), 12 (B12) and 13 (B8A).
    assert got[7:] != [9, 12, 13]


def test_eurosat_finds_the_torchgeo_archive_layout(eurosat_root: Path, tmp_path: Path) -> None:
    root = _copy(eurosat_root, tmp_path)
    nested = root / "ds/images/remote_sensing/otherDatasets/sentinel_2"
    nested.mkdir(parents=True)
    (root / "EuroSAT_MS").rename(nested / "tif")

    assert len(EuroSAT(root, bands=["B8A"])) == 20


def test_eurosat_errors_name_the_missing_or_corrupt_file(
    eurosat_root: Path, tmp_path: Path
) -> None:
    root = _copy(eurosat_root, tmp_path)
    dataset = EuroSAT(root, bands=["B02"])
    first, second = dataset[0].key, dataset[1].key
    missing = root / "EuroSAT_MS" / first.rsplit("_", 1)[0] / f"{first}.tif"
    corrupt = root / "EuroSAT_MS" / second.rsplit("_", 1)[0] / f"{second}.tif"
    missing.unlink()
    corrupt.write_bytes(b"not a tiff")

    with pytest.raises(BenchmarkDataError, match=re.escape(str(missing))):
        dataset[0]
    with pytest.raises(BenchmarkDataError, match=re.escape(str(corrupt))):
        dataset[1]
    with pytest.raises(BenchmarkDataError, match=f"lists 1 file.*{first}"):
        EuroSAT(root, bands=["B02"])


def test_eurosat_needs_its_split_file_and_class_folders(eurosat_root: Path, tmp_path: Path) -> None:
    root = _copy(eurosat_root, tmp_path)
    (root / "eurosat-test.txt").unlink()
    with pytest.raises(BenchmarkDataError, match=r"eurosat-test\.txt"):
        EuroSAT(root, bands=["B02"])
    with pytest.raises(BenchmarkDataError, match="no EuroSAT-MS class folders"):
        EuroSAT(tmp_path / "empty", bands=["B02"])


# --- band and split requests ---------------------------------------------------------------


def test_a_band_the_dataset_lacks_is_refused_with_what_it_has(
    bigearthnet_v1_root: Path, eurosat_root: Path
) -> None:
    with pytest.raises(ValueError, match=r"bigearthnet has no band B10; its files hold B01, .*B8A"):
        BigEarthNet(bigearthnet_v1_root, bands=["B02", "B10"])
    with pytest.raises(ValueError, match="names a band twice"):
        EuroSAT(eurosat_root, bands=["B02", "b02"])
    with pytest.raises(ValueError, match="no bands"):
        EuroSAT(eurosat_root, bands=[])
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        EuroSAT(eurosat_root, bands=["B02"], split="validation")
    with pytest.raises(ValueError, match="unknown benchmark 'ucm'"):
        open_benchmark("ucm", eurosat_root, bands=["B02"])


def test_bands_come_back_in_the_order_asked(eurosat_root: Path) -> None:
    sample = EuroSAT(eurosat_root, bands=["b12", "B01", "B8A", "B10"])[0]

    _assert_fake_bands(sample.pixels, ("B12", "B01", "B8A", "B10"), tag=sample.labels[0])


def test_the_registry_holds_the_three_benchmarks() -> None:
    assert {"eurosat": EuroSAT, "bigearthnet": BigEarthNet, "meterml": MeterML} == BENCHMARKS


# --- BigEarthNet ---------------------------------------------------------------------------


def test_bigearthnet_v1_resamples_every_band_to_120_px(bigearthnet_v1_root: Path) -> None:
    all_bands = BigEarthNet.available_bands
    dataset = open_benchmark("bigearthnet", bigearthnet_v1_root, bands=all_bands)

    assert isinstance(dataset, BigEarthNet)
    assert (dataset.version, dataset.multilabel, dataset.level) == ("1.0", True, "L2A")
    assert len(dataset.classes) == 19
    assert len(dataset) == 2
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample.pixels.shape == (12, 120, 120)
        ordinal = int(sample.key.split("_")[-2])
        _assert_fake_bands(sample.pixels, all_bands, tag=ordinal)


def test_bigearthnet_v1_maps_43_labels_to_19(bigearthnet_v1_root: Path, tmp_path: Path) -> None:
    root = _copy(bigearthnet_v1_root, tmp_path)
    dataset = BigEarthNet(root, bands=["B02"])
    patch = dataset[0].key
    labels_file = root / "BigEarthNet-v1.0" / patch / f"{patch}_labels_metadata.json"
    content = json.loads(labels_file.read_text())
    content["labels"] = [
        "Sea and ocean", "Continuous urban fabric", "Airports", "Discontinuous urban fabric",
    ]  # fmt: skip
    labels_file.write_text(json.dumps(content))

    labels = dataset[0].labels

    # Both urban fabrics -> "Urban fabric" (0), sea -> "Marine waters" (18), airports dropped.
    assert labels == (0, 18)
    assert [dataset.classes[i] for i in labels] == ["Urban fabric", "Marine waters"]

    content["labels"] = ["Urban fabric"]  # a 19-class name is not a v1.0 label
    labels_file.write_text(json.dumps(content))
    with pytest.raises(BenchmarkDataError, match="outside the 43-class nomenclature"):
        dataset[0]
    labels_file.write_text("{")
    with pytest.raises(BenchmarkDataError, match=re.escape(str(labels_file))):
        dataset[0]


def test_bigearthnet_v1_reads_ibm_and_tu_berlin_names(
    bigearthnet_v1_root: Path, tmp_path: Path
) -> None:
    # IBM renames the image folder "sentinel-2"; BigEarthNet-MM's repository names the
    # split files train.csv, val.csv, test.csv.
    root = _copy(bigearthnet_v1_root, tmp_path)
    (root / "BigEarthNet-v1.0").rename(root / "sentinel-2")
    (root / "bigearthnet-val.csv").rename(root / "val.csv")

    assert len(BigEarthNet(root, bands=["B02"], split="val")) == 2
    assert len(BigEarthNet(root, bands=["B02"], split=None)) == 6
    (root / "bigearthnet-test.csv").unlink()
    with pytest.raises(BenchmarkDataError, match="missing split file"):
        BigEarthNet(root, bands=["B02"])


def test_bigearthnet_errors_name_the_missing_or_corrupt_band(
    bigearthnet_v1_root: Path, tmp_path: Path
) -> None:
    root = _copy(bigearthnet_v1_root, tmp_path)
    dataset = BigEarthNet(root, bands=["B02", "B09"])
    first, second = dataset[0].key, dataset[1].key
    missing = root / "BigEarthNet-v1.0" / first / f"{first}_B09.tif"
    corrupt = root / "BigEarthNet-v1.0" / second / f"{second}_B02.tif"
    missing.unlink()
    corrupt.write_bytes(b"\x00" * 64)

    with pytest.raises(BenchmarkDataError, match=re.escape(f"missing file {missing}")):
        dataset[0]
    with pytest.raises(BenchmarkDataError, match=re.escape(f"cannot read {corrupt}")):
        dataset[1]
    with pytest.raises(BenchmarkDataError, match="no BigEarthNet layout"):
        BigEarthNet(tmp_path / "empty", bands=["B02"])


def test_bigearthnet_v2_reads_metadata_parquet(bigearthnet_v2_root: Path) -> None:
    metadata = pq.read_table(bigearthnet_v2_root / "metadata.parquet").to_pylist()
    dataset = BigEarthNet(bigearthnet_v2_root, bands=LLAMA3_BANDS, split="val")

    assert dataset.version == "2.0"
    expected = {row["patch_id"]: row["labels"] for row in metadata if row["split"] == "validation"}
    assert len(dataset) == len(expected) == 2
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sorted(dataset.classes[i] for i in sample.labels) == sorted(expected[sample.key])
        assert sample.pixels.shape == (10, 120, 120)
        _assert_fake_bands(sample.pixels, LLAMA3_BANDS, tag=int(sample.key.split("_")[-2]))
    assert len(BigEarthNet(bigearthnet_v2_root, bands=["B02"], split=None)) == 6


# --- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize(("native", "factor"), [(60, 2), (20, 6), (12, 6)])
def test_upsampling_is_gdal_bilinear(tmp_path: Path, native: int, factor: int) -> None:
    band = np.random.default_rng(native).integers(1, 10_000, (native, native), dtype=np.uint16)
    path = tmp_path / "band.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=native, width=native, count=1, dtype="uint16",
        crs="EPSG:32632", transform=from_origin(500_000, 5_000_000, 10 * factor, 10 * factor),
    ) as dst:  # fmt: skip
        dst.write(band, 1)
    size = (native * factor, native * factor)
    with rasterio.open(path) as src:
        gdal = src.read(1, out_shape=size, resampling=Resampling.bilinear, out_dtype="float32")

    ours = upsample_bilinear(band, size)

    # GDAL rounds to whole DN; the interpolation itself is the same.
    assert ours.shape == size
    assert np.abs(ours - gdal).max() <= 1.0
    assert np.abs(ours - gdal).mean() < 0.3


def test_upsampling_keeps_constants_and_native_sizes() -> None:
    gradient = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100

    assert (upsample_bilinear(np.full((20, 20), 1234, np.uint16), (120, 120)) == 1234).all()
    assert (upsample_bilinear(gradient, (3, 4)) == gradient).all()
    # Along a row the values grow with the column: the axes are not swapped.
    assert np.all(np.diff(upsample_bilinear(gradient, (6, 8))[0]) >= 0)


# --- METER-ML ------------------------------------------------------------------------------


def test_meterml_reads_single_label_samples_on_the_10m_grid(meterml_root: Path) -> None:
    dataset = open_benchmark("meterml", meterml_root, bands=LLAMA3_BANDS)

    assert isinstance(dataset, MeterML)
    assert (dataset.multilabel, dataset.level, dataset.classes[3]) == (
        False,
        "L1C",
        "other features",
    )
    assert len(dataset) == 7 * 2
    assert dataset.excluded_multilabel == 1  # the fake's CAFOs-Landfills sample
    assert sorted(sample.labels[0] for sample in (dataset[i] for i in range(14))) == sorted(
        list(range(7)) * 2
    )
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample.pixels.shape == (10, 72, 72)
        _assert_fake_bands(sample.pixels, LLAMA3_BANDS, tag=sample.labels[0])


def test_meterml_train_images_sit_in_numbered_subfolders(meterml_root: Path) -> None:
    dataset = MeterML(meterml_root, bands=["B01", "B10", "B04"], split="train")

    sample = dataset[0]

    assert sample.pixels.shape == (3, 72, 72)
    _assert_fake_bands(sample.pixels, ("B01", "B10", "B04"), tag=sample.labels[0])
    assert len(MeterML(meterml_root, bands=["B02"], split=None)) == 3 * 14


def test_meterml_types(meterml_root: Path, tmp_path: Path) -> None:
    root = _copy(meterml_root, tmp_path)
    path = root / "test_dataset.geojson"
    collection = json.loads(path.read_text())
    collection["features"][0]["properties"]["Type"] = "Roundabout"
    path.write_text(json.dumps(collection))

    assert MeterML(root, bands=["B02"])[0].labels == (3,)  # no facility: Negative

    collection["features"][0]["properties"]["Type"] = "Wells"
    path.write_text(json.dumps(collection))
    with pytest.raises(BenchmarkDataError, match=r"unknown Type 'Wells'"):
        MeterML(root, bands=["B02"])


def test_meterml_errors_name_the_missing_or_corrupt_file(
    meterml_root: Path, tmp_path: Path
) -> None:
    root = _copy(meterml_root, tmp_path)
    dataset = MeterML(root, bands=["B02", "B11"])
    first, second = (root / "test_images" / dataset[i].key for i in (0, 1))
    (first / "sentinel-2-20m.npy").unlink()
    (second / "sentinel-2-10m.npy").write_bytes(b"garbage")

    with pytest.raises(BenchmarkDataError, match=re.escape(str(first / "sentinel-2-20m.npy"))):
        dataset[0]
    with pytest.raises(BenchmarkDataError, match=re.escape(str(second / "sentinel-2-10m.npy"))):
        dataset[1]
    shutil.rmtree(first)
    with pytest.raises(BenchmarkDataError, match=re.escape(f"missing sample folder {first}")):
        dataset[0]
    (root / "val_dataset.geojson").unlink()
    with pytest.raises(BenchmarkDataError, match=r"val_dataset\.geojson"):
        MeterML(root, bands=["B02"], split="val")


# --- prompts -------------------------------------------------------------------------------


def test_the_50_templates_take_the_class_name_once() -> None:
    assert len(TEMPLATES) == len(set(TEMPLATES)) == 50
    assert all(template.count("{c}") == 1 for template in TEMPLATES)
    assert prompts("landfills")[9] == "a satellite image of the landfills."


def test_meterml_maps_channels_of_files_written_in_the_published_order(
    meterml_root: Path, tmp_path: Path
) -> None:
    # Published channel order: 10 m (B04 B03 B02 B08), 20 m (B05 B06 B07 B8A B11 B12),
    # 60 m (B01 B09 B10). Channel k of each file holds 100 * (k + 1) + resolution code.
    root = _copy(meterml_root, tmp_path)
    folder = root / "test_images" / MeterML(root, bands=["B02"])[0].key
    for name, channels, code in (("10m", 4, 10), ("20m", 6, 20), ("60m", 3, 60)):
        size = 720 // int(name[:2])
        values = np.arange(1, channels + 1, dtype=np.uint16) * 100 + code
        np.save(folder / f"sentinel-2-{name}.npy", np.broadcast_to(values, (size, size, channels)))

    sample = MeterML(root, bands=["B02", "B03", "B04", "B08", "B8A", "B12", "B01", "B10"])[0]

    assert sample.pixels[:, 0, 0].tolist() == [310, 210, 110, 410, 420, 620, 160, 360]
