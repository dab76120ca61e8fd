"""The demo landscape's map features, typed as Overture's.

A :class:`MapFeature` is one feature in UTM with the columns of its Overture type (names,
class, subtype, OSM-style source tags, ...). Besides the constructors the landscape draws with,
this module derives features from the finished layout: land cover (the class raster,
vectorized), land use, named natural features, infrastructure and places (POIs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import shapely
from shapely.geometry import LineString, Point, Polygon, box
from shapely.ops import unary_union

from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, GRASSLAND, SNOW, WATER
from pipeline.demo.scene import SceneGrid
from pipeline.demo.shapes import chaikin, line_parts, polygonal, rotated_rect

__all__ = [
    "MapFeature",
    "building_props",
    "feature_names",
    "infrastructure_features",
    "land_cover_features",
    "land_use_features",
    "natural_features",
    "place_features",
    "vectorize_land_cover",
    "water_feature",
]

Array = npt.NDArray[Any]


@dataclass
class MapFeature:
    """One Overture feature in UTM, with its type-specific columns."""

    theme: str
    type: str
    geom: Any
    props: dict[str, Any] = field(default_factory=dict)


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
) -> MapFeature:
    """A feature of an Overture type with ``names``, ``class``, ``subtype`` and ``source_tags``."""
    props: dict[str, Any] = {"names": feature_names(name) if name else None, "class": cls}
    props |= {"subtype": subtype, "source_tags": _tags(tags), **extra}
    return MapFeature(_THEMES[type_], type_, geom, props)


def water_feature(
    geom: Any, cls: str, subtype: str, tags: str, name: str | None = None
) -> MapFeature:
    """An Overture ``base/water`` feature (fresh water, never intermittent)."""
    return _named("water", geom, cls, subtype, tags, name, is_salt=False, is_intermittent=False)


def building_props(
    subtype: str,
    cls: str,
    height: float,
    floors: int,
    name: str | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Columns of an Overture building; ``source`` overrides its ``sources`` entry."""
    props: dict[str, Any] = {"names": feature_names(name) if name else None, "subtype": subtype}
    props.update({"class": cls, "height": height, "num_floors": floors, "has_parts": False})
    if source:
        props["_source"] = source  # popped by the writer into ``sources``
    return props


def feature_names(
    primary: str, *, en: str | None = None, short: str | None = None
) -> dict[str, Any]:
    """The Overture ``names`` struct: a German primary name, optional English and short ones."""
    common = [("de", primary)] + ([("en", en)] if en else [])
    rules = (
        [{"variant": "short", "language": None, "value": short, "side": None}] if short else None
    )
    return {"primary": primary, "common": common, "rules": rules}


_TOWN_AREAS = ("park", "cemetery", "school")
"""Areas inside the town that are not residential land use."""


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


def vectorize_land_cover(grid: SceneGrid, cls: Array) -> list[tuple[int, Any]]:
    """Land-cover polygons (UTM): the class map at 30 m, small patches sieved, simplified."""
    coarse = _block_mode(cls, 3)
    coarse = rasterio.features.sieve(coarse, size=14, connectivity=8)
    out: list[tuple[int, Any]] = []
    mask = coarse != WATER  # Overture keeps water out of land_cover (it is in base/water)
    for geom, value in rasterio.features.shapes(
        coarse, mask=mask, connectivity=4, transform=grid.transform(30)
    ):
        poly = polygonal(shapely.geometry.shape(geom).simplify(12.0, preserve_topology=True))
        if not poly.is_empty and poly.area >= 3000.0:
            out.append((int(value), poly))
    return out


def land_cover_features(land_cover: Sequence[tuple[int, Any]]) -> list[MapFeature]:
    """Overture ``base/land_cover`` features of the vectorized class polygons."""
    out: list[MapFeature] = []
    for code, poly in land_cover:
        carto = {"min_zoom": 8, "max_zoom": 15, "sort_key": code}
        lc_props = {"subtype": _LC_SUBTYPE[code], "cartography": carto}
        out.append(MapFeature("base", "land_cover", poly, lc_props))
    return out


