"""A fault-injecting HTTP proxy for tests: a real server on 127.0.0.1 in front of another.

It forwards every request to the upstream server, keeping the Host header so the upstream's
self-links point back at the proxy, and answers according to a fault plan: the first
``errors`` requests get HTTP 500, the next ``stalls`` requests hang for ``stall_s`` seconds
(longer than the client's timeout) before answering. Every request is counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

from pipeline.demo.servers import free_port


@dataclass
class FaultPlan:
    errors: int = 0
    stalls: int = 0
    stall_s: float = 3.0
    seen: list[str] = field(default_factory=list)


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    app = FastAPI()
    lock = threading.Lock()
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=30)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def proxy(path: str, request: Request) -> Response:
        with lock:
            n = len(plan.seen)
            plan.seen.append(f"{request.method} /{path}")
        if n < plan.errors:
            return Response(
                '{"code": "InternalError"}', status_code=500, media_type="application/json"
            )
        if n < plan.errors + plan.stalls:
            await asyncio.sleep(plan.stall_s)
        upstream_resp = await client.request(
            request.method,
            "/" + path,
            params=request.query_params,
            content=await request.body(),
            headers={
                "host": request.headers["host"],
                "content-type": request.headers.get("content-type", "application/json"),
            },
        )
        return Response(
            upstream_resp.content,
            status_code=upstream_resp.status_code,
            media_type=upstream_resp.headers.get("content-type"),
        )

    with serve_in_thread(app) as base:
        yield f"{base}/"


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve an ASGI app on a free 127.0.0.1 port in a daemon thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
