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

from pipeline.caption.interface import Captioner, CaptionInput
from pipeline.core.config import RunConfig
from pipeline.core.types import ChipStats, MapContext
from pipeline.dataset.columns import CAPTION_OUTPUT_COLUMNS, CUBE_COLUMNS
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import read_shard
from pipeline.dataset.stats import ShardStats, read_stats
from pipeline.runner.captioning import caption_samples
from pipeline.runner.finish import finish_shard
from pipeline.runner.samples import StageFailure, status_columns

__all__ = ["caption_shard", "shards_pending_caption"]

_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(ChipStats))


def shards_pending_caption(output_dir: Path, shards: Iterable[int]) -> list[int]:
    """The finished shards among ``shards`` that have rows waiting for a caption."""
    out = []
    layout = DatasetLayout(output_dir)
    for index in shards:
        stats_path = layout.stats_path(index)
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
    parquet, stats_path = DatasetLayout(config.output.dir).shard_paths(index)
    table = read_shard(parquet)
    cubes = [c for c in CUBE_COLUMNS if c in table.column_names]  # a 2.0 shard has no sar_db
    rows: list[dict[str, Any]] = table.drop_columns(cubes).to_pylist()
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
    for name in CAPTION_OUTPUT_COLUMNS:
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
