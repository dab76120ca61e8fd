from __future__ import annotations

import io

from rich.console import Console

from pipeline.dataset.stats import ShardStats
from pipeline.runner.progress import StageProgress, StageRates


def stats(index: int, count: int, **seconds: float) -> ShardStats:
    return ShardStats(
        shard=index,
        path=f"{index:05d}.parquet",
        count=count,
        ok=count,
        failed=0,
        failures_by_reason={},
        stage_seconds=seconds,
        duration_s=sum(seconds.values()),
        bytes=1,
        finished_at="",
        config_hash="x",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stage_rates_and_eta():
    clock = Clock()
    rates = StageRates(workers=2, clock=clock)
    assert rates.eta_s() is None and rates.stage_rate("chips") is None
    clock.now = 10.0
    rates.add(stats(0, 64, chips=4.0, write=2.0, context=2.0), 1, 4)
    clock.now = 20.0
    rates.add(stats(1, 64, chips=4.0, write=2.0, context=2.0), 2, 4)
    assert rates.rate() == 128 / 20
    assert rates.stage_rate("chips") == 2 * 128 / 8.0  # two workers
    assert rates.stage_share("chips") == 0.5
    assert rates.samples_total() == 256
    assert rates.eta_s() == 2 * 20.0 / 2
    line = rates.summary()
    assert "shards 2/4" in line and "ETA 0:20" in line and "chips 32/s (50%)" in line
    assert "search" not in line.split("per stage:")[1]  # stages without time are left out


def test_stage_progress_draws_a_bar_per_stage():
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with StageProgress(console, workers=1) as progress:
        progress.on_shard(stats(0, 10, search=0.1, chips=1.0, write=0.5), 1, 2)
        progress.on_shard(stats(1, 10, search=0.1, chips=1.0, write=0.5), 2, 2)
    text = out.getvalue()
    for stage in ("shards", "search", "chips", "composite", "context", "caption", "write"):
        assert stage in text
    assert "10 samples/s, 62%" in text  # chips: 20 samples in 2 s; 2.0 of 3.2 stage-seconds
    assert "20/20" in text
