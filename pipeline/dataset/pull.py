"""``eocap pull``: a subset of a release, fetched by the byte ranges its index names.

A release (docs/release.md) indexes every sample in ``metadata.parquet``: its data file, row
group and that row group's byte range and hash. A pull selects samples on the index
(:class:`PullFilter`), then per source data file either downloads the whole file (every sample
of it selected; checked against ``SHA256SUMS``) or fetches only the footer and the selected row
groups (each checked against ``range_sha256``) and writes the selected rows as a new file with
the source's schema, metadata and writer settings. The destination is a release of the same
layout (its own index, ``SHA256SUMS``; card, stats and STAC collection copied; ``release.json``
records where it was pulled from and how), so ``eocap verify`` and the loader read it.

Every output file is written atomically and recorded in ``DEST/.pull/state.json`` once it is
whole: a killed pull, rerun, fetches only what it had not finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.errors import EocapError
from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.integrity import (
    file_sha256,
    parse_sha256sums,
    row_group_ranges,
    write_sha256sums,
)
from pipeline.dataset.layout import ReleaseLayout
from pipeline.io.atomic import atomic_write
from pipeline.io.remote import RangeReader, ReleaseSource, RemoteError

__all__ = [
    "PullError",
    "PullFilter",
    "PullPlan",
    "SourceFile",
    "fetch_row_groups",
    "plan_pull",
    "pull_release",
]

FOOTER_READ_BYTES = 64 * 1024
"""Tail bytes fetched per partly pulled file: pyarrow reads the last 64 KiB for the footer."""


class PullError(EocapError):
    """A pull cannot go on: bad filters, a damaged source, a destination of another pull."""


@dataclass(frozen=True)
class PullFilter:
    """Which samples of a release to pull; every set criterion must hold.

    Attributes:
        bbox: (west, south, east, north) in degrees: the footprint's bbox intersects it.
        start: First acquisition date (inclusive).
        end: Last acquisition date (inclusive).
        classes: The chip shows at least one of these map classes.
        max_cloud: Highest cloud fraction.
        exclude_flags: No caption flag among these.
        review_status: Consensus review status.
        split: ``train``, ``validation`` or ``test``.
        max_samples: At most this many: the first ones in index order.
    """

    bbox: tuple[float, float, float, float] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    classes: tuple[str, ...] = ()
    max_cloud: float | None = None
    exclude_flags: tuple[str, ...] = ()
    review_status: str | None = None
    split: str | None = None
    max_samples: int | None = None

    def record(self) -> dict[str, Any]:
        """The set criteria, JSON-ready (for ``release.json`` and the pull's state)."""
        out = {}
        for key, value in asdict(self).items():
            if value is None or value == ():
                continue
            out[key] = value.isoformat() if isinstance(value, dt.date) else value
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def select(self, index: pa.Table) -> npt.NDArray[np.bool_]:
        """Which rows of the sample index match, as a boolean mask."""
        mask = np.ones(index.num_rows, dtype=bool)

        def holds(condition: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.bool_]:
            return np.asarray(pc.fill_null(condition, False), dtype=bool)

        if self.bbox is not None:
            west, south, east, north = self.bbox
            box = index.column("bbox")
            for name, op, value in (
                ("xmin", pc.less_equal, east),
                ("xmax", pc.greater_equal, west),
                ("ymin", pc.less_equal, north),
                ("ymax", pc.greater_equal, south),
            ):
                mask &= holds(op(pc.struct_field(box, name), value))
        when = index.column("datetime")
        if self.start is not None:
            first = dt.datetime.combine(self.start, dt.time(), dt.UTC)
            mask &= holds(pc.greater_equal(when, pa.scalar(first, when.type)))
        if self.end is not None:
            after = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), dt.UTC)
            mask &= holds(pc.less(when, pa.scalar(after, when.type)))
        if self.classes:
            mask &= _any_in(index.column("classes"), self.classes)
        if self.max_cloud is not None:
            mask &= holds(pc.less_equal(index.column("cloud_fraction"), self.max_cloud))
        if self.exclude_flags:
            mask &= ~_any_in(index.column("caption_flags"), self.exclude_flags)
        if self.review_status is not None:
            mask &= holds(pc.equal(index.column("review_status"), self.review_status))
        if self.split is not None:
            mask &= holds(pc.equal(index.column("split"), self.split))
        if self.max_samples is not None:
            mask &= np.cumsum(mask) <= self.max_samples
        return mask


