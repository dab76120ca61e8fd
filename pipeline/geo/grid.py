"""Chip grids: where a chip's pixels lie, in the scene's UTM CRS and in lon/lat."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon

__all__ = ["ChipGrid", "chip_grid", "transformer", "utm_crs"]


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone CRS (EPSG code) containing a point."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


@lru_cache(maxsize=256)
def transformer(src: str, dst: str) -> Transformer:
    """A cached, thread-safe-to-share lon/lat-ordered transformer between two CRSs."""
    return Transformer.from_crs(src, dst, always_xy=True)


@dataclass(frozen=True)
class ChipGrid:
    """The pixel grid of one chip.

    Attributes:
        crs: CRS of the grid (the scene's UTM zone), e.g. ``EPSG:32632``.
        transform: Affine transform of the chip's upper-left pixel corner.
        size: Width and height in pixels.
    """

    crs: str
    transform: Affine
    size: int

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (metres)."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the grid CRS."""
        x0, y0 = self.transform.c, self.transform.f
        edge = self.size * self.resolution
        return (x0, y0 - edge, x0 + edge, y0)

    def footprint_lonlat(self, densify: int = 4) -> Polygon:
        """The chip outline in lon/lat, with ``densify`` points per edge."""
        x0, y0, x1, y1 = self.bounds
        steps = [i / densify for i in range(densify)]
        ring = (
            [(x0 + (x1 - x0) * t, y1) for t in steps]
            + [(x1, y1 - (y1 - y0) * t) for t in steps]
            + [(x1 - (x1 - x0) * t, y0) for t in steps]
            + [(x0, y0 + (y1 - y0) * t) for t in steps]
        )
        xs, ys = transformer(self.crs, "EPSG:4326").transform(
            [p[0] for p in ring], [p[1] for p in ring]
        )
        return Polygon(list(zip(xs, ys, strict=True)))

    def as_list(self) -> list[float]:
        """The affine transform as GDAL's six numbers (a, b, c, d, e, f) order of ``Affine``."""
        t = self.transform
        return [t.a, t.b, t.c, t.d, t.e, t.f]


def chip_grid(lon: float, lat: float, crs: str, size: int, resolution: float) -> ChipGrid:
    """The chip grid centred on (lon, lat) in ``crs``, snapped to multiples of ``resolution``.

    Snapping keeps chips aligned with the scene's native pixel grid (Sentinel-2 grids start on
    multiples of 60 m), so 10 m bands are read without resampling.
    """
    x, y = transformer("EPSG:4326", crs).transform(lon, lat)
    half = size * resolution / 2
    x0 = math.floor((x - half) / resolution + 0.5) * resolution
    y0 = math.floor((y + half) / resolution + 0.5) * resolution
    return ChipGrid(crs=crs, transform=Affine(resolution, 0.0, x0, 0.0, -resolution, y0), size=size)
