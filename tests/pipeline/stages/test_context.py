from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.ops import transform

from pipeline.core.config import OvertureConfig
from pipeline.core.errors import PreflightError
from pipeline.core.types import ChipArea, MapContext, NamedFeature
from pipeline.demo.region import DemoRegion, generate_demo_region
from pipeline.geo.grid import chip_grid, transformer
from pipeline.io.overture import OVERTURE_TYPES
from pipeline.stages.context import (
    check_overture,
    check_overture_covers,
    map_context,
    position_name,
    prepare_overture,
)
from tests.conftest import SMALL_BBOX

PLACES = Path("theme=places") / "type=place"


def chips_over(region, n=6):
    lon0, lat0, lon1, lat1 = SMALL_BBOX
    out = []
    for i in range(n):
        lon = lon0 + (lon1 - lon0) * (0.25 + 0.5 * (i % 3) / 2)
        lat = lat0 + (lat1 - lat0) * (0.3 + 0.4 * (i // 3))
        out.append(ChipArea(f"s_{i}", chip_grid(lon, lat, region.crs, 264, 10.0)))
    return out


def shapely_shares(region, grid, type_name="land_cover", column="subtype"):
    """Independent computation: shapely + pyproj over the raw Parquet file."""
    path = next((region.overture_root / "theme=base" / f"type={type_name}").glob("*.parquet"))
    table = pq.read_table(path, columns=["geometry", column]).to_pylist()
    chip = shapely.box(*grid.bounds)
    to_utm = transformer("EPSG:4326", grid.crs).transform
    shares: dict[str, float] = {}
    for row in table:
        geom = transform(to_utm, shapely.from_wkb(row["geometry"]))
        area = geom.intersection(chip).area
        if area > 0:
            shares[row[column]] = shares.get(row[column], 0) + area / chip.area
    return shares


def test_land_cover_shares_match_shapely(region):
    chips = chips_over(region)
    ctx = map_context(chips, region.overture_root)
    assert set(ctx) == {c.sample_id for c in chips}
    for chip in chips:
        expected = shapely_shares(region, chip.grid)
        got = {i.cls: i.share for i in ctx[chip.sample_id].land_cover}
        for cls, share in expected.items():
            if share >= 0.01:
                # DuckDB clips in lon/lat then projects; shapely projects then clips: ~1e-3.
                assert abs(got[cls] - share) < 3e-3, (cls, got, expected)
        assert sum(got.values()) <= 1.01


def test_context_fields_are_consistent(region):
    ctx = map_context(chips_over(region), region.overture_root)
    any_buildings = any_water = any_roads = False
    for c in ctx.values():
        any_buildings |= c.building_count > 0
        any_water |= bool(c.water)
        any_roads |= bool(c.roads)
        assert 0 <= c.building_share <= 1
        assert c.names == sorted({f.name for f in c.named_features})
        assert all(f.name for f in c.named_features)
        for item in c.land_cover:
            assert item.cls in c.classes
        for f in c.named_features:
            assert f.position in {
                "north-west",
                "north",
                "north-east",
                "west",
                "centre",
                "east",
                "south-west",
                "south",
                "south-east",
                "throughout",
            }
        assert all("=" in t for t in c.tags)
        row = c.to_row()
        assert set(row) == {
            "land_cover",
            "land_use",
            "water",
            "building_count",
            "building_share",
            "roads",
            "named_features",
        }
    assert any_buildings and any_water and any_roads


def test_empty_and_far_away_chips(region):
    far = ChipArea("far", chip_grid(-60.0, -10.0, "EPSG:32720", 264, 10.0))
    ctx = map_context([far], region.overture_root)
    assert ctx["far"].land_cover == [] and ctx["far"].building_count == 0
    assert map_context([], region.overture_root) == {}


def test_positions():
    grid = chip_grid(10.9, 47.55, "EPSG:32632", 264, 10.0)
    x0, y0, x1, y1 = grid.bounds
    assert position_name(grid, x0 + 1, y1 - 1) == "north-west"
    assert position_name(grid, (x0 + x1) / 2, (y0 + y1) / 2) == "centre"
    assert position_name(grid, x1 - 1, y0 + 1) == "south-east"
    assert position_name(grid, x1 + 100, y0 - 100) == "south-east"


def test_extract_of_a_release_is_made_once(region, tmp_path):
    # The same code path as an s3:// release, with a file:// URL so it runs offline.
    cfg = OvertureConfig(source=f"file://{region.overture_root}", release="test-release")
    check_overture(cfg)  # one file's schema per type, read with DuckDB
    root = prepare_overture(cfg, [SMALL_BBOX], tmp_path)
    assert (root / "_SUCCESS").exists()
    chips = chips_over(region, 3)
    assert {k: v.land_cover for k, v in map_context(chips, root).items()} == {
        k: v.land_cover for k, v in map_context(chips, region.overture_root).items()
    }
    mtime = (root / "_SUCCESS").stat().st_mtime
    assert prepare_overture(cfg, [SMALL_BBOX], tmp_path) == root
    assert (root / "_SUCCESS").stat().st_mtime == mtime


def test_only_road_segments_count_as_roads(region):
    glob = region.overture_root / "theme=transportation" / "type=segment" / "*.parquet"
    road_classes = {
        c
        for (c,) in duckdb.sql(
            f"SELECT DISTINCT class FROM '{glob}' WHERE subtype = 'road'"
        ).fetchall()
    }
    ctx = map_context(chips_over(region), region.overture_root)
    assert any(c.roads for c in ctx.values())
    for c in ctx.values():
        assert {r.cls for r in c.roads} <= road_classes


def test_chips_sharing_a_grid_are_described_once(region):
    chips = chips_over(region, 2)
    twins = [ChipArea(f"{c.sample_id}-{period}", c.grid) for c in chips for period in "ab"]
    ctx = map_context(twins, region.overture_root)
    assert set(ctx) == {c.sample_id for c in twins}
    single = map_context(chips, region.overture_root)
    for c in chips:
        assert ctx[f"{c.sample_id}-a"] == ctx[f"{c.sample_id}-b"] == single[c.sample_id]
    assert ctx[f"{chips[0].sample_id}-a"] is not ctx[f"{chips[0].sample_id}-b"]


def test_merged_feature_position_does_not_depend_on_row_order():
    from pipeline.stages.context import _merge_named

    pieces = [
        NamedFeature("Emmer", "river", "water", "north", length_km=0.4),
        NamedFeature("Emmer", "river", "water", "south", length_km=1.0),
        NamedFeature("Emmer", "river", "water", "centre", length_km=0.7),
    ]
    for order in (pieces, pieces[::-1], [pieces[2], pieces[0], pieces[1]]):
        (merged,) = _merge_named(order)
        assert merged.position == "south" and merged.length_km == 2.1


def shapely_buildings(region, grid):
    """Independent count and footprint share of buildings meeting a chip (shapely + pyproj)."""
    path = next((region.overture_root / "theme=buildings" / "type=building").glob("*.parquet"))
    chip = shapely.box(*grid.bounds)
    to_utm = transformer("EPSG:4326", grid.crs).transform
    count, area = 0, 0.0
    for row in pq.read_table(path, columns=["geometry"]).to_pylist():
        part = transform(to_utm, shapely.from_wkb(row["geometry"])).intersection(chip)
        if not part.is_empty:
            count += 1
            area += part.area
    return count, area / chip.area


def test_building_count_and_share_match_shapely(region):
    chips = chips_over(region)
    ctx = map_context(chips, region.overture_root)
    assert any(c.building_count for c in ctx.values())
    for chip in chips:
        count, share = shapely_buildings(region, chip.grid)
        assert ctx[chip.sample_id].building_count == count
        assert abs(ctx[chip.sample_id].building_share - share) < 1e-4


def test_cold_warm_and_threaded_calls_agree(region):
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.stages import context as context

    chips = chips_over(region)
    context._CACHE.clear()
    cold = map_context(chips, region.overture_root)
    assert context._CACHE  # row groups are kept for the next shard
    warm = map_context(chips, region.overture_root)
    context._CACHE.clear()
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda _: map_context(chips, region.overture_root), range(8)))
    assert cold == warm
    assert all(t == cold for t in threaded)


