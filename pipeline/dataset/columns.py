"""The shard columns, defined once: name, Arrow type, groups, nullability, meaning.

Each column is one field of :class:`SampleRecord` (a shard row); the field's metadata holds the
rest of the column's definition. Everything else is derived from these fields: the Arrow
schema (:func:`shard_schema`), the column table (:data:`COLUMNS`), the column groups readers
select (:func:`columns_in`), the Parquet encodings the writer applies, and the column table of
``docs/dataset-schema.md`` (``python -m pipeline.dataset.docs --write-docs``; a test fails
when the document differs).

The table is written as a dataclass rather than a list that a dataclass is generated from
(``dataclasses.make_dataclass``): a generated class is invisible to mypy, so every
``SampleRecord(...)`` and ``record.caption = ...`` in the pipeline would go unchecked. Declared
this way, mypy checks each column's Python type, and nullability is that of the field: a field
without default is set for every row; one that defaults to ``None`` may be null.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipeline.geo.sar import (
    CENTI_DB_NODATA,
    COHERENCE_CHANNELS,
    COHERENCE_NODATA,
    SENTINEL_1_DUAL_POL,
)

__all__ = [
    "CAPTION_OUTPUT_COLUMNS",
    "COLUMNS",
    "CONTEXT_FIELDS",
    "CONTEXT_TYPE",
    "CUBE_COLUMNS",
    "IMAGE_COLUMNS",
    "SAR_COLUMNS",
    "SAR_SINCE",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "SUMMARY_COLUMNS",
    "Column",
    "ColumnGroup",
    "Cube",
    "SampleRecord",
    "columns_in",
    "cube_dims",
    "cube_field_metadata",
    "markdown_tables",
    "render_docs",
    "shard_schema",
    "version_columns",
]

SCHEMA_VERSION = "2.1"
"""Version of the shard schema; bump on any column change (and commit the new column list,
tests/data/shard_schema_v<version>.txt)."""

SCHEMA_VERSIONS = ("1.2", "2.0", "2.1")
"""The versions eocap writes and reads: 1.2 stores the cubes as nested fixed-size lists, 2.0
as one byte-planed binary value per sample (:class:`Cube`); 2.1 adds the Sentinel-1 columns
(:attr:`ColumnGroup.SAR`). A 2.0 shard reads as a 2.1 one whose SAR columns are null."""

SAR_SINCE = "2.1"
"""The first schema version with the :attr:`ColumnGroup.SAR` columns; older ones lack them."""

CUBE_ENCODING = "byte_planes_le"
"""How schema 2.0 stores a cube value: the little-endian C-order array split into byte planes
(every value's byte 0, then every byte 1, ...), compressed by Parquet (docs/dataset-schema.md,
"Reading the cubes without eocap")."""


class ColumnGroup(StrEnum):
    """Named sets of columns: what a column is about, and which readers select it."""

    OUTCOME = "outcome"
    """Whether the sample succeeded, and why not."""
    IDENTITY = "identity"
    """Which sample: place and period (the manifest's keys)."""
    FOOTPRINT = "footprint"
    """Where the chip lies: footprint and pixel grid."""
    SCENE = "scene"
    """The Sentinel-2 scene the chip was cut from."""
    RADIOMETRY = "radiometry"
    """Bands and the DN-to-reflectance convention."""
    CUBE = "cube"
    """The pixel arrays: most of a shard's bytes, left out by readers of everything else."""
    IMAGE = "image"
    """Images that Hugging Face ``datasets`` shows as such."""
    CHIP_STATS = "chip_stats"
    """Per-chip statistics (:class:`pipeline.core.types.ChipStats`, field for field)."""
    CONTEXT = "context"
    """The Overture map context."""
    CAPTION = "caption"
    """The caption and what the captioner and the caption checks recorded about it."""
    SAR = "sar"
    """Sentinel-1 backscatter, coherence and their items (docs/sentinel-1.md); null without
    ``sar:`` (the coherence columns also without ``sar.coherence``)."""
    SUMMARY = "summary"
    """The small columns review campaigns stratify on (no pixels, no captions)."""


@dataclass(frozen=True)
class Cube:
    """A fixed-shape array column whose shape depends on the run: ``bands``, ``size``...

    Schema 2.0 stores one ``large_binary`` value per sample (:data:`CUBE_ENCODING`): decoding
    it is a memory copy and a shift per byte plane, where 1.2's nested fixed-size lists cost
    Parquet a repetition/definition level per pixel (benchmarks/loader.py: 5-10x faster reads).

    Attributes:
        value_type: Arrow type of one pixel value.
        dims: Dimension names, outermost first, each a key of :func:`cube_dims`: ``bands``
            (bands in the cube), ``polarisations`` (SAR channels), ``coherence_channels``
            (:data:`pipeline.geo.sar.COHERENCE_CHANNELS`) or ``size`` (chip width and height in
            pixels).
    """

    value_type: pa.DataType
    dims: tuple[str, ...]

    def shape(self, lengths: Mapping[str, int]) -> tuple[int, ...]:
        """The array shape of one sample's cube, given each dimension's length."""
        return tuple(lengths[dim] for dim in self.dims)

    def arrow(self, lengths: Mapping[str, int], version: str = SCHEMA_VERSION) -> pa.DataType:
        """The Arrow type of the cube in ``version``, given each dimension's length."""
        if version != "1.2":
            return pa.large_binary()
        arrow_type = self.value_type
        for n in reversed(self.shape(lengths)):
            arrow_type = pa.list_(arrow_type, n)
        return arrow_type


def cube_dims(
    n_bands: int, size: int, n_polarisations: int = len(SENTINEL_1_DUAL_POL)
) -> dict[str, int]:
    """The length of each :class:`Cube` dimension for a run's chips.

    Args:
        n_bands: Sentinel-2 bands in ``pixels``.
        size: Chip width and height in pixels.
        n_polarisations: Sentinel-1 channels in ``sar_db`` (``sar.polarisations``; VV, VH
            when the run has no SAR, whose column is then null in every row).
    """
    return {
        "bands": n_bands,
        "size": size,
        "polarisations": n_polarisations,
        "coherence_channels": len(COHERENCE_CHANNELS),
    }


@dataclass(frozen=True)
class _Definition:
    """What a :class:`SampleRecord` field's metadata says about its column."""

    type: pa.DataType | Cube
    doc: str
    groups: frozenset[ColumnGroup]
    unit: str
    dictionary: bool
    statistics: bool


_DEFINITION = "column"


def _column(
    arrow_type: pa.DataType | Cube,
    doc: str,
    *groups: ColumnGroup,
    unit: str = "",
    dictionary: bool = False,
    statistics: bool = False,
) -> Mapping[str, _Definition]:
    """The metadata of a :class:`SampleRecord` field (see :class:`Column`)."""
    return {
        _DEFINITION: _Definition(arrow_type, doc, frozenset(groups), unit, dictionary, statistics)
    }


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
_BBOX = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
_QA = pa.struct([("question", pa.string()), ("answer", pa.string())])
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

CONTEXT_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    (
        "land_cover",
        pa.list_(_SHARE),
        "Overture `base/land_cover` subtypes by share of the chip (>= 1 %)",
    ),
    ("land_use", pa.list_(_SHARE), "Overture `base/land_use` classes by share"),
    ("water", pa.list_(_FEATURE), "water features (lakes, rivers, ponds...)"),
    ("building_count", pa.int32(), "buildings intersecting the chip"),
    ("building_share", pa.float32(), "share of the chip under building footprints"),
    ("roads", pa.list_(_ROAD), "road length inside the chip per class"),
    ("named_features", pa.list_(_FEATURE), "every named feature, largest first"),
)
"""The fields of the ``context`` struct: (name, Arrow type, meaning)."""

