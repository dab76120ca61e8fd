"""Progress per stage: samples through each stage, its rate, its share of the time, and an ETA.

Driven only by the :class:`~pipeline.dataset.stats.ShardStats` a shard task returns (count and wall
seconds per stage), so it works the same whatever runs the shards: Prefect's thread pool in
this process, or Dask workers in other processes and machines (the stats come back as the
task's result; nothing has to call back across processes). Updates come once per finished
shard.

* :class:`StageRates` keeps the totals and formats a one-line summary (used for the flow's log,
  so a deployment's run shows it in the Prefect UI).
* :class:`StageProgress` draws it with rich: a bar for shards and one per stage. Use its
  :meth:`StageProgress.on_shard` as the ``on_shard`` callback of ``run_build``.

Rates: ``samples/s`` of a stage is samples it processed per second of that stage's wall time,
times the number of parallel workers, i.e. what the run would reach if that stage were the
only one; the slowest stage bounds the run. The ETA is over all stages: remaining shards at the
average shard rate so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pipeline.dataset.stats import ShardStats
from pipeline.runner.build import STAGES

__all__ = ["StageProgress", "StageRates"]


class StageRates:
    """Totals per stage over finished shards, and the rates and ETA they imply.

    Args:
        workers: Shards running in parallel (``runtime.workers``), to turn a stage's rate per
            worker into the run's.
        clock: Seconds, monotonic (for tests).
    """

    def __init__(self, workers: int = 1, clock: Callable[[], float] = time.perf_counter) -> None:
        self.workers = max(1, workers)
        self.clock = clock
        self.t0 = clock()
        self.samples = 0
        self.shards_done = 0
        self.shards_total: int | None = None
        self.stage_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    def add(self, stats: ShardStats, done: int, total: int) -> None:
        """Count one finished shard (the ``on_shard`` signature: stats, shards done, total)."""
        self.samples += stats.count
        self.shards_done = done
        self.shards_total = total
        for stage, seconds in stats.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    @property
    def elapsed_s(self) -> float:
        """Wall seconds since the tracker was made."""
        now: float = self.clock()
        return max(now - self.t0, 1e-9)

    def rate(self) -> float:
        """Samples per second of wall time, all stages."""
        return self.samples / self.elapsed_s

    def stage_rate(self, stage: str) -> float | None:
        """Samples per second the stage alone would sustain with ``workers`` workers."""
        seconds = self.stage_seconds.get(stage, 0.0)
        if not self.samples or seconds <= 0:
            return None
        return self.workers * self.samples / seconds

    def stage_share(self, stage: str) -> float:
        """The stage's share of all stage time so far (0..1)."""
        total = sum(self.stage_seconds.values())
        return self.stage_seconds.get(stage, 0.0) / total if total > 0 else 0.0

    def samples_total(self) -> int | None:
        """Planned samples, estimated from the mean shard size so far."""
        if self.shards_total is None or not self.shards_done:
            return None
        return round(self.samples * self.shards_total / self.shards_done)

    def eta_s(self) -> float | None:
        """Seconds left at the average shard rate so far (None before the first shard)."""
        if self.shards_total is None or not self.shards_done:
            return None
        left = max(self.shards_total - self.shards_done, 0)
        return left * self.elapsed_s / self.shards_done

    def summary(self) -> str:
        """One line: shards, overall rate, ETA, then each stage's rate and share of the time."""
        eta = self.eta_s()
        head = (
            f"shards {self.shards_done}/{self.shards_total}, {self.samples} samples, "
            f"{self.rate():.1f} samples/s" + (f", ETA {_duration(eta)}" if eta is not None else "")
        )
        parts = []
        for stage in self.stage_seconds:
            r = self.stage_rate(stage)
            if r is not None:
                parts.append(f"{stage} {r:.0f}/s ({100 * self.stage_share(stage):.0f}%)")
        return head + ("; per stage: " + ", ".join(parts) if parts else "")


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StageProgress:
    """Rich progress bars: shards, then one bar per stage with its rate and share, and ETAs.

    Use as a context manager and pass :meth:`on_shard` to ``run_build``::

        with StageProgress(console, workers=config.runtime.workers) as progress:
            report = run_build(config, progress.on_shard)
    """

    def __init__(self, console: Any = None, workers: int = 1) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.rates = StageRates(workers)
        self.progress = Progress(
            TextColumn("[bold]{task.description:>9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self._shards = self.progress.add_task("shards", total=None, rate="")
        self._stages = {s: self.progress.add_task(s, total=None, rate="") for s in STAGES}

    def __enter__(self) -> StageProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def on_shard(self, stats: ShardStats, done: int, total: int) -> None:
        """Update every bar with one finished shard."""
        r = self.rates
        r.add(stats, done, total)
        self.progress.update(
            self._shards, completed=done, total=total, rate=f"{r.rate():.1f} samples/s"
        )
        samples_total = r.samples_total()
        for stage, task_id in self._stages.items():
            rate = r.stage_rate(stage)
            text = (
                "" if rate is None else f"{rate:.0f} samples/s, {100 * r.stage_share(stage):.0f}%"
            )
            self.progress.update(task_id, completed=r.samples, total=samples_total, rate=text)
