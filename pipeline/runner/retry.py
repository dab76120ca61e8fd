"""``--retry-failed``: which samples to build again, and how their new rows join the old shard.

A retry rebuilds only the failed samples of a finished shard (:func:`failed_samples`); their new
rows replace the old ones and every other row is kept as it is, in shard order
(:func:`merge_retried`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import read_shard
from pipeline.dataset.stats import read_stats
from pipeline.runner.plan import RunPlan
from pipeline.stages.sampling import ShardPlan

__all__ = ["failed_samples", "merge_retried"]


def failed_samples(plan: RunPlan) -> Iterator[tuple[ShardPlan, set[str]]]:
    """Each finished shard that has failed samples, with their ids."""
    layout = DatasetLayout(plan.output_dir)
    for shard in plan.iter_shards():
        parquet, stats_path = layout.shard_paths(shard.index)
        if not stats_path.exists() or read_stats(stats_path).failed == 0:
            continue
        table = read_shard(parquet, ["sample_id", "status"])
        failed = table.filter(pc.not_equal(table.column("status"), "ok"))
        yield shard, set(failed.column("sample_id").to_pylist())


def merge_retried(retried: pa.Table, old_path: Path, shard: ShardPlan) -> pa.Table:
    """The shard's old rows with those of ``retried`` replaced by its rows, in shard order.

    Args:
        retried: The new rows of the retried samples.
        old_path: The shard's Parquet file as written before.
        shard: The shard's plan (its sample order).
    """
    old = pq.read_table(old_path, schema=retried.schema)
    replaced = retried.column("sample_id").combine_chunks()
    kept = old.filter(pc.invert(pc.is_in(old.column("sample_id"), replaced)))
    merged = pa.concat_tables([kept, retried])
    position = {s.sample_id: i for i, s in enumerate(shard.samples)}
    ids = merged.column("sample_id").to_pylist()
    return merged.take(sorted(range(merged.num_rows), key=lambda k: position[ids[k]]))
