"""Oracles for a shard's georeferencing: bbox columns, GeoParquet ``geo`` bbox, ``transform``.

Footprints are recomputed here with shapely and pyproj, and the shard's columns and metadata
are checked against them, on shards whose rows have different footprints (with one footprint
for every row, min and max of a bbox coordinate cannot be told apart).
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from shapely.ops import transform as reproject

from pipeline.dataset.columns import SampleRecord
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.writer import write_shard
from pipeline.geo.grid import chip_grid, transformer

BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def union_bounds(polygons: list[shapely.Polygon]) -> list[float]:
    return list(shapely.union_all(polygons).bounds)


def record(sid: str, footprint: shapely.Polygon) -> SampleRecord:
    lon, lat = footprint.centroid.coords[0]
    rec = SampleRecord(
        sample_id=sid,
        status="ok",
        location_id=sid,
        lon=lon,
        lat=lat,
        period="summer",
        period_start=dt.date(2024, 6, 1),
        period_end=dt.date(2024, 8, 31),
    )
    rec.geometry = shapely.to_wkb(footprint)
    rec.bbox = dict(zip(BOX_KEYS, footprint.bounds, strict=True))
    rec.pixels = np.ones((2, 4, 4), np.uint16)
    rec.scl = np.full((4, 4), 4, np.uint8)
    return rec


def test_geo_bbox_of_a_shard_with_two_footprints(tmp_path):
    # Two chips apart in both directions: every coordinate of the union comes from one chip.
    south_west = chip_grid(10.87, 47.555, "EPSG:32632", 4, 10.0).footprint_lonlat()
    north_east = chip_grid(10.93, 47.595, "EPSG:32632", 4, 10.0).footprint_lonlat()
    assert (
        north_east.bounds[1] > south_west.bounds[3] and north_east.bounds[0] > south_west.bounds[2]
    )
    path = tmp_path / "00000.parquet"
    write_shard([record("sw", south_west), record("ne", north_east)], path, n_bands=2, size=4)
    table = pq.read_table(path)
    for row, footprint in zip(table.to_pylist(), (south_west, north_east), strict=True):
        assert [row["bbox"][k] for k in BOX_KEYS] == list(footprint.bounds)
    geo = json.loads(table.schema.metadata[b"geo"])
    expected = union_bounds([south_west, north_east])
    assert geo["columns"]["geometry"]["bbox"] == expected
    # Spelled out: the union's north edge is the northern chip's, its south edge the southern's.
    assert expected[3] == north_east.bounds[3] and expected[1] == south_west.bounds[1]


@pytest.fixture(scope="module")
def shard_rows(review_dataset):
    table = pq.read_table(review_dataset / "shards" / "00000.parquet")
    pixels = read_cubes(table)
    rows = [
        {**r, "pixels": pixels[i]}
        for i, r in enumerate(table.drop_columns(["pixels", "scl"]).to_pylist())
        if table.column("pixels")[i].is_valid
    ]
    assert len(rows) >= 2
    return table, rows


def independent_footprint(row: dict) -> shapely.Polygon:
    """The chip outline from its CRS and Affine transform, densified and taken to lon/lat."""
    t = rasterio.Affine(*row["transform"])
    _, h, w = np.asarray(row["pixels"]).shape
    (x0, y1), (x1, y0) = t * (0, 0), t * (w, h)
    edge = max(abs(x1 - x0), abs(y1 - y0))
    utm = shapely.box(x0, y0, x1, y1).segmentize(edge / 16)  # 16 points a side, whatever t
    return reproject(transformer(row["crs"], "EPSG:4326").transform, utm)


def test_built_shard_bbox_columns_and_geo_bbox_match_the_footprints(shard_rows):
    table, rows = shard_rows
    footprints = [shapely.from_wkb(r["geometry"]) for r in rows]
    assert len({round(f.bounds[3], 6) for f in footprints}) >= 2  # different north edges
    assert len({round(f.bounds[1], 6) for f in footprints}) >= 2
    for row, footprint in zip(rows, footprints, strict=True):
        got = [row["bbox"][k] for k in BOX_KEYS]
        assert got == list(footprint.bounds), row["sample_id"]
        # And the footprint is the chip's outline (1e-7 degrees: about a centimetre).
        assert got == pytest.approx(independent_footprint(row).bounds, abs=1e-7)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["columns"]["geometry"]["bbox"] == union_bounds(footprints)
    assert geo["columns"]["geometry"]["bbox"] == pytest.approx(
        union_bounds([independent_footprint(r) for r in rows]), abs=1e-7
    )


def test_built_shard_transform_is_affine_order(shard_rows):
    _, rows = shard_rows
    for row in rows:
        t = rasterio.Affine(*row["transform"])
        _, h, w = np.asarray(row["pixels"]).shape
        to_utm = transformer("EPSG:4326", row["crs"]).transform
        x0, y0, x1, y1 = reproject(to_utm, shapely.from_wkb(row["geometry"])).bounds
        assert t * (0, 0) == pytest.approx((x0, y1), abs=1e-3), row["sample_id"]  # north-west
        assert t * (w, h) == pytest.approx((x1, y0), abs=1e-3), row["sample_id"]  # south-east
        assert t.a == pytest.approx(10.0) and t.e == pytest.approx(-10.0)
        assert t.b == 0 and t.d == 0
