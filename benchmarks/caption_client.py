"""CPU cost per caption request of the ``openai`` captioner client, against the openai SDK.

A caption server on a GPU answers ~20-50 captions/s; the client that feeds it must not be the
bottleneck. This measures the client process's CPU time (all threads) per request, for
everything the client does: rendering the prompt, base64-encoding a real 264 x 264 PNG chip,
JSON, HTTP and parsing the answer. The server is a separate process on 127.0.0.1 that returns a
canned chat completion at once, so only client work is counted. The baseline, measured in the
same run, is the official ``openai`` SDK (AsyncOpenAI) sending the same requests.

Run: ``.venv/bin/python -m benchmarks.caption_client [--requests 2000] [--concurrency 32]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

CANNED = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "The image is a satellite view of forest and fields with a lake.",
                },
            }
        ],
        "usage": {"prompt_tokens": 1426, "completion_tokens": 40, "total_tokens": 1466},
    }
).encode()


def _serve(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": CANNED})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _chip_png() -> bytes:
    import numpy as np

    from pipeline.stages.composite import render_rgb

    rng = np.random.default_rng(0)
    # A smooth field plus noise: a PNG of realistic size for a stretched 264 x 264 chip.
    base = np.linspace(300, 3000, 264 * 264).reshape(264, 264)
    cube = np.stack([base * f + rng.normal(0, 150, (264, 264)) for f in (0.8, 1.0, 1.1)])
    return render_rgb(np.clip(cube, 1, 10000).astype(np.uint16), ("B02", "B03", "B04"))


def _inputs(n: int) -> list[Any]:
    from tests.test_captioner import LAKE_TOWN, make_input

    png = _chip_png()
    return [dataclasses.replace(make_input(LAKE_TOWN, sid=f"s_{i}"), rgb_png=png) for i in range(n)]


def _ours(url: str, inputs: list[Any], concurrency: int) -> float:
    from pipeline.caption.backends.openai import OpenAICaptioner

    cap = OpenAICaptioner(url, "m", "grounded-v1", max_concurrency=concurrency)
    c0 = time.process_time()
    results = cap.caption_batch(inputs)
    cpu = time.process_time() - c0
    assert all(r.caption for r in results)
    return cpu


def _sdk(url: str, inputs: list[Any], concurrency: int) -> float:
    import openai

    from pipeline.caption.backends.model import png_data_url
    from pipeline.caption.prompts import load_prompt, prompt_facts

    prompt = load_prompt("grounded-v1")

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(x: Any) -> None:
            image = {"type": "image_url", "image_url": {"url": png_data_url(x.rgb_png)}}
            chat: Any = prompt.first_turn(prompt_facts(x), image)
            async with gate:
                out = await client.chat.completions.create(
                    model="m", messages=chat, max_tokens=128, temperature=0.0
                )
            assert out.choices[0].message.content

        await asyncio.gather(*(one(x) for x in inputs))
        await client.close()

    c0 = time.process_time()
    asyncio.run(run())
    return time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args(argv)
    from pipeline.demo.servers import free_port

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}/v1"
    import httpx

    for _ in range(100):
        try:
            httpx.post(url + "/chat/completions", content=b"{}", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    inputs = _inputs(args.requests)
    png_kb = len(inputs[0].rgb_png) / 1024
    _ours(url, inputs[:100], args.concurrency)  # warm-up: imports, connections
    _sdk(url, inputs[:100], args.concurrency)
    t0 = time.perf_counter()
    ours = _ours(url, inputs, args.concurrency)
    ours_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    sdk = _sdk(url, inputs, args.concurrency)
    sdk_wall = time.perf_counter() - t0
    server.terminate()
    n = args.requests
    result = {
        "requests": n,
        "concurrency": args.concurrency,
        "png_kb": round(png_kb, 1),
        "ours_cpu_ms_per_request": round(1000 * ours / n, 3),
        "ours_requests_per_cpu_second": round(n / ours, 1),
        "ours_wall_requests_per_s": round(n / ours_wall, 1),
        "sdk_cpu_ms_per_request": round(1000 * sdk / n, 3),
        "sdk_wall_requests_per_s": round(n / sdk_wall, 1),
        "sdk_over_ours_cpu": round(sdk / ours, 2),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
