"""Read what reviewers see from an eocap dataset: sample summaries, chip images, map features.

The app never turns a URL into a file path: chip images are addressed by campaign item, whose
sample id (checked against ``s_`` + hex) names a file in the dataset's ``review/chips`` cache,
written when the item was drawn.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from PIL import Image
from pyproj import Transformer

from pipeline.core.config import OvertureConfig
from pipeline.dataset.columns import SUMMARY_COLUMNS
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import read_rows, read_shard
from pipeline.geo.rgb import stretch_rgb
from pipeline.io.duckdb import connect_duckdb
from pipeline.io.overture import OVERTURE_COLUMNS, OVERTURE_TYPES

__all__ = [
    "ChipFeature",
    "Dataset",
    "DatasetError",
    "FeatureReader",
    "fact_lines",
    "split_sentences",
]

SAMPLE_ID = re.compile(r"^s_[0-9a-f]{16}$")

_FEATURE_TYPES = ("water", "building", "segment", "place", "land_use", "infrastructure")


class DatasetError(ValueError):
    """The directory is not a finished eocap dataset, or a sample is missing from it."""


@dataclass(frozen=True)
class ChipFeature:
    """An Overture feature clipped to a chip, in pixel coordinates (0..size, y down).

    Attributes:
        theme: Overture type (``water``, ``building``, ``segment``, ``place``...).
        kind: Its class (``lake``, ``primary``...).
        name: Primary name, or empty.
        geometry: ``Polygon``/``LineString``/``Point`` (multi-parts split).
        coords: Pixel coordinates: rings for polygons, a line, or one point.
    """

    theme: str
    kind: str
    name: str
    geometry: str
    coords: list[Any]


class Dataset:
    """A finished eocap output directory (``shards/NNNNN.parquet`` with ``_stats``).

    Args:
        root: The run's output directory.
        overture: The Overture tree to draw map features from; by default the run's
            ``overture.source`` (a relative path is taken from the working directory, as the
            run did) or the run's extract of a remote release.

    Raises:
        DatasetError: if it has no finished shards.
    """

    def __init__(self, root: Path, overture: Path | None = None) -> None:
        self.root = Path(root)
        self.layout = DatasetLayout(self.root)
        self._overture = overture
        self.shards: dict[int, Path] = self.layout.finished_shards()
        if not self.shards:
            raise DatasetError(
                f"{self.root} has no finished shards (no stats in {self.layout.stats_dir})"
            )
        run = self.layout.run_json
        self.run: dict[str, Any] = json.loads(run.read_text()) if run.exists() else {}
        self.chips_dir = self.layout.review_chips_dir

    @property
    def overture_root(self) -> Path | None:
        """The local Overture tree the run joined against, if it is still there."""
        if self._overture is not None:
            return self._overture if self._overture.is_dir() else None
        stored = self.run.get("config", {}).get("overture")
        if not stored:
            return None
        cfg = OvertureConfig.model_validate(stored)  # run.json's release is resolved
        path = self.layout.overture_extract(cfg.release) if cfg.is_remote else Path(cfg.root)
        return path if path.is_dir() else None

    def summaries(self) -> Iterator[tuple[int, pa.Table]]:
        """Each shard's summary columns (:data:`pipeline.dataset.columns.SUMMARY_COLUMNS`)."""
        for index, path in self.shards.items():
            yield index, read_shard(path, SUMMARY_COLUMNS)

    def rows(
        self, shard: int, sample_ids: Iterable[str], columns: list[str]
    ) -> dict[str, dict[str, Any]]:
        """Full rows of some samples of one shard, reading it in small batches.

        Raises:
            DatasetError: if the shard or a sample is not in the dataset.
        """
        wanted = set(sample_ids)
        path = self.shards.get(shard)
        if path is None:
            raise DatasetError(f"shard {shard} is not in {self.root}")
        out = read_rows(path, wanted, columns)
        missing = wanted - set(out)
        if missing:
            raise DatasetError(f"samples {sorted(missing)[:3]} are not in shard {shard}")
        return out

    def chip_path(self, sample_id: str, kind: str) -> Path:
        """Where the cached chip image of a sample lies (``true`` or ``false`` colour).

        Raises:
            DatasetError: for anything but a well-formed sample id and a known kind.
        """
        if not SAMPLE_ID.match(sample_id) or kind not in ("true", "false"):
            raise DatasetError("no such chip")
        return self.chips_dir / f"{sample_id}_{kind}.png"

    def cache_chips(self, row: dict[str, Any]) -> None:
        """Write a sample's true-colour (its ``rgb`` PNG) and false-colour (NIR) images."""
        self.chips_dir.mkdir(parents=True, exist_ok=True)
        sid = row["sample_id"]
        true_path = self.chip_path(sid, "true")
        if not true_path.exists() and row.get("rgb") and row["rgb"].get("bytes"):
            true_path.write_bytes(row["rgb"]["bytes"])
        false_path = self.chip_path(sid, "false")
        # rows() reads through read_rows, which decodes the cube (schema 1.2 or 2.0) to numpy.
        if not false_path.exists() and row.get("pixels") is not None:
            false_path.write_bytes(false_colour_png(row["pixels"], row["bands"]))


