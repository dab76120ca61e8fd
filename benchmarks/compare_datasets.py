"""Compare two built eocap datasets column by column (before/after a refactor).

Run: ``python -m benchmarks.compare_datasets BEFORE_DIR AFTER_DIR [--json OUT]``

Both directories are eocap outputs (``eocap run`` / ``eocap demo``): ``shards/*.parquet``,
``shards/_stats/*_stats.json``, ``manifest.parquet``, ``run.json``, ``report.json``. The
script reads them with pyarrow and the standard library only: it deliberately does not import
``pipeline``, whose layout may be what changed between the two builds.

What is compared:

* files: every file under either directory, by relative path (present on one side only);
* shards: the shard file names, rows, row groups and order of sample ids per shard;
* sample ids: rows are matched by ``sample_id`` across all shards (a row may move to another
  shard and still match); ids on one side only and duplicated ids are reported;
* columns: for every column of either side (shards, then ``manifest.parquet``), its type, and
  the number of matched rows whose values differ. Nothing is rounded: pixel/array columns
  (nested fixed-size lists) and binary values (PNG, WKB) are compared by the sha256 of their
  bytes; floats compare exactly (NaN equals NaN, -0.0 differs from 0.0), and for columns
  holding floats the largest absolute difference is reported too. Up to three differing rows
  are shown per column (text columns such as ``caption`` in full);
* JSON files (shard stats, ``report.json``, ``run.json``): field by field, after the
  dataset's own path (as given, and as recorded at build time in ``report.json`` /
  ``run.json``) is replaced by ``<dataset>`` (``report.json`` lists the shard files by
  absolute path, ``run.json`` holds ``output.dir``), so datasets built in, or copied to,
  different folders compare equal;
* Parquet key-value metadata of each shard (``geo``, ``huggingface``, ``eocap``), field by
  field.

Values that differ between any two builds of the same commit and config are in the
``IGNORED_COLUMNS`` and ``IGNORED_JSON_FIELDS`` sets below, each with why. They are still
compared and shown in the report as ``ignored``; they only do not count as differences.
The sets were found by building the demo twice at commit c686d5c (template captioner): the
shard Parquet files and ``manifest.parquet`` of the two builds were byte-identical, and only
the JSON fields listed below differed.

Shard schema 2.0 (issue 11) stores ``pixels`` and ``scl`` as one byte-planed binary value per
sample instead of nested fixed-size lists. Those columns are compared decoded, whatever the
version, with numpy as docs/dataset-schema.md's recipe does (this script imports no eocap, so
it also proves the recipe): a 1.2 cube and a 2.0 cube with the same values have the same
digest. When the two sides' shards are of different schema versions, the differences that
change brings are expected and reported as ``ignored`` with why (``SCHEMA_CHANGE``): the cube
columns' type (only if every decoded value is equal), the row groups per shard, the ``eocap``
metadata's ``schema_version``/``cubes``/``migrated_from``, and the shard files' ``bytes`` (stats
sidecars and ``report.json``).

``--ignore-column COLUMN`` (repeatable) adds a column whose change is intended; it is reported
as ignored too.

The reference for the package restructuring is the demo built at c686d5c with
``eocap demo --data-dir /work/compare/demo-data --output /work/compare/baseline`` (template
captioner); ``/work/compare/baseline2`` is the second build used to find the ignore sets.

Exit status: 0 when there is no unexpected difference, 1 otherwise (2: usage error).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ID_COLUMN = "sample_id"
"""Rows of both sides are matched by this column."""

DATASET_PLACEHOLDER = "<dataset>"
"""Replaces the dataset's own path in JSON strings before they are compared."""

IGNORED_COLUMNS: dict[str, str] = {
    # Not observed to differ in the two demo builds only because the template captioner
    # leaves it null; with a model captioner (--captioner openai/transformers) it is the
    # measured wall time of each caption request, different on every build.
    "caption_latency_s": "wall-clock seconds of the caption request (null for template)",
}
"""Shard/manifest columns expected to differ between two builds of the same commit, with why.

The demo's shard columns hold no timestamps, run ids or timings besides this one (the
``datetime`` column is the scene's acquisition time, ``prompt_version`` and the ``eocap``
metadata's ``config_hash`` hash the templates and the data-defining config: all were identical
in the two builds, and a change in them is a real change).
"""

