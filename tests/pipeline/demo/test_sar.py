from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, WATER
from pipeline.demo.landscape import Landscape, build_landscape
from pipeline.demo.region import load_sar_items
from pipeline.demo.sar import (
    DEMO_SAR_PASSES,
    ENL,
    RTC_NODATA,
    render_backscatter,
    sar_item_id,
    write_sar_pass,
)
from pipeline.demo.scene import DEMO_ACQUISITIONS, scene_grid
from pipeline.geo.grid import chip_grid, transformer
from pipeline.stages.sar import SarChip, resolve_acquisition
from tests.conftest import SMALL_BBOX
from tests.pipeline.stages.test_sar import read_one


@pytest.fixture(scope="module")
def landscape() -> Landscape:
    return build_landscape(scene_grid(SMALL_BBOX), 0)


def db(values: np.ndarray) -> float:
    return float(10 * np.log10(values.mean()))


def test_backscatter_follows_the_land_cover(landscape):
    vv = render_backscatter(landscape, DEMO_SAR_PASSES[2], 2, seed=0)["VV"]
    cls = landscape.cls
    plain = (landscape.urban == 0) & (landscape.road == 0)
    means = {c: db(vv[(cls == c) & plain]) for c in (WATER, BARE, CROPLAND, FOREST)}
    means[BUILT_UP] = db(vv[(cls == BUILT_UP) & (landscape.urban > 0.7)])
    # Water darkest, then bare soil, cropland, forest; dense built-up brightest (double bounce).
    order = [WATER, BARE, CROPLAND, FOREST, BUILT_UP]
    assert [means[c] for c in order] == sorted(means.values()), means
    assert means[WATER] < -20 and means[BUILT_UP] > 0
    vh = render_backscatter(landscape, DEMO_SAR_PASSES[2], 2, seed=0)["VH"]
    assert db(vh[cls == FOREST]) < means[FOREST] - 4  # cross-pol is weaker


def test_speckle_has_the_statistics_of_the_equivalent_number_of_looks(landscape):
    # Water gets no moisture field: its spread is speckle alone, std/mean = 1/sqrt(ENL).
    vv = render_backscatter(landscape, DEMO_SAR_PASSES[0], 0, seed=0)["VV"]
    water = vv[landscape.cls == WATER].astype(np.float64)
    assert abs(water.std() / water.mean() - 1 / np.sqrt(ENL)) < 0.03


def test_passes_are_reproducible_and_independent(landscape):
    a = render_backscatter(landscape, DEMO_SAR_PASSES[1], 1, seed=0)
    b = render_backscatter(landscape, DEMO_SAR_PASSES[1], 1, seed=0)
    c = render_backscatter(landscape, DEMO_SAR_PASSES[1], 2, seed=0)
    np.testing.assert_array_equal(a["VV"], b["VV"])
    assert not np.array_equal(a["VV"], c["VV"])


def test_every_optical_scene_but_the_last_has_a_pass_within_six_days():
    for acq in DEMO_ACQUISITIONS[:-1]:
        assert min(abs(p.date - acq.date) for p in DEMO_SAR_PASSES).days < 6
    assert min(abs(p.date - DEMO_ACQUISITIONS[-1].date) for p in DEMO_SAR_PASSES).days > 12
    assert sar_item_id(DEMO_SAR_PASSES[0]).startswith("S1A_IW_GRDH_1SDV_20240412T053312_")


def test_a_written_pass_reads_back_onto_a_chip_through_its_stac_item(landscape, tmp_path):
    sar_pass = DEMO_SAR_PASSES[3]
    item = write_sar_pass(tmp_path, landscape, sar_pass, 3, seed=0)
    for asset in item["assets"].values():
        asset["href"] = str(tmp_path / asset["href"])
    acq = resolve_acquisition(item, ("VV", "VH"))
    assert (acq.orbit_state, acq.relative_orbit) == ("ascending", 117)
    assert acq.nodata == {"VV": RTC_NODATA, "VH": RTC_NODATA}
    # A chip centred on the landscape: its 10 m grid is the COG's, so the read is exact.
    x, y = (landscape.grid.bounds[0] + landscape.grid.bounds[2]) / 2, landscape.grid.y0 - 3000
    lon, lat = transformer(f"EPSG:{landscape.grid.epsg}", "EPSG:4326").transform(x, y)
    grid = chip_grid(lon, lat, f"EPSG:{landscape.grid.epsg}", 96, 10.0)
    chip = read_one(acq, grid, polarisations=("VV", "VH"), optical_time=sar_pass.date)
    assert isinstance(chip, SarChip) and chip.time_offset_s == 0
    with rasterio.open(acq.hrefs["VH"]) as src:
        window = from_bounds(*grid.bounds, src.transform)
        raw = src.read(1, window=window)
    np.testing.assert_allclose(chip.db[1], 10 * np.log10(raw), atol=1e-4)


def test_the_region_carries_sar_passes_consistent_with_its_truth_raster(region):
    items = load_sar_items(region)
    assert [i["id"] for i in items] == list(region.sar_item_ids)
    assert [i["id"] for i in items] == [sar_item_id(p) for p in DEMO_SAR_PASSES]
    assert {i["collection"] for i in items} == {"sentinel-1-rtc"}
    with rasterio.open(region.root / "truth" / "landcover.tif") as src:
        truth = src.read(1)
    with rasterio.open(region.root / items[0]["assets"]["vv"]["href"]) as src:
        assert (src.crs.to_string(), src.nodata) == (region.crs, RTC_NODATA)
        vv = src.read(1)
    assert vv.shape == truth.shape
    assert db(vv[truth == WATER]) < -20 < db(vv[truth == FOREST]) < db(vv[truth == BUILT_UP])
