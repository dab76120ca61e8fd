"""A release of an output built with sar (and coherence): carries the SAR columns, counts
them, pulls and loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.loader import SampleDataset
from pipeline.dataset.pull import PullFilter, plan_pull, pull_release
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.release import ReleaseOptions, make_release
from pipeline.demo.coherence import COHERENCE_COLLECTION
from pipeline.demo.region import DemoRegion
from pipeline.demo.servers import DemoServers
from pipeline.io.remote import open_release_source
from tests.conftest import make_config
from tests.pipeline.dataset.release_fixture import RULE
from tests.pipeline.runner.test_sar_stage import WINDOW_DAYS, build


@pytest.fixture(scope="module")
def released(
    region: DemoRegion, servers: DemoServers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("sar-release")
    sar = {"window_days": WINDOW_DAYS, "coherence": {"collection": COHERENCE_COLLECTION}}
    config, _, _ = build(make_config(region, servers, work / "out", sar=sar))
    options = ReleaseOptions(split_rule=RULE, samples_per_file=3)
    make_release(config.output.dir, work / "release", options)
    return config.output.dir, work / "release"


def data_rows(root: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / "data").glob("*.parquet")))


def shard_rows(output: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in DatasetLayout(output).finished_shards().values()]
    return pa.concat_tables(tables)


def by_id(table: pa.Table, column: str) -> dict[str, object]:
    cube = column in ("sar_db", "coherence")
    values = read_cubes(table, column) if cube else table.column(column).to_pylist()
    return dict(zip(table.column("sample_id").to_pylist(), values, strict=True))


def test_the_release_carries_the_sar_columns_untouched(released):
    output, release = released
    rows, shards = data_rows(release), shard_rows(output)
    assert rows.num_rows > 0
    for column in (
        "sar_state",
        "sar_item_id",
        "sar_time_offset_s",
        "sar_polarisations",
        "coh_state",
        "coh_item_id",
        "coh_start_datetime",
    ):
        source = by_id(shards, column)
        assert all(source[sid] == v for sid, v in by_id(rows, column).items()), column
    for column in ("sar_db", "coherence"):
        source_cube = by_id(shards, column)
        for sid, cube in by_id(rows, column).items():
            assert np.array_equal(cube, source_cube[sid]), column
    assert rows.column("sar_db").null_count == rows.column("sar_state").to_pylist().count(
        "no_acquisition"
    )


def test_the_card_reports_the_share_of_samples_with_sar(released):
    _, release = released
    states = data_rows(release).column("sar_state").to_pylist()
    ok, missing = states.count("ok"), states.count("no_acquisition")
    assert ok and missing and ok + missing == len(states)
    card = (release / "README.md").read_text()
    share = f"{ok / len(states):.0%}"
    assert f"Sentinel-1: {ok} of {len(states)} samples ({share}) have backscatter" in card
    assert f"`no_acquisition` {missing}, `ok` {ok}" in card
    assert "- sentinel-1" in card  # a Hub tag
    coh = data_rows(release).column("coh_state").to_pylist()
    coh_ok = coh.count("ok")
    assert 0 < coh_ok < len(coh)
    having = f"{coh_ok} of {len(coh)} samples ({coh_ok / len(coh):.0%}) have interferometric"
    assert f"Sentinel-1 coherence: {having}" in card


def test_pulled_rows_keep_their_sar_and_load_as_s1(released, tmp_path):
    _, release = released
    dest = tmp_path / "pulled"
    with open_release_source(str(release)) as source:
        pull_release(plan_pull(source, dest, PullFilter(split="train")))
    pulled = data_rows(dest)
    source_db = by_id(data_rows(release), "sar_db")
    assert pulled.num_rows > 0
    for sid, cube in by_id(pulled, "sar_db").items():
        assert np.array_equal(cube, source_db[sid])
    samples = list(SampleDataset(dest, modalities=("s2", "s1"), shuffle=False))
    states = by_id(pulled, "sar_state")
    assert [s["sar_ok"] for s in samples] == [states[s["sample_id"]] == "ok" for s in samples]
    for s in samples:
        assert s["sar_ok"] == bool(torch.isfinite(s["sar_db"]).any())


def test_a_release_loads_as_coh(released):
    _, release = released
    samples = list(SampleDataset(release, modalities=("s2", "coh"), shuffle=False))
    states = by_id(data_rows(release), "coh_state")
    assert {s["coh_ok"] for s in samples} == {True, False}
    for s in samples:
        assert s["coh_ok"] == (states[s["sample_id"]] == "ok")
        finite = s["coherence"][torch.isfinite(s["coherence"])]
        assert s["coh_ok"] == bool(finite.numel())
        assert bool(((finite >= 0) & (finite <= 1)).all())
