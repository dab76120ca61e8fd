"""A tiny release in the layout of docs/release.md, built from a small dataset's shards.

Stands in for ``eocap release`` (pipeline/dataset/release.py) in the pull and verify tests
until that lands; :func:`make_release` is the one function to swap for the real
``build_release``. Simplified where the pull does not care: the split goes by location in turns
(not by a seeded hash of the 0.1 degree cell, which the small test region does not span),
every third
sample is marked reviewed, and the card, collection and stats are small but well-formed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.pull import (
    INDEX_FILE,
    RELEASE_JSON,
    row_group_ranges,
    write_sha256sums,
)
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.writer import write_table
from pipeline.io.serve import HOST

SPLITS = ("train", "validation", "test")
SAMPLES_PER_FILE = 3
ROW_GROUP_MB = 2.0
"""One 12-band 264 px sample per row group (pipeline.dataset.writer's size estimate)."""

INDEX_COLUMNS = (
    "sample_id",
    "split",
    "geometry",
    "bbox",
    "lon",
    "lat",
    "datetime",
    "period",
    "cloud_fraction",
    "classes",
    "caption_flags",
    "review_status",
)


def _splits(location_ids: list[str]) -> list[str]:
    """Each sample's split: locations in sorted order go train, train, validation, test, ...

    (All three splits, and a location's periods in one, even in a region of 4 locations.)
    """
    cycle = ("train", "train", "validation", "test")
    split_of = {loc: cycle[i % len(cycle)] for i, loc in enumerate(sorted(set(location_ids)))}
    return [split_of[loc] for loc in location_ids]


def _ok_rows(shards_dir: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in sorted(shards_dir.glob("*.parquet"))]
    table = pa.concat_tables(tables)
    table = table.filter(pc.equal(table.column("status"), "ok"))
    reviewed = ["approved" if i % 3 == 0 else None for i in range(table.num_rows)]
    return table.append_column("review_status", pa.array(reviewed, pa.string()))


def _index_rows(table: pa.Table, split: str, root: Path, name: str) -> pa.Table:
    """The index rows of the data file ``name``, byte ranges and hashes read back from it."""
    path = root / name
    metadata = pq.read_metadata(path)
    ranges = row_group_ranges(metadata)
    with path.open("rb") as f:
        hashes = []
        for offset, length in ranges:
            f.seek(offset)
            hashes.append(hashlib.sha256(f.read(length)).hexdigest())
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    groups = [g for g, n in enumerate(sizes) for _ in range(n)]
    columns = {
        "sample_id": table.column("sample_id"),
        "split": pa.array([split] * table.num_rows, pa.string()),
        "file": pa.array([name] * table.num_rows, pa.string()),
        "row_group": pa.array(groups, pa.int32()),
        "row_in_group": pa.array([i for n in sizes for i in range(n)], pa.int32()),
        "byte_offset": pa.array([ranges[g][0] for g in groups], pa.int64()),
        "byte_length": pa.array([ranges[g][1] for g in groups], pa.int64()),
        "range_sha256": pa.array([hashes[g] for g in groups], pa.string()),
    }
    columns.update({c: table.column(c) for c in INDEX_COLUMNS if c not in columns})
    return pa.table(columns)


def _band_stats(table: pa.Table) -> dict[str, object]:
    cubes = read_cubes(table).astype(np.float64)
    bands = table.column("bands")[0].as_py()
    stats = {}
    for b, band in enumerate(bands):
        valid = cubes[:, b][cubes[:, b] != 0]
        p1, p2, p50, p98, p99 = (float(v) for v in np.percentile(valid, [1, 2, 50, 98, 99]))
        stats[band] = {
            "mean": float(valid.mean()),
            "std": float(valid.std()),
            "p1": p1,
            "p2": p2,
            "p50": p50,
            "p98": p98,
            "p99": p99,
            "valid_pixels": int(valid.size),
        }
    return {
        "bands": stats,
        "split": "train",
        "unit": "reflectance x 10000 (offset removed)",
        "valid": "pixel != 0",
    }


def make_release(shards_dir: Path, root: Path) -> Path:
    """Write a release of the ok samples in ``shards_dir`` to ``root``; return ``root``."""
    table = _ok_rows(shards_dir)
    splits = _splits(table.column("location_id").to_pylist())
    indexes = []
    names = []
    counts = {}
    for split in SPLITS:
        rows = table.filter(pa.array([s == split for s in splits]))
        counts[split] = rows.num_rows
        n_files = -(-rows.num_rows // SAMPLES_PER_FILE)
        for k in range(n_files):
            part = rows.slice(k * SAMPLES_PER_FILE, SAMPLES_PER_FILE)
            name = f"data/{split}-{k:05d}-of-{n_files:05d}.parquet"
            write_table(part, root / name, row_group_mb=ROW_GROUP_MB)
            indexes.append(_index_rows(part, split, root, name))
            names.append(name)
    index = pa.concat_tables(indexes)
    index = index.replace_schema_metadata({b"geo": geo_metadata(index, ["Polygon"])})
    pq.write_table(index, root / INDEX_FILE, compression="zstd")
    train = table.filter(pa.array([s == "train" for s in splits]))
    (root / "band_stats.json").write_text(json.dumps(_band_stats(train), indent=2) + "\n")
    (root / "README.md").write_text(
        "---\nlicense: cc-by-4.0\nconfigs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: data/{s}-*.parquet\n" for s in SPLITS)
        + "---\n# eocap test release\n"
    )
    (root / "collection.json").write_text(
        json.dumps({"type": "Collection", "id": "eocap-test", "stac_version": "1.1.0"}) + "\n"
    )
    release = {"eocap_version": "test", "split_seed": 0, "counts": counts}
    (root / RELEASE_JSON).write_text(json.dumps(release, indent=2) + "\n")
    write_sha256sums(
        root,
        [*names, INDEX_FILE, "band_stats.json", "README.md", "collection.json", RELEASE_JSON],
    )
    return root


@dataclass
class RecordingServer:
    """A Range-capable static file server (Starlette) on 127.0.0.1 that records requests.

    Runs in a thread of the test process so a test can count what a pull fetched and hold
    requests for some paths (``hold``) until ``release`` is set: a pull in a child process
    can then be killed at a known point.

    Attributes:
        url: Base URL ending in ``/``.
        requests: (path, Range header or ``""``) of every request, in arrival order.
        hold: Paths whose requests wait until ``release`` is set.
        release: Lets held requests through.
        failures: The next this many requests are answered 503 (a flaky server).
    """

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    hold: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    failures: int = 0

    def fetched(self, path: str) -> list[str]:
        """The Range headers of the requests for ``path`` (``""``: the whole file)."""
        return [r for p, r in self.requests if p == path]


@contextlib.contextmanager
def recording_server(root: Path) -> Iterator[RecordingServer]:
    """Serve ``root`` with :class:`RecordingServer`; stopped on exit."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    # The app of pipeline.demo.servers' file server (a Starlette app answers 404s itself).
    static = Starlette(routes=[Mount("/", app=StaticFiles(directory=root))])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    recorder = RecordingServer(url=f"http://{HOST}:{sock.getsockname()[1]}/")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"].lstrip("/")
            headers = dict(scope["headers"])
            recorder.requests.append((path, headers.get(b"range", b"").decode()))
            while path in recorder.hold and not recorder.release.is_set():
                await asyncio.sleep(0.05)
            if recorder.failures > 0:
                recorder.failures -= 1
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"busy"})
                return
        await static(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield recorder
    finally:
        recorder.release.set()
        server.should_exit = True
        thread.join(timeout=10)
