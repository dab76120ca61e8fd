"""Coherence in a shard build: on the demo servers, part of the sar stage, never a failure."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import from_bounds

from pipeline.core.config import RunConfig
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.stats import read_stats
from pipeline.demo.coherence import COHERENCE_COLLECTION, DEMO_COHERENCE_PAIRS, coherence_item_id
from pipeline.demo.region import DemoRegion
from pipeline.demo.servers import DemoServers
from pipeline.geo.grid import ChipGrid
from pipeline.geo.sar import COHERENCE_NODATA
from pipeline.runner.report import summarize
from tests.conftest import make_config
from tests.pipeline.runner.test_sar_stage import WINDOW_DAYS, build


@pytest.fixture(scope="module")
def with_coherence(
    region: DemoRegion, servers: DemoServers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunConfig, list[dict], dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("coherence") / "out"
    sar = {"window_days": WINDOW_DAYS, "coherence": {"collection": COHERENCE_COLLECTION}}
    return build(make_config(region, servers, out, sar=sar))


def test_samples_without_a_pair_stay_ok_and_the_stats_count_the_states(with_coherence):
    config, rows, cubes = with_coherence
    with_chip = [(i, r) for i, r in enumerate(rows) if r["crs"] is not None]
    assert {r["coh_state"] for _, r in with_chip} == {"ok", "no_acquisition"}
    for i, r in with_chip:
        assert r["status"] == "ok" and r["caption"] and cubes["pixels"][i].any()
        if r["coh_state"] == "no_acquisition":
            # 25 October: the nearest pair's midpoint (21 September) is 34 days away.
            assert r["datetime"].month == 10 and r["coh_item_id"] is None
            assert COHERENCE_COLLECTION in r["coh_message"]
            assert not cubes["coherence"][i].any()
    assert all(r["coh_state"] is None for r in rows if r["crs"] is None)
    layout = DatasetLayout(config.output.dir)
    counted: dict[str, int] = {}
    for index in layout.finished_shards():
        for state, n in read_stats(layout.stats_path(index)).coh_states.items():
            counted[state] = counted.get(state, 0) + n
    expected: dict[str, int] = {}
    for r in rows:
        if r["coh_state"] is not None:
            expected[r["coh_state"]] = expected.get(r["coh_state"], 0) + 1
    assert counted == expected
    # ... and the run report sums them.
    report = summarize(config.output.dir, len(layout.finished_shards()), [], 0.0)
    assert report.coh_states == expected


def test_each_ok_sample_holds_the_pair_containing_its_scene_as_stored_in_the_cog(
    region, with_coherence
):
    config, rows, cubes = with_coherence
    size = config.chips.size_px
    ids = {coherence_item_id(p): p for p in DEMO_COHERENCE_PAIRS}
    ok = [(i, r) for i, r in enumerate(rows) if r["coh_state"] == "ok"]
    assert len(ok) >= 3
    for i, r in ok:
        pair = ids[r["coh_item_id"]]
        assert (r["coh_start_datetime"], r["coh_end_datetime"]) == (pair.start, pair.end)
        assert pair.start <= r["datetime"] <= pair.end  # every ok scene lies inside its pair
        midpoint = pair.start + (pair.end - pair.start) / 2
        assert r["coh_time_offset_s"] == (midpoint - r["datetime"]).total_seconds()
        # The chip's 10 m grid is the COG's: hundredths stored are the COG's DN, exactly.
        stored = cubes["coherence"][i]
        assert stored.shape == (1, size, size) and stored.dtype == np.uint8
        grid = ChipGrid(r["crs"], Affine(*r["transform"]), size)
        href = region.root / "cogs" / r["coh_item_id"] / "coherence.tif"
        with rasterio.open(href) as src:
            dn = src.read(1, window=from_bounds(*grid.bounds, src.transform))
        assert dn.shape == (size, size)
        assert np.array_equal(stored[0], dn)
        assert COHERENCE_NODATA not in stored