CONTEXT_TYPE = pa.struct([(name, arrow_type) for name, arrow_type, _ in CONTEXT_FIELDS])


@dataclass(kw_only=True)
class SampleRecord:
    """One row of a shard: each field is a column, in schema order (``None`` = null)."""

    sample_id: str = field(
        metadata=_column(
            pa.string(),
            "deterministic id of (location, period): `s_` + 16 hex",
            ColumnGroup.IDENTITY,
            ColumnGroup.SUMMARY,
            statistics=True,
        )
    )
    status: str = field(
        metadata=_column(
            pa.string(),
            "`ok`, `failed`, or `pending_caption` (built with `captioner.stage: separate`, "
            "not captioned yet)",
            ColumnGroup.OUTCOME,
            ColumnGroup.SUMMARY,
            dictionary=True,
            statistics=True,
        )
    )
    error_reason: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "failure reason (`no_scene`, `missing_band`, `stac_error`, `cog_open`, `cog_read`, "
            "`all_nodata`, `too_cloudy`, `caption_server`, `caption_http`, "
            "`caption_bad_response`, `caption_empty`); null when ok",
            ColumnGroup.OUTCOME,
            dictionary=True,
        ),
    )
    error_message: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "details, prefixed with the stage: `[chips] https://.../nir.tif: ...`",
            ColumnGroup.OUTCOME,
        ),
    )
    location_id: str = field(
        metadata=_column(pa.string(), "deterministic id of the chip centre", ColumnGroup.IDENTITY)
    )
    location_name: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "label from the config's `points`, else null", ColumnGroup.IDENTITY
        ),
    )
    lon: float = field(
        metadata=_column(
            pa.float64(),
            "requested chip centre, longitude",
            ColumnGroup.IDENTITY,
            ColumnGroup.SUMMARY,
            unit="degrees",
            statistics=True,
        )
    )
    lat: float = field(
        metadata=_column(
            pa.float64(),
            "requested chip centre, latitude",
            ColumnGroup.IDENTITY,
            ColumnGroup.SUMMARY,
            unit="degrees",
            statistics=True,
        )
    )
    geometry: bytes | None = field(
        default=None,
        metadata=_column(
            pa.binary(), "chip footprint polygon in lon/lat (WKB)", ColumnGroup.FOOTPRINT
        ),
    )
    bbox: dict[str, float] | None = field(
        default=None,
        metadata=_column(
            _BBOX, "footprint bounds (GeoParquet covering)", ColumnGroup.FOOTPRINT, unit="degrees"
        ),
    )
    crs: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "CRS of the pixel grid, e.g. `EPSG:32632` (the scene's UTM zone)",
            ColumnGroup.FOOTPRINT,
            dictionary=True,
        ),
    )
    transform: list[float] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.float64(), 6),
            "affine (a, b, c, d, e, f) of the chip grid: x = c + a*col, y = f + e*row",
            ColumnGroup.FOOTPRINT,
        ),
    )
    period: str = field(
        metadata=_column(
            pa.string(),
            "name of the sampling period (`spring`, `summer`...)",
            ColumnGroup.IDENTITY,
            ColumnGroup.SUMMARY,
            dictionary=True,
            statistics=True,
        )
    )
    period_start: dt.date = field(
        metadata=_column(pa.date32(), "first day of the sampling period", ColumnGroup.IDENTITY)
    )
    period_end: dt.date = field(
        metadata=_column(pa.date32(), "last day of the sampling period", ColumnGroup.IDENTITY)
    )
    datetime: dt.datetime | None = field(
        default=None,
        metadata=_column(
            pa.timestamp("us", tz="UTC"),
            "acquisition time of the scene",
            ColumnGroup.SCENE,
            ColumnGroup.SUMMARY,
            statistics=True,
        ),
    )
    stac_item_id: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "id of the STAC item the chip was cut from",
            ColumnGroup.SCENE,
            dictionary=True,
        ),
    )
    stac_collection: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "that item's STAC collection", ColumnGroup.SCENE, dictionary=True
        ),
    )
    scene_cloud_cover: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(), "`eo:cloud_cover` of the whole scene", ColumnGroup.SCENE, unit="%"
        ),
    )
    scene_rank: int | None = field(
        default=None,
        metadata=_column(
            pa.int32(),
            "which of the scenes covering the chip it was cut from: 0 = the least cloudy, "
            "n = the n-th runner-up, tried when the COGs of those before could not be read "
            "(`chips.max_scene_fallbacks`)",
            ColumnGroup.SCENE,
        ),
    )
    processing_baseline: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "`s2:processing_baseline` of the scene", ColumnGroup.SCENE, dictionary=True
        ),
    )
    platform: str | None = field(
        default=None,
        metadata=_column(pa.string(), "e.g. `sentinel-2a`", ColumnGroup.SCENE, dictionary=True),
    )
    bands: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "ESA band names in cube order (`B01` ... `B12`, 12 by default)",
            ColumnGroup.RADIOMETRY,
        ),
    )
    band_scale: list[float] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.float32()),
            "per band: reflectance = DN * scale + offset (1e-4 for every band)",
            ColumnGroup.RADIOMETRY,
        ),
    )
    band_offset: list[float] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.float32()),
            "per band: the offset of that conversion (0 for every band)",
            ColumnGroup.RADIOMETRY,
        ),
    )
    offset_removed_dn: list[int] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.int32()),
            "DN taken off each band to reach the convention above (1000 where the COG still "
            "carried baseline 04.00's `BOA_ADD_OFFSET`, else 0): the metadata's decision "
            "unless the pixels overruled it",
            ColumnGroup.RADIOMETRY,
        ),
    )
    radiometry_rule: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "which metadata decided the offset, first match of: `earthsearch-flag` (Earth "
            "Search `earthsearch:boa_offset_applied`), `raster-bands` (`raster:bands` "
            "offset/scale), `processing-baseline` (`s2:processing_baseline`), `collection` "
            "(a Collection-1 id), `none` (see `pipeline/geo/radiometry.py`)",
            ColumnGroup.RADIOMETRY,
        ),
    )
    radiometry_check: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "the chip's own pixels against that decision: `consistent`, `inconclusive` (too "
            "few clear vegetation/water pixels, or an ambiguous share), or a contradiction in "
            "which the pixels won: `offset_absent_in_pixels` (metadata said offset, pixels "
            "are harmonised: nothing taken off), `offset_present_in_pixels` (metadata said "
            "none, pixels carry it: 1000 taken off)",
            ColumnGroup.RADIOMETRY,
        ),
    )
    radiometry_dark_share: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "the check's evidence: share of clear vegetation/water pixels (SCL 4, 6) whose "
            "darkest visible raw DN (B02-B04) is under 1000; ~1 for harmonised pixels, ~0 "
            "with the offset in; null when inconclusive for lack of pixels",
            ColumnGroup.RADIOMETRY,
            unit="0..1",
        ),
    )
    pixels: npt.NDArray[np.uint16] | None = field(
        default=None,
        metadata=_column(
            Cube(pa.uint16(), ("bands", "size", "size")),
            "band cube on the 10 m grid (`size` = `chips.size_px`, 264 by default); 0 = "
            "nodata; null when the sample failed before its chip was cut (kept when only "
            "captioning failed)",
            ColumnGroup.CUBE,
            unit="DN",
        ),
    )
    scl: npt.NDArray[np.uint8] | None = field(
        default=None,
        metadata=_column(
            Cube(pa.uint8(), ("size", "size")),
            "L2A scene classification (ESA codes 0-11)",
            ColumnGroup.CUBE,
        ),
    )
    rgb: dict[str, Any] | None = field(
        default=None,
        metadata=_column(
            _IMAGE, "true-colour PNG (B04, B03, B02), percentile stretch", ColumnGroup.IMAGE
        ),
    )
    nodata_fraction: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "share of chip pixels with SCL 0",
            ColumnGroup.CHIP_STATS,
            ColumnGroup.SUMMARY,
            unit="0..1",
        ),
    )
    cloud_fraction: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "share of chip pixels with SCL 8, 9 or 10",
            ColumnGroup.CHIP_STATS,
            ColumnGroup.SUMMARY,
            unit="0..1",
        ),
    )
    cloud_shadow_fraction: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(), "share of chip pixels with SCL 3", ColumnGroup.CHIP_STATS, unit="0..1"
        ),
    )
    snow_fraction: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(), "share of chip pixels with SCL 11", ColumnGroup.CHIP_STATS, unit="0..1"
        ),
    )
    water_fraction: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(), "share of chip pixels with SCL 6", ColumnGroup.CHIP_STATS, unit="0..1"
        ),
    )
    ndvi_mean: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "mean NDVI over valid cloud-free pixels; null if none",
            ColumnGroup.CHIP_STATS,
        ),
    )
    ndwi_mean: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "mean NDWI over valid cloud-free pixels; null if none",
            ColumnGroup.CHIP_STATS,
        ),
    )
    brightness_mean: float | None = field(
        default=None,
        metadata=_column(
            pa.float32(),
            "mean visible reflectance over valid cloud-free pixels; null if none",
            ColumnGroup.CHIP_STATS,
        ),
    )
    context: dict[str, Any] | None = field(
        default=None,
        metadata=_column(
            CONTEXT_TYPE, "the map context, below", ColumnGroup.CONTEXT, ColumnGroup.SUMMARY
        ),
    )
    classes: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "distinct Overture classes present (land cover/use at >= 1 % of the chip)",
            ColumnGroup.CONTEXT,
        ),
    )
    tags: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "OSM-style `key=value` tags of the features (`landuse=farmland`, `highway=primary`)",
            ColumnGroup.CONTEXT,
        ),
    )
    names: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()), "distinct names of features in the chip", ColumnGroup.CONTEXT
        ),
    )
    overture_release: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "Overture release id the context comes from: the resolved id (`2026-10-22.0`), "
            "never `latest`; one release per output dir, pinned in `run.json`",
            ColumnGroup.CONTEXT,
            dictionary=True,
        ),
    )
    caption: str | None = field(
        default=None,
        metadata=_column(pa.string(), "the caption; null when failed", ColumnGroup.CAPTION),
    )
    caption_mentions: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "template captioner: context classes the caption names (`land_cover:forest`, "
            "`water:lake`, `scl:cloud`, `building`)",
            ColumnGroup.CAPTION,
        ),
    )
    captioner: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "backend and model id (`template`, `openai:llava-hf/llama3-llava-next-8b-hf`, "
            "`rule:obscured` for chips hidden by cloud or nodata)",
            ColumnGroup.CAPTION,
            ColumnGroup.SUMMARY,
            dictionary=True,
        ),
    )
    prompt_version: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "prompt name, version and content hash (`grounded-v1+27dec6026df7`)",
            ColumnGroup.CAPTION,
            ColumnGroup.SUMMARY,
            dictionary=True,
        ),
    )
    generation_params: str | None = field(
        default=None,
        metadata=_column(pa.string(), "JSON: `max_new_tokens`, `temperature`", ColumnGroup.CAPTION),
    )
    qa: list[dict[str, str]] | None = field(
        default=None,
        metadata=_column(
            pa.list_(_QA),
            "the question/answer turns of a multi-turn prompt (`llama3-ms-clip-v1`)",
            ColumnGroup.CAPTION,
        ),
    )
    finish_reason: str | None = field(
        default=None,
        metadata=_column(pa.string(), "`stop` or `length` (the last turn)", ColumnGroup.CAPTION),
    )
    prompt_tokens: int | None = field(
        default=None,
        metadata=_column(
            pa.int32(), "prompt tokens over all turns, image tokens included", ColumnGroup.CAPTION
        ),
    )
    completion_tokens: int | None = field(
        default=None,
        metadata=_column(pa.int32(), "generated tokens over all turns", ColumnGroup.CAPTION),
    )
    caption_latency_s: float | None = field(
        default=None,
        metadata=_column(pa.float32(), "model time over all turns", ColumnGroup.CAPTION, unit="s"),
    )
    caption_flags: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "failed caption checks (see docs/captioning.md): `refusal`, `truncated`, "
            "`not_english`, `ungrounded`, ...",
            ColumnGroup.CAPTION,
        ),
    )
    unsupported_claims: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "grounding check: claims neither the map nor the pixels support (`water:lake`, "
            "`name:Oberdorf`)",
            ColumnGroup.CAPTION,
        ),
    )
    clip_tokens: int | None = field(
        default=None,
        metadata=_column(
            pa.int32(),
            "caption length in CLIP BPE tokens, start/end included (CLIP's limit: 77)",
            ColumnGroup.CAPTION,
        ),
    )
    caption_words: int | None = field(
        default=None,
        metadata=_column(pa.int32(), "caption length in words", ColumnGroup.CAPTION),
    )
    caption_language: str | None = field(
        default=None,
        metadata=_column(pa.string(), "`en` or `unknown`", ColumnGroup.CAPTION),
    )
    sar_state: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "Sentinel-1 of the sample: `ok`, or why it has none: `no_acquisition` (none within "
            "`sar.window_days` covering the chip), `missing_polarisation`, `read_error`, "
            "`search_error`; never a failure of the sample. Null when the run has no `sar:` "
            "or the sample failed before its chip was cut",
            ColumnGroup.SAR,
            ColumnGroup.SUMMARY,
            dictionary=True,
        ),
    )
    sar_message: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "why there is no SAR (what was looked for and found)", ColumnGroup.SAR
        ),
    )
    sar_item_id: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "id of the Sentinel-1 STAC item read", ColumnGroup.SAR, dictionary=True
        ),
    )
    sar_collection: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "its STAC collection (`sentinel-1-rtc`, `sentinel-1-grd`)",
            ColumnGroup.SAR,
            dictionary=True,
        ),
    )
    sar_platform: str | None = field(
        default=None,
        metadata=_column(pa.string(), "e.g. `SENTINEL-1A`", ColumnGroup.SAR, dictionary=True),
    )
    sar_orbit_state: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "`sat:orbit_state`: `ascending` or `descending`",
            ColumnGroup.SAR,
            dictionary=True,
        ),
    )
    sar_relative_orbit: int | None = field(
        default=None,
        metadata=_column(pa.int32(), "`sat:relative_orbit`", ColumnGroup.SAR),
    )
    sar_datetime: dt.datetime | None = field(
        default=None,
        metadata=_column(
            pa.timestamp("us", tz="UTC"), "acquisition time of the SAR item", ColumnGroup.SAR
        ),
    )
    sar_time_offset_s: float | None = field(
        default=None,
        metadata=_column(
            pa.float64(),
            "SAR acquisition time minus the optical scene's (`datetime`)",
            ColumnGroup.SAR,
            unit="s",
        ),
    )
    sar_polarisations: list[str] | None = field(
        default=None,
        metadata=_column(
            pa.list_(pa.string()),
            "channels of `sar_db` in cube order (`sar.polarisations`: `VV`, `VH` by default)",
            ColumnGroup.SAR,
        ),
    )
    sar_db: npt.NDArray[np.int16] | None = field(
        default=None,
        metadata=_column(
            Cube(pa.int16(), ("polarisations", "size", "size")),
            "backscatter on the chip's grid in hundredths of a dB (`round(100 * dB)`, "
            f"{CENTI_DB_NODATA} = nodata), linear power resampled then put in dB; null "
            "unless `sar_state` is `ok`",
            ColumnGroup.SAR,
            ColumnGroup.CUBE,
            unit="0.01 dB",
        ),
    )
    coh_state: str | None = field(
        default=None,
        metadata=_column(
            pa.string(),
            "interferometric coherence of the sample, in `sar_state`'s terms: `ok`, "
            "`no_acquisition` (no `sar.coherence.collection` item covering the chip whose "
            "interval contains the optical time or lies within `sar.coherence.window_days`), "
            "`missing_polarisation` (no coherence asset), `read_error`, `search_error`. Null "
            "without `sar.coherence`",
            ColumnGroup.SAR,
            ColumnGroup.SUMMARY,
            dictionary=True,
        ),
    )
    coh_message: str | None = field(
        default=None,
        metadata=_column(pa.string(), "why there is no coherence", ColumnGroup.SAR),
    )
    coh_item_id: str | None = field(
        default=None,
        metadata=_column(
            pa.string(), "id of the coherence STAC item read", ColumnGroup.SAR, dictionary=True
        ),
    )
    coh_start_datetime: dt.datetime | None = field(
        default=None,
        metadata=_column(
            pa.timestamp("us", tz="UTC"),
            "start of the coherence item's interval (a pair's first acquisition; the item's "
            "`datetime` for an instant item)",
            ColumnGroup.SAR,
        ),
    )
    coh_end_datetime: dt.datetime | None = field(
        default=None,
        metadata=_column(
            pa.timestamp("us", tz="UTC"),
            "end of the interval (a pair's second acquisition)",
            ColumnGroup.SAR,
        ),
    )
    coh_time_offset_s: float | None = field(
        default=None,
        metadata=_column(
            pa.float64(),
            "the interval's midpoint minus the optical scene's time (`datetime`)",
            ColumnGroup.SAR,
            unit="s",
        ),
    )
    coherence: npt.NDArray[np.uint8] | None = field(
        default=None,
        metadata=_column(
            Cube(pa.uint8(), ("coherence_channels", "size", "size")),
            "interferometric coherence on the chip's grid in hundredths (`round(100 * "
            f"coherence)`, 0..100, {COHERENCE_NODATA} = nodata), channel `COH`; null unless "
            "`coh_state` is `ok`",
            ColumnGroup.SAR,
            ColumnGroup.CUBE,
            unit="0.01",
        ),
    )

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
            self.sar_db = None
            self.coherence = None


