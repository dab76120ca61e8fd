"""Few-shot probes: spatial splits, budget draws, task rules, label files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image

from trainer.probe import (
    TASKS,
    LabelSet,
    ReleaseSample,
    budget_draw,
    file_labels,
    read_release_samples,
    run_probe,
    spatial_blocks,
    spatial_split,
    task_labels,
)

BLOCK_DEG = 0.05


def _places(n_locations: int, periods: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of ``periods`` samples at each of ``n_locations`` random locations."""
    rng = np.random.default_rng(seed)
    lon = np.repeat(rng.uniform(10.0, 10.5, n_locations), periods)
    lat = np.repeat(rng.uniform(47.0, 47.5, n_locations), periods)
    return lon, lat


def _samples(lon: np.ndarray, lat: np.ndarray) -> dict[str, ReleaseSample]:
    """Release samples with a 0.01° square footprint around each centre."""
    return {
        f"s{i}": ReleaseSample(
            float(x), float(y), shapely.box(x - 0.005, y - 0.005, x + 0.005, y + 0.005).wkb, None
        )
        for i, (x, y) in enumerate(zip(lon, lat, strict=True))
    }


@pytest.mark.parametrize("seed", range(12))
def test_spatial_split_never_shares_a_block_or_location(seed):
    lon, lat = _places(60, 4, seed)
    blocks = spatial_blocks(lon, lat, BLOCK_DEG)
    labels = (lon > 10.25).astype(np.int64)
    train, test = spatial_split(blocks, labels, test_fraction=0.3, seed=seed)
    assert len(train) and len(test)
    assert sorted([*train, *test]) == list(range(len(lon)))
    assert not set(blocks[train]) & set(blocks[test])
    places = list(zip(lon, lat, strict=True))
    assert not {places[i] for i in train} & {places[i] for i in test}


def test_spatial_split_changes_with_the_seed():
    lon, lat = _places(60, 1, seed=0)
    blocks = spatial_blocks(lon, lat, BLOCK_DEG)
    labels = (lon > 10.25).astype(np.int64)
    tests = {
        tuple(spatial_split(blocks, labels, test_fraction=0.3, seed=seed)[1].tolist())
        for seed in range(5)
    }
    assert len(tests) == 5


def test_spatial_split_seeds_test_every_block_once():
    # Blocks of distinct class balance: scikit-learn's shuffle only breaks ties, so its folds
    # are the same for every random_state; the seed must still move the test set.
    blocks = np.repeat(np.arange(9), 10)
    labels = np.concatenate([(np.arange(10) < b + 1).astype(np.int64) for b in range(9)])
    tests = [spatial_split(blocks, labels, test_fraction=1 / 3, seed=s)[1] for s in range(3)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(90))  # disjoint, all covered


def test_spatial_blocks_are_grid_cells():
    blocks = spatial_blocks([10.01, 10.04, 10.06, 10.01], [47.01, 47.04, 47.01, 47.06], BLOCK_DEG)
    assert blocks[0] == blocks[1]
    assert len(set(blocks.tolist())) == 3


def test_spatial_split_needs_two_blocks():
    blocks = spatial_blocks([10.01, 10.02], [47.01, 47.02], BLOCK_DEG)
    with pytest.raises(ValueError, match="1 spatial block"):
        spatial_split(blocks, np.array([0, 1]), test_fraction=0.3, seed=0)


def test_budget_draw_caps_and_covers_every_class():
    labels = np.array([0] * 40 + [1] * 3 + [2] * 2)
    rng = np.random.default_rng(0)
    for budget in (3, 10, 44):
        draw = budget_draw(labels, budget, rng)
        assert len(draw) == budget
        assert len(set(draw.tolist())) == budget
        assert set(labels[draw].tolist()) == {0, 1, 2}
    assert budget_draw(labels, 500, rng).tolist() == list(range(len(labels)))
    assert len(budget_draw(labels, 2, rng)) == 2


