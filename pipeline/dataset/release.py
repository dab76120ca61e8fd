"""``eocap release``: a built output as a release anyone can read without eocap.

docs/release.md is the contract: the Hugging Face Hub layout (``data/{split}-NNNNN-of-NNNNN``
Parquet files, a dataset card), a GeoParquet sample index with each sample's row group and its
byte range, per-band statistics of the train split, a STAC collection, ``release.json`` and
``SHA256SUMS``. The paths are :class:`~pipeline.dataset.layout.ReleaseLayout`'s.

The shards are read once, in order; rows go to their split's buffer and a buffer is written as
a data file (through the shard writer, so the shards' encodings apply) each time it holds
``samples_per_file`` rows. Memory is bounded by three files' rows. Nothing written depends on
the time or the machine, so releasing the same output twice gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pystac

from pipeline import __version__
from pipeline.core.errors import EocapError
from pipeline.dataset.band_stats import INVALID_SCL, BandHistograms
from pipeline.dataset.card import ATTRIBUTION, LICENCES, CardFacts, render_card
from pipeline.dataset.columns import markdown_cell, type_name
from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.integrity import byte_range, write_sha256sums
from pipeline.dataset.layout import SPLITS, DatasetLayout, ReleaseLayout
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.splits import SplitRule
from pipeline.dataset.writer import ROWS_PER_GROUP, with_current_columns, write_table
from pipeline.geo.bands import band_by_name
from pipeline.io.atomic import atomic_write

__all__ = [
    "INDEX_SCHEMA",
    "ReleaseError",
    "ReleaseOptions",
    "ReleaseSummary",
    "make_release",
    "read_reviews",
]


class ReleaseError(EocapError):
    """The output cannot be released as asked; the message says what to do."""


@dataclass(frozen=True)
class ReleaseOptions:
    """How a release is cut.

    Attributes:
        split_rule: The spatial split rule.
        samples_per_file: Samples per data file (the last file of a split holds the rest).
        rows_per_group: Rows per Parquet row group: one range read fetches this many samples.
        include_failed: Keep failed and uncaptioned samples (default: only ``ok``).
    """

    split_rule: SplitRule = field(default_factory=SplitRule)
    samples_per_file: int = 64
    rows_per_group: int = ROWS_PER_GROUP
    include_failed: bool = False


@dataclass
class ReleaseSummary:
    """What a release holds.

    Attributes:
        root: The release folder.
        counts: Samples per split.
        files: Every file of the release, relative to the root (SHA256SUMS's list).
        bytes: Bytes of those files.
    """

    root: Path
    counts: dict[str, int]
    files: list[str]
    bytes: int


_BBOX = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])

INDEX_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("sample_id", pa.string(), "the sample"),
    ("split", pa.string(), "`train`, `validation` or `test`"),
    (
        "file",
        pa.string(),
        "data file, relative to the release root (`data/train-00000-of-00003.parquet`)",
    ),
    ("row_group", pa.int32(), "row group of `file` holding the sample"),
    ("row_in_group", pa.int32(), "the sample's row within that row group"),
    (
        "byte_offset",
        pa.int64(),
        "first byte of the row group's column chunks in `file` (each chunk starts at its "
        "dictionary page if it has one, else its first data page)",
    ),
    (
        "byte_length",
        pa.int64(),
        "bytes of the row group's column chunks, to the end of the last chunk "
        "(`start + total_compressed_size`): one HTTP range fetches the group",
    ),
    ("range_sha256", pa.string(), "sha256 of those bytes (a pulled row group is verified first)"),
    (
        "geometry",
        pa.binary(),
        "chip footprint in lon/lat, WKB (GeoParquet 1.1 `geo` metadata, bbox covering)",
    ),
    ("bbox", _BBOX, "footprint bounds"),
    ("lon", pa.float64(), "chip centre longitude"),
    ("lat", pa.float64(), "chip centre latitude"),
    ("datetime", pa.timestamp("us", tz="UTC"), "acquisition time"),
    ("period", pa.string(), "the period (season) name"),
    ("cloud_fraction", pa.float32(), "share of cloudy pixels"),
    ("classes", pa.list_(pa.string()), "map classes in the chip"),
    ("caption_flags", pa.list_(pa.string()), "caption check flags"),
    ("review_status", pa.string(), "consensus review status, null if not reviewed"),
)
"""The sample index's columns: the Arrow schema and docs/release.md's table come from here."""

INDEX_SCHEMA = pa.schema([(name, arrow_type) for name, arrow_type, _ in INDEX_FIELDS])


def index_markdown_table() -> str:
    """docs/release.md's table of the ``metadata.parquet`` columns."""
    rows = ["| column | type | meaning |", "|---|---|---|"]
    for name, arrow_type, doc in INDEX_FIELDS:
        rows.append(f"| `{name}` | `{type_name(arrow_type)}` | {markdown_cell(doc)} |")
    return "\n".join(rows)


"""Columns of ``metadata.parquet`` (docs/release.md)."""

_COUNTED = (
    "captioner",
    "prompt_version",
    "overture_release",
    "caption_original",
    "sar_state",
    "coh_state",
)
"""Columns whose values the card counts (``caption_original``: captions a reviewer edited)."""

_READ_BATCH = 16
"""Shard rows read at a time (pixels included): bounded memory whatever the shard size."""


def read_reviews(layout: DatasetLayout) -> dict[str, tuple[str | None, str | None]]:
    """(review status, edited caption) by sample id, from ``eocap review apply``'s files."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for path in layout.review_results().values():
        table = pq.read_table(path, columns=["sample_id", "review_status", "edited_caption"])
        for sid, status, edited in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        ):
            out[sid] = (status, edited)
    return out


def _read_run(layout: DatasetLayout) -> dict[str, Any]:
    if not layout.run_json.exists():
        raise ReleaseError(
            f"{layout.root} has no run.json: give the output directory of `eocap run`"
        )
    run: dict[str, Any] = json.loads(layout.run_json.read_text())
    return run


def _prepare(root: Path) -> ReleaseLayout:
    """The release folder, emptied of a previous release's data files; refuses other folders."""
    release = ReleaseLayout(root)
    if root.exists() and any(root.iterdir()) and not release.release_json.exists():
        raise ReleaseError(f"{root} is not empty and holds no release: give a new or empty folder")
    for stale in release.data_files():
        stale.unlink()
    release.data_dir.mkdir(parents=True, exist_ok=True)
    return release


def _with_reviews(table: pa.Table, reviews: dict[str, tuple[str | None, str | None]]) -> pa.Table:
    """``table`` with ``review_status`` and ``caption_original``; edited captions applied."""
    found = [reviews.get(sid, (None, None)) for sid in table.column("sample_id").to_pylist()]
    captions = table.column("caption").to_pylist()
    edited = [e if e else None for _, e in found]
    table = table.set_column(
        table.schema.get_field_index("caption"),
        "caption",
        pa.array([e or c for c, e in zip(captions, edited, strict=True)], pa.string()),
    )
    table = table.append_column("review_status", pa.array([s for s, _ in found], pa.string()))
    return table.append_column(
        "caption_original",
        pa.array([c if e else None for c, e in zip(captions, edited, strict=True)], pa.string()),
    )


@dataclass
class _Plan:
    """Pass one: each kept row's split, per shard (``None`` = left out)."""

    splits: dict[int, list[str | None]]
    counts: dict[str, int]


def _plan(shards: dict[int, Path], options: ReleaseOptions) -> _Plan:
    per_shard: dict[int, list[str | None]] = {}
    counts = dict.fromkeys(SPLITS, 0)
    for index, path in shards.items():
        table = pq.read_table(path, columns=["status", "lon", "lat"])
        rows: list[str | None] = []
        for status, lon, lat in zip(
            *(table.column(c).to_pylist() for c in ("status", "lon", "lat")), strict=True
        ):
            keep = options.include_failed or status == "ok"
            split = options.split_rule.split(lon, lat) if keep else None
            if split is not None:
                counts[split] += 1
            rows.append(split)
        per_shard[index] = rows
    return _Plan(per_shard, counts)


def _batches(path: Path) -> Iterator[pa.Table]:
    # A release is always in the current schema: 1.2 shards (an output not yet migrated, or
    # partly) are re-encoded on the way, 2.0 ones gain null SAR columns, so every data file has
    # one schema.
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_READ_BATCH):
        table = pa.Table.from_batches([batch]).replace_schema_metadata(None)
        yield with_current_columns(table)


