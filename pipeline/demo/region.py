"""A deterministic, fake but realistic Sentinel-2 L2A demo region (torchgeo ``tests/data`` style).

One generator writes everything the pipeline reads, all derived from one land-cover truth so
that the pieces agree with each other:

* ``cogs/<item_id>/<asset_key>.tif``: one Cloud-Optimized GeoTIFF per L2A band (native 10, 20 or
  60 m grid, ``uint16``) and the SCL layer (20 m, ``uint8``) for every acquisition, in the
  bbox's UTM zone, nodata 0;
* ``stac/items.json``: a GeoJSON FeatureCollection of STAC items shaped like Earth Search v1 or
  Planetary Computer ``sentinel-2-l2a`` items, with hrefs relative to the region root;
* ``overture/theme=<theme>/type=<type>/part-00000.parquet``: an Overture Maps extract (GeoParquet
  1.1, WKB in lon/lat) of the same fictional landscape: the lake Aldersee, the river Emmer, the
  town Kesselbach with streets, buildings and POIs, farmland, forests and the Gamsspitze massif;
  places in the ``categories`` schema of releases before September 2026, or in the
  ``basic_category`` / ``taxonomy`` schema of later ones (``places_schema``);
* ``truth/landcover.tif``: the 10 m land-cover class raster (codes in :data:`LAND_COVER_CLASSES`);
* ``demo.json``: the generator version and parameters, written last (a region without it is
  incomplete).

The landscape is laid out in coordinates relative to the scene (lake in the north-west, town in
the middle, mountains in the south), so a small bbox for tests holds a shrunken copy of the whole
region. Everything is a pure function of the parameters and ``seed``: the same call writes
byte-identical files.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import rasterio.features
import shapely
from PIL import Image
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import LineString, Point, Polygon, box, mapping
from shapely.ops import substring, unary_union

from pipeline.dataset.geoparquet import geo_metadata
from pipeline.geo.bands import L2A_BANDS, SCL, Band
from pipeline.geo.radiometry import BASELINE_OFFSET_DN, baseline_offset

__all__ = [
    "DEMO_ACQUISITIONS",
    "DEMO_BBOX",
    "FLAVOR_COLLECTIONS",
    "GENERATOR_VERSION",
    "LAND_COVER_CLASSES",
    "Acquisition",
    "DemoRegion",
    "ensure_demo_region",
    "generate_demo_region",
    "load_items",
]

Array = npt.NDArray[Any]
ItemFlavor = Literal["earth-search-c1", "earth-search", "planetary-computer"]
PlacesSchema = Literal["categories", "taxonomy"]

DEMO_BBOX: tuple[float, float, float, float] = (10.80, 47.50, 11.02, 47.65)
"""The demo region (lon/lat), Alpine foothills in UTM zone 32N (MGRS tile 32TPT)."""

FLAVOR_COLLECTIONS: dict[str, str] = {
    "earth-search-c1": "sentinel-2-c1-l2a",
    "earth-search": "sentinel-2-l2a",
    "planetary-computer": "sentinel-2-l2a",
}
"""The STAC collection id of each item flavor, as its catalog names it.

