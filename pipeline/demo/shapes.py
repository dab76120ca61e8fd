"""Geometry helpers the demo landscape is drawn with.

Rounded polylines, wobbly blobs and rotated rectangles in UTM metres; the polygonal or line
parts of a geometry; and rasterizing shapes onto the scene's 10 m grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union

from pipeline.demo.scene import SceneGrid

__all__ = [
    "angle_at",
    "blob",
    "burn",
    "chaikin",
    "line_parts",
    "normal_offset",
    "polygonal",
    "rotated_rect",
    "translate",
]

Array = npt.NDArray[Any]


def chaikin(points: Sequence[tuple[float, float]], iterations: int = 3) -> Array:
    """Round the corners of a polyline (Chaikin), keeping its end points."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        mid = np.empty((2 * len(q), 2))
        mid[0::2], mid[1::2] = q, r
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def blob(
    rng: np.random.Generator,
    centre: tuple[float, float],
    rx: float,
    ry: float,
    *,
    rotation: float = 0.0,
    wobble: float = 0.1,
    n: int = 160,
) -> Polygon:
    """An irregular ellipse: the radius wobbles with a few random harmonics."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k, amp in ((2, 1.0), (3, 0.7), (5, 0.45), (9, 0.25)):
        r += wobble * amp * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    px, py = rx * r * np.cos(theta), ry * r * np.sin(theta)
    c, s = math.cos(rotation), math.sin(rotation)
    poly = Polygon(np.column_stack([centre[0] + c * px - s * py, centre[1] + s * px + c * py]))
    return polygonal(poly.buffer(0))


def polygonal(geom: Any) -> Any:
    """Keep the polygonal part of a geometry, made valid (empty Polygon if none)."""
    if geom is None or geom.is_empty:
        return Polygon()
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return unary_union(parts) if parts else Polygon()


def rotated_rect(cx: float, cy: float, length: float, depth: float, angle: float) -> Polygon:
    """A rectangle centred on (cx, cy), ``length`` along ``angle`` (radians from east)."""
    c, s = math.cos(angle), math.sin(angle)
    hx, hy = length / 2, depth / 2
    corners = [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
    return Polygon([(cx + c * a - s * b, cy + s * a + c * b) for a, b in corners])


def burn(
    grid: SceneGrid,
    shapes: Iterable[tuple[Any, int | float]],
    *,
    dtype: str = "uint8",
    fill: float = 0,
    all_touched: bool = False,
    out: Array | None = None,
) -> Array:
    """Rasterize (geometry, value) pairs onto the 10 m grid (later shapes win)."""
    pairs = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
    if out is None:
        out = np.full(grid.shape(10), fill, dtype=dtype)
    if pairs:
        rasterio.features.rasterize(
            pairs, out=out, transform=grid.transform(10), all_touched=all_touched
        )
    return out


def line_parts(geom: Any) -> Iterator[LineString]:
    """The LineStrings in any geometry (a clipped line may come back multi-part)."""
    if geom.is_empty:
        return
    if geom.geom_type == "LineString":
        yield geom
    elif geom.geom_type == "MultiLineString" or hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from line_parts(g)


def angle_at(line: LineString, pt: Point) -> float:
    """Direction of ``line`` near ``pt`` (radians from east), over 40 m of the line."""
    s = line.project(pt)
    a = line.interpolate(max(0.0, s - 20.0))
    b = line.interpolate(min(line.length, s + 20.0))
    return math.atan2(b.y - a.y, b.x - a.x)


def normal_offset(angle: float, dist: float) -> tuple[float, float]:
    """The (dx, dy) ``dist`` metres to the left of the direction ``angle``."""
    return -math.sin(angle) * dist, math.cos(angle) * dist


def translate(geom: Any, dx: float, dy: float) -> Any:
    """``geom`` moved by (dx, dy)."""
    return shapely.transform(geom, lambda c: c + np.array([dx, dy]))
