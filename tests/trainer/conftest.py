"""A small real release and a short training run on it, shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline.dataset.release_fixture import build_release
from trainer.config import TrainConfig, load_train_config


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
    """The real ``eocap release`` of the small dataset (train, validation and test splits)."""
    work = tmp_path_factory.mktemp("trainer-release")
    return build_release(review_dataset, work, work / "release")


@pytest.fixture(scope="session")
def trained_run(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-step run (model folder, checkpoints, metrics) of the tiny model."""
    from trainer.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    train(small_config(small_release, out))
    return out
