"""Real local servers for the demo and the tests: a STAC API and a COG file server.

Both run as child processes bound to 127.0.0.1 so the pipeline talks to them over HTTP exactly
as it talks to Earth Search and S3 in production:

* the STAC API is stac-fastapi-geoparquet over stac-geoparquet files (one per collection), its
  DuckDB loading the spatial/icu/parquet extensions shipped in pip wheels (never downloading);
* the file server is Starlette's ``StaticFiles``, which answers HTTP Range requests (GDAL's
  ``/vsicurl/`` needs them; ``python -m http.server`` ignores them).

Run one by hand with ``python -m pipeline.demo.servers stac --items items.json --port 8765`` or
``python -m pipeline.demo.servers files --root demo-data --port 8766`` (port 0: any free port).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.io.serve import HOST, serve_app

__all__ = [
    "DemoServers",
    "ServerHandle",
    "absolutize_items",
    "free_port",
    "serve_demo",
    "spawn_server",
    "start_file_server",
    "start_stac_server",
    "start_transformers_server",
    "stop_process",
]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Terminate a server process and wait for it; kill it if it is still there after the wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ServerHandle:
    """A running child-process server.

    Attributes:
        url: Base URL ending in ``/``.
        process: The child process.
        log_path: Where the server's stdout and stderr go.
    """

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Terminate the server and wait for it (kill after 5 s)."""
        stop_process(self.process)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_server(
    args: list[str],
    port: int | None,
    ready_path: str,
    log_dir: Path,
    *,
    module: str = "pipeline.demo.servers",
) -> ServerHandle:
    """Start ``python -m MODULE ARGS --port P --port-file F`` and wait until it answers.

    Args:
        args: The server's arguments (its kind first).
        port: Port to bind; None or 0 for any free port.
        ready_path: Path under the base URL that answers (< 500) once the server is up.
        log_dir: Where the port file and the server's log go.
        module: A module whose ``__main__`` serves with :func:`serve_app`.

    Raises:
        RuntimeError: if the server exits or is not ready within 60 s.
    """
    # The child binds the port itself (port 0 = any free port) and writes the bound port to a
    # file: choosing a free port here and binding it there would race with other processes.
    log_dir.mkdir(parents=True, exist_ok=True)
    port_file = Path(tempfile.mkstemp(prefix="eocap-port-", dir=log_dir)[1])
    port_file.unlink()
    log_path = port_file.with_suffix(".log")
    log = log_path.open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            *args,
            "--port",
            str(port or 0),
            "--port-file",
            str(port_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    with _stopped_unless_ready(proc):
        deadline = time.monotonic() + 60
        url = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server {args[0]} exited with {proc.returncode}: "
                    f"{log_path.read_text()[-2000:]}"
                )
            if not url and port_file.exists() and port_file.read_text().endswith("\n"):
                url = f"http://{HOST}:{int(port_file.read_text())}/"
            if url:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + ready_path, timeout=2).status_code < 500:
                        port_file.unlink()
                        return ServerHandle(url=url, process=proc, log_path=log_path)
            time.sleep(0.1)
        raise RuntimeError(f"server {args[0]} did not become ready in 60 s: {log_path}")


