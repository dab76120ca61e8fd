"""Chip extraction throughput: ``pipeline.stages.chips.read_chips`` against naive per-sample reads.

The chips are real: the first shards of the demo config (default 2 x 64 samples = 32 locations
x 4 seasons), their scenes chosen by the pipeline's own STAC search against the demo STAC API,
all 12 L2A bands + SCL at 264 x 264 px. Each variant cuts the same chips, from local COG files
and from the same COGs over HTTP (the demo file server on 127.0.0.1, HTTP Range requests):

* ``ours``: ``read_chips`` per shard, as ``build_shard`` calls it: every (scene, band) COG is
  opened once for all chips of the shard, the (scene, band) jobs run in a thread pool;
* ``naive_1t``: for every sample and every band, ``rasterio.open`` the COG, read the window
  (same resampling and output grid), close; one thread;
* ``naive_Nt``: the same per-sample opens, the (sample, band) reads spread over the same
  number of threads as ``ours`` (fair on parallelism: only the open-once design differs);
* local files only: ``ours_1t`` and ``ours_2t``, ``read_chips`` with 1 and 2 threads.

Both produce the same harmonised cubes and chip stats (checked: the arrays are identical).
GDAL's HTTP cache is cleared before every timed pass. Variants are interleaved and repeated
(``naive_1t``, a minute over HTTP, runs once); medians are reported. "Per core" is samples
per CPU-second of this process (all threads, ``time.process_time``); for HTTP the file
server's CPU (a separate process) is reported too, and a second per-core figure includes it.

Run: ``.venv/bin/python -m benchmarks.chips_io [--samples 128] [--threads 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from benchmarks._common import (
    DEFAULT_DATA_DIR,
    Timing,
    demo_config,
    demo_region,
    emit,
    localize_scene,
    log,
    machine,
    median,
    scene_choices,
    timed,
)


def _shards_of_requests(config: Any, n_samples: int) -> list[list[Any]]:
    """ChipRequests of the first shards of the plan, grouped by shard, ``n_samples`` in all."""
    from pipeline.stages.chips import ChipRequest
    from pipeline.stages.sampling import plan_shards

    shards = plan_shards(config)
    samples = [s for sh in shards for s in sh.samples][:n_samples]
    choices = scene_choices(config, samples)
    by_shard: dict[int, list[Any]] = {}
    for s in samples:
        c = choices.get(s.sample_id)
        if c is not None:
            by_shard.setdefault(s.shard, []).append(ChipRequest(s.sample_id, c.scene, c.grid))
    return [by_shard[k] for k in sorted(by_shard)]


def _localize(shards: list[list[Any]], base_url: str, root: Path) -> list[list[Any]]:
    from pipeline.stages.chips import ChipRequest

    cache: dict[str, Any] = {}
    out = []
    for reqs in shards:
        local = []
        for r in reqs:
            scene = cache.get(r.scene.item_id)
            if scene is None:
                scene = cache[r.scene.item_id] = localize_scene(r.scene, base_url, root)
            local.append(ChipRequest(r.sample_id, scene, r.grid))
        out.append(local)
    return out


def run_ours(shards: list[list[Any]], threads: int) -> dict[str, Any]:
    """``read_chips`` once per shard, as the pipeline does."""
    from pipeline.geo.bands import L2A_BANDS
    from pipeline.stages.chips import read_chips

    out: dict[str, Any] = {}
    for reqs in shards:
        out.update(read_chips(reqs, L2A_BANDS, threads=threads))
    return out


def _naive_band(req: Any, name: str) -> np.ndarray:
    """Open one band's COG for one sample, read its window, close."""
    from pipeline.io.cog import gdal_env
    from pipeline.stages.chips import _read_window

    href = req.scene.scl_href if name == "SCL" else req.scene.band_hrefs[name]
    rs = Resampling.nearest if name == "SCL" else Resampling.bilinear
    with gdal_env(), rasterio.open(href) as src:
        return _read_window(src, req.grid, rs)


def _naive_assemble(req: Any, arrays: dict[str, np.ndarray]) -> Any:
    from pipeline.geo.bands import L2A_BANDS
    from pipeline.geo.radiometry import check_pixels, harmonise
    from pipeline.stages.chips import Chip, chip_stats

    names = tuple(b.name for b in L2A_BANDS)
    cube = np.stack([arrays[n].astype(np.uint16) for n in names])
    scl = arrays["SCL"].astype(np.uint8)
    radiometry = check_pixels(cube, scl, names, req.scene.radiometry)
    cube = harmonise(cube, names, radiometry.offset_dn)
    return Chip(req.sample_id, cube, scl, chip_stats(cube, scl, names), radiometry, names)


def run_naive(shards: list[list[Any]], threads: int) -> dict[str, Any]:
    """Per sample, per band: open, read the window, close (``threads`` > 1: a thread pool)."""
    from pipeline.geo.bands import L2A_BANDS

    names = [b.name for b in L2A_BANDS] + ["SCL"]
    reqs = [r for shard in shards for r in shard]
    out: dict[str, Any] = {}
    if threads <= 1:
        for r in reqs:
            out[r.sample_id] = _naive_assemble(r, {n: _naive_band(r, n) for n in names})
        return out
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futs = {(r.sample_id, n): pool.submit(_naive_band, r, n) for r in reqs for n in names}
        for r in reqs:
            arrays = {n: futs[(r.sample_id, n)].result() for n in names}
            out[r.sample_id] = _naive_assemble(r, arrays)
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    from pipeline.stages.chips import Chip

    if a.keys() != b.keys():
        return False
    for sid, x in a.items():
        y = b[sid]
        if isinstance(x, Chip) != isinstance(y, Chip):
            return False
        if isinstance(x, Chip) and (
            not np.array_equal(x.pixels, y.pixels) or not np.array_equal(x.scl, y.scl)
        ):
            return False
    return True


