"""Overture join throughput: ``pipeline.stages.context.map_context`` in chips/s, >= 1M features.

The extract is synthetic but laid out like an Overture release and like the demo's extract
(``pipeline.demo.overture``: same per-type schemas, GeoParquet 1.1 ``geo`` metadata with a
``bbox`` covering, float32 bboxes rounded outward): a hive tree ``theme=*/type=*/part-*.parquet``
over a 1 x 1 degree area (default lon 10-11, lat 47-48, ~8,300 km2), rows of each type sorted
along a Z-order curve and written in row groups of 65,536 rows, so the constant bbox predicate
of each query can skip row groups. Mostly buildings (small rotated rectangles clustered in
~400 towns) and land cover (irregular 20-gons tiling the area), plus roads/rails, land use,
water, places, infrastructure and land points. It is generated once into ``/tmp`` and reused.

The chips are the pipeline's own plan for a run over that area (``plan_shards``: default
spacing 1950 m, four seasons, 64 samples per shard, Z-ordered; 16 distinct grids per shard).

Variants (``ours`` = ``pipeline.stages.context.map_context``; the baseline ``v0`` =
``pipeline/context.py`` at 85e58ef, imported from git history by ``module_at``: one DuckDB
spatial query per type per shard, clipping every (feature, chip) pair in lon/lat, DuckDB
connect + LOAD per shard):

* consecutive shards from the middle of the plan, in order, as a run takes them:
  ``ours_run`` (row-group cache starting empty, as in a run), ``ours_cold`` (cache emptied
  before every shard: the worst case), ``v0``, ``v0_shared`` (v0 with one DuckDB connection per
  process: issue-4 item 1 alone), and ``ours_run`` with 2 threads (``runtime.workers: 2``);
* shards spread evenly over the whole plan (little reuse between them): ``v0``, ``ours_run``;
* shard size: consecutive shards merged into shards of 64, 256, 1024 chips;
* fixed cost: the same chips moved off the extract (nothing found).

Outputs are compared (chips differing from v0, largest share difference, building counts),
and a profiled pass of ``ours_run`` splits a shard's time into reading + decoding row groups,
filtering + decoding/projecting features, clipping, accumulating, and the rest.

Run: ``.venv/bin/python -m benchmarks.overture_join [--features 1000000] [--shards 16]``
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

from benchmarks._common import emit, log, machine

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
    from pipeline.demo.overture import _NAMES_TYPE

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
    from pipeline.dataset.geoparquet import geo_metadata
    from pipeline.demo.overture import _COMMON_FIELDS, _TYPE_FIELDS, _f32_outward
    from pipeline.geo.zorder import extent_zorder

    n = len(geoms)
    bounds = shapely.bounds(geoms)
    order = np.argsort(
        extent_zorder((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2),
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
    types = sorted({type_names[int(t)] for t in np.unique(shapely.get_type_id(geoms))})
    table = table.replace_schema_metadata({"geo": geo_metadata(table, types)})
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
    from pipeline.core.types import ChipArea
    from pipeline.geo.grid import chip_grid, utm_crs

    config = demo_config(**{"region.bbox": list(bbox)})
    from pipeline.stages.sampling import plan_shards

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


def _grid_key(grid: Any) -> tuple[Any, ...]:
    return (grid.crs, tuple(grid.transform)[:6], grid.size)


def row_groups_touched(root: Path, chips_by_shard: list[list[Any]]) -> dict[str, Any]:
    """Per type: row groups whose bbox statistics overlap a shard's extent (mean), of all."""
    from pipeline.io.overture import OVERTURE_TYPES
    from pipeline.stages.context import _type_glob

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
    from pipeline.core.types import ChipArea
    from pipeline.geo.grid import transformer

    out = []
    for c in chips:
        lon, lat = transformer(c.grid.crs, "EPSG:4326").transform(*c.grid.transform * (0, 0))
        x, y = transformer("EPSG:4326", c.grid.crs).transform(lon + dlon, lat)
        t = c.grid.transform
        grid = dataclasses.replace(c.grid, transform=type(t)(t.a, t.b, x, t.d, t.e, y))
        out.append(ChipArea(c.sample_id, grid))
    return out


