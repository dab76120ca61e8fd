"""A small real release and a short training run on it, shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.dataset.release import ReleaseOptions, make_release
from pipeline.dataset.splits import SplitRule
from tests.pipeline.dataset.release_fixture import reviewed_copy
from trainer.config import TrainConfig, load_train_config

HELD_OUT_RULE = SplitRule((0.5, 0.0, 0.5), seed=2, cell_deg=0.01)
"""Puts a cropland and a forest location of the small dataset in test, the rest in train."""


def small_config(release: Path, out: Path, **updates: object) -> TrainConfig:
    """The demo defaults shrunk for tests: 32 px inputs, batch 4, no workers, few steps."""
    base = load_train_config(None, env={}).with_updates(
        {
            "data.source": str(release),
            "data.num_workers": 0,
            "data.shuffle_buffer": 4,
            "model.image_size": 32,
            "model.vocab_size": 300,
            "train.output_dir": str(out),
            "train.batch_size": 4,
            "train.steps": 6,
            "train.warmup_steps": 2,
            "train.log_every": 1,
            "train.checkpoint_every": 3,
            "eval.bootstrap": 50,
            "eval.min_class_samples": 1,
        }
    )
    return base.with_updates(dict(updates)) if updates else base


@pytest.fixture(scope="session")
def small_release(review_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ``eocap release`` of the small dataset.

    4 train samples (cropland) and 4 test samples (2 cropland, 2 forest) for the held-out
    evaluation.
    """
    work = tmp_path_factory.mktemp("trainer-release")
    options = ReleaseOptions(split_rule=HELD_OUT_RULE, samples_per_file=3, rows_per_group=1)
    make_release(reviewed_copy(review_dataset, work / "dataset"), work / "release", options)
    return work / "release"


@pytest.fixture(scope="session")
def trained_run(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step ``eocap train`` run of the tiny model.

    It leaves a model folder with its card, checkpoints, metrics and the held-out evaluation.
    """
    from flows.cli import main

    work = tmp_path_factory.mktemp("trained")
    config = work / "train.yaml"
    config.write_text(
        yaml.safe_dump(small_config(small_release, work / "run").model_dump(mode="json"))
    )
    assert main(["train", str(config)]) == 0
    return work / "run"
