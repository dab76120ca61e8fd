"""Sampling: a region and its periods become deterministic samples, grouped into shards.

A *location* is a chip centre; a *sample* is a location in one period. Sample ids hash the
location (to 1e-6 degrees) and the period, so the same config always yields the same ids, and
ids never collide between runs that share locations. Locations are ordered along a Z-order
curve, so a shard's chips are spatially close and share scenes and map features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as transform_geometry

from pipeline.core.config import Period, RegionConfig, RunConfig
from pipeline.core.errors import ConfigError
from pipeline.geo.grid import transformer, utm_crs
from pipeline.geo.zorder import lonlat_zorder
from pipeline.io.atomic import atomic_write

__all__ = [
    "MANIFEST_SCHEMA",
    "Location",
    "SampleSpec",
    "ShardPlan",
    "check_region_fits",
    "iter_shards",
    "plan_locations",
    "plan_shards",
    "read_manifest",
    "region_geometry",
    "region_parts",
    "sample_id",
    "write_manifest",
]


@dataclass(frozen=True, slots=True)
class Location:
    """A chip centre.

    Attributes:
        location_id: Deterministic id (hash of the rounded coordinates).
        lon: Longitude in degrees.
        lat: Latitude in degrees.
        name: Optional label from the config.
    """

    location_id: str
    lon: float
    lat: float
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """One sample to build: a location in a period.

    Attributes:
        sample_id: Deterministic id of (location, period).
        location: The chip centre.
        period: The date range to search scenes in.
        shard: Index of the shard the sample is written to.
    """

    sample_id: str
    location: Location
    period: Period
    shard: int


@dataclass(frozen=True)
class ShardPlan:
    """The samples of one shard, in write order."""

    index: int
    samples: tuple[SampleSpec, ...]


def _location_id(lon: float, lat: float) -> str:
    key = f"{lon:.6f},{lat:.6f}"
    return "loc_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def sample_id(location: Location, period: Period) -> str:
    """Deterministic id of a location in a period."""
    key = f"{location.lon:.6f},{location.lat:.6f}|{period.name}|{period.start}|{period.end}"
    return "s_" + hashlib.sha1(key.encode()).hexdigest()[:16]


def region_geometry(region: RegionConfig) -> BaseGeometry:
    """The region as a lon/lat geometry (a MultiPoint for point regions).

    A bbox with ``lon_min > lon_max`` crosses the antimeridian: it is the two boxes on either
    side of it.

    Raises:
        ConfigError: if the region file is missing, unreadable or holds no polygon.
    """
    if region.bbox is not None:
        lon0, lat0, lon1, lat1 = region.bbox
        if lon0 > lon1:
            east, west = box(lon0, lat0, 180.0, lat1), box(-180.0, lat0, lon1, lat1)
            return shapely.MultiPolygon([east, west])
        return box(*region.bbox)
    if region.points is not None:
        return shapely.MultiPoint([(p.lon, p.lat) for p in region.points])
    assert region.geojson is not None
    return _region_file_geometry(region.geojson)


def region_parts(region: RegionConfig) -> list[BaseGeometry]:
    """The region in the pieces it is planned in: one, or one per side of the antimeridian.

    A region that reaches both -180 and 180 degrees (a bbox with ``lon_min > lon_max``, or a
    region file split at 180 degrees as RFC 7946 asks) is cut into its western and eastern
    halves, so that each is gridded in a UTM zone of its own and no chip straddles the
    antimeridian. Point regions are one piece.

    Raises:
        ConfigError: as :func:`region_geometry`.
    """
    geometry = region_geometry(region)
    west, _, east, _ = geometry.bounds
    if region.points is not None or west > -180.0 or east < 180.0:
        return [geometry]
    halves = (box(-180.0, -90.0, 0.0, 90.0), box(0.0, -90.0, 180.0, 90.0))
    parts = [_polygons(geometry.intersection(half)) for half in halves]
    return [part for part in parts if not part.is_empty]


def _polygons(geometry: BaseGeometry) -> BaseGeometry:
    """The polygonal parts of a geometry (an intersection may add edges or corners)."""
    kept = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(kept) if kept else shapely.Polygon()


def _region_file_geometry(path: Path) -> BaseGeometry:
    """The union of the (Multi)Polygons in every layer of a vector file, in lon/lat.

    Any format GDAL/OGR reads (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, KML...); layers in
    another CRS are reprojected to EPSG:4326, layers without one are taken as lon/lat.

    Raises:
        ConfigError: naming ``region.geojson``.
    """
    # Imported here: geopandas costs ~0.3 s at start-up and only region files need it.
    import geopandas as gpd
    import pyogrio

    if not path.is_file():
        raise ConfigError("region.geojson", f"file {path} does not exist")
    try:
        layers = [str(name) for name, kind in pyogrio.list_layers(path) if kind is not None]
        frames = [gpd.read_file(path, layer=layer, engine="pyogrio") for layer in layers]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        first = str(exc).split(";")[0].splitlines()[0]
        raise ConfigError(
            "region.geojson", f"{path} is not a vector file GDAL/OGR can read: {first}"
        ) from None
    parts: list[BaseGeometry] = []
    for frame in frames:
        lonlat = frame.to_crs(4326) if frame.crs is not None else frame
        parts.extend(shapely.get_parts(lonlat.geometry.dropna().to_numpy()).tolist())
    polys = [shapely.force_2d(g) for g in parts if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise ConfigError("region.geojson", f"{path} holds no Polygon or MultiPolygon")
    merged = shapely.union_all(polys)
    minx, miny, maxx, maxy = merged.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ConfigError(
            "region.geojson",
            f"coordinates of {path} out of lon/lat range: {merged.bounds} (a projected file "
            "without its CRS? give it one, e.g. the .prj of a Shapefile)",
        )
    return merged


CHIP_MARGIN_M = 30.0
"""A chip must lie this far inside the region, beyond its half width: room for snapping it to
the scene's pixel grid (at most half a 60 m pixel)."""


