"""Baseline for benchmarks: pipeline/context.py as of commit 85e58ef (before issue-4 item 2).

For every chip of a shard and every Overture type, one SQL query joins the chip outlines with the
features whose ``bbox`` overlaps the shard (a constant predicate DuckDB pushes into the Parquet
scan to skip row groups), clips each feature to its chip, projects the clipped part to the chip's
UTM CRS and measures it. Python then turns the measurements into facts: area share per land-cover
and land-use class, water bodies, building count and footprint share, road length per class,
named features with where they lie in the chip, and the ``classes`` / ``tags`` / ``names``
fields of the Llama3-MS-CLIP release.

Remote releases (``s3://...``) are extracted to a local hive tree once per run for the run's
bounding box (:func:`prepare_overture`); chips are never joined against S3 directly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipeline.config import OvertureConfig
from pipeline.errors import PreflightError
from pipeline.geometry import ChipGrid

__all__ = [
    "OVERTURE_TYPES",
    "ChipArea",
    "MapContext",
    "NamedFeature",
    "ShareItem",
    "check_overture",
    "connect_duckdb",
    "map_context",
    "position_name",
    "prepare_overture",
]

OVERTURE_TYPES: dict[str, str] = {
    "land": "base",
    "land_cover": "base",
    "land_use": "base",
    "water": "base",
    "infrastructure": "base",
    "building": "buildings",
    "segment": "transportation",
    "place": "places",
}
"""The Overture types the context uses, with their themes."""

POSITIONS = (
    ("north-west", "north", "north-east"),
    ("west", "centre", "east"),
    ("south-west", "south", "south-east"),
)
MIN_SHARE = 0.01
"""Land-cover / land-use classes below this share of a chip are left out of the facts."""


def _extension_path(name: str) -> str:
    module = __import__(f"duckdb_extension_{name}")
    path = Path(str(module.__file__)).parent / "extensions" / f"v{duckdb.__version__}"
    return str(path / f"{name}.duckdb_extension")


def connect_duckdb(*, httpfs: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the spatial extension loaded from its pip wheel (no download).

    Args:
        httpfs: Also load httpfs (from ``duckdb-extension-httpfs``) to read ``s3://``.
    """
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    con.execute(f"LOAD '{_extension_path('spatial')}'")
    if httpfs:
        con.execute(f"LOAD '{_extension_path('httpfs')}'")
        con.execute("SET s3_region = 'us-west-2'")
    return con


def _type_glob(root: str, type_name: str) -> str:
    return f"{root.rstrip('/')}/theme={OVERTURE_TYPES[type_name]}/type={type_name}/*.parquet"


def check_overture(cfg: OvertureConfig) -> None:
    """Fail fast if a local Overture source is missing or holds none of the needed types.

    Raises:
        PreflightError: naming ``overture.source``.
    """
    if cfg.is_remote:
        return  # checked when the run's extract is made
    root = Path(cfg.source)
    if not root.is_dir():
        raise PreflightError("overture.source", f"Overture folder {root} does not exist")
    found = [
        t for t in OVERTURE_TYPES if any(Path(_type_glob(str(root), t)).parent.glob("*.parquet"))
    ]
    if not found:
        raise PreflightError(
            "overture.source",
            f"{root} has no theme=*/type=*/*.parquet files of types {list(OVERTURE_TYPES)}",
        )


def prepare_overture(
    cfg: OvertureConfig, bbox: tuple[float, float, float, float], work_dir: Path
) -> Path:
    """The local Overture root to join chips against.

    A local source is used in place. A remote release is filtered to ``bbox`` (plus a margin)
    and copied to ``work_dir/overture/<release>`` once; a finished extract is reused.
    """
    if not cfg.is_remote:
        return Path(cfg.source)
    out = work_dir / "overture" / cfg.release
    if (out / "_SUCCESS").exists():
        return out
    con = connect_duckdb(httpfs=cfg.source.startswith(("s3://", "http")))
    x0, y0, x1, y1 = bbox[0] - 0.05, bbox[1] - 0.05, bbox[2] + 0.05, bbox[3] + 0.05
    for type_name in OVERTURE_TYPES:
        target = out / f"theme={OVERTURE_TYPES[type_name]}" / f"type={type_name}"
        target.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{_type_glob(cfg.source, type_name)}', "
            "hive_partitioning=false) "
            f"WHERE bbox.xmin <= {x1} AND bbox.xmax >= {x0} AND bbox.ymin <= {y1} "
            f"AND bbox.ymax >= {y0}) TO '{target / 'part-00000.parquet'}' (FORMAT parquet)"
        )
    (out / "_SUCCESS").write_text(json.dumps({"source": cfg.source, "bbox": bbox}))
    return out