IGNORED_JSON_FIELDS: dict[str, dict[str, str]] = {
    "shards/_stats/*_stats.json": {
        "duration_s": "wall-clock seconds the shard took to build",
        "finished_at": "UTC time at which the shard was written",
        "stage_seconds.*": "wall-clock seconds per pipeline stage (search, chips, ...)",
    },
    "report.json": {
        "wall_seconds": "wall-clock seconds of the whole run",
        "stage_seconds.*": "wall-clock seconds per pipeline stage, summed over shards",
    },
    "run.json": {
        "config.stac.api_url": "the demo serves its STAC API on a free port, new every run "
        "(config_hash leaves the address out too)",
    },
}
"""JSON fields (dotted paths, fnmatch patterns) expected to differ between two builds, per file
(relative path pattern), with why. Not ignored: ``config_hash``, ``bytes`` (file sizes),
``sample_ids_sha1``, counts and caption flags, which were identical in the two builds."""

SCHEMA_CHANGE = {
    "cube_type": "shard schema 1.2 -> 2.0: the cube is stored as byte planes in one binary "
    "value per sample (decoded values compared: identical)",
    "row_groups": "shard schema 2.0 writes one sample per row group",
    "eocap.schema_version": "the shard schema version",
    "eocap.cubes.*": "schema 2.0 records each cube's dtype, shape, encoding and band order",
    "eocap.migrated_from": "written by eocap migrate",
    "bytes": "the shard file's size changes with the pixel storage",
}
"""Differences expected when the two sides' shards are of different schema versions, with why."""

MAX_EXAMPLES = 3
"""Differing rows shown per column."""

MAX_LISTED_IDS = 10
"""Sample ids printed per side when ids are on one side only (the JSON lists all)."""


@dataclass(frozen=True)
class Blob:
    """Stand-in for a binary value or a pixel array row: compared by digest, not kept."""

    sha256: str
    nbytes: int

    def __repr__(self) -> str:
        return f"<{self.nbytes} bytes sha256:{self.sha256[:12]}>"


_ABSENT = object()
"""A row of a column that its shard does not have."""


@dataclass
class Finding:
    """One compared item: a file, a shard, a column, a JSON field, ids on one side.

    Attributes:
        section: ``files``, ``shards``, ``ids``, ``columns:TABLE``, ``json`` or ``metadata``.
        item: What was compared (column name, relative path, ``file: field``...).
        status: ``equal``, ``differs``, ``only_before``, ``only_after`` or ``ignored``.
        unexpected: Whether it counts towards the exit status.
        detail: Short human-readable explanation.
        reason: Why it is expected to differ (an ignore rule matched it).
        rule: The ignore rule that matched: the column, or ``FILE_PATTERN: FIELD_PATTERN``.
        differing_rows: Matched rows whose values differ (columns).
        max_abs_diff: Largest absolute difference of the float values (columns with floats).
        before: Value on the before side (JSON fields, shard rows, column types).
        after: Value on the after side.
        examples: Up to ``MAX_EXAMPLES`` differing rows: ``sample_id``, ``before``, ``after``
            (and, for array columns, ``values``: which values differ).
    """

    section: str
    item: str
    status: str
    unexpected: bool
    detail: str = ""
    reason: str = ""
    rule: str = ""
    differing_rows: int | None = None
    max_abs_diff: float | None = None
    before: Any = None
    after: Any = None
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TableSide:
    """The Parquet files of one table (shards or manifest) on one side.

    Attributes:
        files: Relative name -> path, sorted by name.
        ids: Relative name -> row keys (sample ids) in file order.
        types: Column -> Arrow type (first file that has the column).
        columns: Column names in schema order (union over files).
    """

    files: dict[str, Path]
    ids: dict[str, list[str]]
    types: dict[str, pa.DataType]
    columns: list[str]


def _load_table_side(files: dict[str, Path]) -> TableSide:
    ids: dict[str, list[str]] = {}
    types: dict[str, pa.DataType] = {}
    columns: list[str] = []
    for name, path in files.items():
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        for f in schema:
            if f.name not in types:
                types[f.name] = f.type
                columns.append(f.name)
        if ID_COLUMN in schema.names:
            ids[name] = [str(v) for v in pf.read(columns=[ID_COLUMN]).column(0).to_pylist()]
        else:  # no id column: rows are keyed by file and position
            ids[name] = [f"{name}#{i}" for i in range(pf.metadata.num_rows)]
    return TableSide(files=files, ids=ids, types=types, columns=columns)


def _normalize(value: Any) -> Any:
    """Python value of a cell with binary values replaced by their digest."""
    if isinstance(value, bytes):
        return Blob(hashlib.sha256(value).hexdigest(), len(value))
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _tensor_leaf_type(typ: pa.DataType) -> pa.DataType | None:
    """Numeric leaf type of nested fixed-size lists (``pixels``, ``scl``), else None."""
    if not pa.types.is_fixed_size_list(typ):
        return None
    while pa.types.is_fixed_size_list(typ):
        typ = typ.value_type
    return typ if pa.types.is_integer(typ) or pa.types.is_floating(typ) else None


