"""Writing shards: records to an Arrow table, and the table to Parquet with its metadata.

Schema 2.0 stores each cube as one byte-planed binary value (:func:`encode_cubes`), compressed by
Parquet's zstd 1, in row groups of :data:`ROWS_PER_GROUP` samples; the choice and its numbers are
in docs/benchmarks.md ("Pixel storage (issue 11)"). Schema 1.2 tables (nested fixed-size lists)
are still written as they are, so a 1.2 output stays 1.2 until ``eocap migrate`` rewrites it.

Every planned sample gets a row, failures included (``status``/``error_reason``/
``error_message``), so a shard always accounts for all its samples. A shard is written to a
temporary file and renamed into place; its stats sidecar (:mod:`pipeline.dataset.stats`) is
written after it, the same way: a shard is done iff its stats file exists (img2dataset's
contract).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset.columns import (
    COLUMNS,
    CUBE_COLUMNS,
    IMAGE_COLUMNS,
    SCHEMA_VERSION,
    Cube,
    SampleRecord,
    cube_dims,
    cube_field_metadata,
    shard_schema,
)
from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.reader import read_cubes, table_schema_version
from pipeline.io.atomic import atomic_write

__all__ = [
    "ROWS_PER_GROUP",
    "encode_cubes",
    "records_table",
    "with_current_columns",
    "with_v2_cubes",
    "write_shard",
    "write_table",
]

ROWS_PER_GROUP = 1
"""Samples per row group in a 2.0 shard: one sample is one row group, one contiguous byte range
of ~0.9 MB (a release's sample index fetches it with one HTTP range) whose decode decodes no
other sample; the cost is a footer of ~6 kB per sample (0.75 % of the file) and slower scans of
the small columns (benchmarks/loader.py, docs/benchmarks.md)."""


def encode_cubes(cubes: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> pa.LargeBinaryArray:
    """Schema 2.0's cube column: one byte-planed little-endian value per valid row, else null.

    Plane ``k`` holds byte ``k`` of every value (C order), so the nearly constant high bytes of
    12-bit reflectances compress apart from the noisy low bytes.
    """
    n = len(cubes)
    flat = cubes.reshape(n, -1)
    itemsize = flat.dtype.itemsize
    planes = np.empty((int(valid.sum()), itemsize, flat.shape[1]), np.uint8)
    rows = flat[valid]
    for k in range(itemsize):  # shift, and narrow on assignment: no strided byte transpose
        planes[:, k] = rows >> (8 * k) if k else rows
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.where(valid, itemsize * flat.shape[1], 0), out=offsets[1:])
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        n,
        [validity, pa.py_buffer(offsets), pa.py_buffer(planes)],
        null_count=int(n - valid.sum()),
    )


def _stacked(records: list[SampleRecord], name: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """One record field's cubes stacked (zeros where null) and which rows hold one."""
    stack = np.zeros((len(records), *shape), dtype=dtype)
    valid = np.zeros(len(records), dtype=bool)
    for i, r in enumerate(records):
        arr = getattr(r, name)
        if arr is not None:
            stack[i] = np.asarray(arr).reshape(shape)
            valid[i] = True
    return stack, valid


def _nested_cube_array(
    stack: npt.NDArray[Any], valid: npt.NDArray[np.bool_], arrow_type: pa.DataType
) -> pa.Array:
    """Schema 1.2's cube column: nested fixed-size lists over one flat buffer."""
    array: pa.Array = pa.array(stack.reshape(-1))
    for n in reversed(stack.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, n)
    # Nulls go on the outer list only; the values under a null row are zeros.
    return pa.FixedSizeListArray.from_arrays(
        array.values, arrow_type.list_size, mask=pa.array(~valid)
    )


def _cube_fields(schema: pa.Schema, lengths: dict[str, int]) -> pa.Schema:
    """``schema`` with each 2.x cube field carrying its dtype, shape and encoding."""
    for name in CUBE_COLUMNS:
        i = schema.get_field_index(name)
        if i < 0:  # a 2.0 schema has no sar_db
            continue
        meta = {b"eocap": json.dumps(cube_field_metadata(name, lengths)).encode()}
        schema = schema.set(i, schema.field(i).with_metadata(meta))
    return schema


def records_table(
    records: list[SampleRecord],
    *,
    n_bands: int,
    size: int,
    n_polarisations: int | None = None,
    version: str = SCHEMA_VERSION,
) -> pa.Table:
    """The rows of a shard as an Arrow table of :func:`~pipeline.dataset.columns.shard_schema`.

    ``n_polarisations`` is the run's SAR channel count (None: the default's). ``version`` "1.2"
    or "2.0" builds those versions' columns (tests and benchmarks of migration and reading).
    """
    lengths = cube_dims(n_bands, size, *([] if n_polarisations is None else [n_polarisations]))
    schema = shard_schema(n_bands, size, version, n_polarisations=lengths["polarisations"])
    if version != "1.2":
        schema = _cube_fields(schema, lengths)
    cubes = {c.name: c.type for c in COLUMNS if isinstance(c.type, Cube)}
    arrays = []
    for f in schema:
        if f.name in cubes:
            cube = cubes[f.name]
            dtype = cube.value_type.to_pandas_dtype()
            stack, valid = _stacked(records, f.name, cube.shape(lengths), dtype)
            arrays.append(
                _nested_cube_array(stack, valid, f.type)
                if version == "1.2"
                else encode_cubes(stack, valid)
            )
        else:
            arrays.append(pa.array([getattr(r, f.name) for r in records], type=f.type))
    return pa.table(arrays, schema=schema)


def with_v2_cubes(table: pa.Table, cubes: dict[str, npt.NDArray[Any]] | None = None) -> pa.Table:
    """A 1.2 shard table in the current schema: cubes re-encoded, columns it lacks null.

    Its other columns are untouched. ``cubes`` are the table's decoded cube columns, when the
    caller has them already.
    """
    present = [name for name in CUBE_COLUMNS if name in table.column_names]
    if cubes is None:
        cubes = {name: read_cubes(table, name) for name in present}
    n_bands, size = cubes["pixels"].shape[1], cubes["pixels"].shape[2]
    schema = _cube_fields(shard_schema(n_bands, size), cube_dims(n_bands, size))
    for name in present:
        valid = np.asarray(table.column(name).is_valid())
        i = table.schema.get_field_index(name)
        table = table.set_column(i, schema.field(name), encode_cubes(cubes[name], valid))
    return _with_absent_columns(table.replace_schema_metadata(None), schema)


def _with_absent_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with each column of ``schema`` it lacks added, null, at its schema position."""
    for i, f in enumerate(schema):
        if f.name not in table.column_names:
            table = table.add_column(i, f, pa.nulls(table.num_rows, f.type))
    return table


def with_current_columns(table: pa.Table) -> pa.Table:
    """A shard table of any version in the current one: a 2.0 table gains null SAR columns.

    1.2 tables are re-encoded (:func:`with_v2_cubes`); current ones are returned as they are.
    """
    version = table_schema_version(table)
    if version == "1.2":
        return with_v2_cubes(table)
    if version == SCHEMA_VERSION:
        return table
    n_bands, size = _cube_metadata_of(table, "pixels")["shape"][:2]
    schema = _cube_fields(shard_schema(n_bands, size), cube_dims(n_bands, size))
    return _with_absent_columns(table, schema)


def _cube_metadata_of(table: pa.Table, name: str) -> dict[str, Any]:
    """The decoding metadata a 2.x cube field carries (:func:`cube_field_metadata`)."""
    field_meta = table.schema.field(name).metadata or {}
    if b"eocap" not in field_meta:
        raise ValueError(
            f"cube column {name} has no eocap field metadata; build the table "
            "with records_table or with_v2_cubes"
        )
    return dict(json.loads(field_meta[b"eocap"]))


def leaf_paths(name: str, arrow_type: pa.DataType) -> list[str]:
    """The Parquet leaf column paths of an Arrow field (``scl.list.element``, ``bbox.xmin``).

    pyarrow's per-column ``compression``, ``compression_level`` and ``column_encoding`` are
    keyed by them (a top-level name alone does not reach a nested column's leaves).
    """
    if (
        pa.types.is_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
    ):
        return leaf_paths(f"{name}.list.element", arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return [p for f in arrow_type for p in leaf_paths(f"{name}.{f.name}", f.type)]
    return [name]


CUBE_COMPRESSION = ("zstd", 1)
"""Parquet codec of every column, and its level for the 2.0 cube columns (3 for the others;
docs/benchmarks.md, "Pixel storage")."""


def _cubes_metadata(table: pa.Table) -> dict[str, Any]:
    """Per cube column of a 2.x table: dtype, shape, encoding.

    For ``pixels`` also the band order, scale and offset of its rows (one band list per shard:
    the run's).
    """
    out: dict[str, Any] = {}
    for name in CUBE_COLUMNS:
        if name in table.column_names:
            out[name] = _cube_metadata_of(table, name)
    radiometry = table.select(["bands", "band_scale", "band_offset"]).drop_null()
    first = radiometry.slice(0, 1).to_pylist()
    out["pixels"] |= {
        "bands": first[0]["bands"] if first else None,
        # float32 columns: their shortest decimal (1e-4, not 9.999999747378752e-05)
        "scale": [float(str(np.float32(v))) for v in first[0]["band_scale"]] if first else None,
        "offset": [float(str(np.float32(v))) for v in first[0]["band_offset"]] if first else None,
    }
    return out


def write_table(
    table: pa.Table,
    path: Path,
    *,
    row_group_mb: float = 100.0,
    rows_per_group: int | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> int:
    """Write a shard table to ``path`` atomically (temp file, rename); return its size.

    The table is written in the schema version its cube columns are in (2.0, or a 1.2 table
    as 1.2): rewriting a 1.2 shard's captions leaves it a complete 1.2 shard.

    Args:
        table: Rows of :func:`~pipeline.dataset.columns.shard_schema`.
        path: Target ``NNNNN.parquet``.
        row_group_mb: Upper bound of the uncompressed row-group size.
        rows_per_group: Samples per row group instead of the version's default
            (:data:`ROWS_PER_GROUP` for 2.0; releases and benchmarks choose their own).
        extra_metadata: JSON-able dict stored under the ``eocap`` key of the file metadata.
    """
    version = table_schema_version(table)
    hf = {"info": {"features": {name: {"_type": "Image"} for name in IMAGE_COLUMNS}}}
    eocap: dict[str, Any] = {"schema_version": version}
    if version != "1.2":
        eocap["cubes"] = _cubes_metadata(table)
    meta = {
        b"geo": geo_metadata(table, ["Polygon"]),
        b"huggingface": json.dumps(hf).encode(),
        b"eocap": json.dumps({**eocap, **(extra_metadata or {})}).encode(),
    }
    table = table.replace_schema_metadata(meta)
    if version == "1.2":
        pixels = table.schema.field("pixels").type
        n_values = 1
        while pa.types.is_fixed_size_list(pixels):
            n_values *= pixels.list_size
            pixels = pixels.value_type
    else:
        n_values = int(
            np.prod(json.loads(table.schema.field("pixels").metadata[b"eocap"])["shape"])
        )
    bytes_per_row = n_values * 2 + 200_000  # cube, plus SCL, PNG and context
    by_size = max(1, int(row_group_mb * 1e6 // bytes_per_row))
    if rows_per_group is None:
        rows_per_group = by_size if version == "1.2" else min(ROWS_PER_GROUP, by_size)
    cube_leaves = {
        p
        for c in CUBE_COLUMNS
        if c in table.column_names
        for p in leaf_paths(c, table.schema.field(c).type)
    }
    level = {p: 3 for f in table.schema for p in leaf_paths(f.name, f.type)}
    encoding: dict[str, str] = {}
    if version == "1.2":
        # The integer cubes are most of a shard: delta encoding (then zstd) writes them 1.27x
        # faster and 13 % smaller than dictionary/plain pages (docs/benchmarks.md).
        encoding = dict.fromkeys(cube_leaves, "DELTA_BINARY_PACKED")
    else:
        level |= dict.fromkeys(cube_leaves, CUBE_COMPRESSION[1])
    with atomic_write(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=rows_per_group,
            compression=CUBE_COMPRESSION[0],
            compression_level=level,
            use_dictionary=[c.name for c in COLUMNS if c.dictionary],
            write_statistics=[c.name for c in COLUMNS if c.statistics],
            column_encoding=encoding or None,
        )
    return path.stat().st_size


def write_shard(
    records: list[SampleRecord],
    path: Path,
    *,
    n_bands: int,
    size: int,
    row_group_mb: float = 100.0,
    extra_metadata: dict[str, Any] | None = None,
    n_polarisations: int | None = None,
    version: str = SCHEMA_VERSION,
) -> int:
    """Write ``records`` as a shard (see :func:`write_table`); return the file size.

    ``version`` "1.2" or "2.0" writes an older schema (tests of reading and migrating them).
    """
    table = records_table(
        records, n_bands=n_bands, size=size, n_polarisations=n_polarisations, version=version
    )
    return write_table(table, path, row_group_mb=row_group_mb, extra_metadata=extra_metadata)
