"""The demo region's Overture Maps extract: one GeoParquet file per theme and type.

``theme=<theme>/type=<type>/part-00000.parquet`` with Overture's per-type schemas, WKB
geometries in lon/lat, GeoParquet 1.1 ``geo`` metadata with a ``bbox`` covering column, rows in
Z-order of their bbox centres, and places in the ``categories`` schema of releases before
September 2026 or the ``basic_category`` / ``taxonomy`` schema of later ones.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import Transformer

from pipeline.dataset.geoparquet import geo_metadata
from pipeline.demo.features import MapFeature
from pipeline.demo.noise import seeded_rng
from pipeline.demo.scene import SceneGrid
from pipeline.demo.shapes import polygonal
from pipeline.geo.zorder import extent_zorder

__all__ = ["PlacesSchema", "write_overture"]

Array = npt.NDArray[Any]

PlacesSchema = Literal["categories", "taxonomy"]
"""Schema of the places theme: ``categories`` (releases before September 2026) or ``taxonomy``."""

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


def write_overture(
    root: Path,
    grid: SceneGrid,
    features: Sequence[MapFeature],
    seed: int,
    places_schema: PlacesSchema = "categories",
) -> None:
    """Write the features as an Overture extract under ``root`` (every type, empty ones too)."""
    to_ll = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    srng = seeded_rng(seed, "sources")
    by_type: dict[tuple[str, str], list[MapFeature]] = {}
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
                extent_zorder((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2),
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
        return shapely.orient_polygons(polygonal(geom))
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom
