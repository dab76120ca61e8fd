"""Shared helpers of the pipeline benchmarks: demo region, scene choices, machine info, output.

Every benchmark uses the project's own demo region (``pipeline.demo.region``, reused from
``demo-data/`` when it is complete) and its own servers (``pipeline.demo.servers``), so what is
timed is the code the pipeline runs, on the data the demo builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO / "demo-data"
RESULTS_DIR = REPO / "benchmarks" / "results"


def log(message: str) -> None:
    """Print a progress line to stderr (stdout is kept for the JSON result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import duckdb
    import numpy
    import pyarrow
    import rasterio

    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": mem_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "pipeline_dirty": bool(_git("status", "--porcelain", "--", "pipeline", "flows")),
    }


def _git(*args: str) -> str:
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the result JSON and write it to ``out`` if given."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        log(f"wrote {out}")


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0.0 if it is gone)."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


@dataclasses.dataclass
class Timing:
    """Wall and CPU seconds of one timed block (CPU: this process, all threads)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0


@contextmanager
def timed(server_pids: tuple[int, ...] = ()) -> Iterator[Timing]:
    """Time a block: wall clock, this process's CPU, and the CPU of the given server processes."""
    t = Timing()
    s0 = sum(proc_cpu_seconds(p) for p in server_pids)
    c0 = time.process_time()
    w0 = time.perf_counter()
    try:
        yield t
    finally:
        t.wall_s = time.perf_counter() - w0
        t.cpu_s = time.process_time() - c0
        t.server_cpu_s = sum(proc_cpu_seconds(p) for p in server_pids) - s0


def demo_region(data_dir: Path) -> Any:
    """The demo region ``eocap demo`` uses (generated into ``data_dir`` only if missing)."""
    from pipeline.demo.region import ensure_demo_region

    t0 = time.perf_counter()
    region = ensure_demo_region(data_dir)
    log(f"demo region {region.root} ready in {time.perf_counter() - t0:.1f} s")
    return region


def demo_config(**updates: Any) -> Any:
    """The default (demo) run config, with dotted-path updates, ignoring EOCAP_* variables."""
    from pipeline.core.config import load_config

    base = load_config(env={})
    return base.with_updates(updates) if updates else base


def scene_choices(config: Any, samples: list[Any]) -> dict[str, Any]:
    """The pipeline's own scene choice (STAC search) for each sample; failures left out."""
    from pipeline.stages.scenes import SceneChoice, search_scenes

    got = search_scenes(
        samples,
        config.stac,
        config.chips.band_list,
        chip_size=config.chips.size_px,
        resolution=config.chips.resolution_m,
    )
    return {sid: c for sid, c in got.items() if isinstance(c, SceneChoice)}


def localize_scene(scene: Any, base_url: str, root: Path) -> Any:
    """A copy of a ``SceneAssets`` whose HTTP hrefs under ``base_url`` point at local files."""

    def local(href: str) -> str:
        return str(root / href[len(base_url) :]) if href.startswith(base_url) else href

    return dataclasses.replace(
        scene,
        band_hrefs={k: local(v) for k, v in scene.band_hrefs.items()},
        scl_href=local(scene.scl_href),
    )


# Where the modules of the flat ``pipeline/`` (before the layered packages, issue 10) live now,
# so that a baseline from before then resolves its relative imports (``from .config import``).
FLAT_LAYOUT = {
    "errors": "core.errors",
    "config": "core.config",
    "bands": "geo.bands",
    "geometry": "geo.grid",
    "radiometry": "geo.radiometry",
}


def module_at(commit: str, path: str) -> Any:
    """Import ``path`` (a module of ``pipeline/``) as it was at ``commit``, for same-run baselines.

    The old source comes from git history (``git show``), so a baseline is never a copy in the
    tree; it is imported inside the ``pipeline`` package, and relative imports of modules that
    have since moved (:data:`FLAT_LAYOUT`) are pointed at their new homes.
    """
    import importlib.util
    import re
    import subprocess
    import sys
    import tempfile

    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    source = re.sub(
        r"^from \.(\w+) import",
        lambda m: f"from pipeline.{FLAT_LAYOUT.get(m[1], m[1])} import",
        source,
        flags=re.M,
    )
    name = f"pipeline._at_{commit}_{Path(path).stem}"
    if name in sys.modules:
        return sys.modules[name]
    folder = Path(tempfile.mkdtemp(prefix="eocap-baseline-"))
    file = folder / f"{Path(path).stem}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
