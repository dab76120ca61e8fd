"""Map context: what Overture Maps says lies in each chip, from one scan per type per shard.

For every Overture type, the row groups of the extract whose ``bbox`` statistics overlap the
shard's extent are read (pyarrow) into a per-process cache of decoded row groups; the features
whose ``bbox`` overlaps a chip are taken from it, decoded and projected to the chip's UTM CRS
once per process (shapely, pyproj; kept in the cache), and clipped to the chip's exact UTM
rectangle (features inside it are not cut). Areas, lengths and centroids are vectorised; shares
per class, building counts and road lengths are summed with numpy, and Python only builds the
named features. The result per chip: area share per land-cover and land-use class, water
bodies, building count and footprint share, road length per class, named features with where
they lie in the chip, and the ``classes`` / ``tags`` / ``names`` fields of the Llama3-MS-CLIP
release. Consecutive (Z-ordered) shards touch the same row groups, so the cache makes a warm
shard cost a fraction of a cold one; its size is :data:`FEATURE_CACHE_BYTES` per process.

Remote releases (``s3://...``) are extracted to a local hive tree once per run for the
bounding boxes of the run's region (:func:`prepare_overture`); chips are never joined against
S3 directly.

The columns read per type are defined once, in :data:`OVERTURE_COLUMNS`: the reader takes them
from it, and :func:`check_overture` checks every file's schema against it before a run, so a
column that a release renames or drops is an error, never a silent NULL.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from pipeline.core.config import OvertureConfig
from pipeline.core.errors import PreflightError
from pipeline.core.types import ChipArea, MapContext, NamedFeature, ShareItem
from pipeline.geo.grid import ChipGrid, transformer
from pipeline.io.duckdb import connect_duckdb
from pipeline.io.overture import OVERTURE_COLUMNS, OVERTURE_TYPES, TypeColumns, available_releases

__all__ = [
    "OVERTURE_COLUMNS",
    "OVERTURE_TYPES",
    "ChipArea",
    "MapContext",
    "NamedFeature",
    "ShareItem",
    "TypeColumns",
    "check_overture",
    "check_overture_covers",
    "connect_duckdb",
    "map_context",
    "position_name",
    "prepare_overture",
]


POSITIONS = (
    ("north-west", "north", "north-east"),
    ("west", "centre", "east"),
    ("south-west", "south", "south-east"),
)
MIN_SHARE = 0.01
"""Land-cover / land-use classes below this share of a chip are left out of the facts."""


def _type_glob(root: str, type_name: str) -> str:
    return f"{root.rstrip('/')}/theme={OVERTURE_TYPES[type_name]}/type={type_name}/*.parquet"


def _type_files(root: Path, type_name: str) -> list[Path]:
    return sorted(Path(_type_glob(str(root), type_name)).parent.glob("*.parquet"))


def _schema_columns(schema: pa.Schema) -> set[str]:
    """Column names of a schema, with ``struct.field`` for the fields of top-level structs."""
    cols: set[str] = set()
    for fld in schema:
        cols.add(fld.name)
        if pa.types.is_struct(fld.type):
            cols.update(f"{fld.name}.{sub.name}" for sub in fld.type)
    return cols


def _class_columns(type_name: str, present: set[str], where: str) -> tuple[str, ...]:
    """The class columns of ``type_name`` found in ``present``, in order of precedence.

    Raises:
        PreflightError: naming the type and every column eocap reads that ``present`` lacks.
    """
    spec = OVERTURE_COLUMNS[type_name]
    missing = [c for c in spec.required() if c not in present]
    classes = tuple(c for c in spec.cls if c in present)
    if not classes:
        missing.append(" or ".join(spec.cls))
    if missing:
        raise PreflightError(
            "overture.source",
            f"Overture type {type_name} in {where} lacks column(s) {', '.join(missing)} that "
            "eocap reads (pipeline/io/overture.py OVERTURE_COLUMNS): a schema eocap does not know",
        )
    return classes


def check_overture(cfg: OvertureConfig) -> None:
    """Fail fast if the release is missing or its files lack a column that eocap reads.

    Only schemas are read: each local file's Parquet footer, or for a remote release one
    file's schema per type (DuckDB httpfs). ``cfg.release`` must be resolved (not ``latest``).

    Raises:
        PreflightError: naming ``overture.release`` (a release the source does not hold; the
            message lists those it does), ``overture.source`` (no data, or a missing column)
            or ``overture.catalog_url``.
    """
    if cfg.has_releases:
        releases = available_releases(cfg)
        if cfg.release not in releases:
            where = f"Overture's catalog {cfg.catalog_url}" if cfg.is_remote else cfg.releases_root
            raise PreflightError(
                "overture.release",
                f"release {cfg.release} is not in {where}; available: "
                f"{', '.join(releases) or 'none'}",
            )
    if cfg.is_remote:
        _check_remote(cfg.root)
        return
    root = Path(cfg.root)
    if not root.is_dir():
        raise PreflightError("overture.source", f"Overture folder {root} does not exist")
    found = False
    for type_name in OVERTURE_COLUMNS:
        for path in _type_files(root, type_name):
            found = True
            _class_columns(type_name, _schema_columns(pq.read_schema(path)), str(path))
    if not found:
        raise PreflightError(
            "overture.source",
            f"{root} has no theme=*/type=*/*.parquet files of types {list(OVERTURE_TYPES)}",
        )


COVER_MARGIN_DEG = 0.05
"""Degrees around a region box within which a local Overture copy must hold features."""


def check_overture_covers(
    cfg: OvertureConfig, boxes: Sequence[tuple[float, float, float, float]]
) -> None:
    """Fail fast if a local Overture copy holds nothing near the region.

    A copy made for another place (the demo's, left in a production config) gives every chip
    an empty map context, so captions lose their map facts without an error. Each file's
    Parquet footer says where its features are (row-group statistics of ``bbox``); if none
    reaches a region box, the run is refused. Files without statistics pass; a remote release
    is global.

    Args:
        cfg: The Overture settings.
        boxes: The region's lon/lat boxes (one per side of the antimeridian).

    Raises:
        PreflightError: naming ``overture.source``, with where the copy's features are.
    """
    if cfg.is_remote:
        return
    root = Path(cfg.root)
    extents = []
    try:
        for type_name in OVERTURE_COLUMNS:
            for path in _type_files(root, type_name):
                extent = _footer_extent(path)
                if extent is not None:
                    extents.append(extent)
    except _NoStatistics:
        return  # the footers cannot tell

    m = COVER_MARGIN_DEG
    for x0, y0, x1, y1 in extents:
        for bx0, by0, bx1, by1 in boxes:
            if x0 <= bx1 + m and x1 >= bx0 - m and y0 <= by1 + m and y1 >= by0 - m:
                return
    if not extents:
        return
    west, south = min(e[0] for e in extents), min(e[1] for e in extents)
    east, north = max(e[2] for e in extents), max(e[3] for e in extents)
    raise PreflightError(
        "overture.source",
        f"{root} holds features in lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f}, "
        f"none near the region ({', '.join(str(tuple(round(v, 3) for v in b)) for b in boxes)}): "
        "give a copy that covers it, or Overture's release (s3://overturemaps-us-west-2/release)",
    )


class _NoStatistics(Exception):
    """A file's footer has no min/max statistics of ``bbox``."""


def _footer_extent(path: Path) -> tuple[float, float, float, float] | None:
    """Where a file's features are, from its row-group statistics of ``bbox``.

    Returns:
        (west, south, east, north); None for a file without rows.

    Raises:
        _NoStatistics: when the statistics are missing.
    """
    meta = pq.ParquetFile(path).metadata
    if meta.num_rows == 0:
        return None
    wanted = {"bbox.xmin": min, "bbox.ymin": min, "bbox.xmax": max, "bbox.ymax": max}
    found: dict[str, float] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema
            if name not in wanted:
                continue
            stats = column.statistics
            if stats is None or not stats.has_min_max:
                raise _NoStatistics(name)
            value = float(stats.min if wanted[name] is min else stats.max)
            found[name] = wanted[name](found.get(name, value), value)
    if len(found) < len(wanted):
        raise _NoStatistics(str(path))
    return (found["bbox.xmin"], found["bbox.ymin"], found["bbox.xmax"], found["bbox.ymax"])


def _check_remote(root: str) -> None:
    """Check one file's schema per type of a remote release (reads no rows)."""
    con = connect_duckdb(httpfs=True)
    for type_name in OVERTURE_COLUMNS:
        glob = _type_glob(root, type_name)
        try:
            empty = con.execute(f"SELECT * FROM read_parquet('{glob}') LIMIT 0").arrow()
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise PreflightError("overture.source", f"cannot read {glob}: {first}") from None
        _class_columns(type_name, _schema_columns(empty.schema), glob)


def prepare_overture(
    cfg: OvertureConfig, boxes: Sequence[tuple[float, float, float, float]], extract_dir: Path
) -> Path:
    """The local Overture root to join chips against.

    A local source is used in place. A remote release is filtered to the lon/lat ``boxes``
    (the region's pieces, two for a region across the antimeridian; plus a margin each) and
    copied to ``extract_dir`` once (a run's is
    :meth:`pipeline.dataset.layout.DatasetLayout.overture_extract`); a finished extract is
    reused.
    """
    if not cfg.is_remote:
        return Path(cfg.root)
    if (extract_dir / "_SUCCESS").exists():
        return extract_dir
    con = connect_duckdb(httpfs=cfg.source.startswith(("s3://", "http")))
    overlaps = " OR ".join(
        f"(bbox.xmin <= {x1 + 0.05} AND bbox.xmax >= {x0 - 0.05} "
        f"AND bbox.ymin <= {y1 + 0.05} AND bbox.ymax >= {y0 - 0.05})"
        for x0, y0, x1, y1 in boxes
    )
    for type_name in OVERTURE_TYPES:
        target = extract_dir / f"theme={OVERTURE_TYPES[type_name]}" / f"type={type_name}"
        target.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{_type_glob(cfg.root, type_name)}', "
            f"hive_partitioning=false) WHERE {overlaps}) "
            f"TO '{target / 'part-00000.parquet'}' (FORMAT parquet)"
        )
    (extract_dir / "_SUCCESS").write_text(
        json.dumps({"source": cfg.root, "boxes": [list(b) for b in boxes]})
    )
    return extract_dir


