"""Z-order (Morton) keys: sorting points along a Z-order curve keeps nearby points together.

A key interleaves the bits of two 16-bit cell coordinates (bit ``i`` of x goes to bit ``2i``,
bit ``i`` of y to bit ``2i + 1``). Callers choose the cells: :func:`lonlat_zorder` puts lon/lat
on one fixed grid over the globe, so a point's key never depends on the other points;
:func:`extent_zorder` stretches the grid over the points' own extent, which only orders them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_CELL", "extent_zorder", "interleave", "lonlat_zorder"]

MAX_CELL = 0xFFFF
"""Largest cell coordinate: keys interleave 16 bits per axis."""


def interleave(x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Z-order keys of integer cell coordinates; only their low 16 bits count.

    Args:
        x: Cell columns (integers; negative ones count as their two's-complement bits).
        y: Cell rows, broadcastable with ``x``.

    Returns:
        ``uint64`` keys below 2**32: x's bits at even, y's bits at odd positions.
    """

    def spread(a: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """Move bit ``i`` of each value to bit ``2i``."""
        s = np.asarray(a).astype(np.uint64) & np.uint64(MAX_CELL)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            s = (s | (s << np.uint64(shift))) & np.uint64(mask)
        return s

    key: npt.NDArray[np.uint64] = spread(x) | (spread(y) << np.uint64(1))
    return key


def lonlat_zorder(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Z-order keys of lon/lat on a fixed global grid of 65535 x 65535 cells (floored).

    A point's key depends on nothing else, so every plan of the same locations sorts alike.

    Args:
        lon: Longitudes in degrees (-180..180).
        lat: Latitudes in degrees (-90..90).
    """
    x = ((np.asarray(lon, np.float64) + 180.0) / 360.0 * MAX_CELL).astype(np.int64)
    y = ((np.asarray(lat, np.float64) + 90.0) / 180.0 * MAX_CELL).astype(np.int64)
    return interleave(x, y)


def extent_zorder(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """Z-order keys of points on a grid spanning their own extent (0..65535, rounded).

    The keys order the points among themselves; they are not comparable between calls.

    Args:
        x: The points' x coordinates (any unit; at least one point).
        y: Their y coordinates.
    """

    def scale(a: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
        lo, hi = float(a.min()), float(a.max())
        return np.round((a - lo) / max(hi - lo, 1e-12) * MAX_CELL).astype(np.uint64)

    return interleave(scale(x), scale(y))