def false_colour_png(pixels: npt.NDArray[np.uint16], bands: list[str]) -> bytes:
    """NIR / red / green as R / G / B (vegetation red), stretched like the true-colour chip.

    ``pixels`` is one sample's decoded cube (bands, y, x), as :func:`read_rows` returns it.
    """
    cube = np.asarray(pixels, dtype=np.uint16)
    nir = "B08" if "B08" in bands else "B8A"
    stack = np.stack([cube[bands.index(b)] for b in (nir, "B04", "B03")])
    # stretch_rgb stretches the bands it is told are red, green and blue.
    image = stretch_rgb(stack, ("B04", "B03", "B02"))
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _pixel_coords(coords: Any, to_utm: Transformer, inv: tuple[float, ...]) -> Any:
    if coords and isinstance(coords[0], (int, float)):
        x, y = to_utm.transform(coords[0], coords[1])
        a, b, c, d, e, f = inv
        return [round(a * x + b * y + c, 1), round(d * x + e * y + f, 1)]
    return [_pixel_coords(c, to_utm, inv) for c in coords]


def _inverse(transform: list[float]) -> tuple[float, ...]:
    a, b, c, d, e, f = transform
    det = a * e - b * d
    return (e / det, -b / det, (b * f - e * c) / det, -d / det, a / det, (d * c - a * f) / det)


class FeatureReader:
    """Overture features clipped to chips, in pixel coordinates, for the review overlay.

    One DuckDB connection (spatial loaded once) and one schema lookup per type serve every chip
    of a campaign draw. Use as a context manager.

    Args:
        overture_root: Hive tree ``theme=*/type=*/*.parquet``.
        limit: Most features per type and chip (largest first) so a city chip stays drawable.
    """

    def __init__(self, overture_root: Path, *, limit: int = 400) -> None:
        self.limit = limit
        self.con = connect_duckdb()
        # type -> (glob, class expression, name expression), for the types the tree holds.
        self.sources: dict[str, tuple[str, str, str]] = {}
        for type_name in _FEATURE_TYPES:
            folder = overture_root / f"theme={OVERTURE_TYPES[type_name]}" / f"type={type_name}"
            if not any(folder.glob("*.parquet")):
                continue
            glob = str(folder / "*.parquet")
            described = self.con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')")
            cols = {r[0] for r in described.fetchall()}
            # The feature's kind as the context reads it: its class columns, then subtype.
            spec = OVERTURE_COLUMNS[type_name]
            kinds = [*spec.cls, *(("subtype",) if spec.subtype else ())]
            present = [c for c in kinds if c.split(".")[0] in cols]
            kind = f"COALESCE({', '.join(present)})" if present else "NULL"
            name = "names.primary" if "names" in cols else "NULL"
            self.sources[type_name] = (glob, kind, name)

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def features(self, row: dict[str, Any]) -> list[ChipFeature]:
        """The features of one chip (its ``bbox``, ``crs`` and ``transform``)."""
        bbox = row["bbox"]
        x0, y0, x1, y1 = bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]
        to_utm = Transformer.from_crs("EPSG:4326", row["crs"], always_xy=True)
        inv = _inverse(list(row["transform"]))
        out: list[ChipFeature] = []
        for type_name, (glob, kind, name) in self.sources.items():
            sql = f"""
            WITH f AS (
                SELECT {kind}::VARCHAR AS kind, {name}::VARCHAR AS name,
                       ST_Intersection(geometry, ST_MakeEnvelope({x0}, {y0}, {x1}, {y1})) AS g
                FROM read_parquet('{glob}', hive_partitioning=false)
                WHERE bbox.xmin <= {x1} AND bbox.xmax >= {x0}
                  AND bbox.ymin <= {y1} AND bbox.ymax >= {y0}
            )
            SELECT kind, name, ST_AsGeoJSON(g) FROM f WHERE NOT ST_IsEmpty(g)
            ORDER BY ST_Area(g) DESC, ST_Length(g) DESC LIMIT {self.limit}
            """
            for kind_v, name_v, geojson in self.con.execute(sql).fetchall():
                out.extend(
                    _split(type_name, kind_v or "", name_v or "", json.loads(geojson), to_utm, inv)
                )
        return out


