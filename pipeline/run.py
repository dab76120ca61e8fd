"""A run: preflight, planning, the shard list, and the report at the end.

The flow in ``flows/`` strings these together; they are plain functions so the CLI, the tests
and the benchmarks call the same code.

Output layout (``output.dir``)::

    run.json                 config (overture.release resolved: the run's pinned release),
                             config hash, eocap version
    manifest.parquet         every planned sample (id, shard, location, period)
    shards/00000.parquet     samples (see docs/dataset-schema.md)
    shards/_stats/00000_stats.json  the shard is done iff this exists
    report.json              the last run's summary
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from . import __version__
from .build import STAGES, config_hash
from .config import LATEST_RELEASE, RunConfig
from .context import check_overture, prepare_overture
from .errors import ConfigError
from .overture_release import read_catalog
from .prompts import load_prompt
from .sampling import (
    Location,
    ShardPlan,
    iter_shards,
    plan_locations,
    region_geometry,
    write_manifest,
)
from .scenes import check_stac
from .shards import ShardStats, read_stats, shard_paths

__all__ = [
    "RunPlan",
    "RunReport",
    "RunStatus",
    "failed_samples",
    "plan_run",
    "preflight",
    "resolve_release",
    "run_status",
    "summarize",
]


def resolve_release(config: RunConfig) -> RunConfig:
    """The config with ``overture.release: latest`` replaced by the run's release.

    That is the release pinned in ``output.dir/run.json`` if the output dir holds a run (a
    resumed run never changes release), else the newest in Overture's catalog
    (``overture.catalog_url``). Any other release is returned as it is.

    Raises:
        PreflightError: naming ``overture.catalog_url`` if the catalog cannot be read.
    """
    if config.overture.release != LATEST_RELEASE:
        return config
    run_json = config.output.dir / "run.json"
    pinned: object = None
    if run_json.exists():
        stored = json.loads(run_json.read_text()).get("config", {})
        pinned = stored.get("overture", {}).get("release")
    if isinstance(pinned, str) and pinned != LATEST_RELEASE:
        return config.with_updates({"overture.release": pinned})
    return config.with_updates(
        {"overture.release": read_catalog(config.overture.catalog_url).latest}
    )


def preflight(config: RunConfig, *, captioning: bool | None = None) -> RunConfig:
    """Check everything a run needs before any work: region, Overture, STAC API, captioner.

    Args:
        config: The run config.
        captioning: Whether this process captions, so the caption server must answer now.
            Default: unless ``captioner.stage`` is ``separate`` (then the caption flow, on
            the GPU hosts, checks it: a build host need not wait for them).

    Returns:
        The config with its Overture release resolved (:func:`resolve_release`).

    Raises:
        ConfigError: naming the field at fault (``PreflightError`` for unusable values).
    """
    region_geometry(config.region)
    config = resolve_release(config)
    check_overture(config.overture)
    check_stac(config.stac)
    load_prompt(config.captioner.prompt)
    if captioning is None:
        captioning = config.captioner.stage == "inline"
    if captioning and config.captioner.backend == "openai":
        from .openai_captioner import OpenAICaptioner

        OpenAICaptioner.from_config(config.captioner).check()
    return config


@dataclass
class RunPlan:
    """What a run will do, without holding its samples (they are made per shard).

    Attributes:
        config: The run config, its Overture release resolved (pinned in ``run.json``): the
            config to build shards with.
        locations: Every chip centre of the run, in shard order (compact: the samples of a
            million-sample run are never all in memory).
        n_shards: Number of shards.
        n_samples: Number of planned samples.
        overture_root: Local Overture tree to join against.
        output_dir: The run's output folder.
    """

    config: RunConfig
    locations: list[Location]
    n_shards: int
    n_samples: int
    overture_root: Path
    output_dir: Path

    def iter_shards(self) -> Iterator[ShardPlan]:
        """Every shard, made on demand."""
        return iter_shards(self.config, self.locations)

    def is_done(self, index: int) -> bool:
        """Whether shard ``index`` has its stats file."""
        return shard_paths(self.output_dir / "shards", index)[1].exists()

    def iter_pending(self) -> Iterator[ShardPlan]:
        """The shards without a stats file, made on demand."""
        return (s for s in self.iter_shards() if not self.is_done(s.index))


def _check_output(config: RunConfig, chash: str) -> None:
    run_json = config.output.dir / "run.json"
    if run_json.exists():
        previous = json.loads(run_json.read_text()).get("config_hash")
        if previous != chash:
            raise ConfigError(
                "output.dir",
                f"{config.output.dir} holds a dataset built with another config (hash "
                f"{previous}, now {chash}); choose a new output.dir or delete the old one",
            )


def plan_run(config: RunConfig) -> RunPlan:
    """Plan the run, write ``run.json`` and the manifest, and list the shards still to build.

    ``overture.release: latest`` is resolved (:func:`resolve_release`) and the resolved id is
    written to ``run.json``, so later plans of the same output dir keep it.

    Raises:
        ConfigError: if ``output.dir`` holds a dataset made with a different config.
    """
    config = resolve_release(config)
    chash = config_hash(config)
    _check_output(config, chash)
    locations = plan_locations(config.region, config.chips.size_m, seed=config.seed)
    out = config.output.dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(
        json.dumps(
            {
                "config_hash": chash,
                "eocap_version": __version__,
                "config": config.model_dump(mode="json"),
            },
            indent=2,
        )
    )
    n_shards, n_samples = write_manifest(iter_shards(config, locations), out / "manifest.parquet")
    # Temp files of writers killed mid-write are garbage: their shards have no stats, so
    # they are pending and will be written again.
    for stale in (out / "shards").glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    for stale in (out / "shards" / "_stats").glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    bounds = region_geometry(config.region).bounds
    overture_root = prepare_overture(config.overture, bounds, out)
    return RunPlan(config, locations, n_shards, n_samples, overture_root, out)


@dataclass
class RunReport:
    """The summary printed and saved at the end of a run."""

    output_dir: str
    shards: int
    shards_built_now: int
    samples: int
    ok: int
    failed: int
    failures_by_reason: dict[str, int]
    stage_seconds: dict[str, float]
    wall_seconds: float
    bytes: int
    caption_flags: dict[str, int] = field(default_factory=dict)
    pending_caption: int = 0
    radiometry_overruled: dict[str, int] = field(default_factory=dict)
    shard_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return asdict(self)


def _sum_counts(
    stats: list[ShardStats],
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Failures per reason, captions per flag and radiometry overrules, summed, sorted."""
    reasons: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    overruled: Counter[str] = Counter()
    for st in stats:
        reasons.update(st.failures_by_reason)
        flags.update(st.caption_flags)
        overruled.update(st.radiometry_overruled)
    return (
        dict(sorted(reasons.items())),
        dict(sorted(flags.items())),
        dict(sorted(overruled.items())),
    )