def _tensor_numpy(chunk: pa.Array) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Leaf values of a nested fixed-size-list chunk as an array of shape (rows, *shape).

    Returns:
        The values, 0 wherever a value or a list above it is null, and per nesting level below
        the rows the effective null mask of that level's elements (null, or under a null list)
        as an array of shape (rows, elements per row), None for a level without nulls.
    """
    n = len(chunk)
    level = chunk
    shape: list[int] = []
    masks: list[np.ndarray | None] = []
    effective: np.ndarray | None = None
    while pa.types.is_fixed_size_list(level.type):
        size = level.type.list_size
        shape.append(size)
        # .values ignores the array's offset: take the child slice of these rows.
        level = level.values.slice(level.offset * size, len(level) * size)
        own = (
            level.is_null().to_numpy(zero_copy_only=False).reshape(n, -1)
            if level.null_count
            else None
        )
        if effective is not None:
            above = np.repeat(effective, size, axis=1)
            own = above if own is None else own | above
        effective = own
        masks.append(effective)
    values = level.fill_null(0) if level.null_count else level
    flat = np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).reshape(n, -1)
    if effective is not None and effective.any():
        flat = flat.copy()
        flat[effective] = 0
    return flat.reshape(n, *shape), masks


def _tensor_rows(chunk: pa.Array) -> list[Any]:
    """Per-row digests of a nested fixed-size-list chunk: leaf bytes plus null masks, if any."""
    values, masks = _tensor_numpy(chunk)
    flat = values.reshape(len(chunk), -1)
    row_valid = chunk.is_valid().to_numpy(zero_copy_only=False)
    out: list[Any] = []
    for i in range(len(chunk)):
        if not row_valid[i]:
            out.append(None)
            continue
        data = flat[i].tobytes()
        for depth, mask in enumerate(masks):
            if mask is not None and mask[i].any():
                data += bytes([depth]) + np.packbits(mask[i]).tobytes()
        out.append(Blob(hashlib.sha256(data).hexdigest(), flat[i].nbytes))
    return out


def _cube_meta(path: Path) -> dict[str, dict[str, Any]]:
    """Schema 2.0 cube columns of a shard: column -> dtype, shape, encoding (else empty)."""
    raw = (pq.ParquetFile(path).schema_arrow.metadata or {}).get(b"eocap", b"{}")
    cubes: dict[str, dict[str, Any]] = json.loads(raw).get("cubes", {})
    return cubes


def _schema_version(path: Path) -> str:
    raw = (pq.ParquetFile(path).schema_arrow.metadata or {}).get(b"eocap", b"{}")
    return str(json.loads(raw).get("schema_version", ""))


def _decode_cube(value: bytes, meta: dict[str, Any]) -> np.ndarray:
    """One schema 2.0 cube, decoded as docs/dataset-schema.md's numpy recipe does."""
    if meta["encoding"] != "byte_planes_le":
        raise ValueError(f"unknown cube encoding {meta['encoding']}")
    dtype = np.dtype(meta["dtype"])
    planes = np.frombuffer(value, np.uint8).reshape(dtype.itemsize, -1)
    cube = planes[-1].astype(dtype)
    for plane in planes[-2::-1]:  # high byte first: cube = cube * 256 + next byte
        cube = (cube << 8) | plane
    # Native byte order: the digest is the one of a 1.2 cube with the same values.
    return cube.astype(dtype.newbyteorder("=")).reshape(meta["shape"])


def _cube_rows(column: pa.ChunkedArray, meta: dict[str, Any]) -> list[Any]:
    """Per-row digests of a schema 2.0 cube column: the decoded array's bytes."""
    out: list[Any] = []
    for value in column.to_pylist():
        if value is None:
            out.append(None)
            continue
        cube = _decode_cube(value, meta)
        out.append(Blob(hashlib.sha256(cube.tobytes()).hexdigest(), cube.nbytes))
    return out


def _row_values(column: pa.ChunkedArray, cube: dict[str, Any] | None = None) -> list[Any]:
    """Comparable per-row values of a column: digests for arrays/binaries, else Python values.

    ``cube``: the column's schema 2.0 cube metadata, if it is one.
    """
    if cube is not None:
        return _cube_rows(column, cube)
    if _tensor_leaf_type(column.type) is not None:
        return [v for chunk in column.chunks for v in _tensor_rows(chunk)]
    return [_normalize(v) for v in column.to_pylist()]


