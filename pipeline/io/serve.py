"""Serving an ASGI app (the STAC API, the review app) with uvicorn, on a known or free port."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_write

HOST = "127.0.0.1"
"""Every local server binds here: nothing eocap starts listens beyond the machine."""


def serve_app(app: Any, port: int, port_file: Path | None, host: str = HOST) -> None:
    """Serve an ASGI app with uvicorn on ``host:port``, writing the bound port to ``port_file``."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if port_file is not None:
        with atomic_write(port_file) as tmp:
            tmp.write_text(f"{sock.getsockname()[1]}\n")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
