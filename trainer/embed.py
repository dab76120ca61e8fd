"""Image embeddings of any shards or release as Parquet: ``sample_id``, ``vector``.

The chips are read through the dataset contract's loader (every ``ok`` sample, in file order)
and prepared as in training. The output is one Parquet file, written to a temporary name and
renamed when complete, with the model folder, bands and dimension in its metadata, so a
reader knows which model made the vectors and a killed run leaves no half file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.checkpoints import LoadedModel, Preprocessing
from trainer.data import batch_model_input, collate_pairs, prepared_samples
from trainer.modal import channels_present

__all__ = ["EMBEDDING_METADATA_KEY", "embed_samples", "embedding_schema"]

EMBEDDING_METADATA_KEY = b"eocap_embedding"
"""Parquet metadata key holding what made the vectors (model, bands, dim)."""


def embedding_schema(dim: int) -> pa.Schema:
    """``sample_id`` string, ``vector`` fixed-size list of ``dim`` float32 (L2-normalised)."""
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


@torch.no_grad()
def embed_samples(
    loaded: LoadedModel,
    source: str,
    output: Path,
    *,
    split: str | None = None,
    batch_size: int = 64,
    model_ref: str = "",
    modalities: Sequence[str] | None = None,
    drop_channels: Sequence[str] = (),
    on_samples: Callable[[int, int], None] | None = None,
) -> int:
    """Write the normalised image embedding of every ok sample of ``source`` to ``output``.

    ``modalities`` and ``drop_channels`` choose what a modality-aware model embeds (default:
    every channel it has); the channels left out are absent, as in training. A sample with
    none of the chosen channels (S1 only, a sample without SAR) is not embedded.

    Returns:
        The number of samples embedded.

    Raises:
        ValueError: for a selection the model does not have, or any selection of a plain
            (S2-only) model but all its bands.
    """
    prep = loaded.preprocessing
    keep = _selection(prep, modalities, drop_channels)
    dataset = prepared_samples(source, split, prep)
    total = len(dataset)
    device = next(loaded.model.parameters()).device
    dim = loaded.model.arch.embed_dim
    made_by = {"model": model_ref, "bands": list(prep.bands), "dim": dim, "normalised": True}
    if keep is not None:
        chosen = zip(prep.layout.channels, keep.tolist(), strict=True)
        made_by["channels"] = [channel for channel, kept in chosen if kept]
    schema = embedding_schema(dim).with_metadata(
        {EMBEDDING_METADATA_KEY: json.dumps(made_by).encode()}
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    seen = done = 0
    with pq.ParquetWriter(partial, schema) as writer:
        samples: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal done, seen
            batch = collate_pairs(samples)
            pixels = batch_model_input(batch, prep, device, keep=keep)
            ids = batch["sample_id"]
            if prep.modal:
                has = channels_present(pixels).any(dim=1).cpu()
                ids = [sid for sid, h in zip(ids, has.tolist(), strict=True) if h]
                pixels = pixels[has.to(pixels.device)]
            if ids:
                vectors = loaded.model.encode_image(pixels).float().cpu().numpy()
                flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
                writer.write_table(
                    pa.table(
                        {"sample_id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)},
                        schema=schema,
                    )
                )
            done += len(ids)
            seen += len(samples)
            samples.clear()
            if on_samples is not None:
                on_samples(seen, total)

        for sample in dataset:
            samples.append(sample)
            if len(samples) == batch_size:
                flush()
        if samples:
            flush()
    os.replace(partial, output)
    return done


def _selection(
    prep: Preprocessing, modalities: Sequence[str] | None, drop_channels: Sequence[str]
) -> torch.Tensor | None:
    """The channels to embed ([channels] bool), None for all of a plain model's bands."""
    if prep.modal:
        return prep.layout.selection(modalities, drop_channels)
    if drop_channels or (modalities is not None and list(modalities) != ["s2"]):
        raise ValueError(
            "the model is a plain S2 CLIP (model.modalities [s2]): it embeds all its bands "
            "and nothing else; train with model.modalities [s2, s1] to choose modalities "
            "and drop bands"
        )
    return None
