"""The sar stage of a shard build: Sentinel-1 columns on the demo servers, never a failure."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from affine import Affine

from pipeline.core.config import RunConfig
from pipeline.dataset.columns import CUBE_COLUMNS
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.stats import read_stats
from pipeline.demo.region import DemoRegion
from pipeline.demo.servers import DemoServers
from pipeline.geo.grid import ChipGrid
from pipeline.geo.sar import centi_db, db_from_centi
from pipeline.runner.build import build_shard
from pipeline.runner.plan import plan_run
from pipeline.runner.report import run_status, summarize
from pipeline.stages.sar import SarCatalog, SarChip, SarRequest, sar_for_samples
from tests.conftest import make_config

# 2.5 days: every small-region scene has a pass that close but 25 October's (22 October,
# 2.7 days before), so the autumn samples cut from it have no SAR.
WINDOW_DAYS = 2.5


def build(config: RunConfig) -> tuple[RunConfig, list[dict], dict[str, np.ndarray]]:
    plan = plan_run(config)
    for shard in plan.iter_shards():
        build_shard(shard, plan.config, overture_root=plan.overture_root)
    layout = DatasetLayout(plan.config.output.dir)
    tables = [pq.read_table(p) for p in layout.finished_shards().values()]
    rows = [r for t in tables for r in t.drop_columns(list(CUBE_COLUMNS)).to_pylist()]
    cubes = {c: np.concatenate([read_cubes(t, c) for t in tables]) for c in CUBE_COLUMNS}
    return plan.config, rows, cubes


@pytest.fixture(scope="module")
def with_sar(
    region: DemoRegion, servers: DemoServers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunConfig, list[dict], dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("sar") / "out"
    return build(make_config(region, servers, out, sar={"window_days": WINDOW_DAYS}))


def grid_of(row: dict) -> ChipGrid:
    return ChipGrid(row["crs"], Affine(*row["transform"]), 64)


def test_samples_without_a_pass_stay_ok_with_their_optical_data(with_sar):
    config, rows, cubes = with_sar
    states = {r["sar_state"] for r in rows if r["status"] == "ok"}
    assert states == {"ok", "no_acquisition"}
    for i, r in enumerate(rows):
        if r["sar_state"] != "no_acquisition":
            continue
        assert r["status"] == "ok" and r["caption"] and r["datetime"].month == 10
        assert cubes["pixels"][i].any() and r["rgb"] is not None
        assert f"within {WINDOW_DAYS} days" in r["sar_message"] and r["sar_item_id"] is None
    # The shard stats count the states.
    layout = DatasetLayout(config.output.dir)
    counted: dict[str, int] = {}
    for index in layout.finished_shards():
        for state, n in read_stats(layout.stats_path(index)).sar_states.items():
            counted[state] = counted.get(state, 0) + n
    expected: dict[str, int] = {}
    for r in rows:
        if r["sar_state"] is not None:
            expected[r["sar_state"]] = expected.get(r["sar_state"], 0) + 1
    assert counted == expected
    # ... and the run report sums them.
    report = summarize(config.output.dir, len(layout.finished_shards()), [], 0.0)
    assert report.sar_states == expected
    assert run_status(config.output.dir).sar_states == expected  # eocap status too
    assert all(r["sar_state"] is None for r in rows if r["crs"] is None)  # failed before a chip
    # Without sar.coherence no coherence is read: its columns are null.
    assert all(r["coh_state"] is None for r in rows) and not cubes["coherence"].any()


def test_sar_columns_hold_what_the_sar_stage_reads(with_sar):
    config, rows, cubes = with_sar
    assert config.sar is not None
    size = config.chips.size_px
    ok = [(i, r) for i, r in enumerate(rows) if r["sar_state"] == "ok"]
    assert len(ok) >= 3
    requests = [
        SarRequest(r["sample_id"], ChipGrid(r["crs"], Affine(*r["transform"]), size), r["datetime"])
        for _, r in ok
    ]
    found = sar_for_samples(requests, config.sar, SarCatalog(config.sar, config.stac))
    for i, r in ok:
        chip = found[r["sample_id"]]
        assert isinstance(chip, SarChip)
        assert r["sar_item_id"] == chip.acquisition.item_id
        assert r["sar_orbit_state"] == chip.acquisition.orbit_state
        assert r["sar_relative_orbit"] == chip.acquisition.relative_orbit
        assert r["sar_datetime"] == chip.acquisition.datetime
        assert r["sar_time_offset_s"] == chip.time_offset_s
        assert abs(r["sar_time_offset_s"]) <= WINDOW_DAYS * 86400
        assert r["sar_polarisations"] == ["VV", "VH"] and r["sar_collection"] == "sentinel-1-rtc"
        stored = db_from_centi(cubes["sar_db"][i])
        assert np.array_equal(np.isnan(stored), np.isnan(chip.db))
        valid = ~np.isnan(chip.db)
        assert valid.mean() > 0.9
        # Stored exactly as centi_db rounds it: within half a hundredth (and float32's error).
        assert np.array_equal(cubes["sar_db"][i], centi_db(chip.db))
        assert np.abs(stored[valid] - chip.db[valid]).max() <= 0.005 + 1e-5


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_dead_sar_catalog_leaves_every_sample_as_it_was(region, servers, tmp_path: Path):
    dead = f"http://127.0.0.1:{closed_port()}"
    config = make_config(
        region,
        servers,
        tmp_path / "out",
        sar={"api_url": dead},
        **{"stac.max_retries": 0},
    )
    _, rows, cubes = build(config)
    with_chip = [r for r in rows if r["crs"] is not None]
    assert with_chip and all(r["status"] == "ok" for r in with_chip)
    assert {r["sar_state"] for r in with_chip} == {"search_error"}
    assert all(dead in r["sar_message"] for r in with_chip)
    assert not cubes["sar_db"].any()  # every sar_db null
