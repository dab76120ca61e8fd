"""A fault-injecting HTTP proxy for tests: a real server on 127.0.0.1 in front of another.

It forwards every request to the upstream server, keeping the Host header so the upstream's
self-links point back at the proxy, and answers according to a fault plan: the first
``errors`` requests get HTTP 500, the next ``stalls`` requests hang for ``stall_s`` seconds
(longer than the client's timeout) before answering. Every request is counted, and so are the
most requests and the most distinct paths (files) it ever had in flight at once; each request
is held ``delay_s`` first, so that overlapping clients do overlap. Range requests pass through,
so GDAL reads COGs through it as it would from the server behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
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
    delay_s: float = 0.0
    seen: list[str] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: int = 0
    max_paths_in_flight: int = 0


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    app = FastAPI()
    lock = threading.Lock()
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=30)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST"])
    async def proxy(path: str, request: Request) -> Response:
        with lock:
            n = len(plan.seen)
            plan.seen.append(f"{request.method} /{path}")
            plan.in_flight[path] += 1
            plan.max_in_flight = max(plan.max_in_flight, plan.in_flight.total())
            plan.max_paths_in_flight = max(plan.max_paths_in_flight, len(+plan.in_flight))
        try:
            return await answer(n, path, request)
        finally:
            with lock:
                plan.in_flight[path] -= 1

    async def answer(n: int, path: str, request: Request) -> Response:
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if n < plan.errors:
            return Response(
                '{"code": "InternalError"}', status_code=500, media_type="application/json"
            )
        if n < plan.errors + plan.stalls:
            await asyncio.sleep(plan.stall_s)
        headers = {
            "host": request.headers["host"],
            "content-type": request.headers.get("content-type", "application/json"),
        }
        if "range" in request.headers:
            headers["range"] = request.headers["range"]
        upstream_resp = await client.request(
            request.method,
            "/" + path,
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
        passed = {"content-range", "accept-ranges"}
        if request.method == "HEAD":  # no body: the size is the upstream's, not ours (0)
            passed.add("content-length")
        return Response(
            upstream_resp.content,
            status_code=upstream_resp.status_code,
            media_type=upstream_resp.headers.get("content-type"),
            headers={k: v for k, v in upstream_resp.headers.items() if k.lower() in passed},
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