def _any_in(lists: pa.ChunkedArray, values: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Per row of a list<string> column: whether any element is one of ``values``."""
    array = lists.combine_chunks()
    hits = np.asarray(pc.fill_null(pc.is_in(pc.list_flatten(array), pa.array(values)), False))
    parents = np.asarray(pc.list_parent_indices(array))
    return np.bincount(parents[hits], minlength=len(array)) > 0


@dataclass(frozen=True)
class SourceFile:
    """One source data file of a pull and what of it is pulled.

    Attributes:
        path: The file, relative to the source root.
        target: The output file, relative to the destination root.
        whole: Every sample of the file is selected: the file is downloaded as it is.
        rows: The selected samples' index rows (positions in the source index), file order.
        row_groups: The row groups holding them: (row group, byte offset, length, sha256).
    """

    path: str
    target: str
    whole: bool
    rows: tuple[int, ...]
    row_groups: tuple[tuple[int, int, int, str], ...]

    @property
    def fetch_bytes(self) -> int:
        """Bytes to fetch, footer aside."""
        return sum(length for _, _, length, _ in self.row_groups)


@dataclass
class PullPlan:
    """What a pull fetches and writes.

    Attributes:
        source: The source release.
        dest: The destination folder.
        filters: The selection.
        index: The source's sample index.
        sums: The source's ``SHA256SUMS``.
        index_metadata: The footer of the source's index (its writer settings are reused).
        files: The source data files with selected samples, in output order.
    """

    source: ReleaseSource
    dest: Path
    filters: PullFilter
    index: pa.Table
    sums: dict[str, str]
    index_metadata: pq.FileMetaData
    files: list[SourceFile] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Selected samples."""
        return sum(len(f.rows) for f in self.files)

    @property
    def total_bytes(self) -> int:
        """Bytes to fetch for the data files (footers and small files aside)."""
        return sum(f.fetch_bytes for f in self.files)

    def state(self) -> dict[str, Any]:
        """What identifies this pull in ``DEST/.pull/state.json``."""
        return {"source": self.source.location, "filters": self.filters.record()}


def _checked_read(source: ReleaseSource, name: str, sums: dict[str, str]) -> bytes:
    data = source.read(name)
    if name in sums and hashlib.sha256(data).hexdigest() != sums[name]:
        raise PullError(
            f"{source.location}/{name}: sha256 differs from its SHA256SUMS entry: the source "
            "is damaged or changed; tell its publisher, or pull from another copy"
        )
    return data


def plan_pull(source: ReleaseSource, dest: Path, filters: PullFilter) -> PullPlan:
    """Read the source's index and checksums and decide what to fetch for ``filters``.

    Raises:
        PullError: if the source's index is damaged or nothing matches the filters.
    """
    sums = parse_sha256sums(source.read(ReleaseLayout.SHA256SUMS).decode())
    index_file = pq.ParquetFile(io.BytesIO(_checked_read(source, ReleaseLayout.INDEX, sums)))
    index = index_file.read()
    selected = filters.select(index)
    if not selected.any():
        raise PullError(
            f"{source.location}: no sample matches {json.dumps(filters.record())}; "
            "loosen the filters"
        )
    plan = PullPlan(source, dest, filters, index, sums, index_file.metadata)
    files = index.column("file").to_pylist()
    splits = index.column("split").to_pylist()
    groups = index.column("row_group").to_pylist()
    in_group = index.column("row_in_group").to_pylist()
    offsets = index.column("byte_offset").to_pylist()
    lengths = index.column("byte_length").to_pylist()
    hashes = index.column("range_sha256").to_pylist()
    rows_of: dict[str, list[int]] = {}
    for i, name in enumerate(files):
        rows_of.setdefault(name, []).append(i)
    chosen = {name: [i for i in rows if selected[i]] for name, rows in rows_of.items()}
    chosen = {name: rows for name, rows in chosen.items() if rows}
    per_split: dict[str, list[str]] = {}
    for name, rows in chosen.items():
        per_split.setdefault(splits[rows[0]], []).append(name)
    for split, names in per_split.items():
        for k, name in enumerate(names):
            rows = sorted(chosen[name], key=lambda i: (groups[i], in_group[i]))
            ranges = {groups[i]: (groups[i], offsets[i], lengths[i], hashes[i]) for i in rows}
            plan.files.append(
                SourceFile(
                    path=name,
                    target=f"data/{split}-{k:05d}-of-{len(names):05d}.parquet",
                    whole=len(rows) == len(rows_of[name]),
                    rows=tuple(rows),
                    row_groups=tuple(ranges[g] for g in sorted(ranges)),
                )
            )
    return plan


class _SparseFile(RangeReader):
    """A read-only file of known size of which only some byte ranges are present.

    pyarrow reads a Parquet file's footer and, for ``read_row_group(i)``, only that row
    group's column chunks: given those ranges, it decodes the group as from the whole file.
    Reading bytes that were not fetched raises, so a wrong range cannot decode as zeros.
    """

    def __init__(self, name: str, size: int) -> None:
        super().__init__(size)
        self.name_for_errors = name
        self.parts: list[tuple[int, bytes]] = []

    def add(self, offset: int, data: bytes) -> None:
        self.parts.append((offset, data))

    def _read_at(self, start: int, length: int) -> bytes:
        end = start + length
        for offset, data in self.parts:
            if offset <= start and end <= offset + len(data):
                return data[start - offset : end - offset]
        raise PullError(
            f"{self.name_for_errors}: bytes {start}-{end} were not fetched; the release "
            "index's byte ranges do not match the file"
        )


def _writer_options(metadata: pq.FileMetaData) -> dict[str, Any]:
    """``pq.write_table`` options that reproduce the layout of the file ``metadata`` describes.

    Compression, dictionary columns, statistics columns, encodings and rows per row group are
    read from its footer (a pulled file is written as its source was).
    """
    group = metadata.row_group(0)
    columns = [group.column(c) for c in range(group.num_columns)]

    def top(chunk: Any) -> str:
        return str(chunk.path_in_schema).split(".")[0]

    dictionary = sorted({top(c) for c in columns if c.has_dictionary_page})
    statistics = sorted({top(c) for c in columns if c.is_stats_set})
    delta = {
        c.path_in_schema: "DELTA_BINARY_PACKED"
        for c in columns
        if "DELTA_BINARY_PACKED" in c.encodings and not c.has_dictionary_page
    }
    return {
        "row_group_size": max(
            metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)
        ),
        "compression": columns[0].compression.lower(),
        "use_dictionary": dictionary,
        "write_statistics": statistics,
        "column_encoding": delta or None,
    }