@dataclass(frozen=True)
class ChipArea:
    """A chip to describe: its sample id and pixel grid."""

    sample_id: str
    grid: ChipGrid


@dataclass(frozen=True)
class ShareItem:
    """A class and the share of the chip it covers (0..1)."""

    cls: str
    share: float


@dataclass(frozen=True)
class NamedFeature:
    """A feature with a name, what it is and where it lies in the chip.

    Attributes:
        name: The feature's primary name.
        kind: Its class, e.g. ``lake``, ``primary`` (road), ``church``.
        theme: The Overture type it comes from (``water``, ``segment``, ``place``...).
        position: One of nine chip cells (``north-west`` ... ``centre`` ... ``south-east``),
            or ``throughout`` for features covering most of the chip.
        share: Area share of the chip (polygons), else 0.
        length_km: Length inside the chip (lines), else 0.
    """

    name: str
    kind: str
    theme: str
    position: str
    share: float = 0.0
    length_km: float = 0.0


@dataclass
class MapContext:
    """Everything the map says about one chip.

    Attributes:
        land_cover: Land-cover classes by share, largest first.
        land_use: Land-use classes by share, largest first.
        water: Water features in the chip (named or not), largest first.
        building_count: Buildings intersecting the chip.
        building_share: Share of the chip under building footprints.
        roads: Road length (km) per class, as ``ShareItem(cls, share=length_km)``.
        named_features: Named features with positions.
        classes: Distinct feature classes present (Llama3-MS-CLIP ``classes``).
        tags: OSM-style ``key=value`` tags of the features (Llama3-MS-CLIP ``tags``).
        names: Distinct feature names (Llama3-MS-CLIP ``names``).
    """

    land_cover: list[ShareItem] = field(default_factory=list)
    land_use: list[ShareItem] = field(default_factory=list)
    water: list[NamedFeature] = field(default_factory=list)
    building_count: int = 0
    building_share: float = 0.0
    roads: list[ShareItem] = field(default_factory=list)
    named_features: list[NamedFeature] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_row(
        cls, row: dict[str, Any], classes: list[str], tags: list[str], names: list[str]
    ) -> MapContext:
        """Rebuild a context from its shard columns (the inverse of :meth:`to_row`)."""
        return cls(
            land_cover=[ShareItem(i["class"], i["share"]) for i in row["land_cover"]],
            land_use=[ShareItem(i["class"], i["share"]) for i in row["land_use"]],
            water=[NamedFeature(**f) for f in row["water"]],
            building_count=row["building_count"],
            building_share=row["building_share"],
            roads=[ShareItem(i["class"], i["length_km"]) for i in row["roads"]],
            named_features=[NamedFeature(**f) for f in row["named_features"]],
            classes=list(classes),
            tags=list(tags),
            names=list(names),
        )

    def to_row(self) -> dict[str, Any]:
        """A plain dict for the Parquet ``context`` struct (see docs/dataset-schema.md)."""
        row = asdict(self)
        row["land_cover"] = [{"class": i.cls, "share": i.share} for i in self.land_cover]
        row["land_use"] = [{"class": i.cls, "share": i.share} for i in self.land_use]
        row["roads"] = [{"class": i.cls, "length_km": i.share} for i in self.roads]
        for key in ("water", "named_features"):
            row[key] = [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "theme": f.theme,
                    "position": f.position,
                    "share": f.share,
                    "length_km": f.length_km,
                }
                for f in getattr(self, key)
            ]
        for key in ("classes", "tags", "names"):
            row.pop(key)
        return row


def position_name(grid: ChipGrid, x: float, y: float) -> str:
    """Which of the nine cells of the chip a point (in the chip CRS) falls in."""
    x0, y0, x1, y1 = grid.bounds
    col = min(max(int(3 * (x - x0) / (x1 - x0)), 0), 2)
    row = min(max(int(3 * (y1 - y) / (y1 - y0)), 0), 2)
    return POSITIONS[row][col]


# Column expressions per type; columns a file lacks become NULL (schemas drift per release).
_CLASS_COLUMNS = {
    "land": ("class", "subtype"),
    "land_cover": ("subtype",),
    "land_use": ("class", "subtype"),
    "water": ("class", "subtype"),
    "infrastructure": ("class", "subtype"),
    "building": ("class", "subtype"),
    "segment": ("class", "subtype"),
    "place": ("categories.primary",),
}