def _grid_locations(area: BaseGeometry, spacing_m: float, chip_size_m: float) -> Iterator[Location]:
    """The chip centres of a grid laid over one piece of a region, row by row, north first."""
    minx, miny, maxx, maxy = area.bounds
    crs = utm_crs((minx + maxx) / 2, (miny + maxy) / 2)
    to_utm = transformer("EPSG:4326", crs)
    to_ll = transformer(crs, "EPSG:4326")
    # Densify first: a straight edge in lon/lat is curved in UTM.
    area_utm = transform_geometry(to_utm.transform, shapely.segmentize(area, 0.002))
    # A chip is kept only if it lies wholly in the region: shrink the region by half a chip,
    # plus a margin for snapping the chip to the scene's pixel grid.
    half = chip_size_m / 2 + CHIP_MARGIN_M
    inner = area_utm.buffer(-half, join_style="mitre")
    if inner.is_empty:
        return
    ux0, uy0, ux1, uy1 = inner.bounds
    nx = int(np.floor((ux1 - ux0) / spacing_m)) + 1
    ny = int(np.floor((uy1 - uy0) / spacing_m)) + 1
    # Centre the grid in the shrunk region so margins are even on all sides.
    xs = ux0 + ((ux1 - ux0) - (nx - 1) * spacing_m) / 2 + np.arange(nx) * spacing_m
    ys = uy1 - ((uy1 - uy0) - (ny - 1) * spacing_m) / 2 - np.arange(ny) * spacing_m
    # Row by row (not one meshgrid) so memory stays flat for grids of millions of points.
    # The eroded region holds every centre whose chip fits, and some whose corners stick out
    # across slanted edges: keep candidates, then test each chip square exactly.
    inner_ok = inner.buffer(1e-6)
    shapely.prepare(inner_ok)
    shapely.prepare(area_utm)
    for y in ys:
        cand = xs[shapely.contains_xy(inner_ok, xs, np.full_like(xs, y))]
        if not cand.size:
            continue
        squares = shapely.box(cand - half, y - half, cand + half, y + half)
        keep = cand[shapely.covers(area_utm, squares)]
        lons, lats = to_ll.transform(keep, np.full_like(keep, y))
        for lo, la in zip(np.atleast_1d(lons), np.atleast_1d(lats), strict=True):
            yield Location(
                _location_id(float(lo), float(la)), round(float(lo), 6), round(float(la), 6)
            )


def _region_locations(region: RegionConfig, chip_size_m: float) -> Iterator[Location]:
    """Every chip centre of a bbox or file region, piece by piece (:func:`region_parts`)."""
    for part in region_parts(region):
        yield from _grid_locations(part, region.spacing_m, chip_size_m)


def check_region_fits(region: RegionConfig, chip_size_m: float) -> None:
    """Refuse a region in which no chip fits; stops at the first chip that does.

    Raises:
        ConfigError: naming ``region.bbox`` or ``region.geojson``.
    """
    if region.points is None and next(_region_locations(region, chip_size_m), None) is None:
        raise _too_small(region, chip_size_m)


def _too_small(region: RegionConfig, chip_size_m: float) -> ConfigError:
    across = chip_size_m + 2 * CHIP_MARGIN_M
    return ConfigError(
        region.field_name,
        f"no chip fits in the region: a chip is {chip_size_m:.0f} m across (chips.size_px x "
        f"chips.resolution_m) and must lie {CHIP_MARGIN_M:.0f} m inside the region's edge; "
        f"give a region at least {across:.0f} m across both ways (about "
        f"{across / 111_000:.3f} degrees of latitude), or smaller chips",
    )


