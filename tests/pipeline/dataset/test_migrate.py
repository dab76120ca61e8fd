"""``eocap migrate``: 1.2 shards become 2.0 with identical cubes and columns, kill-safely."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dataset.columns import CUBE_COLUMNS, SAR_COLUMNS, SCHEMA_VERSION, SampleRecord
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.migrate import migrate_output
from pipeline.dataset.reader import file_schema_version, read_cubes, read_rows
from pipeline.dataset.stats import read_stats, write_stats
from pipeline.dataset.writer import write_shard
from tests.conftest import REPO_ROOT


def _as_v1(source: Path, dest: Path, rows_per_shard: int = 3) -> None:
    """The built dataset ``source`` as an output ``dest`` of schema 1.2 shards of a few rows."""
    src, out = DatasetLayout(source), DatasetLayout(dest)
    out.stats_dir.mkdir(parents=True)
    records: list[SampleRecord] = []
    for path in src.finished_shards().values():
        table = pq.read_table(path)
        cubes = {c: read_cubes(table, c) for c in CUBE_COLUMNS}
        valid = {c: table.column(c).is_valid().to_pylist() for c in CUBE_COLUMNS}
        for i, row in enumerate(table.drop_columns(list(CUBE_COLUMNS)).to_pylist()):
            present = {c: cubes[c][i] if valid[c][i] else None for c in CUBE_COLUMNS}
            records.append(SampleRecord(**row, **present))
        meta = json.loads(table.schema.metadata[b"eocap"])
        stats = read_stats(src.stats_path(0))
    n_bands, size = cubes["pixels"].shape[1], cubes["pixels"].shape[2]
    for index, start in enumerate(range(0, len(records), rows_per_shard)):
        part = records[start : start + rows_per_shard]
        extra = {"config_hash": meta["config_hash"], "dataset": meta["dataset"], "shard": index}
        nbytes = write_shard(
            part,
            out.shard_path(index),
            n_bands=n_bands,
            size=size,
            extra_metadata=extra,
            version="1.2",
        )
        shard_stats = dataclasses.replace(
            stats, shard=index, path=out.shard_path(index).name, count=len(part), bytes=nbytes
        )
        write_stats(shard_stats, out.stats_path(index))


@pytest.fixture
def v1_output(review_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "v1"
    _as_v1(review_dataset, out)
    return out


def _assert_same_samples(v1_path: Path, v2_path: Path) -> None:
    old, new = pq.read_table(v1_path), pq.read_table(v2_path)
    # 1.2 had no SAR columns: a migrated shard has them, null
    added = [] if file_schema_version(v2_path) == "1.2" else list(SAR_COLUMNS)
    assert new.column_names == [*old.column_names, *added]
    assert all(new.column(c).null_count == new.num_rows for c in added)
    for c in CUBE_COLUMNS:
        if c in old.column_names:
            assert np.array_equal(read_cubes(old, c), read_cubes(new, c)), c
            assert old.column(c).is_valid() == new.column(c).is_valid(), c
    others = [c for c in old.column_names if c not in CUBE_COLUMNS]
    assert new.select(others).equals(old.select(others))


def _check_stats(output: Path) -> None:
    layout = DatasetLayout(output)
    for index, path in layout.finished_shards().items():
        assert read_stats(layout.stats_path(index)).bytes == path.stat().st_size


def test_migrate_rewrites_v1_shards_as_v2_with_identical_samples(v1_output, tmp_path):
    before = tmp_path / "before"
    shutil.copytree(v1_output, before)
    layout = DatasetLayout(v1_output)
    shards = layout.finished_shards()
    assert len(shards) >= 2
    assert {file_schema_version(p) for p in shards.values()} == {"1.2"}
    summary = migrate_output(v1_output, show_progress=False)
    assert summary.migrated == len(shards) and summary.already_current == 0
    assert summary.bytes_after < summary.bytes_before
    for index, path in shards.items():
        assert file_schema_version(path) == SCHEMA_VERSION
        _assert_same_samples(DatasetLayout(before).shard_path(index), path)
        meta = json.loads(pq.read_schema(path).metadata[b"eocap"])
        old_meta = json.loads(
            pq.read_schema(DatasetLayout(before).shard_path(index)).metadata[b"eocap"]
        )
        assert meta["config_hash"] == old_meta["config_hash"] and meta["shard"] == index
        assert meta["schema_version"] == SCHEMA_VERSION and meta["migrated_from"] == "1.2"
    _check_stats(v1_output)
    assert list(layout.temp_files()) == []
    # Idempotent: a second run rewrites nothing.
    mtimes = {p: p.stat().st_mtime_ns for p in shards.values()}
    again = migrate_output(v1_output, show_progress=False)
    assert again.migrated == 0 and again.already_current == len(shards)
    assert {p: p.stat().st_mtime_ns for p in shards.values()} == mtimes


def test_eocap_reads_a_row_of_either_version(v1_output):
    layout = DatasetLayout(v1_output)
    path = layout.shard_path(0)
    ok = pq.read_table(path, columns=["sample_id", "pixels"]).filter(
        pq.read_table(path, columns=["pixels"]).column(0).is_valid()
    )
    sid = ok.column("sample_id")[0].as_py()
    v1_row = read_rows(path, [sid], ["pixels", "scl", "bands"])[sid]
    migrate_output(v1_output, show_progress=False)
    v2_row = read_rows(path, [sid], ["pixels", "scl", "bands"])[sid]
    assert np.array_equal(v1_row["pixels"], v2_row["pixels"])
    assert np.array_equal(v1_row["scl"], v2_row["scl"])
    assert v1_row["pixels"].shape[0] == len(v1_row["bands"]) and v1_row["pixels"].ndim == 3


_KILLABLE = """
import sys, time
from pathlib import Path
from pipeline.dataset.migrate import migrate_output

