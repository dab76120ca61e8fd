"""Image embeddings of any shards or release as Parquet: ``sample_id``, ``vector``.

The chips are read through the dataset contract's loader (every ``ok`` sample, in file order)
and prepared as in training. The output is one Parquet file, written to a temporary name and
renamed when complete, with the model folder, bands and dimension in its metadata, so a
reader knows which model made the vectors and a killed run leaves no half file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.checkpoints import LoadedModel
from trainer.data import prepared_samples, to_model_input

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
    on_samples: Callable[[int, int], None] | None = None,
) -> int:
    """Write the normalised image embedding of every ok sample of ``source`` to ``output``.

    Returns:
        The number of samples embedded.
    """
    prep = loaded.preprocessing
    dataset = prepared_samples(source, split, prep)
    total = len(dataset)
    device = next(loaded.model.parameters()).device
    dim = loaded.model.arch.embed_dim
    schema = embedding_schema(dim).with_metadata(
        {
            EMBEDDING_METADATA_KEY: json.dumps(
                {"model": model_ref, "bands": list(prep.bands), "dim": dim, "normalised": True}
            ).encode()
        }
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    done = 0
    with pq.ParquetWriter(partial, schema) as writer:
        ids: list[str] = []
        pixels: list[torch.Tensor] = []

        def flush() -> None:
            nonlocal done
            batch = to_model_input(torch.stack(pixels).to(device), prep)
            vectors = loaded.model.encode_image(batch).float().cpu().numpy()
            flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
            writer.write_table(
                pa.table(
                    {"sample_id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)},
                    schema=schema,
                )
            )
            done += len(ids)
            ids.clear()
            pixels.clear()
            if on_samples is not None:
                on_samples(done, total)

        for sample in dataset:
            ids.append(sample["sample_id"])
            pixels.append(sample["pixels"])
            if len(ids) == batch_size:
                flush()
        if ids:
            flush()
    os.replace(partial, output)
    return done