def test_task_rules_on_contexts():
    context = {
        "land_cover": [{"class": "crop", "share": 0.6}, {"class": "forest", "share": 0.3}],
        "land_use": [{"class": "residential", "share": 0.12}],
        "water": [{"share": 0.03}, {"share": 0.03}],
        "building_share": 0.02,
    }
    labels = {name: task.label(context) for name, task in TASKS.items()}
    assert labels == {"vegetation": 0, "built_up": 1, "cropland": 1, "water": 1}
    empty = {"land_cover": [], "land_use": [], "water": [], "building_share": 0.0}
    assert {task.label(empty) for task in TASKS.values()} == {0}


def _probe(vectors: np.ndarray, labels: np.ndarray, lon, lat, **options):
    samples = _samples(lon, lat)
    ids = list(samples)
    label_set = LabelSet("t", ("a", "b"), dict(zip(ids, labels.tolist(), strict=True)), "test")
    return run_probe(ids, vectors.astype(np.float32), samples, [label_set], **options)


def _mean(report, model, budget, metric="balanced_accuracy"):
    (score,) = [s for s in report.scores if s.model == model and s.budget == budget]
    return score.summary()[f"{metric}_mean"]


def test_probe_separates_separable_embeddings_and_not_random_ones():
    lon, lat = _places(100, 2, seed=1)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, len(lon))
    labels[1::2] = labels[::2]  # both periods of a location share its label
    centres = np.array([[3.0] * 8, [-3.0] * 8])
    separable = centres[labels] + rng.normal(size=(len(lon), 8))
    noise = rng.normal(size=(len(lon), 8))
    options = {"budgets": (50, None), "seeds": (0, 1, 2)}
    good = _probe(separable, labels, lon, lat, **options)
    chance = _probe(noise, labels, lon, lat, **options)
    for model in ("logistic", "random_forest", "knn"):
        assert _mean(good, model, 50) > 0.9
        assert _mean(good, model, None, "accuracy") > 0.9
        assert abs(_mean(chance, model, None) - 0.5) < 0.15


def test_probe_reports_capped_budgets():
    lon, lat = _places(30, 1, seed=2)
    labels = (np.arange(30) % 2).astype(np.int64)
    vectors = np.random.default_rng(2).normal(size=(30, 4))
    report = _probe(vectors, labels, lon, lat, budgets=(10, 1000), seeds=(0, 1), models=("knn",))
    (task,) = report.tasks
    small, big = report.scores
    assert small.labels == [10, 10]
    assert small.capped_seeds == 0
    assert big.labels == task.train_sizes
    assert big.capped_seeds == 2
    assert "capped 2/2" in report.markdown()
    assert json.loads(json.dumps(report.to_json()))["scores"][1]["capped_seeds"] == 2


def test_probe_needs_two_classes_and_valid_settings():
    lon, lat = _places(10, 1, seed=3)
    with pytest.raises(ValueError, match="a probe needs two"):
        _probe(np.zeros((10, 2)), np.zeros(10, dtype=np.int64), lon, lat)
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="at least one seed"):
        _probe(np.zeros((10, 2)), labels, lon, lat, seeds=())
    with pytest.raises(ValueError, match=r"test fraction 1\.0 must lie in"):
        _probe(np.zeros((10, 2)), labels, lon, lat, test_fraction=1.0)


def _label_points(samples: dict[str, ReleaseSample]):
    """Points in s0 (water), s1 (two labels: ambiguous), s2 (crop), s3 (no label), no chip."""
    s0, s1, s2, s3 = samples["s0"], samples["s1"], samples["s2"], samples["s3"]
    lon = [s0.lon, s1.lon, s1.lon + 0.001, s2.lon + 0.002, s3.lon, 0.0]
    lat = [s0.lat, s1.lat, s1.lat, s2.lat, s3.lat, 0.0]
    return lon, lat, ["water", "water", "crop", "crop", None, "crop"]