def _write_like(table: pa.Table, target: Path, like: pq.FileMetaData) -> None:
    """Write ``table`` to ``target`` atomically with the writer settings of the file ``like``.

    The GeoParquet bounds are recomputed for the rows written; other file metadata is kept.
    """
    meta = dict(table.schema.metadata or {})
    if b"geo" in meta and "bbox" in table.column_names:
        types = json.loads(meta[b"geo"])["columns"]["geometry"]["geometry_types"]
        meta[b"geo"] = geo_metadata(table, types)
    table = table.replace_schema_metadata(meta)
    with atomic_write(target) as tmp:
        pq.write_table(table, tmp, **_writer_options(like))


def fetch_row_groups(
    source: ReleaseSource,
    path: str,
    row_groups: Sequence[tuple[int, int, int, str]],
    on_bytes: Callable[[int], None] | None = None,
) -> pq.ParquetFile:
    """A remote data file of which only its footer and some row groups were fetched.

    Costs one suffix request for the footer (two if it is larger than
    :data:`FOOTER_READ_BYTES`) and one range request per row group, each checked against its
    ``range_sha256``; ``read_row_group(g)`` then decodes those groups, and raises for others.

    Args:
        source: The release root.
        path: The data file, relative to the root.
        row_groups: (row group, byte offset, byte length, sha256) from the sample index.
        on_bytes: Called with each row group's length as it arrives (progress).

    Raises:
        PullError: if the file is not Parquet or a row group's bytes do not match the index.
    """
    where = f"{source.location}/{path}"
    tail, size = source.read_tail(path, FOOTER_READ_BYTES)
    if tail[-4:] != b"PAR1":
        raise PullError(f"{where}: not a Parquet file (no PAR1 at the end)")
    footer = int.from_bytes(tail[-8:-4], "little") + 8
    if footer > len(tail):
        tail, size = source.read_tail(path, footer)
    sparse = _SparseFile(where, size)
    sparse.add(size - len(tail), tail)
    for group, offset, length, sha256 in row_groups:
        data = source.read_range(path, offset, length)
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise PullError(
                f"{where}: row group {group} (bytes {offset}-{offset + length - 1}) has sha256 "
                f"{got}, the index says {sha256}: the source is damaged or changed; tell its "
                "publisher, or pull from another copy"
            )
        sparse.add(offset, data)
        if on_bytes is not None:
            on_bytes(length)
    return pq.ParquetFile(sparse)


