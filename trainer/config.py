"""The train config: one typed, validated, documented description of a training run.

YAML like the run config; every field has a default, and the defaults train the ``tiny``
model from scratch on the demo release (``eocap demo`` then ``eocap release output/demo
output/demo-release``) in a few CPU minutes. Environment variables override YAML:
``EOCAP_TRAIN_`` followed by the field path with ``__`` between levels, e.g.
``EOCAP_TRAIN_TRAIN__STEPS=50``. ``eocap train --print-config`` prints this file's defaults
with every field's documentation.

The Llama3-MS-CLIP recipe (docs/training.md)::

    data: {source: hf://datasets/ORG/NAME, bands: llama3-ms-clip-10}
    model:
      arch: vit-b-16
      init: openclip
      checkpoint: /models/open_clip_vit_b_16_laion2b_s34b_b88k.bin
      inflation: rgb-copy-zero
      tokenizer: clip
    train: {batch_size: 256, lr: 5.0e-5, steps: 20000, precision: bf16}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.yaml_config import ConfigSection, documented_yaml, load_yaml_model
from pipeline.dataset.bands import BAND_PRESETS, resolve_band_names
from trainer.model import ARCHS, INFLATIONS, Inflation
from trainer.text import LONG_CAPTIONS, LongCaptions

__all__ = [
    "ENV_PREFIX",
    "BenchmarkRef",
    "DataConfig",
    "EvalConfig",
    "LoopConfig",
    "ModelConfig",
    "TrainConfig",
    "default_train_yaml",
    "docs_with_config_reference",
    "load_train_config",
]

ENV_PREFIX = "EOCAP_TRAIN_"


class DataConfig(ConfigSection):
    """Which samples train the model, and how their pixels are prepared."""

    source: str = Field(
        default="output/demo-release",
        description="A release: a folder, or an http(s)://, s3:// or hf:// URL (docs/release.md).",
    )
    train_split: str = Field(default="train", description="The release split trained on.")
    eval_split: str = Field(
        default="test", description="The held-out split of the `held_out` evaluation."
    )
    bands: str | list[str] = Field(
        default="llama3-ms-clip-10",
        description=f"Input bands: a preset ({', '.join(BAND_PRESETS)}) or ESA band names.",
    )
    band_stats: str | None = Field(
        default=None,
        description="Per-band mean/std JSON (band_stats.json layout) to normalise with; "
        "null: the release's band_stats.json.",
    )
    polarisations: list[str] = Field(
        default=["VV", "VH"],
        description="Sentinel-1 channels read when model.modalities has s1 (dB; normalised by "
        "band_stats' sar_db entries, else SSL4EO-S12's VV/VH statistics).",
    )
    crop: int | None = Field(
        default=None,
        description="Crop chips to this many native pixels first (random in training, centre "
        "in evaluation); null: whole chips. Then resized (bicubic) to model.image_size.",
    )
    num_workers: int = Field(
        default=2, ge=0, description="DataLoader worker processes per GPU/process."
    )
    shuffle_buffer: int = Field(default=256, ge=1, description="Samples in the shuffle buffer.")

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, v: str | list[str]) -> str | list[str]:
        try:
            resolve_band_names(v)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return v

    def band_names(self) -> tuple[str, ...]:
        """The input bands' ESA names, in channel order."""
        return tuple(b.name for b in resolve_band_names(self.bands))