def _column_values(side: TableSide, column: str) -> dict[str, Any]:
    """Sample id -> comparable value of ``column``, read one file at a time."""
    out: dict[str, Any] = {}
    for name, path in side.files.items():
        pf = pq.ParquetFile(path)
        if column in pf.schema_arrow.names:
            cube = _cube_meta(path).get(column)
            values = _row_values(pf.read(columns=[column]).column(0), cube)
        else:
            values = [_ABSENT] * len(side.ids[name])
        out.update(zip(side.ids[name], values, strict=True))
    return out


def _tensor_cell(side: TableSide, column: str, sample_id: str) -> np.ndarray | None:
    """The array of one row of a cube column, 1.2 or 2.0 (None if absent or null)."""
    for name, ids in side.ids.items():
        if sample_id in ids:
            column_data = pq.ParquetFile(side.files[name]).read(columns=[column]).column(0)
            cell = column_data.slice(ids.index(sample_id), 1).combine_chunks()
            if cell.null_count:
                return None
            cube = _cube_meta(side.files[name]).get(column)
            if cube is not None:
                return _decode_cube(cell[0].as_py(), cube)
            return _tensor_numpy(cell)[0][0]
    return None


def _tensor_note(before: np.ndarray | None, after: np.ndarray | None) -> str:
    """Which values of two arrays differ: count, first index, values, largest difference."""
    if before is None or after is None or before.shape != after.shape:
        shapes = [None if x is None else list(x.shape) for x in (before, after)]
        return f"shapes {shapes[0]} -> {shapes[1]}"
    diff = before != after
    if before.dtype.kind == "f":
        diff &= ~(np.isnan(before) & np.isnan(after))
    where = np.argwhere(diff)
    if not len(where):
        return "same values, other bytes (null mask or dtype)"
    first = tuple(int(i) for i in where[0])
    delta = np.abs(before.astype(np.float64) - after.astype(np.float64))[diff]
    return (
        f"{len(where)} of {before.size} values differ; first at {list(first)}: "
        f"{before[first].item()} -> {after[first].item()}; max abs diff {delta.max():.6g}"
    )


def _same(a: Any, b: Any) -> bool:
    """Exact equality: NaN equals NaN, signed zeros differ, 1 differs from 1.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _max_abs_diff(a: Any, b: Any) -> float | None:
    """Largest absolute difference over the float values at the same place, None if none."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        if not (math.isfinite(a) and math.isfinite(b)):
            return 0.0 if a == b else math.inf
        return abs(a - b)
    pairs: Iterable[tuple[Any, Any]] = ()
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = ((a[k], b[k]) for k in a.keys() & b.keys())
    elif isinstance(a, list) and isinstance(b, list):
        pairs = zip(a, b, strict=False)
    diffs = [d for x, y in pairs if (d := _max_abs_diff(x, y)) is not None]
    return max(diffs) if diffs else None


def _type_has(typ: pa.DataType, predicate: Any) -> bool:
    """Whether ``typ`` or any type nested in it satisfies ``predicate``."""
    if predicate(typ):
        return True
    return any(_type_has(typ.field(i).type, predicate) for i in range(typ.num_fields))


def _is_text(typ: pa.DataType) -> bool:
    """Whether all leaves of ``typ`` are strings (``caption``, ``qa``, ``caption_mentions``)."""
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return True
    if typ.num_fields == 0:
        return False
    return all(_is_text(typ.field(i).type) for i in range(typ.num_fields))


def _shown(value: Any, text: bool) -> Any:
    """A JSON-friendly rendering of a cell for the examples (text in full, others truncated)."""
    if value is _ABSENT:
        return "<column absent in this shard>"
    if text or value is None or isinstance(value, bool | int | float):
        return value
    shown = repr(value)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _is_cube(side: TableSide, column: str) -> bool:
    """Whether ``column`` is a pixel cube on this side (1.2 nested lists or 2.0 byte planes)."""
    if _tensor_leaf_type(side.types[column]) is not None:
        return True
    return any(column in _cube_meta(path) for path in side.files.values())


