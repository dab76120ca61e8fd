"""Finishing a shard: its Parquet file, then its stats sidecar, each written atomically.

The one place a shard is finished, whoever made its table: a shard build, a ``--retry-failed``
merge (:mod:`pipeline.runner.build`) or the separate caption stage
(:mod:`pipeline.runner.caption`). A shard is done iff its stats file exists, so the stats are
written last.
"""

from __future__ import annotations

import hashlib
import time

import pyarrow as pa

from pipeline import __version__
from pipeline.core.config import RunConfig
from pipeline.core.config_hash import config_hash
from pipeline.core.errors import disk_full_names
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.stats import (
    ShardStats,
    radiometry_overruled,
    state_counts,
    table_counts,
    write_stats,
)
from pipeline.dataset.writer import write_table

__all__ = ["finish_shard"]


def finish_shard(
    table: pa.Table,
    index: int,
    config: RunConfig,
    *,
    stage_seconds: dict[str, float],
    duration_s: float,
) -> ShardStats:
    """Write a shard's table and then its stats sidecar, both atomically; return the stats.

    The time of the write itself is added to ``stage_seconds["write"]`` and to ``duration_s``.

    Raises:
        DiskFullError: naming ``output.dir`` when its disk is full; the shard is then not done
            (no stats) and is built again when the run resumes.
    """
    parquet_path, stats_path = DatasetLayout(config.output.dir).shard_paths(index)
    chash = config_hash(config)
    t0 = time.perf_counter()
    with disk_full_names(config.output.dir):
        nbytes = write_table(
            table,
            parquet_path,
            row_group_mb=config.output.row_group_mb,
            extra_metadata={
                "config_hash": chash,
                "eocap_version": __version__,
                "dataset": config.name,
                "shard": index,
            },
        )
    written = time.perf_counter() - t0
    seconds = dict(stage_seconds)
    seconds["write"] = seconds.get("write", 0.0) + written
    ok, failed, pending, reasons, flags = table_counts(table)
    sample_ids = table.column("sample_id").to_pylist()
    stats = ShardStats(
        shard=index,
        path=parquet_path.name,
        count=table.num_rows,
        ok=ok,
        failed=failed,
        pending_caption=pending,
        failures_by_reason=reasons,
        stage_seconds={k: round(v, 3) for k, v in seconds.items()},
        duration_s=round(duration_s + written, 3),
        bytes=nbytes,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config_hash=chash,
        sample_ids_sha1=hashlib.sha1("\n".join(sample_ids).encode()).hexdigest(),
        caption_flags=flags,
        radiometry_overruled=radiometry_overruled(table),
        sar_states=state_counts(table, "sar_state"),
        coh_states=state_counts(table, "coh_state"),
    )
    with disk_full_names(config.output.dir):
        write_stats(stats, stats_path)
    return stats
