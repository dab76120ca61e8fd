"""Overture join throughput: ``pipeline.context.map_context`` in chips/s on a >= 1M-feature extract.

The extract is synthetic but laid out like an Overture release and like the demo's extract
(``pipeline.demo_region``: same per-type schemas, GeoParquet 1.1 ``geo`` metadata with a
``bbox`` covering, float32 bboxes rounded outward): a hive tree ``theme=*/type=*/part-*.parquet``
over a 1 x 1 degree area (default lon 10-11, lat 47-48, ~8,300 km2), rows of each type sorted
along a Z-order curve and written in row groups of 65,536 rows, so the constant bbox predicate
of each query can skip row groups. Mostly buildings (small rotated rectangles clustered in
~400 towns) and land cover (irregular 20-gons tiling the area), plus roads/rails, land use,
water, places, infrastructure and land points. It is generated once into ``/tmp`` and reused.

The chips are the pipeline's own plan for a run over that area (``plan_shards``: default
spacing 1950 m, four seasons, 64 samples per shard, Z-ordered), ``--shards`` shards picked evenly
across the plan. Variants, timed shard by shard and interleaved:

* ``ours``: ``map_context(chips, root)`` as ``build_shard`` calls it (since commit 3358207 it
  joins each distinct chip grid once: a shard holds each location once per season);
* ``shared_db``: the same function with ``connect_duckdb`` patched to hand out a cursor of one
  process-wide connection (spatial extension loaded once): the proposed fix for the per-shard
  connect + ``LOAD spatial``;
* baselines: ``no_dedup`` (sample i's grid moved by i micrometres, so that no two are equal:
  the join work of ``map_context`` before it deduplicated grids), ``per_chip`` (one
  ``map_context`` call per chip, shared connection) and ``no_pushdown`` (each type query given
  a whole-world bbox, so no row group is skipped; shared connection); the last two on fewer
  shards because they are slow.

Every variant's contexts are compared with ``ours`` (chips whose context differs are counted).
The same shards moved off the extract give the fixed cost per shard (every query returns
nothing), and variants of the building query (the largest type) show where its time goes.
A profiled pass of ``ours`` splits each shard's time into DuckDB connect + extension load,
chip-table setup, per-type ``DESCRIBE`` and per-type join query, and the Python that assembles
the contexts (the rest).

Run: ``.venv/bin/python -m benchmarks.overture_join [--features 1000000] [--shards 12]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from benchmarks._common import emit, log, machine, median

DEFAULT_BBOX = (10.0, 47.0, 11.0, 48.0)
ROW_GROUP = 65_536
SHARES = {  # share of all features per (theme, type)
    ("buildings", "building"): 0.676,
    ("base", "land_cover"): 0.12,
    ("transportation", "segment"): 0.13,
    ("places", "place"): 0.03,
    ("base", "land_use"): 0.025,
    ("base", "water"): 0.007,
    ("base", "infrastructure"): 0.008,
    ("base", "land"): 0.004,
}
GENERATOR_VERSION = "2"

# --------------------------------------------------------------------------------------------
# The synthetic extract


@dataclasses.dataclass
class _Frame:
    """Metric offsets (m) from the south-west corner of the area <-> lon/lat."""

    lon0: float
    lat0: float
    width_m: float
    height_m: float
    m_per_deg_lon: float
    m_per_deg_lat: float

    @classmethod
    def of(cls, bbox: tuple[float, float, float, float]) -> _Frame:
        lat_c = math.radians((bbox[1] + bbox[3]) / 2)
        mx, my = 111_320.0 * math.cos(lat_c), 110_540.0
        return cls(bbox[0], bbox[1], (bbox[2] - bbox[0]) * mx, (bbox[3] - bbox[1]) * my, mx, my)

    def ll(self, xy: np.ndarray) -> np.ndarray:
        out = np.empty_like(xy, dtype=np.float64)
        out[..., 0] = self.lon0 + xy[..., 0] / self.m_per_deg_lon
        out[..., 1] = self.lat0 + xy[..., 1] / self.m_per_deg_lat
        return out


def _blobs(
    rng: np.random.Generator, centres: np.ndarray, radii: np.ndarray, k: int, wobble: float
) -> np.ndarray:
    """(n, k, 2) metric rings of star-shaped irregular polygons (counter-clockwise)."""
    n = len(centres)
    theta = np.linspace(0, 2 * np.pi, k, endpoint=False)
    r = np.ones((n, k))
    for harmonic, amp in ((2, 1.0), (3, 0.6), (5, 0.35)):
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        r += wobble * amp * np.sin(harmonic * theta[None, :] + phase)
    r = np.clip(r, 0.2, None) * radii[:, None]
    return np.stack(
        [centres[:, :1] + r * np.cos(theta), centres[:, 1:] + r * np.sin(theta)], axis=-1
    )


def _near_towns(
    rng: np.random.Generator, frame: _Frame, towns: np.ndarray, spread: np.ndarray, n: int, p: float
) -> np.ndarray:
    """``n`` metric points: a share ``p`` around towns (normal, town spread), the rest uniform."""
    k = int(n * p)
    pick = rng.integers(0, len(towns), k)
    near = towns[pick] + rng.normal(0, 1, (k, 2)) * spread[pick, None]
    far = rng.uniform((0, 0), (frame.width_m, frame.height_m), (n - k, 2))
    pts = np.concatenate([near, far])
    pts[:, 0] = np.clip(pts[:, 0], 0, frame.width_m)
    pts[:, 1] = np.clip(pts[:, 1], 0, frame.height_m)
    return pts


def _pick(rng: np.random.Generator, n: int, weights: dict[str, float]) -> pa.Array:
    """``n`` strings drawn from ``weights`` (value: probability)."""
    keys = np.asarray(list(weights), dtype=object)
    p = np.asarray(list(weights.values()))
    return pa.array(keys[rng.choice(len(keys), n, p=p / p.sum())], pa.string())


def _names(rng: np.random.Generator, prefix: str, n: int, share: float) -> pa.Array:
    """The Overture ``names`` struct with ``primary`` set on a share of rows (others null)."""
    from pipeline.demo_region import _NAMES_TYPE

    named = rng.random(n) < share
    primary = pa.array(
        [f"{prefix} {i:06d}" if m else None for i, m in enumerate(named)], pa.string()
    )
    fields = list(_NAMES_TYPE)
    children = [primary] + [pa.nulls(n, f.type) for f in fields[1:]]
    return pa.StructArray.from_arrays(children, fields=fields, mask=pa.array(~named))


def _tags(key: str, values: pa.Array) -> pa.Array:
    """``source_tags`` maps with one ``key=value`` entry per row."""
    n = len(values)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, pa.array([key] * n), values)


def _gen_type(
    rng: np.random.Generator,
    frame: _Frame,
    towns: np.ndarray,
    spread: np.ndarray,
    type_: str,
    n: int,
) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Metric geometries (shapely array, lon/lat applied later) and columns of one type."""
    cols: dict[str, pa.Array] = {}
    if type_ == "building":
        c = _near_towns(rng, frame, towns, spread, n, 0.75)
        w, d = rng.uniform(8, 30, n), rng.uniform(6, 20, n)
        a = rng.uniform(0, np.pi, n)
        corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64) / 2
        x = corners[None, :, 0] * w[:, None]
        y = corners[None, :, 1] * d[:, None]
        ca, sa = np.cos(a)[:, None], np.sin(a)[:, None]
        rings = np.stack([c[:, :1] + ca * x - sa * y, c[:, 1:] + sa * x + ca * y], axis=-1)
        geoms = shapely.polygons(frame.ll(rings))
        cols["subtype"] = _pick(
            rng,
            n,
            {
                "residential": 0.6,
                "agricultural": 0.15,
                "commercial": 0.1,
                "industrial": 0.05,
                "outbuilding": 0.1,
            },
        )
        cols["class"] = _pick(
            rng,
            n,
            {
                "house": 0.35,
                "detached": 0.2,
                "barn": 0.15,
                "garage": 0.15,
                "apartments": 0.1,
                "retail": 0.05,
            },
        )
        cols["names"] = _names(rng, "Building", n, 0.01)
        cols["height"] = pa.array(rng.uniform(3, 20, n))
        cols["num_floors"] = pa.array(rng.integers(1, 6, n).astype(np.int32))
        cols["has_parts"] = pa.array(np.zeros(n, bool))
    elif type_ == "land_cover":
        cell = math.sqrt(frame.width_m * frame.height_m / n)
        nx, ny = math.ceil(frame.width_m / cell), math.ceil(frame.height_m / cell)
        gx, gy = np.meshgrid((np.arange(nx) + 0.5) * cell, (np.arange(ny) + 0.5) * cell)
        c = np.column_stack([gx.ravel(), gy.ravel()])[:n]
        n = len(c)
        c = c + rng.uniform(-0.1, 0.1, (n, 2)) * cell
        rings = _blobs(rng, c, np.full(n, 0.55 * cell), 20, 0.12)
        geoms = shapely.polygons(frame.ll(rings))
        cols["subtype"] = _pick(
            rng,
            n,
            {
                "forest": 0.35,
                "crop": 0.25,
                "grass": 0.2,
                "urban": 0.07,
                "shrub": 0.05,
                "wetland": 0.03,
                "barren": 0.03,
                "snow": 0.02,
            },
        )
    elif type_ == "land_use":
        c = _near_towns(rng, frame, towns, spread, n, 0.6)
        rings = _blobs(rng, c, rng.lognormal(np.log(200), 0.6, n), 16, 0.15)
        geoms = shapely.polygons(frame.ll(rings))
        cls = _pick(
            rng,
            n,
            {
                "residential": 0.3,
                "farmland": 0.3,
                "meadow": 0.2,
                "industrial": 0.1,
                "park": 0.07,
                "cemetery": 0.03,
            },
        )
        cols["class"], cols["subtype"] = cls, cls
        cols["names"] = _names(rng, "Area", n, 0.1)
        cols["source_tags"] = _tags("landuse", cls)
    elif type_ == "water":
        c = rng.uniform((0, 0), (frame.width_m, frame.height_m), (n, 2))
        rings = _blobs(rng, c, rng.lognormal(np.log(60), 0.9, n), 24, 0.2)
        geoms = shapely.polygons(frame.ll(rings))
        cls = _pick(rng, n, {"lake": 0.3, "pond": 0.5, "reservoir": 0.1, "basin": 0.1})
        cols["class"] = cls
        cols["subtype"] = _pick(rng, n, {"lake": 0.4, "pond": 0.5, "reservoir": 0.1})
        cols["names"] = _names(rng, "Lake", n, 0.2)
        cols["is_salt"] = pa.array(np.zeros(n, bool))
        cols["is_intermittent"] = pa.array(np.zeros(n, bool))
        cols["source_tags"] = _tags("water", cls)
    elif type_ == "segment":
        start = _near_towns(rng, frame, towns, spread, n, 0.6)
        heading = rng.uniform(0, 2 * np.pi, n)
        pts = [start]
        for _ in range(5):
            heading = heading + rng.normal(0, 0.4, n)
            step = rng.uniform(30, 120, n)
            pts.append(
                pts[-1] + np.column_stack([np.cos(heading), np.sin(heading)]) * step[:, None]
            )
        geoms = shapely.linestrings(frame.ll(np.stack(pts, axis=1)))
        cols["subtype"] = _pick(rng, n, {"road": 0.92, "rail": 0.04, "water": 0.04})
        cols["class"] = _pick(
            rng,
            n,
            {
                "residential": 0.3,
                "tertiary": 0.12,
                "secondary": 0.08,
                "primary": 0.04,
                "track": 0.16,
                "service": 0.14,
                "footway": 0.08,
                "unclassified": 0.08,
            },
        )
        cols["names"] = _names(rng, "Street", n, 0.35)
    elif type_ == "place":
        c = _near_towns(rng, frame, towns, spread * 0.5, n, 0.9)
        geoms = shapely.points(frame.ll(c))
        cats = ["restaurant", "church", "school", "hotel", "supermarket", "bakery", "pharmacy"]
        primary = _pick(rng, n, dict(zip(cats, [5, 2, 2, 3, 3, 3, 2], strict=True)))
        fields = [pa.field("primary", pa.string()), pa.field("alternate", pa.list_(pa.string()))]
        cols["categories"] = pa.StructArray.from_arrays(
            [primary, pa.nulls(n, pa.list_(pa.string()))], fields=fields
        )
        cols["names"] = _names(rng, "Place", n, 1.0)
        cols["confidence"] = pa.array(rng.uniform(0.3, 1.0, n))
    elif type_ == "infrastructure":
        c = rng.uniform((0, 0), (frame.width_m, frame.height_m), (n, 2))
        geoms = shapely.points(frame.ll(c))
        cls = _pick(rng, n, {"power_tower": 0.4, "power_pole": 0.4, "bridge": 0.1, "mast": 0.1})
        cols["class"] = cls
        cols["subtype"] = _pick(rng, n, {"power": 0.8, "transit": 0.1, "communication": 0.1})
        cols["names"] = _names(rng, "Tower", n, 0.02)
        cols["source_tags"] = _tags("power", cls)
    elif type_ == "land":
        c = rng.uniform((0, 0), (frame.width_m, frame.height_m), (n, 2))
        geoms = shapely.points(frame.ll(c))
        cls = _pick(rng, n, {"peak": 0.4, "tree": 0.3, "cliff": 0.2, "saddle": 0.1})
        cols["class"] = cls
        cols["subtype"] = _pick(rng, n, {"physical": 0.5, "tree": 0.3, "rock": 0.2})
        cols["names"] = _names(rng, "Peak", n, 0.5)
        cols["elevation"] = pa.array(rng.integers(500, 3000, n).astype(np.int32))
        cols["source_tags"] = _tags("natural", cls)
    else:
        raise ValueError(type_)
    return geoms, cols