def compare_columns(
    table: str, before: TableSide, after: TableSide, ignored: dict[str, str]
) -> list[Finding]:
    """Compare every column of a table over the rows whose ids are on both sides.

    Args:
        table: ``shards`` or ``manifest`` (the findings' section is ``columns:TABLE``).
        before: The before side's files.
        after: The after side's files.
        ignored: Column -> why its differences are expected.

    Returns:
        One finding per column of either side.
    """
    section = f"columns:{table}"
    before_ids = {i for ids in before.ids.values() for i in ids}
    after_ids = {i for ids in after.ids.values() for i in ids}
    common = sorted(before_ids & after_ids)
    columns = before.columns + [c for c in after.columns if c not in before.types]
    findings: list[Finding] = []
    for column in columns:
        reason = ignored.get(column, "")
        if column == ID_COLUMN:
            findings.append(
                Finding(
                    section,
                    column,
                    "equal",
                    False,
                    "row key (see sample ids)",
                    before=str(before.types.get(column, "")),
                    after=str(after.types.get(column, "")),
                )
            )
            continue
        if column not in after.types or column not in before.types:
            status = "only_before" if column not in after.types else "only_after"
            findings.append(
                Finding(
                    section,
                    column,
                    "ignored" if reason else status,
                    not reason,
                    f"column missing on the {'after' if status == 'only_before' else 'before'} "
                    "side",
                    reason,
                    column if reason else "",
                    before=str(before.types.get(column, "")),
                    after=str(after.types.get(column, "")),
                )
            )
            continue
        btype, atype = before.types[column], after.types[column]
        text = _is_text(btype)
        has_float = _type_has(btype, pa.types.is_floating)
        bvals = _column_values(before, column)
        avals = _column_values(after, column)
        differing = 0
        max_diff: float | None = None
        examples: list[dict[str, Any]] = []
        for sample_id in common:
            b, a = bvals[sample_id], avals[sample_id]
            if _same(b, a):
                continue
            differing += 1
            if has_float:
                d = _max_abs_diff(b, a)
                if d is not None:
                    max_diff = d if max_diff is None else max(max_diff, d)
            if len(examples) < MAX_EXAMPLES:
                examples.append(
                    {"sample_id": sample_id, "before": _shown(b, text), "after": _shown(a, text)}
                )
        del bvals, avals
        cube = _is_cube(before, column) and _is_cube(after, column)
        if cube:
            for ex in examples:
                ex["values"] = _tensor_note(
                    _tensor_cell(before, column, ex["sample_id"]),
                    _tensor_cell(after, column, ex["sample_id"]),
                )
        details = []
        if btype != atype:
            details.append(f"type {btype} -> {atype}")
        if differing:
            details.append(f"{differing} of {len(common)} rows differ")
        status = "differs" if details else "equal"
        if reason and status == "differs":
            status = "ignored"
        if cube and btype != atype and not differing and not reason:
            status, reason = "ignored", SCHEMA_CHANGE["cube_type"]
        findings.append(
            Finding(
                section,
                column,
                status,
                status == "differs",
                "; ".join(details),
                reason,
                column if reason else "",
                differing_rows=differing,
                max_abs_diff=max_diff if has_float else None,
                before=str(btype),
                after=str(atype),
                examples=examples,
            )
        )
    return findings


def compare_ids(table: str, before: TableSide, after: TableSide) -> list[Finding]:
    """Sample ids on one side only, and ids appearing more than once on a side."""
    findings: list[Finding] = []
    bcount: dict[str, int] = {}
    acount: dict[str, int] = {}
    for counts, side in ((bcount, before), (acount, after)):
        for ids in side.ids.values():
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
    only_before = sorted(bcount.keys() - acount.keys())
    only_after = sorted(acount.keys() - bcount.keys())
    common = len(bcount.keys() & acount.keys())
    findings.append(
        Finding("ids", f"{table}: ids on both sides", "equal", False, f"{common} sample ids")
    )
    for status, ids in (("only_before", only_before), ("only_after", only_after)):
        if ids:
            listed = ", ".join(ids[:MAX_LISTED_IDS]) + (" ..." if len(ids) > MAX_LISTED_IDS else "")
            findings.append(
                Finding(
                    "ids",
                    f"{table}: ids {status.replace('_', ' ')}",
                    status,
                    True,
                    f"{len(ids)}: {listed}",
                    before=ids if status == "only_before" else None,
                    after=ids if status == "only_after" else None,
                )
            )
    for label, counts in (("before", bcount), ("after", acount)):
        dupes = sorted(i for i, n in counts.items() if n > 1)
        if dupes:
            findings.append(
                Finding(
                    "ids",
                    f"{table}: duplicated ids {label}",
                    "differs",
                    True,
                    f"{len(dupes)}: {', '.join(dupes[:MAX_LISTED_IDS])}",
                    before=dupes if label == "before" else None,
                    after=dupes if label == "after" else None,
                )
            )
    return findings


def _schema_change(before: TableSide, after: TableSide) -> bool:
    """Whether the two sides' shards are of different schema versions."""
    versions = [{_schema_version(p) for p in side.files.values()} for side in (before, after)]
    return versions[0] != versions[1]


