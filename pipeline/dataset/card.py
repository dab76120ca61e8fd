"""The release's dataset card: README.md with Hugging Face YAML front matter and a body.

The front matter tells the Hub (and ``datasets.load_dataset``) which files hold which split
(``configs``) and what the columns are (``dataset_info.features``, written from the Arrow
schema the way ``datasets`` writes it); the body says how the data was made and under which
licences it may be used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import yaml

from pipeline.dataset.columns import IMAGE_COLUMNS

__all__ = ["ATTRIBUTION", "LICENCES", "CardFacts", "hf_features", "render_card"]

ATTRIBUTION = "© OpenStreetMap contributors, Overture Maps Foundation"
"""The attribution Overture's licences ask for wherever its data is shown."""

LICENCES: tuple[tuple[str, str, str], ...] = (
    (
        "Sentinel-2 pixels (`pixels`, `scl`, `rgb`)",
        "Copernicus Sentinel data terms (free, full and open; attribution: 'Contains modified "
        "Copernicus Sentinel data [year]')",
        "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
    ),
    (
        "Overture base (water, land use), buildings, transportation",
        "ODbL-1.0",
        "https://opendatacommons.org/licenses/odbl/1-0/",
    ),
    (
        "Overture base land cover",
        "CC-BY-4.0",
        "https://creativecommons.org/licenses/by/4.0/",
    ),
    (
        "Overture places",
        "CDLA-Permissive-2.0",
        "https://cdla.dev/permissive-2-0/",
    ),
)
"""(what, licence, where to read it) for every source the release carries."""

# Arrow type names that `datasets` spells differently.
_DTYPES = {
    "double": "float64",
    "float": "float32",
    "halffloat": "float16",
    "date32[day]": "date32",
    "date64[ms]": "date64",
}


def _feature(arrow_type: pa.DataType) -> dict[str, Any]:
    """The YAML feature of one Arrow type, as ``datasets`` writes it (without the name)."""
    if pa.types.is_struct(arrow_type):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in arrow_type]}
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        inner = _feature(arrow_type.value_type)
        # `list: {dtype: X}` is written `list: X`, `list: {struct: [...]}` as `list: [...]`
        item = inner.get("dtype", inner.get("struct")) if len(inner) == 1 else inner
        out: dict[str, Any] = {"list": item}
        if pa.types.is_fixed_size_list(arrow_type):
            out["length"] = arrow_type.list_size
        return out
    if pa.types.is_timestamp(arrow_type):
        tz = f", tz={arrow_type.tz}" if arrow_type.tz else ""
        return {"dtype": f"timestamp[{arrow_type.unit}{tz}]"}
    name = str(arrow_type)
    return {"dtype": _DTYPES.get(name, name)}


def hf_features(schema: pa.Schema) -> list[dict[str, Any]]:
    """``dataset_info.features`` of a data file schema; image columns as ``image``."""
    return [
        {"name": f.name, "dtype": "image"}
        if f.name in IMAGE_COLUMNS
        else {"name": f.name, **_feature(f.type)}
        for f in schema
    ]


@dataclass
class CardFacts:
    """What the card says about one release.

    Attributes:
        name: Dataset name (the run config's ``name``).
        schema: Arrow schema of the data files.
        files: Data files per split, relative to the release root.
        counts: Samples per split.
        num_bytes: Bytes of the data files per split.
        stac: STAC API URL and collection.
        overture_releases: Overture releases the context comes from.
        captioners: Captioner ids with their sample counts.
        prompt_versions: Prompt versions with their sample counts.
        caption_flags: Caption-check flags with their sample counts.
        review_status: Review statuses with their sample counts.
        edited_captions: Captions replaced by a reviewer's edit.
        sar_states: Samples per ``sar_state`` (empty: the release has no Sentinel-1).
        coh_states: Samples per ``coh_state`` (empty: the release has no coherence).
        split_rule: The split rule (:meth:`SplitRule.describe`).
        config_hash: The source run's config hash.
        eocap_version: Versions of eocap that built and released the data.
        bands: Band names in cube order.
        periods: Period names with their date ranges.
        include_failed: Whether failed samples are in the release.
    """

    name: str
    schema: pa.Schema
    files: Mapping[str, Sequence[str]]
    counts: Mapping[str, int]
    num_bytes: Mapping[str, int]
    stac: Mapping[str, str]
    overture_releases: Sequence[str]
    captioners: Mapping[str, int]
    prompt_versions: Mapping[str, int]
    caption_flags: Mapping[str, int]
    review_status: Mapping[str, int]
    edited_captions: int
    split_rule: Mapping[str, Any]
    config_hash: str
    eocap_version: Mapping[str, str]
    bands: Sequence[str]
    periods: Sequence[Mapping[str, str]] = field(default_factory=list)
    include_failed: bool = False
    sar_states: Mapping[str, int] = field(default_factory=dict)
    coh_states: Mapping[str, int] = field(default_factory=dict)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "1M<n<10M"


def _front_matter(facts: CardFacts) -> dict[str, Any]:
    splits = [s for s, files in facts.files.items() if files]
    return {
        "license": "other",
        "license_name": "copernicus-sentinel-and-overture",
        "pretty_name": facts.name,
        "task_categories": ["image-to-text", "zero-shot-image-classification"],
        "tags": [
            "sentinel-2",
            *(["sentinel-1", "sar"] if facts.sar_states else []),
            "multispectral",
            "remote-sensing",
            "geospatial",
            "overture-maps",
        ],
        "size_categories": [_size_category(sum(facts.counts.values()))],
        "configs": [
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*-of-*.parquet"} for s in splits],
            }
        ],
        "dataset_info": {
            "features": hf_features(facts.schema),
            "splits": [
                {"name": s, "num_bytes": facts.num_bytes[s], "num_examples": facts.counts[s]}
                for s in splits
            ],
            "download_size": sum(facts.num_bytes.values()),
        },
    }