Each flavor copies its catalog's radiometry (see :mod:`pipeline.geo.radiometry`):
``earth-search-c1`` (Earth Search ``sentinel-2-c1-l2a``): the baseline's offset is in the
pixels and ``raster:bands`` declares it; ``earth-search`` (Earth Search ``sentinel-2-l2a``):
Element 84 removed the offset from the COGs and says so with ``earthsearch:boa_offset_applied:
true``, while ``raster:bands`` still declares ``offset: -0.1`` on every item (stale);
``planetary-computer``: the offset is in the pixels, only ``s2:processing_baseline`` tells.
"""

GENERATOR_VERSION = "2"
"""Bumped whenever the generated files change, so :func:`ensure_demo_region` regenerates."""

LAND_COVER_CLASSES: dict[int, str] = {
    1: "water",
    2: "forest",
    3: "cropland",
    4: "grassland",
    5: "built_up",
    6: "bare",
    7: "snow",
}
"""Codes of the land-cover truth raster (``truth/landcover.tif``); 0 is unused."""

WATER, FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE, SNOW = range(1, 8)

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
class DemoRegion:
    """A generated demo region on disk.

    Attributes:
        root: The region folder; item hrefs are relative to it.
        bbox: The requested bbox (lon/lat); the scene grid covers it plus a 1 km margin.
        crs: The UTM CRS of every COG, e.g. ``EPSG:32632``.
        items_path: ``root/stac/items.json``, a GeoJSON FeatureCollection of STAC items.
        overture_root: ``root/overture``, a hive tree ``theme=*/type=*/*.parquet``.
        cog_root: ``root/cogs``, one folder of COGs per item.
        item_ids: Ids of the items, in acquisition order.
    """

    root: Path
    bbox: tuple[float, float, float, float]
    crs: str
    items_path: Path
    overture_root: Path
    cog_root: Path
    item_ids: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Scene grid and noise


@dataclass(frozen=True)
class _Grid:
    """The scene grid: ``width`` x ``height`` 10 m pixels from the north-west corner."""

    epsg: int
    x0: float
    y0: float
    width: int
    height: int

    def shape(self, res: int) -> tuple[int, int]:
        f = res // 10
        return self.height // f, self.width // f

    def transform(self, res: int) -> Affine:
        return Affine(float(res), 0.0, self.x0, 0.0, -float(res), self.y0)

    @property
    def width_m(self) -> float:
        return self.width * 10.0

    @property
    def height_m(self) -> float:
        return self.height * 10.0

    def xy(self, u: float, v: float) -> tuple[float, float]:
        """UTM coordinates of the scene-relative point (u east, v south, both 0..1)."""
        return self.x0 + u * self.width_m, self.y0 - v * self.height_m

    def uv(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.x0) / self.width_m, (self.y0 - y) / self.height_m


def _scene_grid(bbox: tuple[float, float, float, float]) -> _Grid:
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
    return _Grid(epsg, float(x0), float(y1), (x1 - x0) // 10, (y1 - y0) // 10)


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator for one purpose: independent streams keep outputs stable as code evolves."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def _noise(
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


def _smoothstep(e0: float, e1: float, x: Array) -> Array:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _chaikin(points: Sequence[tuple[float, float]], iterations: int = 3) -> Array:
    """Round the corners of a polyline (Chaikin), keeping its end points."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        mid = np.empty((2 * len(q), 2))
        mid[0::2], mid[1::2] = q, r
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def _blob(
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
    return _polygonal(poly.buffer(0))


def _polygonal(geom: Any) -> Any:
    """Keep the polygonal part of a geometry, made valid (empty Polygon if none)."""
    if geom is None or geom.is_empty:
        return Polygon()
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return unary_union(parts) if parts else Polygon()


def _rect(cx: float, cy: float, length: float, depth: float, angle: float) -> Polygon:
    """A rectangle centred on (cx, cy), ``length`` along ``angle`` (radians from east)."""
    c, s = math.cos(angle), math.sin(angle)
    hx, hy = length / 2, depth / 2
    corners = [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
    return Polygon([(cx + c * a - s * b, cy + s * a + c * b) for a, b in corners])


def _burn(
    grid: _Grid,
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


# --------------------------------------------------------------------------------------------
# The landscape: vector features and rasters that every output is derived from


@dataclass
class _Feature:
    """One Overture feature in UTM, with its type-specific columns."""

    theme: str
    type: str
    geom: Any
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Landscape:
    grid: _Grid
    cls: Array  # uint8 land-cover class, 10 m
    elev: Array  # float32 metres
    slope_e: Array  # float32 dz/d(east)
    slope_n: Array  # float32 dz/d(north)
    crop: Array  # uint8: 0 none, 1 winter cereal, 2 maize, 3 spring crop
    pheno_shift: Array  # float32 days: per-parcel phenology offset
    bright: Array  # float32 multiplicative brightness texture
    decid: Array  # float32 deciduous share of forest pixels
    urban: Array  # float32 impervious share of built-up pixels
    road: Array  # float32 asphalt/ballast share (roads and rail outside the town)
    snow_noise: Array  # float32 unit noise that makes the snow line ragged
    features: list[_Feature]


def _tags(text: str) -> list[tuple[str, str]]:
    """OSM-style ``source_tags`` from ``"key=value key=value"``."""
    return [(k, v) for k, _, v in (t.partition("=") for t in text.split())]


_THEMES = {"land_cover": "base", "land_use": "base", "water": "base", "infrastructure": "base",
           "land": "base", "building": "buildings", "segment": "transportation",
           "place": "places"}  # fmt: skip


def _named(
    type_: str,
    geom: Any,
    cls: str,
    subtype: str,
    tags: str,
    name: str | None = None,
    **extra: Any,
) -> _Feature:
    """A feature of an Overture type with ``names``, ``class``, ``subtype`` and ``source_tags``."""
    props: dict[str, Any] = {"names": _names(name) if name else None, "class": cls}
    props |= {"subtype": subtype, "source_tags": _tags(tags), **extra}
    return _Feature(_THEMES[type_], type_, geom, props)


def _water(geom: Any, cls: str, subtype: str, tags: str, name: str | None = None) -> _Feature:
    return _named("water", geom, cls, subtype, tags, name, is_salt=False, is_intermittent=False)


def _building(
    subtype: str,
    cls: str,
    height: float,
    floors: int,
    name: str | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {"names": _names(name) if name else None, "subtype": subtype}
    props.update({"class": cls, "height": height, "num_floors": floors, "has_parts": False})
    if source:
        props["_source"] = source  # popped by the writer into ``sources``
    return props


def _names(primary: str, *, en: str | None = None, short: str | None = None) -> dict[str, Any]:
    common = [("de", primary)] + ([("en", en)] if en else [])
    rules = (
        [{"variant": "short", "language": None, "value": short, "side": None}] if short else None
    )
    return {"primary": primary, "common": common, "rules": rules}


_TOWN_AREAS = ("park", "cemetery", "school")
"""Areas inside the town that are not residential land use."""

_STREET_NAMES = (
    "Lindenstraße", "Kirchweg", "Schulstraße", "Gartenstraße", "Mühlweg", "Am Anger",
    "Birkenweg", "Rosenstraße", "Ahornweg", "Eichenweg", "Feldstraße", "Bergblick",
    "Kapellenweg", "Sonnenstraße", "Wiesenweg", "Brunnenstraße", "Flößerweg", "Almweg",
    "Ringstraße", "Jägerweg", "Fichtenweg", "Blumenstraße", "Am Bach", "Schmiedgasse",
)  # fmt: skip

_INFLOW_UV = ((0.66, 1.03), (0.63, 0.86), (0.56, 0.72), (0.50, 0.58), (0.42, 0.46))
"""Scene-relative course of the Emmer from the mountains (south) to the lake."""
_LAKE_UV = (0.30, 0.32)
_OUTFLOW_UV = ((0.36, 0.22), (0.40, 0.10), (0.43, -0.03))
_TOWN_V = 0.56


def _river_u(v: Array | float) -> Array:
    """Scene-relative easting of the inflowing Emmer's valley axis at scene-relative row ``v``."""
    pts = sorted((*_INFLOW_UV, _LAKE_UV), key=lambda p: p[1])
    return np.asarray(np.interp(v, [p[1] for p in pts], [p[0] for p in pts]))


def _build_landscape(grid: _Grid, seed: int) -> _Landscape:
    h, w = grid.shape(10)
    wm, hm = grid.width_m, grid.height_m
    smin = min(wm, hm)
    rng = _rng(seed, "landscape")
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]

    def noise(cells_m: Sequence[float], weights: Sequence[float]) -> Array:
        return _noise(rng, (h, w), cells_m, weights)

    # --- Elevation: rolling lowland in the north, a massif rising to ~2650 m in the south,
    # cut by the Emmer valley.
    # Few and broad octaves: 10 m shading of fine relief costs a lot of compressed bytes.
    n_low = noise([smin / 3, 2500, 1200], [1.0, 0.5, 0.2])
    n_edge = noise([smin / 4], [1.0])
    n_ridge = noise([2500, 1000, 400], [1.0, 0.6, 0.35])
    mountain = _smoothstep(0.56, 0.96, v + 0.05 * n_edge)
    ridge = np.clip(1.0 - np.abs(n_ridge), -1.0, 1.0)
    peak = np.exp(-((u - 0.72) ** 2 + (v - 0.90) ** 2) / (2 * 0.08**2))
    valley = np.exp(-(((u - _river_u(v)) / 0.055) ** 2)) * _smoothstep(0.45, 0.62, v)
    relief = np.maximum(mountain * (1.0 + 0.45 * ridge + 0.8 * peak) * (1.0 - 0.8 * valley), 0)
    lowland = 650.0 + _LOWLAND_RELIEF_M * n_low + 60.0 * _smoothstep(0.45, 0.62, v)
    elev = (lowland + relief * (2000.0 / max(float(relief.max()), 1e-6))).astype(np.float32)
    emax = float(elev.max())

    features: list[_Feature] = []

    # --- Water: lake Aldersee, the Emmer through it, a few ponds.
    lake_c = grid.xy(*_LAKE_UV)
    lake = _blob(rng, lake_c, 0.12 * wm, 0.07 * hm, rotation=math.radians(20), wobble=0.06)
    meander_amp = min(80.0, 0.006 * smin)

    def river_line(uv: Sequence[tuple[float, float]], phase: float) -> LineString:
        pts = _chaikin([grid.xy(a, b) for a, b in uv], 4)
        # Meanders: a lateral wobble that grows with distance from the ends.
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        taper = np.minimum(1.0, np.minimum(s, s[-1] - s) / 400.0)
        wobble = meander_amp * (
            np.sin(2 * np.pi * s / 900.0 + phase) + 0.45 * np.sin(2 * np.pi * s / 350.0 + phase)
        )
        pts = pts.copy()
        pts[:, 0] += wobble * taper
        return LineString(pts)

    inflow = river_line([*_INFLOW_UV, _LAKE_UV], rng.uniform(0, 6.28))
    outflow = river_line([_LAKE_UV, *_OUTFLOW_UV], rng.uniform(0, 6.28))
    river_polys = [
        _polygonal(inflow.buffer(14.0).difference(lake)),
        _polygonal(outflow.buffer(17.0).difference(lake)),
    ]
    river = unary_union(river_polys)
    town_y = grid.xy(0, _TOWN_V)[1]
    river_x = inflow.intersection(LineString([(grid.x0, town_y), (grid.x0 + wm, town_y)]))
    rx = river_x.centroid.x if not river_x.is_empty else grid.xy(float(_river_u(_TOWN_V)), 0)[0]
    tc = (rx + 250.0, town_y)  # the town centre: 250 m east of the river
    town_r = float(np.clip(0.06 * smin, 250.0, 650.0))

    for line, poly in zip((inflow, outflow), river_polys, strict=True):
        features.append(_water(poly, "river", "river", "natural=water water=river", "Emmer"))
        features.append(_water(line.difference(lake), "river", "river", "waterway=river", "Emmer"))
    lake_feature = _water(lake, "lake", "lake", "natural=water water=lake", "Aldersee")
    lake_feature.props["names"] = _names("Aldersee", en="Lake Alder")
    features.append(lake_feature)

    # --- The town Kesselbach, its street grid and special areas.
    town = _blob(rng, tc, 1.25 * town_r, 0.9 * town_r, rotation=math.radians(8), wobble=0.07)
    grid_angle = math.radians(12)
    ca, sa = math.cos(grid_angle), math.sin(grid_angle)

    k = town_r / 650  # a default town is 650 m in radius; smaller scenes get smaller towns

    def town_pt(a: float, b: float) -> tuple[float, float]:
        """The point ``a`` m along and ``b`` m across the street grid from the centre (scaled)."""
        return tc[0] + k * (ca * a - sa * b), tc[1] + k * (sa * a + ca * b)

    church = _rect(*town_pt(-60, 45), 34 * max(k, 0.6), 15 * max(k, 0.6), grid_angle)
    rathaus = _rect(*town_pt(55, -45), 26 * max(k, 0.6), 16 * max(k, 0.6), grid_angle)
    square = Point(tc).buffer(42 * max(k, 0.6))
    park = _blob(rng, town_pt(-200, -120), 95 * k, 70 * k, wobble=0.08)
    cemetery = _rect(*town_pt(-60, 150), 80 * k, 55 * k, grid_angle)
    school_area = _rect(*town_pt(260, 170), 150 * k, 95 * k, grid_angle)
    school = _rect(*town_pt(230, 185), 60 * k, 18 * k, grid_angle)
    industrial = _rect(
        tc[0] + 1.15 * 1.25 * town_r, tc[1] - 0.1 * town_r, 0.6 * town_r, 0.35 * town_r, grid_angle
    )

    # --- Roads, rail, tracks (UTM linestrings), named the German way.
    tcu = grid.uv(*tc)

    def road(uv: Sequence[tuple[float, float]], iterations: int = 3) -> LineString:
        return LineString(_chaikin([grid.xy(a, b) for a, b in uv], iterations))

    main = road(
        [(-0.03, 0.50), (0.18, 0.53), (0.36, 0.555), tcu, (0.72, 0.545), (0.88, 0.52), (1.03, 0.50)]
    )
    seestr = road([tcu, (0.45, 0.44), (0.46, 0.34), (0.47, 0.20), (0.50, 0.085), (0.52, -0.03)])
    motorway = road([(-0.03, 0.12), (0.25, 0.09), (0.55, 0.075), (0.80, 0.09), (1.03, 0.13)])
    station_pt = town_pt(40, -0.55 * 650)
    rail = road([(-0.03, 0.63), (0.25, 0.615), grid.uv(*station_pt), (0.80, 0.60), (1.03, 0.62)])
    talv = np.linspace(_TOWN_V + 0.02, 0.86, 9)
    talstr = road([tcu, *((float(_river_u(t)) + 0.025, float(t)) for t in talv)])
    talstation = talstr.coords[-1]

    segments: list[tuple[Any, str, dict[str, Any] | None, str]] = []  # geom, class, names, surface
    segments.append((motorway, "motorway", _names("A 97"), "paved"))
    for part in _lines(main.difference(town)):
        segments.append((part, "primary", _names("B 417"), "paved"))
    for part in _lines(main.intersection(town)):
        segments.append((part, "primary", _names("Hauptstraße", short="Hauptstr."), "paved"))
    for part in _lines(seestr.difference(town)):
        segments.append((part, "secondary", _names("St 2588"), "paved"))
    for part in _lines(seestr.intersection(town)):
        segments.append((part, "secondary", _names("Seestraße", short="Seestr."), "paved"))
    segments.append((talstr, "tertiary", _names("Talstraße", short="Talstr."), "paved"))

    # The street grid: two perpendicular families of lines, clipped to the town.
    spacing = max(80.0, 0.2 * town_r)
    inner = town.buffer(-10.0)
    river_corridor = river.buffer(20.0)
    streets: list[LineString] = []
    n_lines = int(1.4 * town_r / spacing) + 1
    for family in (0, 1):
        for i in range(-n_lines, n_lines + 1):
            if family == 0 and i == 0:
                continue  # the Hauptstraße runs there
            off = i * spacing + (spacing / 2 if family else 0)
            span = 1.6 * town_r
            a0, a1 = (-span, off), (span, off)
            if family:
                a0, a1 = (off, -span), (off, span)
            line = LineString([town_pt(*(p / k for p in a0)), town_pt(*(p / k for p in a1))])
            for piece in _lines(line.intersection(inner)):
                # A street that would run along the river stops at its banks instead.
                if piece.intersection(river_corridor).length > 110:
                    piece = piece.difference(river.buffer(25))
                streets.extend(p for p in _lines(piece) if p.length > 60)
    for i, street in enumerate(streets):
        name = _STREET_NAMES[i % len(_STREET_NAMES)] if i % 7 != 6 else None
        segments.append((street, "residential", _names(name) if name else None, "paved"))

    # The lake shore path and a tributary stream.
    shore = lake.buffer(45.0).exterior
    uferweg = substring(shore, 0.05, 0.5, normalized=True)
    segments.append((uferweg, "footway", _names("Uferweg"), "gravel"))
    mouth = inflow.interpolate(inflow.project(Point(grid.xy(0.52, 0.52))))
    stream = road([(0.80, 0.40), (0.72, 0.47), (0.64, 0.50), grid.uv(mouth.x, mouth.y)], 2)
    features.append(_water(stream, "stream", "stream", "waterway=stream", "Mühlbach"))

    # --- Other areas: forest Hirschwald, the quarry, the campground, ponds.
    hirschwald = _blob(rng, grid.xy(0.80, 0.27), 0.10 * smin, 0.07 * smin, wobble=0.12)
    hirschwald = hirschwald.difference(motorway.buffer(20)).difference(seestr.buffer(15))
    quarry_c = grid.xy(0.88, 0.655)
    quarry = _blob(rng, quarry_c, max(90.0, 0.013 * smin), max(60.0, 0.009 * smin), wobble=0.1)
    lake_north = lake.exterior.interpolate(lake.exterior.project(Point(lake_c[0], lake_c[1] + 1e5)))
    camp = _rect(
        lake_north.x, lake_north.y + 90 * max(k, 0.5), 160 * max(k, 0.5), 90 * max(k, 0.5), 0.1
    )
    camp = camp.difference(lake.buffer(15))
    # Where ponds and farms must not go.
    busy = unary_union(
        [lake.buffer(250), town.buffer(250), river.buffer(120), industrial.buffer(150)]
        + [quarry.buffer(100), camp.buffer(100), hirschwald.buffer(50)]
        + [s[0].buffer(60) for s in segments]
    )
    shapely.prepare(busy)
    ponds: list[Polygon] = []
    for _ in range(200):
        if len(ponds) == 4:
            break
        pu, pv = rng.uniform(0.05, 0.95), rng.uniform(0.06, 0.50)
        pc = grid.xy(pu, pv)
        if busy.intersects(Point(pc)) or any(p.distance(Point(pc)) < 500 for p in ponds):
            continue
        rx_, ry_, rot = rng.uniform(35, 70), rng.uniform(30, 55), rng.uniform(0, 3)
        ponds.append(_blob(rng, pc, rx_, ry_, rotation=rot, wobble=0.08))
    for i, pond in enumerate(ponds):
        name = "Entenweiher" if i == 0 else None
        features.append(_water(pond, "pond", "pond", "natural=water water=pond", name))

    # --- Classes by elevation, parcels and noise.
    d_row, d_col = (np.asarray(g) for g in np.gradient(elev, 10.0))
    slope_n = (-d_row).astype(np.float32)  # rows run south: flip to d/d(north)
    slope_e = d_col.astype(np.float32)
    slope = np.degrees(np.arctan(np.hypot(slope_e, slope_n)))
    n_a, n_b, n_c, n_d = (noise([1200, 300], [1.0, 0.5]) for _ in range(4))
    n_wood = noise([1500, 600, 200], [1.0, 0.6, 0.3])
    n_alm = noise([1000, 300], [1.0, 0.4])

    crop_type, pheno, parcel_bright = _parcels(grid, seed)
    cls = np.where(crop_type > 0, CROPLAND, GRASSLAND).astype(np.uint8)
    forest_line = 950.0 + 90.0 * n_a
    tree_line = 1750.0 + 110.0 * n_b
    rock_line = 1980.0 + 130.0 * n_c
    lowland_mask = elev < forest_line
    cls[lowland_mask & ((n_wood > 1.05) | (slope > 18))] = FOREST
    cls[~lowland_mask] = FOREST
    cls[~lowland_mask & (elev < tree_line) & (n_alm > 1.25)] = GRASSLAND  # alpine pastures
    cls[elev >= tree_line] = GRASSLAND
    cls[(elev >= rock_line) | ((slope > 40) & (elev > 1300))] = BARE
    cls[elev >= emax - 190.0 + 40.0 * n_d] = SNOW
    del n_a, n_b, n_c, n_d, n_wood, n_alm

    areas = [(hirschwald, FOREST), (quarry, BARE), (lake.buffer(60), GRASSLAND)]
    areas += [(camp, GRASSLAND), (town, BUILT_UP), (industrial, BUILT_UP)]
    areas += [(park, GRASSLAND), (cemetery, GRASSLAND)]
    _burn(grid, areas, out=cls)

    # --- Buildings: special ones first, then houses along the streets, then farms.
    rail_angle = _angle_at(rail, Point(station_pt))
    station = _rect(*station_pt, 40 * max(k, 0.6), 12, rail_angle)
    station = _translate(station, *_normal_offset(rail_angle, 20))
    buildings: list[tuple[Polygon, dict[str, Any]]] = [
        (church, _building("religious", "church", 38.0, 1, "St. Michael")),
        (rathaus, _building("civic", "civic", 14.0, 3, "Rathaus Kesselbach")),
        (school, _building("education", "school", 11.0, 3, "Grundschule Kesselbach")),
        (station, _building("transportation", "train_station", 9.0, 2, "Bahnhof Kesselbach")),
    ]
    obstacles = unary_union(
        [river.buffer(12), lake.buffer(10), main.buffer(9), seestr.buffer(8), rail.buffer(10)]
        + [square, park, cemetery, school_area, industrial.buffer(5)]
        + [b[0].buffer(4) for b in buildings]
    )
    town_streets = [*streets, *_lines(main.intersection(town))]
    houses = _place_houses(
        _rng(seed, "houses"), town_streets, town.buffer(-6), obstacles, tc, town_r
    )
    buildings.extend(houses)
    irng = _rng(seed, "industry")
    halls: list[Polygon] = []
    x_lo, y_lo, x_hi, y_hi = industrial.bounds
    for _ in range(8):
        length, depth = irng.uniform(35, 70), irng.uniform(20, 35)
        cx, cy = irng.uniform(x_lo, x_hi), irng.uniform(y_lo, y_hi)
        hall = _rect(cx, cy, length * max(k, 0.5), depth * max(k, 0.5), grid_angle)
        height = round(float(irng.uniform(8, 14)), 1)
        if industrial.buffer(-5).contains(hall) and all(hall.distance(h) >= 8 for h in halls):
            name = None if halls else "Sägewerk Brandl"
            buildings.append((hall, _building("industrial", "industrial", height, 1, name)))
            halls.append(hall)

    farms = _place_farms(_rng(seed, "farms"), grid, cls, busy, segments)
    for fb in farms:
        buildings.extend(fb[0])
        segments.append((fb[1], "track", None, "gravel"))
    segments.append((rail, "standard_gauge", _names("Emmertalbahn"), "ballast"))

    # --- Water overrides everything; built-up includes farm buildings.
    _burn(grid, [(b[0], BUILT_UP) for b in buildings if not town.contains(b[0])], out=cls)
    _burn(grid, [(lake, WATER), (river, WATER), *((p, WATER) for p in ponds)], out=cls)

    # --- Auxiliary rasters for the spectra.
    trng = _rng(seed, "texture")
    tex = _noise(trng, (h, w), _TEXTURE_CELLS_M, [1.0, 0.5])
    # Fields vary by parcel, everything else by a broad texture.
    bright = np.where(cls == CROPLAND, 1.0 + parcel_bright, 1.0 + _TEXTURE_AMP * tex)
    bright = bright.astype(np.float32)
    decid_noise = _noise(trng, (h, w), [900, 250], [1.0, 0.5])
    decid = np.clip(0.55 + 0.3 * decid_noise - (elev - 800.0) / 1100.0, 0.0, 1.0)
    decid = np.round(decid * 3) / 3  # stands of uniform mix rather than a continuous blend
    decid = np.where(cls == FOREST, decid, 0.0).astype(np.float32)
    urban = np.clip(0.5 + 0.12 * tex, 0.2, 0.8).astype(np.float32)
    centre = Point(tc).buffer(0.35 * town_r)
    _burn(grid, [(centre, 0.78), (industrial, 0.88), (square, 0.95)], out=urban)
    _burn(grid, [(s.buffer(3), 0.92) for s in streets], out=urban, all_touched=True)
    _burn(grid, [(b[0], 0.97) for b in buildings], out=urban, all_touched=True)
    urban = np.where(cls == BUILT_UP, urban, 0.0).astype(np.float32)
    # Half-width (m) and paved share of a 10 m pixel per road class.
    coverage = {"motorway": (14.0, 1.0), "primary": (6.0, 0.85), "secondary": (5.0, 0.75)}
    coverage |= {"tertiary": (4.0, 0.6), "standard_gauge": (5.0, 0.6)}
    road_cov = _burn(
        grid,
        [(g.buffer(coverage[c][0]), coverage[c][1]) for g, c, _, _ in segments if c in coverage],
        dtype="float32",
    )
    road_cov[cls == BUILT_UP] = 0.0  # inside the town streets are part of the urban mix
    crop = np.where(cls == CROPLAND, crop_type, 0).astype(np.uint8)
    snow_noise = _noise(_rng(seed, "snow"), (h, w), [800, 200], [1.0, 0.5])

    # --- Overture features derived from all of the above.
    for geom, cls_name, names, surface in segments:
        subtype = "rail" if cls_name == "standard_gauge" else "road"
        props: dict[str, Any] = {"names": names, "subtype": subtype, "class": cls_name}
        props |= {"subclass": None, "road_surface": [{"value": surface, "between": None}]}
        features.append(_Feature("transportation", "segment", geom, props))
    for poly, bprops in buildings:
        features.append(_Feature("buildings", "building", poly, bprops))
    land_cover = _vectorize_land_cover(grid, cls)
    for code, poly in land_cover:
        carto = {"min_zoom": 8, "max_zoom": 15, "sort_key": code}
        lc_props = {"subtype": _LC_SUBTYPE[code], "cartography": carto}
        features.append(_Feature("base", "land_cover", poly, lc_props))
    named = {"town": town, "industrial": industrial, "park": park, "cemetery": cemetery}
    named |= {"school": school_area, "hirschwald": hirschwald, "quarry": quarry, "camp": camp}
    features.extend(_land_use(grid, elev, land_cover, named))
    features.extend(_natural(grid, elev, land_cover))
    water = unary_union([river, lake])
    features.extend(_infrastructure(grid, segments, water, station, lake_north, talstation, elev))
    features.extend(_places(buildings, tc, lake, camp, lake_north, talstation))

    return _Landscape(
        grid=grid,
        cls=cls,
        elev=elev,
        slope_e=slope_e,
        slope_n=slope_n,
        crop=crop,
        pheno_shift=np.where((crop > 0) | (cls == GRASSLAND), pheno, 0).astype(np.float32),
        bright=bright,
        decid=decid,
        urban=urban,
        road=road_cov,
        snow_noise=snow_noise,
        features=features,
    )


def _lines(geom: Any) -> Iterator[LineString]:
    """The LineStrings in any geometry (a clipped line may come back multi-part)."""
    if geom.is_empty:
        return
    if geom.geom_type == "LineString":
        yield geom
    elif geom.geom_type == "MultiLineString" or hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _lines(g)


def _angle_at(line: LineString, pt: Point) -> float:
    s = line.project(pt)
    a = line.interpolate(max(0.0, s - 20.0))
    b = line.interpolate(min(line.length, s + 20.0))
    return math.atan2(b.y - a.y, b.x - a.x)


def _normal_offset(angle: float, dist: float) -> tuple[float, float]:
    return -math.sin(angle) * dist, math.cos(angle) * dist


def _translate(geom: Any, dx: float, dy: float) -> Any:
    return shapely.transform(geom, lambda c: c + np.array([dx, dy]))


def _parcels(grid: _Grid, seed: int) -> tuple[Array, Array, Array]:
    """Field parcels: rotated strips of varying height cut into fields of varying width.

    Returns:
        Per 10 m pixel: crop type (0 meadow, 1 winter cereal, 2 maize, 3 spring crop), a
        phenology shift in days and a brightness offset, all constant within a parcel.
    """
    h, w = grid.shape(10)
    rng = _rng(seed, "parcels")
    theta = math.radians(8)
    xs = (np.arange(w, dtype=np.float64) + 0.5) * 10.0
    ys = (np.arange(h, dtype=np.float64) + 0.5) * 10.0
    xr = math.cos(theta) * xs[None, :] + math.sin(theta) * ys[:, None]
    yr = -math.sin(theta) * xs[None, :] + math.cos(theta) * ys[:, None]
    y_lo, y_hi = float(yr.min()), float(yr.max())
    heights = rng.uniform(110, 300, size=int((y_hi - y_lo) / 110) + 2)
    edges = y_lo + np.cumsum(heights)
    row = np.searchsorted(edges, yr).astype(np.int64)
    widths = rng.uniform(90, 360, size=len(edges) + 1)
    offsets = rng.uniform(0, 360, size=len(edges) + 1)
    col = np.floor((xr + offsets[row]) / widths[row]).astype(np.int64) + 10_000
    # A multiplicative hash of the parcel id gives each parcel its own properties.
    pid = (row * 1_000_003 + col + seed * 7919).astype(np.uint64)
    hsh = (pid * np.uint64(2654435761)) % np.uint64(2**32)
    hsh ^= hsh >> np.uint64(13)
    hsh = (hsh * np.uint64(2246822519)) % np.uint64(2**32)
    pick = (hsh % np.uint64(100)).astype(np.int32)
    crop = np.select([pick < 35, pick < 60, pick < 75], [2, 1, 3], 0).astype(np.uint8)
    shift = ((hsh >> np.uint64(8)) % np.uint64(25)).astype(np.float32) - 12.0
    bright = (((hsh >> np.uint64(16)) % np.uint64(1000)).astype(np.float32) / 1000 - 0.5) * 0.16
    return crop, shift, bright


def _place_houses(
    rng: np.random.Generator,
    streets: Sequence[LineString],
    inner: Any,
    obstacles: Any,
    tc: tuple[float, float],
    town_r: float,
) -> list[tuple[Polygon, dict[str, Any]]]:
    """Houses along both sides of every street, without overlaps or touching obstacles."""
    shapely.prepare(inner)
    shapely.prepare(obstacles)
    cells: dict[tuple[int, int], list[Polygon]] = {}
    out: list[tuple[Polygon, dict[str, Any]]] = []
    for street in streets:
        length = street.length
        s = float(rng.uniform(5, 15))
        while s < length - 5:
            ang = _angle_at(street, street.interpolate(s))
            p = street.interpolate(s)
            for side in (-1.0, 1.0):
                if rng.random() > 0.5:
                    continue
                central = math.dist((p.x, p.y), tc) < 0.35 * town_r
                lw = float(rng.uniform(18, 26) if central else rng.uniform(10, 17))
                dp = float(rng.uniform(12, 15) if central else rng.uniform(9, 13))
                setback = float(rng.uniform(10, 13))
                dx, dy = _normal_offset(ang, side * (setback + dp / 2))
                rect = _rect(p.x + dx, p.y + dy, lw, dp, ang)
                if not inner.contains(rect) or obstacles.intersects(rect):
                    continue
                key = (int((p.x + dx) // 40), int((p.y + dy) // 40))
                near = [
                    q
                    for i in (-1, 0, 1)
                    for j in (-1, 0, 1)
                    for q in cells.get((key[0] + i, key[1] + j), [])
                ]
                if any(rect.distance(q) < 3.0 for q in near):
                    continue
                cells.setdefault(key, []).append(rect)
                height = round(float(rng.uniform(7, 10)), 1)
                if central and rng.random() < 0.35:
                    props = _building("commercial", "retail", 12.0, 3)
                elif central:
                    props = _building("residential", "apartments", height + 5, 4)
                else:
                    kind = "house" if rng.random() < 0.8 else "detached"
                    props = _building("residential", kind, height, 2)
                out.append((rect, props))
            s += float(rng.uniform(22, 32))
    return out


def _place_farms(
    rng: np.random.Generator,
    grid: _Grid,
    cls: Array,
    busy: Any,
    segments: Sequence[tuple[Any, str, Any, str]],
) -> list[tuple[list[tuple[Polygon, dict[str, Any]]], LineString]]:
    """A few farmsteads (house, barn, shed) in the fields, each with a track to a road."""
    roads = unary_union([g for g, c, _, _ in segments if c in ("primary", "secondary")])
    farms: list[tuple[list[tuple[Polygon, dict[str, Any]]], LineString]] = []
    sites: list[Point] = []
    for _ in range(300):
        if len(farms) == 5:
            break
        pu, pv = rng.uniform(0.05, 0.95), rng.uniform(0.06, 0.52)
        x, y = grid.xy(pu, pv)
        row, col = int(pv * grid.height), int(pu * grid.width)
        here = Point(x, y)
        if cls[row, col] not in (CROPLAND, GRASSLAND) or busy.intersects(here.buffer(40)):
            continue
        if any(here.distance(s) < 1500 for s in sites):
            continue
        sites.append(here)
        ang = float(rng.uniform(0, math.pi))
        house = _rect(x, y, 18, 12, ang)
        bx, by = _normal_offset(ang, 28)
        barn = _rect(x + bx, y + by, 32, 16, ang)
        sx, sy = _normal_offset(ang + math.pi / 2, 30)
        shed = _rect(x + sx, y + sy, 14, 9, ang)
        ml = {"dataset": "Microsoft ML Buildings", "confidence": 0.91}
        farm = [
            (house, _building("agricultural", "farm", 9.0, 2)),
            (barn, _building("agricultural", "barn", 10.0, 1, source=ml)),
            (shed, _building("agricultural", "farm_auxiliary", 5.0, 1, source=ml)),
        ]
        target = roads.interpolate(roads.project(here)) if not roads.is_empty else here
        track = LineString([(x - bx * 0.2, y - by * 0.2), (target.x, target.y)])
        farms.append((farm, track))
    return farms


_LC_SUBTYPE = {
    FOREST: "forest",
    CROPLAND: "crop",
    GRASSLAND: "grass",
    BUILT_UP: "urban",
    BARE: "barren",
    SNOW: "snow",
}


def _block_mode(cls: Array, f: int, n_classes: int = 7) -> Array:
    """The most frequent class in every ``f`` x ``f`` block (ties go to the lower code)."""
    h, w = cls.shape
    blocks = cls.reshape(h // f, f, w // f, f)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in range(1, n_classes + 1)])
    mode: Array = (counts.argmax(axis=0) + 1).astype(np.uint8)
    return mode


def _vectorize_land_cover(grid: _Grid, cls: Array) -> list[tuple[int, Any]]:
    """Land-cover polygons (UTM): the class map at 30 m, small patches sieved, simplified."""
    coarse = _block_mode(cls, 3)
    coarse = rasterio.features.sieve(coarse, size=14, connectivity=8)
    out: list[tuple[int, Any]] = []
    mask = coarse != WATER  # Overture keeps water out of land_cover (it is in base/water)
    for geom, value in rasterio.features.shapes(
        coarse, mask=mask, connectivity=4, transform=grid.transform(30)
    ):
        poly = _polygonal(shapely.geometry.shape(geom).simplify(12.0, preserve_topology=True))
        if not poly.is_empty and poly.area >= 3000.0:
            out.append((int(value), poly))
    return out


def _land_use(
    grid: _Grid,
    elev: Array,
    land_cover: Sequence[tuple[int, Any]],
    areas: dict[str, Any],
) -> list[_Feature]:
    """Land use: the named areas of the landscape, farmland and meadows, a nature reserve."""

    def lu(geom: Any, cls: str, subtype: str, tags: str, name: str | None = None) -> _Feature:
        surface = "grass" if cls in ("park", "meadow", "camp_site") else None
        return _named("land_use", geom, cls, subtype, tags, name, surface=surface, level=None)

    residential = areas["town"].difference(unary_union([areas[k] for k in _TOWN_AREAS]))
    out = [
        lu(residential, "residential", "residential", "landuse=residential", "Kesselbach"),
        lu(areas["industrial"], "industrial", "developed", "landuse=industrial",
           "Gewerbegebiet Kesselbach-Ost"),
        lu(areas["park"], "park", "park", "leisure=park", "Kurpark"),
        lu(areas["cemetery"], "cemetery", "cemetery", "landuse=cemetery", "Friedhof Kesselbach"),
        lu(areas["school"], "school", "education", "amenity=school", "Grundschule Kesselbach"),
        lu(areas["hirschwald"], "forest", "managed", "landuse=forest", "Hirschwald"),
        lu(areas["quarry"], "quarry", "resource_extraction", "landuse=quarry",
           "Steinbruch am Kalkberg"),
        lu(areas["camp"], "camp_site", "campground", "tourism=camp_site",
           "Campingplatz Aldersee"),
    ]  # fmt: skip
    rows, cols = grid.shape(10)
    for code, poly in land_cover:
        if poly.area < 30_000:
            continue  # OSM maps fields in blocks, not every sliver
        c = poly.representative_point()
        u, v = grid.uv(c.x, c.y)
        z = float(elev[min(rows - 1, max(0, int(v * rows))), min(cols - 1, max(0, int(u * cols)))])
        if code == CROPLAND:
            out.append(lu(poly, "farmland", "agriculture", "landuse=farmland"))
        elif code == GRASSLAND and z < 900 and not poly.intersects(areas["town"]):
            out.append(lu(poly, "meadow", "agriculture", "landuse=meadow"))
    # The upper massif is a nature reserve.
    high = _block_mode((elev > 1650).astype(np.uint8) + 1, 6, 2) - 1
    polys = [
        shapely.geometry.shape(g)
        for g, val in rasterio.features.shapes(high, transform=grid.transform(60))
        if val == 1
    ]
    if polys:
        reserve = _polygonal(max(polys, key=lambda p: p.area).simplify(60.0))
        out.append(lu(reserve, "nature_reserve", "protected", "leisure=nature_reserve",
                      "Naturschutzgebiet Gamsspitze"))  # fmt: skip
    return out


def _natural(grid: _Grid, elev: Array, land_cover: Sequence[tuple[int, Any]]) -> list[_Feature]:
    """Named natural features (Overture ``base/land``): peaks, the glacier, the rock cirque."""
    out: list[_Feature] = []
    cols = elev.shape[1]
    for name, u_lo, u_hi in (("Gamsspitze", 0.55, 1.0), ("Kesselkopf", 0.0, 0.45)):
        c0, c1 = int(u_lo * cols), int(u_hi * cols)
        sub = elev[:, c0:c1]
        r, c = np.unravel_index(int(sub.argmax()), sub.shape)
        if float(sub[r, c]) < 1500:
            continue
        x, y = grid.transform(10) * (c0 + c + 0.5, r + 0.5)
        z = round(float(sub[r, c]))
        out.append(_named("land", Point(x, y), "peak", "physical", "natural=peak", name,
                          elevation=z))  # fmt: skip
    snow = [p for code, p in land_cover if code == SNOW]
    if snow:
        out.append(_named("land", unary_union(snow), "glacier", "glacier", "natural=glacier",
                          "Gamsferner", elevation=None))  # fmt: skip
    bare = [p for code, p in land_cover if code == BARE]
    if bare:
        out.append(_named("land", max(bare, key=lambda p: p.area), "bare_rock", "rock",
                          "natural=bare_rock", "Steinkar", elevation=None))  # fmt: skip
    return out


def _infrastructure(
    grid: _Grid,
    segments: Sequence[tuple[Any, str, Any, str]],
    water: Any,
    station: Any,
    lake_north: Point,
    talstation: tuple[float, ...],
    elev: Array,
) -> list[_Feature]:
    """Bridges where roads cross water, a power line, parking, the Gamsbahn cable car."""

    def infra(geom: Any, cls: str, subtype: str, tags: str, name: str | None = None) -> _Feature:
        return _named("infrastructure", geom, cls, subtype, tags, name)

    out: list[_Feature] = []
    wet = water.buffer(8)
    shapely.prepare(wet)
    for geom, cls, names, _ in segments:
        if cls in ("footway", "track") or not wet.intersects(geom):
            continue
        for part in _lines(geom.intersection(wet)):
            if part.length > 15:
                name = f"Emmerbrücke ({names['primary']})" if names else None
                out.append(infra(part, "bridge", "bridge", "man_made=bridge", name))
    # A 220 kV line across the north, pylons every ~350 m.
    corners = [grid.xy(-0.02, 0.05), grid.xy(0.45, 0.165), grid.xy(1.02, 0.35)]
    line = LineString(_chaikin(corners, 1)).intersection(box(*_grid_bounds(grid)))
    out.append(infra(line, "power_line", "power", "power=line voltage=220000",
                     "Leitung Emmertal–Ostallgäu"))  # fmt: skip
    for d in np.arange(175.0, line.length, 350.0):
        out.append(infra(line.interpolate(float(d)), "power_tower", "power", "power=tower"))
    sub = line.interpolate(line.project(Point(*grid.xy(0.7, 0.3))))
    out.append(infra(_rect(sub.x, sub.y - 60, 70, 45, 0.2), "substation", "power",
                     "power=substation", "Umspannwerk Kesselbach"))  # fmt: skip
    sc = station.centroid
    out.append(infra(_rect(sc.x, sc.y + 35, 45, 25, 0.1), "parking", "transit",
                     "amenity=parking", "P+R Bahnhof"))  # fmt: skip
    out.append(infra(_rect(lake_north.x + 120, lake_north.y + 60, 50, 30, 0.3), "parking",
                     "transit", "amenity=parking"))  # fmt: skip
    out.append(infra(_rect(talstation[0] + 40, talstation[1], 45, 30, 1.2), "parking",
                     "transit", "amenity=parking", "Parkplatz Gamsbahn"))  # fmt: skip
    # The cable car climbs from the valley towards the summit.
    r, c = np.unravel_index(int(elev.argmax()), elev.shape)
    top = grid.transform(10) * (c + 0.5, r + 0.5)
    x0, y0 = talstation[0], talstation[1]
    ropeway = LineString([(x0, y0), (x0 + 0.85 * (top[0] - x0), y0 + 0.85 * (top[1] - y0))])
    out.append(infra(ropeway, "cable_car", "aerialway", "aerialway=cable_car", "Gamsbahn"))
    return out


def _grid_bounds(grid: _Grid) -> tuple[float, float, float, float]:
    """The grid's bounds (xmin, ymin, xmax, ymax) in UTM metres."""
    return grid.x0, grid.y0 - grid.height_m, grid.x0 + grid.width_m, grid.y0


# Shops and services on the buildings nearest the town centre: name, category, alternates,
# address.
_SHOPS = (
    ("Gasthof zur Post", "restaurant", ("bavarian_restaurant", "hotel"), "Hauptstraße 12"),
    ("Bäckerei Huber", "bakery", ("cafe",), "Hauptstraße 7"),
    ("Café am Markt", "cafe", ("bakery",), "Marktplatz 3"),
    ("Marien-Apotheke", "pharmacy", ("health_and_medical",), "Hauptstraße 21"),
    ("Dorfladen Kesselbach", "grocery_store", ("supermarket",), "Lindenstraße 2"),
    ("Raiffeisenbank Emmertal", "bank_credit_union", ("atms",), "Marktplatz 5"),
    ("Heimatmuseum Kesselbach", "museum", ("history_museum",), "Kirchweg 3"),
    ("Postfiliale Kesselbach", "post_office", ("shipping_center",), "Hauptstraße 30"),
    ("Biergarten am Emmerufer", "beer_garden", ("restaurant",), "Mühlweg 8"),
    ("Metzgerei Brandl", "butcher_shop", ("meat_shop",), "Gartenstraße 1"),
)


def _place(
    pt: Any,
    name: str,
    category: str,
    alternate: Sequence[str],
    confidence: float,
    street: str | None,
) -> _Feature:
    address = None
    if street:
        where = {"locality": "Kesselbach", "postcode": "82497", "region": "BY", "country": "DE"}
        address = [{"freeform": street, **where}]
    props: dict[str, Any] = {"names": _names(name), "confidence": confidence}
    props |= {"categories": {"primary": category, "alternate": list(alternate)}}
    props["addresses"] = address
    return _Feature("places", "place", pt, props)


def _places(
    buildings: Sequence[tuple[Polygon, dict[str, Any]]],
    tc: tuple[float, float],
    lake: Any,
    camp: Any,
    lake_north: Point,
    talstation: tuple[float, ...],
) -> list[_Feature]:
    """POIs: the named public buildings, shops in the centre, places at the lake and valley."""
    named = {b[1]["names"]["primary"]: b[0].centroid for b in buildings if b[1].get("names")}
    out = [
        _place(named["St. Michael"], "St. Michael", "church_cathedral",
               ["religious_organization"], 0.97, "Kirchplatz 1"),
        _place(named["Rathaus Kesselbach"], "Rathaus Kesselbach", "town_hall",
               ["public_and_government_association"], 0.95, "Marktplatz 1"),
        _place(named["Grundschule Kesselbach"], "Grundschule Kesselbach", "elementary_school",
               ["school"], 0.93, "Schulstraße 4"),
        _place(named["Bahnhof Kesselbach"], "Bahnhof Kesselbach", "train_station",
               ["transportation"], 0.96, "Bahnhofstraße 1"),
    ]  # fmt: skip
    central = sorted(
        (b[0].centroid for b in buildings if b[1].get("class") in ("retail", "apartments")),
        key=lambda p: math.dist(p.coords[0], tc),
    )
    for (name, cat, alt, street), pt in zip(_SHOPS, central, strict=False):
        out.append(_place(pt, name, cat, alt, 0.88, street))
    if "Sägewerk Brandl" in named:
        out.append(_place(named["Sägewerk Brandl"], "Tankstelle Kesselbach", "gas_station",
                          ["automotive_services_and_repair"], 0.9, "Hauptstraße 88"))  # fmt: skip
    shore = lake.exterior.interpolate(lake.exterior.project(Point(tc)))
    hotel = Point(shore.x + 40, shore.y)
    beach = Point(lake_north.x - 60, lake_north.y + 20)
    valley = Point(talstation[0], talstation[1])
    out += [
        _place(hotel, "Hotel Seeblick", "hotel", ["restaurant"], 0.92, "Seestraße 20"),
        _place(camp.centroid, "Campingplatz Aldersee", "campground", ["rv_park"], 0.9,
               "Am Seeufer 5"),
        _place(beach, "Strandbad Aldersee", "beach", ["swimming_pool"], 0.8, None),
        _place(valley, "Gamsbahn Talstation", "ski_and_snowboard_shop", ["tours"], 0.75,
               "Talstraße 40"),
    ]  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Spectra, phenology and sun

# Surface reflectance of the end members in L2A band order (B01 .. B12 without B10).
_ENDMEMBERS = (
    "water",
    "conifer",
    "decid_on",
    "decid_off",
    "green",
    "soil",
    "dry",
    "urban",
    "rock",
    "snow",
    "asphalt",
)
_SPECTRA: dict[str, tuple[float, ...]] = {
    "water": (0.045, 0.040, 0.038, 0.024, 0.019, 0.014, 0.012, 0.010, 0.009, 0.005, 0.004, 0.003),
    "conifer": (0.025, 0.022, 0.040, 0.022, 0.065, 0.17, 0.21, 0.23, 0.24, 0.085, 0.11, 0.05),
    "decid_on": (0.030, 0.030, 0.065, 0.030, 0.095, 0.28, 0.35, 0.38, 0.39, 0.14, 0.19, 0.085),
    "decid_off": (0.045, 0.045, 0.055, 0.060, 0.075, 0.10, 0.115, 0.125, 0.13, 0.05, 0.18, 0.12),
    "green": (0.035, 0.035, 0.075, 0.035, 0.11, 0.31, 0.39, 0.42, 0.43, 0.15, 0.21, 0.10),
    "soil": (0.065, 0.075, 0.10, 0.13, 0.16, 0.18, 0.20, 0.22, 0.23, 0.10, 0.30, 0.24),
    "dry": (0.055, 0.060, 0.08, 0.095, 0.125, 0.17, 0.19, 0.21, 0.22, 0.085, 0.28, 0.20),
    "urban": (0.09, 0.095, 0.105, 0.115, 0.125, 0.135, 0.145, 0.155, 0.16, 0.07, 0.19, 0.17),
    "rock": (0.15, 0.17, 0.20, 0.23, 0.25, 0.26, 0.27, 0.28, 0.285, 0.13, 0.31, 0.26),
    "snow": (0.80, 0.85, 0.84, 0.82, 0.80, 0.77, 0.75, 0.72, 0.70, 0.33, 0.08, 0.05),
    "asphalt": (0.07, 0.075, 0.08, 0.085, 0.09, 0.095, 0.10, 0.105, 0.11, 0.05, 0.13, 0.12),
}
_CLOUD = np.array(
    (0.62, 0.60, 0.59, 0.59, 0.60, 0.60, 0.60, 0.60, 0.59, 0.32, 0.47, 0.36), np.float32
)
_S_T = np.array([_SPECTRA[e] for e in _ENDMEMBERS], np.float32).T.copy()  # (12 bands, 11)
_SNOW = np.array(_SPECTRA["snow"], np.float32)[:, None]
_ASPHALT = np.array(_SPECTRA["asphalt"], np.float32)[:, None]
_B04, _B08 = 3, 7  # indices of red and NIR in L2A_BANDS

# Monthly (mid-month) curves: greenness of crops and grass, leaf-on share, snow line (m).
_MONTH_DOY = np.array([15 + 30.44 * m for m in range(12)])
_GREEN = {
    1: (0.25, 0.25, 0.35, 0.60, 0.85, 0.80, 0.45, 0.08, 0.05, 0.12, 0.22, 0.25),  # winter cereal
    2: (0.0, 0.0, 0.0, 0.02, 0.08, 0.40, 0.85, 0.92, 0.70, 0.15, 0.03, 0.0),  # maize
    3: (0.0, 0.0, 0.02, 0.12, 0.50, 0.88, 0.70, 0.20, 0.06, 0.04, 0.02, 0.0),  # spring crop
    0: (0.30, 0.30, 0.42, 0.68, 0.88, 0.86, 0.80, 0.75, 0.70, 0.55, 0.42, 0.33),  # grass
}
_LEAF_ON = (0.0, 0.0, 0.03, 0.30, 0.85, 1.0, 1.0, 1.0, 0.95, 0.60, 0.15, 0.0)
_SNOW_LINE = (850, 900, 1200, 1600, 2000, 2350, 2700, 2850, 2700, 2200, 1500, 1000)


def _seasonal(curve: Sequence[float], doy: Array | float) -> Array:
    """Interpolate a mid-month curve at day(s) of year, wrapping around the year end."""
    xp = np.concatenate([_MONTH_DOY - 365.25, _MONTH_DOY, _MONTH_DOY + 365.25])
    fp = np.tile(np.asarray(curve, dtype=np.float64), 3)
    return np.interp(np.mod(doy, 365.25), xp, fp)


def _sun_position(when: datetime.datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar azimuth (degrees clockwise from north) and elevation (NOAA approximation)."""
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    ha = math.radians((hours * 60 + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return (az + 180) % 360, elevation


# --------------------------------------------------------------------------------------------
# Rendering one acquisition

SHADOW_OFFSET_M = (-200.0, 570.0)
"""Cloud shadows fall this far (east, north) from their cloud (the sun is in the south-south-east
at overpass, clouds ~1.5 km high)."""

_CHUNK_ROWS = 300  # a multiple of 6 so every chunk holds whole 20 and 60 m pixels
_TEXTURE_CELLS_M = (1500.0, 500.0)  # brightness texture: broad, because detail costs bytes
_TEXTURE_AMP = 0.03
_LOWLAND_RELIEF_M = 45.0
_CLOUD_RAMP = 0.6  # noise units from a cloud edge to its thick interior
_SHADE = 0.65  # weight of direct sunlight in terrain shading
_NOISE_DN = 2  # per-pixel noise amplitude (DN) ...
_NOISE_SPREAD = 20  # ... on the ~2 * _NOISE_DN / (2 * _NOISE_SPREAD + 1) of pixels it hits:
# sparse and small, because noise ruins the compression of 16-bit DEFLATE tiles
_SCL_PRIORITY = np.array([9, 8, 10, 3, 11, 6, 4, 5, 0], np.uint8)  # ties in the 20 m mode


def _baseline_offset(baseline: str) -> int:
    """DN offset of a processing baseline: +1000 (BOA_ADD_OFFSET) from 04.00 on."""
    offset = baseline_offset(baseline)
    if offset is None:
        raise ValueError(f"processing baseline {baseline!r} is not like '05.10'")
    return offset


def _pixel_offset(flavor: ItemFlavor, baseline: str) -> int:
    """DN the flavor's COGs carry above reflectance x 10000: none where Element 84 removed it."""
    return 0 if flavor == "earth-search" else _baseline_offset(baseline)


def _footprint_edge(grid: _Grid) -> Callable[[Array], Array]:
    """The western edge (x as a function of y) of an ``east`` footprint: a tilted swath edge."""
    xc = grid.x0 + 0.45 * grid.width_m
    ym = grid.y0 - grid.height_m / 2
    tilt = math.tan(math.radians(10))  # swaths run NNE-SSW
    return lambda y: xc + (y - ym) * tilt


def _footprint_mask(grid: _Grid, footprint: str, res: int) -> Array:
    h, w = grid.shape(res)
    if footprint == "full":
        return np.ones((h, w), bool)
    xs = grid.x0 + (np.arange(w) + 0.5) * res
    ys = grid.y0 - (np.arange(h) + 0.5) * res
    return xs[None, :] >= _footprint_edge(grid)(ys)[:, None]


def _footprint_polygon(grid: _Grid, footprint: str) -> Polygon:
    xmin, ymin, xmax, ymax = _grid_bounds(grid)
    if footprint == "full":
        return box(xmin, ymin, xmax, ymax)
    edge = _footprint_edge(grid)
    x_top, x_bot = (float(x) for x in edge(np.array([ymax, ymin])))
    return Polygon([(x_bot, ymin), (xmax, ymin), (xmax, ymax), (x_top, ymax)])


@dataclass
class _Clouds:
    alpha: Array  # float32 opacity 0..1
    bright: Array  # float32 cloud-top brightness factor
    code: Array  # uint8 SCL code of cloud pixels (8, 9, 10) else 0
    shadow: Array  # float32 shadow strength 0..1


def _clouds(grid: _Grid, acq: Acquisition, fp: Array, rng: np.random.Generator) -> _Clouds:
    """Clouds from smooth noise thresholded so they cover ``cloud_fraction`` of the footprint."""
    shape = grid.shape(10)
    zeros = np.zeros(shape, np.float32)
    cf = min(1.0, max(0.0, float(acq.cloud_fraction)))
    if cf <= 0.0:
        return _Clouds(zeros, zeros, np.zeros(shape, np.uint8), zeros)
    c = _noise(rng, shape, [3500, 1400, 500, 160], [1.0, 0.7, 0.4, 0.2])
    thr = -np.inf if cf >= 1.0 else float(np.quantile(c[fp], 1.0 - cf))
    cloud = c > thr
    tau = np.where(cloud, np.clip((c - thr) / _CLOUD_RAMP, 0.0, 1.0), 0.0).astype(np.float32)
    code = np.zeros(shape, np.uint8)
    code[cloud] = 10  # thin cirrus at the edges
    code[cloud & (tau >= 0.12)] = 8
    code[tau >= 0.4] = 9
    alpha = np.where(cloud, 0.18 + 0.82 * np.clip(tau / 0.5, 0.0, 1.0) ** 0.8, 0.0)
    alpha = alpha.astype(np.float32)
    # Opacity and brightness saturate inside thick clouds: flat tops compress well.
    bright = (0.85 + 0.25 * np.clip(tau / 0.5, 0.0, 1.0)).astype(np.float32)
    thick = np.where(tau >= 0.12, alpha, 0.0)
    dx = round(SHADOW_OFFSET_M[0] / 10)
    dy = -round(SHADOW_OFFSET_M[1] / 10)  # north is up: negative rows
    shadow = np.zeros(shape, np.float32)
    h, w = shape
    src = thick[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    shadow[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = src
    shadow[cloud] = 0.0
    return _Clouds(alpha, bright, code, shadow)


@dataclass
class _Rendered:
    dn: dict[str, Array]  # band name -> uint16 at native resolution
    scl: Array  # uint8 at 20 m
    counts: dict[int, int]  # SCL code -> 20 m pixels inside the footprint
    valid: int  # 20 m pixels inside the footprint
    total: int  # 20 m pixels in the scene
    sun_azimuth: float
    sun_elevation: float


def _render(
    ls: _Landscape, acq: Acquisition, index: int, seed: int, pixel_offset: int
) -> _Rendered:
    grid = ls.grid
    h, w = grid.shape(10)
    when = _as_utc(acq.date)
    doy = when.timetuple().tm_yday + when.hour / 24
    lon_c, lat_c = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(
        grid.x0 + grid.width_m / 2, grid.y0 - grid.height_m / 2
    )
    sun_az, sun_el = _sun_position(when, lon_c, lat_c)
    key = (acq.date.isoformat(), index)
    fp = _footprint_mask(grid, acq.footprint, 10)
    clouds = _clouds(grid, acq, fp, _rng(seed, "clouds", *key))
    snow_line = float(_seasonal(_SNOW_LINE, doy))
    leaf_on = float(_seasonal(_LEAF_ON, doy))
    el, az = math.radians(max(sun_el, 5.0)), math.radians(sun_az)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))

    dn = {b.name: np.zeros(grid.shape(b.resolution_m), np.uint16) for b in L2A_BANDS}
    scl20 = np.zeros(grid.shape(20), np.uint8)
    fps = {res: _footprint_mask(grid, acq.footprint, res) for res in (20, 60)}

    def chunk(r0: int, r1: int) -> None:
        rows = r1 - r0
        sl = slice(r0, r1)
        cls = ls.cls[sl].ravel()
        n = cls.size
        is_f = (cls == FOREST).astype(np.float32)
        is_c = cls == CROPLAND
        is_g = (cls == GRASSLAND).astype(np.float32)
        is_b = (cls == BUILT_UP).astype(np.float32)
        # Greenness: per crop type, shifted per parcel; mountain grass greens up later.
        elev = ls.elev[sl].ravel()
        shift = ls.pheno_shift[sl].ravel()
        lag = np.clip((elev - 800.0) / 1200.0, 0.0, 1.0) * 35.0
        g_grass = _seasonal(_GREEN[0], doy + shift - lag).astype(np.float32)
        crop = ls.crop[sl].ravel()
        g_crop = np.zeros(n, np.float32)
        for t in (1, 2, 3):
            m = crop == t
            if m.any():
                g_crop[m] = _seasonal(_GREEN[t], doy + shift[m])
        decid = ls.decid[sl].ravel()
        urban = ls.urban[sl].ravel()
        garden = is_b * (1.0 - urban)
        ab = np.empty((len(_ENDMEMBERS), n), np.float32)
        ab[0] = cls == WATER
        ab[1] = is_f * (1.0 - decid)
        ab[2] = is_f * decid * leaf_on
        ab[3] = is_f * decid * (1.0 - leaf_on)
        ab[4] = np.where(is_c, g_crop, 0.0) + (is_g + garden) * g_grass
        ab[5] = np.where(is_c, 1.0 - g_crop, 0.0)
        ab[6] = (is_g + garden) * (1.0 - g_grass)
        ab[7] = is_b * urban
        ab[8] = cls == BARE
        ab[9] = cls == SNOW
        road = ls.road[sl].ravel()
        ab[:10] *= 1.0 - road
        ab[10] = road
        refl = _S_T @ ab  # (12, n): linear mixing of the end members
        # Brightness texture and terrain illumination (diffuse light keeps shadows lit).
        se, sn = ls.slope_e[sl].ravel(), ls.slope_n[sl].ravel()
        cos_i = (-se * sun[0] - sn * sun[1] + sun[2]) / np.sqrt(se * se + sn * sn + 1.0)
        illum = np.clip(1.0 - _SHADE + _SHADE * cos_i / sun[2], 0.15, 1.8)
        refl *= (ls.bright[sl].ravel() * np.where(cls == WATER, 1.0, illum))[None, :]
        # Snow: above a seasonal snow line; trees and streets hold less of it.
        snow = np.clip((elev - snow_line + 120.0 * ls.snow_noise[sl].ravel()) / 150.0, 0, 1)
        snow *= np.select([cls == FOREST, cls == BUILT_UP, cls == WATER], [0.6, 0.8, 0.0], 1.0)
        snow[cls == SNOW] = 1.0
        snow = snow.astype(np.float32)
        refl += snow[None, :] * (_SNOW - refl)
        ndvi = (refl[_B08] - refl[_B04]) / (refl[_B08] + refl[_B04] + 1e-6)
        # Clouds over shadowed ground; cirrus is a faint veil.
        shadow = clouds.shadow[sl].ravel()
        refl *= (1.0 - 0.65 * shadow)[None, :]
        alpha = clouds.alpha[sl].ravel()
        cloud_top = _CLOUD[:, None] * clouds.bright[sl].ravel()[None, :]
        refl += alpha[None, :] * (cloud_top - refl)
        dnf = refl * 10000.0 + pixel_offset
        noise_rng = _rng(seed, "noise", *key, r0)
        for bi, band in enumerate(L2A_BANDS):
            f = band.resolution_m // 10
            img = dnf[bi].reshape(rows, w)
            if f > 1:
                img = img.reshape(rows // f, f, w // f, f).mean(axis=(1, 3))
            # Noise at the native grid, so averaging does not spread it over every pixel.
            noise = noise_rng.integers(-_NOISE_SPREAD, _NOISE_SPREAD + 1, img.shape, np.int8)
            noise[np.abs(noise) > _NOISE_DN] = 0
            out = np.clip(np.rint(img) + noise, 1, 65535).astype(np.uint16)
            r0f, r1f = r0 // f, r1 // f
            mask = fp[sl] if f == 1 else fps[band.resolution_m][r0f:r1f]
            out[~mask] = 0
            dn[band.name][r0f:r1f] = out
        # Scene classification at 10 m, then the most frequent code per 20 m pixel.
        scl = np.where(ndvi > 0.4, 4, 5).astype(np.uint8)
        scl[(cls == WATER) & (snow < 0.5)] = 6
        scl[snow >= 0.5] = 11
        scl[shadow > 0.3] = 3
        code = clouds.code[sl].ravel()
        scl = np.where(code > 0, code, scl)
        scl[~fp[sl].ravel()] = 0
        blocks = scl.reshape(rows // 2, 2, w // 2, 2)
        counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in _SCL_PRIORITY])
        mode = _SCL_PRIORITY[counts.argmax(axis=0)]
        mode[~fps[20][r0 // 2 : r1 // 2]] = 0
        scl20[r0 // 2 : r1 // 2] = mode

    # Chunks are independent (their noise streams are keyed by row), so threads may run them
    # in any order; numpy releases the GIL in the heavy parts.
    starts = range(0, h, _CHUNK_ROWS)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for fut in [pool.submit(chunk, r0, min(h, r0 + _CHUNK_ROWS)) for r0 in starts]:
            fut.result()

    inside = scl20[fps[20]]
    values, freq = np.unique(inside, return_counts=True)
    return _Rendered(
        dn=dn,
        scl=scl20,
        counts={int(a): int(b) for a, b in zip(values, freq, strict=True)},
        valid=int(inside.size),
        total=int(scl20.size),
        sun_azimuth=sun_az,
        sun_elevation=sun_el,
    )


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _as_utc(when: datetime.datetime) -> datetime.datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


def _write_cog(path: Path, data: Array, grid: _Grid, res: int, resampling: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=f"EPSG:{grid.epsg}",
        transform=grid.transform(res),
        nodata=0,
        compress="DEFLATE",
        predictor=2,
        blocksize=256,
        resampling=resampling,
        num_threads="ALL_CPUS",
    ) as dst:
        dst.write(data, 1)


# --------------------------------------------------------------------------------------------
# STAC items

_FWHM = {
    "B01": 0.027,
    "B02": 0.098,
    "B03": 0.045,
    "B04": 0.038,
    "B05": 0.019,
    "B06": 0.018,
    "B07": 0.028,
    "B08": 0.145,
    "B8A": 0.033,
    "B09": 0.026,
    "B11": 0.143,
    "B12": 0.242,
}
_ES_TITLES = {
    "B01": "Coastal aerosol (band 1)",
    "B02": "Blue (band 2)",
    "B03": "Green (band 3)",
    "B04": "Red (band 4)",
    "B05": "Red edge 1 (band 5)",
    "B06": "Red edge 2 (band 6)",
    "B07": "Red edge 3 (band 7)",
    "B08": "NIR 1 (band 8)",
    "B8A": "NIR 2 (band 8A)",
    "B09": "NIR 3 (band 9)",
    "B11": "SWIR 1 (band 11)",
    "B12": "SWIR 2 (band 12)",
}
_PC_TITLES = {
    "B01": "Band 1 - Coastal aerosol",
    "B02": "Band 2 - Blue",
    "B03": "Band 3 - Green",
    "B04": "Band 4 - Red",
    "B05": "Band 5 - Vegetation red edge 1",
    "B06": "Band 6 - Vegetation red edge 2",
    "B07": "Band 7 - Vegetation red edge 3",
    "B08": "Band 8 - NIR",
    "B8A": "Band 8A - Vegetation red edge 4",
    "B09": "Band 9 - Water vapor",
    "B11": "Band 11 - SWIR (1.6)",
    "B12": "Band 12 - SWIR (2.2)",
}
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_ES_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
]
_PC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]
_LICENSE_LINK = {
    "rel": "license",
    "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice",
}


def _mgrs(grid: _Grid) -> tuple[int, str, str]:
    """UTM zone, latitude band and 100 km grid square of the scene centre (MGRS)."""
    zone = grid.epsg % 100
    xc, yc = grid.x0 + grid.width_m / 2, grid.y0 - grid.height_m / 2
    _, lat = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(xc, yc)
    bands = "CDEFGHJKLMNPQRSTUVWX"
    lat_band = bands[min(len(bands) - 1, max(0, int((lat + 80) // 8)))]
    columns = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")[(zone - 1) % 3]
    column = columns[int(xc // 100_000) - 1]
    # The southern false northing (10 000 km) is a multiple of the 2000 km letter cycle.
    row = "ABCDEFGHJKLMNPQRSTUV"[(int(yc // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return zone, lat_band, column + row


def _iso(when: datetime.datetime) -> str:
    return _as_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _geojson_footprint(grid: _Grid, footprint: str) -> tuple[dict[str, Any], list[float]]:
    poly = _footprint_polygon(grid, footprint).segmentize(5000.0)
    to_ll = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    ll = shapely.transform(poly, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))
    ll = shapely.orient_polygons(shapely.set_precision(ll, 1e-7))
    return mapping(ll), [round(float(b), 7) for b in ll.bounds]


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 6) if whole else 0.0


def _scl_properties(r: _Rendered) -> dict[str, float]:
    c = r.counts
    return {
        "s2:nodata_pixel_percentage": _percent(r.total - r.valid, r.total),
        "s2:saturated_defective_pixel_percentage": 0.0,
        "s2:dark_features_percentage": 0.0,
        "s2:cloud_shadow_percentage": _percent(c.get(3, 0), r.valid),
        "s2:vegetation_percentage": _percent(c.get(4, 0), r.valid),
        "s2:not_vegetated_percentage": _percent(c.get(5, 0), r.valid),
        "s2:water_percentage": _percent(c.get(6, 0), r.valid),
        "s2:unclassified_percentage": 0.0,
        "s2:medium_proba_clouds_percentage": _percent(c.get(8, 0), r.valid),
        "s2:high_proba_clouds_percentage": _percent(c.get(9, 0), r.valid),
        "s2:thin_cirrus_percentage": _percent(c.get(10, 0), r.valid),
        "s2:snow_ice_percentage": _percent(c.get(11, 0), r.valid),
    }


def _cloud_cover(r: _Rendered) -> float:
    return _percent(sum(r.counts.get(k, 0) for k in (8, 9, 10)), r.valid)


def _item_ids(grid: _Grid, acquisitions: Sequence[Acquisition], flavor: ItemFlavor) -> list[str]:
    zone, lat_band, square = _mgrs(grid)
    tile = f"{zone:02d}{lat_band}{square}"
    ids: list[str] = []
    for acq in acquisitions:
        when = _as_utc(acq.date)
        sat = "S2" + acq.platform.strip()[-1:].upper()
        seq = 0
        while True:
            if flavor == "earth-search":
                iid = f"{sat}_{tile}_{when:%Y%m%d}_{seq}_L2A"
            elif flavor == "earth-search-c1":
                iid = f"{sat}_T{tile}_{when + datetime.timedelta(seconds=seq):%Y%m%dT%H%M%S}_L2A"
            else:
                proc = when + datetime.timedelta(hours=5, minutes=39, seconds=29 + seq)
                iid = f"{sat}_MSIL2A_{when:%Y%m%dT%H%M%S}_R065_T{tile}_{proc:%Y%m%dT%H%M%S}"
            if iid not in ids:
                break
            seq += 1
        ids.append(iid)
    return ids


def _band_asset_files(flavor: ItemFlavor) -> dict[str, str]:
    """ESA band name (and ``SCL``) -> asset key of the flavor; the COG file is ``<key>.tif``."""
    i = 1 if flavor == "planetary-computer" else 0
    return {b.name: b.asset_keys[i] for b in (*L2A_BANDS, SCL)}


def _make_item(
    item_id: str,
    acq: Acquisition,
    grid: _Grid,
    r: _Rendered,
    flavor: ItemFlavor,
) -> dict[str, Any]:
    when = _as_utc(acq.date)
    geometry, bbox = _geojson_footprint(grid, acq.footprint)
    zone, lat_band, square = _mgrs(grid)
    tile = f"{zone:02d}{lat_band}{square}"
    keys = _band_asset_files(flavor)
    offset = _baseline_offset(acq.processing_baseline)
    # Earth Search sentinel-2-l2a declares -0.1 on every item, also where its COGs no longer
    # carry the offset; Collection 1 declares the offset its pixels carry.
    declared = BASELINE_OFFSET_DN if flavor == "earth-search" else offset
    processed = _iso(when + datetime.timedelta(hours=5, minutes=39, seconds=29))
    baseline = acq.processing_baseline
    product_uri = (
        f"S2{acq.platform[-1:].upper()}_MSIL2A_{when:%Y%m%dT%H%M%S}_N{baseline.replace('.', '')}"
        f"_R065_T{tile}_{when + datetime.timedelta(hours=5, minutes=39, seconds=29):%Y%m%dT%H%M%S}"
        ".SAFE"
    )
    doy = when.timetuple().tm_yday
    common: dict[str, Any] = {
        "datetime": _iso(when),
        "instruments": ["msi"],
        "eo:cloud_cover": _cloud_cover(r),
        "proj:epsg": grid.epsg,
        "s2:processing_baseline": baseline,
        "s2:product_type": "S2MSI2A",
        "s2:product_uri": product_uri,
        "s2:datatake_type": "INS-NOBS",
        "s2:reflectance_conversion_factor": round(
            1 + 0.0334 * math.cos(2 * math.pi * (doy - 4) / 365.25), 9
        ),
        **_scl_properties(r),
    }

    def proj(res: int) -> dict[str, Any]:
        h, w = grid.shape(res)
        return {"proj:shape": [h, w], "proj:transform": [res, 0, grid.x0, 0, -res, grid.y0]}

    assets: dict[str, dict[str, Any]] = {}
    if flavor in ("earth-search", "earth-search-c1"):
        c1 = flavor == "earth-search-c1"
        bucket = (
            "e84-earth-search-sentinel-data/sentinel-2-c1-l2a"
            if c1
            else "sentinel-cogs/sentinel-s2-l2a-cogs"
        )
        for b in L2A_BANDS:
            key = keys[b.name]
            assets[key] = {
                "href": f"cogs/{item_id}/{key}.tif",
                "type": _COG_TYPE,
                "title": f"{_ES_TITLES[b.name]} - {b.resolution_m}m",
                "eo:bands": [_eo_band(b, key, _ES_TITLES[b.name])],
                "gsd": b.resolution_m,
                **proj(b.resolution_m),
                "raster:bands": [
                    {
                        "nodata": 0,
                        "data_type": "uint16",
                        "bits_per_sample": 15,
                        "spatial_resolution": b.resolution_m,
                        "scale": 0.0001,
                        "offset": -declared / 10000,
                    }
                ],
                "roles": ["data", "reflectance"],
            }
        assets["scl"] = {
            "href": f"cogs/{item_id}/scl.tif",
            "type": _COG_TYPE,
            "title": "Scene classification map (SCL)",
            "gsd": 20,
            **proj(20),
            "raster:bands": [
                {"nodata": 0, "data_type": "uint8", "spatial_resolution": 20, "unit": "none"}
            ],
            "roles": ["data"],
        }
        rgb = [L2A_BANDS[i] for i in (3, 2, 1)]
        assets["visual"] = {
            "href": f"cogs/{item_id}/TCI.tif",  # never written: a trap for band lookups
            "type": _COG_TYPE,
            "title": "True color image",
            "eo:bands": [_eo_band(b, keys[b.name], _ES_TITLES[b.name]) for b in rgb],
            **proj(10),
            "roles": ["visual"],
        }
        assets["thumbnail"] = {
            "href": f"cogs/{item_id}/thumbnail.jpg",
            "type": "image/jpeg",
            "title": "Thumbnail image",
            "roles": ["thumbnail"],
        }
        for b in L2A_BANDS:
            if b.resolution_m != 10:
                continue
            key = keys[b.name]
            assets[f"{key}-jp2"] = {
                "href": f"cogs/{item_id}/jp2/{b.name}.jp2",  # never written
                "type": "image/jp2",
                "title": f"{_ES_TITLES[b.name]} - {b.resolution_m}m",
                "eo:bands": [_eo_band(b, key, _ES_TITLES[b.name])],
                "gsd": b.resolution_m,
                **proj(b.resolution_m),
                "raster:bands": [
                    {
                        "nodata": 0,
                        "data_type": "uint16",
                        "bits_per_sample": 15,
                        "spatial_resolution": b.resolution_m,
                        "scale": 0.0001,
                        "offset": -declared / 10000,
                    }
                ],
                "roles": ["data", "reflectance"],
            }
        properties = {
            "created": processed,
            "platform": acq.platform,
            "constellation": "sentinel-2",
            "mgrs:utm_zone": zone,
            "mgrs:latitude_band": lat_band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{tile}",
            "view:sun_azimuth": round(r.sun_azimuth, 6),
            "view:sun_elevation": round(r.sun_elevation, 6),
            "s2:sequence": "0" if c1 else item_id.split("_")[-2],
            "earthsearch:s3_path": (
                f"s3://{bucket}/{zone}/{lat_band}/{square}/{when:%Y}/{when.month}/{item_id}"
            ),
            # Element 84 removed the baseline's offset from every sentinel-2-l2a COG that had one.
            **({} if c1 else {"earthsearch:boa_offset_applied": offset > 0}),
            "processing:software": {"sentinel2-to-stac": "0.1.1"},
            **common,
            "updated": processed,
        }
        extensions = _ES_EXTENSIONS
    else:
        for b in L2A_BANDS:
            key = keys[b.name]
            title = f"{_PC_TITLES[b.name]} - {b.resolution_m}m"
            assets[key] = {
                "href": f"cogs/{item_id}/{key}.tif",
                "type": _COG_TYPE,
                "title": title,
                "eo:bands": [_eo_band(b, key, title)],
                "gsd": b.resolution_m,
                **proj(b.resolution_m),
                "roles": ["data"],
            }
        assets["SCL"] = {
            "href": f"cogs/{item_id}/SCL.tif",
            "type": _COG_TYPE,
            "title": "Scene classfication map (SCL)",  # sic: the typo is Planetary Computer's
            "gsd": 20,
            **proj(20),
            "roles": ["data"],
        }
        rgb = [L2A_BANDS[i] for i in (3, 2, 1)]
        assets["visual"] = {
            "href": f"cogs/{item_id}/TCI.tif",  # never written
            "type": _COG_TYPE,
            "title": "True color image",
            "eo:bands": [_eo_band(b, keys[b.name], f"{_PC_TITLES[b.name]} - 10m") for b in rgb],
            "gsd": 10,
            **proj(10),
            "roles": ["data"],
        }
        assets["preview"] = {
            "href": f"cogs/{item_id}/preview.png",  # never written
            "type": "image/png",
            "title": "Rendered preview",
            "rel": "preview",
            "roles": ["overview"],
        }
        properties = {
            **common,
            "platform": "Sentinel-" + acq.platform.strip()[-2:].upper(),
            "constellation": "Sentinel 2",
            "s2:mgrs_tile": tile,
            "s2:generation_time": processed,
            "s2:mean_solar_azimuth": round(r.sun_azimuth, 6),
            "s2:mean_solar_zenith": round(90 - r.sun_elevation, 6),
            "sat:orbit_state": "descending",
            "sat:relative_orbit": 65,
        }
        extensions = _PC_EXTENSIONS
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": extensions,
        "id": item_id,
        "collection": FLAVOR_COLLECTIONS[flavor],
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [_LICENSE_LINK],
        "assets": assets,
    }


def _eo_band(band: Band, name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "common_name": band.common_name,
        "description": description,
        "center_wavelength": band.center_wavelength,
        "full_width_half_max": _FWHM[band.name],
    }


# --------------------------------------------------------------------------------------------
# Overture extract

_NAMES_TYPE = pa.struct(
    [
        ("primary", pa.string()),
        ("common", pa.map_(pa.string(), pa.string())),
        (
            "rules",
            pa.list_(
                pa.struct(
                    [
                        ("variant", pa.string()),
                        ("language", pa.string()),
                        ("value", pa.string()),
                        ("side", pa.string()),
                    ]
                )
            ),
        ),
    ]
)
_TAGS_TYPE = pa.map_(pa.string(), pa.string())
_COMMON_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("geometry", pa.binary()),
    pa.field(
        "bbox",
        pa.struct(
            [
                ("xmin", pa.float32()),
                ("xmax", pa.float32()),
                ("ymin", pa.float32()),
                ("ymax", pa.float32()),
            ]
        ),
    ),
    pa.field("version", pa.int32()),
    pa.field(
        "sources",
        pa.list_(
            pa.struct(
                [
                    ("property", pa.string()),
                    ("dataset", pa.string()),
                    ("record_id", pa.string()),
                    ("update_time", pa.string()),
                    ("confidence", pa.float64()),
                ]
            )
        ),
    ),
]
_TYPE_FIELDS: dict[tuple[str, str], list[pa.Field]] = {
    ("base", "land_cover"): [
        pa.field("subtype", pa.string()),
        pa.field(
            "cartography",
            pa.struct(
                [
                    ("min_zoom", pa.int32()),
                    ("max_zoom", pa.int32()),
                    ("sort_key", pa.int32()),
                ]
            ),
        ),
    ],
    ("base", "land_use"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("class", pa.string()),
        pa.field("subtype", pa.string()),
        pa.field("surface", pa.string()),
        pa.field("source_tags", _TAGS_TYPE),
        pa.field("level", pa.int32()),
    ],
    ("base", "water"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("class", pa.string()),
        pa.field("subtype", pa.string()),
        pa.field("is_salt", pa.bool_()),
        pa.field("is_intermittent", pa.bool_()),
        pa.field("source_tags", _TAGS_TYPE),
    ],
    ("base", "infrastructure"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("class", pa.string()),
        pa.field("subtype", pa.string()),
        pa.field("source_tags", _TAGS_TYPE),
    ],
    ("base", "land"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("class", pa.string()),
        pa.field("subtype", pa.string()),
        pa.field("elevation", pa.int32()),
        pa.field("source_tags", _TAGS_TYPE),
    ],
    ("buildings", "building"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("subtype", pa.string()),
        pa.field("class", pa.string()),
        pa.field("height", pa.float64()),
        pa.field("num_floors", pa.int32()),
        pa.field("has_parts", pa.bool_()),
    ],
    ("transportation", "segment"): [
        pa.field("names", _NAMES_TYPE),
        pa.field("subtype", pa.string()),
        pa.field("class", pa.string()),
        pa.field("subclass", pa.string()),
        pa.field(
            "road_surface",
            pa.list_(
                pa.struct(
                    [
                        ("value", pa.string()),
                        ("between", pa.list_(pa.float64())),
                    ]
                )
            ),
        ),
    ],
    ("places", "place"): [
        pa.field("names", _NAMES_TYPE),
        pa.field(
            "categories",
            pa.struct(
                [
                    ("primary", pa.string()),
                    ("alternate", pa.list_(pa.string())),
                ]
            ),
        ),
        pa.field("confidence", pa.float64()),
        pa.field(
            "addresses",
            pa.list_(
                pa.struct(
                    [
                        ("freeform", pa.string()),
                        ("locality", pa.string()),
                        ("postcode", pa.string()),
                        ("region", pa.string()),
                        ("country", pa.string()),
                    ]
                )
            ),
        ),
    ],
}
_TAXONOMY_FIELDS = [
    pa.field("basic_category", pa.string()),
    pa.field(
        "taxonomy",
        pa.struct(
            [
                ("primary", pa.string()),
                ("hierarchy", pa.list_(pa.string())),
                ("alternates", pa.list_(pa.string())),
            ]
        ),
    ),
]
# The demo's place categories in the taxonomy, general to specific (the hierarchies of the
# schema repo's overture_categories.csv). The basic category stands in for Overture's: the
# second level of a longer hierarchy, else the category itself.
_TAXONOMY: dict[str, tuple[str, ...]] = {
    "church_cathedral": ("religious_organization", "church_cathedral"),
    "town_hall": ("public_service_and_government", "town_hall"),
    "elementary_school": ("education", "school", "elementary_school"),
    "train_station": ("travel", "transportation", "trains", "train_station"),
    "restaurant": ("eat_and_drink", "restaurant"),
    "bakery": ("retail", "food", "bakery"),
    "cafe": ("eat_and_drink", "cafe"),
    "pharmacy": ("retail", "pharmacy"),
    "grocery_store": ("retail", "shopping", "grocery_store"),
    "bank_credit_union": ("financial_service", "bank_credit_union"),
    "museum": ("attractions_and_activities", "museum"),
    "post_office": ("public_service_and_government", "post_office"),
    "beer_garden": ("eat_and_drink", "bar", "beer_garden"),
    "butcher_shop": ("retail", "food", "butcher_shop"),
    "gas_station": ("automotive", "gas_station"),
    "hotel": ("accommodation", "hotel"),
    "campground": ("accommodation", "campground"),
    "beach": ("attractions_and_activities", "beach"),
    "ski_and_snowboard_shop": ("retail", "shopping", "sporting_goods", "ski_and_snowboard_shop"),
}


def _in_taxonomy(props: dict[str, Any]) -> dict[str, Any]:
    """A place's properties with ``categories`` replaced by ``basic_category`` and ``taxonomy``."""
    out = dict(props)
    categories = out.pop("categories")
    hierarchy = list(_TAXONOMY[categories["primary"]])
    alternates = [a for a in categories["alternate"] if a not in hierarchy]
    out["basic_category"] = hierarchy[1] if len(hierarchy) > 2 else hierarchy[-1]
    out["taxonomy"] = {
        "primary": hierarchy[-1],
        "hierarchy": hierarchy,
        "alternates": alternates or None,
    }
    return out


_DEFAULT_DATASET = {
    ("base", "land_cover"): "ESA WorldCover",
    ("places", "place"): "meta",
}


def _feature_id(seed: int, theme: str, type_: str, index: int) -> str:
    digest = hashlib.sha256(f"eocap-demo/{seed}/{theme}/{type_}/{index}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _f32_outward(values: Array, down: bool) -> Array:
    """float32 bbox values rounded outward so the covering always contains the geometry."""
    f = values.astype(np.float32)
    wrong = f.astype(np.float64) > values if down else f.astype(np.float64) < values
    f[wrong] = np.nextafter(f[wrong], np.float32(-np.inf if down else np.inf))
    return f


def _morton(x: Array, y: Array) -> Array:
    """Z-order key of coordinates scaled to 0..65535, to sort rows roughly spatially."""

    def spread(a: Array) -> Array:
        a = a.astype(np.uint64) & np.uint64(0xFFFF)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            a = (a | (a << np.uint64(shift))) & np.uint64(mask)
        return a

    def scale(a: Array) -> Array:
        lo, hi = float(a.min()), float(a.max())
        return np.round((a - lo) / max(hi - lo, 1e-12) * 65535).astype(np.uint64)

    key: Array = spread(scale(x)) | (spread(scale(y)) << np.uint64(1))
    return key


def _write_overture(
    root: Path,
    grid: _Grid,
    features: Sequence[_Feature],
    seed: int,
    places_schema: PlacesSchema = "categories",
) -> None:
    to_ll = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    srng = _rng(seed, "sources")
    by_type: dict[tuple[str, str], list[_Feature]] = {}
    for f in features:
        by_type.setdefault((f.theme, f.type), []).append(f)
    for (theme, type_), fields in _TYPE_FIELDS.items():
        taxonomy = (theme, type_) == ("places", "place") and places_schema == "taxonomy"
        if taxonomy:
            fields = [f for f in fields if f.name != "categories"]
            fields[1:1] = _TAXONOMY_FIELDS  # where categories was, after names
        feats = [f for f in by_type.get((theme, type_), []) if not f.geom.is_empty]
        geoms = np.array([f.geom for f in feats], dtype=object)
        ll = shapely.transform(geoms, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))
        ll = np.array([_valid_ll(g) for g in ll], dtype=object)
        keep = np.array([not g.is_empty for g in ll], dtype=bool)
        feats = [f for f, k in zip(feats, keep, strict=True) if k]
        ll = ll[keep]
        bounds = shapely.bounds(ll) if len(ll) else np.zeros((0, 4))
        order = (
            np.argsort(
                _morton((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2),
                kind="stable",
            )
            if len(ll)
            else np.zeros(0, int)
        )
        xmin, ymin = _f32_outward(bounds[:, 0], True), _f32_outward(bounds[:, 1], True)
        xmax, ymax = _f32_outward(bounds[:, 2], False), _f32_outward(bounds[:, 3], False)
        wkb = shapely.to_wkb(ll, byte_order=1, output_dimension=2) if len(ll) else []
        rows: list[dict[str, Any]] = []
        for n, i in enumerate(order):
            f = feats[i]
            props = _in_taxonomy(f.props) if taxonomy else dict(f.props)
            source = props.pop("_source", {})
            dataset = source.get("dataset", _DEFAULT_DATASET.get((theme, type_), "OpenStreetMap"))
            record = (
                None
                if dataset != "OpenStreetMap"
                else f"w{int(srng.integers(10**7, 10**9))}@{int(srng.integers(1, 12))}"
            )
            update = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
                seconds=int(srng.integers(0, 300 * 86400))
            )
            row = {
                "id": _feature_id(seed, theme, type_, n),
                "geometry": wkb[i],
                "bbox": {"xmin": xmin[i], "xmax": xmax[i], "ymin": ymin[i], "ymax": ymax[i]},
                "version": 0,
                "sources": [
                    {
                        "property": "",
                        "dataset": dataset,
                        "record_id": record,
                        "update_time": update.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        "confidence": source.get("confidence"),
                    }
                ],
                **props,
            }
            rows.append(row)
        schema = pa.schema(_COMMON_FIELDS[:3] + fields + _COMMON_FIELDS[3:])
        table = pa.Table.from_pylist(rows, schema=schema)
        types = sorted({g.geom_type for g in ll})
        table = table.replace_schema_metadata({"geo": geo_metadata(table, types)})
        out = root / f"theme={theme}" / f"type={type_}" / "part-00000.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out, compression="zstd", row_group_size=50_000)


def _valid_ll(geom: Any) -> Any:
    """A valid lon/lat geometry with counter-clockwise shells (empty if it degenerates)."""
    geom = shapely.set_precision(geom, 1e-8)
    if geom.is_empty:
        return geom
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return shapely.orient_polygons(_polygonal(geom))
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


# --------------------------------------------------------------------------------------------
# Public API


def _params(
    bbox: tuple[float, float, float, float],
    acquisitions: Sequence[Acquisition],
    item_flavor: str,
    seed: int,
    places_schema: PlacesSchema = "categories",
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "bbox": [float(b) for b in bbox],
        "acquisitions": [
            {
                "date": _iso(a.date),
                "cloud_fraction": float(a.cloud_fraction),
                "footprint": a.footprint,
                "processing_baseline": a.processing_baseline,
                "platform": a.platform,
            }
            for a in acquisitions
        ],
        "item_flavor": item_flavor,
        "seed": int(seed),
    }
    if places_schema != "categories":  # absent: categories, as before the parameter existed
        params["places_schema"] = places_schema
    return params


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


_OUTPUTS = ("cogs", "stac", "overture", "truth", "demo.json")


def generate_demo_region(
    out_dir: Path,
    *,
    bbox: tuple[float, float, float, float] = DEMO_BBOX,
    acquisitions: Sequence[Acquisition] = DEMO_ACQUISITIONS,
    item_flavor: ItemFlavor = "earth-search-c1",
    seed: int = 0,
    places_schema: PlacesSchema = "categories",
) -> DemoRegion:
    """Write a demo region (COGs, STAC items, Overture extract) into ``out_dir``.

    Earlier outputs in ``out_dir`` are replaced; ``demo.json`` is written last, so a folder
    without it is incomplete. Prefer :func:`ensure_demo_region`, which reuses a finished region
    and never leaves a half-written one in place.

    Args:
        out_dir: The region folder (created if missing).
        bbox: lon_min, lat_min, lon_max, lat_max; the scene is its UTM extent plus 1 km.
        acquisitions: The overpasses to fake, one STAC item each.
        item_flavor: The catalog whose items and pixels to copy (:data:`FLAVOR_COLLECTIONS`):
            ``earth-search-c1`` (Earth Search v1 keys ``red``, ``nir08``, ``scl``, offset in
            the pixels and in ``raster:bands``), ``earth-search`` (the same keys, offset
            removed from the pixels, ``earthsearch:boa_offset_applied`` and a stale
            ``raster:bands`` offset) or ``planetary-computer`` (``B04``, ``B8A``, ``SCL``,
            offset in the pixels, no offset metadata).
        seed: Seed of every random choice; the same arguments give byte-identical files.
        places_schema: ``categories`` (``categories.primary`` / ``alternate``, releases before
            September 2026) or ``taxonomy`` (``basic_category`` and ``taxonomy.primary`` /
            ``hierarchy`` / ``alternates`` instead): the same places either way.

    Returns:
        The region.

    Raises:
        ValueError: for a bbox outside UTM range or larger than ~60 km, an unknown flavor,
            footprint or places schema, or a malformed processing baseline.
    """
    if places_schema not in ("categories", "taxonomy"):
        raise ValueError(f"unknown places_schema {places_schema!r}")
    if item_flavor not in FLAVOR_COLLECTIONS:
        raise ValueError(f"unknown item_flavor {item_flavor!r}")
    for acq in acquisitions:
        if acq.footprint not in ("full", "east"):
            raise ValueError(f"unknown footprint {acq.footprint!r}")
        _baseline_offset(acq.processing_baseline)
    bbox = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    grid = _scene_grid(bbox)
    ls = _build_landscape(grid, seed)
    ids = _item_ids(grid, acquisitions, item_flavor)
    keys = _band_asset_files(item_flavor)
    items: list[dict[str, Any]] = []
    # COGs are compressed in a writer thread while the next acquisition renders.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: list[Future[None]] = []
        for index, (acq, item_id) in enumerate(zip(acquisitions, ids, strict=True)):
            offset = _pixel_offset(item_flavor, acq.processing_baseline)
            rendered = _render(ls, acq, index, seed, offset)
            for f in pending:
                f.result()
            folder = out_dir / "cogs" / item_id
            pending = [
                writer.submit(_write_all, folder, keys, rendered, grid),
            ]
            items.append(_make_item(item_id, acq, grid, rendered, item_flavor))
        for f in pending:
            f.result()
    _write_cog(out_dir / "truth" / "landcover.tif", ls.cls, grid, 10, "nearest")
    _write_overture(out_dir / "overture", grid, ls.features, seed, places_schema)
    (out_dir / "stac").mkdir(parents=True, exist_ok=True)
    (out_dir / "stac" / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items}, indent=1)
    )
    params = _params(bbox, acquisitions, item_flavor, seed, places_schema)
    manifest = {
        "fingerprint": _fingerprint(params),
        "params": params,
        "crs": f"EPSG:{grid.epsg}",
        "grid": {"x0": grid.x0, "y0": grid.y0, "width": grid.width, "height": grid.height},
        "item_ids": ids,
        "land_cover_classes": {str(k): v for k, v in LAND_COVER_CLASSES.items()},
    }
    (out_dir / "demo.json").write_text(json.dumps(manifest, indent=1))
    return _region(out_dir, manifest)


def _write_all(folder: Path, keys: dict[str, str], r: _Rendered, grid: _Grid) -> None:
    for band in L2A_BANDS:
        _write_cog(
            folder / f"{keys[band.name]}.tif", r.dn[band.name], grid, band.resolution_m, "average"
        )
    _write_cog(folder / f"{keys['SCL']}.tif", r.scl, grid, 20, "nearest")


def _region(root: Path, manifest: dict[str, Any]) -> DemoRegion:
    b = manifest["params"]["bbox"]
    return DemoRegion(
        root=root,
        bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        crs=str(manifest["crs"]),
        items_path=root / "stac" / "items.json",
        overture_root=root / "overture",
        cog_root=root / "cogs",
        item_ids=tuple(manifest["item_ids"]),
    )


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / "demo.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(root: Path, fingerprint: str) -> dict[str, Any] | None:
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        return None
    if not (root / "stac" / "items.json").is_file() or not (root / "overture").is_dir():
        return None
    if not all((root / "cogs" / i).is_dir() for i in manifest.get("item_ids", [])):
        return None
    return manifest


def ensure_demo_region(
    out_dir: Path,
    *,
    bbox: tuple[float, float, float, float] = DEMO_BBOX,
    acquisitions: Sequence[Acquisition] = DEMO_ACQUISITIONS,
    item_flavor: ItemFlavor = "earth-search-c1",
    seed: int = 0,
    places_schema: PlacesSchema = "categories",
) -> DemoRegion:
    """Reuse the region in ``out_dir`` if it was generated with the same parameters, else make it.

    A new region is generated in a temporary sibling folder and renamed into place, so an
    interrupted generation never looks complete. A folder holding anything but a region's
    files is never replaced.

    Args:
        out_dir: The region folder.
        bbox: As for :func:`generate_demo_region`.
        acquisitions: As for :func:`generate_demo_region`.
        item_flavor: As for :func:`generate_demo_region`.
        seed: As for :func:`generate_demo_region`.
        places_schema: As for :func:`generate_demo_region`.

    Returns:
        The region.

    Raises:
        FileExistsError: if ``out_dir`` holds files that are not a demo region's.
        ValueError: as for :func:`generate_demo_region`.
    """
    out_dir = Path(out_dir)
    fingerprint = _fingerprint(_params(bbox, acquisitions, item_flavor, seed, places_schema))
    manifest = _complete(out_dir, fingerprint)
    if manifest is not None:
        return _region(out_dir, manifest)
    if out_dir.exists():
        stray = sorted(p.name for p in out_dir.iterdir() if p.name not in _OUTPUTS)
        if stray:
            raise FileExistsError(f"{out_dir} holds files that are not a demo region's: {stray}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        generate_demo_region(
            tmp,
            bbox=bbox,
            acquisitions=acquisitions,
            item_flavor=item_flavor,
            seed=seed,
            places_schema=places_schema,
        )
        old: Path | None = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process put a region there meanwhile: fine if it is the same one.
            manifest = _complete(out_dir, fingerprint)
            if manifest is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = _complete(out_dir, fingerprint)
    if manifest is None:
        raise RuntimeError(f"demo region in {out_dir} is incomplete after generation")
    return _region(out_dir, manifest)


def load_items(region: DemoRegion) -> list[dict[str, Any]]:
    """The region's STAC items (hrefs relative to ``region.root``)."""
    data = json.loads(region.items_path.read_text())
    features = data.get("features", [])
    if not isinstance(features, list):
        raise ValueError(f"{region.items_path} is not a FeatureCollection")
    return features
