"""The training loop: runs, resumes exactly after a kill, runs under DDP, refuses bad starts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import ConfigError
from tests.trainer.conftest import small_config
from trainer.train import METRICS_COLUMNS, TrainError, lr_factor, train

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_config(config: object, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))  # type: ignore[attr-defined]
    return path


def test_a_run_writes_checkpoints_metrics_and_a_model_folder(trained_run: Path):
    rows = _rows(trained_run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert list(rows[0]) == list(METRICS_COLUMNS)
    assert all(float(r["loss"]) > 0 for r in rows)
    assert (
        int(rows[-1]["captions_whole"])
        + int(rows[-1]["captions_sentences"])
        + int(rows[-1]["captions_cut"])
        == 6 * 4
    )  # every caption of every step counted once
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == [
        "step-0000003.pt",
        "step-0000006.pt",
    ]
    settings = json.loads((trained_run / "model" / "eocap_model.json").read_text())
    assert settings["preprocessing"]["bands"][7] == "B8A"
    assert len(settings["preprocessing"]["mean"]) == 10


def test_killed_run_resumes_and_reproduces_the_uninterrupted_losses(
    small_release: Path, tmp_path: Path
):
    steps = 40
    # Every run in a process of its own with one thread: the same summation order in each,
    # whatever else the test process has run or the machine's load.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    whole = small_config(small_release, tmp_path / "whole", **{"train.steps": steps})
    whole_path = _write_config(whole, tmp_path / "whole.yaml")
    train_cli = [sys.executable, "-m", "flows.cli", "train"]
    done = subprocess.run([*train_cli, str(whole_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = _rows(tmp_path / "whole" / "metrics.csv")

    killed_dir = tmp_path / "killed"
    config = small_config(
        small_release, killed_dir, **{"train.steps": steps, "train.keep_checkpoints": 50}
    )
    path = _write_config(config, tmp_path / "train.yaml")
    log = tmp_path / "child.log"
    with log.open("wb") as sink:
        child = subprocess.Popen(
            [*train_cli, str(path)],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        first = killed_dir / "checkpoints" / "step-0000003.pt"
        deadline = time.monotonic() + 120
        while not first.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
    checkpoints = sorted((killed_dir / "checkpoints").glob("step-*.pt"))
    assert checkpoints, log.read_text()
    stopped_at = int(checkpoints[-1].stem.split("-")[1])
    assert stopped_at < steps, "the run finished before it was killed: make it longer"
    assert not list((killed_dir / "checkpoints").glob(".*.partial"))

    done = subprocess.run(
        [*train_cli, str(path), "--resume"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from step {stopped_at})" in " ".join(done.stdout.split()), done.stdout
    got = _rows(killed_dir / "metrics.csv")
    assert [r["step"] for r in got] == [r["step"] for r in expected]  # each step once
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["loss"] == theirs["loss"], (mine, theirs)
        assert mine["captions_whole"] == theirs["captions_whole"]


def test_two_processes_train_with_ddp_on_cpu(small_release: Path, tmp_path: Path):
    config = small_config(
        small_release,
        tmp_path / "ddp",
        **{"train.steps": 4, "train.checkpoint_every": 2, "train.batch_size": 2},
    )
    path = _write_config(config, tmp_path / "train.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", str(path), "--procs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path / "ddp" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # rank 0 writes, once per step
    saved = __import__("torch").load(
        tmp_path / "ddp" / "checkpoints" / "step-0000004.pt", weights_only=False
    )
    assert len(saved["loader"]) == 2  # both ranks' loader states, for an exact resume
    assert saved["loader"][0]["rank"] == 0 and saved["loader"][1]["rank"] == 1
    assert (tmp_path / "ddp" / "model" / "README.md").is_file()


def test_siglip_trains_a_learnable_bias_and_saves_it(small_release: Path, tmp_path: Path):
    config = small_config(
        small_release,
        tmp_path / "siglip",
        **{"train.loss": "siglip", "train.steps": 3, "eval.initial": False},
    )
    result = train(config)
    assert result.steps == 3 and all(loss > 0 for loss in result.losses)
    settings = json.loads((tmp_path / "siglip" / "model" / "eocap_model.json").read_text())
    assert settings["model"]["logit_bias"] is True
    assert settings["logit_bias"] != pytest.approx(-10.0, abs=1e-9)  # it was trained
    assert not (tmp_path / "siglip" / "model-initial").exists()


def test_a_second_start_in_a_used_output_dir_needs_resume(trained_run: Path, small_release: Path):
    with pytest.raises(TrainError, match="--resume"):
        train(small_config(small_release, trained_run))


def test_resume_with_nothing_to_resume_says_so(small_release: Path, tmp_path: Path):
    with pytest.raises(TrainError, match="nothing to resume"):
        train(small_config(small_release, tmp_path / "empty"), resume=True)


def test_config_refuses_checkpoints_that_would_reorder_batches(small_release: Path, tmp_path):
    with pytest.raises(ConfigError, match="multiple of"):
        small_config(
            small_release, tmp_path, **{"data.num_workers": 2, "train.checkpoint_every": 3}
        )
    with pytest.raises(ConfigError, match=r"model\.checkpoint"):
        small_config(small_release, tmp_path, **{"model.init": "openclip"})
    with pytest.raises(ConfigError, match="tokenizer: clip"):
        small_config(
            small_release, tmp_path, **{"model.init": "hf", "model.checkpoint": str(tmp_path)}
        )
    with pytest.raises(ConfigError, match="unknown band"):
        small_config(small_release, tmp_path, **{"data.bands": ["B02", "B13"]})


def test_too_small_a_split_for_the_batch_is_a_clear_error(small_release: Path, tmp_path: Path):
    with pytest.raises(TrainError, match=r"lower train\.batch_size"):
        train(small_config(small_release, tmp_path / "big", **{"train.batch_size": 512}))


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, warmup=4, total=12) for s in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        factors[4] == 1.0
        and factors[-1] > 0
        and factors == sorted(factors[:4]) + sorted(factors[4:], reverse=True)
    )
    assert lr_factor(12, warmup=4, total=12) == pytest.approx(0.0)