def _write_type(
    root: Path, theme: str, type_: str, geoms: np.ndarray, cols: dict[str, pa.Array], seed: int
) -> dict[str, Any]:
    """Sort spatially and write one type's GeoParquet, demo-style; return its stats."""
    from pipeline.demo_region import _COMMON_FIELDS, _TYPE_FIELDS, _f32_outward, _morton

    n = len(geoms)
    bounds = shapely.bounds(geoms)
    order = np.argsort(
        _morton((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2),
        kind="stable",
    )
    bounds = bounds[order]
    take = pa.array(order)
    bbox = pa.StructArray.from_arrays(
        [
            pa.array(_f32_outward(bounds[:, 0], True)),
            pa.array(_f32_outward(bounds[:, 2], False)),
            pa.array(_f32_outward(bounds[:, 1], True)),
            pa.array(_f32_outward(bounds[:, 3], False)),
        ],
        names=["xmin", "xmax", "ymin", "ymax"],
    )
    tag = list(SHARES).index((theme, type_))
    ids = [str(uuid.UUID(int=(seed << 96) | (tag << 64) | i)) for i in range(n)]
    values: dict[str, pa.Array] = {
        "id": pa.array(ids),
        "geometry": pa.array(shapely.to_wkb(geoms[order], byte_order=1, output_dimension=2)),
        "bbox": bbox,
        "version": pa.array(np.zeros(n, np.int32)),
    }
    values.update({k: v.take(take) for k, v in cols.items()})
    schema = pa.schema(_COMMON_FIELDS[:3] + _TYPE_FIELDS[(theme, type_)] + _COMMON_FIELDS[3:])
    arrays = [values.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema]
    table = pa.Table.from_arrays(arrays, schema=schema)
    type_names = {0: "Point", 1: "LineString", 3: "Polygon"}
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": sorted(
                    {type_names[int(t)] for t in np.unique(shapely.get_type_id(geoms))}
                ),
                "bbox": [
                    float(bounds[:, 0].min()),
                    float(bounds[:, 1].min()),
                    float(bounds[:, 2].max()),
                    float(bounds[:, 3].max()),
                ],
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }
        },
    }
    table = table.replace_schema_metadata({"geo": json.dumps(geo)})
    out = root / f"theme={theme}" / f"type={type_}" / "part-00000.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd", row_group_size=ROW_GROUP)
    return {
        "rows": n,
        "row_groups": pq.ParquetFile(out).num_row_groups,
        "bytes": out.stat().st_size,
    }