def _v0() -> Any:
    from benchmarks._common import module_at

    return module_at("85e58ef", "pipeline/context.py")


_SHARED: dict[str, Any] = {}


def _shared_cursor(*, httpfs: bool = False) -> Any:
    """A cursor on one process-wide DuckDB connection (spatial loaded once): issue-4 item 1."""
    con = _SHARED.get("con")
    if con is None:
        con = _SHARED["con"] = _V0_CONNECT[0](httpfs=httpfs)
    return con.cursor()


_V0_CONNECT: list[Any] = []


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
    from pipeline.stages.context import map_context

    return map_context(chips, root)


def run_ours_cold(chips: list[Any], root: Path) -> dict[str, Any]:
    """``map_context`` with the row-group cache emptied first (every row group read again)."""
    from pipeline.stages import context as context

    context._CACHE.clear()
    context._CACHE_BYTES[0] = 0
    return context.map_context(chips, root)


def run_v0(chips: list[Any], root: Path) -> dict[str, Any]:
    """The baseline: map_context as of 85e58ef (DuckDB spatial, connect + LOAD per shard)."""
    return dict(_v0().map_context(chips, root))


def run_v0_shared(chips: list[Any], root: Path) -> dict[str, Any]:
    """The baseline with one DuckDB connection per process (issue-4 item 1 alone)."""
    v0 = _v0()
    with patched(v0, "connect_duckdb", _shared_cursor):
        return dict(v0.map_context(chips, root))


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """How two results' contexts differ: chips differing, largest share / count differences."""
    out = {"chips": len(a), "differing": 0, "max_share_diff": 0.0, "max_building_count_diff": 0}
    out.update(same_classes_tags_names=0, same_named_feature_keys=0)
    for k in a:
        ra, rb = a[k].to_row(), b[k].to_row()
        out["differing"] += ra != rb or (a[k].tags, a[k].names) != (b[k].tags, b[k].names)
        out["same_classes_tags_names"] += (a[k].classes, a[k].tags, a[k].names) == (
            b[k].classes,
            b[k].tags,
            b[k].names,
        )
        keys = [{(f["name"], f["kind"]) for f in r["named_features"]} for r in (ra, rb)]
        out["same_named_feature_keys"] += keys[0] == keys[1]
        out["max_building_count_diff"] = max(
            out["max_building_count_diff"], abs(ra["building_count"] - rb["building_count"])
        )
        for key in ("land_cover", "land_use"):
            sa = {i["class"]: i["share"] for i in ra[key]}
            sb = {i["class"]: i["share"] for i in rb[key]}
            for c in sa.keys() | sb.keys():
                d = abs(sa.get(c, 0.0) - sb.get(c, 0.0))
                out["max_share_diff"] = max(out["max_share_diff"], round(d, 4))
        d = abs(ra["building_share"] - rb["building_share"])
        out["max_share_diff"] = max(out["max_share_diff"], round(d, 4))
    return out


