"""Integrity of releases: file hashes, ``SHA256SUMS``, and the byte range of each row group.

``eocap release`` writes them, ``eocap pull`` checks what it fetches against them and
``eocap verify`` checks a folder; all three compute them here, so they cannot disagree on what a
row group's bytes are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.io.atomic import atomic_write

__all__ = [
    "byte_range",
    "file_sha256",
    "parse_sha256sums",
    "row_group_ranges",
    "write_sha256sums",
]


def file_sha256(path: Path) -> str:
    """The sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def parse_sha256sums(text: str) -> dict[str, str]:
    """``sha256sum`` output as {relative path: hash} (``*`` binary markers accepted)."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.partition(" ")
            sums[name.strip().removeprefix("*")] = digest
    return sums


def write_sha256sums(target: Path, root: Path, names: Iterable[str]) -> list[str]:
    """Write ``target`` in ``sha256sum`` format for ``names`` (paths relative to ``root``).

    Returns:
        The names, sorted as written.
    """
    ordered = sorted(names)
    lines = [f"{file_sha256(root / name)}  {name}\n" for name in ordered]
    with atomic_write(target) as tmp:
        tmp.write_text("".join(lines))
    return ordered


def byte_range(metadata: pq.FileMetaData, row_group: int) -> tuple[int, int]:
    """(first byte, length) of a row group's column chunks in its file.

    A chunk starts at its dictionary page when it has one, else at its first data page, and
    spans ``total_compressed_size`` bytes (dictionary page included).
    """
    group = metadata.row_group(row_group)
    starts, ends = [], []
    for j in range(group.num_columns):
        chunk = group.column(j)
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and chunk.dictionary_page_offset:
            start = min(start, chunk.dictionary_page_offset)
        starts.append(start)
        ends.append(start + chunk.total_compressed_size)
    return min(starts), max(ends) - min(starts)


def row_group_ranges(metadata: pq.FileMetaData) -> list[tuple[int, int]]:
    """:func:`byte_range` of every row group, in order."""
    return [byte_range(metadata, g) for g in range(metadata.num_row_groups)]