class _Writer:
    """Buffers each split's rows and writes a data file (and its index rows) when one is full."""

    def __init__(self, release: ReleaseLayout, plan: _Plan, options: ReleaseOptions) -> None:
        self.release = release
        self.options = options
        self.n_files = {s: math.ceil(plan.counts[s] / options.samples_per_file) for s in SPLITS}
        self.written = dict.fromkeys(SPLITS, 0)
        self.buffers: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
        self.index: list[pa.Table] = []
        self.files: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.num_bytes = dict.fromkeys(SPLITS, 0)
        self.schema: pa.Schema | None = None
        self.bands: list[str] | None = None
        self.values: dict[str, Counter[str]] = {c: Counter() for c in _COUNTED}

    def add(self, split: str, rows: pa.Table) -> None:
        self.buffers[split].append(rows)
        buffered = pa.concat_tables(self.buffers[split])
        while buffered.num_rows >= self.options.samples_per_file:
            self._write(split, buffered.slice(0, self.options.samples_per_file))
            buffered = buffered.slice(self.options.samples_per_file)
        self.buffers[split] = [buffered] if buffered.num_rows else []

    def finish(self) -> None:
        for split in SPLITS:
            if self.buffers[split]:
                self._write(split, pa.concat_tables(self.buffers[split]))
                self.buffers[split] = []

    def _write(self, split: str, rows: pa.Table) -> None:
        rows = rows.combine_chunks()
        bands = _bands_of(rows)
        if self.bands is None or not self.bands:
            self.bands = bands
        elif bands and bands != self.bands:
            raise ReleaseError(
                f"samples with bands {bands} and {self.bands}: release one band set per output"
            )
        for column, counter in self.values.items():
            counter.update(str(v) for v in rows.column(column).to_pylist() if v is not None)
        path = self.release.data_file(split, self.written[split], self.n_files[split])
        relative = self.release.relative(path)
        self.num_bytes[split] += write_table(
            rows,
            path,
            rows_per_group=self.options.rows_per_group,
            extra_metadata={"release": {"split": split, "file": relative}},
        )
        self.schema = self.schema or pq.read_schema(path).remove_metadata()
        self.written[split] += 1
        self.files[split].append(relative)
        self.index.append(_index_rows(path, relative, split, rows))


