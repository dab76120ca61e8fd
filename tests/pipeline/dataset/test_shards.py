from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dataset.columns import SCHEMA_VERSION, SampleRecord, shard_schema
from pipeline.dataset.reader import file_schema_version, read_cubes, read_rows
from pipeline.dataset.stats import ShardStats, read_stats, write_stats
from pipeline.dataset.writer import write_shard
from tests.conftest import REPO_ROOT


def record(sid: str, ok: bool) -> SampleRecord:
    rec = SampleRecord(
        sample_id=sid,
        status="ok",
        location_id="loc_1",
        lon=10.9,
        lat=47.5,
        period="summer",
        period_start=dt.date(2024, 6, 1),
        period_end=dt.date(2024, 8, 31),
    )
    if ok:
        rec.pixels = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4) * 1000  # 2 bytes
        rec.bands = ["B04", "B08"]
        rec.band_scale = [1e-4, 1e-4]
        rec.band_offset = [0.0, 0.0]
        rec.scl = np.full((4, 4), 4, np.uint8)
        rec.rgb = {"bytes": b"png", "path": None}
        rec.caption = "A caption."
        rec.bbox = {"xmin": 10.8, "ymin": 47.4, "xmax": 11.0, "ymax": 47.6}
        rec.context = {
            "land_cover": [{"class": "forest", "share": 0.5}],
            "land_use": [],
            "water": [],
            "building_count": 3,
            "building_share": 0.01,
            "roads": [],
            "named_features": [],
        }
    else:
        rec.fail("cog_open", "boom")
    return rec


def test_write_and_read_back(tmp_path):
    path = tmp_path / "00000.parquet"
    size = write_shard(
        [record("a", True), record("b", False)],
        path,
        n_bands=2,
        size=4,
        extra_metadata={"config_hash": "abc"},
    )
    assert size == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["00000.parquet"]  # no temp file left
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == shard_schema(2, 4)
    assert file_schema_version(path) == SCHEMA_VERSION
    expected = np.arange(32, dtype=np.uint16).reshape(2, 4, 4) * 1000
    pixels = read_cubes(table)
    assert pixels.dtype == np.uint16 and np.array_equal(pixels[0], expected)
    assert not pixels[1].any()  # the failed sample's cube is null: zeros
    assert np.array_equal(read_cubes(table, "scl")[0], np.full((4, 4), 4))
    b = table.drop_columns(["pixels", "scl"]).to_pylist()[1]
    assert b["status"] == "failed" and b["error_reason"] == "cog_open"
    assert table.column("pixels").null_count == 1
    meta = table.schema.metadata
    eocap = json.loads(meta[b"eocap"])
    assert eocap["config_hash"] == "abc" and eocap["schema_version"] == SCHEMA_VERSION
    assert eocap["cubes"]["pixels"]["bands"] == ["B04", "B08"]
    assert eocap["cubes"]["pixels"]["scale"] == [1e-4, 1e-4]
    assert json.loads(meta[b"geo"])["columns"]["geometry"]["bbox"] == [10.8, 47.4, 11.0, 47.6]
    # DuckDB reads every other column as before, and the cube as a BLOB of the cube's bytes.
    row = duckdb.sql(f"SELECT lon, pixels FROM '{path}' WHERE sample_id = 'a'").fetchone()
    assert row is not None and row[0] == 10.9 and len(row[1]) == expected.nbytes


def test_v1_row_groups_follow_the_size_target(tmp_path):
    path = tmp_path / "x.parquet"
    write_shard(
        [record(str(i), True) for i in range(10)],
        path,
        n_bands=2,
        size=4,
        row_group_mb=0.81,
        version="1.2",
    )  # ~4 rows of ~200 kB budget each
    assert pq.ParquetFile(path).metadata.num_row_groups == 3


def test_stats_round_trip(tmp_path):
    stats = ShardStats(
        shard=3,
        path="00003.parquet",
        count=2,
        ok=1,
        failed=1,
        failures_by_reason={"cog_open": 1},
        stage_seconds={"chips": 1.0},
        duration_s=1.5,
        bytes=10,
        finished_at="2026-01-01T00:00:00Z",
        config_hash="abc",
    )
    write_stats(stats, tmp_path / "00003_stats.json")
    assert read_stats(tmp_path / "00003_stats.json") == stats


def test_one_sample_per_row_group(tmp_path):
    path = tmp_path / "x.parquet"
    write_shard([record(str(i), True) for i in range(5)], path, n_bands=2, size=4)
    md = pq.ParquetFile(path).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [1] * 5
    cubes = {
        md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i)
        for i in range(md.num_columns)
    }
    assert cubes["pixels"].compression == "ZSTD" and cubes["caption"].compression == "ZSTD"


def _doc_recipe() -> dict[str, object]:
    """The numpy recipe of docs/dataset-schema.md, run as written."""
    text = (REPO_ROOT / "docs" / "dataset-schema.md").read_text()
    section = text.split("## Reading the cubes without eocap")[1]
    code = section.split("```python\n")[1].split("```")[0]
    namespace: dict[str, object] = {}
    exec(code, namespace)
    return namespace


