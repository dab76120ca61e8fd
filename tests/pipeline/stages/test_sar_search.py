from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from pipeline.core.config import SarConfig, StacConfig
from pipeline.demo.landscape import build_landscape
from pipeline.demo.sar import DEMO_SAR_PASSES, write_sar_pass
from pipeline.demo.scene import scene_grid
from pipeline.demo.servers import serve_demo
from pipeline.geo.grid import chip_grid
from pipeline.stages.sar import SarChip, SarMissing, SarRequest, sar_for_samples
from tests.conftest import SMALL_BBOX

PASSES = (DEMO_SAR_PASSES[2], DEMO_SAR_PASSES[3])  # 4 July descending, 13 August ascending


@pytest.fixture(scope="module")
def sar_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    root = tmp_path_factory.mktemp("sar")
    ls = build_landscape(scene_grid(SMALL_BBOX), 0)
    items = [write_sar_pass(root, ls, p, i, seed=0) for i, p in enumerate(PASSES)]
    return root, items, f"EPSG:{ls.grid.epsg}"


def request(sample_id: str, lon: float, lat: float, crs: str, when: dt.datetime) -> SarRequest:
    return SarRequest(sample_id, chip_grid(lon, lat, crs, 64, 10.0), when)


def test_each_sample_gets_its_closest_pass_over_http_or_a_missing_state(sar_root):
    root, items, crs = sar_root
    july = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    august = dt.datetime(2024, 8, 10, 10, 20, tzinfo=dt.UTC)
    winter = dt.datetime(2024, 12, 1, 10, 20, tzinfo=dt.UTC)
    requests = [
        request("july", 10.90, 47.575, crs, july),
        request("august", 10.88, 47.565, crs, august),
        request("winter", 10.90, 47.575, crs, winter),
        request("outside", 12.5, 47.575, "EPSG:32633", july),
    ]
    with serve_demo(root, items) as srv:
        found = sar_for_samples(
            requests, SarConfig(window_days=12), StacConfig(api_url=srv.stac_url)
        )
    assert set(found) == {"july", "august", "winter", "outside"}
    july_chip, august_chip = found["july"], found["august"]
    assert isinstance(july_chip, SarChip) and isinstance(august_chip, SarChip)
    assert july_chip.acquisition.item_id == items[0]["id"]
    assert july_chip.acquisition.orbit_state == "descending"
    assert july_chip.time_offset_s == (PASSES[0].date - july).total_seconds() < 0
    assert august_chip.acquisition.item_id == items[1]["id"]
    assert (august_chip.acquisition.relative_orbit, august_chip.time_offset_s > 0) == (117, True)
    for name in ("winter", "outside"):
        missing = found[name]
        assert isinstance(missing, SarMissing) and missing.state == "no_acquisition"
    # Pixels read over HTTP are the file's pixels in dB (the chip grid is the COG's grid).
    with rasterio.open(root / items[0]["assets"]["vv"]["href"]) as src:
        raw = src.read(1, window=from_bounds(*requests[0].grid.bounds, src.transform))
    np.testing.assert_allclose(july_chip.db[0], 10 * np.log10(raw), atol=1e-4)


def test_an_unreachable_catalog_is_a_missing_state_for_every_sample(sar_root):
    _, _, crs = sar_root
    when = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    found = sar_for_samples(
        [request("a", 10.90, 47.575, crs, when)],
        SarConfig(api_url="http://127.0.0.1:9/"),
        StacConfig(max_retries=0, timeout_s=2),
    )
    assert isinstance(found["a"], SarMissing) and found["a"].state == "search_error"
    assert "127.0.0.1:9" in found["a"].message
