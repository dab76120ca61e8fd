"""``eocap migrate OUTPUT``: rewrite every schema 1.2 shard of an output dir in the current schema.

Shard by shard: the 1.2 file is read, its cubes re-encoded (:func:`writer.with_v2_cubes`, which
also adds the Sentinel-1 columns of 2.1, null), every other column and the file's ``eocap``
metadata kept, and the new file renamed over the
old one (:func:`pipeline.io.atomic.atomic_write`); then the stats sidecar gets the new
``bytes``, written the same way. A kill at any moment leaves each shard a complete 1.2 or 2.0
file with a readable sidecar; at worst the sidecar of the one shard being migrated still holds
the old size, which the next run corrects. A second run rewrites nothing (2.0 and 2.1 shards
are skipped: 2.0 reads as 2.1 with null Sentinel-1 columns), so a killed migration is finished
by running it again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.dataset.columns import SCHEMA_VERSION
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import file_schema_version
from pipeline.dataset.stats import read_stats, write_stats
from pipeline.dataset.writer import with_v2_cubes, write_table

__all__ = ["MigrationSummary", "migrate_output"]


@dataclass
class MigrationSummary:
    """What a migration did.

    Attributes:
        migrated: Shards rewritten from 1.2 to the current schema by this run.
        already_current: Shards that were 2.0 or later already (skipped).
        stats_corrected: Sidecars whose ``bytes`` a killed earlier run had left stale.
        bytes_before: Size of the migrated shards before.
        bytes_after: Their size after.
    """

    migrated: int = 0
    already_current: int = 0
    stats_corrected: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def _migrate_shard(path: Path) -> int:
    """Rewrite the 1.2 shard ``path`` in the current schema in place; return its new size."""
    table = pq.read_table(path)
    kept = json.loads((table.schema.metadata or {}).get(b"eocap", b"{}"))
    kept = {k: v for k, v in kept.items() if k not in ("schema_version", "cubes")}
    kept["migrated_from"] = "1.2"
    return write_table(with_v2_cubes(table), path, extra_metadata=kept)


def migrate_output(
    output: Path,
    *,
    show_progress: bool = True,
    on_shard_written: Callable[[int], None] | None = None,
) -> MigrationSummary:
    """Migrate every finished shard of ``output`` to the current schema (see module doc).

    Args:
        output: The run's output directory.
        show_progress: Show a rich progress bar on stderr.
        on_shard_written: Called with a shard's index after its new file replaced the old one
            and before its sidecar is updated (the kill-safety test stops the run there).

    Raises:
        FileNotFoundError: if ``output`` has no shards folder.
    """
    layout = DatasetLayout(output)
    if not layout.shards_dir.is_dir():
        raise FileNotFoundError(
            f"{layout.shards_dir} does not exist: pass a run's output directory (eocap status)"
        )
    shards = layout.finished_shards()
    summary = MigrationSummary()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, disable=not show_progress) as progress:
        task = progress.add_task(f"migrating shards to schema {SCHEMA_VERSION}", total=len(shards))
        for index, path in sorted(shards.items()):
            stats_path = layout.stats_path(index)
            stats = read_stats(stats_path)
            if file_schema_version(path) == "1.2":
                summary.bytes_before += path.stat().st_size
                nbytes = _migrate_shard(path)
                summary.bytes_after += nbytes
                summary.migrated += 1
                if on_shard_written is not None:
                    on_shard_written(index)
            else:
                summary.already_current += 1
                nbytes = path.stat().st_size
                if stats.bytes != nbytes:
                    summary.stats_corrected += 1
            if stats.bytes != nbytes:
                write_stats(dataclasses.replace(stats, bytes=nbytes), stats_path)
            progress.advance(task)
    return summary