def position_name(grid: ChipGrid, x: float, y: float) -> str:
    """Which of the nine cells of the chip a point (in the chip CRS) falls in."""
    x0, y0, x1, y1 = grid.bounds
    col = min(max(int(3 * (x - x0) / (x1 - x0)), 0), 2)
    row = min(max(int(3 * (y1 - y) / (y1 - y0)), 0), 2)
    return POSITIONS[row][col]


_POSITION_ARRAY = np.array(POSITIONS, dtype=object)


def _positions(bounds: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`position_name` for many points; ``bounds`` (n, 4) are each point's chip's."""
    x0, y0, x1, y1 = bounds.T
    col = np.clip(np.floor(3 * (x - x0) / (x1 - x0)), 0, 2).astype(np.int64)
    row = np.clip(np.floor(3 * (y1 - y) / (y1 - y0)), 0, 2).astype(np.int64)
    out: np.ndarray = _POSITION_ARRAY[row, col]
    return out


_SHARE_TYPES = ("land_cover", "land_use")
_BBOX_MARGIN_DEG = 1e-5
"""Chip lon/lat bounds are widened by this (~1 m) before the bbox predicates."""


FEATURE_CACHE_BYTES = 512 * 2**20
"""Decoded Overture row groups kept per process (LRU by bytes), shared by the shard threads.

Shards are Z-ordered, so consecutive shards touch the same row groups of an extract: a row
group is read and decoded once and then filtered in memory for every shard that overlaps it.
"""


@dataclass(frozen=True)
class _TypeFile:
    """What the context needs to know of one Parquet file of a type (read once per version)."""

    spec: TypeColumns
    cls_columns: tuple[str, ...]  # the spec's class columns the file has, by precedence
    row_group_bboxes: tuple[tuple[float, float, float, float] | None, ...]  # None: no stats

    @property
    def columns(self) -> list[str]:
        """What pyarrow reads: geometry, bbox, the class columns, subtype, name, tags."""
        wanted = ["geometry", "bbox", *self.cls_columns, *self.spec.attributes()]
        return list(dict.fromkeys(wanted))


@lru_cache(maxsize=256)
def _type_file(path: str, type_name: str, mtime_ns: int, size: int) -> _TypeFile:
    pf = pq.ParquetFile(path)
    cls_columns = _class_columns(type_name, _schema_columns(pf.schema_arrow), path)
    md = pf.metadata
    paths = [md.schema.column(i).path for i in range(md.num_columns)]
    idx = {k: paths.index(f"bbox.{k}") for k in ("xmin", "ymin", "xmax", "ymax")}
    boxes: list[tuple[float, float, float, float] | None] = []
    for g in range(md.num_row_groups):
        st = {k: md.row_group(g).column(i).statistics for k, i in idx.items()}
        if all(s is not None and s.has_min_max for s in st.values()):
            boxes.append((st["xmin"].min, st["ymin"].min, st["xmax"].max, st["ymax"].max))
        else:
            boxes.append(None)
    return _TypeFile(OVERTURE_COLUMNS[type_name], cls_columns, tuple(boxes))


@dataclass
class _RowGroup:
    table: pa.Table  # geometry (WKB), cls, sub, name[, tags]
    bbox: np.ndarray  # (n, 4) xmin, ymin, xmax, ymax as stored (float32 rounded outward)
    projected: dict[str, np.ndarray] = field(default_factory=dict)
    """Per CRS: shapely geometries in that CRS, decoded and projected on first use (else None)."""

    @property
    def nbytes(self) -> int:
        # Shapely geometries: ~2x their WKB plus ~100 bytes of object each (estimate).
        geo = 2 * self.table["geometry"].nbytes + 100 * self.table.num_rows
        return int(self.table.nbytes + self.bbox.nbytes + geo * len(self.projected))

    def geometries(self, rows: np.ndarray, crs: str) -> np.ndarray:
        """The features ``rows`` in ``crs``; each feature is decoded and projected once."""
        with _CACHE_LOCK:
            if crs not in self.projected:
                self.projected[crs] = np.full(self.table.num_rows, None, dtype=object)
                _CACHE_BYTES[0] += self.nbytes // len(self.projected)
            out = self.projected[crs]
        todo = rows[shapely.is_missing(out[rows])]
        if len(todo):
            wkb = self.table["geometry"].take(todo).to_numpy(zero_copy_only=False)
            tr = transformer("EPSG:4326", crs)
            out[todo] = shapely.transform(
                shapely.from_wkb(wkb),
                lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])),
            )
        picked: np.ndarray = out[rows]
        return picked


_CACHE: OrderedDict[tuple[str, int, int], _RowGroup] = OrderedDict()
_CACHE_BYTES = [0]
_CACHE_LOCK = threading.Lock()


def _row_group(path: str, mtime_ns: int, group: int, info: _TypeFile) -> _RowGroup:
    key = (path, mtime_ns, group)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    raw = pq.ParquetFile(path).read_row_group(group, columns=info.columns)
    n = raw.num_rows
    bb = raw["bbox"].combine_chunks()
    bbox = np.column_stack(
        [bb.field(k).to_numpy(zero_copy_only=False) for k in ("xmin", "ymin", "xmax", "ymax")]
    ).astype(np.float64)
    null = pa.nulls(n, pa.string())
    spec = info.spec

    def text(col: str) -> pa.Array:
        top, _, sub = col.partition(".")
        arr = raw[top].combine_chunks()
        if sub:
            arr = pc.struct_field(arr, sub)
        return arr.cast(pa.string())

    cols = {
        "geometry": raw["geometry"].combine_chunks(),
        "cls": pc.coalesce(*(text(c) for c in info.cls_columns)),
        "sub": text("subtype") if spec.subtype else null,
        "name": text("names.primary") if spec.name else null,
    }
    if spec.tags:
        cols["tags"] = raw["source_tags"].combine_chunks()
    rg = _RowGroup(pa.table(cols), bbox)
    size = rg.nbytes
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = rg
            _CACHE_BYTES[0] += size
            while _CACHE_BYTES[0] > FEATURE_CACHE_BYTES and len(_CACHE) > 1:
                _, old = _CACHE.popitem(last=False)
                _CACHE_BYTES[0] -= old.nbytes
    return rg


def _overlaps(bbox: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Rows of ``bbox`` (n, 4) that overlap any of ``boxes`` (k, 4)."""
    out = np.zeros(len(bbox), bool)
    for x0, y0, x1, y1 in boxes:
        out |= (bbox[:, 0] <= x1) & (bbox[:, 2] >= x0) & (bbox[:, 1] <= y1) & (bbox[:, 3] >= y0)
    return out


def _fetch_type(
    root: Path,
    type_name: str,
    shard_bbox: tuple[float, float, float, float],
    chip_bboxes: list[tuple[float, float, float, float]],
    crss: list[str],
) -> tuple[pa.Table, dict[str, np.ndarray]] | None:
    """The features of one type whose bbox overlaps a chip's lon/lat bounds.

    Returns their attributes (``cls``, ``sub``, ``name``, ``tags``) and their geometries in
    each of ``crss``, or None where there are none.

    Row groups whose ``bbox`` statistics miss the shard's extent are never read; the others
    come from the process's row-group cache and are filtered there by the chips' boxes.
    """
    files = _type_files(root, type_name)
    boxes = np.asarray(chip_bboxes, dtype=np.float64)
    sx0, sy0, sx1, sy1 = shard_bbox
    parts: list[pa.Table] = []
    geoms: dict[str, list[np.ndarray]] = {crs: [] for crs in crss}
    for f in files:
        st = f.stat()
        info = _type_file(str(f), type_name, st.st_mtime_ns, st.st_size)
        for g, b in enumerate(info.row_group_bboxes):
            if b is not None and (b[0] > sx1 or b[2] < sx0 or b[1] > sy1 or b[3] < sy0):
                continue
            rg = _row_group(str(f), st.st_mtime_ns, g, info)
            bb = rg.bbox
            near = np.flatnonzero(
                (bb[:, 0] <= sx1) & (bb[:, 2] >= sx0) & (bb[:, 1] <= sy1) & (bb[:, 3] >= sy0)
            )
            rows = near[_overlaps(bb[near], boxes)]
            if len(rows):
                parts.append(rg.table.drop_columns(["geometry"]).take(rows))
                for crs in crss:
                    geoms[crs].append(rg.geometries(rows, crs))
    if not parts:
        return None
    return pa.concat_tables(parts), {crs: np.concatenate(g) for crs, g in geoms.items()}


@dataclass
class _Pieces:
    """The non-empty parts of features inside chips, one per (feature, chip) pair, in UTM."""

    feature: np.ndarray  # row of the fetched table
    chip: np.ndarray  # index into the shard's distinct chips
    geometry: np.ndarray  # clipped geometry, chip CRS
    area: np.ndarray  # m2
    length: np.ndarray  # m, lines only (0 otherwise)


def _clip_to_chips(projected: dict[str, np.ndarray], chips: list[ChipArea]) -> _Pieces:
    """Clip features (already in each chip CRS) to the chips' exact rectangles.

    Chips are axis-aligned rectangles in their UTM CRS, so a feature whose bounds lie inside
    the rectangle is kept whole and only the rest are cut (GEOS rectangle clipping).
    """
    by_crs: dict[str, list[int]] = {}
    for i, c in enumerate(chips):
        by_crs.setdefault(c.grid.crs, []).append(i)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for crs, idx in by_crs.items():
        utm = projected[crs]
        rects = np.array([chips[i].grid.bounds for i in idx], dtype=np.float64)
        feat, local = shapely.STRtree(shapely.box(*rects.T)).query(utm)
        if not len(feat):
            continue
        fb, cb = shapely.bounds(utm[feat]), rects[local]
        inside = (
            (fb[:, 0] >= cb[:, 0])
            & (fb[:, 1] >= cb[:, 1])
            & (fb[:, 2] <= cb[:, 2])
            & (fb[:, 3] <= cb[:, 3])
        )
        geoms = utm[feat]
        for li in np.unique(local[~inside]):
            cut = (local == li) & ~inside
            geoms[cut] = shapely.clip_by_rect(geoms[cut], *rects[li])
        parts.append((feat, np.asarray(idx, dtype=np.int64)[local], geoms))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return _Pieces(empty, empty, np.empty(0, dtype=object), np.empty(0), np.empty(0))
    feat = np.concatenate([p[0] for p in parts])
    chip = np.concatenate([p[1] for p in parts])
    geoms = np.concatenate([p[2] for p in parts])
    keep = ~shapely.is_empty(geoms)
    feat, chip, geoms = feat[keep], chip[keep], geoms[keep]
    length = np.where(shapely.get_dimensions(geoms) == 1, shapely.length(geoms), 0.0)
    return _Pieces(feat, chip, geoms, shapely.area(geoms), length)


def _codes(values: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Dictionary codes per row and the distinct values."""
    enc = values.dictionary_encode()
    return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_pylist()


def _group_sum(keys: np.ndarray, weights: np.ndarray, n_codes: int) -> list[tuple[int, int, float]]:
    """(chip, code, sum of weights) for every distinct chip * n_codes + code key."""
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = np.bincount(inv, weights=weights, minlength=len(uniq))
    return [
        (int(k) // n_codes, int(k) % n_codes, float(s)) for k, s in zip(uniq, sums, strict=True)
    ]


def _null_if_empty(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _accumulate(
    type_name: str,
    table: pa.Table,
    pieces: _Pieces,
    chips: list[ChipArea],
    chip_area: np.ndarray,
    acc: list[dict[str, Any]],
) -> None:
    """Add one type's pieces to the per-chip accumulators (vectorised; Python per named piece)."""
    n = len(pieces.feature)
    if not n:
        return
    feat, chip = pieces.feature, pieces.chip
    share = pieces.area / chip_area[chip]
    cls_col, sub_col = _null_if_empty(table["cls"]), _null_if_empty(table["sub"])
    kind_col = pc.coalesce(cls_col, sub_col, pa.scalar(type_name))
    kind_code, kinds = _codes(kind_col.combine_chunks())
    kcode = kind_code[feat].astype(np.int64)
    nk = max(len(kinds), 1)
    if type_name in _SHARE_TYPES:
        key = "lc" if type_name == "land_cover" else "lu"
        for ci, k, s in _group_sum(chip * nk + kcode, share, nk):
            d = acc[ci][key]
            d[kinds[k]] = d.get(kinds[k], 0.0) + s
    elif type_name == "building":
        counts = np.bincount(chip, minlength=len(chips))
        areas = np.bincount(chip, weights=share, minlength=len(chips))
        for b in np.flatnonzero(counts):
            acc[int(b)]["bcount"] += int(counts[b])
            acc[int(b)]["barea"] += float(areas[b])
    elif type_name == "segment":
        # Rail and water segments share the type; only roads count as road length.
        is_road = pc.fill_null(pc.equal(table["sub"], "road"), True)
        road = is_road.to_numpy(zero_copy_only=False)[feat]
        km = np.round(pieces.length / 1000, 3)
        for ci, k, s in _group_sum((chip * nk + kcode)[road], km[road], nk):
            d = acc[ci]["roads"]
            d[kinds[k]] = d.get(kinds[k], 0.0) + s

    # Classes and tags: per distinct (chip, kind, class, subtype), or per piece where the
    # features carry their own tags. Land cover / use below MIN_SHARE of the chip do not count.
    counted = np.ones(n, bool) if type_name not in _SHARE_TYPES else share >= MIN_SHARE
    cls_py = table["cls"].to_pylist() if "tags" in table.column_names else None
    if cls_py is not None:
        tags_py = table["tags"].to_pylist()
        sub_py = table["sub"].to_pylist()
        for i in np.flatnonzero(counted):
            f, a = int(feat[i]), acc[int(chip[i])]
            a["classes"].add(kinds[kcode[i]])
            a["tags"].update(_tags_of(type_name, cls_py[f], sub_py[f], dict(tags_py[f] or [])))
    else:
        combo = pc.binary_join_element_wise(
            kind_col, pc.fill_null(table["cls"], ""), pc.fill_null(table["sub"], ""), "\x1f"
        )
        ccode, combos = _codes(combo.combine_chunks())
        nc = max(len(combos), 1)
        keys = np.unique(chip[counted] * nc + ccode[feat[counted]].astype(np.int64))
        for k in keys:
            kind, cls, sub = combos[int(k) % nc].split("\x1f")
            a = acc[int(k) // nc]
            a["classes"].add(kind)
            a["tags"].update(_tags_of(type_name, cls or None, sub or None, None))

    # Named features (and every water body): one NamedFeature per piece.
    names = table["name"].to_numpy(zero_copy_only=False)
    wanted = (
        np.ones(n, bool)
        if type_name == "water"
        else pc.fill_null(pc.not_equal(table["name"], ""), False).to_numpy(zero_copy_only=False)[
            feat
        ]
    )
    idx = np.flatnonzero(wanted)
    if not len(idx):
        return
    cent = shapely.centroid(pieces.geometry[idx])
    positions = _positions(
        np.array([chips[c].grid.bounds for c in chip[idx]]).reshape(-1, 4),
        shapely.get_x(cent),
        shapely.get_y(cent),
    )
    positions[share[idx] > 0.5] = "throughout"
    shares = share[idx].round(4).tolist()
    lengths = (pieces.length[idx] / 1000).round(3).tolist()
    for j, p in enumerate(idx.tolist()):
        ci = int(chip[p])
        name = names[feat[p]]
        nf = NamedFeature(
            name or "", kinds[kcode[p]], type_name, positions[j], shares[j], lengths[j]
        )
        if type_name == "water":
            acc[ci]["water"].append(nf)
        if name:
            acc[ci]["named"].append(nf)


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
    """Describe every chip from the Overture extract in one scan per feature type.

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
    chip_list: list[ChipArea] = []
    for chip in requested:
        key = (chip.grid.crs, tuple(chip.grid.as_list()), chip.grid.size)
        first = by_grid.setdefault(key, chip.sample_id)
        alias[chip.sample_id] = first
        if first == chip.sample_id:
            chip_list.append(chip)
    m = _BBOX_MARGIN_DEG
    chip_bboxes = []
    for chip in chip_list:
        x0, y0, x1, y1 = chip.grid.footprint_lonlat().bounds
        chip_bboxes.append((x0 - m, y0 - m, x1 + m, y1 + m))
    shard_bbox = (
        min(b[0] for b in chip_bboxes),
        min(b[1] for b in chip_bboxes),
        max(b[2] for b in chip_bboxes),
        max(b[3] for b in chip_bboxes),
    )
    crss = sorted({c.grid.crs for c in chip_list})
    chip_area = np.array([(c.grid.size * c.grid.resolution) ** 2 for c in chip_list])
    acc: list[dict[str, Any]] = [
        {
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
        for _ in chip_list
    ]
    for type_name in OVERTURE_TYPES:
        found = _fetch_type(overture_root, type_name, shard_bbox, chip_bboxes, crss)
        if found is None:
            continue
        table, projected = found
        pieces = _clip_to_chips(projected, chip_list)
        _accumulate(type_name, table, pieces, chip_list, chip_area, acc)
    described = {c.sample_id: _finish(a) for c, a in zip(chip_list, acc, strict=True)}
    return {sid: _copy(described[first]) for sid, first in alias.items()}


def _copy(ctx: MapContext) -> MapContext:
    # Items are frozen dataclasses: a copy needs its own lists, not its own items.
    return MapContext(
        land_cover=list(ctx.land_cover),
        land_use=list(ctx.land_use),
        water=list(ctx.water),
        building_count=ctx.building_count,
        building_share=ctx.building_share,
        roads=list(ctx.roads),
        named_features=list(ctx.named_features),
        classes=list(ctx.classes),
        tags=list(ctx.tags),
        names=list(ctx.names),
    )


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
