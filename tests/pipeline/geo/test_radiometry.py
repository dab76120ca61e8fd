"""Radiometry: every catalog's item shape ends at reflectance = DN / 10000, checked on pixels."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from pipeline.dataset.reader import read_cubes
from pipeline.dataset.stats import ShardStats
from pipeline.demo import region as demo
from pipeline.demo.flavors import FLAVOR_COLLECTIONS
from pipeline.demo.region import DemoRegion
from pipeline.demo.scene import Acquisition
from pipeline.demo.servers import serve_demo
from pipeline.geo.bands import L2A_BANDS
from pipeline.geo.grid import chip_grid
from pipeline.geo.radiometry import OffsetDecision, check_pixels, decide_offset, harmonise
from pipeline.runner.build import build_shard
from pipeline.runner.plan import plan_run
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.scenes import SceneAssets, resolve_scene
from tests.conftest import make_config

NAMES = tuple(b.name for b in L2A_BANDS)
JULY = dt.datetime(2024, 7, 6, 10, 20, 31, tzinfo=dt.UTC)
# One overpass processed twice: the same surface before and after baseline 04.00.
ACQS = (
    Acquisition(JULY, 0.05, "full", "05.10", "sentinel-2a"),
    Acquisition(JULY, 0.05, "full", "03.01", "sentinel-2b"),
)
BBOX = (10.90, 47.55, 10.95, 47.59)
CHIP_CENTRE = (10.925, 47.57)

# (flavor, baseline) -> DN the COG carries above reflectance x 10000.
SHAPES = {
    ("earth-search-c1", "05.10"): 1000,
    ("earth-search-c1", "03.01"): 0,
    ("earth-search", "05.10"): 0,  # Element 84 removed it although raster:bands says -0.1
    ("earth-search", "03.01"): 0,
    ("planetary-computer", "05.10"): 1000,
    ("planetary-computer", "03.01"): 0,
}


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoRegion]:
    root = tmp_path_factory.mktemp("radiometry")
    return {
        flavor: demo.generate_demo_region(
            root / flavor, bbox=BBOX, acquisitions=ACQS, item_flavor=flavor
        )
        for flavor in FLAVOR_COLLECTIONS
    }


def _item(region: DemoRegion, baseline: str) -> dict:
    (item,) = [
        i for i in demo.load_items(region) if i["properties"]["s2:processing_baseline"] == baseline
    ]
    return item


def _scene(region: DemoRegion, item: dict) -> SceneAssets:
    local = copy.deepcopy(item)  # the region's items hold hrefs relative to its root
    for asset in local["assets"].values():
        asset["href"] = str(region.root / asset["href"])
    return resolve_scene(local, L2A_BANDS)


def _chip(scene: SceneAssets) -> Chip:
    grid = chip_grid(*CHIP_CENTRE, scene.crs, 128, 10.0)
    chip = read_chips([ChipRequest("s", scene, grid)], L2A_BANDS)["s"]
    assert isinstance(chip, Chip), chip
    return chip


def _raw(scene: SceneAssets, band: str) -> np.ndarray:
    grid = chip_grid(*CHIP_CENTRE, scene.crs, 128, 10.0)
    x0, _, _, y1 = grid.bounds
    with rasterio.open(scene.band_hrefs[band]) as src:
        row, col = src.index(x0 + 5, y1 - 5)
        return src.read(1, window=((row, row + 128), (col, col + 128))).astype(int)


@pytest.mark.parametrize(("flavor", "baseline"), list(SHAPES))
def test_known_dn_become_the_right_reflectance(regions, flavor, baseline):
    region = regions[flavor]
    scene = _scene(region, _item(region, baseline))
    chip = _chip(scene)
    expected_offset = SHAPES[flavor, baseline]
    assert chip.radiometry.offset_dn == dict.fromkeys(NAMES, expected_offset)
    assert chip.radiometry.check == "consistent"
    for band in ("B02", "B03", "B04", "B08"):  # 10 m bands: the COG's own pixels
        raw = _raw(scene, band)
        got = chip.pixels[NAMES.index(band)].astype(int)
        assert np.array_equal(got, np.clip(raw - expected_offset, 1, None))
    # Whatever the shape, the same surface has the same reflectance.
    reference = _chip(_scene(regions["earth-search"], _item(regions["earth-search"], baseline)))
    diff = np.abs(chip.pixels.astype(int) - reference.pixels.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001  # 20/60 m averages round alike
    # Plausible reflectance: vegetation is dark in red, bright in NIR.
    veg = chip.scl == 4
    assert veg.sum() > 1000
    red = chip.pixels[NAMES.index("B04")][veg] / 10000
    nir = chip.pixels[NAMES.index("B08")][veg] / 10000
    assert 0.005 < np.median(red) < 0.08 < 0.2 < np.median(nir) < 0.6


def test_earth_search_l2a_stale_raster_offset_is_not_applied(regions):
    item = _item(regions["earth-search"], "05.10")
    # What the pre-issue-9 code trusted: raster:bands says 1000 DN are still in the pixels.
    assert item["assets"]["red"]["raster:bands"][0]["offset"] == -0.1
    assert item["properties"]["earthsearch:boa_offset_applied"] is True
    scene = _scene(regions["earth-search"], item)
    assert scene.radiometry == OffsetDecision(dict.fromkeys(NAMES, 0), "earthsearch-flag")
    chip = _chip(scene)
    red = chip.pixels[NAMES.index("B04")]
    # Taking 1000 off again would put most vegetation at 1 (the floor): it must not happen.
    assert (red[chip.scl == 4] <= 1).mean() < 0.01


def test_pixels_overrule_a_flag_that_says_not_applied(regions):
    """Element84/earth-search#66: flag false on baseline 04.00, offset already removed."""
    region = regions["earth-search"]
    item = copy.deepcopy(_item(region, "05.10"))
    item["properties"]["earthsearch:boa_offset_applied"] = False
    scene = _scene(region, item)
    assert scene.radiometry.offset_dn["B04"] == 1000  # what the metadata says
    chip = _chip(scene)
    assert chip.radiometry.check == "offset_absent_in_pixels"
    assert chip.radiometry.offset_dn == dict.fromkeys(NAMES, 0)
    assert chip.radiometry.dark_share is not None and chip.radiometry.dark_share > 0.9
    assert np.array_equal(chip.pixels[NAMES.index("B04")], _raw(scene, "B04"))