def _columns(con: duckdb.DuckDBPyConnection, glob: str) -> set[str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning=false)")
    cols: set[str] = set()
    for name, dtype, *_ in rows.fetchall():
        cols.add(name)
        if str(dtype).startswith("STRUCT("):
            inner = str(dtype)[len("STRUCT(") : -1]
            cols.update(f"{name}.{part.split()[0].strip(chr(34))}" for part in inner.split(", "))
    return cols


def _query_type(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    type_name: str,
    shard_bbox: tuple[float, float, float, float],
) -> list[tuple[Any, ...]]:
    glob = _type_glob(str(root), type_name)
    if not any(Path(glob).parent.glob("*.parquet")):
        return []
    cols = _columns(con, glob)
    cls_expr = next((c for c in _CLASS_COLUMNS[type_name] if c in cols), None) or "NULL"
    sub_expr = "subtype" if "subtype" in cols else "NULL"
    name_expr = "names.primary" if "names.primary" in cols else "NULL"
    tags_expr = "source_tags" if "source_tags" in cols else "NULL::MAP(VARCHAR, VARCHAR)"
    x0, y0, x1, y1 = shard_bbox
    sql = f"""
    WITH f AS (
        SELECT id, geometry, bbox, {cls_expr}::VARCHAR AS cls, {sub_expr}::VARCHAR AS sub,
               {name_expr}::VARCHAR AS name, {tags_expr} AS tags
        FROM read_parquet('{glob}', hive_partitioning=false)
        WHERE bbox.xmin <= {x1} AND bbox.xmax >= {x0} AND bbox.ymin <= {y1} AND bbox.ymax >= {y0}
    ), j AS (
        SELECT c.sample_id, f.id, f.cls, f.sub, f.name, f.tags,
               ST_Transform(ST_Intersection(f.geometry, c.geom), 'EPSG:4326', c.crs,
                            always_xy := true) AS g
        FROM chips c JOIN f
          ON f.bbox.xmin <= c.xmax AND f.bbox.xmax >= c.xmin
         AND f.bbox.ymin <= c.ymax AND f.bbox.ymax >= c.ymin
         AND ST_Intersects(f.geometry, c.geom)
    )
    SELECT sample_id, id, cls, sub, name, tags, ST_Area(g) AS area,
           CASE WHEN ST_Dimension(g) = 1 THEN ST_Length(g) ELSE 0 END AS length,
           ST_X(ST_Centroid(g)) AS cx, ST_Y(ST_Centroid(g)) AS cy
    FROM j WHERE NOT ST_IsEmpty(g)
    """
    return con.execute(sql).fetchall()


def _tags_of(
    type_name: str, cls: str | None, sub: str | None, tags: dict[str, str] | None
) -> list[str]:
    out = [f"{k}={v}" for k, v in (tags or {}).items()]
    if not out and cls:
        key = {
            "land": "natural",
            "building": "building",
            "segment": "railway" if sub == "rail" else "highway",
            "place": "place",
            "water": "water",
            "land_use": "landuse",
            "land_cover": "land_cover",
            "infrastructure": "infrastructure",
        }[type_name]
        out = [f"{key}={cls}"]
    return out