def _summary(n: int, runs: list[Timing], with_server: bool) -> dict[str, Any]:
    wall = median([t.wall_s for t in runs])
    cpu = median([t.cpu_s for t in runs])
    out = {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "samples_per_s": round(n / wall, 2),
        "samples_per_cpu_s": round(n / cpu, 2),
        "cpu_utilisation_cores": round(cpu / wall, 2),
        "runs_wall_s": [round(t.wall_s, 3) for t in runs],
    }
    if with_server:
        srv = median([t.server_cpu_s for t in runs])
        out["server_cpu_s"] = round(srv, 3)
        out["samples_per_cpu_s_incl_server"] = round(n / (cpu + srv), 2)
    return out


def bench_source(
    label: str,
    shards: list[list[Any]],
    threads: int,
    repeats: int,
    server_pids: tuple[int, ...],
    thread_sweep: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Time ``ours``, ``naive_1t`` and ``naive_Nt`` on the same chips, interleaved.

    ``thread_sweep`` adds ``ours`` with those thread counts (``ours_1t``...), to show scaling.
    """
    from pipeline.io.cog import clear_http_cache
    from pipeline.stages.chips import Chip

    n = sum(len(s) for s in shards)
    variants = {
        "ours": lambda: run_ours(shards, threads),
        "naive_1t": lambda: run_naive(shards, 1),
        f"naive_{threads}t": lambda: run_naive(shards, threads),
    }
    for k in thread_sweep:
        variants[f"ours_{k}t"] = lambda k=k: run_ours(shards, k)
    clear_http_cache()
    reference = run_ours(shards, threads)  # warm-up (page cache, imports) and the reference
    ok = sum(isinstance(c, Chip) for c in reference.values())
    identical = True
    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    for rep in range(repeats):
        for name, fn in variants.items():
            if name == "naive_1t" and rep > 0:
                continue  # the slowest variant (a minute over HTTP) runs once
            clear_http_cache()
            with timed(server_pids) as t:
                got = fn()
            runs[name].append(t)
            identical = identical and _same(reference, got)
            log(
                f"{label} rep {rep + 1}/{repeats} {name}: {t.wall_s:.2f} s wall, "
                f"{t.cpu_s:.2f} s CPU ({n / t.wall_s:.1f} samples/s)"
            )
    res: dict[str, Any] = {
        "samples": n,
        "ok_chips": ok,
        "identical_output": identical,
        "variants": {k: _summary(n, v, bool(server_pids)) for k, v in runs.items()},
    }
    ours = res["variants"]["ours"]
    for k in variants:
        if k == "ours":
            continue
        base = res["variants"][k]
        ratio = {
            "wall": round(ours["samples_per_s"] / base["samples_per_s"], 2),
            "per_cpu": round(ours["samples_per_cpu_s"] / base["samples_per_cpu_s"], 2),
        }
        if server_pids:
            ratio["per_cpu_incl_server"] = round(
                ours["samples_per_cpu_s_incl_server"] / base["samples_per_cpu_s_incl_server"], 2
            )
        res[f"ours_over_{k}"] = ratio
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=128, help="demo samples (64 per shard)")
    parser.add_argument("--threads", type=int, default=8, help="read threads (config default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--skip-http", action="store_true", help="local files only")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    from pipeline.demo.region import load_items
    from pipeline.demo.servers import serve_demo

    region = demo_region(args.data_dir)
    result: dict[str, Any] = {
        "benchmark": "chips_io",
        "machine": machine(),
        "params": {
            "samples": args.samples,
            "threads": args.threads,
            "repeats": args.repeats,
            "bands": "12 L2A bands + SCL",
            "chip_px": 264,
        },
    }
    with serve_demo(region.root, load_items(region)) as servers:
        config = demo_config(**{"stac.api_url": servers.stac_url})
        shards = _shards_of_requests(config, args.samples)
        n = sum(len(s) for s in shards)
        scenes = {r.scene.item_id for s in shards for r in s}
        log(f"{n} chips in {len(shards)} shards from {len(scenes)} scenes")
        result["params"].update(
            {
                "chips": n,
                "shards": len(shards),
                "scenes": len(scenes),
                "cog_opens_ours": sum(
                    13 * len({r.scene.item_id for r in shard}) for shard in shards
                ),
                "cog_opens_naive": 13 * n,
            }
        )
        local = _localize(shards, servers.files.url, region.root)
        result["local"] = bench_source(
            "local", local, args.threads, args.repeats, (), thread_sweep=(1, 2)
        )
        if not args.skip_http:
            pid = servers.files.process.pid
            result["http"] = bench_source("http", shards, args.threads, args.repeats, (pid,))
    result["per_core_definition"] = (
        "samples per CPU-second of the benchmark process (all threads, time.process_time); "
        "_incl_server adds the CPU of the HTTP file server process"
    )
    result["cores_available"] = os.cpu_count()
    emit(result, args.out)


if __name__ == "__main__":
    main()