@pytest.fixture(scope="module")
def taxonomy_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    """The test region's Overture extract with places in the basic_category/taxonomy schema."""
    return generate_demo_region(
        tmp_path_factory.mktemp("taxonomy") / "region",
        bbox=SMALL_BBOX,
        acquisitions=(),
        places_schema="taxonomy",
    )


def place_chips(root: Path, crs: str) -> list[ChipArea]:
    """A 320 m chip around every place of an extract."""
    table = pq.read_table(next((root / PLACES).glob("*.parquet")), columns=["geometry"])
    points = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    return [ChipArea(f"p{i}", chip_grid(p.x, p.y, crs, 32, 10.0)) for i, p in enumerate(points)]


def test_places_in_the_taxonomy_schema_give_the_same_classes(region, taxonomy_region):
    new_root = taxonomy_region.overture_root
    assert "categories" not in pq.read_schema(next((new_root / PLACES).glob("*.parquet"))).names
    check_overture(OvertureConfig(source=str(new_root)))
    chips = place_chips(region.overture_root, region.crs)
    old = map_context(chips, region.overture_root)
    new = map_context(chips, new_root)
    assert new == old
    classes = set().union(*(c.classes for c in new.values()))
    assert {"church_cathedral", "train_station", "hotel"} <= classes
    assert any("place=church_cathedral" in c.tags for c in new.values())


