"""``eocap verify``: is a release folder whole and consistent with its index?

Checks, each problem reported as one plain line:

* ``SHA256SUMS``: every listed file is present with that hash, and no file of the release
  (anything but ``SHA256SUMS`` itself and dot-prefixed paths such as ``.pull/``) is unlisted;
* ``metadata.parquet`` against the data files: every indexed sample is at its file, row group
  and row; every row of every data file is indexed exactly once; each row group's byte range
  is the one indexed and hashes to its ``range_sha256``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.dataset.integrity import file_sha256, parse_sha256sums, row_group_ranges
from pipeline.dataset.layout import ReleaseLayout

__all__ = ["verify_release"]


def _release_files(root: Path) -> list[str]:
    """Every file of the release folder, relative, except the sums and dot-prefixed paths."""
    names = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        hidden = any(part.startswith(".") for part in Path(name).parts)
        if path.is_file() and not hidden and name != ReleaseLayout.SHA256SUMS:
            names.append(name)
    return names


def _check_sums(root: Path) -> list[str]:
    sums_path = root / ReleaseLayout.SHA256SUMS
    if not sums_path.exists():
        return [f"{sums_path}: missing; every release lists its files' hashes there"]
    sums = parse_sha256sums(sums_path.read_text())
    problems = []
    for name, expected in sorted(sums.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: listed in {ReleaseLayout.SHA256SUMS} but missing")
        elif (got := file_sha256(path)) != expected:
            problems.append(f"{path}: sha256 {got}, {ReleaseLayout.SHA256SUMS} says {expected}")
    problems += [
        f"{root / name}: not listed in {ReleaseLayout.SHA256SUMS}"
        for name in _release_files(root)
        if name not in sums
    ]
    return problems


def _check_index(root: Path) -> list[str]:
    index_path = root / ReleaseLayout.INDEX
    if not index_path.exists():
        return [f"{index_path}: missing; the release has no sample index"]
    index = pq.read_table(
        index_path,
        columns=[
            "sample_id",
            "file",
            "row_group",
            "row_in_group",
            "byte_offset",
            "byte_length",
            "range_sha256",
        ],
    ).to_pylist()
    problems = [
        f"{index_path}: sample {sid} is indexed {n} times"
        for sid, n in Counter(r["sample_id"] for r in index).items()
        if n > 1
    ]
    by_file: dict[str, list[dict[str, object]]] = {}
    for row in index:
        by_file.setdefault(str(row["file"]), []).append(row)
    data_files = {n for n in _release_files(root) if n.startswith("data/")}
    problems += [
        f"{root / name}: data file with no sample in {ReleaseLayout.INDEX}"
        for name in sorted(data_files - set(by_file))
    ]
    for name, rows in sorted(by_file.items()):
        path = root / name
        if not path.is_file():
            problems.append(
                f"{path}: indexed in {ReleaseLayout.INDEX} ({len(rows)} samples) but missing"
            )
            continue
        problems += _check_file(path, rows)
    return problems


def _check_file(path: Path, rows: list[dict[str, object]]) -> list[str]:
    """The index rows of one data file against the file."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        return [f"{path}: not a readable Parquet file ({exc})"]
    ranges = row_group_ranges(parquet.metadata)
    with path.open("rb") as f:
        hashes = []
        for offset, length in ranges:
            f.seek(offset)
            hashes.append(hashlib.sha256(f.read(length)).hexdigest())
    ids = [
        parquet.read_row_group(g, columns=["sample_id"]).column(0).to_pylist()
        for g in range(parquet.num_row_groups)
    ]
    problems = []
    seen: set[tuple[int, int]] = set()
    for row in rows:
        sid, group, at = row["sample_id"], int(str(row["row_group"])), int(str(row["row_in_group"]))
        where = f"{path}: sample {sid} (row group {group}, row {at})"
        if not (0 <= group < len(ids) and 0 <= at < len(ids[group])):
            problems.append(f"{where}: no such row in the file")
            continue
        seen.add((group, at))
        if ids[group][at] != sid:
            problems.append(f"{where}: the file holds {ids[group][at]} there")
        if (row["byte_offset"], row["byte_length"]) != ranges[group]:
            problems.append(
                f"{where}: indexed bytes {row['byte_offset']}+{row['byte_length']}, "
                f"the row group is at {ranges[group][0]}+{ranges[group][1]}"
            )
        elif row["range_sha256"] != hashes[group]:
            problems.append(
                f"{where}: row group bytes hash to {hashes[group]}, not the indexed one"
            )
    problems += [
        f"{path}: row group {g} row {i} ({sid}) is not in {ReleaseLayout.INDEX}"
        for g, group_ids in enumerate(ids)
        for i, sid in enumerate(group_ids)
        if (g, i) not in seen
    ]
    return problems


def verify_release(root: Path) -> list[str]:
    """Every problem of the release folder ``root``, one plain line each; empty if none."""
    if not root.is_dir():
        return [f"{root}: no such folder; give a release folder"]
    return _check_sums(root) + _check_index(root)
