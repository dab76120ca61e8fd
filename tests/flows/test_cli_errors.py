"""How `eocap run` fails, seen from a terminal: one plain line, the traceback in the run's log.

Each run is a real `eocap` process against the real local servers; the processes share one
Prefect server (started here) instead of starting a temporary one each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from flows.build_dataset import run_build
from pipeline.core.config import RunConfig
from pipeline.runner.plan import preflight
from pipeline.runner.report import RunReport
from tests.conftest import make_config, require_service

# No Sentinel-2 scene of the test region was acquired in 2023.
SCENELESS = [{"name": "summer-2023", "start": "2023-06-01", "end": "2023-08-31"}]


@pytest.fixture(scope="module")
def prefect_env() -> dict[str, str]:
    """The environment of an `eocap` process that reports to this session's Prefect server."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    return dict(os.environ, PREFECT_API_URL=server.api_url, PYTHONUNBUFFERED="1", COLUMNS="200")


def eocap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `eocap ARGS` as its own process."""
    cmd = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sceneless(region, servers, prefect_env, tmp_path_factory) -> tuple[RunConfig, Path]:
    """A config whose every sample fails with no_scene, and its YAML file."""
    folder = tmp_path_factory.mktemp("sceneless")
    config = make_config(region, servers, folder / "out", periods=SCENELESS)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config, path


def test_a_run_whose_samples_all_fail_exits_3_with_the_reason_and_what_to_change(
    sceneless, prefect_env
) -> None:
    _, path = sceneless
    done = eocap(prefect_env, "run", str(path))
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every one of the 4 samples failed with no_scene: ")
    assert "widen the periods, raise stac.max_cloud_cover" in last
    assert "Traceback" not in done.stderr
    assert "failed: no_scene" in done.stdout  # the report is printed all the same


def test_an_error_inside_the_flow_is_one_line_and_its_traceback_is_in_the_log(
    sceneless, prefect_env
) -> None:
    config, path = sceneless
    assert eocap(prefect_env, "run", str(path)).returncode == 3  # built (or resumed)
    # A damaged output: the flow reads every stats file for its report, inside Prefect.
    (config.output.dir / "shards" / "_stats" / "00000_stats.json").write_text("{")
    logs = config.output.dir / "logs"
    before = set(logs.glob("*.log")) if logs.exists() else set()

    done = eocap(prefect_env, "run", str(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("Checking config")
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == lines[-1], done.stderr
    assert lines[-1].startswith("error: JSONDecodeError: ")
    assert "Traceback" not in done.stderr and "Flow run" not in done.stderr
    (log,) = set(logs.glob("*.log")) - before
    assert f"the traceback is in {log}" in lines[-1]
    assert f"`eocap --debug run {path}` prints it" in lines[-1]
    text = log.read_text()
    # Prefect's report of the failed flow run and the command's own, both with tracebacks.
    assert "prefect.flow_runs" in text and text.count("Traceback (most recent call last)") == 2
    assert "json.decoder.JSONDecodeError" in text

    debug = eocap(prefect_env, "--debug", "run", str(path))
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "read_stats" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: JSONDecodeError: ")


def _report(**counts: object) -> RunReport:
    fields: dict[str, object] = {
        "output_dir": "out",
        "shards": 1,
        "shards_built_now": 1,
        "samples": 8,
        "ok": 0,
        "failed": 8,
        "failures_by_reason": {},
        "stage_seconds": {},
        "wall_seconds": 1.0,
        "bytes": 1,
    }
    return RunReport(**{**fields, **counts})  # type: ignore[arg-type]


def test_what_counts_as_a_run_that_got_nothing() -> None:
    from pipeline.runner.report import all_failed

    one = all_failed(_report(failures_by_reason={"stac_error": 8}))
    assert one is not None and one.startswith("every one of the 8 samples failed with stac_error:")
    assert "check stac.api_url" in one
    mixed = all_failed(_report(failures_by_reason={"cog_read": 3, "no_scene": 5}))
    assert mixed is not None
    assert mixed.startswith("every one of the 8 samples failed (no_scene 5, cog_read 3); no_scene")
    assert all_failed(_report(ok=1, failed=7, failures_by_reason={"no_scene": 7})) is None
    waiting = _report(failed=0, pending_caption=8, failures_by_reason={})
    assert all_failed(waiting) is None


# Runs inside a user and mount namespace of its own (`unshare`), where it may mount a tmpfs:
# a real filesystem that fills up. The ballast leaves room for the first shard only; the first
# run must stop at the second, the second run (ballast gone) must finish the dataset.
DISK_FULL_RUNS = """
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

