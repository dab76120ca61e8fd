"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every writer of a file that someone else may read or take as a signal (a shard, its stats
sidecar, the manifest, review results, a server's port file) writes a temporary file beside
the target and renames it over the target (``os.replace``, atomic within one filesystem).
A temporary file left by a killed process keeps a recognisable name (:func:`temp_path`), so
a later run can tell a half-written shard from a missing one and clean it up.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TEMP_GLOB", "atomic_write", "temp_path"]

TEMP_GLOB = ".*.tmp-*"
"""Matches the temporary files of :func:`temp_path` in a folder."""


def temp_path(path: Path) -> Path:
    """The temporary file that this process and thread writes ``path`` to."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    If the body raises (a full disk, a bad row), the temporary file is removed and ``path``
    is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
