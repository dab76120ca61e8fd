from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.geo.grid import chip_grid, utm_crs
from pipeline.geo.zorder import extent_zorder, interleave, lonlat_zorder
from pipeline.stages.sampling import plan_locations, plan_shards, read_manifest, write_manifest


def test_plan_is_deterministic_and_unique():
    config = load_config(env={})
    a, b = plan_shards(config), plan_shards(config)
    ids = [s.sample_id for shard in a for s in shard.samples]
    assert ids == [s.sample_id for shard in b for s in shard.samples]
    assert len(ids) == len(set(ids)) >= 200
    assert all(len(shard.samples) <= config.output.shard_size for shard in a)
    assert [s.shard for s in a[1].samples] == [1] * len(a[1].samples)


def test_every_chip_lies_inside_the_bbox():
    config = load_config(env={})
    region = box(*config.region.bbox)
    for loc in plan_locations(config.region, config.chips.size_m):
        grid = chip_grid(loc.lon, loc.lat, utm_crs(loc.lon, loc.lat), 264, 10.0)
        assert region.covers(grid.footprint_lonlat())


def test_periods_of_a_location_share_a_shard():
    config = load_config(env={})
    shard = plan_shards(config)[0]
    by_loc: dict[str, list[str]] = {}
    for s in shard.samples:
        by_loc.setdefault(s.location.location_id, []).append(s.period.name)
    assert all(v == ["spring", "summer", "autumn", "winter"] for v in by_loc.values())


def test_manifest_round_trip(tmp_path: Path):
    shards = plan_shards(load_config(env={}))
    write_manifest(shards, tmp_path / "manifest.parquet")
    assert read_manifest(tmp_path / "manifest.parquet") == shards


def test_geojson_region(tmp_path: Path):
    poly = shapely.Polygon([(10.8, 47.5), (10.95, 47.5), (10.8, 47.62)])  # a triangle
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(poly),
                    }
                ],
            }
        )
    )
    config = load_config(env={}).with_updates({"region.bbox": None, "region.geojson": str(path)})
    locs = plan_locations(config.region, config.chips.size_m)
    assert locs
    for loc in locs:
        grid = chip_grid(loc.lon, loc.lat, utm_crs(loc.lon, loc.lat), 264, 10.0)
        assert poly.buffer(1e-6).covers(grid.footprint_lonlat())


def test_geojson_without_polygons_is_a_config_error(tmp_path: Path):
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "Point", "coordinates": [10, 47]}))
    config = load_config(env={}).with_updates({"region.bbox": None, "region.geojson": str(path)})
    with pytest.raises(ConfigError, match=r"region\.geojson"):
        plan_locations(config.region, config.chips.size_m)


def test_points_region_and_max_locations():
    points = [{"lon": 10 + i / 10, "lat": 47.0, "name": f"p{i}"} for i in range(10)]
    config = load_config(env={}).with_updates(
        {"region.bbox": None, "region.points": points, "region.max_locations": 4}
    )
    locs = plan_locations(config.region, config.chips.size_m, seed=1)
    assert len(locs) == 4
    assert locs == plan_locations(config.region, config.chips.size_m, seed=1)
    assert {loc.name for loc in locs} <= {p["name"] for p in points}


def test_region_smaller_than_a_chip():
    config = load_config(env={}).with_updates({"region.bbox": [10.8, 47.5, 10.81, 47.51]})
    with pytest.raises(ConfigError, match="no chip fits in the region"):
        plan_locations(config.region, config.chips.size_m)


def test_utm_zones():
    assert utm_crs(10.9, 47.5) == "EPSG:32632"
    assert utm_crs(-70.6, -33.4) == "EPSG:32719"
    assert utm_crs(179.99, 10) == "EPSG:32660"


def test_chip_grid_snaps_to_pixels():
    grid = chip_grid(10.9, 47.55, "EPSG:32632", 264, 10.0)
    x0, y0, x1, y1 = grid.bounds
    assert x0 % 10 == 0 and y1 % 10 == 0
    assert x1 - x0 == 2640 and y1 - y0 == 2640


def test_zorder_interleaves_x_into_even_and_y_into_odd_bits():
    assert interleave(0b11, 0b01).tolist() == 0b0111
    assert interleave([0xFFFF, 0, 5], [0, 0xFFFF, 0]).tolist() == [0x55555555, 0xAAAAAAAA, 17]
    # Only the low 16 bits count, negative cells by their two's complement.
    assert interleave([0x10005, -1], [0, 0]).tolist() == [17, 0x55555555]