def summarize(plan: RunPlan, built: list[ShardStats], wall_seconds: float) -> RunReport:
    """Sum the stats of every finished shard of the run (not only those built now)."""
    stats = []
    for index in range(plan.n_shards):
        path = shard_paths(plan.output_dir / "shards", index)[1]
        if path.exists():
            stats.append(read_stats(path))
    reasons, flags, overruled = _sum_counts(stats)
    stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for s in built:
        for stage, secs in s.stage_seconds.items():
            stages[stage] = round(stages.get(stage, 0.0) + secs, 3)
    report = RunReport(
        output_dir=str(plan.output_dir),
        shards=plan.n_shards,
        shards_built_now=len(built),
        samples=sum(s.count for s in stats),
        ok=sum(s.ok for s in stats),
        failed=sum(s.failed for s in stats),
        failures_by_reason=reasons,
        stage_seconds=stages,
        wall_seconds=round(wall_seconds, 2),
        bytes=sum(s.bytes for s in stats),
        caption_flags=flags,
        pending_caption=sum(s.pending_caption for s in stats),
        radiometry_overruled=overruled,
        shard_files=[str(plan.output_dir / "shards" / s.path) for s in stats],
    )
    (plan.output_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    return report


def chip_within_region(config: RunConfig, geometry_wkb: bytes, tolerance_deg: float = 1e-4) -> bool:
    """Whether a sample's footprint lies in the configured region (points: always true)."""
    if config.region.points is not None:
        return True
    region = region_geometry(config.region).buffer(tolerance_deg)
    return bool(region.covers(shapely.from_wkb(geometry_wkb)))


def failed_samples(plan: RunPlan) -> Iterator[tuple[ShardPlan, set[str]]]:
    """Each finished shard that has failed samples, with their ids (``--retry-failed``)."""
    for shard in plan.iter_shards():
        parquet, stats_path = shard_paths(plan.output_dir / "shards", shard.index)
        if not stats_path.exists() or read_stats(stats_path).failed == 0:
            continue
        table = pq.read_table(parquet, columns=["sample_id", "status"])
        failed = table.filter(pc.not_equal(table.column("status"), "ok"))
        yield shard, set(failed.column("sample_id").to_pylist())


@dataclass
class RunStatus:
    """Where a run's output stands (``eocap status``)."""

    output_dir: str
    shards: int
    done: int
    partial: int
    pending: int
    samples_planned: int
    samples_written: int
    ok: int
    failed: int
    pending_caption: int
    failures_by_reason: dict[str, int]
    caption_flags: dict[str, int]
    radiometry_overruled: dict[str, int]
    shard_seconds: float
    samples_per_shard_second: float


def run_status(output_dir: Path) -> RunStatus:
    """Read a run's manifest and shard stats; touches nothing.

    A shard is *done* when its stats file exists, *partial* when its Parquet file (or a temp
    file of it) exists without stats (the run stopped while writing it), else *pending*.

    Raises:
        ConfigError: if ``output_dir`` holds no run.
    """
    manifest = output_dir / "manifest.parquet"
    if not manifest.exists():
        raise ConfigError("output.dir", f"{output_dir} holds no eocap run (no manifest.parquet)")
    shard_ids = pc.unique(pq.read_table(manifest, columns=["shard"]).column("shard")).to_pylist()
    planned = pq.ParquetFile(manifest).metadata.num_rows
    shards_dir = output_dir / "shards"
    done = partial = 0
    stats = []
    for index in shard_ids:
        parquet, stats_path = shard_paths(shards_dir, index)
        if stats_path.exists():
            done += 1
            stats.append(read_stats(stats_path))
        elif parquet.exists() or any(shards_dir.glob(f".{parquet.name}.tmp*")):
            partial += 1
    reasons, flags, overruled = _sum_counts(stats)
    seconds = sum(st.duration_s for st in stats)
    written = sum(st.count for st in stats)
    return RunStatus(
        output_dir=str(output_dir),
        shards=len(shard_ids),
        done=done,
        partial=partial,
        pending=len(shard_ids) - done - partial,
        samples_planned=planned,
        samples_written=written,
        ok=sum(st.ok for st in stats),
        failed=sum(st.failed for st in stats),
        pending_caption=sum(st.pending_caption for st in stats),
        failures_by_reason=reasons,
        caption_flags=flags,
        radiometry_overruled=overruled,
        shard_seconds=round(seconds, 2),
        samples_per_shard_second=round(written / seconds, 2) if seconds else 0.0,
    )
