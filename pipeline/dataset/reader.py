"""Reading shards: whole tables, column groups, or a few rows without loading the rest."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["read_cubes", "read_rows", "read_shard"]


def read_shard(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A shard's rows: all columns, or only ``columns`` (the others are not read)."""
    return pq.read_table(path, columns=None if columns is None else list(columns))


def read_rows(
    path: Path, sample_ids: Iterable[str], columns: Sequence[str], *, batch_size: int = 16
) -> dict[str, dict[str, Any]]:
    """Some samples' rows of one shard, by sample id, reading the shard in small batches.

    Reading stops once every sample is found, so a few rows with their pixel cubes cost a
    few batches, not the whole shard. Samples not in the shard are not in the result.
    """
    wanted = set(sample_ids)
    out: dict[str, dict[str, Any]] = {}
    names = ["sample_id", *[c for c in columns if c != "sample_id"]]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=names):
        for i, sid in enumerate(batch.column("sample_id").to_pylist()):
            if sid in wanted:
                out[sid] = batch.slice(i, 1).to_pylist()[0]
        if len(out) == len(wanted):
            break
    return out


def read_cubes(table: pa.Table, column: str = "pixels") -> npt.NDArray[Any]:
    """The fixed-shape array column ``column`` of ``table`` as one numpy array, rows first.

    ``pixels`` comes back as (rows, bands, size, size) uint16 and ``scl`` as (rows, size, size)
    uint8, in the column's stored band order (the row's ``bands``). Rows where the cube is null
    (failed samples) are zeros. This is the one place a cube is decoded: readers, the release
    and the loader call it, whatever the shard schema version stores.
    """
    arr = table.column(column).combine_chunks()
    shape: list[int] = []
    typ = arr.type
    while pa.types.is_fixed_size_list(typ):
        shape.append(typ.list_size)
        typ = typ.value_type
    values: pa.Array = arr
    for _ in shape:
        values = values.flatten()
    flat: npt.NDArray[Any] = values.to_numpy(zero_copy_only=False)
    if arr.null_count:  # null cubes have no child values: place the present ones
        out = np.zeros((len(arr), *shape), dtype=flat.dtype)
        valid = np.asarray(arr.is_valid())
        out[valid] = flat.reshape(int(valid.sum()), *shape)
        return out
    return flat.reshape(len(arr), *shape)