@dataclass(frozen=True)
class Column:
    """One column of a shard.

    Attributes:
        name: Column name (= the :class:`SampleRecord` field).
        type: Arrow type, or a :class:`Cube` whose shape the run sets.
        doc: Its meaning, for docs/dataset-schema.md.
        groups: The groups it belongs to.
        nullable: Whether a row may hold null (its record field defaults to ``None``).
        unit: Unit of its values, if any.
        dictionary: Dictionary-encoded in Parquet (few distinct values per shard).
        statistics: Min/max statistics written, for readers that filter on it.
    """

    name: str
    type: pa.DataType | Cube
    doc: str
    groups: frozenset[ColumnGroup]
    nullable: bool
    unit: str = ""
    dictionary: bool = False
    statistics: bool = False

    def arrow(self, lengths: Mapping[str, int], version: str = SCHEMA_VERSION) -> pa.DataType:
        """The Arrow type, given the length of each cube dimension (:func:`cube_dims`)."""
        if isinstance(self.type, Cube):
            return self.type.arrow(lengths, version)
        return self.type


def _table() -> tuple[Column, ...]:
    out = []
    for f in fields(SampleRecord):
        d: _Definition = f.metadata[_DEFINITION]
        nullable = f.default is None
        out.append(
            Column(f.name, d.type, d.doc, d.groups, nullable, d.unit, d.dictionary, d.statistics)
        )
    return tuple(out)