def ensure_extract(
    cache_dir: Path, bbox: tuple[float, float, float, float], features: int, seed: int
) -> tuple[Path, dict[str, Any]]:
    """The synthetic extract for these parameters (generated once, then reused)."""
    params = {"v": GENERATOR_VERSION, "bbox": bbox, "features": features, "seed": seed}
    key = hashlib.sha256(json.dumps(params).encode()).hexdigest()[:12]
    root = cache_dir / f"overture-synth-{key}"
    done = root / "_SUCCESS"
    if done.exists():
        log(f"reusing synthetic Overture extract {root}")
        return root, json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    frame = _Frame.of(bbox)
    n_towns = 400
    towns = rng.uniform((0, 0), (frame.width_m, frame.height_m), (n_towns, 2))
    spread = rng.lognormal(np.log(500), 0.6, n_towns)
    stats: dict[str, Any] = {}
    for (theme, type_), share in SHARES.items():
        n = round(features * share)
        geoms, cols = _gen_type(rng, frame, towns, spread, type_, n)
        stats[type_] = _write_type(root, theme, type_, geoms, cols, seed)
        log(f"  {type_}: {stats[type_]['rows']:,} rows, {stats[type_]['row_groups']} row groups")
    info = {
        "params": params,
        "types": stats,
        "total_features": sum(s["rows"] for s in stats.values()),
        "bytes": sum(s["bytes"] for s in stats.values()),
        "generate_s": round(time.perf_counter() - t0, 1),
    }
    done.write_text(json.dumps(info))
    log(f"generated {info['total_features']:,} features in {info['generate_s']} s at {root}")
    return root, info