def stop_here(index):
    Path(sys.argv[2]).write_text(str(index))
    time.sleep(120)

migrate_output(Path(sys.argv[1]), show_progress=False, on_shard_written=stop_here)
"""


def test_a_killed_migration_leaves_readable_shards_and_a_rerun_finishes(v1_output, tmp_path):
    before = tmp_path / "before"
    shutil.copytree(v1_output, before)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(v1_output), str(marker)], env=env, cwd=REPO_ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the migration ended before its first shard was written"
            assert time.monotonic() < deadline, "no shard migrated in 120 s"
            time.sleep(0.05)
        # Killed after the first shard's file was replaced, before its sidecar was updated.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    layout = DatasetLayout(v1_output)
    versions = {i: file_schema_version(p) for i, p in layout.finished_shards().items()}
    assert versions[0] == SCHEMA_VERSION and set(list(versions.values())[1:]) == {"1.2"}
    for index, path in layout.finished_shards().items():  # every shard complete and readable
        _assert_same_samples(DatasetLayout(before).shard_path(index), path)
        read_stats(layout.stats_path(index))
    summary = migrate_output(v1_output, show_progress=False)
    assert summary.migrated == len(versions) - 1 and summary.already_current == 1
    assert summary.stats_corrected == 1  # the killed run's sidecar of shard 0
    assert {file_schema_version(p) for p in layout.finished_shards().values()} == {SCHEMA_VERSION}
    _check_stats(v1_output)


def test_a_partly_migrated_output_releases_like_a_migrated_one(v1_output, review_dataset, tmp_path):
    from pipeline.dataset.migrate import _migrate_shard
    from pipeline.dataset.release import make_release

    # The release reads the run's config: v1_output's is that of the dataset it came from.
    shutil.copy(DatasetLayout(review_dataset).run_json, DatasetLayout(v1_output).run_json)
    mixed = tmp_path / "mixed"
    shutil.copytree(v1_output, mixed)
    _migrate_shard(DatasetLayout(mixed).shard_path(0))
    assert {file_schema_version(p) for p in DatasetLayout(mixed).finished_shards().values()} == {
        "1.2",
        SCHEMA_VERSION,
    }
    migrated = tmp_path / "migrated"
    shutil.copytree(v1_output, migrated)
    migrate_output(migrated)
    make_release(mixed, tmp_path / "r-mixed")
    make_release(migrated, tmp_path / "r-migrated")
    sums = [(tmp_path / r / "SHA256SUMS").read_text() for r in ("r-mixed", "r-migrated")]
    assert sums[0] == sums[1]
