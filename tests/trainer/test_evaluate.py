"""Evaluation, embeddings and exports of a trained model, through the CLI where users go."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import CLIPModel

from flows.cli import main
from pipeline.dataset.loader import SampleDataset
from trainer.checkpoints import load_model_folder
from trainer.data import to_model_input
from trainer.embed import EMBEDDING_METADATA_KEY
from trainer.evaldata import open_benchmark
from trainer.evaldata.fake import write_fake_bigearthnet, write_fake_eurosat
from trainer.evaluate import evaluate_benchmark, score_embeddings
from trainer.heldout import MULTI_LABEL_SHARE, held_out_labels
from trainer.model import MultispectralCLIP


def test_perfect_embeddings_score_one_and_shuffled_labels_do_not():
    rng = np.random.default_rng(0)
    text = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(3, 8))).float(), dim=1)
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 2])
    image = text[labels] + 0.01 * torch.from_numpy(rng.normal(size=(8, 8))).float()
    targets = np.eye(3, dtype=bool)[labels]
    result = score_embeddings(
        "x",
        "test",
        ["a", "b", "c"],
        image,
        text,
        labels=labels,
        targets=targets,
        bootstrap=20,
        seed=0,
    )
    assert result.accuracy == 1.0 and result.map_at_100 == 1.0
    assert result.balanced_accuracy == 1.0
    assert result.chance_uniform == pytest.approx(1 / 3)
    assert result.chance_majority == pytest.approx(4 / 8)
    wrong = (labels + 1) % 3
    shuffled = score_embeddings(
        "x",
        "test",
        ["a", "b", "c"],
        image,
        text,
        labels=wrong,
        targets=np.eye(3, dtype=bool)[wrong],
        bootstrap=20,
        seed=0,
    )
    assert shuffled.accuracy == 0.0


def test_held_out_labels_are_the_dominant_land_cover(small_release: Path):
    labelled = held_out_labels(str(small_release), "test", min_class_samples=1)
    assert labelled.labels and len(labelled.classes) >= 2
    table = pq.read_table(
        sorted((small_release / "data").glob("test-*.parquet")), columns=["sample_id", "context"]
    )
    for sid, context in zip(*table.to_pydict().values(), strict=True):
        if sid not in labelled.labels:
            continue
        cover = {c["class"]: c["share"] for c in context["land_cover"]}
        top = max(cover, key=lambda c: cover[c])
        assert labelled.classes[labelled.labels[sid]] == top
        expected = {c for c, share in cover.items() if share >= MULTI_LABEL_SHARE}
        got = {labelled.classes[i] for i in np.flatnonzero(labelled.targets[sid])}
        assert got == expected & set(labelled.classes)
    with pytest.raises(ValueError, match="zero-shot needs two"):
        held_out_labels(str(small_release), "test", min_class_samples=10_000)


def test_benchmarks_evaluate_single_and_multi_label(trained_run: Path, tmp_path: Path):
    loaded = load_model_folder(trained_run / "model")
    bands = loaded.preprocessing.bands
    eurosat = open_benchmark(
        "eurosat", write_fake_eurosat(tmp_path / "es", per_class=2), bands=bands
    )
    result = evaluate_benchmark(loaded, eurosat, batch_size=4, bootstrap=20)
    assert result.samples == len(eurosat) and len(result.classes) == 10
    assert not result.multilabel and result.chance_uniform == pytest.approx(0.1)
    assert result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    ben = open_benchmark("bigearthnet", write_fake_bigearthnet(tmp_path / "ben"), bands=bands)
    multi = evaluate_benchmark(loaded, ben, batch_size=4, bootstrap=20)
    assert multi.multilabel and multi.balanced_accuracy is None and len(multi.classes) == 19
    wrong_bands = open_benchmark("eurosat", tmp_path / "es", bands=("B04", "B03", "B02"))
    with pytest.raises(ValueError, match="model's bands"):
        evaluate_benchmark(loaded, wrong_bands)


def test_eval_cli_scores_benchmarks_and_the_held_out_split(
    trained_run: Path, small_release: Path, tmp_path: Path, capsys
):
    root = write_fake_eurosat(tmp_path / "es")
    code = main(
        [
            "eval",
            str(trained_run / "model"),
            "--benchmark",
            f"eurosat={root}",
            "--held-out",
            str(small_release),
            "--min-class-samples",
            "1",
            "--bootstrap",
            "10",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["dataset"] for r in results] == ["held-out", "eurosat"]
    assert "| eurosat |" in (tmp_path / "eval" / "eval.md").read_text()
    assert "zero-shot evaluation" in capsys.readouterr().out
    assert main(["eval", str(trained_run / "model")]) == 2
    assert main(["eval", str(tmp_path), "--held-out", str(small_release)]) == 2
    assert "not an eocap model folder" in capsys.readouterr().err


def test_embed_cli_writes_one_normalised_vector_per_sample(
    trained_run: Path, small_release: Path, tmp_path: Path
):
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(trained_run / "model"), str(small_release), str(out)]) == 0
    table = pq.read_table(out)
    expected = pq.read_table(small_release / "metadata.parquet")["sample_id"].to_pylist()
    assert sorted(table["sample_id"].to_pylist()) == sorted(expected)
    vectors = np.stack(table["vector"].to_numpy(zero_copy_only=False))
    assert vectors.shape == (len(expected), 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    meta = json.loads(table.schema.metadata[EMBEDDING_METADATA_KEY])
    assert meta["bands"][0] == "B02" and meta["dim"] == 128
    assert not list(tmp_path.glob(".*partial"))


def test_exported_checkpoint_loads_in_clipmodel_with_the_trainers_embeddings(
    trained_run: Path, small_release: Path, tmp_path: Path
):
    checkpoint = trained_run / "checkpoints" / "step-0000003.pt"
    folder = tmp_path / "exported"
    assert main(["export-model", str(checkpoint), str(folder)]) == 0
    saved = torch.load(checkpoint, weights_only=False)
    trainer_model = MultispectralCLIP.from_description(saved["model_description"])
    trainer_model.load_state_dict(saved["model"])
    trainer_model.eval()
    loaded = load_model_folder(folder)
    sample = next(
        iter(
            SampleDataset(
                small_release,
                bands=loaded.preprocessing.bands,
                raw=True,
                shuffle=False,
            )
        )
    )
    pixels = to_model_input(sample["pixels"][None], loaded.preprocessing)
    ids = loaded.tokenizer.encode([sample["caption"]], loaded.context_length)
    hf = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        ours_image = trainer_model.encode_image(pixels, normalize=False)
        ours_text = trainer_model.encode_text(ids, normalize=False)
        assert torch.allclose(
            hf.get_image_features(pixel_values=pixels).pooler_output, ours_image, atol=1e-5
        )
        assert torch.allclose(
            hf.get_text_features(input_ids=ids).pooler_output, ours_text, atol=1e-5
        )
    assert (folder / "open_clip_model.safetensors").is_file()
    assert json.loads((folder / "open_clip_config.json").read_text())["eocap"]["in_chans"] == 10
    assert main(["export-model", str(tmp_path / "nope.pt"), str(tmp_path / "x")]) == 2


def test_model_card_names_bands_normalisation_and_evaluation(trained_run: Path):
    card = (trained_run / "model" / "README.md").read_text()
    assert "| 7 | B8A |" in card
    assert "mAP@100" in card and "held-out" in card
    assert "ODbL" in card