# --------------------------------------------------------------------------------------------
# Chips and variants


def plan_chip_shards(
    bbox: tuple[float, float, float, float], n_shards: int
) -> tuple[list[list[Any]], int]:
    """``n_shards`` shards of the pipeline's plan over ``bbox`` (evenly spread), as ChipAreas."""
    from benchmarks._common import demo_config
    from pipeline.context import ChipArea
    from pipeline.geometry import chip_grid, utm_crs

    config = demo_config(**{"region.bbox": list(bbox)})
    from pipeline.sampling import plan_shards

    shards = [s for s in plan_shards(config) if len(s.samples) == config.output.shard_size]
    step = max(1, len(shards) // n_shards)
    picked = shards[::step][:n_shards]
    size, res = config.chips.size_px, config.chips.resolution_m
    out = []
    for sh in picked:
        chips = []
        for s in sh.samples:
            crs = utm_crs(s.location.lon, s.location.lat)
            chips.append(
                ChipArea(s.sample_id, chip_grid(s.location.lon, s.location.lat, crs, size, res))
            )
        out.append(chips)
    return out, len(shards)


_SHARED: dict[str, Any] = {}


def _shared_cursor(*, httpfs: bool = False) -> Any:
    """A cursor on one process-wide DuckDB connection (spatial loaded once)."""
    con = _SHARED.get("con")
    if con is None:
        con = _SHARED["con"] = _ORIGINAL["connect_duckdb"](httpfs=httpfs)
    return con.cursor()


_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """Temporarily replace ``module.name``."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def run_ours(chips: list[Any], root: Path) -> dict[str, Any]:
    from pipeline.context import map_context

    return map_context(chips, root)


def run_shared(chips: list[Any], root: Path) -> dict[str, Any]:
    from pipeline import context

    with patched(context, "connect_duckdb", _shared_cursor):
        return context.map_context(chips, root)


def _grid_key(grid: Any) -> tuple[Any, ...]:
    return (grid.crs, tuple(grid.transform)[:6], grid.size)


def _unique_grids(chips: list[Any]) -> list[Any]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for c in chips:
        key = _grid_key(c.grid)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def run_no_dedup(chips: list[Any], root: Path) -> dict[str, Any]:
    """``map_context`` with no two grids equal (each moved by i micrometres): no dedup."""
    from pipeline.context import ChipArea, map_context

    moved = []
    for i, c in enumerate(chips):
        t = c.grid.transform
        grid = dataclasses.replace(
            c.grid, transform=type(t)(t.a, t.b, t.c + i * 1e-6, t.d, t.e, t.f)
        )
        moved.append(ChipArea(c.sample_id, grid))
    return map_context(moved, root)


def run_per_chip(chips: list[Any], root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in chips:
        out.update(run_shared([c], root))
    return out


def run_no_pushdown(chips: list[Any], root: Path) -> dict[str, Any]:
    from pipeline import context

    original = context._query_type

    def whole_world(con: Any, root_: Path, type_name: str, _bbox: Any) -> Any:
        return original(con, root_, type_name, (-180.0, -90.0, 180.0, 90.0))

    with patched(context, "_query_type", whole_world):
        return run_shared(chips, root)


def _n_differing(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Chips whose MapContext differs between two results (all of them if the ids differ)."""
    if a.keys() != b.keys():
        return len(a)
    return sum(
        a[k].to_row() != b[k].to_row() or (a[k].tags, a[k].names) != (b[k].tags, b[k].names)
        for k in a
    )


def profile_shard(chips: list[Any], root: Path, shared: bool) -> dict[str, Any]:
    """One map_context call with its parts timed (connect, DESCRIBE, queries, the rest)."""
    from pipeline import context

    parts: dict[str, float] = {"connect_load": 0.0, "describe": 0.0}
    per_type: dict[str, dict[str, float]] = {}
    connect = _shared_cursor if shared else _ORIGINAL["connect_duckdb"]
    columns, query = context._columns, context._query_type

    def t_connect(**kw: Any) -> Any:
        t0 = time.perf_counter()
        con = connect(**kw)
        parts["connect_load"] += time.perf_counter() - t0
        return con

    def t_columns(con: Any, glob: str) -> Any:
        t0 = time.perf_counter()
        out = columns(con, glob)
        parts["describe"] += time.perf_counter() - t0
        return out

    def t_query(con: Any, root_: Path, type_name: str, bbox: Any) -> Any:
        d0 = parts["describe"]
        t0 = time.perf_counter()
        rows = query(con, root_, type_name, bbox)
        dt = time.perf_counter() - t0 - (parts["describe"] - d0)
        per_type[type_name] = {"query_s": dt, "rows": len(rows)}
        return rows

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(context, "connect_duckdb", t_connect))
        stack.enter_context(patched(context, "_columns", t_columns))
        stack.enter_context(patched(context, "_query_type", t_query))
        t0 = time.perf_counter()
        context.map_context(chips, root)
        total = time.perf_counter() - t0
    queries = sum(v["query_s"] for v in per_type.values())
    return {
        "total_s": total,
        "connect_load_s": parts["connect_load"],
        "describe_s": parts["describe"],
        "queries_s": queries,
        "rest_s": total - parts["connect_load"] - parts["describe"] - queries,
        "per_type": per_type,
    }


