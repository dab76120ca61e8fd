"""The model card (``README.md`` of a model folder): data, bands, normalisation, evaluation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.checkpoints import MODEL_FILE, OPENCLIP_WEIGHTS
from trainer.config import TrainConfig
from trainer.evaluate import EvalResult, format_table

__all__ = ["write_model_card"]


def _use(folder: Path, prep: dict[str, Any], settings: dict[str, Any]) -> str:
    """How to load the folder: transformers and OpenCLIP, or eocap only (modality-aware)."""
    if "formats" in settings:
        sar = ", ".join(prep.get("polarisations", []))
        return (
            f"Modalities {', '.join(prep['modalities'])} (S1: {sar or 'none'}, dB normalised "
            f"by mean {prep.get('sar_mean')} / std {prep.get('sar_std')}). "
            f"{settings['formats']}.\n"
            f"`eocap embed {folder} SOURCE OUT.parquet --modalities s2,s1 --drop-bands B05` "
            "embeds any subset."
        )
    channels = len(prep["bands"])
    return f"""```python
from transformers import CLIPModel
model = CLIPModel.from_pretrained("{folder.name}")  # pixel_values: [B, {channels}, S, S]
```
OpenCLIP: `{OPENCLIP_WEIGHTS}` holds the same weights under OpenCLIP's names; build
`open_clip.create_model("ViT-B-16")` (or the `open_clip_config.json` sizes), replace
`visual.conv1` by a `{channels}`-channel `Conv2d`, then `load_state_dict`."""


def write_model_card(
    folder: Path,
    config: TrainConfig,
    results: Sequence[EvalResult],
    *,
    steps: int,
    samples_seen: int,
    captions: dict[str, int],
) -> Path:
    """Write ``folder/README.md`` for the model saved in ``folder``."""
    settings: dict[str, Any] = json.loads((folder / MODEL_FILE).read_text())
    prep = settings["preprocessing"]
    arch = settings["model"]["arch"]
    band_rows = "\n".join(
        f"| {i} | {b} | {m:.1f} | {s:.1f} |"
        for i, (b, m, s) in enumerate(zip(prep["bands"], prep["mean"], prep["std"], strict=True))
    )
    init = config.model.init
    start = (
        "random weights" if init == "scratch" else f"{init} checkpoint `{config.model.checkpoint}`"
    )
    inflation = (
        f", patch embedding inflated by `{config.model.inflation}`" if init != "scratch" else ""
    )
    evaluation = format_table(results) if results else "No evaluation was run.\n"
    text = f"""---
library_name: transformers
tags: [clip, multispectral, sentinel-2, remote-sensing, eocap]
---
# {config.name}

A multispectral CLIP trained by eocap's bundled trainer (`eocap train`) on image-caption pairs
of Sentinel-2 L2A chips.

## Data
- Release: `{config.data.source}`, split `{config.data.train_split}`; {steps} steps,
  {samples_seen} pairs seen (batch {config.train.batch_size} per process).
- Captions longer than the {settings["context_length"]}-token context: {captions.get("whole", 0)}
  fitted whole, {captions.get("sentences", 0)} read as sampled sentences, {captions.get("cut", 0)}
  cut (docs/training.md).
- Derived from Copernicus Sentinel-2 data and Overture Maps (ODbL / CDLA-Permissive-2.0
  attribution applies to the captions' map context).

## Inputs
Pixels are DN in eocap's convention (reflectance x 10000, no BOA offset: processing baseline
04.00+ offsets removed). Per band: `(DN - mean) / std`, then
{"a centre crop of " + str(prep["crop"]) + " px, then " if prep["crop"] else ""}a bicubic resize
to {prep["image_size"]} x {prep["image_size"]}.

| channel | band | mean (DN) | std (DN) |
|---:|---|---:|---:|
{band_rows}

## Model
ViT image tower ({arch["vision_layers"]} layers, width {arch["vision_width"]}, patch
{arch["patch_size"]}) and text tower ({arch["text_layers"]} layers, width {arch["text_width"]},
context {arch["context_length"]}, vocabulary {arch["vocab_size"]}, `{config.model.tokenizer}`
tokenizer), embedding {arch["embed_dim"]}. Started from {start}{inflation}; loss
`{config.train.loss}`.

## Evaluation
Zero-shot (50 templates per class, logits 100 x cosine) and text-to-image retrieval mAP@100;
95 % bootstrap intervals.

{evaluation}
## Use
{_use(folder, prep, settings)}
eocap: `eocap eval {folder}` and `eocap embed {folder} SHARDS OUT.parquet`.
"""
    path = folder / "README.md"
    path.write_text(text)
    return path