def test_the_documented_numpy_recipe_decodes_the_cubes(tmp_path):
    path = tmp_path / "00000.parquet"
    write_shard([record("b", False), record("a", True)], path, n_bands=2, size=4)
    read_cube = _doc_recipe()["read_cube"]
    assert callable(read_cube)
    expected = np.arange(32, dtype=np.uint16).reshape(2, 4, 4) * 1000
    assert np.array_equal(read_cube(path, "pixels", 1), expected)
    assert np.array_equal(read_cube(path, "scl", 1), np.full((4, 4), 4))


@pytest.mark.parametrize("version", ["1.2", "2.0", "2.1"])
def test_read_rows_returns_decoded_cubes_in_either_version(tmp_path, version):
    path = tmp_path / "00000.parquet"
    records = [record("a", True), record("b", False), record("c", True)]
    write_shard(records, path, n_bands=2, size=4, version=version)
    assert file_schema_version(path) == version
    rows = read_rows(path, ["c", "b"], ["pixels", "scl", "bands"], batch_size=2)
    assert rows["b"]["pixels"] is None and rows["b"]["scl"] is None
    assert np.array_equal(rows["c"]["pixels"], records[2].pixels)
    assert rows["c"]["pixels"].dtype == np.uint16 and rows["c"]["bands"] == ["B04", "B08"]
    assert list(rows["c"]) == ["sample_id", "pixels", "scl", "bands"]


def test_v1_cubes_are_delta_encoded_and_read_back_everywhere(tmp_path):
    import datasets

    path = tmp_path / "00000.parquet"
    write_shard([record("a", True), record("b", False)], path, n_bands=2, size=4, version="1.2")
    md = pq.ParquetFile(path).metadata
    encodings = {
        md.schema.column(i).path: md.row_group(0).column(i).encodings for i in range(md.num_columns)
    }
    for leaf in ("pixels.list.element.list.element.list.element", "scl.list.element.list.element"):
        assert "DELTA_BINARY_PACKED" in encodings[leaf], encodings[leaf]
    expected = np.arange(32).reshape(2, 4, 4) * 1000
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    ds = ds.select_columns(["pixels", "scl"])  # the test rows hold no real PNG
    assert np.array_equal(np.asarray(ds[0]["pixels"]), expected)
    assert np.array_equal(np.asarray(ds[0]["scl"]), np.full((4, 4), 4))
    assert ds[1]["pixels"] is None
    cube = duckdb.sql(f"SELECT pixels FROM '{path}' WHERE sample_id = 'a'").fetchone()
    assert cube is not None and np.array_equal(np.asarray(cube[0]), expected)


def test_read_cubes_matches_rows_and_fills_failed_samples_with_zeros():
    import numpy as np
    import pyarrow as pa

    from pipeline.dataset.reader import read_cubes

    cube = pa.list_(pa.list_(pa.list_(pa.uint16(), 2), 2), 3)
    rows = [np.arange(12, dtype=np.uint16).reshape(3, 2, 2), None, np.full((3, 2, 2), 7, np.uint16)]
    table = pa.table({"pixels": pa.array([None if r is None else r.tolist() for r in rows], cube)})
    got = read_cubes(table.slice(0, 3))
    assert got.shape == (3, 3, 2, 2) and got.dtype == np.uint16
    assert np.array_equal(got[0], rows[0]) and not got[1].any() and np.array_equal(got[2], rows[2])
    assert np.array_equal(read_cubes(table.slice(2, 1))[0], rows[2])  # a slice keeps its offset


def test_read_cubes_decodes_v2_chunks_slices_and_nulls():
    import pyarrow as pa

    from pipeline.dataset.writer import encode_cubes

    rng = np.random.default_rng(0)
    cubes = rng.integers(0, 2**16, (4, 3, 2, 2), dtype=np.uint16)
    valid = np.array([True, False, True, True])
    meta = {
        b"eocap": json.dumps(
            {
                "dtype": "<u2",
                "shape": [3, 2, 2],
                "dims": ["band", "y", "x"],
                "order": "C",
                "encoding": "byte_planes_le",
            }
        ).encode()
    }
    field = pa.field("pixels", pa.large_binary(), metadata=meta)
    array = encode_cubes(cubes, valid)
    table = pa.Table.from_batches(
        [
            pa.record_batch([array.slice(0, 2)], schema=pa.schema([field])),
            pa.record_batch([array.slice(2, 2)], schema=pa.schema([field])),
        ]
    )
    got = read_cubes(table)
    expected = np.where(valid[:, None, None, None], cubes, 0)
    assert np.array_equal(got, expected)
    assert np.array_equal(read_cubes(table.slice(3, 1)), cubes[3:])
    with pytest.raises(ValueError, match="bytes, not"):
        bad = pa.table([pa.array([b"123"], pa.large_binary())], schema=pa.schema([field]))
        read_cubes(bad)