def land_use_features(
    grid: SceneGrid,
    elev: Array,
    land_cover: Sequence[tuple[int, Any]],
    areas: dict[str, Any],
) -> list[MapFeature]:
    """Land use: the named areas of the landscape, farmland and meadows, a nature reserve."""

    def lu(geom: Any, cls: str, subtype: str, tags: str, name: str | None = None) -> MapFeature:
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
        reserve = polygonal(max(polys, key=lambda p: p.area).simplify(60.0))
        out.append(lu(reserve, "nature_reserve", "protected", "leisure=nature_reserve",
                      "Naturschutzgebiet Gamsspitze"))  # fmt: skip
    return out


def natural_features(
    grid: SceneGrid, elev: Array, land_cover: Sequence[tuple[int, Any]]
) -> list[MapFeature]:
    """Named natural features (Overture ``base/land``): peaks, the glacier, the rock cirque."""
    out: list[MapFeature] = []
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


def infrastructure_features(
    grid: SceneGrid,
    segments: Sequence[tuple[Any, str, Any, str]],
    water: Any,
    station: Any,
    lake_north: Point,
    talstation: tuple[float, ...],
    elev: Array,
) -> list[MapFeature]:
    """Bridges where roads cross water, a power line, parking, the Gamsbahn cable car."""

    def infra(geom: Any, cls: str, subtype: str, tags: str, name: str | None = None) -> MapFeature:
        return _named("infrastructure", geom, cls, subtype, tags, name)

    out: list[MapFeature] = []
    wet = water.buffer(8)
    shapely.prepare(wet)
    for geom, cls, names, _ in segments:
        if cls in ("footway", "track") or not wet.intersects(geom):
            continue
        for part in line_parts(geom.intersection(wet)):
            if part.length > 15:
                name = f"Emmerbrücke ({names['primary']})" if names else None
                out.append(infra(part, "bridge", "bridge", "man_made=bridge", name))
    # A 220 kV line across the north, pylons every ~350 m.
    corners = [grid.xy(-0.02, 0.05), grid.xy(0.45, 0.165), grid.xy(1.02, 0.35)]
    line = LineString(chaikin(corners, 1)).intersection(box(*grid.bounds))
    out.append(infra(line, "power_line", "power", "power=line voltage=220000",
                     "Leitung Emmertal–Ostallgäu"))  # fmt: skip
    for d in np.arange(175.0, line.length, 350.0):
        out.append(infra(line.interpolate(float(d)), "power_tower", "power", "power=tower"))
    sub = line.interpolate(line.project(Point(*grid.xy(0.7, 0.3))))
    out.append(infra(rotated_rect(sub.x, sub.y - 60, 70, 45, 0.2), "substation", "power",
                     "power=substation", "Umspannwerk Kesselbach"))  # fmt: skip
    sc = station.centroid
    out.append(infra(rotated_rect(sc.x, sc.y + 35, 45, 25, 0.1), "parking", "transit",
                     "amenity=parking", "P+R Bahnhof"))  # fmt: skip
    out.append(infra(rotated_rect(lake_north.x + 120, lake_north.y + 60, 50, 30, 0.3), "parking",
                     "transit", "amenity=parking"))  # fmt: skip
    out.append(infra(rotated_rect(talstation[0] + 40, talstation[1], 45, 30, 1.2), "parking",
                     "transit", "amenity=parking", "Parkplatz Gamsbahn"))  # fmt: skip
    # The cable car climbs from the valley towards the summit.
    r, c = np.unravel_index(int(elev.argmax()), elev.shape)
    top = grid.transform(10) * (c + 0.5, r + 0.5)
    x0, y0 = talstation[0], talstation[1]
    ropeway = LineString([(x0, y0), (x0 + 0.85 * (top[0] - x0), y0 + 0.85 * (top[1] - y0))])
    out.append(infra(ropeway, "cable_car", "aerialway", "aerialway=cable_car", "Gamsbahn"))
    return out


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
) -> MapFeature:
    address = None
    if street:
        where = {"locality": "Kesselbach", "postcode": "82497", "region": "BY", "country": "DE"}
        address = [{"freeform": street, **where}]
    props: dict[str, Any] = {"names": feature_names(name), "confidence": confidence}
    props |= {"categories": {"primary": category, "alternate": list(alternate)}}
    props["addresses"] = address
    return MapFeature("places", "place", pt, props)


def place_features(
    buildings: Sequence[tuple[Polygon, dict[str, Any]]],
    tc: tuple[float, float],
    lake: Any,
    camp: Any,
    lake_north: Point,
    talstation: tuple[float, ...],
) -> list[MapFeature]:
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
