"""Oracle for positions in the map context: features planted at known places in a chip.

A copy of the test region's Overture extract gets one more building file: a small named
building at the centre of each of the nine cells of two chips. :func:`map_context` (what the
build calls) must describe each at the cell it was put in, relative to its own chip.
"""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.ops import transform

from pipeline.core.types import ChipArea
from pipeline.geo.grid import ChipGrid, chip_grid, transformer
from pipeline.stages.context import POSITIONS, map_context
from tests.conftest import SMALL_BBOX

BUILDINGS = ("theme=buildings", "type=building")
HALF_SIDE_M = 10.0  # 20 m x 20 m buildings: far from any cell edge and from "throughout"


def chips(crs: str) -> list[ChipArea]:
    """Two chips (2.64 km) in opposite quarters of the ~6 x 5.5 km region: apart, not touching."""
    lon0, lat0, lon1, lat1 = SMALL_BBOX
    w, h = lon1 - lon0, lat1 - lat0
    return [
        ChipArea("alpha", chip_grid(lon0 + 0.25 * w, lat0 + 0.27 * h, crs, 264, 10.0)),
        ChipArea("beta", chip_grid(lon0 + 0.75 * w, lat0 + 0.73 * h, crs, 264, 10.0)),
    ]


def planted(grid: ChipGrid, prefix: str) -> list[tuple[str, str, shapely.Polygon]]:
    """(name, cell, lon/lat footprint) of a building at the centre of each cell of a chip."""
    x0, y0, x1, y1 = grid.bounds
    to_lonlat = transformer(grid.crs, "EPSG:4326").transform
    out = []
    for row, cells in enumerate(POSITIONS):  # row 0 is the northern third (largest y)
        for col, cell in enumerate(cells):  # col 0 is the western third (smallest x)
            cx = x0 + (col + 0.5) * (x1 - x0) / 3
            cy = y1 - (row + 0.5) * (y1 - y0) / 3
            square = shapely.box(
                cx - HALF_SIDE_M, cy - HALF_SIDE_M, cx + HALF_SIDE_M, cy + HALF_SIDE_M
            )
            out.append((f"{prefix} {cell.title()} Hall", cell, transform(to_lonlat, square)))
    return out


@pytest.fixture(scope="module")
def planted_extract(region, tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle-context") / "overture"
    shutil.copytree(region.overture_root, root)
    folder = root.joinpath(*BUILDINGS)
    schema = pq.read_schema(next(folder.glob("*.parquet")))
    areas = chips(region.crs)
    features = [f for c in areas for f in planted(c.grid, c.sample_id.title())]
    rows = []
    for i, (name, _, poly) in enumerate(features):
        xmin, ymin, xmax, ymax = poly.bounds
        rows.append(
            {
                "id": f"oracle-{i}",
                "geometry": shapely.to_wkb(poly),
                "bbox": {
                    "xmin": xmin - 1e-5,
                    "xmax": xmax + 1e-5,
                    "ymin": ymin - 1e-5,
                    "ymax": ymax + 1e-5,
                },
                "names": {"primary": name},
                "subtype": "civic",
                "class": "townhall",
            }
        )
    table = pa.Table.from_pylist(rows, schema=schema.remove_metadata())
    pq.write_table(table, folder / "part-99999-oracle.parquet")
    return root, areas, {c.sample_id: planted(c.grid, c.sample_id.title()) for c in areas}


def test_planted_buildings_are_described_where_they_stand(planted_extract):
    root, areas, features = planted_extract
    ctx = map_context(areas, root)
    for area in areas:
        row = ctx[area.sample_id].to_row()  # what the shard's context column holds
        described = {f["name"]: f for f in row["named_features"]}
        for name, cell, _ in features[area.sample_id]:
            assert name in described, (area.sample_id, name, sorted(described))
            f = described[name]
            assert (f["position"], f["kind"], f["theme"]) == (cell, "townhall", "building"), f
            assert name in ctx[area.sample_id].names
        # Nothing planted in the other chip leaks into this one.
        others = {n for sid, fs in features.items() if sid != area.sample_id for n, _, _ in fs}
        assert not others & set(described)


def test_a_north_west_building_is_north_west_and_not_south_west(planted_extract):
    root, areas, features = planted_extract
    chip = areas[0]
    (name, cell, poly), *_ = features[chip.sample_id]
    assert cell == "north-west"
    # Independent check of the plant itself: north of the chip's centre and west of it.
    x, y = transform(transformer("EPSG:4326", chip.grid.crs).transform, poly).centroid.coords[0]
    x0, y0, x1, y1 = chip.grid.bounds
    assert y > y0 + 2 * (y1 - y0) / 3 and x < x0 + (x1 - x0) / 3
    (got,) = [f for f in map_context([chip], root)[chip.sample_id].named_features if f.name == name]
    assert got.position == "north-west"