def _counts(counts: Mapping[str, int], empty: str = "none") -> str:
    if not counts:
        return empty
    return ", ".join(f"`{k}` {v}" for k, v in sorted(counts.items()))


def _having(states: Mapping[str, int], total: int) -> str:
    """How many samples of ``total`` are in state ``ok``, and their share."""
    ok = states.get("ok", 0)
    return f"{ok} of {total} samples ({ok / max(total, 1):.0%}) have"


def _sar_lines(states: Mapping[str, int], total: int) -> list[str]:
    """The card's Sentinel-1 line: the share of samples with SAR and why the others have none."""
    if not states:
        return []
    return [
        f"- Sentinel-1: {_having(states, total)} backscatter "
        "from the acquisition closest to their scene (`sar_db`: int16 hundredths of a dB on "
        "the chip's grid, -32768 = nodata, channels in `sar_polarisations`); `sar_state` "
        f"(samples): {_counts(states)}. A sample without SAR keeps its optical data. "
        "Copernicus Sentinel-1 data, under the Sentinel terms below.",
    ]


def _coherence_lines(states: Mapping[str, int], total: int) -> list[str]:
    """The card's coherence line: the share of samples with it and why the others have none."""
    if not states:
        return []
    return [
        f"- Sentinel-1 coherence: {_having(states, total)} interferometric coherence from the "
        "item closest to their scene (`coherence`: uint8 hundredths on the chip's grid, 255 = "
        f"nodata); `coh_state` (samples): {_counts(states)}.",
    ]


def _body(facts: CardFacts) -> str:
    total = sum(facts.counts.values())
    split_line = ", ".join(f"{s} {facts.counts[s]}" for s in facts.counts)
    rule = facts.split_rule
    fractions = "/".join(f"{f:g}" for f in rule["fractions"])
    overture = ", ".join(f"`{r}`" for r in facts.overture_releases)
    periods = ", ".join(f"{p['name']} ({p['start']} to {p['end']})" for p in facts.periods)
    lines = [
        f"# {facts.name}",
        "",
        f"Multispectral Sentinel-2 L2A chips with captions: {total} samples ({split_line}). "
        "Each row holds the band cube (`pixels`, uint16 DN = reflectance x 10000, 0 = nodata), "
        "the scene classification (`scl`), a true-colour PNG (`rgb`), the Overture Maps context "
        "the caption was grounded on, and the caption with what the caption checks found.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="RELEASE_DIR")  # or the Hub repo id',
        "```",
        "",
        "```sql",
        "SELECT sample_id, caption FROM read_parquet('RELEASE_DIR/data/train-*.parquet');",
        "```",
        "",
        "`metadata.parquet` (GeoParquet) indexes every sample: its file, row group and that row "
        "group's byte range with a sha256, so one HTTP range read fetches one sample. "
        "`band_stats.json` holds per-band mean, std and percentiles over the valid pixels of the "
        "train split, for normalisation. `collection.json` is a STAC collection of the release.",
        "",
        "## How it was made",
        "",
        f"- Bands, in cube order: {', '.join(facts.bands)}.",
        f"- Scenes: STAC API `{facts.stac.get('api_url', '?')}`, collection "
        f"`{facts.stac.get('collection', '?')}`; per location and period the least cloudy "
        "scene whose COGs could be read.",
        f"- Periods: {periods or 'see release.json'}.",
        *_sar_lines(facts.sar_states, total),
        *_coherence_lines(facts.coh_states, total),
        f"- Map context: Overture Maps release {overture or '?'}.",
        f"- Captioners: {_counts(facts.captioners)}; prompt versions: "
        f"{_counts(facts.prompt_versions)}.",
        f"- Caption-check flags (samples): {_counts(facts.caption_flags)}.",
        f"- Expert review (samples): {_counts(facts.review_status, 'no sample reviewed')}; "
        f"{facts.edited_captions} captions replaced by a reviewer's edit (the original is in "
        "`caption_original`).",
        f"- Samples: {'all statuses' if facts.include_failed else 'only `status = ok`'}.",
        f"- Splits are spatial: cells of {rule['cell_deg']:g} degrees, split by a seeded hash "
        f"(seed {rule['seed']}, fractions {fractions} for train/validation/test), so no "
        "location and no cell is in two splits.",
        f"- Built by eocap {facts.eocap_version.get('build', '?')} (config hash "
        f"`{facts.config_hash}`), released by eocap {facts.eocap_version.get('release', '?')}.",
        "",
        "## Licences and attribution",
        "",
        "The data is a combination of sources under their own terms:",
        "",
    ]
    lines += [f"- {what}: {licence} ({url})" for what, licence, url in LICENCES]
    lines += [
        "",
        "Captions and the map context derive from Overture Maps data; when you show them, "
        f"credit: **{ATTRIBUTION}**. Sentinel-2 pixels: **Contains modified Copernicus "
        "Sentinel data**.",
        "",
    ]
    return "\n".join(lines)


def render_card(facts: CardFacts) -> str:
    """README.md of a release: YAML front matter, then the body."""
    front = yaml.safe_dump(_front_matter(facts), sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n\n{_body(facts)}"
