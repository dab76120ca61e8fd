"""Composite: a true-colour PNG per chip with a robust percentile stretch.

A fixed divisor (reflectance / 0.3) leaves dark scenes black and burns bright ones; stretching
each chip between low and high percentiles of its valid pixels, jointly over R, G and B so
colours keep their balance, shows every chip's content. A minimum stretch range keeps uniform
chips (open water, snow) from turning into amplified noise.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.geo.rgb import stretch_rgb

__all__ = ["PNG_COMPRESS_LEVEL", "render_rgb"]


PNG_COMPRESS_LEVEL = 1
"""zlib level of the composite PNGs. 1 encodes 2.3x faster than Pillow's default (6) for files
about 27 % larger (issue 4, docs/benchmarks.md): at level 6 the encoding was most of the
composite stage's CPU, while the PNG is under 3 % of a row next to the 12-band cube. The
pixels are identical at every level (PNG is lossless)."""


def render_rgb(
    pixels: npt.NDArray[np.uint16],
    band_names: tuple[str, ...],
    *,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> bytes:
    """The stretched true-colour chip as PNG bytes (zlib ``compress_level``, 0-9)."""
    buf = io.BytesIO()
    Image.fromarray(stretch_rgb(pixels, band_names), mode="RGB").save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()