def map_context(chips: Iterable[ChipArea], overture_root: Path) -> dict[str, MapContext]:
    """Describe every chip from the Overture extract in one join per feature type.

    Args:
        chips: The chips of a shard (any CRS mix).
        overture_root: Local hive tree ``theme=*/type=*/*.parquet``.

    Returns:
        A :class:`MapContext` for every chip (empty where the map has nothing).
    """
    requested = list(chips)
    if not requested:
        return {}
    # A location's periods share one chip grid (same scene CRS): describe each grid once.
    by_grid: dict[tuple[str, tuple[float, ...], int], str] = {}
    alias: dict[str, str] = {}
    chip_list = []
    for chip in requested:
        key = (chip.grid.crs, tuple(chip.grid.as_list()), chip.grid.size)
        first = by_grid.setdefault(key, chip.sample_id)
        alias[chip.sample_id] = first
        if first == chip.sample_id:
            chip_list.append(chip)
    con = connect_duckdb()
    rows = []
    for chip in chip_list:
        poly = chip.grid.footprint_lonlat()
        xmin, ymin, xmax, ymax = poly.bounds
        rows.append((chip.sample_id, chip.grid.crs, poly.wkt, xmin, ymin, xmax, ymax))
    con.execute(
        "CREATE TEMP TABLE chips_raw (sample_id VARCHAR, crs VARCHAR, wkt VARCHAR, "
        "xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE)"
    )
    con.executemany("INSERT INTO chips_raw VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TEMP TABLE chips AS SELECT *, ST_GeomFromText(wkt) AS geom FROM chips_raw")
    shard_bbox = (
        min(r[3] for r in rows),
        min(r[4] for r in rows),
        max(r[5] for r in rows),
        max(r[6] for r in rows),
    )
    grids = {c.sample_id: c.grid for c in chip_list}
    acc: dict[str, dict[str, Any]] = {
        sid: {
            "lc": {},
            "lu": {},
            "roads": {},
            "water": [],
            "named": [],
            "bcount": 0,
            "barea": 0.0,
            "tags": set(),
            "classes": set(),
        }
        for sid in grids
    }
    for type_name in OVERTURE_TYPES:
        for sid, _fid, cls, sub, name, tags, area, length, cx, cy in _query_type(
            con, overture_root, type_name, shard_bbox
        ):
            grid = grids[sid]
            chip_area = (grid.size * grid.resolution) ** 2
            share = float(area or 0.0) / chip_area
            a = acc[sid]
            kind = cls or sub or type_name
            position = "throughout" if share > 0.5 else position_name(grid, cx, cy)
            feature = NamedFeature(
                name=name or "",
                kind=kind,
                theme=type_name,
                position=position,
                share=round(share, 4),
                length_km=round(float(length or 0.0) / 1000, 3),
            )
            if type_name == "land_cover":
                a["lc"][kind] = a["lc"].get(kind, 0.0) + share
            elif type_name == "land_use":
                a["lu"][kind] = a["lu"].get(kind, 0.0) + share
            elif type_name == "water":
                a["water"].append(feature)
            elif type_name == "building":
                a["bcount"] += 1
                a["barea"] += share
            elif type_name == "segment" and sub in (None, "road"):
                # Rail and water segments share the type; only roads count as road length.
                a["roads"][kind] = a["roads"].get(kind, 0.0) + feature.length_km
            if name:
                a["named"].append(feature)
            if type_name not in ("land_cover", "land_use") or share >= MIN_SHARE:
                a["classes"].add(kind)
                a["tags"].update(_tags_of(type_name, cls, sub, tags))
    con.close()
    described = {sid: _finish(a) for sid, a in acc.items()}
    return {sid: copy.deepcopy(described[first]) for sid, first in alias.items()}


def _shares(values: dict[str, float]) -> list[ShareItem]:
    items = [ShareItem(k, round(min(v, 1.0), 4)) for k, v in values.items() if v >= MIN_SHARE]
    return sorted(items, key=lambda i: (-i.share, i.cls))


def _merge_named(features: list[NamedFeature]) -> list[NamedFeature]:
    # One entry per (name, kind): a river cut into many segments is still one river. Its
    # position is that of its largest single piece (ties broken by position name), so the
    # result does not depend on the order DuckDB returns rows in.
    groups: dict[tuple[str, str], list[NamedFeature]] = {}
    for f in features:
        groups.setdefault((f.name, f.kind), []).append(f)
    merged = []
    for (name, kind), pieces in groups.items():
        largest = max(pieces, key=lambda p: (p.share, p.length_km, p.position))
        merged.append(
            NamedFeature(
                name,
                kind,
                largest.theme,
                largest.position,
                round(min(sum(p.share for p in pieces), 1.0), 4),
                round(sum(p.length_km for p in pieces), 3),
            )
        )
    return sorted(merged, key=lambda f: (-f.share, -f.length_km, f.name, f.kind))


def _finish(a: dict[str, Any]) -> MapContext:
    named = _merge_named(a["named"])
    return MapContext(
        land_cover=_shares(a["lc"]),
        land_use=_shares(a["lu"]),
        water=_merge_named(a["water"]),
        building_count=int(a["bcount"]),
        building_share=round(float(a["barea"]), 4),
        roads=sorted(
            (ShareItem(k, round(v, 3)) for k, v in a["roads"].items()),
            key=lambda i: (-i.share, i.cls),
        ),
        named_features=named,
        classes=sorted(a["classes"]),
        tags=sorted(a["tags"]),
        names=sorted({f.name for f in named}),
    )
