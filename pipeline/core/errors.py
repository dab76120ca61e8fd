"""Errors raised by eocap, one place for all of them (torchgeo style)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "AssetError",
    "ConfigError",
    "DiskFullError",
    "EocapError",
    "PreflightError",
    "RunFailedError",
    "SampleFailure",
    "disk_full_names",
]


class EocapError(Exception):
    """Base class of every error eocap raises on purpose."""


class ConfigError(EocapError):
    """The run config is invalid; the message names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"config field '{field}': {message}")


class PreflightError(ConfigError):
    """A config value is well-formed but unusable (path missing, server unreachable)."""


class AssetError(EocapError):
    """A STAC item lacks a band or asset the run needs."""


class SampleFailure(EocapError):
    """One sample failed in one stage; recorded in its row, never fatal to the shard.

    Attributes:
        reason: A short, stable machine-readable reason (``no_scene``, ``cog_read``...),
            used to count failures by reason in shard stats.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class RunFailedError(EocapError):
    """A run finished, but not one of its samples succeeded; the message says why and what to do."""


class DiskFullError(EocapError):
    """The disk holding a run's output folder is full (``ENOSPC``).

    Every file is written to a temporary name and renamed once whole, so what the run had
    finished is intact and the file it was writing is dropped: running the same command again
    once there is space resumes the run.

    Attributes:
        folder: The output folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        super().__init__(
            f"the disk holding {folder} is full: nothing written there is lost (finished "
            "shards are kept, the file being written was dropped); free some space and run "
            "the same command again to resume"
        )

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[Path]]:
        # Pickled as its folder: Dask workers send a task's error back to the flow.
        return (DiskFullError, (self.folder,))


_NO_SPACE = os.strerror(errno.ENOSPC)
"""The OS's words for ENOSPC ("No space left on device")."""


@contextlib.contextmanager
def disk_full_names(folder: Path) -> Iterator[None]:
    """Turn a full disk (``ENOSPC``) met writing into ``folder`` into a :class:`DiskFullError`.

    The OS error names neither the file nor the folder (pyarrow: "Error writing bytes to
    file"); the user needs to know which disk to free and that the run can resume.
    """
    try:
        yield
    except Exception as exc:
        # Libraries with error types of their own (DuckDB writing an Overture extract) keep
        # the OS's words in the message.
        if getattr(exc, "errno", None) == errno.ENOSPC or _NO_SPACE in str(exc):
            raise DiskFullError(folder) from exc
        raise