mount, config, room, report = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], check=True)
ballast = mount / "ballast"
free = os.statvfs(mount)
ballast.write_bytes(bytes(free.f_bavail * free.f_frsize - room))
out = mount / "out"
runs = []
for _ in range(2):
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", config], capture_output=True, text=True
    )
    runs.append(
        {
            "code": done.returncode,
            "stderr": done.stderr,
            "done": sorted(p.name for p in (out / "shards" / "_stats").glob("*_stats.json")),
            "shard_sha1": {
                p.name: hashlib.sha1(p.read_bytes()).hexdigest()
                for p in (out / "shards").glob("*.parquet")
            },
        }
    )
    ballast.unlink(missing_ok=True)
shutil.copytree(out, report / "out")
(report / "runs.json").write_text(json.dumps(runs))
"""


PREFECT_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d+ \| [A-Z]+ +\| ")
"""A line of Prefect's console log (``15:10:24.421 | WARNING | EventsWorker - ...``)."""


def test_a_full_disk_names_the_output_folder_and_the_run_resumes_losing_nothing(
    region, servers, prefect_env, tmp_path
) -> None:
    unshare = ["unshare", "--user", "--map-root-user", "--mount"]
    require_service(
        "a user and mount namespace (`unshare`) to mount a small tmpfs",
        subprocess.run([*unshare, "true"], capture_output=True).returncode == 0,
        fix="allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
    )
    small = {"output.shard_size": 2, "runtime.workers": 1}  # 4 shards, written in order
    reference = make_config(region, servers, tmp_path / "reference", **small)
    run_build(preflight(reference))
    mount = tmp_path / "disk"
    mount.mkdir()
    config = reference.with_updates({"output.dir": str(mount / "out")})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    first_shard = (reference.output.dir / "shards" / "00000.parquet").stat().st_size
    room = first_shard + 200_000  # the shard, its stats, run.json, the manifest; not a second
    report = tmp_path / "report"
    report.mkdir()
    script = [sys.executable, "-c", DISK_FULL_RUNS, str(mount), str(path), str(room), str(report)]
    done = subprocess.run([*unshare, *script], env=prefect_env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    full, resumed = json.loads((report / "runs.json").read_text())

    assert full["code"] == 1, full["stderr"]
    assert "Traceback" not in full["stderr"] and "Errno" not in full["stderr"]
    # Prefect's own timestamped lines (its events worker flushing at exit) may come after.
    lines = full["stderr"].strip().splitlines()
    last = [line for line in lines if not PREFECT_LINE.match(line)][-1]
    assert last == (
        f"error: the disk holding {mount / 'out'} is full: nothing written there is lost "
        "(finished shards are kept, the file being written was dropped); free some space and "
        f"run the same command again to resume: `eocap run {path}`"
    )
    assert full["done"] == ["00000_stats.json"]
    assert resumed["code"] == 0, resumed["stderr"]
    assert resumed["done"] == [f"{i:05d}_stats.json" for i in range(4)]
    # The shard finished before the disk filled is kept as it was, not written again.
    assert resumed["shard_sha1"]["00000.parquet"] == full["shard_sha1"]["00000.parquet"]
    ours = pq.read_table(report / "out" / "shards").to_pylist()
    undisturbed = {
        r["sample_id"]: r for r in pq.read_table(reference.output.dir / "shards").to_pylist()
    }
    assert len(ours) == len(undisturbed) == 8
    assert {r["sample_id"] for r in ours} == set(undisturbed)
    assert not list((report / "out" / "shards").glob(".*tmp*"))
    for r in ours:
        for column in ("status", "pixels", "scl", "caption", "stac_item_id", "geometry"):
            assert r[column] == undisturbed[r["sample_id"]][column], (r["sample_id"], column)
