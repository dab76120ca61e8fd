"""End to end: samples/s of ``eocap run`` with the template captioner, and peak RSS vs plan size.

The demo STAC API and COG server are started here with ``pipeline.demo.servers.serve_demo`` over the
demo region; every run writes to a fresh folder under ``/tmp``. Measured:

1. **Throughput**: ``eocap run CONFIG`` in a subprocess (the real CLI: preflight, Prefect flow
   with its temporary local server, ``runtime.workers = 2`` shards in parallel) for
   * ``demo``: the demo config (228 samples = 57 locations x 4 seasons, 4 shards), and
   * ``plan_1k``: the demo region at ``spacing_m = 860``, ``max_locations = 250``: 1,000 samples,
     16 shards.
   Reported: samples/s over the CLI's whole wall time and over the flow's own wall time
   (``report.json``, i.e. without Prefect's server start), the summed ``stage_seconds`` of the
   shards, and the CPU seconds per sample of every process involved (the CLI process tree, from
   ``wait4``, plus the STAC and file servers); with 2 cores, 2 / (CPU s per sample) is the
   throughput ceiling of this machine.
2. **Peak RSS vs plan size**, 1,000 vs 100,000 planned samples (``spacing_m = 80``,
   ``max_locations = 25000``: 25,000 locations x 4 seasons, 1,563 shards):
   * ``plan_only``: a child process runs ``plan_run`` (locations, streamed manifest, run.json);
   * ``plan_materialized``: ``plan_shards`` (all shards as lists of samples) + ``write_manifest``
     of that list, i.e. planning with every sample in memory (for comparison);
   * ``plan_and_build``: a child process plans, then builds the first ``--first-shards`` shards
     with ``pipeline.runner.build.build_shard`` (no Prefect);
   * ``cli``: ``eocap run`` (the Prefect flow) on the 100k plan, stopped (SIGTERM to its process
     group) once it has finished as many shards as the 1k run has (16), against the full 1k run.
   Peak RSS is the kernel's ``ru_maxrss`` of the child (``os.wait4``): the largest resident set
   of the child or of any descendant it waited for.
3. **Where the time goes**: the first ``--first-shards`` shards of the 1k plan built in this
   process one at a time, with CPU time per stage (this process, all threads) and the CPU the
   STAC and file servers spent in each stage; 2 / (CPU s per sample) is the 2-core ceiling.
   For the composite stage, ``render_rgb`` is timed against the same stretch saved with a
   cheaper PNG setting, on the chips of the first shard.

With ``--baseline-tree DIR`` (an older checkout, e.g. ``git archive 85e58ef pipeline flows
prompts | tar -x -C DIR``), the 1k plan is also run by that version's ``eocap run`` (same
servers, same machine, just before ours) and the ratios ours / baseline are reported.

Run: ``.venv/bin/python -m benchmarks.end_to_end [--first-shards 4] [--baseline-tree DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import (
    DEFAULT_DATA_DIR,
    REPO,
    demo_config,
    demo_region,
    emit,
    log,
    machine,
    proc_cpu_seconds,
)

PLANS: dict[str, dict[str, Any]] = {
    "demo": {},
    "plan_1k": {"region.spacing_m": 860.0, "region.max_locations": 250},
    "plan_100k": {"region.spacing_m": 80.0, "region.max_locations": 25_000},
}


def write_config(path: Path, updates: dict[str, Any]) -> Path:
    """Write the demo config with ``updates`` as YAML (what ``eocap run`` reads)."""
    config = demo_config(**updates)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


def _env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOCAP_")}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(prefect_home)
    env["PYTHONPATH"] = str(REPO)
    return env


def run_child(
    args: list[str],
    env: dict[str, str],
    *,
    stop_when: Any = None,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Run a command in its own process group; return wall, rusage and why it ended.

    Args:
        args: The command.
        env: Its environment.
        stop_when: Optional callable polled every 0.2 s; when it returns True the process group
            gets SIGTERM (the command's own children included), and SIGKILL 15 s later if it
            has not exited by then.
        timeout_s: Hard limit (SIGKILL of the group).
    """
    t0 = time.perf_counter()
    fd, name = tempfile.mkstemp(prefix="eocap-bench-", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    stopped = killed = False
    stop_at = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if not stopped and stop_when is not None and stop_when():
            stop_at = time.perf_counter() - t0
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            stopped = True
        late = stop_at is not None and time.perf_counter() - t0 > stop_at + 15.0
        if not killed and (late or time.perf_counter() - t0 > timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    tail = log_path.read_text(errors="replace")[-3000:]
    log_path.unlink()
    if proc.returncode != 0 and not stopped:
        raise RuntimeError(f"{args} failed with {proc.returncode}:\n{tail}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "returncode": proc.returncode,
        "stopped_early": stopped,
        "killed": killed,
        "stop_signal_at_s": None if stop_at is None else round(stop_at, 2),
        "exit_after_stop_signal_s": None if stop_at is None else round(wall - stop_at, 2),
        "log_tail": tail[-600:],
    }


def _stats_files(out_dir: Path) -> list[Path]:
    from pipeline.dataset.layout import DatasetLayout

    layout = DatasetLayout(out_dir)
    return [layout.stats_path(index) for index in sorted(layout.finished_shards())]


def _shard_summary(out_dir: Path) -> dict[str, Any]:
    stats = [json.loads(p.read_text()) for p in _stats_files(out_dir)]
    stages: dict[str, float] = {}
    for s in stats:
        for k, v in s["stage_seconds"].items():
            stages[k] = stages.get(k, 0.0) + v
    count = sum(s["count"] for s in stats)
    shard_seconds = sum(s["duration_s"] for s in stats)
    return {
        "shards_done": len(stats),
        "samples_done": count,
        "ok": sum(s["ok"] for s in stats),
        "failures_by_reason": _merge_counts([s["failures_by_reason"] for s in stats]),
        "shard_seconds": round(shard_seconds, 2),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "stage_ms_per_sample": {k: round(1000 * v / max(count, 1), 1) for k, v in stages.items()},
        "unaccounted_shard_s": round(shard_seconds - sum(stages.values()), 2),
        "bytes": sum(s["bytes"] for s in stats),
    }


def _merge_counts(items: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in items:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def cli_run(
    name: str,
    updates: dict[str, Any],
    work: Path,
    env: dict[str, str],
    server_pids: tuple[int, ...],
    stop_after_shards: int | None = None,
) -> dict[str, Any]:
    """``eocap run`` on one plan; with ``stop_after_shards`` it is stopped after that many."""
    out_dir = work / name
    cfg = write_config(work / f"{name}.yaml", {**updates, "output.dir": str(out_dir)})
    stop = None
    at_stop: dict[str, Any] = {}
    if stop_after_shards is not None:

        def stop() -> bool:
            files = _stats_files(out_dir)
            if len(files) < stop_after_shards:
                return False
            at_stop["samples"] = sum(json.loads(p.read_text())["count"] for p in files)
            return True

    s0 = sum(proc_cpu_seconds(p) for p in server_pids)
    log(f"eocap run {name}{'' if stop is None else f' (stop after {stop_after_shards} shards)'}")
    child = run_child([str(REPO / ".venv" / "bin" / "eocap"), "run", str(cfg)], env, stop_when=stop)
    server_cpu = sum(proc_cpu_seconds(p) for p in server_pids) - s0
    shards = _shard_summary(out_dir)
    res: dict[str, Any] = {"child": child, "server_cpu_s": round(server_cpu, 2), **shards}
    n = shards["samples_done"]
    res["samples_per_s_cli_wall"] = round(n / child["wall_s"], 2)
    if child["stopped_early"]:
        # The process exits some time after the signal: count the samples done at the signal.
        res["samples_at_stop_signal"] = at_stop["samples"]
        res["samples_per_s_until_stop_signal"] = round(
            at_stop["samples"] / child["stop_signal_at_s"], 2
        )
    from pipeline.dataset.layout import DatasetLayout

    report = DatasetLayout(out_dir).report
    if report.exists() and not child["stopped_early"]:
        flow_wall = json.loads(report.read_text())["wall_seconds"]
        res["flow_wall_s"] = flow_wall
        res["samples_per_s_flow_wall"] = round(n / flow_wall, 2)
    cpu = child["cpu_s"] + server_cpu
    res["cpu_s_per_sample_all_processes"] = round(cpu / max(n, 1), 4)
    res["ceiling_samples_per_s_on_2_cores"] = round(2 * n / cpu, 1) if cpu else None
    log(
        f"  {n} samples, {child['wall_s']} s wall, {res['samples_per_s_cli_wall']} samples/s "
        f"(flow: {res.get('samples_per_s_flow_wall')}), max RSS {child['max_rss_mb']} MB"
    )
    return res


def stage_cpu_profile(config: Any, n_shards: int, server_pids: tuple[int, ...]) -> dict[str, Any]:
    """Build the first shards in this process, one at a time, with CPU time per stage.

    ``pipeline.runner.build``'s stage timer is wrapped to also record this process's CPU time (all
    threads: one shard at a time, so it belongs to the stage), the CPU the STAC and file
    servers spent meanwhile, and how far this process's RSS rose above its level at the start
    of the stage (sampled every 10 ms; the largest rise over the shards).
    """
    import itertools
    import threading
    from contextlib import contextmanager

    import psutil

    from pipeline.runner import build as build
    from pipeline.runner.plan import plan_run

    cpu: dict[str, float] = {}
    srv: dict[str, float] = {}
    wall: dict[str, float] = {}
    rise: dict[str, float] = {}
    me = psutil.Process()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    original = build.StageTimer.stage

    @contextmanager
    def stage(self: Any, name: str) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        s0 = sum(proc_cpu_seconds(p) for p in server_pids)
        r0 = peak[0] = me.memory_info().rss
        with original(self, name):
            yield
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - w0
        srv[name] = srv.get(name, 0.0) + sum(proc_cpu_seconds(p) for p in server_pids) - s0
        top = max(peak[0], me.memory_info().rss)
        rise[name] = max(rise.get(name, 0.0), (top - r0) / 1e6)

    build.StageTimer.stage = stage  # type: ignore[method-assign]
    original_finish = build.finish_shard

    def finish(*a: Any, **kw: Any) -> Any:
        # finish_shard (write_table, stats) runs after the stage timer; it is the write stage.
        with stage(build.StageTimer(), "write"):
            return original_finish(*a, **kw)

    build.finish_shard = finish  # type: ignore[assignment]
    try:
        plan = plan_run(config)
        t0, c0 = time.perf_counter(), time.process_time()
        s0 = sum(proc_cpu_seconds(p) for p in server_pids)
        built = [
            build.build_shard(s, config, overture_root=plan.overture_root)
            for s in itertools.islice(plan.iter_pending(), n_shards)
        ]
        total_wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        total_srv = sum(proc_cpu_seconds(p) for p in server_pids) - s0
    finally:
        build.StageTimer.stage = original  # type: ignore[method-assign]
        build.finish_shard = original_finish  # type: ignore[assignment]
        done.set()
    n = sum(s.count for s in built)
    per = {
        k: {
            "wall_ms_per_sample": round(1000 * wall[k] / n, 1),
            "cpu_ms_per_sample": round(1000 * cpu[k] / n, 1),
            "server_cpu_ms_per_sample": round(1000 * srv[k] / n, 1),
            "max_rss_rise_mb": round(rise[k], 1),
        }
        for k in cpu
    }
    all_cpu = (total_cpu + total_srv) / n
    return {
        "shards": len(built),
        "samples": n,
        "one_shard_at_a_time_samples_per_s": round(n / total_wall, 2),
        "per_stage": per,
        "cpu_ms_per_sample_process": round(1000 * total_cpu / n, 1),
        "cpu_ms_per_sample_servers": round(1000 * total_srv / n, 1),
        "ceiling_samples_per_s_on_2_cores": round(2 / all_cpu, 1),
        "rss_after_mb": round(me.memory_info().rss / 1e6, 1),
    }


def composite_options(shard_path: Path, repeats: int = 3) -> dict[str, Any]:
    """CPU ms per chip of ``render_rgb`` as it is vs a faster PNG setting, on real chips.

    The chips are those of a shard just built; the alternative only changes zlib's effort
    (``compress_level=1`` instead of Pillow's default 6), so the image is the same.
    """
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from pipeline.dataset.reader import read_cubes
    from pipeline.geo.rgb import stretch_rgb
    from pipeline.stages.composite import render_rgb

    table = pq.read_table(shard_path, columns=["pixels", "bands", "status"])
    names = tuple(table.column("bands")[0].as_py())
    decoded = read_cubes(table)  # any shard schema version
    statuses = table.column("status").to_pylist()
    cubes = [decoded[i] for i in range(table.num_rows) if statuses[i] == "ok"]

    def png(cube: Any, level: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(stretch_rgb(cube, names), mode="RGB").save(
            buf, format="PNG", compress_level=level
        )
        return buf.getvalue()

    variants = {
        "render_rgb_as_is": lambda c: render_rgb(c, names),
        "stretch_only": lambda c: stretch_rgb(c, names).tobytes(),
        "png_compress_level_1": lambda c: png(c, 1),
    }
    out: dict[str, Any] = {"chips": len(cubes)}
    for name, fn in variants.items():
        c0 = time.process_time()
        for _ in range(repeats):
            sizes = [len(fn(c)) for c in cubes]
        ms = 1000 * (time.process_time() - c0) / (repeats * len(cubes))
        out[name] = {
            "cpu_ms_per_chip": round(ms, 2),
            "kb_per_chip": round(np.mean(sizes) / 1024, 1),
        }
    return out


# --------------------------------------------------------------------------------------------
# Child processes for the memory measurements


def child_main(mode: str, config_path: Path, first_shards: int, result_path: Path) -> None:
    """Plan (and build the first shards of) a run in this process; write timings as JSON.

    Modes: ``imports_only`` stops after loading the config and importing the pipeline (the
    floor every other mode starts from); ``plan_only`` is ``plan_run`` (locations, streamed
    manifest, run.json, Overture root); ``plan_materialized`` is ``plan_shards`` (every shard
    as a list of samples) + ``write_manifest`` of that list, the way planning worked before it
    was made lazy; ``plan_and_build`` is ``plan_run`` then ``build_shard`` on the first pending
    shards.
    """
    import itertools

    from pipeline.core.config import load_config
    from pipeline.dataset.layout import DatasetLayout
    from pipeline.runner.build import build_shard
    from pipeline.runner.plan import plan_run
    from pipeline.stages.sampling import plan_shards, write_manifest

    config = load_config(config_path, env={})
    out: dict[str, Any] = {}
    t1 = time.perf_counter()
    if mode == "imports_only":
        result_path.write_text(json.dumps(out))
        return
    if mode == "plan_materialized":
        shards = plan_shards(config)
        write_manifest(shards, DatasetLayout(config.output.dir).manifest)
        out["planned_samples"] = sum(len(s.samples) for s in shards)
        out["planned_shards"] = len(shards)
        out["plan_s"] = round(time.perf_counter() - t1, 2)
        result_path.write_text(json.dumps(out))
        return
    plan = plan_run(config)
    out["plan_s"] = round(time.perf_counter() - t1, 2)
    out["planned_samples"] = plan.n_samples
    out["planned_shards"] = plan.n_shards
    if mode == "plan_and_build":
        t1 = time.perf_counter()
        built = [
            build_shard(s, config, overture_root=plan.overture_root)
            for s in itertools.islice(plan.iter_pending(), first_shards)
        ]
        out["build_s"] = round(time.perf_counter() - t1, 2)
        out["built_samples"] = sum(s.count for s in built)
    result_path.write_text(json.dumps(out))


def memory_child(
    mode: str,
    name: str,
    updates: dict[str, Any],
    work: Path,
    env: dict[str, str],
    first_shards: int,
) -> dict[str, Any]:
    out_dir = work / f"{mode}-{name}"
    cfg = write_config(work / f"{mode}-{name}.yaml", {**updates, "output.dir": str(out_dir)})
    result = work / f"{mode}-{name}.json"
    args = [sys.executable, "-m", "benchmarks.end_to_end", "--child", mode, "--config", str(cfg)]
    args += ["--first-shards", str(first_shards), "--child-result", str(result)]
    child = run_child(args, env)
    inner = json.loads(result.read_text())
    log(f"  {mode} {name}: max RSS {child['max_rss_mb']} MB, {child['wall_s']} s, {inner}")
    return {"child": child, **inner}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-shards", type=int, default=4, help="shards built per plan")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/eocap-bench"))
    parser.add_argument("--skip-cli", action="store_true", help="no eocap run subprocesses")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="a checkout of an older eocap (pipeline/, flows/, prompts/): its `eocap run` of "
        "plan_1k runs first, via PYTHONPATH, as the same-run baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' output folders")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    parser.add_argument(
        "--child",
        choices=["imports_only", "plan_only", "plan_materialized", "plan_and_build"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.config, args.first_shards, args.child_result)
        return

    from pipeline.dataset.layout import DatasetLayout
    from pipeline.demo.region import load_items
    from pipeline.demo.servers import serve_demo

    region = demo_region(args.data_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="e2e-", dir=args.work_dir))
    env = _env(work / "prefect-home")
    result: dict[str, Any] = {
        "benchmark": "end_to_end",
        "machine": machine(),
        "work_dir": str(work),
    }
    with serve_demo(region.root, load_items(region)) as servers:
        pids = (servers.stac.process.pid, servers.files.process.pid)
        base = {"stac.api_url": servers.stac_url, "overture.source": str(region.overture_root)}
        plans = {k: {**base, **v} for k, v in PLANS.items()}
        memory: dict[str, Any] = {
            "imports_only": memory_child(
                "imports_only", "plan_1k", plans["plan_1k"], work, env, args.first_shards
            )
        }
        for mode in ("plan_only", "plan_materialized", "plan_and_build"):
            for name in ("plan_1k", "plan_100k"):
                memory[f"{mode}_{name}"] = memory_child(
                    mode, name, plans[name], work, env, args.first_shards
                )
        result["memory_library"] = memory
        log(f"stage CPU profile: first {args.first_shards} shards of plan_1k, one at a time")
        result["stage_cpu"] = stage_cpu_profile(
            demo_config(**plans["plan_1k"], **{"output.dir": str(work / "stage_cpu")}),
            args.first_shards,
            pids,
        )
        result["composite_options"] = composite_options(
            DatasetLayout(work / "stage_cpu").shard_path(0)
        )
        if not args.skip_cli:
            cli: dict[str, Any] = {}
            cli["demo"] = cli_run("demo", plans["demo"], work, env, pids)
            if args.baseline_tree is not None:
                old_env = {**env, "PYTHONPATH": str(args.baseline_tree.resolve())}
                # Its config must be valid for it: read_threads was an int (default 8).
                old_plan = {**plans["plan_1k"], "chips.read_threads": 8}
                cli["plan_1k_baseline"] = cli_run("plan_1k_baseline", old_plan, work, old_env, pids)
            cli["plan_1k"] = cli_run("plan_1k", plans["plan_1k"], work, env, pids)
            cli["plan_100k_first"] = cli_run(
                "plan_100k",
                plans["plan_100k"],
                work,
                env,
                pids,
                stop_after_shards=cli["plan_1k"]["shards_done"],
            )
            result["cli"] = cli
    rss = {k: v["child"]["max_rss_mb"] for k, v in result["memory_library"].items()}
    floor = rss["imports_only"]
    summary: dict[str, Any] = {
        "rss_mb": rss,
        "rss_above_imports_mb": {k: round(v - floor, 1) for k, v in rss.items()},
        "rss_ratio_100k_over_1k_plan_only": round(
            rss["plan_only_plan_100k"] / rss["plan_only_plan_1k"], 3
        ),
        "rss_ratio_100k_over_1k_plan_materialized": round(
            rss["plan_materialized_plan_100k"] / rss["plan_materialized_plan_1k"], 3
        ),
        "rss_ratio_100k_over_1k_plan_and_build": round(
            rss["plan_and_build_plan_100k"] / rss["plan_and_build_plan_1k"], 3
        ),
    }
    if "cli" in result and "plan_1k_baseline" in result["cli"]:
        c = result["cli"]
        for key in ("samples_per_s_flow_wall", "samples_per_s_cli_wall"):
            summary[f"plan_1k_{key}_ours_over_baseline"] = round(
                c["plan_1k"][key] / c["plan_1k_baseline"][key], 2
            )
        summary["plan_1k_cpu_per_sample_baseline_over_ours"] = round(
            c["plan_1k_baseline"]["cpu_s_per_sample_all_processes"]
            / c["plan_1k"]["cpu_s_per_sample_all_processes"],
            2,
        )
        summary["baseline_tree"] = str(args.baseline_tree)
    if "cli" in result:
        c = result["cli"]
        summary["rss_ratio_100k_over_1k_cli"] = round(
            c["plan_100k_first"]["child"]["max_rss_mb"] / c["plan_1k"]["child"]["max_rss_mb"], 3
        )
        summary["samples_per_s_demo_cli_wall"] = c["demo"]["samples_per_s_cli_wall"]
        summary["samples_per_s_demo_flow_wall"] = c["demo"].get("samples_per_s_flow_wall")
        summary["samples_per_s_1k_cli_wall"] = c["plan_1k"]["samples_per_s_cli_wall"]
        summary["samples_per_s_1k_flow_wall"] = c["plan_1k"].get("samples_per_s_flow_wall")
        summary["samples_per_s_100k_first_until_stop"] = c["plan_100k_first"].get(
            "samples_per_s_until_stop_signal"
        )
    summary["ceiling_samples_per_s_on_2_cores_from_stage_cpu"] = result["stage_cpu"][
        "ceiling_samples_per_s_on_2_cores"
    ]
    summary["targets"] = {"samples_per_s": 50, "rss_100k_within_of_1k": 1.10}
    result["summary"] = summary
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
