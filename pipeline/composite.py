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

__all__ = ["PNG_COMPRESS_LEVEL", "RGB_BANDS", "render_rgb", "stretch_rgb"]

RGB_BANDS = ("B04", "B03", "B02")
"""ESA names of the red, green and blue bands."""


def stretch_rgb(
    pixels: npt.NDArray[np.uint16],
    band_names: tuple[str, ...],
    *,
    low_pct: float = 1.0,
    high_pct: float = 99.0,
    min_range_dn: float = 500.0,
    gamma: float = 1.0 / 1.2,
) -> npt.NDArray[np.uint8]:
    """Stretch the chip's RGB bands to an (H, W, 3) uint8 image; nodata stays black.

    Args:
        pixels: (bands, H, W) harmonised DN (reflectance x 10000), 0 = nodata.
        band_names: Band order of ``pixels``; must contain B04, B03, B02.
        low_pct: Percentile mapped to 0.
        high_pct: Percentile mapped to 255.
        min_range_dn: Smallest stretch range in DN (0.05 reflectance).
        gamma: Gamma applied after the linear stretch (brightens shadows slightly).

    Raises:
        ValueError: if an RGB band is missing.
    """
    missing = [b for b in RGB_BANDS if b not in band_names]
    if missing:
        raise ValueError(f"RGB composite needs bands {missing}")
    rgb = np.stack([pixels[band_names.index(b)] for b in RGB_BANDS], axis=-1).astype(np.float32)
    valid = (rgb > 0).all(axis=-1)
    if not valid.any():
        return np.zeros(rgb.shape, np.uint8)
    lo, hi = np.percentile(rgb[valid], [low_pct, high_pct])
    hi = max(float(hi), float(lo) + min_range_dn)
    scaled = np.clip((rgb - lo) / (hi - lo), 0.0, 1.0) ** gamma
    out: npt.NDArray[np.uint8] = (scaled * 255.0 + 0.5).astype(np.uint8)
    out[~valid] = 0
    return out


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