def compare_shards(before: TableSide, after: TableSide) -> list[Finding]:
    """Shard file names, rows, row groups and the order of their sample ids."""
    findings: list[Finding] = []
    schema_change = _schema_change(before, after)
    for name in sorted(before.files.keys() | after.files.keys()):
        if name not in after.files or name not in before.files:
            status = "only_before" if name not in after.files else "only_after"
            findings.append(Finding("shards", name, status, True, "shard file on one side only"))
            continue
        bmeta = pq.ParquetFile(before.files[name]).metadata
        ameta = pq.ParquetFile(after.files[name]).metadata
        brow = {"rows": bmeta.num_rows, "row_groups": bmeta.num_row_groups}
        arow = {"rows": ameta.num_rows, "row_groups": ameta.num_row_groups}
        details = [f"{k} {brow[k]} -> {arow[k]}" for k in brow if brow[k] != arow[k]]
        expected = schema_change and details == [
            f"row_groups {brow['row_groups']} -> {arow['row_groups']}"
        ]
        bids, aids = before.ids[name], after.ids[name]
        if bids != aids:
            same_set = sorted(bids) == sorted(aids)
            details.append("same sample ids, other order" if same_set else "other sample ids")
        status = "differs" if details else "equal"
        findings.append(
            Finding(
                "shards",
                name,
                "ignored" if expected else status,
                bool(details) and not expected,
                "; ".join(details),
                reason=SCHEMA_CHANGE["row_groups"] if expected else "",
                before=brow,
                after=arow,
            )
        )
    return findings


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths of the leaves of a JSON value (lists are leaves)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _replace_root(value: Any, roots: list[str]) -> Any:
    """``value`` with the dataset's path replaced by ``DATASET_PLACEHOLDER`` in its strings."""
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, DATASET_PLACEHOLDER)
        return value
    if isinstance(value, dict):
        return {k: _replace_root(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_root(v, roots) for v in value]
    return value


def _roots(root: Path) -> list[str]:
    """The spellings of a dataset's path to replace, longest first.

    Besides the path given on the command line, the path the dataset was built at, as its
    ``report.json`` (``output_dir``) and ``run.json`` (``config.output.dir``) record it: a
    dataset copied or moved elsewhere still compares equal.
    """
    paths = {str(root.resolve()), str(root.absolute()), str(root)}
    for name, keys in (("report.json", ("output_dir",)), ("run.json", ("config", "output", "dir"))):
        try:
            value: Any = json.loads((root / name).read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, str) and value not in ("", ".", "/"):
            paths.add(value.rstrip("/"))
    return sorted(paths, key=len, reverse=True)


def compare_fields(
    section: str,
    name: str,
    before: dict[str, Any],
    after: dict[str, Any],
    ignored: dict[str, tuple[str, str]],
) -> list[Finding]:
    """Field-by-field comparison of two flattened JSON documents.

    Args:
        section: ``json`` or ``metadata``.
        name: The document (relative path, or ``shard: key`` for Parquet metadata).
        before: Dotted path -> value.
        after: Dotted path -> value.
        ignored: Field pattern -> (rule, why the field is expected to differ).

    Returns:
        One finding per differing or ignored field, and one ``equal`` finding for the rest.
    """
    findings: list[Finding] = []
    equal = 0
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key, _ABSENT), after.get(key, _ABSENT)
        rule, reason = next(
            (r for p, r in ignored.items() if fnmatch.fnmatchcase(key, p)), ("", "")
        )
        if b is _ABSENT or a is _ABSENT:
            status = "only_before" if a is _ABSENT else "only_after"
        elif _same(b, a):
            if not reason:
                equal += 1
                continue
            status = "equal"
        else:
            status = "differs"
        if reason:
            status = "ignored" if status != "equal" else "equal"
        findings.append(
            Finding(
                section,
                f"{name}: {key}",
                status,
                status in ("differs", "only_before", "only_after"),
                f"{_plain(b)} -> {_plain(a)}",
                reason=reason,
                rule=rule,
                before=None if b is _ABSENT else b,
                after=None if a is _ABSENT else a,
            )
        )
    findings.append(Finding(section, name, "equal", False, f"{equal} fields equal"))
    return findings


def _plain(value: Any, width: int = 60) -> str:
    """A JSON value on one line, truncated to ``width`` characters (``-`` where absent)."""
    text = "-" if value is _ABSENT else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _json_ignored(rel: str) -> dict[str, tuple[str, str]]:
    """Field pattern -> (rule, reason) of the ``IGNORED_JSON_FIELDS`` entries for file ``rel``."""
    out: dict[str, tuple[str, str]] = {}
    for pattern, fields in IGNORED_JSON_FIELDS.items():
        if fnmatch.fnmatchcase(rel, pattern):
            out.update({f: (f"{pattern}: {f}", r) for f, r in fields.items()})
    return out


