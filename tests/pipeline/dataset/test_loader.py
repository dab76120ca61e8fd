"""The torch loader on a small built dataset: sharding, resume, bands, normalisation, crops.

The dataset is ``review_dataset`` (built by the pipeline against the demo servers) with its
samples copied three times into files of 3-row row groups, so that ranks and workers get
several units of work each, and one row marked failed, so that the status filter has something
to leave out.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.loader import SampleDataset
from pipeline.dataset.reader import read_cubes, read_shard
from tests.conftest import REPO_ROOT

ROWS_PER_GROUP = 3
COPIES = 3


@pytest.fixture(scope="module")
def shards(review_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built samples, three times over in three files of small row groups.

    Copy ``k`` of a sample has the id ``<sample_id>-<k>``; the first copy's last row is marked
    failed.
    """
    out = tmp_path_factory.mktemp("loader") / "shards"
    out.mkdir()
    built = pa.concat_tables(
        read_shard(p) for p in sorted((review_dataset / "shards").glob("*.parquet"))
    )
    for copy in range(COPIES):
        ids = [f"{sid}-{copy}" for sid in built["sample_id"].to_pylist()]
        index = built.schema.get_field_index("sample_id")
        table = built.set_column(index, "sample_id", pa.array(ids, pa.string()))
        if copy == 0:
            status = table.column("status").to_pylist()
            status[-1] = "failed"
            index = table.schema.get_field_index("status")
            table = table.set_column(index, "status", pa.array(status, pa.string()))
        pq.write_table(table, out / f"{copy:05d}.parquet", row_group_size=ROWS_PER_GROUP)
    return out


@pytest.fixture(scope="module")
def ok_ids(shards: Path) -> list[str]:
    table = pq.read_table(shards, columns=["sample_id", "status"])
    ids: list[str] = table.filter(pc.equal(table["status"], "ok"))["sample_id"].to_pylist()
    assert len(ids) > 12 and len(ids) == len(set(ids))
    return sorted(ids)


