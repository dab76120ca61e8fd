"""The dataset contract is defined once (pipeline/dataset/) and everything else agrees with it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.types import ChipStats
from pipeline.dataset.columns import (
    CAPTION_OUTPUT_COLUMNS,
    COLUMNS,
    CUBE_COLUMNS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    ColumnGroup,
    SampleRecord,
    columns_in,
    render_docs,
    shard_schema,
)
from pipeline.dataset.docs import DOCS_COMMAND, doc_tables
from pipeline.dataset.geoparquet import geo_metadata
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.writer import write_shard
from pipeline.io.atomic import temp_path
from tests.conftest import REPO_ROOT

SCHEMA_DOC = REPO_ROOT / "docs" / "dataset-schema.md"
COMMITTED_SCHEMA = REPO_ROOT / "tests" / "data" / f"shard_schema_v{SCHEMA_VERSION}.txt"


@pytest.mark.parametrize("doc", [SCHEMA_DOC, REPO_ROOT / "docs" / "release.md"], ids=str)
def test_docs_show_the_generated_tables(doc):
    text = doc.read_text()
    assert render_docs(text, doc_tables(doc)) == text, (
        f"{doc.name} differs from the definitions in pipeline/dataset/; run: {DOCS_COMMAND}"
    )


def test_schema_is_the_committed_one_of_its_version():
    # A column change must bump SCHEMA_VERSION: then this file is missing, and is written anew.
    schema = shard_schema(12, 264)
    lines = [f"{f.name}: {f.type}" for f in schema]
    assert COMMITTED_SCHEMA.exists(), f"new schema version {SCHEMA_VERSION}: commit its columns"
    assert lines == COMMITTED_SCHEMA.read_text().splitlines(), (
        f"the shard schema changed under version {SCHEMA_VERSION}: bump SCHEMA_VERSION"
    )
    assert all(f.nullable for f in schema) and schema.metadata is None


def test_record_fields_are_the_columns():
    record_fields = dataclasses.fields(SampleRecord)
    assert [f.name for f in record_fields] == [c.name for c in COLUMNS]
    assert [c.name for c in COLUMNS] == shard_schema(2, 4).names
    for f, column in zip(record_fields, COLUMNS, strict=True):
        assert column.nullable == (f.default is None), f.name
        assert column.nullable == ("None" in str(f.type)), f.name  # the annotation says so too
        assert column.groups, f"{f.name} belongs to no group"
    required = {c.name for c in COLUMNS if not c.nullable}
    assert required == {
        "sample_id",
        "status",
        "location_id",
        "lon",
        "lat",
        "period",
        "period_start",
        "period_end",
    }
    with pytest.raises(TypeError):
        SampleRecord(sample_id="s")  # type: ignore[call-arg]


def test_groups_readers_select():
    assert CUBE_COLUMNS == ("pixels", "scl", "sar_db", "coherence")
    # build.py copies ChipStats onto the record field by field, the caption stage back.
    assert columns_in(ColumnGroup.CHIP_STATS) == tuple(
        f.name for f in dataclasses.fields(ChipStats)
    )
    assert set(SUMMARY_COLUMNS) == {
        "sample_id",
        "status",
        "lat",
        "lon",
        "period",
        "datetime",
        "cloud_fraction",
        "nodata_fraction",
        "captioner",
        "prompt_version",
        "context",
        "sar_state",
        "coh_state",
    }
    assert CAPTION_OUTPUT_COLUMNS[:3] == ("status", "error_reason", "error_message")
    assert "caption" in CAPTION_OUTPUT_COLUMNS and "pixels" not in CAPTION_OUTPUT_COLUMNS
    assert not set(CAPTION_OUTPUT_COLUMNS) & {"sample_id", "context", "rgb", "datetime"}


def test_written_metadata(tmp_path):
    record = SampleRecord(
        sample_id="s_0000000000000001",
        status="ok",
        location_id="loc_1",
        lon=10.9,
        lat=47.5,
        period="summer",
        period_start=dt.date(2024, 6, 1),
        period_end=dt.date(2024, 8, 31),
        bbox={"xmin": 10.8, "ymin": 47.4, "xmax": 11.0, "ymax": 47.6},
    )
    path = tmp_path / "00000.parquet"
    write_shard([record], path, n_bands=2, size=4, extra_metadata={"shard": 0})
    meta = pq.read_schema(path).metadata
    assert list(meta) == [b"geo", b"huggingface", b"eocap"]
    assert meta[b"geo"] == (
        b'{"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": '
        b'{"encoding": "WKB", "geometry_types": ["Polygon"], "covering": {"bbox": '
        b'{"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"], "xmax": ["bbox", "xmax"], '
        b'"ymax": ["bbox", "ymax"]}}, "bbox": [10.8, 47.4, 11.0, 47.6]}}}'
    )
    assert json.loads(meta[b"huggingface"]) == {"info": {"features": {"rgb": {"_type": "Image"}}}}
    eocap = json.loads(meta[b"eocap"])
    assert eocap == {"schema_version": SCHEMA_VERSION, "cubes": eocap["cubes"], "shard": 0}
    assert eocap["cubes"]["pixels"] == {
        "dtype": "<u2",
        "shape": [2, 4, 4],
        "dims": ["band", "y", "x"],
        "order": "C",
        "encoding": "byte_planes_le",
        "bands": None,  # the one record has no bands
        "scale": None,
        "offset": None,
    }
    assert eocap["cubes"]["scl"]["dtype"] == "|u1" and eocap["cubes"]["scl"]["shape"] == [4, 4]


def test_geo_metadata_leaves_out_the_bounds_of_no_boxes():
    boxes = pa.array([None], type=shard_schema(1, 1).field("bbox").type)
    geo = json.loads(geo_metadata(pa.table({"bbox": boxes}), ["Polygon"]))
    assert "bbox" not in geo["columns"]["geometry"]
    empty = pa.table({"bbox": boxes.slice(0, 0)})
    assert "bbox" not in json.loads(geo_metadata(empty, ["Point"]))["columns"]["geometry"]


def test_layout_paths(tmp_path):
    layout = DatasetLayout(tmp_path)
    relative = {
        "run_json": "run.json",
        "manifest": "manifest.parquet",
        "report": "report.json",
        "shards_dir": "shards",
        "stats_dir": "shards/_stats",
        "review_results_dir": "shards/_review",
        "review_dir": "review",
        "review_db": "review/reviews.db",
        "review_chips_dir": "review/chips",
        "overture_dir": "overture",
        "releases_dir": "releases",
    }
    for name, path in relative.items():
        assert getattr(layout, name) == tmp_path / path, name
    assert layout.shards_glob == str(tmp_path / "shards" / "*.parquet")
    assert layout.shard_paths(7) == (
        tmp_path / "shards" / "00007.parquet",
        tmp_path / "shards" / "_stats" / "00007_stats.json",
    )
    assert layout.review_results_path(7) == tmp_path / "shards" / "_review" / "00007_review.parquet"
    assert layout.overture_extract("2026-01-21.0") == tmp_path / "overture" / "2026-01-21.0"


def test_layout_finds_done_partial_and_temporary_files(tmp_path):
    layout = DatasetLayout(tmp_path)
    assert layout.finished_shards() == {} and layout.review_results() == {}
    for index in (0, 1, 2):
        layout.stats_dir.mkdir(parents=True, exist_ok=True)
        layout.shard_path(index).write_bytes(b"")
    layout.stats_path(0).write_text("{}")
    layout.stats_path(2).write_text("{}")
    layout.stats_path(5).write_text("{}")  # stats without a shard file: not a finished shard
    tmp = temp_path(layout.shard_path(3))
    tmp.write_bytes(b"")
    stale_stats = temp_path(layout.stats_path(1))
    stale_stats.write_text("")
    assert layout.finished_shards() == {0: layout.shard_path(0), 2: layout.shard_path(2)}
    assert [layout.is_partial(i) for i in range(5)] == [False, True, False, True, False]
    assert sorted(layout.temp_files()) == sorted([tmp, stale_stats])
    layout.review_results_dir.mkdir()
    layout.review_results_path(12).write_bytes(b"")
    assert layout.review_results() == {12: layout.review_results_path(12)}


def test_consumers_name_only_columns_of_the_contract():
    # The review app picks the columns a review item needs by name; a renamed column must fail
    # here, not when an expert opens a campaign.
    from validation.campaigns import _ROW_COLUMNS

    names = {c.name for c in COLUMNS}
    assert set(_ROW_COLUMNS) <= names, set(_ROW_COLUMNS) - names