def _index_rows(path: Path, relative: str, split: str, rows: pa.Table) -> pa.Table:
    """The ``metadata.parquet`` rows of one data file, from its Parquet footer and bytes."""
    metadata = pq.read_metadata(path)
    groups, in_group, offsets, lengths, hashes = [], [], [], [], []
    with path.open("rb") as f:
        for g in range(metadata.num_row_groups):
            offset, length = byte_range(metadata, g)
            f.seek(offset)
            digest = hashlib.sha256(f.read(length)).hexdigest()
            n = metadata.row_group(g).num_rows
            groups += [g] * n
            in_group += list(range(n))
            offsets += [offset] * n
            lengths += [length] * n
            hashes += [digest] * n
    computed = {
        "split": pa.array([split] * rows.num_rows, pa.string()),
        "file": pa.array([relative] * rows.num_rows, pa.string()),
        "row_group": pa.array(groups, pa.int32()),
        "row_in_group": pa.array(in_group, pa.int32()),
        "byte_offset": pa.array(offsets, pa.int64()),
        "byte_length": pa.array(lengths, pa.int64()),
        "range_sha256": pa.array(hashes, pa.string()),
    }
    return pa.table(
        [computed[f.name] if f.name in computed else rows.column(f.name) for f in INDEX_SCHEMA],
        schema=INDEX_SCHEMA,
    )


