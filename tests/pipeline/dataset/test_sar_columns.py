"""The Sentinel-1 columns of schema 2.1: hundredths of a dB in a byte-planed int16 cube."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dataset.columns import SAR_COLUMNS, SCHEMA_VERSION, SampleRecord, shard_schema
from pipeline.dataset.reader import file_schema_version, read_cubes, read_rows
from pipeline.dataset.writer import with_current_columns, write_shard
from pipeline.geo.sar import CENTI_DB_NODATA, centi_db, db_from_centi
from tests.pipeline.dataset.test_shards import record

SIZE = 4


def sar_db() -> np.ndarray:
    """(VV, VH) dB with a nodata pixel, values beyond int16's hundredths, and plain ones."""
    db = np.linspace(-30.0, 5.0, 2 * SIZE * SIZE, dtype=np.float32).reshape(2, SIZE, SIZE)
    db[0, 0, 0] = np.nan
    db[1, 3, 3] = 400.0  # 40000 hundredths: beyond int16, clipped
    db[1, 3, 2] = -400.0  # clipped to -32767, never onto the nodata value
    return db


def with_sar(sid: str) -> SampleRecord:
    rec = record(sid, True)
    rec.sar_state = "ok"
    rec.sar_item_id = "S1A_IW_GRDH_1SDV_20240615"
    rec.sar_collection = "sentinel-1-rtc"
    rec.sar_platform = "SENTINEL-1A"
    rec.sar_orbit_state = "descending"
    rec.sar_relative_orbit = 66
    rec.sar_datetime = dt.datetime(2024, 6, 15, 5, 30, tzinfo=dt.UTC)
    rec.sar_time_offset_s = -18000.0
    rec.sar_polarisations = ["VV", "VH"]
    rec.sar_db = centi_db(sar_db())
    return rec


def test_hundredths_of_a_db_round_trip_with_nodata_and_clipping():
    db = sar_db()
    stored = centi_db(db)
    assert stored.dtype == np.int16
    assert stored[0, 0, 0] == CENTI_DB_NODATA
    assert stored[1, 3, 3] == 32767 and stored[1, 3, 2] == -32767
    assert stored[0, 0, 1] == round(100 * float(db[0, 0, 1]))
    back = db_from_centi(stored)
    assert back.dtype == np.float32 and np.isnan(back[0, 0, 0])
    plain = np.isfinite(db) & (np.abs(db) < 300)
    assert np.abs(back[plain] - db[plain]).max() <= 0.005
    assert np.count_nonzero(np.isnan(back)) == 1


def test_sar_cube_is_stored_like_the_pixels_and_reads_back(tmp_path):
    path = tmp_path / "00000.parquet"
    no_sar = record("b", True)
    no_sar.sar_state, no_sar.sar_message = "no_acquisition", "no sentinel-1-rtc item"
    write_shard([with_sar("a"), no_sar, record("c", False)], path, n_bands=2, size=SIZE)
    assert file_schema_version(path) == SCHEMA_VERSION == "2.1"
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == shard_schema(2, SIZE)
    cubes = read_cubes(table, "sar_db")
    assert cubes.dtype == np.int16 and cubes.shape == (3, 2, SIZE, SIZE)
    assert np.array_equal(cubes[0], centi_db(sar_db()))
    assert table.column("sar_db").null_count == 2
    assert table.column("sar_state").to_pylist() == ["ok", "no_acquisition", None]
    meta = json.loads(table.schema.metadata[b"eocap"])["cubes"]["sar_db"]
    assert meta["dtype"] == "<i2" and meta["shape"] == [2, SIZE, SIZE]
    assert meta["dims"] == ["polarisation", "y", "x"] and meta["encoding"] == "byte_planes_le"
    rows = read_rows(path, ["a", "b"], ["sar_db", "sar_polarisations", "sar_relative_orbit"])
    assert np.array_equal(rows["a"]["sar_db"], centi_db(sar_db()))
    assert rows["a"]["sar_polarisations"] == ["VV", "VH"] and rows["a"]["sar_relative_orbit"] == 66
    assert rows["b"]["sar_db"] is None


def test_the_cube_takes_the_runs_polarisation_count(tmp_path):
    path = tmp_path / "00000.parquet"
    rec = with_sar("a")
    rec.sar_polarisations = ["VV"]
    rec.sar_db = centi_db(sar_db()[:1])
    write_shard([rec], path, n_bands=2, size=SIZE, n_polarisations=1)
    cubes = read_cubes(pq.read_table(path), "sar_db")
    assert cubes.shape == (1, 1, SIZE, SIZE) and np.array_equal(cubes[0], rec.sar_db)


def test_a_2_0_shard_reads_as_2_1_with_null_sar_columns(tmp_path):
    path = tmp_path / "00000.parquet"
    write_shard([record("a", True), record("b", False)], path, n_bands=2, size=SIZE, version="2.0")
    assert file_schema_version(path) == "2.0"
    old = pq.read_table(path)
    assert not set(SAR_COLUMNS) & set(old.column_names)
    assert "sar_db" not in json.loads(old.schema.metadata[b"eocap"])["cubes"]
    current = with_current_columns(old)
    assert current.schema.remove_metadata() == shard_schema(2, SIZE)
    assert all(current.column(c).null_count == 2 for c in SAR_COLUMNS)
    assert current.drop_columns(list(SAR_COLUMNS)).equals(old)
    assert read_cubes(current, "sar_db").shape == (2, 2, SIZE, SIZE)  # decodable: all null
    assert np.array_equal(read_cubes(current), read_cubes(old))


@pytest.mark.parametrize("version", ["1.2", "2.0"])
def test_older_schemas_have_no_sar_columns(version):
    assert not set(SAR_COLUMNS) & set(shard_schema(2, SIZE, version).names)