def test_place_class_precedence(region, taxonomy_region, tmp_path):
    """Per place: taxonomy.primary, else categories.primary, else basic_category."""
    table = pq.read_table(next((taxonomy_region.overture_root / PLACES).glob("*.parquet")))
    taxonomy = table["taxonomy"].to_pylist()
    basic = table["basic_category"].to_pylist()
    old = [{"primary": f"old_{t['primary']}", "alternate": None} for t in taxonomy]
    old[2] = None
    taxonomy[1] = taxonomy[2] = None  # 1: categories.primary, 2: basic_category
    table = table.set_column(
        table.schema.get_field_index("taxonomy"),
        "taxonomy",
        pa.array(taxonomy, table.schema.field("taxonomy").type),
    )
    table = table.append_column(
        "categories",
        pa.array(old, pa.struct([("primary", pa.string()), ("alternate", pa.list_(pa.string()))])),
    )
    root = tmp_path / "overture"
    (root / PLACES).mkdir(parents=True)
    pq.write_table(table, root / PLACES / "part-00000.parquet")
    expected = {t["primary"] for t in taxonomy if t} | {old[1]["primary"], basic[2]}
    ctx = map_context(place_chips(root, region.crs), root)
    assert set().union(*(c.classes for c in ctx.values())) == expected


@pytest.mark.parametrize(
    ("type_name", "column", "renamed", "named"),
    [
        ("water", "source_tags", "tags", "source_tags"),
        ("segment", "names", "name", "names.primary"),
        ("place", "categories", "category", "taxonomy.primary or categories.primary"),
    ],
)
@pytest.mark.parametrize("scheme", ["", "file://"])  # file://: read like s3://, with DuckDB
def test_a_renamed_column_is_an_error_not_null(
    region, tmp_path, scheme, type_name, column, renamed, named
):
    root = tmp_path / "overture"
    shutil.copytree(region.overture_root, root)
    folder = root / f"theme={OVERTURE_TYPES[type_name]}" / f"type={type_name}"
    path = next(folder.glob("*.parquet"))
    table = pq.read_table(path)
    names = [renamed if n == column else n for n in table.column_names]
    pq.write_table(table.rename_columns(names), path)
    with pytest.raises(PreflightError) as info:
        check_overture(OvertureConfig(source=f"{scheme}{root}"))
    assert info.value.field == "overture.source"
    where = f"{scheme}{folder}/*.parquet" if scheme else str(path)
    assert f"type {type_name} in {where} lacks column(s) {named}" in str(info.value)
    with pytest.raises(PreflightError, match=f"type {type_name}"):
        map_context(chips_over(region, 2), root)


def test_review_overlay_reads_place_kinds_in_both_schemas(region, taxonomy_region):
    """The review app's feature reader takes a place's kind from the same columns."""
    from validation.dataset import FeatureReader

    chip = place_chips(region.overture_root, region.crs)[0].grid
    lon, lat = chip.footprint_lonlat().centroid.coords[0]
    bounds = chip.footprint_lonlat().bounds
    row = {
        "bbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), bounds, strict=True)),
        "crs": chip.crs,
        "transform": chip.as_list(),
    }
    kinds = {}
    for name, root in (("old", region.overture_root), ("new", taxonomy_region.overture_root)):
        with FeatureReader(root) as reader:
            places = [f for f in reader.features(row) if f.theme == "place"]
        assert places, (name, lon, lat)
        kinds[name] = sorted(f.kind for f in places)
        assert all(kinds[name])
    assert kinds["old"] == kinds["new"]


BERLIN = (13.30, 52.45, 13.50, 52.55)


def test_a_local_copy_of_another_place_is_refused(region, tmp_path):
    local = OvertureConfig(source=str(region.overture_root))
    check_overture_covers(local, [SMALL_BBOX])
    # The demo's copy left in a config of another region: every chip's context would be empty.
    empty = map_context(
        [ChipArea("berlin", chip_grid(13.4, 52.5, "EPSG:32633", 64, 10.0))], region.overture_root
    )
    assert empty["berlin"] == MapContext()
    with pytest.raises(PreflightError) as info:
        check_overture_covers(local, [BERLIN])
    assert info.value.field == "overture.source" and "none near the region" in str(info.value)
    # Either side of an antimeridian region: one box near the copy is enough.
    check_overture_covers(local, [BERLIN, SMALL_BBOX])
    # Files written without statistics cannot tell: they pass.
    bare = tmp_path / "bare"
    shutil.copytree(region.overture_root, bare)
    for path in bare.rglob("*.parquet"):
        pq.write_table(pq.read_table(path), path, write_statistics=False)
    check_overture_covers(OvertureConfig(source=str(bare)), [BERLIN])
    # A remote release is global.
    check_overture_covers(
        OvertureConfig(source=f"file://{region.overture_root}", release="r"), [BERLIN]
    )
