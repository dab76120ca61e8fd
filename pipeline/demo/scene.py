"""Where and when the demo region is imaged: its scene grid and its acquisitions.

The scene grid is the bbox's UTM extent plus a margin, snapped so that Sentinel-2's 10, 20 and
60 m grids nest exactly; the landscape, every raster and every map feature are laid out on it.
An :class:`Acquisition` is one fake overpass: its time, cloud cover, processing baseline,
platform and footprint (the whole scene, or its eastern part at a swath edge).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import Polygon, box

__all__ = [
    "DEMO_ACQUISITIONS",
    "DEMO_BBOX",
    "GRID_SNAP_M",
    "MARGIN_M",
    "MAX_SCENE_M",
    "Acquisition",
    "SceneGrid",
    "as_utc",
    "footprint_mask",
    "footprint_polygon",
    "iso_utc",
    "scene_grid",
]

Array = npt.NDArray[Any]

DEMO_BBOX: tuple[float, float, float, float] = (10.80, 47.50, 11.02, 47.65)
"""The demo region (lon/lat), Alpine foothills in UTM zone 32N (MGRS tile 32TPT)."""

MARGIN_M = 1000.0
"""The scene grid is the bbox in UTM plus this margin on every side."""

GRID_SNAP_M = 60
"""Grid origin and size are multiples of this so the 10, 20 and 60 m grids nest exactly."""

MAX_SCENE_M = 60_000.0
"""Largest scene side accepted: the generator holds the whole 10 m grid in memory."""


@dataclass(frozen=True)
class Acquisition:
    """One fake Sentinel-2 overpass.

    Attributes:
        date: Acquisition time (UTC; a naive datetime is taken as UTC).
        cloud_fraction: Target fraction (0..1) of the footprint under cloud, cirrus included.
        footprint: ``"full"``, or ``"east"`` where only the eastern ~55% of the scene has data
            (a swath edge): the item geometry covers only that part, pixels outside are 0.
        processing_baseline: ESA processing baseline; from ``"04.00"`` on DNs carry the
            ``BOA_ADD_OFFSET`` of +1000.
        platform: ``sentinel-2a``, ``sentinel-2b`` or ``sentinel-2c``.
    """

    date: datetime.datetime
    cloud_fraction: float
    footprint: Literal["full", "east"] = "full"
    processing_baseline: str = "05.10"
    platform: str = "sentinel-2a"


def _utc(year: int, month: int, day: int, second: int) -> datetime.datetime:
    return datetime.datetime(year, month, day, 10, 20, second, 24000, tzinfo=datetime.UTC)


DEMO_ACQUISITIONS: tuple[Acquisition, ...] = (
    # Spring: bare fields, snow still on the mountains.
    Acquisition(_utc(2024, 4, 14, 31), 0.05, platform="sentinel-2b"),
    Acquisition(_utc(2024, 5, 11, 29), 0.38, platform="sentinel-2a"),
    # Summer: green crops.
    Acquisition(_utc(2024, 7, 6, 31), 0.02, platform="sentinel-2a"),
    Acquisition(_utc(2024, 8, 10, 29), 0.27, processing_baseline="05.11", platform="sentinel-2b"),
    # Autumn: the clearest scene only covers the east (chips in the west need the other one).
    Acquisition(_utc(2024, 9, 24, 31), 0.20, processing_baseline="05.11", platform="sentinel-2b"),
    Acquisition(_utc(2024, 10, 19, 29), 0.03, "east", "05.11", "sentinel-2a"),
    # Winter: widespread snow on high ground.
    Acquisition(_utc(2024, 12, 18, 31), 0.42, processing_baseline="05.11", platform="sentinel-2a"),
    Acquisition(_utc(2025, 1, 27, 29), 0.04, processing_baseline="05.11", platform="sentinel-2b"),
)
"""Two acquisitions per meteorological season of 2024 (winter is Dec 2024 - Feb 2025)."""


@dataclass(frozen=True)
class SceneGrid:
    """The scene grid: ``width`` x ``height`` 10 m pixels from the north-west corner."""

    epsg: int
    x0: float
    y0: float
    width: int
    height: int

    def shape(self, res: int) -> tuple[int, int]:
        """Rows and columns of the grid at ``res`` m (10, 20 or 60)."""
        f = res // 10
        return self.height // f, self.width // f

    def transform(self, res: int) -> Affine:
        """The affine transform of the grid at ``res`` m."""
        return Affine(float(res), 0.0, self.x0, 0.0, -float(res), self.y0)

    @property
    def width_m(self) -> float:
        """Width in metres."""
        return self.width * 10.0

    @property
    def height_m(self) -> float:
        """Height in metres."""
        return self.height * 10.0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """The grid's bounds (xmin, ymin, xmax, ymax) in UTM metres."""
        return self.x0, self.y0 - self.height_m, self.x0 + self.width_m, self.y0

    def xy(self, u: float, v: float) -> tuple[float, float]:
        """UTM coordinates of the scene-relative point (u east, v south, both 0..1)."""
        return self.x0 + u * self.width_m, self.y0 - v * self.height_m

    def uv(self, x: float, y: float) -> tuple[float, float]:
        """Scene-relative coordinates (as for :meth:`xy`) of the UTM point (x, y)."""
        return (x - self.x0) / self.width_m, (self.y0 - y) / self.height_m