def profile_ours(shards: list[list[Any]], root: Path) -> dict[str, Any]:
    """Where a shard's time goes in ``map_context``, over consecutive shards (cache as in a run)."""
    from pipeline.stages import context as context

    t: dict[str, float] = {"read_decode_row_groups": 0.0, "fetch_filter_project": 0.0}
    t.update(clip=0.0, accumulate=0.0)
    rows = {"features": 0, "pieces": 0}
    fetch, clip, acc, row_group = (
        context._fetch_type,
        context._clip_to_chips,
        context._accumulate,
        context._row_group,
    )

    def t_row_group(*a: Any) -> Any:
        t0 = time.perf_counter()
        out = row_group(*a)
        t["read_decode_row_groups"] += time.perf_counter() - t0
        return out

    def t_fetch(*a: Any) -> Any:
        r0, t0 = t["read_decode_row_groups"], time.perf_counter()
        out = fetch(*a)
        t["fetch_filter_project"] += time.perf_counter() - t0 - (t["read_decode_row_groups"] - r0)
        if out is not None:
            rows["features"] += out[0].num_rows
        return out

    def t_clip(*a: Any) -> Any:
        t0 = time.perf_counter()
        out = clip(*a)
        t["clip"] += time.perf_counter() - t0
        rows["pieces"] += len(out.feature)
        return out

    def t_acc(*a: Any) -> Any:
        t0 = time.perf_counter()
        out = acc(*a)
        t["accumulate"] += time.perf_counter() - t0
        return out

    run_ours_cold([], root)
    total = 0.0
    with contextlib.ExitStack() as stack:
        for name, fn in (
            ("_fetch_type", t_fetch),
            ("_clip_to_chips", t_clip),
            ("_accumulate", t_acc),
            ("_row_group", t_row_group),
        ):
            stack.enter_context(patched(context, name, fn))
        for chips in shards:
            t0 = time.perf_counter()
            context.map_context(chips, root)
            total += time.perf_counter() - t0
    n = len(shards)
    t["rest"] = total - sum(t.values())
    return {
        "shards": n,
        "ms_per_shard": round(1000 * total / n, 1),
        "parts_ms_per_shard": {k: round(1000 * v / n, 1) for k, v in t.items()},
        "share": {k: round(v / total, 3) for k, v in t.items()},
        "features_per_shard": round(rows["features"] / n, 1),
        "pieces_per_shard": round(rows["pieces"] / n, 1),
    }


