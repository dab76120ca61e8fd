"""Reading shards: whole tables, column groups, or a few rows without loading the rest."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["file_schema_version", "read_cubes", "read_rows", "read_shard", "table_schema_version"]

# = columns.CUBE_COLUMNS, and a column schema 2.1 added (columns.SAR_SINCE): named here to
# keep reader.py a leaf
_CUBES = ("pixels", "scl", "sar_db", "coherence")
_A_SAR_COLUMN = "sar_state"


def table_schema_version(table: pa.Table | pa.RecordBatch | pa.Schema) -> str:
    """The shard schema version of a table: "1.2" (nested cube lists), "2.0", or "2.1" (SAR)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    if pa.types.is_fixed_size_list(schema.field("pixels").type):
        return "1.2"
    return "2.1" if _A_SAR_COLUMN in schema.names else "2.0"


def file_schema_version(path: Path) -> str:
    """The schema version of the shard at ``path``, from its footer (no column is read)."""
    return table_schema_version(pq.read_schema(path))


def read_shard(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A shard's rows: all columns, or only ``columns`` (the others are not read)."""
    return pq.read_table(path, columns=None if columns is None else list(columns))


def read_rows(
    path: Path, sample_ids: Iterable[str], columns: Sequence[str], *, batch_size: int = 16
) -> dict[str, dict[str, Any]]:
    """Some samples' rows of one shard, by sample id, reading the shard in small batches.

    Reading stops once every sample is found, so a few rows with their pixel cubes cost a
    few batches, not the whole shard. Samples not in the shard are not in the result.
    Cube columns come back decoded (:func:`read_cubes`, whatever the schema version): a numpy
    array, or None for a failed sample.
    """
    wanted = set(sample_ids)
    out: dict[str, dict[str, Any]] = {}
    names = ["sample_id", *[c for c in columns if c != "sample_id"]]
    cubes = [c for c in names if c in _CUBES]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=names):
        for i, sid in enumerate(batch.column("sample_id").to_pylist()):
            if sid in wanted:
                row_batch = batch.slice(i, 1)
                row = row_batch.drop_columns(cubes).to_pylist()[0]
                for c in cubes:
                    present = row_batch.column(c).is_valid()[0].as_py()
                    row[c] = read_cubes(row_batch, c)[0] if present else None
                out[sid] = {n: row[n] for n in names}
        if len(out) == len(wanted):
            break
    return out


def read_cubes(table: pa.Table | pa.RecordBatch, column: str = "pixels") -> npt.NDArray[Any]:
    """The fixed-shape array column ``column`` of ``table`` as one numpy array, rows first.

    ``pixels`` comes back as (rows, bands, size, size) uint16 and ``scl`` as (rows, size, size)
    uint8, in the column's stored band order (the row's ``bands``); ``sar_db`` as (rows,
    polarisations, size, size) int16 (the row's ``sar_polarisations``). Rows where the cube is
    null (failed samples, samples without SAR) are zeros. This is the one place a cube is
    decoded: readers, the release and the loader call it, for schema 1.2 (nested lists) and 2.x
    (byte planes) alike.
    """
    if pa.types.is_fixed_size_list(table.schema.field(column).type):  # schema 1.2
        return _nested_cubes(table.column(column))
    meta = _cube_metadata(table, column)
    shape = tuple(meta["shape"])
    dtype = np.dtype(meta["dtype"])
    if meta["encoding"] != "byte_planes_le" or meta.get("order", "C") != "C":
        raise ValueError(f"cube column {column}: unknown encoding {meta['encoding']}; update eocap")
    col = table.column(column)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = np.zeros((len(col), *shape), dtype=dtype)
    flat = out.reshape(len(col), -1)
    n_bytes = flat.shape[1] * dtype.itemsize
    row = 0
    for chunk in chunks:
        offsets = np.frombuffer(chunk.buffers()[1], np.int64)[chunk.offset :]
        data = np.frombuffer(chunk.buffers()[2] or b"", np.uint8)
        valid = np.asarray(chunk.is_valid())
        for i in np.flatnonzero(valid):
            start, end = int(offsets[i]), int(offsets[i + 1])
            if end - start != n_bytes:
                raise ValueError(
                    f"cube column {column}, row {row + i}: {end - start} bytes, not {n_bytes} "
                    f"({dtype} {shape}); the shard is damaged: rebuild it"
                )
            planes = data[start:end].reshape(dtype.itemsize, -1)
            value = flat[row + i]
            np.copyto(value, planes[-1])  # highest byte first, then shift in the lower ones
            for plane in planes[-2::-1]:
                value <<= 8
                value |= plane
        row += len(chunk)
    return out


def _cube_metadata(table: pa.Table | pa.RecordBatch, column: str) -> dict[str, Any]:
    """dtype, shape and encoding of a 2.0 cube column: from the field, else the file metadata."""
    field_meta = table.schema.field(column).metadata or {}
    if b"eocap" in field_meta:
        return dict(json.loads(field_meta[b"eocap"]))
    file_meta = table.schema.metadata or {}
    cubes = json.loads(file_meta.get(b"eocap", b"{}")).get("cubes", {})
    if column not in cubes:
        raise ValueError(
            f"cube column {column} carries no dtype/shape metadata; read it from a "
            "shard file (pq.read_table keeps it)"
        )
    return dict(cubes[column])


def _nested_cubes(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    """A 1.2 cube column (nested fixed-size lists) as one numpy array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
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
