"""The separate caption stage: caption the ``pending_caption`` rows of finished shards.

With ``captioner.stage: separate`` the CPU build writes every good chip as
``pending_caption`` (pixels, composite, context, no caption). This stage reads a shard's small
columns (never its pixel cube), rebuilds each pending chip's caption input from them, captions
the chips with the configured backend, and rewrites only the caption columns of those rows,
atomically, with new stats. GPU workers run it as its own flow (``eocap caption``), so CPU
workers building shards and GPU workers captioning them never wait for each other.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.caption.interface import Captioner, CaptionInput
from pipeline.core.config import RunConfig
from pipeline.core.types import ChipStats, MapContext
from pipeline.dataset.shards import ShardStats, read_stats, shard_paths
from pipeline.runner.captioning import CAPTION_RESULT_COLUMNS, caption_samples
from pipeline.runner.finish import finish_shard
from pipeline.runner.samples import STATUS_COLUMNS, StageFailure, status_columns

__all__ = ["CAPTION_COLUMNS", "caption_shard", "shards_pending_caption"]

CAPTION_COLUMNS = (*STATUS_COLUMNS, *CAPTION_RESULT_COLUMNS)
"""The columns the caption stage writes; every other column of a shard is left as it is."""

_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(ChipStats))


def shards_pending_caption(output_dir: Path, shards: Iterable[int]) -> list[int]:
    """The finished shards among ``shards`` that have rows waiting for a caption."""
    out = []
    for index in shards:
        stats_path = shard_paths(output_dir / "shards", index)[1]
        if stats_path.exists() and read_stats(stats_path).pending_caption > 0:
            out.append(index)
    return out


def _caption_input(row: dict[str, Any]) -> CaptionInput:
    """A pending row's caption input, rebuilt from its small columns."""
    return CaptionInput(
        row["sample_id"],
        row["period"],
        row["datetime"],
        row["lon"],
        row["lat"],
        MapContext.from_row(row["context"], row["classes"], row["tags"], row["names"]),
        ChipStats(**{f: row[f] for f in _STATS_FIELDS}),
        row["rgb"]["bytes"],
    )


def caption_shard(
    index: int, config: RunConfig, *, captioner: Captioner | None = None
) -> ShardStats:
    """Caption the pending rows of shard ``index`` and rewrite its caption columns.

    Args:
        index: Shard index.
        config: The run config (its ``captioner`` section chooses the backend).
        captioner: A captioner to use instead of the configured one.

    Returns:
        The shard's new stats.
    """
    t0 = time.perf_counter()
    parquet, stats_path = shard_paths(config.output.dir / "shards", index)
    table = pq.read_table(parquet)
    small = [c for c in table.column_names if c not in ("pixels", "scl")]
    rows: list[dict[str, Any]] = table.select(small).to_pylist()
    inputs = [_caption_input(r) for r in rows if r["status"] == "pending_caption"]
    captioned = {
        sid: {
            **status_columns(
                None if outcome.failure is None else StageFailure("caption", outcome.failure),
                captioned=True,
            ),
            **outcome.columns(),
        }
        for sid, outcome in caption_samples(inputs, config, captioner).items()
    }
    for name in CAPTION_COLUMNS:
        values = [
            captioned[r["sample_id"]][name] if r["sample_id"] in captioned else r[name]
            for r in rows
        ]
        field = table.schema.field(name)
        table = table.set_column(
            table.schema.get_field_index(name), field, pa.array(values, type=field.type)
        )
    old_stats = read_stats(stats_path)
    seconds = dict(old_stats.stage_seconds)
    seconds["caption"] = seconds.get("caption", 0.0) + time.perf_counter() - t0
    return finish_shard(
        table,
        index,
        config,
        stage_seconds=seconds,
        duration_s=old_stats.duration_s + time.perf_counter() - t0,
    )
