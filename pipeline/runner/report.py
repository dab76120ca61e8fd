"""What a run did: the end-of-run report and ``eocap status`` of a dataset folder."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.parquet as pq

from pipeline.core.errors import disk_full_names
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.stats import ShardStats, read_stats
from pipeline.io.atomic import atomic_write
from pipeline.runner.build import STAGES
from pipeline.runner.plan import manifest_shards


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
    sar_states: dict[str, int] = field(default_factory=dict)
    coh_states: dict[str, int] = field(default_factory=dict)
    shard_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return asdict(self)


class _Summed(NamedTuple):
    """The shards' counts, summed."""

    reasons: dict[str, int]
    flags: dict[str, int]
    overruled: dict[str, int]
    sar: dict[str, int]
    coherence: dict[str, int]


def _sum_counts(stats: list[ShardStats]) -> _Summed:
    """Failures per reason, captions per flag, radiometry overrules, SAR and coherence states."""
    counters: list[Counter[str]] = [Counter() for _ in _Summed._fields]
    for st in stats:
        counts = (
            st.failures_by_reason,
            st.caption_flags,
            st.radiometry_overruled,
            st.sar_states,
            st.coh_states,
        )
        for counter, counted in zip(counters, counts, strict=True):
            counter.update(counted)
    return _Summed(*(dict(sorted(c.items())) for c in counters))


def summarize(
    output_dir: Path, n_shards: int, built: list[ShardStats], wall_seconds: float
) -> RunReport:
    """Sum the stats of every finished shard of the run (not only those built now).

    Args:
        output_dir: The run's output folder; ``report.json`` is written there.
        n_shards: The run's number of shards.
        built: The stats of the shards built (or captioned) now.
        wall_seconds: Wall time of the run.
    """
    layout = DatasetLayout(output_dir)
    stats = []
    for index in range(n_shards):
        path = layout.stats_path(index)
        if path.exists():
            stats.append(read_stats(path))
    summed = _sum_counts(stats)
    stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for s in built:
        for stage, secs in s.stage_seconds.items():
            stages[stage] = round(stages.get(stage, 0.0) + secs, 3)
    report = RunReport(
        output_dir=str(output_dir),
        shards=n_shards,
        shards_built_now=len(built),
        samples=sum(s.count for s in stats),
        ok=sum(s.ok for s in stats),
        failed=sum(s.failed for s in stats),
        failures_by_reason=summed.reasons,
        stage_seconds=stages,
        wall_seconds=round(wall_seconds, 2),
        bytes=sum(s.bytes for s in stats),
        caption_flags=summed.flags,
        pending_caption=sum(s.pending_caption for s in stats),
        radiometry_overruled=summed.overruled,
        sar_states=summed.sar,
        coh_states=summed.coherence,
        shard_files=[str(layout.shards_dir / s.path) for s in stats],
    )
    with disk_full_names(output_dir), atomic_write(layout.report) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2))
    return report


FAILURE_ADVICE: dict[str, str] = {
    "no_scene": "no Sentinel-2 scene covered the chips in their periods with at most "
    "stac.max_cloud_cover % cloud: widen the periods, raise stac.max_cloud_cover, or check "
    "that stac.collection holds the region",
    "missing_band": "the scenes lack a band of chips.bands: choose bands that stac.collection has",
    "stac_error": "the STAC API kept failing: check stac.api_url and the network, or raise "
    "stac.timeout_s and stac.max_retries",
    "cog_open": "the scenes' image files could not be opened: check that their hrefs are "
    "reachable from here (network, credentials, stac.signing)",
    "cog_read": "the scenes' image files could not be read: check the network to their hosts, "
    "or lower chips.max_requests_per_host",
    "crs_mismatch": "the scenes' image files are in another CRS than their STAC items say: "
    "check stac.collection",
    "all_nodata": "the chips held only nodata pixels: check that the scenes cover the region",
    "too_cloudy": "every chip was at least captioner.skip_cloud_fraction cloudy: raise it, or "
    "lower stac.max_cloud_cover so that clearer scenes are chosen",
    "caption_server": "the caption server did not answer: start it, check captioner.base_url, "
    "or raise captioner.server_wait_s",
    "caption_http": "the caption server refused the requests: check captioner.model, "
    "captioner.base_url and captioner.api_key_env",
    "caption_bad_response": "the caption server's answers could not be read: check that "
    "captioner.base_url is an OpenAI-compatible API serving captioner.model",
    "caption_empty": "the captioner wrote no text: check captioner.model and "
    "captioner.max_new_tokens",
}
"""What a failure reason means and which config fields to change, for a run that got nothing."""


def all_failed(report: RunReport) -> str | None:
    """Why a run produced nothing, or ``None`` if any sample is ok or waiting for a caption.

    A run counts as failed when every planned sample of its output failed, whatever the
    reasons; the message names them, most frequent first, and says what to change for the
    most frequent (:data:`FAILURE_ADVICE`).
    """
    if not report.failures_by_reason or report.ok or report.pending_caption:
        return None
    reasons = sorted(report.failures_by_reason.items(), key=lambda item: (-item[1], item[0]))
    top, _ = reasons[0]
    advice = FAILURE_ADVICE.get(top, "see error_message in the shards' rows")
    if len(reasons) == 1:
        return f"every one of the {report.samples} samples failed with {top}: {advice}"
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons)
    return f"every one of the {report.samples} samples failed ({counts}); {top}: {advice}"


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
    sar_states: dict[str, int]
    coh_states: dict[str, int]
    shard_seconds: float
    samples_per_shard_second: float


def run_status(output_dir: Path) -> RunStatus:
    """Read a run's manifest and shard stats; touches nothing.

    A shard is *done* when its stats file exists, *partial* when its Parquet file (or a temp
    file of it) exists without stats (the run stopped while writing it), else *pending*.

    Raises:
        ConfigError: if ``output_dir`` holds no run.
    """
    layout = DatasetLayout(output_dir)
    n_shards = manifest_shards(output_dir)
    planned = pq.ParquetFile(layout.manifest).metadata.num_rows
    done = partial = 0
    stats = []
    for index in range(n_shards):
        stats_path = layout.stats_path(index)
        if stats_path.exists():
            done += 1
            stats.append(read_stats(stats_path))
        elif layout.is_partial(index):
            partial += 1
    summed = _sum_counts(stats)
    seconds = sum(st.duration_s for st in stats)
    written = sum(st.count for st in stats)
    return RunStatus(
        output_dir=str(output_dir),
        shards=n_shards,
        done=done,
        partial=partial,
        pending=n_shards - done - partial,
        samples_planned=planned,
        samples_written=written,
        ok=sum(st.ok for st in stats),
        failed=sum(st.failed for st in stats),
        pending_caption=sum(st.pending_caption for st in stats),
        failures_by_reason=summed.reasons,
        caption_flags=summed.flags,
        radiometry_overruled=summed.overruled,
        sar_states=summed.sar,
        coh_states=summed.coherence,
        shard_seconds=round(seconds, 2),
        samples_per_shard_second=round(written / seconds, 2) if seconds else 0.0,
    )