COLUMNS = _table()
"""Every column of a shard, in schema order."""


def columns_in(*groups: ColumnGroup) -> tuple[str, ...]:
    """The names of the columns in any of ``groups``, in schema order."""
    return tuple(c.name for c in COLUMNS if c.groups & set(groups))


CUBE_COLUMNS = columns_in(ColumnGroup.CUBE)
"""The pixel arrays (see :attr:`ColumnGroup.CUBE`)."""
IMAGE_COLUMNS = columns_in(ColumnGroup.IMAGE)
"""The columns Hugging Face ``datasets`` decodes as images."""
CAPTION_OUTPUT_COLUMNS = columns_in(ColumnGroup.OUTCOME, ColumnGroup.CAPTION)
"""The columns the separate caption stage writes; it leaves every other column as it is."""
SUMMARY_COLUMNS = columns_in(ColumnGroup.SUMMARY)
"""The small columns review campaigns stratify on (see :attr:`ColumnGroup.SUMMARY`)."""
SAR_COLUMNS = columns_in(ColumnGroup.SAR)
"""The Sentinel-1 columns (see :attr:`ColumnGroup.SAR`), absent from shards before 2.1."""


def version_columns(version: str = SCHEMA_VERSION) -> tuple[Column, ...]:
    """The columns of a shard of schema ``version``, in schema order.

    Raises:
        ValueError: for a version eocap does not write.
    """
    if version not in SCHEMA_VERSIONS:
        raise ValueError(f"shard schema {version} is unknown; eocap writes {SCHEMA_VERSIONS}")
    if SCHEMA_VERSIONS.index(version) < SCHEMA_VERSIONS.index(SAR_SINCE):
        return tuple(c for c in COLUMNS if ColumnGroup.SAR not in c.groups)
    return COLUMNS