def test_lonlat_zorder_floors_onto_a_fixed_global_grid():
    # (0, 0): cells int(32767.5) = 0x7FFF on both axes; (-90, 0): x = int(16383.75) = 0x3FFF.
    lon, lat = [-180.0, 180.0, 0.0, -90.0], [-90.0, 90.0, 0.0, 0.0]
    assert lonlat_zorder(lon, lat).tolist() == [0, 0xFFFFFFFF, 0x3FFFFFFF, 0x2FFFFFFF]


def test_extent_zorder_rounds_onto_the_points_own_extent():
    # x cells 0, round(32767.5) = 32768, 65535, round(16383.75) = 16384; y cells 0, 32768, 65535.
    x, y = np.array([0.0, 0.5, 1.0, 0.25]), np.array([0.0, 1.0, 2.0, 2.0])
    assert extent_zorder(x, y).tolist() == [0, 0xC0000000, 0xFFFFFFFF, 0xBAAAAAAA]
    assert extent_zorder(np.array([3.0]), np.array([4.0])).tolist() == [0]


def test_locations_are_in_zorder():
    config = load_config(env={})
    locs = plan_locations(config.region, config.chips.size_m)
    keys = lonlat_zorder([loc.lon for loc in locs], [loc.lat for loc in locs]).tolist()
    assert keys == sorted(keys)


TRIANGLE = shapely.Polygon([(10.8, 47.5), (10.95, 47.5), (10.8, 47.62)])


def locations_of(path: Path):
    config = load_config(env={}).with_updates({"region.bbox": None, "region.geojson": str(path)})
    return plan_locations(config.region, config.chips.size_m)


@pytest.mark.parametrize(
    ("name", "driver"),
    [
        ("aoi.gpkg", "GPKG"),
        ("aoi.shp", "ESRI Shapefile"),
        ("aoi.fgb", "FlatGeobuf"),
        ("aoi.kml", "KML"),
    ],
)
def test_region_file_in_any_ogr_format(tmp_path: Path, name: str, driver: str):
    import geopandas as gpd

    reference = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["aoi"]}, geometry=[TRIANGLE], crs=4326).to_file(reference)
    path = tmp_path / name
    # Stored in UTM (KML is lon/lat by definition): read back in lon/lat.
    crs = 4326 if driver == "KML" else utm_crs(10.87, 47.56)
    frame = gpd.GeoDataFrame({"name": ["aoi"]}, geometry=[TRIANGLE], crs=4326).to_crs(crs)
    frame.to_file(path, driver=driver)
    locs = locations_of(path)
    expected = locations_of(reference)
    assert len(locs) == len(expected) > 0
    for loc, ref in zip(locs, expected, strict=True):
        assert abs(loc.lon - ref.lon) < 1e-5 and abs(loc.lat - ref.lat) < 1e-5


def test_region_file_unions_the_polygons_of_every_layer(tmp_path: Path):
    import geopandas as gpd

    path = tmp_path / "aoi.gpkg"
    west, east = box(10.80, 47.50, 10.87, 47.60), box(10.87, 47.50, 10.94, 47.60)
    gpd.GeoDataFrame(geometry=[west], crs=4326).to_file(path, layer="west")
    gpd.GeoDataFrame(geometry=[east], crs=4326).to_file(path, layer="east")
    gpd.GeoDataFrame(geometry=[shapely.Point(10.9, 47.55)], crs=4326).to_file(path, layer="pois")
    lons = [loc.lon for loc in locations_of(path)]
    assert min(lons) < 10.85 and max(lons) > 10.89  # both halves, one region


def test_unreadable_region_file_is_a_config_error(tmp_path: Path):
    path = tmp_path / "aoi.gpkg"
    path.write_text("not a GeoPackage")
    with pytest.raises(ConfigError, match=r"region\.geojson") as info:
        locations_of(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        locations_of(tmp_path / "missing.shp")


def test_projected_region_file_without_a_crs_says_so(tmp_path: Path):
    import geopandas as gpd

    path = tmp_path / "aoi.shp"
    gpd.GeoDataFrame(geometry=[TRIANGLE], crs=4326).to_crs(utm_crs(10.87, 47.56)).to_file(path)
    path.with_suffix(".prj").unlink()  # a Shapefile that lost its CRS
    with pytest.raises(ConfigError, match=r"out of lon/lat range.*CRS"):
        locations_of(path)