def plan_locations(region: RegionConfig, chip_size_m: float, *, seed: int = 0) -> list[Location]:
    """Lay out the chip centres of a region, in Z-order.

    Args:
        region: The region config.
        chip_size_m: Chip edge in metres (chips must fit inside bbox/GeoJSON regions).
        seed: Seed for the subset drawn when ``region.max_locations`` is set.

    Raises:
        ConfigError: if the region yields no location.
    """
    if region.points is not None:
        locs = [
            Location(_location_id(p.lon, p.lat), round(p.lon, 6), round(p.lat, 6), p.name)
            for p in region.points
        ]
        locs = list({loc.location_id: loc for loc in locs}.values())  # drop exact duplicates
    else:
        locs = list(_region_locations(region, chip_size_m))
    if not locs:
        raise _too_small(region, chip_size_m)
    if region.max_locations is not None and len(locs) > region.max_locations:
        rank = {
            loc.location_id: hashlib.sha1(f"{seed}|{loc.location_id}".encode()).hexdigest()
            for loc in locs
        }
        locs = sorted(locs, key=lambda loc: rank[loc.location_id])[: region.max_locations]
    keys = lonlat_zorder([loc.lon for loc in locs], [loc.lat for loc in locs]).tolist()
    order = sorted(range(len(locs)), key=lambda i: (keys[i], locs[i].location_id))
    return [locs[i] for i in order]


def iter_shards(config: RunConfig, locations: list[Location] | None = None) -> Iterator[ShardPlan]:
    """Yield the run's shards one at a time, ``output.shard_size`` samples each.

    Only the compact location list is held; samples are made per shard, so planning a
    million-sample run costs the memory of its locations, not of its samples. A location's
    periods stay next to each other so that a shard reuses scene searches.

    Args:
        config: The run config.
        locations: The run's locations, if already computed (:func:`plan_locations`).
    """
    if locations is None:
        locations = plan_locations(config.region, config.chips.size_m, seed=config.seed)
    size = config.output.shard_size
    periods = config.periods
    total = len(locations) * len(periods)
    for index in range((total + size - 1) // size):
        samples = []
        for k in range(index * size, min((index + 1) * size, total)):
            loc, period = locations[k // len(periods)], periods[k % len(periods)]
            samples.append(SampleSpec(sample_id(loc, period), loc, period, index))
        yield ShardPlan(index=index, samples=tuple(samples))


def plan_shards(config: RunConfig) -> list[ShardPlan]:
    """Every shard of the run as a list (small runs, tests; long runs use :func:`iter_shards`)."""
    return list(iter_shards(config))


MANIFEST_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("shard", pa.int32()),
        ("location_id", pa.string()),
        ("location_name", pa.string()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("period", pa.string()),
        ("start", pa.date32()),
        ("end", pa.date32()),
    ]
)
"""The manifest: one row per planned sample, written before any work starts."""


def write_manifest(shards: Iterable[ShardPlan], path: Path) -> tuple[int, int]:
    """Stream the planned samples to Parquet, a row group per ~8k samples, atomically.

    Returns:
        (number of shards, number of samples) written.
    """
    with atomic_write(path) as tmp:
        n_shards = n_samples = 0
        rows: list[SampleSpec] = []
        with pq.ParquetWriter(tmp, MANIFEST_SCHEMA) as writer:
            for shard in shards:
                n_shards += 1
                n_samples += len(shard.samples)
                rows.extend(shard.samples)
                if len(rows) >= 8_192:
                    writer.write_table(_manifest_table(rows))
                    rows = []
            if rows or n_samples == 0:
                writer.write_table(_manifest_table(rows))
    return n_shards, n_samples


def _manifest_table(rows: list[SampleSpec]) -> pa.Table:
    return pa.table(
        {
            "sample_id": [s.sample_id for s in rows],
            "shard": [s.shard for s in rows],
            "location_id": [s.location.location_id for s in rows],
            "location_name": [s.location.name for s in rows],
            "lon": [s.location.lon for s in rows],
            "lat": [s.location.lat for s in rows],
            "period": [s.period.name for s in rows],
            "start": [s.period.start for s in rows],
            "end": [s.period.end for s in rows],
        },
        schema=MANIFEST_SCHEMA,
    )


def read_manifest(path: Path) -> list[ShardPlan]:
    """Read a manifest written by :func:`write_manifest` back into shard plans."""
    table = pq.read_table(path, schema=MANIFEST_SCHEMA)
    by_shard: dict[int, list[SampleSpec]] = {}
    for row in table.to_pylist():
        loc = Location(row["location_id"], row["lon"], row["lat"], row["location_name"])
        period = Period(name=row["period"], start=row["start"], end=row["end"])
        by_shard.setdefault(row["shard"], []).append(
            SampleSpec(row["sample_id"], loc, period, row["shard"])
        )
    return [ShardPlan(k, tuple(v)) for k, v in sorted(by_shard.items())]
