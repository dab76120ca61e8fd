"""A bbox with lon_min > lon_max crosses the antimeridian: it is planned as two boxes."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import box

from flows.cli import main
from pipeline.core.config import RunConfig, load_config
from pipeline.core.errors import ConfigError
from pipeline.geo.grid import chip_grid, utm_crs
from pipeline.stages.sampling import plan_locations

# Fiji's Taveuni and Vanua Levu straddle 180 degrees: 0.2 degrees (about 21 km) on each side.
ACROSS = (179.8, -16.9, -179.8, -16.7)


def _config(bbox: tuple[float, float, float, float]) -> RunConfig:
    return load_config(env={}).with_updates({"region.bbox": list(bbox)})


def test_locations_lie_on_both_sides_and_none_in_between() -> None:
    config = _config(ACROSS)
    locations = plan_locations(config.region, config.chips.size_m)
    east = [loc for loc in locations if loc.lon > 0]
    west = [loc for loc in locations if loc.lon < 0]
    assert east and west and len(east) + len(west) == len(locations)
    assert all(179.8 < loc.lon < 180.0 for loc in east)
    assert all(-180.0 < loc.lon < -179.8 for loc in west)
    assert all(-16.9 < loc.lat < -16.7 for loc in locations)
    # As many on each side (the boxes are mirror images), the grid of each side in its own
    # UTM zone: 60 east of 180 degrees, 1 west of it.
    assert len(east) == len(west)
    assert {utm_crs(loc.lon, loc.lat) for loc in east} == {"EPSG:32760"}
    assert {utm_crs(loc.lon, loc.lat) for loc in west} == {"EPSG:32701"}


def test_every_chip_lies_in_one_of_the_two_boxes() -> None:
    config = _config(ACROSS)
    halves = (box(179.8, -16.9, 180.0, -16.7), box(-180.0, -16.9, -179.8, -16.7))
    for loc in plan_locations(config.region, config.chips.size_m):
        grid = chip_grid(loc.lon, loc.lat, utm_crs(loc.lon, loc.lat), 264, 10.0)
        footprint = grid.footprint_lonlat()
        assert any(half.covers(footprint) for half in halves), loc


def test_the_region_is_two_boxes_for_the_overture_extract() -> None:
    from pipeline.stages.sampling import region_parts

    parts = region_parts(_config(ACROSS).region)
    assert sorted(part.bounds for part in parts) == [
        (-180.0, -16.9, -179.8, -16.7),
        (179.8, -16.9, 180.0, -16.7),
    ]
    assert len(region_parts(_config((10.8, 47.5, 11.0, 47.7)).region)) == 1


def test_a_region_file_split_at_180_degrees_plans_the_same(tmp_path) -> None:
    import json

    halves = shapely.MultiPolygon(
        [box(179.8, -16.9, 180.0, -16.7), box(-180, -16.9, -179.8, -16.7)]
    )
    path = tmp_path / "fiji.geojson"
    path.write_text(json.dumps(shapely.geometry.mapping(halves)))
    from_file = load_config(env={}).with_updates({"region.bbox": None, "region.geojson": str(path)})
    across = _config(ACROSS)
    assert plan_locations(from_file.region, 2640.0) == plan_locations(across.region, 2640.0)


def test_eocap_plan_counts_both_sides(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "region:\n  bbox: [179.8, -16.9, -179.8, -16.7]\n"
        "periods:\n  - {name: p, start: 2024-06-01, end: 2024-08-31}\n"
    )
    assert main(["plan", str(path)]) == 0
    config = _config(ACROSS)
    n = len(plan_locations(config.region, config.chips.size_m))
    assert capsys.readouterr().out.startswith(f"{n} samples ({n} locations x 1 periods)")


@pytest.mark.parametrize(
    ("bbox", "words"),
    [
        ((11.0, 47.0, 10.0, 48.0), "if you meant 10.0 to 11.0, swap them"),
        ((10.0, 48.0, 11.0, 47.0), "put the southern latitude second"),
        ((10.0, 47.0, 10.0, 48.0), "the box has no width"),
    ],
)
def test_other_bad_bboxes_say_why_and_how(bbox, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        _config(bbox)
    assert info.value.field == "region.bbox"
    assert "lon_min, lat_min, lon_max, lat_max (west, south, east, north)" in str(info.value)


def test_a_remote_overture_release_is_extracted_for_each_box(region, tmp_path) -> None:
    import pyarrow.parquet as pq

    from pipeline.core.config import OvertureConfig
    from pipeline.stages.context import prepare_overture
    from tests.conftest import SMALL_BBOX

    # The same code path as an s3:// release, with a file:// URL so it runs offline.
    cfg = OvertureConfig(source=f"file://{region.overture_root}", release="r")
    far = (179.8, -16.9, 180.0, -16.7)

    def rows(boxes, name):
        root = prepare_overture(cfg, boxes, tmp_path / name)
        return {p.parent.name: pq.read_metadata(p).num_rows for p in root.glob("*/*/*.parquet")}

    near = rows([SMALL_BBOX], "near")
    assert sum(near.values()) > 0
    assert rows([SMALL_BBOX, far], "both") == near
    assert sum(rows([far], "far").values()) == 0