def row_groups_touched(root: Path, chips_by_shard: list[list[Any]]) -> dict[str, Any]:
    """Per type: row groups whose bbox statistics overlap a shard's extent (mean), of all."""
    from pipeline.context import OVERTURE_TYPES, _type_glob

    out: dict[str, Any] = {}
    for type_name in OVERTURE_TYPES:
        files = sorted(Path(_type_glob(str(root), type_name)).parent.glob("*.parquet"))
        boxes = []
        for f in files:
            md = pq.ParquetFile(f).metadata
            names = [md.schema.column(i).path for i in range(md.num_columns)]
            idx = {k: names.index(f"bbox.{k}") for k in ("xmin", "xmax", "ymin", "ymax")}
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                st = {k: rg.column(i).statistics for k, i in idx.items()}
                boxes.append((st["xmin"].min, st["ymin"].min, st["xmax"].max, st["ymax"].max))
        touched = []
        for chips in chips_by_shard:
            b = [c.grid.footprint_lonlat().bounds for c in chips]
            x0, y0 = min(v[0] for v in b), min(v[1] for v in b)
            x1, y1 = max(v[2] for v in b), max(v[3] for v in b)
            touched.append(
                sum(
                    1 for bx in boxes if bx[0] <= x1 and bx[2] >= x0 and bx[1] <= y1 and bx[3] >= y0
                )
            )
        out[type_name] = {
            "row_groups": len(boxes),
            "touched_mean": round(float(np.mean(touched)), 2),
        }
    return out


