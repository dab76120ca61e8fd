"""Randomness of the demo generator: one seeded stream per purpose, and smooth noise fields.

Streams are keyed by purpose (``seeded_rng(seed, "clouds", ...)``), so a change to one part of
the generator leaves the random draws, and so the files, of every other part as they were.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["seeded_rng", "smooth_noise"]

Array = npt.NDArray[Any]


def seeded_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator for one purpose: independent streams keep outputs stable as code evolves."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cells_m: Sequence[float],
    weights: Sequence[float],
) -> Array:
    """Smooth noise with unit variance: random grids upsampled bicubically, summed by octave."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for cell_m, weight in zip(cells_m, weights, strict=True):
        cell = max(2.0, cell_m / 10.0)
        low = rng.standard_normal(
            (max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)), dtype=np.float32
        )
        up = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
        out += np.float32(weight) * np.asarray(up, dtype=np.float32)
    out -= out.mean(dtype=np.float64)
    out /= max(float(out.std(dtype=np.float64)), 1e-6)
    return out