def scene_grid(bbox: tuple[float, float, float, float]) -> SceneGrid:
    """The scene grid of a bbox (lon/lat): its UTM extent plus :data:`MARGIN_M`, snapped.

    Raises:
        ValueError: for a bbox outside UTM range or with a side over :data:`MAX_SCENE_M`.
    """
    lon0, lat0, lon1, lat1 = bbox
    if not (-180.0 <= lon0 < lon1 <= 180.0 and -80.0 <= lat0 < lat1 <= 84.0):
        raise ValueError(f"bbox {bbox} is not (lon_min, lat_min, lon_max, lat_max) in UTM range")
    lon_c, lat_c = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    zone = min(60, max(1, int((lon_c + 180.0) // 6) + 1))
    epsg = (32600 if lat_c >= 0 else 32700) + zone
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    xmin, ymin, xmax, ymax = to_utm.transform_bounds(lon0, lat0, lon1, lat1, densify_pts=21)
    x0 = math.floor((xmin - MARGIN_M) / GRID_SNAP_M) * GRID_SNAP_M
    x1 = math.ceil((xmax + MARGIN_M) / GRID_SNAP_M) * GRID_SNAP_M
    y0 = math.floor((ymin - MARGIN_M) / GRID_SNAP_M) * GRID_SNAP_M
    y1 = math.ceil((ymax + MARGIN_M) / GRID_SNAP_M) * GRID_SNAP_M
    if max(x1 - x0, y1 - y0) > MAX_SCENE_M:
        raise ValueError(f"bbox {bbox} is too large for a demo region (max {MAX_SCENE_M} m)")
    return SceneGrid(epsg, float(x0), float(y1), (x1 - x0) // 10, (y1 - y0) // 10)


def _footprint_edge(grid: SceneGrid) -> Callable[[Array], Array]:
    """The western edge (x as a function of y) of an ``east`` footprint: a tilted swath edge."""
    xc = grid.x0 + 0.45 * grid.width_m
    ym = grid.y0 - grid.height_m / 2
    tilt = math.tan(math.radians(10))  # swaths run NNE-SSW
    return lambda y: xc + (y - ym) * tilt


def footprint_mask(grid: SceneGrid, footprint: str, res: int) -> Array:
    """Pixels of the ``res`` m grid inside a footprint (``full`` or ``east``)."""
    h, w = grid.shape(res)
    if footprint == "full":
        return np.ones((h, w), bool)
    xs = grid.x0 + (np.arange(w) + 0.5) * res
    ys = grid.y0 - (np.arange(h) + 0.5) * res
    return xs[None, :] >= _footprint_edge(grid)(ys)[:, None]


def footprint_polygon(grid: SceneGrid, footprint: str) -> Polygon:
    """A footprint (``full`` or ``east``) as a UTM polygon."""
    xmin, ymin, xmax, ymax = grid.bounds
    if footprint == "full":
        return box(xmin, ymin, xmax, ymax)
    edge = _footprint_edge(grid)
    x_top, x_bot = (float(x) for x in edge(np.array([ymax, ymin])))
    return Polygon([(x_bot, ymin), (xmax, ymin), (xmax, ymax), (x_top, ymax)])


def as_utc(when: datetime.datetime) -> datetime.datetime:
    """``when`` in UTC; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


def iso_utc(when: datetime.datetime) -> str:
    """``when`` as STAC writes times: UTC, microseconds, ``Z``."""
    return as_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