def _fetch_rows(
    plan: PullPlan, file: SourceFile, on_bytes: Callable[[int], None]
) -> tuple[pa.Table, pq.FileMetaData]:
    """The selected rows of a partly pulled file, and its footer.

    Fetches the file's tail (footer) and the selected row groups, each checked against its
    ``range_sha256``, and nothing else of the file.
    """
    parquet = fetch_row_groups(plan.source, file.path, file.row_groups, on_bytes)
    groups = plan.index.column("row_group").to_pylist()
    in_group = plan.index.column("row_in_group").to_pylist()
    tables = []
    for group, *_ in file.row_groups:
        rows = [in_group[i] for i in file.rows if groups[i] == group]
        tables.append(parquet.read_row_group(group).take(rows))
    table = pa.concat_tables(tables).replace_schema_metadata(parquet.schema_arrow.metadata)
    return table, parquet.metadata


def _pull_file(plan: PullPlan, file: SourceFile, on_bytes: Callable[[int], None]) -> None:
    target = plan.dest / file.target
    if file.whole:
        if file.path not in plan.sums:
            raise PullError(
                f"{plan.source.location}/{ReleaseLayout.SHA256SUMS}: no entry for {file.path}; "
                "the release is incomplete: tell its publisher"
            )
        try:
            plan.source.download(file.path, target, sha256=plan.sums[file.path], on_bytes=on_bytes)
        except RemoteError as exc:
            raise PullError(str(exc)) from exc
        return
    table, footer = _fetch_rows(plan, file, on_bytes)
    ids = plan.index.column("sample_id").to_pylist()
    if table.column("sample_id").to_pylist() != [ids[i] for i in file.rows]:
        raise PullError(
            f"{plan.source.location}/{file.path}: the rows at the index's positions are not "
            "the indexed samples; the release index is wrong: tell its publisher"
        )
    _write_like(table, target, footer)


