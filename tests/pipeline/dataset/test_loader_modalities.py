"""The loader's modalities by name: s2 (pixels), s1 (sar_db, sar_ok), coh (coherence, coh_ok)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.dataset.columns import SampleRecord
from pipeline.dataset.loader import SampleDataset
from pipeline.dataset.writer import write_shard
from pipeline.geo.sar import CENTI_DB_NODATA, COHERENCE_NODATA
from tests.pipeline.dataset.test_shards import record

SIZE = 6


def sample(sid: str, sar: bool) -> SampleRecord:
    """A sample whose every cube value says where it is: channel * 1000 + row * 10 + column."""
    rec = record(sid, True)
    where = np.add.outer(np.arange(SIZE) * 10, np.arange(SIZE))
    rec.pixels = np.stack([1000 + where, 2000 + where]).astype(np.uint16)
    rec.scl = np.full((SIZE, SIZE), 4, np.uint8)
    if sar:
        rec.sar_state = "ok"
        rec.sar_polarisations = ["VV", "VH"]
        db = np.stack([-1000 - where, -2000 - where]).astype(np.int16)
        db[0, 0, 0] = CENTI_DB_NODATA
        rec.sar_db = db
        rec.coh_state = "ok"
        coherence = where[None].astype(np.uint8)  # hundredths: 0.00 .. 0.55
        coherence[0, 0, 1] = COHERENCE_NODATA
        rec.coherence = coherence
    else:
        rec.sar_state = rec.coh_state = "no_acquisition"
    return rec


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("modal") / "00000.parquet"
    write_shard([sample("a", True), sample("b", False)], path, n_bands=2, size=SIZE)
    return path


def by_id(dataset: SampleDataset) -> dict[str, dict]:
    return {s["sample_id"]: s for s in dataset}


def test_s2_is_the_default_and_s1_adds_backscatter(shard):
    s2 = by_id(SampleDataset(shard, shuffle=False))
    assert set(s2["a"]) == {"pixels", "caption", "sample_id"}
    s1 = by_id(SampleDataset(shard, modalities=("s1",), shuffle=False))
    assert set(s1["a"]) == {"sar_db", "sar_ok", "caption", "sample_id"}
    both = by_id(SampleDataset(shard, modalities=("s2", "s1"), shuffle=False))
    assert set(both["a"]) == {"pixels", "sar_db", "sar_ok", "caption", "sample_id"}
    assert torch.equal(both["a"]["pixels"], s2["a"]["pixels"])
    db = both["a"]["sar_db"]
    stored = sample("a", True).sar_db
    assert stored is not None
    assert db.dtype == torch.float32 and db.shape == (2, SIZE, SIZE)
    assert torch.isnan(db[0, 0, 0]) and int(torch.isnan(db).sum()) == 1
    assert db[1, 2, 3].item() == pytest.approx(-20.23)
    raw = by_id(SampleDataset(shard, modalities=("s1",), raw=True, shuffle=False))
    assert raw["a"]["sar_db"].dtype == torch.int16
    assert np.array_equal(raw["a"]["sar_db"].numpy(), stored)
    assert raw["a"]["sar_ok"] is True


def test_a_sample_without_sar_is_nodata_of_the_same_shape_and_batches_collate(shard):
    dataset = SampleDataset(shard, modalities=("s2", "s1"), shuffle=False)
    b = by_id(dataset)["b"]
    assert b["sar_ok"] is False and b["sar_db"].shape == (2, SIZE, SIZE)
    assert bool(torch.isnan(b["sar_db"]).all())
    assert b["pixels"].shape == (2, SIZE, SIZE) and b["caption"] == "A caption."
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["sar_db"].shape == (2, 2, SIZE, SIZE)
    assert batch["sar_ok"].tolist() == [True, False]
    raw = by_id(SampleDataset(shard, modalities=("s1",), raw=True, polarisations=["VH"]))
    assert raw["b"]["sar_db"].shape == (1, SIZE, SIZE)
    assert bool((raw["b"]["sar_db"] == CENTI_DB_NODATA).all())


def test_polarisations_are_chosen_like_bands(shard):
    vh = by_id(SampleDataset(shard, modalities=("s1",), raw=True, polarisations=["VH"]))
    assert vh["a"]["sar_db"].shape == (1, SIZE, SIZE)
    assert vh["a"]["sar_db"][0, 2, 3].item() == -2023
    with pytest.raises(KeyError, match="polarisation HH is not in sample a"):
        list(SampleDataset(shard, modalities=("s1",), polarisations=["HH"]))


@pytest.mark.parametrize("random_crop", [True, False])
def test_a_crop_is_the_same_window_of_every_modality(shard, random_crop):
    dataset = SampleDataset(
        shard, modalities=("s1", "s2"), raw=True, crop=3, random_crop=random_crop, seed=7
    )
    windows = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        a = by_id(dataset)["a"]
        optical = a["pixels"][1].numpy().astype(int) - 2000
        radar = -2000 - a["sar_db"][1].numpy().astype(int)
        assert a["pixels"].shape == a["sar_db"].shape == (2, 3, 3)
        assert np.array_equal(optical, radar)
        windows.add(int(optical[0, 0]))
    assert len(windows) > 1 if random_crop else windows == {11}


def test_s1_on_shards_without_sar_columns_is_refused(tmp_path):
    path = tmp_path / "00000.parquet"
    write_shard([sample("a", False)], path, n_bands=2, size=SIZE, version="2.0")
    assert len(SampleDataset(path)) == 1
    with pytest.raises(ValueError, match="no s1 column"):
        SampleDataset(path, modalities=("s2", "s1"))
    with pytest.raises(ValueError, match="no coh column"):
        SampleDataset(path, modalities=("coh",))
    with pytest.raises(ValueError, match="choose one or more of s2, s1, coh"):
        SampleDataset(path, modalities=("s3",))


def test_coh_gives_coherence_as_a_fraction_and_whether_the_sample_has_it(shard):
    coh = by_id(SampleDataset(shard, modalities=("coh",), shuffle=False))
    assert set(coh["a"]) == {"coherence", "coh_ok", "caption", "sample_id"}
    a, b = coh["a"], coh["b"]
    assert a["coh_ok"] is True and b["coh_ok"] is False
    assert a["coherence"].dtype == torch.float32 and a["coherence"].shape == (1, SIZE, SIZE)
    assert a["coherence"][0, 2, 3].item() == pytest.approx(0.23)
    assert torch.isnan(a["coherence"][0, 0, 1]) and int(torch.isnan(a["coherence"]).sum()) == 1
    assert b["coherence"].shape == (1, SIZE, SIZE) and bool(torch.isnan(b["coherence"]).all())
    raw = by_id(SampleDataset(shard, modalities=("coh",), raw=True, shuffle=False))
    assert raw["a"]["coherence"].dtype == torch.uint8
    assert raw["a"]["coherence"][0, 2, 3].item() == 23
    assert bool((raw["b"]["coherence"] == COHERENCE_NODATA).all())
    every = SampleDataset(shard, modalities=("s2", "s1", "coh"), shuffle=False)
    batch = next(iter(DataLoader(every, batch_size=2)))
    assert batch["coherence"].shape == (2, 1, SIZE, SIZE)
    assert batch["coh_ok"].tolist() == batch["sar_ok"].tolist() == [True, False]


def test_a_crop_cuts_the_same_window_of_coherence(shard):
    dataset = SampleDataset(
        shard, modalities=("s2", "coh"), raw=True, crop=3, random_crop=True, seed=3
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)
        a = by_id(dataset)["a"]
        optical = a["pixels"][0].numpy().astype(int) - 1000
        coherence = a["coherence"][0].numpy().astype(int)
        valid = coherence != COHERENCE_NODATA
        assert np.array_equal(optical[valid], coherence[valid])