def _bands_of(table: pa.Table) -> list[str]:
    distinct = {tuple(b) for b in table.column("bands").to_pylist() if b}
    if len(distinct) > 1:
        raise ReleaseError(
            f"samples with different band lists {sorted(distinct)}: release one band set per output"
        )
    return list(next(iter(distinct), ()))


def _write_index(index: pa.Table, path: Path) -> None:
    index = index.replace_schema_metadata({b"geo": geo_metadata(index, ["Polygon"])})
    with atomic_write(path) as tmp:
        pq.write_table(index, tmp, compression="zstd", row_group_size=100_000)


def _write_json(data: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _value_counts(values: list[Any]) -> dict[str, int]:
    return dict(sorted(Counter(str(v) for v in values if v is not None).items()))


def _collection(
    name: str, index: pa.Table, run: dict[str, Any], bands: list[str], counts: dict[str, int]
) -> pystac.Collection:
    boxes = index.column("bbox")
    bbox = [
        pc.min(pc.struct_field(boxes, "xmin")).as_py(),
        pc.min(pc.struct_field(boxes, "ymin")).as_py(),
        pc.max(pc.struct_field(boxes, "xmax")).as_py(),
        pc.max(pc.struct_field(boxes, "ymax")).as_py(),
    ]
    times = index.column("datetime")
    start: dt.datetime | None = pc.min(times).as_py()
    end: dt.datetime | None = pc.max(times).as_py()
    config = run.get("config", {})
    stac_source = config.get("stac", {})
    eo_bands = []
    for name_ in bands:
        band = band_by_name(name_)
        eo_bands.append(
            {
                "name": band.name,
                "common_name": band.common_name,
                "center_wavelength": band.center_wavelength,
            }
        )
    collection = pystac.Collection(
        id=name,
        title=name,
        description=f"eocap release {name}: Sentinel-2 L2A chips with captions grounded on "
        f"Overture Maps ({sum(counts.values())} samples). {ATTRIBUTION}; contains modified "
        "Copernicus Sentinel data.",
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox if None not in bbox else [-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[start, end]]),
        ),
        license="other",
        keywords=["sentinel-2", "multispectral", "captions", "overture-maps"],
        providers=[
            pystac.Provider(
                "European Space Agency / Copernicus",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                url="https://sentinels.copernicus.eu",
            ),
            pystac.Provider(
                "Overture Maps Foundation",
                description=ATTRIBUTION,
                roles=[pystac.ProviderRole.LICENSOR],
                url="https://overturemaps.org",
            ),
            pystac.Provider(
                f"STAC API {stac_source.get('api_url', '?')}",
                description=f"collection {stac_source.get('collection', '?')}",
                roles=[pystac.ProviderRole.HOST],
            ),
            pystac.Provider(
                "eocap",
                description="chips, context, captions",
                roles=[pystac.ProviderRole.PROCESSOR],
            ),
        ],
        summaries=pystac.Summaries(
            {
                "constellation": ["sentinel-2"],
                "gsd": [config.get("chips", {}).get("resolution_m", 10.0)],
                "eo:bands": eo_bands,
                "eocap:periods": [p["name"] for p in config.get("periods", [])],
                "eocap:splits": {s: counts[s] for s in SPLITS},
            }
        ),
    )
    for what, licence, url in LICENCES:
        collection.add_link(
            pystac.Link("license", url, media_type="text/html", title=f"{what}: {licence}")
        )
    collection.add_link(pystac.Link("describedby", "./README.md", media_type="text/markdown"))
    return collection