def test_pixels_overrule_a_flag_that_says_applied(regions):
    """The other direction: flagged as applied, the pixels still carry the offset."""
    region = regions["earth-search-c1"]
    item = copy.deepcopy(_item(region, "05.10"))
    item["properties"]["earthsearch:boa_offset_applied"] = True
    scene = _scene(region, item)
    assert scene.radiometry == OffsetDecision(dict.fromkeys(NAMES, 0), "earthsearch-flag")
    chip = _chip(scene)
    assert chip.radiometry.check == "offset_present_in_pixels"
    assert chip.radiometry.offset_dn == dict.fromkeys(NAMES, 1000)
    assert chip.radiometry.dark_share is not None and chip.radiometry.dark_share < 0.02
    raw = _raw(scene, "B04")
    assert np.array_equal(chip.pixels[NAMES.index("B04")], np.clip(raw - 1000, 1, None))


def _asset(offset: float | None) -> dict:
    return {} if offset is None else {"raster:bands": [{"scale": 0.0001, "offset": offset}]}


@pytest.mark.parametrize(
    ("collection", "props", "offset", "expected", "rule"),
    [
        ("sentinel-2-l2a", {"earthsearch:boa_offset_applied": True}, -0.1, 0, "earthsearch-flag"),
        (
            "sentinel-2-l2a",
            {"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "04.00"},
            -0.1,
            1000,
            "earthsearch-flag",
        ),
        (
            "sentinel-2-l2a",
            {"earthsearch:boa_offset_applied": False, "s2:processing_baseline": "03.01"},
            -0.1,
            0,
            "earthsearch-flag",
        ),
        ("sentinel-2-c1-l2a", {"s2:processing_baseline": "05.11"}, -0.1, 1000, "raster-bands"),
        ("sentinel-2-c1-l2a", {}, 0.0, 0, "raster-bands"),
        ("sentinel-2-l2a", {"s2:processing_baseline": "05.10"}, None, 1000, "processing-baseline"),
        ("sentinel-2-l2a", {"s2:processing_baseline": "03.01"}, None, 0, "processing-baseline"),
        ("sentinel-2-l2a", {"s2:processing_baseline": "n/a"}, None, 0, "none"),
        ("sentinel-2-c1-l2a", {}, None, 1000, "collection"),
        ("sentinel-2-l2a", {}, None, 0, "none"),
    ],
)
def test_decide_offset_rules(collection, props, offset, expected, rule):
    decision = decide_offset(collection, props, {"B04": _asset(offset), "B08": _asset(offset)})
    assert decision == OffsetDecision({"B04": expected, "B08": expected}, rule)


def _cube(value: int, scl_class: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    raw = np.full((len(NAMES), n, n), value, np.uint16)
    return raw, np.full((n, n), scl_class, np.uint8)


def test_too_few_dark_candidates_is_inconclusive():
    says = OffsetDecision(dict.fromkeys(NAMES, 1000), "processing-baseline")
    # Cloud and snow are bright with or without the offset: the metadata stands.
    for scl_class in (8, 9, 11):
        raw, scl = _cube(400, scl_class)
        check = check_pixels(raw, scl, NAMES, says)
        assert (check.check, check.offset_dn, check.dark_share) == (
            "inconclusive",
            says.offset_dn,
            None,
        )
    # Vegetation, but a share between the two thresholds: no verdict either.
    raw, scl = _cube(1300, 4)
    raw[:, :20, :] = 400
    check = check_pixels(raw, scl, NAMES, says)
    assert check.check == "inconclusive" and check.offset_dn == says.offset_dn
    assert check.dark_share == pytest.approx(20 / 64)


def test_harmonise_keeps_nodata_and_floors_valid_pixels_at_one():
    raw = np.array([[[0, 500, 1000, 1500]]], np.uint16)
    assert harmonise(raw.copy(), ("B04",), {"B04": 1000}).tolist() == [[[0, 1, 1, 500]]]
    assert harmonise(raw.copy(), ("B04",), {"B04": 0}).tolist() == raw.tolist()


def _build_first_shard(region: DemoRegion, servers, out: Path) -> tuple[list[dict], ShardStats]:
    plan = plan_run(make_config(region, servers, out))
    stats = build_shard(next(plan.iter_shards()), plan.config, overture_root=plan.overture_root)
    return read_rows_with_cubes(out / "shards" / "00000.parquet"), stats


def read_rows_with_cubes(path: Path) -> list[dict]:
    """A shard's rows with ``pixels`` decoded (read_cubes: any schema version)."""
    table = pq.read_table(path)
    pixels = read_cubes(table)
    rows = table.drop_columns(["pixels", "scl"]).to_pylist()
    valid = table.column("pixels").is_valid().to_pylist()
    return [{**r, "pixels": pixels[i] if valid[i] else None} for i, r in enumerate(rows)]


def test_earth_search_l2a_shards_match_collection_1(
    region, servers, l2a_region, l2a_servers, tmp_path: Path
):
    """The whole pipeline (STAC API, COGs over HTTP) gives every Earth Search shape alike,
    mistagged items included (flag false on harmonised pixels, as in earth-search#66)."""
    mistagged = demo.load_items(l2a_region)
    for item in mistagged:
        item["properties"]["earthsearch:boa_offset_applied"] = False
    c1, c1_stats = _build_first_shard(region, servers, tmp_path / "c1")
    l2a, l2a_stats = _build_first_shard(l2a_region, l2a_servers, tmp_path / "l2a")
    with serve_demo(l2a_region.root, mistagged) as bad_servers:
        bad, bad_stats = _build_first_shard(l2a_region, bad_servers, tmp_path / "mistagged")
    assert c1_stats.radiometry_overruled == l2a_stats.radiometry_overruled == {}
    c1_rows = {r["sample_id"]: r for r in c1}
    assert len(l2a) == len(bad) == len(c1) > 0
    overruled = 0
    for row, bad_row in zip(l2a, bad, strict=True):
        other = c1_rows[row["sample_id"]]
        assert row["status"] == other["status"] == bad_row["status"]
        if row["status"] != "ok":
            continue
        assert row["stac_collection"] == "sentinel-2-l2a"
        assert row["radiometry_rule"] == bad_row["radiometry_rule"] == "earthsearch-flag"
        assert (row["radiometry_check"], other["radiometry_check"]) == ("consistent",) * 2
        assert row["offset_removed_dn"] == [0] * 12
        assert other["offset_removed_dn"] == [1000] * 12
        a = np.asarray(row["pixels"], dtype=int)
        assert np.abs(a - np.asarray(other["pixels"], dtype=int)).max() <= 1
        if bad_row["radiometry_check"] == "offset_absent_in_pixels":
            overruled += 1
            assert bad_row["offset_removed_dn"] == [0] * 12
            assert np.array_equal(np.asarray(bad_row["pixels"], dtype=int), a)
        else:  # too cloudy to tell: the metadata's (wrong) offset stands, and says so
            assert bad_row["radiometry_check"] == "inconclusive"
    assert overruled > 0
    assert bad_stats.radiometry_overruled == {"offset_absent_in_pixels": overruled}


def test_a_band_set_without_visible_bands_is_inconclusive():
    says = OffsetDecision({"B08": 1000}, "raster-bands")
    raw, scl = _cube(400, 4)
    check = check_pixels(raw[:1], scl, ("B08",), says)
    assert (check.check, check.offset_dn, check.dark_share) == ("inconclusive", {"B08": 1000}, None)