def _split(
    theme: str,
    kind: str,
    name: str,
    geom: dict[str, Any],
    to_utm: Transformer,
    inv: tuple[float, ...],
) -> list[ChipFeature]:
    gtype, coords = geom["type"], geom.get("coordinates") or []
    if gtype == "GeometryCollection":
        return [f for g in geom["geometries"] for f in _split(theme, kind, name, g, to_utm, inv)]
    if gtype.startswith("Multi"):
        single = gtype[len("Multi") :]
        return [
            f
            for part in coords
            for f in _split(theme, kind, name, {"type": single, "coordinates": part}, to_utm, inv)
        ]
    return [ChipFeature(theme, kind, name, gtype, _pixel_coords(coords, to_utm, inv))]


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(caption: str) -> list[str]:
    """The caption's sentences: the claims a reviewer can flag one by one."""
    parts = [p.strip() for p in _SENTENCE.split(caption.strip())]
    return [p for p in parts if p]


def _pct(share: float | None) -> str:
    return f"{round(100 * (share or 0.0))}%"


def fact_lines(row: dict[str, Any]) -> list[str]:
    """The map context and chip statistics as short lines for the reviewer."""
    ctx = row.get("context") or {}
    lines = []
    when = row.get("datetime")
    if when is not None:
        lines.append(f"Acquired {when.date().isoformat()} ({row.get('period', '')})")
    for item in ctx.get("land_cover") or []:
        lines.append(f"Land cover: {item['class']} {_pct(item['share'])}")
    for item in ctx.get("land_use") or []:
        lines.append(f"Land use: {item['class']} {_pct(item['share'])}")
    for w in ctx.get("water") or []:
        label = f"{w['kind']} {w['name']}".strip() if w.get("name") else w["kind"]
        lines.append(
            f"Water: {label}, {w['position']}" + (f", {_pct(w['share'])}" if w.get("share") else "")
        )
    if ctx.get("building_count"):
        lines.append(
            f"Buildings: {ctx['building_count']} mapped, "
            f"{_pct(ctx.get('building_share'))} of the area"
        )
    for r in ctx.get("roads") or []:
        lines.append(f"Road: {r['class']}, {r['length_km']:.1f} km")
    for f in ctx.get("named_features") or []:
        if f["theme"] not in ("water",):
            lines.append(f"Named: {f['name']} ({f['kind']}), {f['position']}")
    cloud = row.get("cloud_fraction")
    if cloud is not None and not math.isnan(cloud):
        lines.append(f"Cloud (SCL): {_pct(cloud)}; snow: {_pct(row.get('snow_fraction'))}")
    return lines
