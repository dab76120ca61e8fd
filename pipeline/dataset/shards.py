"""Shards: Parquet files of samples, with GeoParquet and Hugging Face metadata, plus stats.

Every planned sample gets a row, failures included (``status``/``error_reason``/
``error_message``), so a shard always accounts for all its samples. A shard is written to a
temporary file and renamed into place, then its ``_stats/NNNNN_stats.json`` is written the same way:
a shard is done iff its stats file exists (img2dataset's contract).

The schema is documented column by column in ``docs/dataset-schema.md``; keep both in step.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "SCHEMA_VERSION",
    "SampleRecord",
    "ShardStats",
    "radiometry_overruled",
    "read_stats",
    "records_table",
    "shard_paths",
    "shard_schema",
    "table_counts",
    "write_shard",
    "write_stats",
    "write_table",
]

SCHEMA_VERSION = "1.2"
"""Version of the shard schema; bump on any column change."""

_SHARE = pa.struct([("class", pa.string()), ("share", pa.float32())])
_ROAD = pa.struct([("class", pa.string()), ("length_km", pa.float32())])
_FEATURE = pa.struct(
    [
        ("name", pa.string()),
        ("kind", pa.string()),
        ("theme", pa.string()),
        ("position", pa.string()),
        ("share", pa.float32()),
        ("length_km", pa.float32()),
    ]
)
CONTEXT_TYPE = pa.struct(
    [
        ("land_cover", pa.list_(_SHARE)),
        ("land_use", pa.list_(_SHARE)),
        ("water", pa.list_(_FEATURE)),
        ("building_count", pa.int32()),
        ("building_share", pa.float32()),
        ("roads", pa.list_(_ROAD)),
        ("named_features", pa.list_(_FEATURE)),
    ]
)
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _fixed(value_type: pa.DataType, *shape: int) -> pa.DataType:
    for n in reversed(shape):
        value_type = pa.list_(value_type, n)
    return value_type


def shard_schema(n_bands: int, size: int) -> pa.Schema:
    """The Arrow schema of a shard for ``n_bands`` bands of ``size`` x ``size`` pixels."""
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("status", pa.string()),
            ("error_reason", pa.string()),
            ("error_message", pa.string()),
            ("location_id", pa.string()),
            ("location_name", pa.string()),
            ("lon", pa.float64()),
            ("lat", pa.float64()),
            ("geometry", pa.binary()),
            (
                "bbox",
                pa.struct(
                    [
                        ("xmin", pa.float64()),
                        ("ymin", pa.float64()),
                        ("xmax", pa.float64()),
                        ("ymax", pa.float64()),
                    ]
                ),
            ),
            ("crs", pa.string()),
            ("transform", pa.list_(pa.float64(), 6)),
            ("period", pa.string()),
            ("period_start", pa.date32()),
            ("period_end", pa.date32()),
            ("datetime", pa.timestamp("us", tz="UTC")),
            ("stac_item_id", pa.string()),
            ("stac_collection", pa.string()),
            ("scene_cloud_cover", pa.float32()),
            ("scene_rank", pa.int32()),
            ("processing_baseline", pa.string()),
            ("platform", pa.string()),
            ("bands", pa.list_(pa.string())),
            ("band_scale", pa.list_(pa.float32())),
            ("band_offset", pa.list_(pa.float32())),
            ("offset_removed_dn", pa.list_(pa.int32())),
            ("radiometry_rule", pa.string()),
            ("radiometry_check", pa.string()),
            ("radiometry_dark_share", pa.float32()),
            ("pixels", _fixed(pa.uint16(), n_bands, size, size)),
            ("scl", _fixed(pa.uint8(), size, size)),
            ("rgb", IMAGE_TYPE),
            ("nodata_fraction", pa.float32()),
            ("cloud_fraction", pa.float32()),
            ("cloud_shadow_fraction", pa.float32()),
            ("snow_fraction", pa.float32()),
            ("water_fraction", pa.float32()),
            ("ndvi_mean", pa.float32()),
            ("ndwi_mean", pa.float32()),
            ("brightness_mean", pa.float32()),
            ("context", CONTEXT_TYPE),
            ("classes", pa.list_(pa.string())),
            ("tags", pa.list_(pa.string())),
            ("names", pa.list_(pa.string())),
            ("overture_release", pa.string()),
            ("caption", pa.string()),
            ("caption_mentions", pa.list_(pa.string())),
            ("captioner", pa.string()),
            ("prompt_version", pa.string()),
            ("generation_params", pa.string()),
            ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string())]))),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("caption_latency_s", pa.float32()),
            ("caption_flags", pa.list_(pa.string())),
            ("unsupported_claims", pa.list_(pa.string())),
            ("clip_tokens", pa.int32()),
            ("caption_words", pa.int32()),
            ("caption_language", pa.string()),
        ]
    )


@dataclass
class SampleRecord:
    """One row of a shard; fields mirror :func:`shard_schema` (``None`` = null)."""

    sample_id: str
    status: str
    location_id: str
    lon: float
    lat: float
    period: str
    period_start: dt.date
    period_end: dt.date
    location_name: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    geometry: bytes | None = None
    bbox: dict[str, float] | None = None
    crs: str | None = None
    transform: list[float] | None = None
    datetime: dt.datetime | None = None
    stac_item_id: str | None = None
    stac_collection: str | None = None
    scene_cloud_cover: float | None = None
    scene_rank: int | None = None
    processing_baseline: str | None = None
    platform: str | None = None
    bands: list[str] | None = None
    band_scale: list[float] | None = None
    band_offset: list[float] | None = None
    offset_removed_dn: list[int] | None = None
    radiometry_rule: str | None = None
    radiometry_check: str | None = None
    radiometry_dark_share: float | None = None
    pixels: npt.NDArray[np.uint16] | None = None
    scl: npt.NDArray[np.uint8] | None = None
    rgb: dict[str, Any] | None = None
    nodata_fraction: float | None = None
    cloud_fraction: float | None = None
    cloud_shadow_fraction: float | None = None
    snow_fraction: float | None = None
    water_fraction: float | None = None
    ndvi_mean: float | None = None
    ndwi_mean: float | None = None
    brightness_mean: float | None = None
    context: dict[str, Any] | None = None
    classes: list[str] | None = None
    tags: list[str] | None = None
    names: list[str] | None = None
    overture_release: str | None = None
    caption: str | None = None
    caption_mentions: list[str] | None = None
    captioner: str | None = None
    prompt_version: str | None = None
    generation_params: str | None = None
    qa: list[dict[str, str]] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    caption_latency_s: float | None = None
    caption_flags: list[str] | None = None
    unsupported_claims: list[str] | None = None
    clip_tokens: int | None = None
    caption_words: int | None = None
    caption_language: str | None = None

    def fail(self, reason: str, message: str, *, keep_pixels: bool = False) -> None:
        """Mark the sample failed; its caption is dropped, and its pixels unless kept.

        Pixels are kept when only captioning failed, so the sample can be captioned again.
        """
        self.status = "failed"
        self.error_reason = reason
        self.error_message = message
        self.caption = None
        if not keep_pixels:
            self.pixels = None
            self.scl = None
            self.rgb = None


@dataclass
class ShardStats:
    """The ``_stats/NNNNN_stats.json`` sidecar of a shard.

    Attributes:
        shard: Shard index.
        path: Parquet file name, relative to the shards folder.
        count: Rows written (= planned samples of the shard).
        ok: Rows with status ``ok``.
        failed: Rows with status ``failed``.
        failures_by_reason: Failed rows per ``error_reason``.
        stage_seconds: Wall time per stage.
        duration_s: Wall time of the whole shard.
        bytes: Size of the Parquet file.
        finished_at: UTC time the shard was finished (ISO 8601).
        config_hash: Hash of the data-defining config fields.
        sample_ids_sha1: sha1 of the shard's sample ids in order (detects mixed outputs).
        caption_flags: Captions per caption-check flag (``not_english``, ``ungrounded``...).
        pending_caption: Rows waiting for the caption flow (``captioner.stage: separate``).
        radiometry_overruled: Samples whose pixels contradicted their scene's radiometry
            metadata, per ``radiometry_check`` (``offset_absent_in_pixels``...).
    """

    shard: int
    path: str
    count: int
    ok: int
    failed: int
    failures_by_reason: dict[str, int]
    stage_seconds: dict[str, float]
    duration_s: float
    bytes: int
    finished_at: str
    config_hash: str
    sample_ids_sha1: str = field(default="")
    caption_flags: dict[str, int] = field(default_factory=dict)
    pending_caption: int = 0
    radiometry_overruled: dict[str, int] = field(default_factory=dict)


def shard_paths(shards_dir: Path, index: int) -> tuple[Path, Path]:
    """(parquet path, stats path) of shard ``index``.

    Stats live in ``shards/_stats/`` so that the shards folder reads as one Parquet dataset
    (pyarrow and DuckDB skip ``_``-prefixed paths).
    """
    name = f"{index:05d}"
    return shards_dir / f"{name}.parquet", shards_dir / "_stats" / f"{name}_stats.json"


def _column(records: list[SampleRecord], name: str, typ: pa.DataType) -> pa.Array:
    if name in ("pixels", "scl"):
        shape: list[int] = []
        t = typ
        while pa.types.is_fixed_size_list(t):
            shape.append(t.list_size)
            t = t.value_type
        n_values = int(np.prod(shape))
        flat = np.zeros((len(records), n_values), dtype=t.to_pandas_dtype())
        valid = np.zeros(len(records), dtype=bool)
        for i, r in enumerate(records):
            arr = getattr(r, name)
            if arr is not None:
                flat[i] = np.asarray(arr).reshape(-1)
                valid[i] = True
        array: pa.Array = pa.array(flat.reshape(-1), type=t)
        for n in reversed(shape):
            array = pa.FixedSizeListArray.from_arrays(array, n)
        # Nulls go on the outer list only; the values under a null row are zeros.
        return pa.FixedSizeListArray.from_arrays(array.values, typ.list_size, mask=pa.array(~valid))
    return pa.array([getattr(r, name) for r in records], type=typ)


def _geo_metadata(table: pa.Table) -> dict[str, Any]:
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    boxes = table.column("bbox")
    if boxes.null_count < len(boxes):
        bounds = [
            pc.min(pc.struct_field(boxes, "xmin")).as_py(),
            pc.min(pc.struct_field(boxes, "ymin")).as_py(),
            pc.max(pc.struct_field(boxes, "xmax")).as_py(),
            pc.max(pc.struct_field(boxes, "ymax")).as_py(),
        ]
        column["bbox"] = bounds
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def records_table(records: list[SampleRecord], *, n_bands: int, size: int) -> pa.Table:
    """The rows of a shard as an Arrow table of :func:`shard_schema`."""
    schema = shard_schema(n_bands, size)
    return pa.table([_column(records, f.name, f.type) for f in schema], schema=schema)


_DELTA_COLUMNS = ("pixels", "scl")


def _leaf(f: pa.Field) -> tuple[str, pa.DataType]:
    """Parquet leaf path and value type of a (nested) list field, e.g. ``scl.list.element...``."""
    path: str = f.name
    t: pa.DataType = f.type
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        path += ".list.element"
        t = t.value_type
    return path, t


def write_table(
    table: pa.Table,
    path: Path,
    *,
    row_group_mb: float = 100.0,
    extra_metadata: dict[str, Any] | None = None,
) -> int:
    """Write a shard table to ``path`` atomically (temp file, rename); return its size.

    Args:
        table: Rows of :func:`shard_schema`.
        path: Target ``NNNNN.parquet``.
        row_group_mb: Target uncompressed row-group size, so one row read stays cheap.
        extra_metadata: JSON-able dict stored under the ``eocap`` key of the file metadata.
    """
    hf = {"info": {"features": {"rgb": {"_type": "Image"}}}}
    meta = {
        b"geo": json.dumps(_geo_metadata(table)).encode(),
        b"huggingface": json.dumps(hf).encode(),
        b"eocap": json.dumps({"schema_version": SCHEMA_VERSION, **(extra_metadata or {})}).encode(),
    }
    table = table.replace_schema_metadata(meta)
    pixels = table.schema.field("pixels").type
    n_values = 1
    while pa.types.is_fixed_size_list(pixels):
        n_values *= pixels.list_size
        pixels = pixels.value_type
    bytes_per_row = n_values * 2 + 200_000  # cube, plus SCL, PNG and context
    rows_per_group = max(1, int(row_group_mb * 1e6 // bytes_per_row))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    # The integer cubes are most of a shard: delta encoding (then zstd) writes them 1.27x
    # faster and 13 % smaller than dictionary/plain pages (docs/benchmarks.md); pyarrow,
    # DuckDB and `datasets` read it back unchanged.
    delta = {
        path: "DELTA_BINARY_PACKED"
        for path, leaf in (_leaf(table.schema.field(c)) for c in _DELTA_COLUMNS)
        if pa.types.is_integer(leaf)
    }
    pq.write_table(
        table,
        tmp,
        row_group_size=rows_per_group,
        compression="zstd",
        compression_level=3,
        use_dictionary=[
            "status",
            "error_reason",
            "crs",
            "period",
            "stac_collection",
            "processing_baseline",
            "platform",
            "captioner",
            "prompt_version",
            "overture_release",
            "stac_item_id",
        ],
        write_statistics=["sample_id", "lon", "lat", "datetime", "status", "period"],
        column_encoding=delta,
    )
    tmp.replace(path)
    return path.stat().st_size


def write_shard(
    records: list[SampleRecord],
    path: Path,
    *,
    n_bands: int,
    size: int,
    row_group_mb: float = 100.0,
    extra_metadata: dict[str, Any] | None = None,
) -> int:
    """Write ``records`` as a shard (see :func:`write_table`); return the file size."""
    table = records_table(records, n_bands=n_bands, size=size)
    return write_table(table, path, row_group_mb=row_group_mb, extra_metadata=extra_metadata)


def table_counts(table: pa.Table) -> tuple[int, int, int, dict[str, int], dict[str, int]]:
    """(ok, failed, pending_caption rows, failed rows per reason, captions per flag)."""
    status = table.column("status")
    ok = int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
    pending = int(pc.sum(pc.equal(status, "pending_caption")).as_py() or 0)
    failed = table.filter(pc.equal(status, "failed"))
    reasons = Counter(str(r or "unknown") for r in failed.column("error_reason").to_pylist())
    flags = Counter(str(f) for f in pc.list_flatten(table.column("caption_flags")).to_pylist())
    return ok, failed.num_rows, pending, dict(reasons), dict(flags)


def radiometry_overruled(table: pa.Table) -> dict[str, int]:
    """Rows whose pixels overruled their metadata's offset, per ``radiometry_check`` value."""
    checks = table.column("radiometry_check").to_pylist()
    overruled = Counter(str(c) for c in checks if c and c.startswith("offset_"))
    return dict(sorted(overruled.items()))


def write_stats(stats: ShardStats, path: Path) -> None:
    """Write a shard's stats sidecar atomically (its existence marks the shard done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(stats), indent=2, sort_keys=True))
    tmp.replace(path)


def read_stats(path: Path) -> ShardStats:
    """Read a stats sidecar."""
    return ShardStats(**json.loads(path.read_text()))