def timed(fn: Callable[[list[Any], Path], Any], shards: list[list[Any]], root: Path) -> Any:
    """(results, wall s, CPU s) of ``fn`` over ``shards`` one after the other."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = [fn(chips, root) for chips in shards]
    return out, time.perf_counter() - t0, time.process_time() - c0


def summary(n_chips: int, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "chips": n_chips,
        "wall_s": round(wall, 3),
        "chips_per_s": round(n_chips / wall, 1),
        "cpu_s": round(cpu, 3),
        "chips_per_cpu_s": round(n_chips / cpu, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--bbox", type=float, nargs=4, default=DEFAULT_BBOX)
    parser.add_argument("--shards", type=int, default=16, help="consecutive 64-chip shards")
    parser.add_argument("--spread-shards", type=int, default=8, help="shards spread over the plan")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/eocap-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    from concurrent.futures import ThreadPoolExecutor

    _V0_CONNECT.append(_v0().connect_duckdb)
    info_machine = machine()  # before the work: load average at start
    bbox = (args.bbox[0], args.bbox[1], args.bbox[2], args.bbox[3])
    root, info = ensure_extract(args.cache_dir, bbox, args.features, args.seed)
    every, planned = plan_chip_shards(bbox, 10**9)
    start = len(every) // 3  # consecutive shards from the middle of the plan, as a run takes them
    need = max(args.shards, max(args.sizes) // 64)
    consecutive = every[start : start + need]
    step = max(1, len(every) // args.spread_shards)
    spread = every[::step][: args.spread_shards]
    log(f"{len(every)} planned shards; {len(consecutive)} consecutive, {len(spread)} spread")
    run_v0_shared(spread[0][:4], root)  # warm-up: page cache, the shared connection
    run_v0(spread[0][:4], root)
    run_ours_cold(spread[0][:4], root)

    res: dict[str, Any] = {}
    outputs: dict[str, list[Any]] = {}
    # 1. Consecutive shards (a run's order): ours with its cache as in a run, ours with the
    # cache emptied before each shard, the baseline, the baseline with a shared connection.
    series = consecutive[: args.shards]
    n = 64 * len(series)
    order = ["v0", "ours_run", "ours_cold", "v0_shared"]
    fns = {"ours_run": run_ours, "ours_cold": run_ours_cold, "v0": run_v0}
    fns["v0_shared"] = run_v0_shared
    for name in order:
        if name == "ours_run":
            run_ours_cold([], root)  # the run starts with an empty cache
        log(f"consecutive: {name}")
        outputs[name], wall, cpu = timed(fns[name], series, root)
        res[f"consecutive_{name}"] = summary(n, wall, cpu)
    # Two shards at a time, as runtime.workers=2 runs them (threads, one process, one cache).
    run_ours_cold([], root)
    log("consecutive: ours_run, 2 threads")
    c0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda c: run_ours(c, root), series))
    res["consecutive_ours_run_2_threads"] = summary(
        n, time.perf_counter() - t0, time.process_time() - c0
    )
    # 2. Shards spread over the whole plan: little reuse between them.
    for name in ("v0", "ours_run"):
        if name == "ours_run":
            run_ours_cold([], root)
        log(f"spread: {name}")
        outputs[f"spread_{name}"], wall, cpu = timed(fns[name], spread, root)
        res[f"spread_{name}"] = summary(64 * len(spread), wall, cpu)
    # 3. Shard size: consecutive shards merged into one shard of 64, 256, 1024 chips.
    by_size: dict[str, Any] = {}
    for size in args.sizes:
        k = size // 64
        starts = range(0, len(consecutive) - k + 1, k)
        groups = [[c for sh in consecutive[i : i + k] for c in sh] for i in starts]
        row: dict[str, Any] = {"shards": len(groups)}
        for name, fn in (("v0", run_v0), ("ours_cold", run_ours_cold), ("ours_run", run_ours)):
            if name == "ours_run":
                run_ours_cold([], root)
            log(f"shard size {size}: {name}")
            _, wall, cpu = timed(fn, groups, root)
            row[name] = summary(size * len(groups), wall, cpu)
        by_size[str(size)] = row
    # 4. Fixed cost: the same chips moved off the extract (nothing found).
    empty = [shifted(s, 3.0) for s in series[:4]]
    fixed = {}
    for name, fn in (("v0", run_v0), ("v0_shared", run_v0_shared), ("ours", run_ours)):
        _, wall, _cpu = timed(fn, empty, root)
        fixed[name] = {
            "ms_per_shard": round(1000 * wall / len(empty), 1),
            "max_chips_per_s": round(64 * len(empty) / wall, 1),
        }
    log("profile of ours over the consecutive shards")
    prof = profile_ours(series, root)

    def ratio(a: str, b: str) -> float:
        return round(res[a]["chips_per_s"] / res[b]["chips_per_s"], 2)

    diffs = {
        "ours_run_vs_v0": compare(
            {k: v for d in outputs["v0"] for k, v in d.items()},
            {k: v for d in outputs["ours_run"] for k, v in d.items()},
        ),
        "ours_cold_vs_ours_run_identical": all(
            a == b for a, b in zip(outputs["ours_cold"], outputs["ours_run"], strict=True)
        ),
    }
    result = {
        "benchmark": "overture_join",
        "machine": info_machine,
        "extract": {"root": str(root), **info},
        "params": {
            "consecutive_shards": len(series),
            "spread_shards": len(spread),
            "chips_per_shard": 64,
            "distinct_grids_per_shard": round(
                float(np.mean([len({_grid_key(c.grid) for c in s}) for s in series])), 1
            ),
            "planned_shards_over_area": planned,
            "baseline": "pipeline/context.py at 85e58ef (git show)",
        },
        "variants": res,
        "ratios": {
            "ours_run_over_v0": ratio("consecutive_ours_run", "consecutive_v0"),
            "ours_cold_over_v0": ratio("consecutive_ours_cold", "consecutive_v0"),
            "v0_shared_over_v0": ratio("consecutive_v0_shared", "consecutive_v0"),
            "ours_run_2_threads_over_v0": ratio("consecutive_ours_run_2_threads", "consecutive_v0"),
            "spread_ours_run_over_v0": ratio("spread_ours_run", "spread_v0"),
        },
        "by_shard_size": by_size,
        "target_chips_per_s": 5000,
        "fixed_cost_empty_area": fixed,
        "profile_ours_run": prof,
        "context_differences": diffs,
        "row_groups": row_groups_touched(root, series),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