def compare_json_files(
    before_root: Path, after_root: Path, schema_change: bool = False
) -> list[Finding]:
    """Every ``*.json`` file present on both sides, field by field.

    ``schema_change``: the shards are of different schema versions (their ``bytes`` differ).
    """
    findings: list[Finding] = []
    brel = {p.relative_to(before_root).as_posix() for p in before_root.rglob("*.json")}
    arel = {p.relative_to(after_root).as_posix() for p in after_root.rglob("*.json")}
    for rel in sorted(brel & arel):
        docs = []
        for root in (before_root, after_root):
            doc = json.loads((root / rel).read_text())
            docs.append(_flatten(_replace_root(doc, _roots(root))))
        ignored = _json_ignored(rel)
        if schema_change and (
            rel == "report.json" or fnmatch.fnmatchcase(rel, "shards/_stats/*_stats.json")
        ):
            ignored["bytes"] = ("schema change: bytes", SCHEMA_CHANGE["bytes"])
        findings.extend(compare_fields("json", rel, docs[0], docs[1], ignored))
    return findings


def _kv_metadata(path: Path) -> dict[str, Any]:
    """Flattened Parquet key-value metadata; JSON values are parsed into fields."""
    raw = pq.ParquetFile(path).schema_arrow.metadata or {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode(errors="replace")
        text = v.decode(errors="replace")
        try:
            out.update(_flatten(json.loads(text), key))
        except ValueError:
            out[key] = text
    return out


def compare_metadata(before: TableSide, after: TableSide) -> list[Finding]:
    """The key-value metadata (GeoParquet ``geo``, ``huggingface``, ``eocap``) of each shard."""
    findings: list[Finding] = []
    ignored: dict[str, tuple[str, str]] = {}
    if _schema_change(before, after):
        ignored = {k: (f"schema change: {k}", v) for k, v in SCHEMA_CHANGE.items() if "." in k}
    for name in sorted(before.files.keys() & after.files.keys()):
        bmeta = _kv_metadata(before.files[name])
        ameta = _kv_metadata(after.files[name])
        findings.extend(compare_fields("metadata", name, bmeta, ameta, ignored))
    return findings


def compare_file_lists(before_root: Path, after_root: Path) -> list[Finding]:
    """Files present under one dataset directory only."""
    brel = {p.relative_to(before_root).as_posix() for p in before_root.rglob("*") if p.is_file()}
    arel = {p.relative_to(after_root).as_posix() for p in after_root.rglob("*") if p.is_file()}
    findings = [
        Finding("files", rel, "only_before" if rel in brel else "only_after", True, "one side")
        for rel in sorted(brel ^ arel)
    ]
    findings.append(
        Finding("files", "files on both sides", "equal", False, f"{len(brel & arel)} files")
    )
    return findings


def _parquet_files(root: Path, pattern: str) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.glob(pattern)) if p.is_file()}


def compare_datasets(
    before_root: Path, after_root: Path, ignored_columns: dict[str, str]
) -> list[Finding]:
    """All findings for two dataset directories.

    Args:
        before_root: The reference dataset.
        after_root: The dataset to check against it.
        ignored_columns: Column -> why its differences are expected.

    Returns:
        Findings of every section; ``unexpected`` ones decide the exit status.
    """
    findings = compare_file_lists(before_root, after_root)
    shards_before = _load_table_side(_parquet_files(before_root, "shards/*.parquet"))
    shards_after = _load_table_side(_parquet_files(after_root, "shards/*.parquet"))
    findings += compare_shards(shards_before, shards_after)
    findings += compare_ids("shards", shards_before, shards_after)
    findings += compare_columns("shards", shards_before, shards_after, ignored_columns)
    findings += compare_metadata(shards_before, shards_after)
    manifest_before = _parquet_files(before_root, "manifest.parquet")
    manifest_after = _parquet_files(after_root, "manifest.parquet")
    if manifest_before and manifest_after:  # one side only: reported under files
        mb, ma = _load_table_side(manifest_before), _load_table_side(manifest_after)
        findings += compare_ids("manifest", mb, ma)
        findings += compare_columns("manifest", mb, ma, ignored_columns)
    findings += compare_json_files(
        before_root, after_root, _schema_change(shards_before, shards_after)
    )
    return findings


_STYLE = {
    "equal": "green",
    "ignored": "yellow",
    "differs": "bold red",
    "only_before": "bold red",
    "only_after": "bold red",
}


def _status(f: Finding) -> str:
    return f"[{_STYLE.get(f.status, '')}]{f.status}[/]"


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return escape(text if len(text) <= width else text[: width - 3] + "...")