def _dest_index(plan: PullPlan) -> pa.Table:
    """The destination's sample index: the selected rows, pointing into the new files."""
    tables = []
    for file in plan.files:
        path = plan.dest / file.target
        metadata = pq.read_metadata(path)
        ranges = row_group_ranges(metadata)
        with path.open("rb") as f:
            hashes = []
            for offset, length in ranges:
                f.seek(offset)
                hashes.append(hashlib.sha256(f.read(length)).hexdigest())
        group_of, row_of = [], []
        for g in range(metadata.num_row_groups):
            n = metadata.row_group(g).num_rows
            group_of += [g] * n
            row_of += list(range(n))
        if len(group_of) != len(file.rows):
            raise PullError(f"{path}: holds {len(group_of)} rows, expected {len(file.rows)}")
        rows = plan.index.take(list(file.rows))
        replaced = {
            "file": pa.array([file.target] * len(rows), pa.string()),
            "row_group": pa.array(group_of, pa.int32()),
            "row_in_group": pa.array(row_of, pa.int32()),
            "byte_offset": pa.array([ranges[g][0] for g in group_of], pa.int64()),
            "byte_length": pa.array([ranges[g][1] for g in group_of], pa.int64()),
            "range_sha256": pa.array([hashes[g] for g in group_of], pa.string()),
        }
        for name, values in replaced.items():
            i = rows.schema.get_field_index(name)
            rows = rows.set_column(i, rows.schema.field(i), values.cast(rows.schema.field(i).type))
        tables.append(rows)
    return pa.concat_tables(tables)


def _load_state(plan: PullPlan) -> dict[str, Any]:
    path = plan.dest / ReleaseLayout.PULL_STATE
    if not path.exists():
        return {**plan.state(), "done": {}}
    state: dict[str, Any] = json.loads(path.read_text())
    if {k: state.get(k) for k in plan.state()} != plan.state():
        raise PullError(
            f"{plan.dest}: holds a pull of {state.get('source')} with filters "
            f"{json.dumps(state.get('filters'))}; pull into a new folder or delete this one"
        )
    return state


def _save_state(plan: PullPlan, state: dict[str, Any]) -> None:
    with atomic_write(plan.dest / ReleaseLayout.PULL_STATE) as tmp:
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))


def pull_release(plan: PullPlan, on_bytes: Callable[[int], None] | None = None) -> list[str]:
    """Fetch and write what ``plan`` says; return the output files fetched now (not resumed).

    Args:
        plan: From :func:`plan_pull`.
        on_bytes: Called with the bytes of each fetched piece (progress).

    Raises:
        PullError: on a damaged source (hash mismatch) or a destination of another pull; the
            files finished before stay, and a rerun resumes after them.
    """
    progress = on_bytes or (lambda n: None)
    state = _load_state(plan)
    fetched = []
    for file in plan.files:
        target = plan.dest / file.target
        done = state["done"].get(file.target)
        if done is not None and target.exists() and file_sha256(target) == done["sha256"]:
            progress(file.fetch_bytes)
            continue
        _pull_file(plan, file, progress)
        state["done"][file.target] = {"source": file.path, "sha256": file_sha256(target)}
        _save_state(plan, state)
        fetched.append(file.target)
    index = _dest_index(plan)
    _write_like(index, plan.dest / ReleaseLayout.INDEX, plan.index_metadata)
    for name in ReleaseLayout.DESCRIPTIVE:
        if name in plan.sums:
            try:
                plan.source.download(name, plan.dest / name, sha256=plan.sums[name])
            except RemoteError as exc:
                raise PullError(str(exc)) from exc
    release = json.loads(_checked_read(plan.source, ReleaseLayout.RELEASE_JSON, plan.sums))
    splits = index.column("split").to_pylist()
    release["pulled_from"] = {
        "source": plan.source.location,
        "filters": plan.filters.record(),
        "samples": {s: splits.count(s) for s in dict.fromkeys(splits)},
    }
    with atomic_write(plan.dest / ReleaseLayout.RELEASE_JSON) as tmp:
        tmp.write_text(json.dumps(release, indent=2, sort_keys=True) + "\n")
    names = [f.target for f in plan.files] + [ReleaseLayout.INDEX, ReleaseLayout.RELEASE_JSON]
    names += [n for n in ReleaseLayout.DESCRIPTIVE if (plan.dest / n).exists()]
    write_sha256sums(plan.dest / ReleaseLayout.SHA256SUMS, plan.dest, names)
    return fetched