# The per-sample axis name of each cube dimension in the decoding metadata ("size" is y, x).
_AXIS_NAMES = {"bands": "band", "polarisations": "polarisation", "coherence_channels": "channel"}


def cube_field_metadata(name: str, lengths: Mapping[str, int]) -> dict[str, Any]:
    """What a reader needs to decode cube column ``name`` of a 2.x shard: dtype, shape, encoding.

    Stored per shard under the ``eocap`` key of the file metadata (``cubes``), together with the
    band order, scale and offset (:func:`pipeline.dataset.writer.write_table`).

    Args:
        name: A :data:`CUBE_COLUMNS` name.
        lengths: The length of each cube dimension (:func:`cube_dims`).
    """
    column = next(c for c in COLUMNS if c.name == name)
    assert isinstance(column.type, Cube), name
    dims = column.type.dims
    return {
        "dtype": np.dtype(column.type.value_type.to_pandas_dtype()).newbyteorder("<").str,
        "shape": list(column.type.shape(lengths)),
        "dims": [_AXIS_NAMES[d] for d in dims[:-2]] + ["y", "x"],
        "order": "C",
        "encoding": CUBE_ENCODING,
    }


def shard_schema(
    n_bands: int,
    size: int,
    version: str = SCHEMA_VERSION,
    *,
    n_polarisations: int = len(SENTINEL_1_DUAL_POL),
) -> pa.Schema:
    """The Arrow schema of a shard for ``n_bands`` bands of ``size`` x ``size`` pixels.

    Raises:
        ValueError: for a version eocap does not write.
    """
    lengths = cube_dims(n_bands, size, n_polarisations)
    return pa.schema([(c.name, c.arrow(lengths, version)) for c in version_columns(version)])


