"""Read jobs over COGs: each COG opened once, every request read from it, jobs in a thread pool.

Opening a COG over HTTP costs more round trips than a window read, so every reader of the
pipeline (Sentinel-2 bands, Sentinel-1 polarisations, coherence) groups its requests by COG and
runs one job per COG. Jobs run in threads (GDAL releases the GIL while it reads) and hold a
process-wide gate per host while they run, so parallel shards and parallel readers together
never have more than ``max_requests_per_host`` COGs in flight on one server.

What a reader does with an open dataset is its own (a windowed read, a warp); what fails is
returned per request as a :class:`CogError`, never raised, so one bad COG or window costs only
the samples that needed it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

import rasterio
from rasterio.errors import RasterioError

from pipeline.core.errors import PreflightError
from pipeline.io.cog import gdal_env
from pipeline.io.stac import BLOB_HOST_SUFFIX

__all__ = [
    "OPEN_ERRORS",
    "READ_ERRORS",
    "REMOTE_READ_THREADS",
    "CogError",
    "CogJob",
    "CogResult",
    "check_cog_opens",
    "default_read_threads",
    "host_gate",
    "run_cog_jobs",
]

REMOTE_READ_THREADS = 8
"""Read threads when COGs come over the network: each read mostly waits on round trips."""

OPEN_ERRORS: tuple[type[Exception], ...] = (RasterioError, OSError)
"""What opening a COG raises when the file is missing, unreachable or not a raster."""

READ_ERRORS: tuple[type[Exception], ...] = (RasterioError, OSError, ValueError)
"""What one read from an open COG raises when its bytes are bad or its window impossible."""

_Arg = TypeVar("_Arg")
_Value = TypeVar("_Value")


def default_read_threads(hrefs: Sequence[str]) -> int:
    """Threads for reading ``hrefs``: 8 if any is remote, else one per CPU core.

    Remote reads (http, https, s3, gs, /vsi*) mostly wait on round trips; local window reads
    are CPU-bound decoding (GDAL releases the GIL), so more threads than cores only contend.
    """
    remote = ("http://", "https://", "s3://", "gs://", "az://", "/vsicurl", "/vsis3", "/vsigs")
    if any(h.startswith(remote) for h in hrefs):
        return REMOTE_READ_THREADS
    return max(1, os.cpu_count() or 1)


_HOST_GATES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_HOST_GATES_LOCK = threading.Lock()


def host_gate(href: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore allowing ``limit`` jobs in flight to ``href``'s host.

    Gates are kept per (host, limit): every caller with the same limit shares one, and a
    caller with another limit (another run config in the same process) is not held to a gate
    sized for someone else.
    """
    key = (urlparse(href).netloc or "local", limit)
    with _HOST_GATES_LOCK:
        gate = _HOST_GATES.get(key)
        if gate is None:
            gate = _HOST_GATES[key] = threading.BoundedSemaphore(limit)
        return gate


@dataclass(frozen=True)
class CogError:
    """Why a COG gave one request nothing.

    Attributes:
        href: The COG.
        opening: True if the COG could not be opened (every request of the job has this
            error); False if only this request's read failed.
        error: What was raised.
    """

    href: str
    opening: bool
    error: Exception

    def __str__(self) -> str:
        return f"{self.href}: {self.error}"


@dataclass(frozen=True)
class CogJob(Generic[_Arg, _Value]):
    """One COG and what to read from it.

    Attributes:
        href: The COG.
        requests: For each key (a sample id), the argument of its read.
        read: Reads one request from the open dataset (a rasterio ``DatasetReader``).
    """

    href: str
    requests: Mapping[str, _Arg]
    read: Callable[[Any, _Arg], _Value]


@dataclass
class CogResult(Generic[_Value]):
    """What one :class:`CogJob` gave: a value or an error for each of its keys."""

    values: dict[str, _Value] = field(default_factory=dict)
    errors: dict[str, CogError] = field(default_factory=dict)


def _run(
    job: CogJob[_Arg, _Value], per_host: int, read_errors: tuple[type[Exception], ...]
) -> CogResult[_Value]:
    result: CogResult[_Value] = CogResult()
    try:
        with host_gate(job.href, per_host), gdal_env(), rasterio.open(job.href) as src:
            for key, arg in job.requests.items():
                try:
                    result.values[key] = job.read(src, arg)
                except read_errors as exc:
                    result.errors[key] = CogError(job.href, opening=False, error=exc)
    except OPEN_ERRORS as exc:
        failure = CogError(job.href, opening=True, error=exc)
        return CogResult(errors=dict.fromkeys(job.requests, failure))
    return result


def run_cog_jobs(
    jobs: Sequence[CogJob[_Arg, _Value]],
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
    read_errors: tuple[type[Exception], ...] = READ_ERRORS,
) -> list[CogResult[_Value]]:
    """Run every job, each COG opened once, jobs in a thread pool.

    Args:
        jobs: The COGs and their requests.
        threads: Parallel jobs; None: :func:`default_read_threads` of the jobs' hrefs.
        max_requests_per_host: Jobs in flight per host across every caller in the process
            (:func:`host_gate`).
        read_errors: What a read may raise that fails only its request; anything else is a
            bug and propagates.

    Returns:
        Each job's :class:`CogResult`, in the order of ``jobs``.
    """
    if threads is None:
        threads = default_read_threads([job.href for job in jobs])
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs) or 1))) as pool:
        futures = [pool.submit(_run, job, max_requests_per_host, read_errors) for job in jobs]
        return [future.result() for future in futures]


def check_cog_opens(href: str, *, field: str, signing_field: str, what: str) -> None:
    """Fail fast if a sampled item's COG cannot be opened, naming the field to change.

    Unreadable COGs fail every sample of a run one by one (``cog_open``, or a Sentinel-1
    ``read_error`` that leaves the run "ok"), so the preflight opens one of each collection.

    Args:
        href: The COG, as the (signed) item gives it.
        field: The field to blame in general (the collection).
        signing_field: The field to blame for an unsigned Azure Blob href: Planetary
            Computer's COGs need its SAS tokens.
        what: What the COG is, for the message (``a COG of sentinel-2-l2a``).

    Raises:
        PreflightError: if the COG does not open.
    """
    try:
        with gdal_env(), rasterio.open(href):
            return
    except OPEN_ERRORS as exc:
        url = urlparse(href)
        if url.netloc.endswith(BLOB_HOST_SUFFIX) and "sig=" not in url.query:
            raise PreflightError(
                signing_field,
                f"{what} is on Azure Blob Storage without a SAS token ({href}): set "
                f"{signing_field} to planetary-computer",
            ) from None
        raise PreflightError(
            field,
            f"cannot open {what} ({href}): {exc}; check that this host can reach it (for "
            "s3:// hrefs, the AWS_* credentials and AWS_REQUEST_PAYER)",
        ) from None
