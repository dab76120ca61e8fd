"""Shard stats: the ``_stats/NNNNN_stats.json`` sidecar that marks a shard done, and its counts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.atomic import atomic_write

__all__ = [
    "ShardStats",
    "radiometry_overruled",
    "read_stats",
    "state_counts",
    "table_counts",
    "write_stats",
]


@dataclass
class ShardStats:
    """The ``_stats/NNNNN_stats.json`` sidecar of a shard; each field's meaning is its ``doc``.

    The schema document's stats table is generated from these fields (see
    :func:`pipeline.dataset.columns.markdown_tables`).
    """

    shard: int = field(metadata={"doc": "shard index"})
    path: str = field(metadata={"doc": "Parquet file name, relative to the shards folder"})
    count: int = field(metadata={"doc": "rows written (= planned samples of the shard)"})
    ok: int = field(metadata={"doc": "rows with status `ok`"})
    failed: int = field(metadata={"doc": "rows with status `failed`"})
    failures_by_reason: dict[str, int] = field(metadata={"doc": "failed rows per `error_reason`"})
    stage_seconds: dict[str, float] = field(
        metadata={
            "doc": "wall seconds per stage (search, chips, sar, composite, context, caption, write)"
        }
    )
    duration_s: float = field(metadata={"doc": "wall seconds of the whole shard"})
    bytes: int = field(metadata={"doc": "size of the Parquet file"})
    finished_at: str = field(metadata={"doc": "UTC time the shard was finished (ISO 8601)"})
    config_hash: str = field(metadata={"doc": "hash of the data-defining config fields"})
    sample_ids_sha1: str = field(
        default="",
        metadata={"doc": "sha1 of the shard's sample ids in order (detects mixed outputs)"},
    )
    caption_flags: dict[str, int] = field(
        default_factory=dict,
        metadata={"doc": "captions per caption-check flag (`not_english`, `ungrounded`...)"},
    )
    pending_caption: int = field(
        default=0,
        metadata={"doc": "rows waiting for the caption flow (`captioner.stage: separate`)"},
    )
    radiometry_overruled: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "doc": "samples whose pixels contradicted their scene's radiometry metadata, per "
            "`radiometry_check`"
        },
    )
    sar_states: dict[str, int] = field(
        default_factory=dict,
        metadata={"doc": "rows per `sar_state` (`ok`, `no_acquisition`...); empty without `sar:`"},
    )
    coh_states: dict[str, int] = field(
        default_factory=dict,
        metadata={"doc": "rows per `coh_state`; empty without `sar.coherence`"},
    )


def table_counts(table: pa.Table) -> tuple[int, int, int, dict[str, int], dict[str, int]]:
    """(ok, failed, pending_caption rows, failed rows per reason, captions per flag)."""
    status = table.column("status")
    ok = int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
    pending = int(pc.sum(pc.equal(status, "pending_caption")).as_py() or 0)
    failed = table.filter(pc.equal(status, "failed"))
    reasons = Counter(str(r or "unknown") for r in failed.column("error_reason").to_pylist())
    flags = Counter(str(f) for f in pc.list_flatten(table.column("caption_flags")).to_pylist())
    return ok, failed.num_rows, pending, dict(reasons), dict(flags)


def radiometry_overruled(table: pa.Table) -> dict[str, int]:
    """Rows whose pixels overruled their metadata's offset, per ``radiometry_check`` value."""
    checks = table.column("radiometry_check").to_pylist()
    overruled = Counter(str(c) for c in checks if c and c.startswith("offset_"))
    return dict(sorted(overruled.items()))


def state_counts(table: pa.Table, column: str) -> dict[str, int]:
    """Rows per value of a state column (``sar_state``, ``coh_state``), nulls not counted.

    A shard without the column (schema 2.0, or built before it existed) counts none.
    """
    if column not in table.column_names:
        return {}
    states = Counter(str(s) for s in table.column(column).to_pylist() if s is not None)
    return dict(sorted(states.items()))


def write_stats(stats: ShardStats, path: Path) -> None:
    """Write a shard's stats sidecar atomically (its existence marks the shard done)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(asdict(stats), indent=2, sort_keys=True))


def read_stats(path: Path) -> ShardStats:
    """Read a stats sidecar."""
    return ShardStats(**json.loads(path.read_text()))
