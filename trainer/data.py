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
    CENTI_DB_NODATA,
    CENTI_DB_PER_DB,
    COHERENCE_NODATA,
    COHERENCE_PER_UNIT,
    SampleDataset,
    open_parquet,
    parquet_files,
    read_release_file,
    sample_key,
    stored_modalities,
)
from trainer.checkpoints import Preprocessing
from trainer.config import TrainConfig
from trainer.modal import COHERENCE_NORMALISATION, mark_absent
from trainer.text import FitCounts, TextTokenizer

__all__ = [
    "PIXEL_KEYS",
    "batch_model_input",
    "caption_ids",
    "collate_pairs",
    "modal_input",
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


PIXEL_KEYS = ("pixels", "sar_db", "sar_ok", "coherence", "coh_ok")
"""A loader sample's image tensors: S2 raw DN, S1 hundredths of dB, whether it has SAR,
coherence in hundredths, whether it has coherence."""


def collate_pairs(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A batch: stacked pixels (and SAR, where the samples have it), captions and ids as lists.

    ``default_collate`` stacks a worker's pixels straight into shared memory (no copy when
    the batch is pickled to the training process); ``torch.stack`` would not.
    """
    batch: dict[str, Any] = {
        key: default_collate([s[key] for s in samples]) for key in PIXEL_KEYS if key in samples[0]
    }
    batch["caption"] = [s["caption"] or "" for s in samples]
    batch["sample_id"] = [s["sample_id"] for s in samples]
    return batch


def _selection(prep: Preprocessing, source: str, split: str | None) -> dict[str, Any]:
    """The loader arguments that select ``prep``'s inputs from ``source``.

    A modality-aware model reads each of its modalities that the data stores; one the data
    lacks (Sentinel-1 in shards older than schema 2.1, or of a run without ``sar:``) is absent
    from every sample, as in :func:`batch_model_input`. When the data stores none of them,
    the loader's error says which column is missing.
    """
    if not prep.modal:
        return {"bands": prep.bands}
    stored = stored_modalities(source, split)
    modalities = [m for m in prep.modalities if m in stored] or list(prep.modalities)
    return {
        "modalities": modalities,
        "bands": prep.bands if "s2" in modalities else None,
        "polarisations": prep.polarisations if "s1" in modalities else None,
    }


def train_dataset(
    config: TrainConfig, prep: Preprocessing, *, rank: int, world_size: int
) -> SampleDataset:
    """The training split, shuffled and cropped per the config; equal shares under DDP."""
    return SampleDataset(
        config.data.source,
        split=config.data.train_split,
        **_selection(prep, config.data.source, config.data.train_split),
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
        **_selection(prep, source, split),
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


def _decode_dn(pixels: torch.Tensor) -> torch.Tensor:
    """Raw DN of any dtype as float32 (few kernels take uint16 (CUDA's): its bits as int16)."""
    if pixels.dtype == torch.uint16:
        pixels = pixels.view(torch.int16).to(torch.int32) & 0xFFFF
    return pixels.to(torch.float32)


def _resize(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """A bicubic resize to ``image_size``; antialiased when shrinking, as CLIP's PIL resize."""
    if pixels.shape[-1] == image_size and pixels.shape[-2] == image_size:
        return pixels
    shrink = pixels.shape[-1] > image_size
    return F.interpolate(
        pixels, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=shrink
    )


def _per_channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device)[:, None, None]


def to_model_input(pixels: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Raw-DN chips [B, C, H, W] (any dtype), normalised and resized as ``prep`` says.

    On the chips' device: ``(x - mean) / std`` per band in float32, then a bicubic resize to
    ``prep.image_size``. Downsizing uses antialiasing (as PIL's bicubic resize of CLIP's
    preprocessing does); upsizing (EuroSAT's 64 px) does not need it. For a modality-aware
    model the chips are its S2 bands, and its other modalities absent (:func:`modal_input`).
    """
    if pixels.shape[-3] != len(prep.bands):
        raise ValueError(
            f"chips have {pixels.shape[-3]} bands, the model takes {len(prep.bands)} "
            f"({','.join(prep.bands)}): select those bands"
        )
    if prep.modal:
        return modal_input(prep, pixels=pixels)
    normalised = (_decode_dn(pixels) - _per_channel(prep.mean, pixels)) / _per_channel(
        prep.std, pixels
    )
    return _resize(normalised, prep.image_size)


def _masked(
    values: torch.Tensor, valid: torch.Tensor, ok: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised values with nodata pixels at 0 (the mean), and which channels samples have.

    A sample has a channel ([B, channels] bool) where some pixel of it is valid and, where
    ``ok`` is given, its state says so.
    """
    has = valid.flatten(2).any(dim=-1)
    if ok is not None:
        has &= ok.to(device=values.device, dtype=torch.bool)[:, None]
    return values.masked_fill(~valid, 0.0), has


def modal_input(
    prep: Preprocessing,
    *,
    pixels: torch.Tensor | None = None,
    sar_db: torch.Tensor | None = None,
    sar_ok: torch.Tensor | None = None,
    coherence: torch.Tensor | None = None,
    coh_ok: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """A modality-aware model's input: every channel of ``prep.layout``, absent ones NaN.

    Args:
        prep: The model's preprocessing.
        pixels: S2 raw DN [B, bands, H, W]; None: no S2 in the batch.
        sar_db: S1 backscatter [B, polarisations, H, W] in hundredths of dB (int16,
            :data:`pipeline.dataset.loader.CENTI_DB_NODATA` where there is none); None: no
            S1 in the batch.
        sar_ok: [B] bool, whether each sample has SAR; None: those whose ``sar_db`` has data.
        coherence: Coherence [B, 1, H, W] in hundredths (uint8,
            :data:`pipeline.dataset.loader.COHERENCE_NODATA` where there is none); None: no
            coherence in the batch.
        coh_ok: [B] bool, whether each sample has coherence; None: those with data.
        keep: [channels] bool, the channels inference uses (``ChannelLayout.selection``);
            None: all.

    Each modality is normalised per channel (S2: DN by the band stats; S1: dB by the SAR
    stats; coherence by :data:`trainer.modal.COHERENCE_NORMALISATION`), nodata pixels of a
    present SAR or coherence channel become 0 (the mean), then all are resized
    together (one crop window) and the channels a sample lacks (no SAR, a polarisation
    without data, not kept) are set to NaN, which :class:`trainer.modal.ModalCLIP` reads as
    absent.
    """
    given = next(t for t in (pixels, sar_db, coherence) if t is not None)
    batch, size, device = given.shape[0], given.shape[-2:], given.device
    parts, present = [], []
    for modality, names in prep.layout.groups:
        if modality == "s2" and pixels is not None:
            values = (_decode_dn(pixels) - _per_channel(prep.mean, pixels)) / _per_channel(
                prep.std, pixels
            )
            has = torch.ones(batch, len(names), dtype=torch.bool, device=device)
        elif modality == "s1" and sar_db is not None:
            decibels = sar_db.to(torch.float32) / CENTI_DB_PER_DB
            values = (decibels - _per_channel(prep.sar_mean, sar_db)) / _per_channel(
                prep.sar_std, sar_db
            )
            values, has = _masked(values, sar_db != CENTI_DB_NODATA, sar_ok)
        elif modality == "coh" and coherence is not None:
            centre, spread = COHERENCE_NORMALISATION
            values = (coherence.to(torch.float32) / COHERENCE_PER_UNIT - centre) / spread
            values, has = _masked(values, coherence != COHERENCE_NODATA, coh_ok)
        else:
            values = torch.zeros(batch, len(names), *size, device=device)
            has = torch.zeros(batch, len(names), dtype=torch.bool, device=device)
        parts.append(values)
        present.append(has)
    mask = torch.cat(present, dim=1)
    if keep is not None:
        mask &= keep.to(device)
    return mark_absent(_resize(torch.cat(parts, dim=1), prep.image_size), mask)


def batch_model_input(
    batch: Mapping[str, Any],
    prep: Preprocessing,
    device: torch.device,
    *,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model input of a collated batch (:func:`collate_pairs`) on ``device``.

    A batch without ``sar_db`` (``coherence``), from a release or loader without it, has no S1
    (coherence): its samples lack that modality for a modality-aware model.
    """

    def moved(key: str) -> torch.Tensor | None:
        value = batch.get(key)
        return None if value is None else value.to(device, non_blocking=True)

    if not prep.modal:
        return to_model_input(batch["pixels"].to(device, non_blocking=True), prep)
    return modal_input(
        prep,
        pixels=moved("pixels"),
        sar_db=moved("sar_db"),
        sar_ok=moved("sar_ok"),
        coherence=moved("coherence"),
        coh_ok=moved("coh_ok"),
        keep=keep,
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
