"""Per-band statistics over valid pixels, streamed exactly: one uint16 histogram per band.

A histogram of 65,536 bins holds every uint16 value's count, so the mean, the standard
deviation and the percentiles computed from it are exact whatever the number of chips, in
constant memory (12 bands x 65,536 x 8 bytes = 6 MB). Sums are taken in Python integers at the
end, so no accumulator overflows.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["INVALID_SCL", "PERCENTILES", "BandHistograms"]

INVALID_SCL = (0, 1, 3, 8, 9, 10)
"""SCL classes whose pixels are left out: no data, saturated, cloud shadow, clouds, cirrus."""

PERCENTILES = (1, 2, 50, 98, 99)
"""The percentiles reported per band."""

_VALUES = 1 << 16


class BandHistograms:
    """Counts of each uint16 value per band, over valid pixels (pixel != 0, SCL valid)."""

    def __init__(self, bands: list[str]) -> None:
        """Start empty histograms for ``bands`` (the cube's band order)."""
        self.bands = list(bands)
        self.counts = np.zeros((len(bands), _VALUES), dtype=np.int64)

    def add(self, pixels: npt.NDArray[np.uint16], scl: npt.NDArray[np.uint8]) -> None:
        """Count the valid pixels of chips ``pixels`` (rows, bands, h, w) with ``scl`` (rows, h, w).

        Raises:
            ValueError: if the cubes' band count is not the histograms'.
        """
        if pixels.shape[1] != len(self.bands):
            raise ValueError(f"cube has {pixels.shape[1]} bands, the release {len(self.bands)}")
        clear = ~np.isin(scl, INVALID_SCL)
        for b in range(len(self.bands)):
            band = pixels[:, b]
            values = band[clear & (band != 0)]
            self.counts[b] += np.bincount(values, minlength=_VALUES)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per band: mean, std (population), percentiles ``p1`` ... ``p99``, ``valid_pixels``.

        A percentile ``p`` is the smallest value with at least ``p`` % of the valid pixels at or
        below it (the inverted CDF, numpy's ``method="inverted_cdf"``). A band with no valid
        pixel has nulls.
        """
        values = [int(v) for v in range(_VALUES)]
        out: dict[str, dict[str, Any]] = {}
        for b, name in enumerate(self.bands):
            hist = self.counts[b]
            n = int(hist.sum())
            if n == 0:
                out[name] = {
                    "mean": None,
                    "std": None,
                    **{f"p{p}": None for p in PERCENTILES},
                    "valid_pixels": 0,
                }
                continue
            nonzero = np.flatnonzero(hist)
            total = sum(values[v] * int(hist[v]) for v in nonzero)
            squares = sum(values[v] * values[v] * int(hist[v]) for v in nonzero)
            variance = Fraction(n * squares - total * total, n * n)
            cumulative = np.cumsum(hist)
            out[name] = {
                "mean": float(Fraction(total, n)),
                "std": math.sqrt(variance),
                **{
                    # smallest v with cumulative[v] >= p/100 * n, in integers: 100 * c >= p * n
                    f"p{p}": int(np.searchsorted(100 * cumulative, p * n, side="left"))
                    for p in PERCENTILES
                },
                "valid_pixels": n,
            }
        return out
