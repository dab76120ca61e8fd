"""Read jobs over COGs: one open per COG, errors per request, the per-host gate."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.io.cog_reads import (
    REMOTE_READ_THREADS,
    CogJob,
    default_read_threads,
    host_gate,
    run_cog_jobs,
)


def write_tif(path: Path, value: int) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint16",
        crs="EPSG:32632",
        transform=from_origin(600000, 5200000, 10, 10),
    ) as dst:
        dst.write(np.full((1, 8, 8), value, np.uint16))
    return str(path)


def corner(src: Any, offset: int) -> int:
    """The top-left pixel plus ``offset``; a negative offset is a bad request."""
    if offset < 0:
        raise ValueError(f"offset {offset} is negative")
    return int(src.read(1)[0, 0]) + offset


def test_each_request_gets_its_value_or_its_own_error_in_job_order(tmp_path):
    a, b = write_tif(tmp_path / "a.tif", 10), write_tif(tmp_path / "b.tif", 20)
    missing = str(tmp_path / "missing.tif")
    jobs = [
        CogJob(a, {"s1": 1, "s2": -1}, corner),
        CogJob(missing, {"s1": 1, "s3": 2}, corner),
        CogJob(b, {"s3": 5}, corner),
    ]
    first, gone, second = run_cog_jobs(jobs, threads=2)
    assert first.values == {"s1": 11} and set(first.errors) == {"s2"}
    assert not first.errors["s2"].opening and "negative" in str(first.errors["s2"])
    # A COG that will not open fails every request of its job, and says which file.
    assert gone.values == {} and set(gone.errors) == {"s1", "s3"}
    assert all(e.opening and missing in str(e) for e in gone.errors.values())
    assert second.values == {"s3": 25} and not second.errors


def test_an_error_outside_the_read_errors_is_a_bug_and_propagates(tmp_path):
    a = write_tif(tmp_path / "a.tif", 10)

    def broken(src: Any, arg: int) -> int:
        raise KeyError(arg)

    with pytest.raises(KeyError):
        run_cog_jobs([CogJob(a, {"s": 1}, broken)])


@pytest.mark.parametrize("limit", [1, 2])
def test_jobs_in_flight_on_one_host_never_exceed_the_limit(tmp_path, limit):
    hrefs = [write_tif(tmp_path / f"{i}.tif", i) for i in range(6)]
    lock = threading.Lock()
    in_flight, most = 0, 0

    def slow(src: Any, arg: int) -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return arg

    jobs = [CogJob(h, {"s": 0}, slow) for h in hrefs]
    run_cog_jobs(jobs, threads=6, max_requests_per_host=limit)
    assert most == limit


def test_gates_are_shared_per_host_and_limit():
    assert host_gate("https://a.example/x.tif", 3) is host_gate("https://a.example/y.tif", 3)
    assert host_gate("https://a.example/x.tif", 3) is not host_gate("https://b.example/x.tif", 3)
    # Another run config in the same process is not held to a gate sized for this one.
    assert host_gate("https://a.example/x.tif", 3) is not host_gate("https://a.example/x.tif", 5)


def test_default_read_threads_follow_the_href_scheme():
    local = ["/data/B02.tif", "file:///data/B03.tif"]
    assert default_read_threads(local) == os.cpu_count()
    assert default_read_threads([*local, "https://host/B04.tif"]) == REMOTE_READ_THREADS
    assert default_read_threads(["s3://bucket/B04.tif"]) == REMOTE_READ_THREADS