def shifted(chips: list[Any], dlon: float) -> list[Any]:
    """The same chips moved ``dlon`` degrees east (same UTM zone), e.g. off the extract."""
    from pipeline.context import ChipArea
    from pipeline.geometry import transformer

    out = []
    for c in chips:
        lon, lat = transformer(c.grid.crs, "EPSG:4326").transform(*c.grid.transform * (0, 0))
        x, y = transformer("EPSG:4326", c.grid.crs).transform(lon + dlon, lat)
        t = c.grid.transform
        grid = dataclasses.replace(c.grid, transform=type(t)(t.a, t.b, x, t.d, t.e, y))
        out.append(ChipArea(c.sample_id, grid))
    return out


_BUILDING_SQL = """
WITH f AS (
    SELECT id, geometry, bbox, class::VARCHAR AS cls, subtype::VARCHAR AS sub,
           names.primary::VARCHAR AS name, NULL::MAP(VARCHAR, VARCHAR) AS tags
    FROM read_parquet('{glob}', hive_partitioning=false)
    WHERE bbox.xmin <= {x1} AND bbox.xmax >= {x0} AND bbox.ymin <= {y1} AND bbox.ymax >= {y0}
), j AS (
    SELECT c.sample_id, f.id, f.cls, f.sub, f.name, f.tags,
           ST_Transform({clip}, 'EPSG:4326', {crs}, always_xy := true) AS g
    FROM chips c JOIN f
      ON f.bbox.xmin <= c.xmax AND f.bbox.xmax >= c.xmin
     AND f.bbox.ymin <= c.ymax AND f.bbox.ymax >= c.ymin
     AND ST_Intersects(f.geometry, c.geom)
)
{select}
"""
_ROWS = """SELECT sample_id, id, cls, sub, name, tags, ST_Area(g) AS area,
       CASE WHEN ST_Dimension(g) = 1 THEN ST_Length(g) ELSE 0 END AS length,
       ST_X(ST_Centroid(g)) AS cx, ST_Y(ST_Centroid(g)) AS cy
FROM j WHERE NOT ST_IsEmpty(g)"""
_AGG = "SELECT sample_id, count(*), sum(ST_Area(g)) FROM j WHERE NOT ST_IsEmpty(g) GROUP BY 1"
_CLIP = "ST_Intersection(f.geometry, c.geom)"
_SHORTCUT = (
    "CASE WHEN ST_Within(f.geometry, c.geom) THEN f.geometry "
    "ELSE ST_Intersection(f.geometry, c.geom) END"
)
SQL_VARIANTS: dict[str, dict[str, str]] = {
    # The building query of pipeline.context._query_type, as it is.
    "as_is": {"clip": _CLIP, "crs": "c.crs", "select": _ROWS},
    # Features wholly inside the chip are not clipped.
    "contained_shortcut": {"clip": _SHORTCUT, "crs": "c.crs", "select": _ROWS},
    # One constant target CRS (a shard's chips share a UTM zone) instead of c.crs per row.
    "constant_crs": {"clip": _CLIP, "crs": "'EPSG:32632'", "select": _ROWS},
    # Count and footprint share per chip in SQL: 64 rows to Python instead of one per feature.
    "aggregate_in_sql": {"clip": _CLIP, "crs": "c.crs", "select": _AGG},
    # Lower bound of the join itself: no clipping, no projection.
    "no_clip_no_transform": {"clip": "f.geometry", "crs": "'EPSG:4326'", "select": _ROWS},
}


