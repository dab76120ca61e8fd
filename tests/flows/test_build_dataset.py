"""End to end: the Prefect flow over the real local servers, and what researchers get."""

from __future__ import annotations

import io
import json
import re
import shutil

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image

from flows.build_dataset import run_build
from pipeline.caption.template import CLASS_PHRASES
from pipeline.core.config import RunConfig
from pipeline.core.errors import ConfigError
from pipeline.dataset.reader import read_cubes
from pipeline.demo.region import load_items
from pipeline.demo.servers import serve_demo
from pipeline.runner.plan import chip_within_region, preflight, preflight_captions
from pipeline.runner.report import RunReport
from tests.conftest import make_config


def build(config: RunConfig, **kw: object) -> RunReport:
    """What `eocap run` does: check the config once, then run the build flow."""
    return run_build(preflight(config), **kw)


@pytest.fixture(scope="module")
def built(region, servers, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "out"
    config = make_config(region, servers, out)
    report = build(config)
    return config, report


def rows(config):
    return pq.read_table(config.output.dir / "shards").to_pylist()


def cubes(config):
    """Sample id -> its decoded pixel cube (read_cubes: any shard schema version)."""
    table = pq.read_table(config.output.dir / "shards")
    return dict(zip(table.column("sample_id").to_pylist(), read_cubes(table), strict=True))


def test_report_and_layout(built):
    config, report = built
    assert report.shards == 2 and report.shards_built_now == 2
    assert report.samples == 8 and report.ok + report.failed == 8
    assert report.ok >= 6
    out = config.output.dir
    for name in (
        "run.json",
        "manifest.parquet",
        "report.json",
        "shards/00000.parquet",
        "shards/_stats/00000_stats.json",
        "shards/_stats/00001_stats.json",
    ):
        assert (out / name).exists(), name
    stats = json.loads((out / "shards/_stats/00000_stats.json").read_text())
    assert stats["count"] == 4 and set(stats["stage_seconds"]) == {
        "search",
        "chips",
        "sar",
        "composite",
        "context",
        "caption",
        "write",
    }
    assert not list((out / "shards").glob(".*tmp*"))


def test_every_ok_sample_is_complete_and_grounded(built):
    config, _ = built
    manifest = pq.read_table(config.output.dir / "manifest.parquet").column("sample_id")
    data = rows(config)
    decoded = cubes(config)
    assert sorted(r["sample_id"] for r in data) == sorted(manifest.to_pylist())
    for r in data:
        if r["status"] != "ok":
            assert r["error_reason"] and r["error_message"] and r["pixels"] is None
            continue
        cube = decoded[r["sample_id"]]
        assert (
            cube.dtype == np.uint16
            and cube.shape == (12, 264, 264)
            and (cube > 0).any(axis=(1, 2)).all()
        )
        assert len(r["bands"]) == 12 and r["band_scale"] == pytest.approx([1e-4] * 12)
        assert r["offset_removed_dn"] == [1000] * 12
        assert r["stac_collection"] == "sentinel-2-c1-l2a"
        assert r["radiometry_rule"] == "raster-bands"
        assert r["radiometry_check"] in ("consistent", "inconclusive")
        img = Image.open(io.BytesIO(r["rgb"]["bytes"]))
        assert img.size == (264, 264) and img.mode == "RGB"
        assert r["context"] is not None and r["caption"] and r["captioner"] == "template"
        assert r["prompt_version"].startswith("template-v1+")
        assert chip_within_region(config, r["geometry"])
        assert shapely.from_wkb(r["geometry"]).contains(shapely.Point(r["lon"], r["lat"]))
        assert r["stac_item_id"] and r["crs"] == "EPSG:32632" and len(r["transform"]) == 6
        assert str(config.periods[0].start) <= str(r["datetime"].date()) or r["period"] != "summer"
        # The caption names only classes present in the context.
        ctx = r["context"]
        present = (
            {f"land_cover:{i['class']}" for i in ctx["land_cover"]}
            | {f"land_use:{i['class']}" for i in ctx["land_use"]}
            | {f"water:{w['kind']}" for w in ctx["water"]}
            | {f"segment:{x['class']}" for x in ctx["roads"]}
        )
        for mention in r["caption_mentions"]:
            if mention == "building":
                assert ctx["building_count"] > 0
            elif not mention.startswith("scl:"):
                assert mention in present, (mention, r["caption"])
        for theme, table in CLASS_PHRASES.items():
            for cls, phrase in table.items():
                core = phrase.removeprefix("a ").removeprefix("an ")
                if re.search(rf"\b{re.escape(core)}\b", r["caption"]):
                    assert f"{theme}:{cls}" in present, (phrase, r["caption"])


def test_shards_open_without_eocap(built):
    config, _ = built
    glob = str(config.output.dir / "shards" / "*.parquet")
    con = duckdb.connect()
    n, ok = con.execute(
        f"SELECT count(*), count(*) FILTER (status = 'ok') FROM '{glob}'"
    ).fetchone()
    assert n == 8 and ok >= 6
    caption, classes = con.execute(
        f"SELECT caption, classes FROM '{glob}' WHERE status = 'ok' LIMIT 1"
    ).fetchone()
    assert caption and isinstance(classes, list)
    meta = pq.read_schema(config.output.dir / "shards" / "00000.parquet").metadata
    geo = json.loads(meta[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"

    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=glob, split="train", cache_dir=str(config.output.dir / "hf-cache")
    )
    assert len(ds) == 8
    row = next(r for r in ds if r["status"] == "ok")
    assert isinstance(row["rgb"], Image.Image) and row["rgb"].size == (264, 264)
    assert len(row["pixels"]) == 12 * 264 * 264 * 2  # schema 2.0: the cube's bytes


def test_resume_skips_done_shards_and_refuses_other_configs(built):
    config, _ = built
    before = (config.output.dir / "shards" / "00000.parquet").stat().st_mtime_ns
    report = build(config)
    assert report.shards_built_now == 0 and report.samples == 8
    assert (config.output.dir / "shards" / "00000.parquet").stat().st_mtime_ns == before
    # A partial shard (no stats file) is redone.
    (config.output.dir / "shards" / "_stats" / "00001_stats.json").unlink()
    assert build(config).shards_built_now == 1
    with pytest.raises(ConfigError, match=r"output\.dir"):
        build(config.with_updates({"chips.bands": "llama3-ms-clip-10"}))


def test_eocap_run_checks_once_and_a_bad_config_prints_one_line(
    built, tmp_path, monkeypatch, capsys
):
    import yaml

    from flows import build_dataset, cli
    from pipeline.runner import plan

    config, _ = built
    checked = []

    def counted(c: RunConfig, **kw: object) -> RunConfig:
        checked.append(c)
        return preflight(c, **kw)

    for module in (cli, build_dataset, plan):
        monkeypatch.setattr(module, "preflight", counted)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert cli.main(["run", str(path)]) == 0  # resumes: every shard is done
    assert len(checked) == 1
    broken = config.with_updates({"overture.source": str(tmp_path / "nowhere")})
    path.write_text(yaml.safe_dump(broken.model_dump(mode="json")))
    capsys.readouterr()
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    # The check's line, then the error (rich may wrap it), no traceback, no progress bars.
    assert err.startswith("Checking config") and err.count("error:") == 1
    assert "Traceback" not in err and "shards" not in err


@pytest.mark.parametrize("fallbacks", [0, 2])
def test_corrupt_cog_falls_back_or_fails_only_its_samples(region_copy, tmp_path, fallbacks):
    items = load_items(region_copy)
    july = next(i for i in items if i["properties"]["datetime"].startswith("2024-07"))
    august = next(i for i in items if i["properties"]["datetime"].startswith("2024-08"))
    shutil.copy(__file__, region_copy.cog_root / july["id"] / "nir.tif")  # not a TIFF
    with serve_demo(region_copy.root, items) as srv:
        config = make_config(
            region_copy, srv, tmp_path / "out", **{"chips.max_scene_fallbacks": fallbacks}
        )
        report = build(config)
    data = rows(config)
    summer = [r for r in data if r["period"] == "summer"]
    autumn = [r for r in data if r["period"] == "autumn"]
    assert summer and autumn and all(r["status"] == "ok" for r in autumn)
    if fallbacks == 0:
        assert all(r["status"] == "failed" for r in summer)
        assert all(
            r["error_reason"] == "cog_open" and "nir.tif" in r["error_message"] for r in summer
        )
        assert report.failures_by_reason == {"cog_open": len(summer)}
    else:
        # The next-best covering scene (August, cloudier) replaces the broken July one.
        assert all(r["status"] == "ok" for r in summer)
        assert {r["stac_item_id"] for r in summer} == {august["id"]}
        assert {r["scene_rank"] for r in summer} == {1}
        assert all(r["scene_rank"] == 0 for r in autumn)
        assert report.failed == 0


@pytest.mark.parametrize("backend", ["openai", "transformers"])
def test_flow_with_model_captioners(backend, region, servers, caption_server, tiny_model, tmp_path):
    updates = {
        "captioner.backend": backend,
        "captioner.model": str(tiny_model),
        "captioner.max_new_tokens": 16,
        "captioner.base_url": caption_server.url.rstrip("/"),
    }
    config = make_config(region, servers, tmp_path / "out", **updates)
    report = build(config)
    assert report.ok == report.samples == 8
    assert report.caption_flags["not_english"] == 8  # the run report shows the garbage
    for r in rows(config):
        assert r["captioner"] == f"{backend}:{tiny_model}"
        assert r["prompt_version"].startswith("grounded-v1+")
        assert json.loads(r["generation_params"])["max_new_tokens"] == 16
        assert r["prompt_tokens"] > 100 and 0 < r["completion_tokens"] <= 16
        assert r["caption"] and r["caption_latency_s"] > 0
        # A random-weight model answers garbage: the checks say so on every sample.
        assert "not_english" in r["caption_flags"] and r["clip_tokens"] > 2


def test_retry_failed_rebuilds_only_failed_samples(region_copy, tmp_path):
    from pipeline.runner.report import run_status

    items = load_items(region_copy)
    july = next(i for i in items if i["properties"]["datetime"].startswith("2024-07"))
    nir = region_copy.cog_root / july["id"] / "nir.tif"
    good = nir.read_bytes()
    nir.write_bytes(b"broken")
    with serve_demo(region_copy.root, items) as srv:
        config = make_config(region_copy, srv, tmp_path / "out", **{"chips.max_scene_fallbacks": 0})
        first = build(config)
        assert first.failed > 0
        before = {r["sample_id"]: r for r in rows(config)}
        status = run_status(config.output.dir)
        assert (status.done, status.pending, status.failed) == (2, 0, first.failed)
        nir.write_bytes(good)  # the COG is repaired
        again = build(config, retry_failed=True)
    assert again.failed == 0 and again.samples == 8
    after = rows(config)
    assert [r["sample_id"] for r in after] == sorted(before, key=list(before).index)
    assert len({r["sample_id"] for r in after}) == 8
    for r in after:
        old = before[r["sample_id"]]
        if old["status"] == "ok":
            assert r == old  # untouched rows are byte-for-byte the same values
        else:
            assert r["status"] == "ok" and r["stac_item_id"] == july["id"]
    assert run_status(config.output.dir).failed == 0


def test_dask_runner_writes_the_same_dataset(built, region, servers, tmp_path):
    config, _ = built
    dask_config = make_config(
        region,
        servers,
        tmp_path / "dask",
        **{"runtime.task_runner": "dask", "runtime.workers": 2},
    )
    report = build(dask_config)
    assert report.shards_built_now == 2 and report.samples == 8
    ours = {r["sample_id"]: r for r in rows(dask_config)}
    theirs = {r["sample_id"]: r for r in rows(config)}
    assert ours.keys() == theirs.keys()
    for sid, r in ours.items():
        for column in ("status", "pixels", "scl", "caption", "stac_item_id", "context", "geometry"):
            assert r[column] == theirs[sid][column], (sid, column)


def test_stac_errors_and_timeouts_for_a_while_lose_nothing(built, region, servers, tmp_path):
    from tests.faults import FaultPlan, fault_proxy

    config, _ = built
    plan = FaultPlan(errors=3, stalls=2, stall_s=3.0)
    with fault_proxy(servers.stac_url, plan) as url:
        faulty = make_config(
            region,
            servers,
            tmp_path / "faulty",
            # 5 faults in a row; 8 retries leave room beyond the last one.
            **{
                "stac.api_url": url,
                "stac.timeout_s": 1.0,
                "stac.backoff_s": 0.05,
                "stac.max_retries": 8,
            },
        )
        report = build(faulty)
    assert len(plan.seen) > 5  # the faults were hit, then requests went through
    assert report.failed == 0 and report.samples == 8
    ours = {r["sample_id"]: r for r in rows(faulty)}
    undisturbed = {r["sample_id"]: r for r in rows(config)}
    assert ours.keys() == undisturbed.keys()
    for sid, r in ours.items():
        for column in ("pixels", "scl", "caption", "stac_item_id", "geometry", "context"):
            assert r[column] == undisturbed[sid][column], (sid, column)


# `eocap run` in a process that stops itself mid-run: the first shard is finished, the second
# has its Parquet file written but not yet its stats (the shard is not done), and the run then
# waits forever after writing argv[1]. The test kills it there: no race with a fast run.
PAUSED_RUN = """
import sys
import threading
from pathlib import Path

import pipeline.runner.finish
from flows.cli import main

marker = Path(sys.argv[1])
write_stats = pipeline.runner.finish.write_stats
finished = []


def write_stats_then_pause(stats, path):
    if finished:
        ready = marker.with_name(marker.name + ".tmp")
        ready.write_text(str(stats.shard))
        ready.replace(marker)  # whole when it appears
        threading.Event().wait()
    write_stats(stats, path)
    finished.append(stats.shard)


pipeline.runner.finish.write_stats = write_stats_then_pause
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(
    built, region, servers, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config, _ = built
    out = tmp_path / "killed"
    run_config = make_config(region, servers, out, **{"output.shard_size": 2, "runtime.workers": 1})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "flows.cli", "run", str(path)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paused = tmp_path / "paused"
    # A session of its own, so SIGKILL takes the run and its children (Prefect's server) at
    # once, like a machine that dies.
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(paused), "run", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # The run cannot go on once the marker exists; the deadline only bounds a broken run.
    deadline = time.monotonic() + 240
    while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.exists(), f"the run never paused (exit code {proc.poll()})"
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: one shard done, one half-written
    proc.wait()
    assert proc.stderr is not None
    proc.stderr.close()
    stats_files = list((out / "shards" / "_stats").glob("*_stats.json"))
    half = int(paused.read_text())
    assert len(stats_files) == 1 and stats_files[0].name != f"{half:05d}_stats.json"
    assert (out / "shards" / f"{half:05d}.parquet").exists()  # written, but not done
    again = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    ours = rows(run_config)
    assert len(ours) == 8 and len({r["sample_id"] for r in ours}) == 8
    assert not list((out / "shards").glob(".*tmp*"))
    undisturbed = {r["sample_id"]: r for r in rows(config)}
    for r in ours:
        for column in ("status", "pixels", "scl", "caption", "stac_item_id", "geometry"):
            assert r[column] == undisturbed[r["sample_id"]][column], (r["sample_id"], column)


def test_deployment_with_schedule(tmp_path):
    from flows.build_dataset import build_dataset_from_file, make_deployment

    path = tmp_path / "run.yaml"
    path.write_text("output:\n  shard_size: 10\n")
    nightly = make_deployment(path, name="nightly", cron="0 2 * * *", retry_failed=True)
    assert nightly.name == "nightly"
    assert nightly.parameters == {"config_path": str(path.resolve()), "retry_failed": True}
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    hourly = make_deployment(path, name="hourly", interval_s=3600)
    assert hourly.schedules[0].schedule.interval.total_seconds() == 3600
    assert nightly.flow_name == build_dataset_from_file.name
    gpu = make_deployment(path, name="captions", interval_s=600, stage="caption")
    assert gpu.flow_name == "eocap-caption-dataset-from-file" and "gpu" in gpu.tags
    assert gpu.parameters == {"config_path": str(path.resolve())}


def test_deployed_flow_builds_from_a_config_file(region, servers, tmp_path):
    import yaml

    from flows.build_dataset import build_dataset_from_file

    config = make_config(region, servers, tmp_path / "out")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    report = build_dataset_from_file(str(path))
    assert report["samples"] == 8 and report["shards_built_now"] == 2


def test_separate_caption_stage_gives_the_inline_captions(built, region, servers, tmp_path):
    from flows.build_dataset import run_captions
    from pipeline.runner.report import run_status

    config, _ = built
    separate = make_config(
        region,
        servers,
        tmp_path / "sep",
        **{"captioner.stage": "separate", "captioner.gpu_workers": 2},
    )
    first = build(separate)
    assert first.pending_caption == first.samples - first.failed > 0
    assert all(
        r["caption"] is None and r["pixels"] is not None
        for r in rows(separate)
        if r["status"] == "pending_caption"
    )
    assert run_status(separate.output.dir).pending_caption == first.pending_caption
    run_files = [separate.output.dir / name for name in ("run.json", "manifest.parquet")]
    written = [(p.stat().st_mtime_ns, p.read_bytes()) for p in run_files]
    report = run_captions(preflight_captions(separate))
    # The caption stage reads the build's plan; it never plans the run again.
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in run_files] == written
    assert report.pending_caption == 0 and report.ok == first.pending_caption
    inline = {r["sample_id"]: r for r in rows(config)}
    for r in rows(separate):
        same = inline[r["sample_id"]]
        for column in ("status", "caption", "caption_flags", "pixels", "context", "captioner"):
            assert r[column] == same[column], (r["sample_id"], column)


def test_caption_flow_with_the_fast_backend(region, servers, tiny_model, tmp_path):
    from flows.build_dataset import run_captions

    updates = {
        "captioner.stage": "separate",
        "captioner.backend": "fast",
        "captioner.model": str(tiny_model),
        "captioner.device": "cpu",  # the engine's eager path: the GPU's code without graphs
        "captioner.batch_size": 3,
        "captioner.max_new_tokens": 8,
        "captioner.gpu_workers": 2,
    }
    config = make_config(region, servers, tmp_path / "out", **updates)
    first = build(config)
    assert first.pending_caption > 0
    report = run_captions(preflight_captions(config))
    assert report.pending_caption == 0 and report.ok == first.ok + first.pending_caption
    captioned = [r for r in rows(config) if r["captioner"] == f"fast:{tiny_model}"]
    assert len(captioned) == first.pending_caption
    # The checks ran on every model caption: the tiny model's random text is flagged.
    assert report.caption_flags["not_english"] >= len(captioned)
    for r in captioned:
        assert r["status"] == "ok" and r["caption"] and "not_english" in r["caption_flags"]
        assert r["prompt_version"].startswith("grounded-v1+")
        assert r["prompt_tokens"] > 100 and 0 < r["completion_tokens"] <= 8
        assert r["finish_reason"] in ("stop", "length") and r["caption_latency_s"] > 0
