"""The RGB display stretch of Sentinel-2 band stacks (composite stage and review app share it)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