@pytest.fixture(scope="module")
def band_stats(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``band_stats.json`` in the release format, with the shards' own means and stds."""
    table = read_shard(sorted(shards.glob("*.parquet"))[0], ["bands", "pixels"])
    cubes = read_cubes(table).astype(np.float64)
    bands = table["bands"][0].as_py()
    stats = {
        b: {"mean": float(cubes[:, i].mean()), "std": float(cubes[:, i].std())}
        for i, b in enumerate(bands)
    }
    path = tmp_path_factory.mktemp("stats") / "band_stats.json"
    path.write_text(json.dumps({"bands": stats, "split": "train"}))
    return path


@pytest.fixture(autouse=True, scope="module")
def _workers_start_from_a_clean_process():
    # Earlier tests of the session ran Prefect flows in this process; a DataLoader worker
    # forked from it exits at once (code 1) with Prefect's state. A training process runs no
    # flow, so the tests give workers what it would: a parent without that state (forkserver).
    import torch.multiprocessing as mp

    before = mp.get_start_method(allow_none=True)
    mp.set_start_method("forkserver", force=True)
    yield
    mp.set_start_method(before, force=True)


def ids_of(
    dataset: SampleDataset, num_workers: int = 0, batch_size: int | None = None
) -> list[str]:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    out: list[str] = []
    for item in loader:
        out.extend([item["sample_id"]] if batch_size is None else item["sample_id"])
    return out


def small(shards: Path, **options: Any) -> SampleDataset:
    """A loader without pixels work to speak of: 2 bands, a 16 px crop."""
    return SampleDataset(shards, bands=["B04", "B08"], crop=16, shuffle_buffer=4, **options)


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_every_ok_sample_once_whatever_the_workers(shards, ok_ids, num_workers):
    dataset = small(shards)
    assert len(dataset.units) > len(list(shards.glob("*.parquet")))  # several units per file
    ids = ids_of(dataset, num_workers)
    assert sorted(ids) == ok_ids
    assert len(dataset) == len(ok_ids)


def test_failed_rows_only_when_asked(shards, ok_ids):
    every = ids_of(small(shards, statuses=None))
    assert len(every) == len(ok_ids) + 1 and set(ok_ids) < set(every)


@pytest.mark.parametrize("via_env", [False, True])
def test_ranks_split_the_samples_without_overlap(shards, ok_ids, via_env, monkeypatch):
    per_rank = []
    for rank in (0, 1):
        if via_env:
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            dataset = small(shards)
        else:
            dataset = small(shards, rank=rank, world_size=2)
        per_rank.append(ids_of(dataset, num_workers=2))
    assert per_rank[0] and per_rank[1]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == ok_ids


def test_drop_uneven_gives_every_slot_the_same_count(shards, ok_ids):
    counts = Counter[str]()
    per_rank = []
    for rank in (0, 1):
        dataset = small(shards, rank=rank, world_size=2, drop_uneven=True)
        assert len(set(dataset.slot_counts(2))) == 1
        ids = ids_of(dataset, num_workers=2)
        counts.update(ids)
        per_rank.append(len(ids))
    assert per_rank[0] == per_rank[1]
    assert max(counts.values()) == 1 and set(counts) <= set(ok_ids)


def test_epochs_reshuffle_and_seed_repeats(shards, ok_ids):
    dataset = small(shards, seed=3)
    first = ids_of(dataset)
    dataset.set_epoch(1)
    second = ids_of(dataset)
    assert sorted(second) == ok_ids and second != first
    again = small(shards, seed=3)
    assert ids_of(again) == first


def test_resume_in_process_yields_exactly_the_rest(shards):
    dataset = small(shards, seed=1)
    dataset.set_epoch(2)
    stream = iter(dataset)
    seen = [next(stream)["sample_id"] for _ in range(7)]
    state = dataset.state_dict()
    rest = [s["sample_id"] for s in stream]
    resumed = small(shards, seed=1)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert state["epoch"] == 2 and state["yielded"] == [7]
    assert [s["sample_id"] for s in resumed] == rest
    assert not set(seen) & set(rest)


def test_resumed_pixels_are_those_of_the_uninterrupted_run(shards):
    dataset = small(shards, random_crop=True)
    stream = iter(dataset)
    for _ in range(5):
        next(stream)
    state = dataset.state_dict()
    expected = next(stream)
    resumed = small(shards, random_crop=True)
    resumed.load_state_dict(state)
    got = next(iter(resumed))
    assert got["sample_id"] == expected["sample_id"]
    assert torch.equal(got["pixels"], expected["pixels"])


@pytest.mark.parametrize("batches", [3, 4])
def test_resume_with_workers_yields_exactly_the_rest(shards, ok_ids, batches):
    options = {"seed": 5}
    full = ids_of(small(shards, **options), num_workers=2, batch_size=2)
    seen = full[: 2 * batches]  # every batch but an epoch's last ones is full here
    dataset = small(shards, **options)
    state = dataset.state_after(batches, batch_size=2, num_workers=2)
    assert sum(state["yielded"]) == len(seen)
    resumed = small(shards, **options)
    resumed.load_state_dict(state)
    rest = ids_of(resumed, num_workers=2, batch_size=2)
    assert sorted(seen + rest) == ok_ids
    if batches % 2 == 0:  # whole turns consumed: the DataLoader's order is the same too
        assert rest == full[len(seen) :]
    with pytest.raises(ValueError, match="num_workers=2"):
        ids_of(resumed, num_workers=1)


def test_band_selection_and_normalisation_match_read_cubes(shards, band_stats):
    first = sorted(shards.glob("*.parquet"))[0]
    dataset = SampleDataset([first], bands=["B08", "B02"], band_stats=band_stats, shuffle=False)
    samples = list(dataset)
    table = read_shard(first)
    cubes = read_cubes(table)
    stats = json.loads(band_stats.read_text())["bands"]
    ids = table["sample_id"].to_pylist()
    assert [s["sample_id"] for s in samples] == ids[:-1]  # file order; the failed row left out
    for sample in samples:
        row = ids.index(sample["sample_id"])
        stored = table["bands"][row].as_py()
        assert sample["caption"] == table["caption"][row].as_py()
        pixels = sample["pixels"]
        assert pixels.dtype == torch.float32 and pixels.shape == (2, *cubes.shape[-2:])
        for channel, band in enumerate(["B08", "B02"]):
            raw = cubes[row, stored.index(band)].astype(np.float32)
            expected = (raw - np.float32(stats[band]["mean"])) / np.float32(stats[band]["std"])
            np.testing.assert_allclose(pixels[channel].numpy(), expected, rtol=1e-6, atol=1e-5)


def test_raw_pixels_keep_the_stored_dtype_and_values(shards, band_stats):
    first = sorted(shards.glob("*.parquet"))[0]
    samples = list(SampleDataset([first], bands=["B08", "B02"], raw=True, shuffle=False))
    table = read_shard(first)
    cubes = read_cubes(table)
    ids = table["sample_id"].to_pylist()
    assert samples
    for sample in samples:
        row = ids.index(sample["sample_id"])
        stored = table["bands"][row].as_py()
        expected = cubes[row, [stored.index("B08"), stored.index("B02")]]
        assert sample["pixels"].dtype == torch.uint16
        np.testing.assert_array_equal(sample["pixels"].numpy(), expected)
    with pytest.raises(ValueError, match="band_stats or raw"):
        SampleDataset([first], raw=True, band_stats=band_stats)


def test_unknown_band_is_one_plain_error(shards):
    with pytest.raises(KeyError, match="band B99 is not in sample"):
        next(iter(SampleDataset(shards, bands=["B99"])))


def test_crops_are_windows_of_the_chip(shards):
    first = sorted(shards.glob("*.parquet"))[0]
    table = read_shard(first)
    cubes = read_cubes(table)
    b04 = table["bands"][0].as_py().index("B04")
    ids = table["sample_id"].to_pylist()
    size = cubes.shape[-1]
    centre = SampleDataset([first], bands=["B04"], crop=32, shuffle=False, columns=["lon"])
    sample = next(iter(centre))
    row = ids.index(sample["sample_id"])
    top = (size - 32) // 2
    expected = cubes[row, b04, top : top + 32, top : top + 32].astype(np.float32)
    assert np.array_equal(sample["pixels"][0].numpy(), expected)
    assert sample["lon"] == table["lon"][row].as_py()

    def offsets(epoch: int) -> list[tuple[int, int]]:
        dataset = SampleDataset([first], bands=["B04"], crop=32, random_crop=True, seed=7)
        dataset.set_epoch(epoch)
        found = []
        for s in dataset:
            full = cubes[ids.index(s["sample_id"]), b04].astype(np.float32)
            window = s["pixels"][0].numpy()
            corners = np.argwhere(full[: size - 31, : size - 31] == window[0, 0])
            hits = [
                (int(y), int(x))
                for y, x in corners
                if np.array_equal(full[y : y + 32, x : x + 32], window)
            ]
            assert hits, "a random crop is a window of its chip"
            found.append(hits[0])
        return found

    first_epoch = offsets(0)
    assert offsets(0) == first_epoch  # seeded
    assert offsets(1) != first_epoch  # a new epoch, new crops
    with pytest.raises(ValueError, match="larger than sample"):
        next(iter(SampleDataset([first], crop=size + 1)))


@pytest.fixture(scope="module")
def small_release(shards: Path, band_stats: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release-shaped folder (docs/release.md layout): two splits, the index, band stats."""
    root = tmp_path_factory.mktemp("release")
    (root / "data").mkdir()
    table = read_shard(sorted(shards.glob("*.parquet"))[1])
    half = table.num_rows // 2
    index = []
    for split, part in (("train", table.slice(0, half)), ("validation", table.slice(half))):
        file = f"data/{split}-00000-of-00001.parquet"
        pq.write_table(part, root / file, row_group_size=ROWS_PER_GROUP)
        rows = part.select(["sample_id", "geometry", "bbox", "lon", "lat", "cloud_fraction"])
        row = np.arange(part.num_rows)
        index.append(
            rows.append_column("split", pa.array([split] * part.num_rows))
            .append_column("file", pa.array([file] * part.num_rows))
            .append_column("row_group", pa.array(row // ROWS_PER_GROUP, pa.int32()))
            .append_column("row_in_group", pa.array(row % ROWS_PER_GROUP, pa.int32()))
        )
    metadata = pa.concat_tables(index)
    geo = geo_metadata(metadata, ["Polygon"])
    pq.write_table(metadata.replace_schema_metadata({b"geo": geo}), root / "metadata.parquet")
    (root / "band_stats.json").write_text(band_stats.read_text())
    return root


def test_reading_a_release_block_of_the_docs_runs(small_release):
    text = (REPO_ROOT / "docs" / "release.md").read_text()
    section = text[text.index("## Reading a release") :]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'root = "my-release"' in block
    names: dict[str, Any] = {}
    exec(block.replace('"my-release"', repr(str(small_release))), names)
    n = pq.read_metadata(small_release / "metadata.parquet").num_rows
    assert set(names["splits"]) == {"train", "validation"}
    assert sum(len(names["splits"][s]) for s in names["splits"]) == n
    assert dict(names["per_split"]) == {"train": n // 2, "validation": n - n // 2}
    assert names["captions"]
    assert len(names["index"]) == n and names["index"].geometry.is_valid.all()
    assert names["table"].num_rows == n
    assert names["batch"]["pixels"].shape[1:] == (4, 224, 224)
    assert len(names["train"]) == n // 2


class RecordingOpener:
    """Opens local files like ``open_parquet`` and records which (a transport plugs in here)."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, path: str) -> pq.ParquetFile:
        self.opened.append(path)
        return pq.ParquetFile(path)


def test_files_are_opened_only_through_the_opener(shards, ok_ids):
    opener = RecordingOpener()
    dataset = small(shards, opener=opener)
    assert sorted(ids_of(dataset)) == ok_ids
    assert sorted(set(opener.opened)) == sorted(str(p) for p in shards.glob("*.parquet"))
