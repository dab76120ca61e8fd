"""A modality-aware model through `eocap train`, resume, export, embed and the modality probe.

The small release has no SAR yet, so every sample trains and embeds as S2-only (the state a
sample without a Sentinel-1 acquisition is in); the channel dropout still acts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from benchmarks.modality_probe import modality_probe
from flows.cli import main
from tests.trainer.conftest import small_config
from trainer.checkpoints import MODAL_WEIGHTS, export_checkpoint, load_model_folder
from trainer.config import TrainConfig
from trainer.data import modal_input, prepared_samples
from trainer.embed import EMBEDDING_METADATA_KEY, embed_samples
from trainer.modal import ModalCLIP
from trainer.probe import read_embeddings
from trainer.train import train

MODAL = {
    "model.modalities": ["s2", "s1"],
    "train.modality_dropout": 0.5,
    "train.channel_dropout": 0.3,
}


def _config(release: Path, out: Path, **updates: object) -> TrainConfig:
    return small_config(release, out, **{**MODAL, **updates})


@pytest.fixture(scope="module")
def modal_run(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step `eocap train` run of a modality-aware tiny model."""
    work = tmp_path_factory.mktemp("modal-run")
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(_config(small_release, work / "run").model_dump(mode="json")))
    assert main(["train", str(config)]) == 0
    return work / "run"


def _losses(metrics: Path) -> list[str]:
    with metrics.open(newline="") as handle:
        return [row["loss"] for row in csv.DictReader(handle)]


def test_a_modal_run_writes_its_own_model_folder_and_card(modal_run: Path):
    folder = modal_run / "model"
    assert (folder / MODAL_WEIGHTS).is_file() and not (folder / "config.json").exists()
    settings = json.loads((folder / "eocap_model.json").read_text())
    assert settings["model"]["modalities"]["s1"] == ["VV", "VH"]
    assert settings["preprocessing"]["modalities"] == ["s2", "s1"]
    assert "no Hugging Face" in settings["formats"]
    assert "--drop-bands" in (folder / "README.md").read_text()
    assert isinstance(load_model_folder(folder).model, ModalCLIP)


def test_a_killed_modal_run_resumes_with_the_same_losses(
    modal_run: Path, small_release: Path, tmp_path: Path
):
    config = _config(small_release, tmp_path / "run")
    train(config, stop_after=3)
    result = train(config, resume=True)
    assert result.resumed_from == 3
    assert _losses(tmp_path / "run" / "metrics.csv") == _losses(modal_run / "metrics.csv")


def test_an_exported_checkpoint_embeds_as_the_model_folder(
    modal_run: Path, small_release: Path, tmp_path: Path
):
    checkpoint = sorted((modal_run / "checkpoints").glob("step-*.pt"))[-1]
    export_checkpoint(checkpoint, tmp_path / "exported")
    exported, trained = (
        load_model_folder(tmp_path / "exported"),
        load_model_folder(modal_run / "model"),
    )
    sample = next(iter(prepared_samples(str(small_release), None, trained.preprocessing)))
    pixels = modal_input(trained.preprocessing, pixels=sample["pixels"][None])
    with torch.no_grad():
        assert torch.equal(exported.model.encode_image(pixels), trained.model.encode_image(pixels))


def test_embed_chooses_modalities_and_drops_bands(
    modal_run: Path, small_release: Path, trained_run: Path, tmp_path: Path, capsys
):
    model = modal_run / "model"
    loaded = load_model_folder(model)
    every = embed_samples(loaded, str(small_release), tmp_path / "all.parquet")
    half = tmp_path / "half.parquet"
    args = ["embed", str(model), str(small_release), str(half), "--drop-bands", "B03,B05,B07"]
    assert main([*args, "--modalities", "s2"]) == 0
    ids, vectors = read_embeddings(half)
    assert len(ids) == every == 8
    metadata = json.loads(pq.read_schema(half).metadata[EMBEDDING_METADATA_KEY])
    assert "B03" not in metadata["channels"] and "B04" in metadata["channels"]
    _, full = read_embeddings(tmp_path / "all.parquet")
    assert not (full == vectors).all()
    # No sample of this release has SAR: an S1-only embedding has nothing to embed.
    assert (
        embed_samples(loaded, str(small_release), tmp_path / "s1.parquet", modalities=["s1"]) == 0
    )
    plain = ["embed", str(trained_run / "model"), str(small_release), str(tmp_path / "p.parquet")]
    assert main([*plain, "--drop-bands", "B05"]) != 0
    assert "plain S2 CLIP" in " ".join(capsys.readouterr().err.split())


def test_the_modality_probe_writes_both_tables_and_says_what_it_could_not_score(
    modal_run: Path, small_release: Path, tmp_path: Path
):
    summary = modality_probe(
        load_model_folder(modal_run / "model"),
        str(small_release),
        tmp_path,
        model_ref="modal",
        tasks=["cropland", "vegetation"],
        models=["logistic", "knn"],
        seeds=range(2),
        block_deg=0.001,
    )
    text = (tmp_path / "modality-probe.md").read_text()
    assert "## Views (all labels)" in text and "## Label budgets (view s2+s1)" in text
    for chart in ("modality-views", "modality-budgets"):
        assert (tmp_path / f"{chart}.svg").read_text().startswith("<svg")
        assert (tmp_path / f"{chart}.png").read_bytes().startswith(b"\x89PNG")
    assert summary["skipped_views"] == {"s1": "no sample has these channels"}
    assert set(summary["results"]) == {"s2", "s2+s1", "s2-half"}
    assert json.loads((tmp_path / "modality-probe.json").read_text()) == json.loads(
        json.dumps(summary)
    )
    scored = summary["results"]["s2"]["scores"]
    assert {s["task"] for s in scored} | set(summary["skipped_tasks"].get("s2", {})) == {
        "cropland",
        "vegetation",
    }


def test_probe_embeds_the_chosen_view_of_a_model_folder(
    modal_run: Path, small_release: Path, tmp_path: Path
):
    args = ["probe", str(modal_run / "model"), str(small_release), "--out", str(tmp_path)]
    options = ["--task", "vegetation", "--seeds", "1", "--block-deg", "0.001", "--model", "knn"]
    assert main([*args, *options, "--modalities", "s2", "--drop-bands", "B02,B04"]) == 0
    schema = pq.read_schema(tmp_path / "embeddings.parquet")
    channels = json.loads(schema.metadata[EMBEDDING_METADATA_KEY])["channels"]
    assert channels[:2] == ["B03", "B05"] and "VV" not in channels
    assert (tmp_path / "probe.md").is_file()