def make_release(
    output: Path,
    release_dir: Path,
    options: ReleaseOptions | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> ReleaseSummary:
    """Write the release of the built output ``output`` into ``release_dir``.

    Args:
        output: A run's output directory (``run.json``, ``shards/``).
        release_dir: A new or empty folder, or a previous release (its files are replaced).
        options: Split rule, file and row-group sizes, which samples.
        on_shard: Called with (shards done, shards) as the shards are read.

    Raises:
        ReleaseError: if ``output`` is not a built output, has nothing to release, or
            ``release_dir`` holds something else.
    """
    options = options or ReleaseOptions()
    layout = DatasetLayout(output)
    run = _read_run(layout)
    shards = layout.finished_shards()
    if not shards:
        raise ReleaseError(f"{output} has no finished shard: build it with `eocap run CONFIG`")
    plan = _plan(shards, options)
    if not sum(plan.counts.values()):
        raise ReleaseError(
            f"{output} has no ok sample to release: see `eocap status {output}`, or pass "
            "--include-failed"
        )
    release = _prepare(release_dir)
    reviews = read_reviews(layout)
    writer = _Writer(release, plan, options)
    histograms: BandHistograms | None = None
    for done, (index, path) in enumerate(shards.items(), 1):
        splits = plan.splits[index]
        start = 0
        for batch in _batches(path):
            batch_splits = splits[start : start + batch.num_rows]
            start += batch.num_rows
            for split in SPLITS:
                take = [i for i, s in enumerate(batch_splits) if s == split]
                if not take:
                    continue
                rows = _with_reviews(batch.take(take), reviews)
                writer.add(split, rows)
                if split == "train":
                    ok = rows.filter(pc.equal(rows.column("status"), "ok"))
                    histograms = histograms or BandHistograms(_bands_of(ok))
                    histograms.add(read_cubes(ok, "pixels"), read_cubes(ok, "scl"))
        if on_shard:
            on_shard(done, len(shards))
    writer.finish()

    index = pa.concat_tables(writer.index)
    _write_index(index, release.metadata)
    bands = writer.bands or []
    _write_json(
        {
            "bands": histograms.summary() if histograms else {},
            "split": "train",
            "unit": "reflectance x 10000 (offset removed)",
            "valid": f"pixel != 0 and SCL not in {INVALID_SCL}",
            "percentiles": "smallest value with at least p % of the valid pixels at or below it",
        },
        release.band_stats,
    )
    config = run.get("config", {})
    name = str(config.get("name", output.name))
    _write_json(
        _collection(name, index, run, bands, plan.counts).to_dict(include_self_link=False),
        release.collection,
    )
    review_status = index.column("review_status").to_pylist()
    counted = {c: dict(sorted(counter.items())) for c, counter in writer.values.items()}
    facts = CardFacts(
        name=name,
        schema=writer.schema or pa.schema([]),
        files=writer.files,
        counts=plan.counts,
        num_bytes=writer.num_bytes,
        stac={
            k: str(v) for k, v in config.get("stac", {}).items() if k in ("api_url", "collection")
        },
        overture_releases=sorted(counted["overture_release"]),
        captioners=counted["captioner"],
        prompt_versions=counted["prompt_version"],
        caption_flags=_value_counts(pc.list_flatten(index.column("caption_flags")).to_pylist()),
        review_status=_value_counts(review_status),
        edited_captions=sum(counted["caption_original"].values()),
        sar_states=counted["sar_state"],
        coh_states=counted["coh_state"],
        split_rule=options.split_rule.describe(),
        config_hash=str(run.get("config_hash", "")),
        eocap_version={"build": str(run.get("eocap_version", "?")), "release": __version__},
        bands=bands,
        periods=config.get("periods", []),
        include_failed=options.include_failed,
    )
    with atomic_write(release.readme) as tmp:
        tmp.write_text(render_card(facts))
    _write_json(
        {
            "name": name,
            "eocap_version": __version__,
            "source": {
                "config_hash": run.get("config_hash"),
                "eocap_version": run.get("eocap_version"),
                "shards": len(shards),
            },
            "split": options.split_rule.describe(),
            "counts": plan.counts,
            "files": writer.files,
            "samples_per_file": options.samples_per_file,
            "rows_per_row_group": options.rows_per_group,
            "include_failed": options.include_failed,
            "reviews": _value_counts(review_status),
        },
        release.release_json,
    )
    paths = [
        *release.data_files(),
        release.readme,
        release.metadata,
        release.band_stats,
        release.collection,
        release.release_json,
    ]
    names = write_sha256sums(release.sha256sums, release.root, (release.relative(p) for p in paths))
    size = sum((release.root / n).stat().st_size for n in names)
    return ReleaseSummary(release_dir, plan.counts, [*names, "SHA256SUMS"], size)
