"""The train config: documented defaults, env and --set overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from pipeline.core.errors import ConfigError
from trainer.config import (
    TrainConfig,
    default_train_yaml,
    docs_with_config_reference,
    load_train_config,
)

ROOT = Path(__file__).resolve().parents[2]


def test_print_config_round_trips_to_the_defaults(tmp_path: Path, capsys):
    assert main(["train", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed == default_train_yaml()
    path = tmp_path / "train.yaml"
    path.write_text(printed)
    assert load_train_config(path, env={}) == TrainConfig()
    assert "# Input bands: a preset" in printed  # every field carries its description


def test_training_docs_hold_the_current_config_reference():
    page = (ROOT / "docs" / "training.md").read_text()
    assert page == docs_with_config_reference(page), (
        "docs/training.md drifted from the train config: run "
        "`python -m trainer.config docs/training.md`"
    )


def test_env_and_set_override_yaml(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 7, "batch_size": 8}}))
    config = load_train_config(path, env={"EOCAP_TRAIN_TRAIN__STEPS": "9"})
    assert (config.train.steps, config.train.batch_size) == (9, 8)
    assert config.with_updates({"model.arch": "vit-b-16"}).model.arch == "vit-b-16"


def test_bad_configs_fail_with_one_line_naming_the_field(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"stepz": 3}}))
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_train_config(path, env={})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "train.stepz" in err and "Traceback" not in err
    assert main(["train", "--set", "model.arch=vit-h-14"]) == 2
    assert "unknown arch" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--set",
                "data.source=/nonexistent",
                "--set",
                f"train.output_dir={tmp_path / 'out'}",
            ]
        )
        == 2
    )
    assert "must be a release" in capsys.readouterr().err
