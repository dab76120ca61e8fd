from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq

from pipeline.dataset.columns import SampleRecord, shard_schema
from pipeline.dataset.stats import ShardStats, read_stats, write_stats
from pipeline.dataset.writer import write_shard


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
        rec.pixels = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
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
    a, b = table.to_pylist()
    assert np.array_equal(np.asarray(a["pixels"]), np.arange(32).reshape(2, 4, 4))
    assert b["pixels"] is None and b["status"] == "failed" and b["error_reason"] == "cog_open"
    meta = table.schema.metadata
    assert json.loads(meta[b"eocap"])["config_hash"] == "abc"
    assert json.loads(meta[b"geo"])["columns"]["geometry"]["bbox"] == [10.8, 47.4, 11.0, 47.6]
    # DuckDB reads the fixed-shape cube as a nested ARRAY.
    assert duckdb.sql(f"SELECT pixels[1][2][1] FROM '{path}' WHERE sample_id = 'a'").fetchone() == (
        4,
    )


def test_row_groups_follow_the_size_target(tmp_path):
    path = tmp_path / "x.parquet"
    write_shard(
        [record(str(i), True) for i in range(10)], path, n_bands=2, size=4, row_group_mb=0.81
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


def test_cubes_are_delta_encoded_and_read_back_everywhere(tmp_path):
    import datasets

    path = tmp_path / "00000.parquet"
    write_shard([record("a", True), record("b", False)], path, n_bands=2, size=4)
    md = pq.ParquetFile(path).metadata
    encodings = {
        md.schema.column(i).path: md.row_group(0).column(i).encodings for i in range(md.num_columns)
    }
    for leaf in ("pixels.list.element.list.element.list.element", "scl.list.element.list.element"):
        assert "DELTA_BINARY_PACKED" in encodings[leaf], encodings[leaf]
    expected = np.arange(32).reshape(2, 4, 4)
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