def print_report(console: Console, findings: list[Finding], before: Path, after: Path) -> None:
    """Readable tables of the findings: shards, columns, fields that differ, examples."""
    console.print(f"[bold]before[/] {before}\n[bold]after[/]  {after}")
    for f in findings:
        if f.section in ("files", "ids"):
            console.print(f"{f.section}: {escape(f.item)}: {_status(f)} {escape(f.detail)}")

    shards = Table(title="Shards")
    for col in ("shard", "rows", "row groups", "status", "detail"):
        shards.add_column(col)
    for f in findings:
        if f.section == "shards":
            b, a = f.before or {}, f.after or {}
            shards.add_row(
                f.item,
                f"{b.get('rows', '-')} / {a.get('rows', '-')}",
                f"{b.get('row_groups', '-')} / {a.get('row_groups', '-')}",
                _status(f),
                escape(f.detail),
            )
    console.print(shards)

    sections = list(dict.fromkeys(f.section for f in findings if f.section.startswith("columns:")))
    for section in sections:
        table = Table(title=f"Columns of {section.split(':', 1)[1]}")
        for col in ("column", "type", "status", "differing rows", "max abs diff", "note"):
            table.add_column(col, overflow="fold")
        for f in findings:
            if f.section != section:
                continue
            table.add_row(
                escape(f.item),
                _short(f.before if f.before == f.after else f"{f.before} -> {f.after}", 40),
                _status(f),
                "" if f.differing_rows is None else str(f.differing_rows),
                "" if f.max_abs_diff is None else f"{f.max_abs_diff:.6g}",
                escape(f.reason or f.detail),
            )
        console.print(table)

    fields = Table(title="JSON files and Parquet metadata: fields that differ, and ignore rules")
    for col in ("field", "status", "before", "after", "note"):
        fields.add_column(col, overflow="fold")
    summary = []
    rules: dict[str, list[Finding]] = {}
    for f in findings:
        if f.section not in ("json", "metadata"):
            continue
        if f.rule:  # one row per ignore rule, the fields it matched are in the JSON output
            rules.setdefault(f.rule, []).append(f)
        elif f.status == "equal":
            summary.append(f"{f.item} ({f.detail})")
        else:
            fields.add_row(escape(f.item), _status(f), _short(f.before), _short(f.after), "")
    for rule, matched in rules.items():
        differ = [f for f in matched if f.status == "ignored"]
        first = (differ or matched)[0]
        fields.add_row(
            escape(rule),
            _status(first),
            _short(first.before),
            _short(first.after),
            escape(f"{len(differ)} of {len(matched)} fields differ (first shown): {first.reason}"),
        )
    console.print(fields)
    console.print("equal: " + escape(", ".join(summary)))

    for f in findings:
        if f.examples and f.status != "ignored":
            console.print(f"\n[bold]{escape(f.section)} {escape(f.item)}[/]: {escape(f.detail)}")
            for ex in f.examples:
                console.print(f"  {escape(ex['sample_id'])}")
                console.print(f"    [red]- {_short(ex['before'], 10_000)}[/]")
                console.print(f"    [green]+ {_short(ex['after'], 10_000)}[/]")
                if "values" in ex:
                    console.print(f"    {escape(ex['values'])}")

    unexpected = [f for f in findings if f.unexpected]
    ignored = [f for f in findings if f.status == "ignored"]
    colour = "red" if unexpected else "green"
    console.print(
        f"\n[bold {colour}]{len(unexpected)} unexpected difference(s)[/], "
        f"{len(ignored)} ignored difference(s) (IGNORED_COLUMNS / IGNORED_JSON_FIELDS)"
    )
    for f in unexpected:
        console.print(f"  [red]{escape(f.section)}: {escape(f.item)}[/] {escape(f.detail)}")


def main(argv: list[str] | None = None) -> int:
    """Compare BEFORE_DIR with AFTER_DIR; 0 if nothing unexpected differs, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_datasets",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    parser.add_argument("before", type=Path, help="reference dataset directory")
    parser.add_argument("after", type=Path, help="dataset directory to check")
    parser.add_argument("--json", type=Path, help="also write the findings to this JSON file")
    parser.add_argument(
        "--ignore-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="treat differences of this column as expected too (reported as ignored)",
    )
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not (root / "shards").is_dir():
            parser.error(f"{root} has no shards/ folder: not an eocap dataset")
    ignored = dict(IGNORED_COLUMNS)
    ignored.update({c: "--ignore-column on the command line" for c in args.ignore_column})
    findings = compare_datasets(args.before, args.after, ignored)
    print_report(Console(), findings, args.before, args.after)
    unexpected = sum(f.unexpected for f in findings)
    if args.json:
        result = {
            "before": str(args.before),
            "after": str(args.after),
            "unexpected_differences": unexpected,
            "ignored_columns": ignored,
            "ignored_json_fields": IGNORED_JSON_FIELDS,
            "findings": [asdict(f) for f in findings],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=repr) + "\n")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
