"""The demo region's fictional landscape: one land-cover truth that every output follows.

The landscape is laid out in coordinates relative to the scene (lake in the north-west, town in
the middle, mountains in the south), so a small bbox for tests holds a shrunken copy of the
whole region: the lake Aldersee, the river Emmer, the town Kesselbach with streets, buildings
and POIs, farmland in field parcels, forests and the Gamsspitze massif.

:func:`build_landscape` makes the 10 m rasters the bands are mixed from (land-cover class,
elevation and slopes, crop type and phenology shift per parcel, brightness texture, deciduous,
impervious and road shares, snow-line noise) and the landscape's map features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import substring, unary_union

from pipeline.demo.features import (
    MapFeature,
    building_props,
    feature_names,
    infrastructure_features,
    land_cover_features,
    land_use_features,
    natural_features,
    place_features,
    vectorize_land_cover,
    water_feature,
)
from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, GRASSLAND, SNOW, WATER
from pipeline.demo.noise import seeded_rng, smooth_noise
from pipeline.demo.scene import SceneGrid
from pipeline.demo.shapes import (
    angle_at,
    blob,
    burn,
    chaikin,
    line_parts,
    normal_offset,
    polygonal,
    rotated_rect,
    translate,
)

__all__ = ["Landscape", "build_landscape"]

Array = npt.NDArray[Any]

_TEXTURE_CELLS_M = (1500.0, 500.0)  # brightness texture: broad, because detail costs bytes
_TEXTURE_AMP = 0.03
_LOWLAND_RELIEF_M = 45.0


def _smoothstep(e0: float, e1: float, x: Array) -> Array:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass
class Landscape:
    """The landscape on the scene grid: 10 m rasters (one value per pixel) and map features."""

    grid: SceneGrid
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
    features: list[MapFeature]


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


def build_landscape(grid: SceneGrid, seed: int) -> Landscape:
    """Lay out the landscape on ``grid``; the same grid and seed give the same landscape."""
    h, w = grid.shape(10)
    wm, hm = grid.width_m, grid.height_m
    smin = min(wm, hm)
    rng = seeded_rng(seed, "landscape")
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]

    def noise(cells_m: Sequence[float], weights: Sequence[float]) -> Array:
        return smooth_noise(rng, (h, w), cells_m, weights)

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

    features: list[MapFeature] = []

    # --- Water: lake Aldersee, the Emmer through it, a few ponds.
    lake_c = grid.xy(*_LAKE_UV)
    lake = blob(rng, lake_c, 0.12 * wm, 0.07 * hm, rotation=math.radians(20), wobble=0.06)
    meander_amp = min(80.0, 0.006 * smin)

    def river_line(uv: Sequence[tuple[float, float]], phase: float) -> LineString:
        pts = chaikin([grid.xy(a, b) for a, b in uv], 4)
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
        polygonal(inflow.buffer(14.0).difference(lake)),
        polygonal(outflow.buffer(17.0).difference(lake)),
    ]
    river = unary_union(river_polys)
    town_y = grid.xy(0, _TOWN_V)[1]
    river_x = inflow.intersection(LineString([(grid.x0, town_y), (grid.x0 + wm, town_y)]))
    rx = river_x.centroid.x if not river_x.is_empty else grid.xy(float(_river_u(_TOWN_V)), 0)[0]
    tc = (rx + 250.0, town_y)  # the town centre: 250 m east of the river
    town_r = float(np.clip(0.06 * smin, 250.0, 650.0))

    for line, poly in zip((inflow, outflow), river_polys, strict=True):
        features.append(water_feature(poly, "river", "river", "natural=water water=river", "Emmer"))
        features.append(
            water_feature(line.difference(lake), "river", "river", "waterway=river", "Emmer")
        )
    lake_feature = water_feature(lake, "lake", "lake", "natural=water water=lake", "Aldersee")
    lake_feature.props["names"] = feature_names("Aldersee", en="Lake Alder")
    features.append(lake_feature)

    # --- The town Kesselbach, its street grid and special areas.
    town = blob(rng, tc, 1.25 * town_r, 0.9 * town_r, rotation=math.radians(8), wobble=0.07)
    grid_angle = math.radians(12)
    ca, sa = math.cos(grid_angle), math.sin(grid_angle)

    k = town_r / 650  # a default town is 650 m in radius; smaller scenes get smaller towns

    def town_pt(a: float, b: float) -> tuple[float, float]:
        """The point ``a`` m along and ``b`` m across the street grid from the centre (scaled)."""
        return tc[0] + k * (ca * a - sa * b), tc[1] + k * (sa * a + ca * b)

    church = rotated_rect(*town_pt(-60, 45), 34 * max(k, 0.6), 15 * max(k, 0.6), grid_angle)
    rathaus = rotated_rect(*town_pt(55, -45), 26 * max(k, 0.6), 16 * max(k, 0.6), grid_angle)
    square = Point(tc).buffer(42 * max(k, 0.6))
    park = blob(rng, town_pt(-200, -120), 95 * k, 70 * k, wobble=0.08)
    cemetery = rotated_rect(*town_pt(-60, 150), 80 * k, 55 * k, grid_angle)
    school_area = rotated_rect(*town_pt(260, 170), 150 * k, 95 * k, grid_angle)
    school = rotated_rect(*town_pt(230, 185), 60 * k, 18 * k, grid_angle)
    industrial = rotated_rect(
        tc[0] + 1.15 * 1.25 * town_r, tc[1] - 0.1 * town_r, 0.6 * town_r, 0.35 * town_r, grid_angle
    )

    # --- Roads, rail, tracks (UTM linestrings), named the German way.
    tcu = grid.uv(*tc)

    def road(uv: Sequence[tuple[float, float]], iterations: int = 3) -> LineString:
        return LineString(chaikin([grid.xy(a, b) for a, b in uv], iterations))

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
    segments.append((motorway, "motorway", feature_names("A 97"), "paved"))
    for part in line_parts(main.difference(town)):
        segments.append((part, "primary", feature_names("B 417"), "paved"))
    for part in line_parts(main.intersection(town)):
        segments.append((part, "primary", feature_names("Hauptstraße", short="Hauptstr."), "paved"))
    for part in line_parts(seestr.difference(town)):
        segments.append((part, "secondary", feature_names("St 2588"), "paved"))
    for part in line_parts(seestr.intersection(town)):
        segments.append((part, "secondary", feature_names("Seestraße", short="Seestr."), "paved"))
    segments.append((talstr, "tertiary", feature_names("Talstraße", short="Talstr."), "paved"))

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
            for piece in line_parts(line.intersection(inner)):
                # A street that would run along the river stops at its banks instead.
                if piece.intersection(river_corridor).length > 110:
                    piece = piece.difference(river.buffer(25))
                streets.extend(p for p in line_parts(piece) if p.length > 60)
    for i, street in enumerate(streets):
        name = _STREET_NAMES[i % len(_STREET_NAMES)] if i % 7 != 6 else None
        segments.append((street, "residential", feature_names(name) if name else None, "paved"))

    # The lake shore path and a tributary stream.
    shore = lake.buffer(45.0).exterior
    uferweg = substring(shore, 0.05, 0.5, normalized=True)
    segments.append((uferweg, "footway", feature_names("Uferweg"), "gravel"))
    mouth = inflow.interpolate(inflow.project(Point(grid.xy(0.52, 0.52))))
    stream = road([(0.80, 0.40), (0.72, 0.47), (0.64, 0.50), grid.uv(mouth.x, mouth.y)], 2)
    features.append(water_feature(stream, "stream", "stream", "waterway=stream", "Mühlbach"))

    # --- Other areas: forest Hirschwald, the quarry, the campground, ponds.
    hirschwald = blob(rng, grid.xy(0.80, 0.27), 0.10 * smin, 0.07 * smin, wobble=0.12)
    hirschwald = hirschwald.difference(motorway.buffer(20)).difference(seestr.buffer(15))
    quarry_c = grid.xy(0.88, 0.655)
    quarry = blob(rng, quarry_c, max(90.0, 0.013 * smin), max(60.0, 0.009 * smin), wobble=0.1)
    lake_north = lake.exterior.interpolate(lake.exterior.project(Point(lake_c[0], lake_c[1] + 1e5)))
    camp = rotated_rect(
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
        ponds.append(blob(rng, pc, rx_, ry_, rotation=rot, wobble=0.08))
    for i, pond in enumerate(ponds):
        name = "Entenweiher" if i == 0 else None
        features.append(water_feature(pond, "pond", "pond", "natural=water water=pond", name))

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
    burn(grid, areas, out=cls)

    # --- Buildings: special ones first, then houses along the streets, then farms.
    rail_angle = angle_at(rail, Point(station_pt))
    station = rotated_rect(*station_pt, 40 * max(k, 0.6), 12, rail_angle)
    station = translate(station, *normal_offset(rail_angle, 20))
    buildings: list[tuple[Polygon, dict[str, Any]]] = [
        (church, building_props("religious", "church", 38.0, 1, "St. Michael")),
        (rathaus, building_props("civic", "civic", 14.0, 3, "Rathaus Kesselbach")),
        (school, building_props("education", "school", 11.0, 3, "Grundschule Kesselbach")),
        (station, building_props("transportation", "train_station", 9.0, 2, "Bahnhof Kesselbach")),
    ]
    obstacles = unary_union(
        [river.buffer(12), lake.buffer(10), main.buffer(9), seestr.buffer(8), rail.buffer(10)]
        + [square, park, cemetery, school_area, industrial.buffer(5)]
        + [b[0].buffer(4) for b in buildings]
    )
    town_streets = [*streets, *line_parts(main.intersection(town))]
    houses = _place_houses(
        seeded_rng(seed, "houses"), town_streets, town.buffer(-6), obstacles, tc, town_r
    )
    buildings.extend(houses)
    irng = seeded_rng(seed, "industry")
    halls: list[Polygon] = []
    x_lo, y_lo, x_hi, y_hi = industrial.bounds
    for _ in range(8):
        length, depth = irng.uniform(35, 70), irng.uniform(20, 35)
        cx, cy = irng.uniform(x_lo, x_hi), irng.uniform(y_lo, y_hi)
        hall = rotated_rect(cx, cy, length * max(k, 0.5), depth * max(k, 0.5), grid_angle)
        height = round(float(irng.uniform(8, 14)), 1)
        if industrial.buffer(-5).contains(hall) and all(hall.distance(h) >= 8 for h in halls):
            name = None if halls else "Sägewerk Brandl"
            buildings.append((hall, building_props("industrial", "industrial", height, 1, name)))
            halls.append(hall)

    farms = _place_farms(seeded_rng(seed, "farms"), grid, cls, busy, segments)
    for fb in farms:
        buildings.extend(fb[0])
        segments.append((fb[1], "track", None, "gravel"))
    segments.append((rail, "standard_gauge", feature_names("Emmertalbahn"), "ballast"))

    # --- Water overrides everything; built-up includes farm buildings.
    burn(grid, [(b[0], BUILT_UP) for b in buildings if not town.contains(b[0])], out=cls)
    burn(grid, [(lake, WATER), (river, WATER), *((p, WATER) for p in ponds)], out=cls)

    # --- Auxiliary rasters for the spectra.
    trng = seeded_rng(seed, "texture")
    tex = smooth_noise(trng, (h, w), _TEXTURE_CELLS_M, [1.0, 0.5])
    # Fields vary by parcel, everything else by a broad texture.
    bright = np.where(cls == CROPLAND, 1.0 + parcel_bright, 1.0 + _TEXTURE_AMP * tex)
    bright = bright.astype(np.float32)
    decid_noise = smooth_noise(trng, (h, w), [900, 250], [1.0, 0.5])
    decid = np.clip(0.55 + 0.3 * decid_noise - (elev - 800.0) / 1100.0, 0.0, 1.0)
    decid = np.round(decid * 3) / 3  # stands of uniform mix rather than a continuous blend
    decid = np.where(cls == FOREST, decid, 0.0).astype(np.float32)
    urban = np.clip(0.5 + 0.12 * tex, 0.2, 0.8).astype(np.float32)
    centre = Point(tc).buffer(0.35 * town_r)
    burn(grid, [(centre, 0.78), (industrial, 0.88), (square, 0.95)], out=urban)
    burn(grid, [(s.buffer(3), 0.92) for s in streets], out=urban, all_touched=True)
    burn(grid, [(b[0], 0.97) for b in buildings], out=urban, all_touched=True)
    urban = np.where(cls == BUILT_UP, urban, 0.0).astype(np.float32)
    # Half-width (m) and paved share of a 10 m pixel per road class.
    coverage = {"motorway": (14.0, 1.0), "primary": (6.0, 0.85), "secondary": (5.0, 0.75)}
    coverage |= {"tertiary": (4.0, 0.6), "standard_gauge": (5.0, 0.6)}
    road_cov = burn(
        grid,
        [(g.buffer(coverage[c][0]), coverage[c][1]) for g, c, _, _ in segments if c in coverage],
        dtype="float32",
    )
    road_cov[cls == BUILT_UP] = 0.0  # inside the town streets are part of the urban mix
    crop = np.where(cls == CROPLAND, crop_type, 0).astype(np.uint8)
    snow_noise = smooth_noise(seeded_rng(seed, "snow"), (h, w), [800, 200], [1.0, 0.5])

    # --- Overture features derived from all of the above.
    for geom, cls_name, names, surface in segments:
        subtype = "rail" if cls_name == "standard_gauge" else "road"
        props: dict[str, Any] = {"names": names, "subtype": subtype, "class": cls_name}
        props |= {"subclass": None, "road_surface": [{"value": surface, "between": None}]}
        features.append(MapFeature("transportation", "segment", geom, props))
    for poly, bprops in buildings:
        features.append(MapFeature("buildings", "building", poly, bprops))
    land_cover = vectorize_land_cover(grid, cls)
    features.extend(land_cover_features(land_cover))
    named = {"town": town, "industrial": industrial, "park": park, "cemetery": cemetery}
    named |= {"school": school_area, "hirschwald": hirschwald, "quarry": quarry, "camp": camp}
    features.extend(land_use_features(grid, elev, land_cover, named))
    features.extend(natural_features(grid, elev, land_cover))
    water = unary_union([river, lake])
    features.extend(
        infrastructure_features(grid, segments, water, station, lake_north, talstation, elev)
    )
    features.extend(place_features(buildings, tc, lake, camp, lake_north, talstation))

    return Landscape(
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


def _parcels(grid: SceneGrid, seed: int) -> tuple[Array, Array, Array]:
    """Field parcels: rotated strips of varying height cut into fields of varying width.

    Returns:
        Per 10 m pixel: crop type (0 meadow, 1 winter cereal, 2 maize, 3 spring crop), a
        phenology shift in days and a brightness offset, all constant within a parcel.
    """
    h, w = grid.shape(10)
    rng = seeded_rng(seed, "parcels")
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
            ang = angle_at(street, street.interpolate(s))
            p = street.interpolate(s)
            for side in (-1.0, 1.0):
                if rng.random() > 0.5:
                    continue
                central = math.dist((p.x, p.y), tc) < 0.35 * town_r
                lw = float(rng.uniform(18, 26) if central else rng.uniform(10, 17))
                dp = float(rng.uniform(12, 15) if central else rng.uniform(9, 13))
                setback = float(rng.uniform(10, 13))
                dx, dy = normal_offset(ang, side * (setback + dp / 2))
                rect = rotated_rect(p.x + dx, p.y + dy, lw, dp, ang)
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
                    props = building_props("commercial", "retail", 12.0, 3)
                elif central:
                    props = building_props("residential", "apartments", height + 5, 4)
                else:
                    kind = "house" if rng.random() < 0.8 else "detached"
                    props = building_props("residential", kind, height, 2)
                out.append((rect, props))
            s += float(rng.uniform(22, 32))
    return out


def _place_farms(
    rng: np.random.Generator,
    grid: SceneGrid,
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
        house = rotated_rect(x, y, 18, 12, ang)
        bx, by = normal_offset(ang, 28)
        barn = rotated_rect(x + bx, y + by, 32, 16, ang)
        sx, sy = normal_offset(ang + math.pi / 2, 30)
        shed = rotated_rect(x + sx, y + sy, 14, 9, ang)
        ml = {"dataset": "Microsoft ML Buildings", "confidence": 0.91}
        farm = [
            (house, building_props("agricultural", "farm", 9.0, 2)),
            (barn, building_props("agricultural", "barn", 10.0, 1, source=ml)),
            (shed, building_props("agricultural", "farm_auxiliary", 5.0, 1, source=ml)),
        ]
        target = roads.interpolate(roads.project(here)) if not roads.is_empty else here
        track = LineString([(x - bx * 0.2, y - by * 0.2), (target.x, target.y)])
        farms.append((farm, track))
    return farms
