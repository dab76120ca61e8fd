"""`eocap serve-demo` stopped by SIGINT, SIGTERM or SIGHUP leaves no server and no bound port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.demo.region import ensure_demo_region


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo region `eocap serve-demo` serves, generated once for the module."""
    folder = tmp_path_factory.mktemp("demo") / "demo-data"
    ensure_demo_region(folder)
    return folder


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has stopped: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _bound(port: int) -> bool:
    """Whether something on 127.0.0.1 still holds ``port``."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.fixture
def serving(demo_dir: Path) -> Iterator[tuple[subprocess.Popen[str], list[int], set[int]]]:
    """`eocap serve-demo` on free ports, once both servers answer: (process, ports, children)."""
    ports_args = ["--stac-port", "0", "--files-port", "0"]  # any free ports
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve-demo", "--data-dir", str(demo_dir), *ports_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        # Started as a shell's background job is: with SIGINT ignored, which Python keeps.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    children: set[int] = set()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]  # printed once both answer
        ports = [int(m) for m in re.findall(r"http://127\.0\.0\.1:(\d+)/", "".join(lines))]
        assert len(ports) == 2, lines
        children = _children(proc.pid)
        assert len(children) == 2 and all(_bound(port) for port in ports)
        yield proc, ports, children
    finally:
        # On failure, leave nothing behind for the next test.
        for pid in [proc.pid, *children]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_stops_both_servers_and_frees_their_ports(serving, signum: int) -> None:
    proc, ports, children = serving
    stac, files = ports
    assert httpx.get(f"http://127.0.0.1:{stac}/collections", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{files}/", timeout=10).status_code < 500
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    # The CLI stops and waits for its servers before it exits: none is left, no port held.
    assert not [pid for pid in children if _running(pid)]
    assert not [port for port in ports if _bound(port)]
    assert code == 0  # stopping is how a server ends
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
