from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.geo.rgb import stretch_rgb
from pipeline.stages.composite import render_rgb

BANDS = ("B02", "B03", "B04", "B08")


def cube(values: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([values[b] for b in BANDS]).astype(np.uint16)


def test_stretch_uses_percentiles_not_a_fixed_divisor():
    rng = np.random.default_rng(0)
    dark = {b: rng.integers(200, 1500, (32, 32)) for b in BANDS}  # reflectance 2-15 %
    img = stretch_rgb(cube(dark), BANDS)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert img.max() >= 250 and img.min() <= 5  # full range used despite a dark scene


def test_nodata_stays_black_and_uniform_chip_is_not_noise():
    flat = {b: np.full((16, 16), 800) for b in BANDS}
    flat["B04"][:, :4] = 0
    img = stretch_rgb(cube(flat), BANDS)
    assert (img[:, :4] == 0).all()
    assert img[:, 4:].std() == 0  # a uniform chip stays uniform


def test_rgb_order_and_png():
    values = {
        "B02": np.full((8, 8), 300),
        "B03": np.full((8, 8), 600),
        "B04": np.full((8, 8), 2000),
        "B08": np.full((8, 8), 3000),
    }
    values["B04"][0, 0] = 100
    png = render_rgb(cube(values), BANDS)
    img = np.asarray(Image.open(io.BytesIO(png)))
    r, g, b = img[4, 4]
    assert r > g > b


def test_missing_rgb_band():
    with pytest.raises(ValueError, match="B04"):
        stretch_rgb(np.ones((2, 4, 4), np.uint16), ("B02", "B03"))


def test_png_compress_level_changes_size_not_pixels():
    from pipeline.stages.composite import PNG_COMPRESS_LEVEL

    rng = np.random.default_rng(0)
    pixels = cube({b: rng.integers(500, 3000, (64, 64)) // 50 * 50 for b in BANDS})
    fast = render_rgb(pixels, BANDS)
    small = render_rgb(pixels, BANDS, compress_level=9)
    assert PNG_COMPRESS_LEVEL == 1 and len(fast) > len(small)
    decoded = [np.asarray(Image.open(io.BytesIO(b))) for b in (fast, small)]
    assert np.array_equal(*decoded)