@contextlib.contextmanager
def _stopped_unless_ready(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Stop a server that is still starting when the block fails or is interrupted (a signal)."""
    try:
        yield
    except BaseException:
        stop_process(process)
        raise


def absolutize_items(items: list[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """Return copies of ``items`` whose relative asset hrefs are made absolute on ``base_url``."""
    base = base_url.rstrip("/") + "/"
    out = []
    for item in items:
        item = json.loads(json.dumps(item))
        for asset in item.get("assets", {}).values():
            href = asset["href"]
            if "://" not in href and not href.startswith("/"):
                asset["href"] = base + href
        out.append(item)
    return out


def start_stac_server(
    items: list[dict[str, Any]], *, port: int | None = None, log_dir: Path | None = None
) -> ServerHandle:
    """Serve ``items`` (absolute hrefs) through a real STAC API on 127.0.0.1.

    Args:
        items: STAC item dicts; collections are generated from their ``collection`` field.
        port: Port to bind; a free one when ``None``.
        log_dir: Folder for the server log and its stac-geoparquet file; a temp dir by default.

    Returns:
        The running server; stop it with ``stop()`` or use it as a context manager.
    """
    tmp = tempfile.TemporaryDirectory(prefix="eocap-stac-")
    folder = Path(tmp.name) if log_dir is None else log_dir
    items_path = Path(tmp.name) / "items.json"
    items_path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    handle = spawn_server(["stac", "--items", str(items_path)], port, "collections", folder)
    handle._tmp = tmp
    return handle


def start_file_server(
    root: Path, *, port: int | None = None, log_dir: Path | None = None
) -> ServerHandle:
    """Serve the files under ``root`` over HTTP with Range support on 127.0.0.1."""
    folder = log_dir or Path(tempfile.gettempdir())
    return spawn_server(["files", "--root", str(Path(root).resolve())], port, "", folder)


def start_transformers_server(
    model_dir: Path, *, port: int | None = None, log_dir: Path | None = None
) -> ServerHandle:
    """Serve a local model folder with ``transformers serve`` (OpenAI-compatible) on 127.0.0.1.

    The same wire protocol as ``vllm serve``: the ``openai`` captioner backend talks to either.
    The handle's ``url`` is the API root ending in ``/v1/``.
    """
    folder = log_dir or Path(tempfile.mkdtemp(prefix="eocap-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    # transformers serve cannot report a port it chose itself, so pick one just before.
    port = port or free_port()
    log_path = folder / f"transformers-serve-{port}.log"
    cache = folder / "hf-cache"
    cache.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), PYTHONUNBUFFERED="1")
    exe = Path(sys.executable).with_name("transformers")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                str(model_dir),
                "--host",
                HOST,
                "--port",
                str(port),
                "--device",
                "cpu",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    root = f"http://{HOST}:{port}/"
    with _stopped_unless_ready(proc):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(root + "health", timeout=2).status_code == 200:
                    return ServerHandle(url=root + "v1/", process=proc, log_path=log_path)
            time.sleep(0.2)
        raise RuntimeError(f"transformers serve did not become ready in 120 s: {log_path}")


@dataclass
class DemoServers:
    """The demo's STAC API and COG server, started together."""

    stac: ServerHandle
    files: ServerHandle

    @property
    def stac_url(self) -> str:
        """Root URL of the STAC API."""
        return self.stac.url

    def stop(self) -> None:
        """Stop both servers."""
        self.stac.stop()
        self.files.stop()


@contextlib.contextmanager
def serve_demo(
    root: Path,
    items: list[dict[str, Any]],
    *,
    stac_port: int | None = None,
    files_port: int | None = None,
) -> Iterator[DemoServers]:
    """Serve a generated region: COGs under ``root`` and its items with absolute hrefs.

    Args:
        root: Folder that item hrefs are relative to.
        items: STAC items with hrefs relative to ``root``.
        stac_port: Port of the STAC API (free one if ``None``).
        files_port: Port of the file server (free one if ``None``).
    """
    files = start_file_server(root, port=files_port)
    try:
        stac = start_stac_server(absolutize_items(items, files.url), port=stac_port)
    except BaseException:
        files.stop()
        raise
    servers = DemoServers(stac=stac, files=files)
    try:
        yield servers
    finally:
        servers.stop()


# ---------------------------------------------------------------------------------------------
# The server processes themselves.


def _duckdb_extension_dir() -> Path:
    """Lay out the wheel-shipped DuckDB extensions the way DuckDB looks for them."""
    import duckdb
    import duckdb_extension_icu
    import duckdb_extension_parquet
    import duckdb_extension_spatial

    version = f"v{duckdb.__version__}"
    root = Path(tempfile.mkdtemp(prefix="eocap-duckdb-ext-"))
    target = root / version / "linux_amd64"
    target.mkdir(parents=True)
    for module in (duckdb_extension_spatial, duckdb_extension_icu, duckdb_extension_parquet):
        src_dir = Path(str(module.__file__)).parent / "extensions" / version
        for ext in src_dir.glob("*.duckdb_extension"):
            (target / ext.name).symlink_to(ext)
    return root


class _OneQueryAtATime:
    """rustac's DuckdbClient, entered by one thread at a time.

    Two concurrent searches can deadlock it: one thread holds the client's Rust lock while it
    calls back into Python (logging) and waits for the GIL, the other holds the GIL while it
    waits for the Rust lock. A Python lock taken before entering the client (waiting on it
    releases the GIL) makes that impossible; seen as 30 s read timeouts on /search.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def _run_stac(items_json: Path, port: int, port_file: Path | None) -> None:
    import rustac
    from stac_fastapi.geoparquet.api import collections_from_geoparquet_href, create
    from stac_fastapi.geoparquet.settings import Settings

    items = json.loads(items_json.read_text())["features"]
    client: Any = _OneQueryAtATime(
        rustac.DuckdbClient(
            extension_directory=_duckdb_extension_dir(),
            install_extensions=False,
            extensions=["spatial", "icu"],
        )
    )
    # One stac-geoparquet file per collection: the server searches a collection by querying
    # its file whole, so one file of Sentinel-2 and Sentinel-1 items would answer a search of
    # either collection with both.
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_collection.setdefault(str(item["collection"]), []).append(item)
    collections = []
    for name, collection_items in sorted(by_collection.items()):
        parquet = items_json.with_name(f"{items_json.stem}-{name}.parquet").absolute()
        rustac.write_sync(str(parquet), collection_items)
        collections += collections_from_geoparquet_href(str(parquet), client)
    collections_json = items_json.with_name("collections.json").absolute()
    collections_json.write_text(json.dumps(collections))
    settings = Settings(stac_fastapi_collections_href=str(collections_json))
    serve_app(create(settings=settings, duckdb_client=client).app, port, port_file)


def _run_files(root: Path, port: int, port_file: Path | None) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    app = Starlette(routes=[Mount("/", app=StaticFiles(directory=root, html=False))])
    serve_app(app, port, port_file)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the server child processes."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.servers", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    stac = sub.add_parser("stac", help="serve STAC items (GeoJSON FeatureCollection)")
    stac.add_argument("--items", type=Path, required=True)
    stac.add_argument("--port", type=int, default=0, help="0: any free port")
    stac.add_argument("--port-file", type=Path, help="write the bound port here")
    files = sub.add_parser("files", help="serve a folder with HTTP Range support")
    files.add_argument("--root", type=Path, required=True)
    files.add_argument("--port", type=int, default=0, help="0: any free port")
    files.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args(argv)
    if args.kind == "stac":
        _run_stac(args.items, args.port, args.port_file)
    else:
        _run_files(args.root, args.port, args.port_file)


if __name__ == "__main__":
    main()