def test_file_labels_from_geojson_and_parquet(tmp_path):
    samples = _samples(np.array([10.0, 10.1, 10.2, 10.3]), np.array([47.0, 47.1, 47.2, 47.3]))
    lon, lat, names = _label_points(samples)
    geojson = tmp_path / "points.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [x, y]},
                        "properties": {"cover": name},
                    }
                    for x, y, name in zip(lon, lat, names, strict=True)
                ],
            }
        )
    )
    table = tmp_path / "points.parquet"
    pq.write_table(pa.table({"lon": lon, "lat": lat, "cover": names}), table)
    for path in (geojson, table):
        labels = file_labels(path, samples, label_column="cover")
        assert labels.classes == ("crop", "water")
        assert labels.labels == {"s0": 1, "s2": 0}
        assert labels.unlabelled == 2
        assert labels.origin.endswith("5 points, 4 in a chip, 1 samples ambiguous")
    with pytest.raises(ValueError, match="no column 'label'"):
        file_labels(geojson, samples)


def test_task_labels_of_the_small_release(small_release):
    samples = read_release_samples(str(small_release))
    assert len(samples) == 8
    cropland = task_labels(TASKS["cropland"], samples)
    assert cropland.unlabelled == 0
    # Four locations, two periods each; one location is mostly cropland (57 %).
    positive = [sid for sid, label in cropland.labels.items() if label == 1]
    assert len(positive) == 2
    assert len({(samples[sid].lon, samples[sid].lat) for sid in positive}) == 1


def _write_points(path: Path, points: list[tuple[float, float, str]]) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [x, y]},
            "properties": {"label": label},
        }
        for x, y, label in points
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def test_probe_cli_end_to_end(trained_run, small_release, tmp_path):
    from flows.cli import main

    samples = read_release_samples(str(small_release))
    centres = sorted({(s.lon, s.lat) for s in samples.values()})
    labels_file = tmp_path / "east.geojson"
    _write_points(labels_file, [(x, y, "east" if x > 10.9 else "west") for x, y in centres])
    out = tmp_path / "probe"
    args = ["probe", str(trained_run / "model"), str(small_release), "--out", str(out)]
    options = ["--task", "cropland", "--labels", str(labels_file), "--seeds", "2"]
    options += ["--block-deg", "0.01", "--model", "knn", "--model", "logistic"]
    assert main(args + options) == 0

    assert pq.read_table(out / "embeddings.parquet").num_rows == len(samples)
    report = json.loads((out / "probe.json").read_text())
    assert [t["name"] for t in report["tasks"]] == ["cropland", "east"]
    east = report["tasks"][1]
    assert east["classes"] == {"east": 4, "west": 4}
    assert east["blocks"] == 4
    scores = [s for s in report["scores"] if s["task"] == "east"]
    assert {(s["model"], s["budget"]) for s in scores} == {
        (m, b) for m in ("knn", "logistic") for b in (10, 50, 100, 200, 500, "all")
    }
    for score in scores:
        assert score["labels"] == east["train_sizes"]
        assert score["capped_seeds"] == (0 if score["budget"] == "all" else 2)
    assert "## east" in (out / "probe.md").read_text()
    with Image.open(out / "learning-curves.png") as image:
        assert image.format == "PNG"
        assert image.size == (760, 260)
    svg = ElementTree.parse(out / "learning-curves.svg").getroot()
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert {"cropland", "east", "knn", "logistic"} <= set(titles)


def test_probe_cli_errors_in_one_line(small_release, tmp_path, capsys):
    from flows.cli import main

    missing = ["probe", str(tmp_path / "none.parquet"), str(small_release), "--out", str(tmp_path)]
    assert main(missing) == 2
    assert main([*missing, "--task", "forests"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("error:")
    assert "unknown task forests (known: vegetation, built_up, cropland, water)" in errors[1]
