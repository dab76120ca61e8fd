"""Releases for the pull and verify tests: the real ``eocap release`` of a reviewed small dataset.

Also a Range-capable file server that records what a pull fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.release import ReleaseOptions, make_release
from pipeline.dataset.splits import SplitRule
from pipeline.io.serve import HOST

RULE = SplitRule((0.5, 0.25, 0.25), seed=2, cell_deg=0.01)
"""The small dataset has 4 locations: 0.01 degree cells and seed 2 give every split samples."""


def reviewed_copy(dataset: Path, root: Path, reviews: pa.Table | None = None) -> Path:
    """A copy of a built dataset with review results (``shards/_review/``); returns ``root``.

    Without ``reviews``, every third ok sample of the first shard is accepted and the second
    edited.
    """
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns("review", "_review"))
    layout = DatasetLayout(root)
    if reviews is None:
        ok = pq.read_table(layout.shard_path(0), columns=["sample_id", "status"])
        ids = [s for s, st in zip(*ok.to_pydict().values(), strict=True) if st == "ok"]
        status = [
            "edited" if i == 1 else "accepted" if i % 3 == 0 else None for i in range(len(ids))
        ]
        keep = [i for i, st in enumerate(status) if st]
        reviews = pa.table(
            {
                "sample_id": [ids[i] for i in keep],
                "review_status": [status[i] for i in keep],
                "edited_caption": [
                    "An edited caption." if status[i] == "edited" else None for i in keep
                ],
            }
        )
    layout.review_results_dir.mkdir(parents=True)
    pq.write_table(reviews, layout.review_results_path(0))
    return root


def build_release(dataset: Path, work: Path, release_dir: Path) -> Path:
    """The real ``eocap release`` of a reviewed copy of ``dataset`` (made in ``work``).

    Three samples per file and one per row group, so a filter selects parts of files.
    """
    options = ReleaseOptions(split_rule=RULE, samples_per_file=3, rows_per_group=1)
    make_release(reviewed_copy(dataset, work / "dataset"), release_dir, options)
    return release_dir


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