class ModelConfig(ConfigSection):
    """The model: sizes, where its weights start, its text vocabulary."""

    arch: str = Field(default="tiny", description=f"Architecture: {', '.join(ARCHS)}.")
    image_size: int | None = Field(
        default=None, gt=0, description="Input side in pixels; null: the architecture's."
    )
    init: Literal["scratch", "openclip", "hf"] = Field(
        default="scratch",
        description="Start from random weights, an OpenCLIP .pt/.bin/.safetensors file, or a "
        "Hugging Face CLIPModel folder (model.checkpoint).",
    )
    checkpoint: str | None = Field(
        default=None, description="Local path of the RGB (or already multispectral) checkpoint."
    )
    inflation: Inflation = Field(
        default="rgb-copy-zero",
        description=f"How an RGB patch embedding becomes N bands: {', '.join(INFLATIONS)}.",
    )
    quick_gelu: bool = Field(
        default=False,
        description="QuickGELU activations: OpenAI-trained checkpoints; LAION ones use GELU.",
    )
    tokenizer: Literal["clip", "captions"] = Field(
        default="captions",
        description="clip: OpenAI CLIP's BPE (required with a checkpoint); captions: a BPE "
        "trained on the training captions (from scratch).",
    )
    vocab_size: int = Field(
        default=2048, ge=300, description="Vocabulary of the captions tokenizer."
    )
    context_length: int = Field(
        default=77,
        ge=8,
        description="Text positions; above a checkpoint's, its positions are interpolated.",
    )
    long_captions: LongCaptions = Field(
        default="sentences",
        description=f"Captions longer than the context: {', '.join(LONG_CAPTIONS)} "
        "(docs/training.md); counted either way.",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward: less memory, slower."
    )
    modalities: list[Literal["s2", "s1", "coh"]] = Field(
        default=["s2"],
        description="Input modalities: [s2] is the plain CLIP (Hugging Face and OpenCLIP "
        "exports); any other set, e.g. [s2, s1], the modality-aware tower (trainer/modal.py), "
        "which embeds any subset of them and of their channels.",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in ARCHS:
            raise ValueError(f"unknown arch {v!r}: use one of {', '.join(ARCHS)}")
        return v

    @field_validator("modalities")
    @classmethod
    def _distinct_modalities(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"modalities {v}: name each of s2, s1, coh at most once, at least one")
        return v

    @model_validator(mode="after")
    def _checkpoint_given(self) -> ModelConfig:
        if self.init != "scratch":
            if not self.checkpoint:
                raise ValueError(f"init {self.init} needs model.checkpoint (a local path)")
            if self.tokenizer != "clip":
                raise ValueError(
                    f"init {self.init}: a CLIP checkpoint's text tower reads CLIP's BPE; "
                    "set model.tokenizer: clip"
                )
        return self


class LoopConfig(ConfigSection):
    """The optimisation: steps, batch, optimiser, schedule, precision, checkpoints, logs."""

    output_dir: str = Field(
        default="output/train",
        description="Checkpoints, logs (metrics.csv), evaluation and the exported model.",
    )
    steps: int = Field(default=400, ge=1, description="Optimiser steps in total.")
    batch_size: int = Field(default=32, ge=2, description="Pairs per step per process.")
    loss: Literal["clip", "siglip"] = Field(
        default="clip", description="clip: symmetric InfoNCE; siglip: sigmoid pairwise loss."
    )
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(
        default=0.2,
        ge=0,
        description="AdamW weight decay (not on gains, biases or the temperature).",
    )
    betas: tuple[float, float] = Field(default=(0.9, 0.98), description="AdamW betas.")
    eps: float = Field(default=1e-6, gt=0, description="AdamW epsilon.")
    warmup_steps: int = Field(default=40, ge=0, description="Linear warmup, then cosine decay.")
    grad_clip: float | None = Field(
        default=1.0, description="Clip the gradient norm to this; null: no clipping."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    seed: int = Field(default=0, description="Seed of weights, shuffling and caption draws.")
    log_every: int = Field(default=10, ge=1, description="Steps between metrics.csv rows.")
    checkpoint_every: int = Field(
        default=100,
        ge=1,
        description="Steps between checkpoints (a multiple of data.num_workers, so a resume "
        "replays the batches in the same order).",
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Newest checkpoints kept.")
    modality_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Probability of dropping one whole modality of a sample that has two "
        "(never its last); needs two model.modalities.",
    )
    channel_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Probability of dropping each channel (at least one kept per modality); "
        "needs the modality-aware tower (model.modalities other than [s2]).",
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"AdamW betas {v} must lie in [0, 1)")
        return v


class BenchmarkRef(ConfigSection):
    """One benchmark dataset on disk (docs/evaluation-datasets.md)."""

    name: Literal["eurosat", "bigearthnet", "meterml"] = Field(description="Which benchmark.")
    root: str = Field(description="The dataset's folder, in its published layout.")
    split: str | None = Field(default="test", description="Its split; null: every sample.")


class EvalConfig(ConfigSection):
    """Evaluation at the end of training (and by ``eocap eval``)."""

    initial: bool = Field(
        default=True,
        description="Also score the model as it started (random, or the checkpoint's inflated "
        "weights): the report shows what training added.",
    )
    held_out: bool = Field(
        default=True,
        description="Zero-shot and retrieval on the release's held-out split, classes from "
        "the Overture context.",
    )
    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, description="EuroSAT-MS, BigEarthNet-S2, METER-ML on disk."
    )
    batch_size: int = Field(default=64, ge=1, description="Images per forward pass.")
    bootstrap: int = Field(
        default=1000, ge=0, description="Bootstrap resamples of the confidence intervals."
    )
    min_class_samples: int = Field(
        default=3,
        ge=1,
        description="Held-out classes need this many samples to be scored.",
    )


class TrainConfig(ConfigSection):
    """A whole training run."""

    name: str = Field(default="eocap-msclip-demo", description="Run name, in the model card.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _dropout_has_a_tower(self) -> TrainConfig:
        modalities = self.model.modalities
        if self.train.modality_dropout and len(modalities) < 2:
            raise ValueError(f"train.modality_dropout needs two model.modalities, not {modalities}")
        if self.train.channel_dropout and modalities == ["s2"]:
            raise ValueError(
                "train.channel_dropout needs the modality-aware tower: set model.modalities "
                "(e.g. [s2, s1])"
            )
        return self

    @model_validator(mode="after")
    def _resume_order(self) -> TrainConfig:
        workers = max(self.data.num_workers, 1)
        if self.train.checkpoint_every % workers:
            raise ValueError(
                f"train.checkpoint_every {self.train.checkpoint_every} is not a multiple of "
                f"data.num_workers {workers}: a resume would reorder batches"
            )
        return self

    @property
    def output_dir(self) -> Path:
        """Where the run writes."""
        return Path(self.train.output_dir)


def load_train_config(
    path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> TrainConfig:
    """Load a train config from YAML (or defaults), apply ``EOCAP_TRAIN_*``, validate.

    Raises:
        ConfigError: naming the first invalid field.
    """
    return load_yaml_model(
        TrainConfig, path, os.environ if env is None else env, env_prefix=ENV_PREFIX
    )


def default_train_yaml() -> str:
    """The default train config as commented YAML."""
    return documented_yaml(
        TrainConfig,
        "eocap train config: every field with its default. Edit and pass to `eocap train`.",
    )


_DOCS_START = "<!-- train-config:start -->"
_DOCS_END = "<!-- train-config:end -->"


def docs_with_config_reference(text: str) -> str:
    """``text`` (docs/training.md) with the default config between its markers made current.

    Run ``python -m trainer.config docs/training.md`` to rewrite the file; a test fails when
    the page and the config drift apart.
    """
    start, end = text.index(_DOCS_START) + len(_DOCS_START), text.index(_DOCS_END)
    return f"{text[:start]}\n```yaml\n{default_train_yaml()}```\n{text[end:]}"


if __name__ == "__main__":
    import sys

    page = Path(sys.argv[1])
    page.write_text(docs_with_config_reference(page.read_text()))