# The docs name Arrow's float and double by their widths, as the tables always have.
_PRIMITIVE_NAMES = {"float": "float32", "double": "float64", "date32[day]": "date32"}


def type_name(arrow_type: pa.DataType | Cube, *, nested: bool = False) -> str:
    """A short name of an Arrow type for the docs; structs inside structs by field names."""
    if isinstance(arrow_type, Cube):
        dims = "".join(f"[{d}]" for d in arrow_type.dims)
        return f"large_binary: {type_name(arrow_type.value_type)}{dims}"
    if pa.types.is_fixed_size_list(arrow_type):
        return f"fixed_size_list<{type_name(arrow_type.value_type)}>[{arrow_type.list_size}]"
    if pa.types.is_list(arrow_type):
        return f"list<{type_name(arrow_type.value_type, nested=nested)}>"
    if pa.types.is_timestamp(arrow_type):
        return f"timestamp[{arrow_type.unit}, {arrow_type.tz}]"
    if pa.types.is_struct(arrow_type):
        if nested:
            return "struct"
        parts: list[tuple[list[str], str]] = []  # runs of fields of one type: names, type
        for f in arrow_type:
            kind = type_name(f.type, nested=True)
            if kind in ("struct", "list<struct>"):
                parts.append(([f.name], ""))
            elif parts and parts[-1][1] == kind:
                parts[-1][0].append(f.name)
            else:
                parts.append(([f.name], kind))
        inner = ", ".join(", ".join(names) + (f": {kind}" if kind else "") for names, kind in parts)
        return f"struct<{inner}>"
    return _PRIMITIVE_NAMES.get(str(arrow_type), str(arrow_type))


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def markdown_tables() -> dict[str, str]:
    """The generated tables of docs/dataset-schema.md, by marker (columns, context, stats)."""
    columns = [
        "| column | type | null | unit | groups | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for c in COLUMNS:
        groups = ", ".join(g.value for g in ColumnGroup if g in c.groups)
        columns.append(
            f"| `{c.name}` | `{type_name(c.type)}` | {'yes' if c.nullable else 'no'} "
            f"| {c.unit} | {groups} | {markdown_cell(c.doc)} |"
        )
    context = ["| field | type | meaning |", "|---|---|---|"]
    for name, arrow_type, doc in CONTEXT_FIELDS:
        context.append(f"| `{name}` | `{type_name(arrow_type)}` | {markdown_cell(doc)} |")
    from pipeline.dataset.stats import ShardStats  # stats reads no column; no cycle

    stats = ["| field | type | meaning |", "|---|---|---|"]
    for f in fields(ShardStats):
        stats.append(f"| `{f.name}` | `{f.type}` | {markdown_cell(f.metadata['doc'])} |")
    return {
        "columns": "\n".join(columns),
        "context": "\n".join(context),
        "stats": "\n".join(stats),
    }


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.DOTALL)


def render_docs(text: str, tables: Mapping[str, str] | None = None) -> str:
    """``text`` with its generated tables replaced by current ones.

    Args:
        text: A document with ``<!-- NAME:begin -->`` / ``<!-- NAME:end -->`` markers.
        tables: The tables by marker name (default: docs/dataset-schema.md's).

    Raises:
        ValueError: if a table's markers are missing.
    """
    for name, table in (markdown_tables() if tables is None else tables).items():
        match = _marked(name).search(text)
        if match is None:
            raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> markers")
        text = f"{text[: match.end(1)]}{table}\n{text[match.start(2) :]}"
    return text
