"""Training data: released samples through the dataset contract's loader, as model inputs.

Pixels come from :class:`pipeline.dataset.loader.SampleDataset`: the bands by name, raw DN in
their stored dtype (uint16: half the bytes of float32 through the worker pipes), optionally
cropped. Normalisation with the model's per-band mean/std and the resize to the model's input
size run on the batch, on the training device (:func:`to_model_input`), so loader workers only
read, decode and crop. Captions are tokenised in the training process
(:func:`caption_ids`), with the caption-fit draws seeded per sample and epoch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

from pipeline.dataset.layout import ReleaseLayout
from pipeline.dataset.loader import (
    SampleDataset,
    open_parquet,
    parquet_files,
    read_release_file,
    sample_key,
)
from trainer.checkpoints import Preprocessing
from trainer.config import TrainConfig
from trainer.text import FitCounts, TextTokenizer

__all__ = [
    "caption_ids",
    "collate_pairs",
    "prepared_samples",
    "read_band_stats",
    "read_captions",
    "to_model_input",
    "train_loader",
]


def read_band_stats(config: TrainConfig) -> Mapping[str, Any]:
    """``data.band_stats``, else the release's band_stats.json (per-band raw-DN mean/std)."""
    if config.data.band_stats is not None:
        with open(config.data.band_stats, encoding="utf-8") as handle:
            return json.load(handle)  # type: ignore[no-any-return]
    return json.loads(read_release_file(config.data.source, ReleaseLayout.BAND_STATS))  # type: ignore[no-any-return]


def read_captions(source: str, split: str) -> list[str]:
    """Every ok sample's caption of ``split`` (to train the captions tokenizer on)."""
    captions: list[str] = []
    for path in parquet_files(source, split):
        table = open_parquet(path).read(columns=["status", "caption"])
        for status, caption in zip(
            table["status"].to_pylist(), table["caption"].to_pylist(), strict=True
        ):
            if status == "ok" and caption:
                captions.append(caption)
    return captions


def collate_pairs(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A batch: stacked pixels, the captions and sample ids as lists.

    ``default_collate`` stacks a worker's pixels straight into shared memory (no copy when
    the batch is pickled to the training process); ``torch.stack`` would not.
    """
    return {
        "pixels": default_collate([s["pixels"] for s in samples]),
        "caption": [s["caption"] or "" for s in samples],
        "sample_id": [s["sample_id"] for s in samples],
    }


def train_dataset(
    config: TrainConfig, prep: Preprocessing, *, rank: int, world_size: int
) -> SampleDataset:
    """The training split, shuffled and cropped per the config; equal shares under DDP."""
    return SampleDataset(
        config.data.source,
        split=config.data.train_split,
        bands=prep.bands,
        raw=True,
        crop=prep.crop,
        random_crop=prep.crop is not None,
        shuffle=True,
        shuffle_buffer=config.data.shuffle_buffer,
        seed=config.train.seed,
        rank=rank,
        world_size=world_size,
        drop_uneven=world_size > 1,
    )


def prepared_samples(source: str, split: str | None, prep: Preprocessing) -> SampleDataset:
    """Every ok sample of ``split``, in file order, raw and cropped as in training (centre)."""
    return SampleDataset(
        source,
        split=split,
        bands=prep.bands,
        raw=True,
        crop=prep.crop,
        shuffle=False,
    )


def train_loader(
    dataset: SampleDataset, config: TrainConfig, *, pin_memory: bool
) -> DataLoader[Any]:
    """Batches of ``train.batch_size`` (a worker's last short batch dropped: see docs)."""
    return DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        num_workers=config.data.num_workers,
        collate_fn=collate_pairs,
        drop_last=True,
        pin_memory=pin_memory,
    )


def to_model_input(pixels: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Raw-DN chips [B, C, H, W] (any dtype), normalised and resized as ``prep`` says.

    On the chips' device: ``(x - mean) / std`` per band in float32, then a bicubic resize to
    ``prep.image_size``. Downsizing uses antialiasing (as PIL's bicubic resize of CLIP's
    preprocessing does); upsizing (EuroSAT's 64 px) does not need it.
    """
    if pixels.shape[-3] != len(prep.bands):
        raise ValueError(
            f"chips have {pixels.shape[-3]} bands, the model takes {len(prep.bands)} "
            f"({','.join(prep.bands)}): select those bands"
        )
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=pixels.device)[:, None, None]
    std = torch.tensor(prep.std, dtype=torch.float32, device=pixels.device)[:, None, None]
    if pixels.dtype == torch.uint16:  # few kernels take uint16 (CUDA's): its bits as int16
        pixels = pixels.view(torch.int16).to(torch.int32) & 0xFFFF
    pixels = (pixels.to(torch.float32) - mean) / std
    image_size = prep.image_size
    if pixels.shape[-1] == image_size and pixels.shape[-2] == image_size:
        return pixels
    shrink = pixels.shape[-1] > image_size
    return F.interpolate(
        pixels, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=shrink
    )


def caption_ids(
    tokenizer: TextTokenizer,
    captions: Sequence[str],
    sample_ids: Sequence[str],
    *,
    context_length: int,
    policy: str,
    seed: int,
    epoch: int,
    counts: FitCounts,
) -> torch.Tensor:
    """Token ids of a batch's captions; long ones per ``policy``, draws seeded per sample."""
    rngs = [np.random.default_rng([seed, epoch, sample_key(s)]) for s in sample_ids]
    return tokenizer.encode(
        captions,
        context_length,
        policy="sentences" if policy == "sentences" else "truncate",
        rngs=rngs,
        counts=counts,
    )