def building_sql_experiments(root: Path, shards: list[list[Any]]) -> dict[str, Any]:
    """Time variants of the building query (the largest type) on the same shards.

    ``shards`` should hold distinct grids only, as ``map_context`` joins them.
    """
    from pipeline.context import _type_glob

    con = _ORIGINAL["connect_duckdb"]()
    glob = _type_glob(str(root), "building")
    times: dict[str, list[float]] = {k: [] for k in SQL_VARIANTS}
    rows: dict[str, list[int]] = {k: [] for k in SQL_VARIANTS}
    for chips in shards:
        con.execute("DROP TABLE IF EXISTS chips")
        con.execute("DROP TABLE IF EXISTS chips_raw")
        recs = []
        for c in chips:
            poly = c.grid.footprint_lonlat()
            recs.append((c.sample_id, c.grid.crs, poly.wkt, *poly.bounds))
        con.execute(
            "CREATE TEMP TABLE chips_raw (sample_id VARCHAR, crs VARCHAR, wkt VARCHAR, "
            "xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE)"
        )
        con.executemany("INSERT INTO chips_raw VALUES (?, ?, ?, ?, ?, ?, ?)", recs)
        con.execute(
            "CREATE TEMP TABLE chips AS SELECT *, ST_GeomFromText(wkt) AS geom FROM chips_raw"
        )
        x0, y0 = min(r[3] for r in recs), min(r[4] for r in recs)
        x1, y1 = max(r[5] for r in recs), max(r[6] for r in recs)
        for name, parts in SQL_VARIANTS.items():
            sql = _BUILDING_SQL.format(glob=glob, x0=x0, y0=y0, x1=x1, y1=y1, **parts)
            t0 = time.perf_counter()
            got = con.execute(sql).fetchall()
            times[name].append(time.perf_counter() - t0)
            rows[name].append(len(got))
    con.close()
    base = median(times["as_is"])
    return {
        name: {
            "median_ms_per_shard": round(1000 * median(ts), 1),
            "rows_returned_per_shard": round(float(np.mean(rows[name])), 1),
            "speedup_vs_as_is": round(base / median(ts), 2),
        }
        for name, ts in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--bbox", type=float, nargs=4, default=DEFAULT_BBOX)
    parser.add_argument("--shards", type=int, default=12, help="64-chip shards timed")
    parser.add_argument("--baseline-shards", type=int, default=2, help="for per_chip, no_pushdown")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/eocap-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    from pipeline import context

    _ORIGINAL["connect_duckdb"] = context.connect_duckdb
    info_machine = machine()  # before the work: load average at start
    bbox = (args.bbox[0], args.bbox[1], args.bbox[2], args.bbox[3])
    root, info = ensure_extract(args.cache_dir, bbox, args.features, args.seed)
    shards, planned = plan_chip_shards(bbox, args.shards)
    distinct = [len({_grid_key(c.grid) for c in s}) for s in shards]
    log(f"{len(shards)} shards of {len(shards[0])} chips (of {planned} planned shards)")

    variants: dict[str, Callable[[list[Any], Path], dict[str, Any]]] = {
        "ours": run_ours,
        "shared_db": run_shared,
        "no_dedup": run_no_dedup,
    }
    baselines = {"per_chip": run_per_chip, "no_pushdown": run_no_pushdown}
    run_shared(shards[0], root)  # warm-up: page cache, the shared connection
    run_ours(shards[0][:8], root)
    times: dict[str, list[float]] = {k: [] for k in (*variants, *baselines)}
    cpus: dict[str, list[float]] = {k: [] for k in times}
    differing: dict[str, int] = dict.fromkeys(times, 0)  # chips whose context != ours
    for i, chips in enumerate(shards):
        outputs: dict[str, dict[str, Any]] = {}
        todo = dict(variants)
        if i < args.baseline_shards:
            todo.update(baselines)
        order = list(todo)
        order = order[i % len(order) :] + order[: i % len(order)]  # rotate: no variant always first
        for name in order:
            fn = todo[name]
            c0, t0 = time.process_time(), time.perf_counter()
            got = fn(chips, root)
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
            outputs[name] = got
        for name, got in outputs.items():
            differing[name] += _n_differing(outputs["ours"], got)
        log(
            f"shard {i + 1}/{len(shards)}: "
            + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if len(v) == i + 1)
        )

    def summary(name: str) -> dict[str, Any]:
        ts = times[name]
        chips = len(shards[0]) * len(ts)
        return {
            "shards": len(ts),
            "chips": chips,
            "total_s": round(sum(ts), 3),
            "median_shard_s": round(median(ts), 4),
            "chips_per_s": round(chips / sum(ts), 1),
            "cpu_s": round(sum(cpus[name]), 3),
            "chips_per_cpu_s": round(chips / sum(cpus[name]), 1),
        }

    res = {k: summary(k) for k in times}
    n_base = min(args.baseline_shards, len(shards))

    def on_base(name: str) -> float:
        return len(shards[0]) * n_base / sum(times[name][:n_base])

    log("fixed cost: the same shards moved off the extract (every query returns nothing)")
    empty = [shifted(s, 3.0) for s in shards[: max(args.baseline_shards, 3)]]
    fixed: dict[str, list[float]] = {"ours": [], "shared_db": []}
    for chips in empty:
        for name, fn in (("ours", run_ours), ("shared_db", run_shared)):
            t0 = time.perf_counter()
            fn(chips, root)
            fixed[name].append(time.perf_counter() - t0)
    fixed_res = {
        k: {
            "median_shard_s": round(median(v), 4),
            "max_chips_per_s": round(len(shards[0]) / median(v), 1),
        }
        for k, v in fixed.items()
    }
    log("building query variants (SQL) on the baseline shards")
    sql_res = building_sql_experiments(
        root, [_unique_grids(s) for s in shards[: max(args.baseline_shards, 3)]]
    )
    log("profiling ours and shared_db shard by shard")
    prof_ours = [profile_shard(s, root, shared=False) for s in shards]
    prof_shared = [profile_shard(s, root, shared=True) for s in shards]

    def agg(profs: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(profs)
        keys = ("total_s", "connect_load_s", "describe_s", "queries_s", "rest_s")
        out: dict[str, Any] = {
            f"{k}_per_shard": round(sum(p[k] for p in profs) / n, 4) for k in keys
        }
        total = sum(p["total_s"] for p in profs)
        out["share"] = {k: round(sum(p[k] for p in profs) / total, 3) for k in keys[1:]}
        out["per_type_query_ms_per_shard"] = {
            t: round(1000 * sum(p["per_type"][t]["query_s"] for p in profs) / n, 1)
            for t in profs[0]["per_type"]
        }
        out["per_type_rows_per_shard"] = {
            t: round(sum(p["per_type"][t]["rows"] for p in profs) / n, 1)
            for t in profs[0]["per_type"]
        }
        return out

    result = {
        "benchmark": "overture_join",
        "machine": info_machine,
        "extract": {"root": str(root), **info},
        "params": {
            "shards": len(shards),
            "chips_per_shard": len(shards[0]),
            "distinct_grids_per_shard": round(float(np.mean(distinct)), 1),
            "baseline_shards": n_base,
            "planned_shards_over_area": planned,
        },
        "chips_with_context_differing_from_ours": differing,
        "variants": res,
        "ratios": {
            "shared_db_over_ours": round(
                res["shared_db"]["chips_per_s"] / res["ours"]["chips_per_s"], 2
            ),
            "ours_over_no_dedup": round(
                res["ours"]["chips_per_s"] / res["no_dedup"]["chips_per_s"], 2
            ),
            "note": "baselines are compared on the same (first baseline_shards) shards",
            "ours_over_per_chip": round(on_base("ours") / on_base("per_chip"), 2),
            "ours_over_no_pushdown": round(on_base("ours") / on_base("no_pushdown"), 2),
            "shared_db_over_per_chip": round(on_base("shared_db") / on_base("per_chip"), 2),
            "shared_db_over_no_pushdown": round(on_base("shared_db") / on_base("no_pushdown"), 2),
        },
        "target_chips_per_s": 5000,
        "fixed_cost_empty_area": fixed_res,
        "building_query_variants": sql_res,
        "profile_ours": agg(prof_ours),
        "profile_shared_db": agg(prof_shared),
        "row_groups": row_groups_touched(root, shards),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
