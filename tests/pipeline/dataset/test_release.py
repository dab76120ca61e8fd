"""``eocap release`` and ``eocap export-captions`` on a small built dataset."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from pipeline.dataset.band_stats import INVALID_SCL, PERCENTILES
from pipeline.dataset.card import hf_features
from pipeline.dataset.export import CAPTION_TABLE_SCHEMA, caption_table, export_captions
from pipeline.dataset.layout import SPLITS, DatasetLayout, ReleaseLayout
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.release import ReleaseOptions, make_release
from pipeline.dataset.splits import SplitRule
from tests.pipeline.dataset.release_fixture import RULE, reviewed_copy

OPTIONS = ReleaseOptions(split_rule=RULE, samples_per_file=5, rows_per_group=4)
EDITED = "A reviewer's corrected caption: fields and a village."


@pytest.fixture(scope="module")
def output(review_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the small dataset with review results: one caption edited, one accepted."""
    ok = pq.read_table(DatasetLayout(review_dataset).shard_path(0), columns=["sample_id", "status"])
    ids = [s for s, st in zip(*ok.to_pydict().values(), strict=True) if st == "ok"]
    reviews = pa.table(
        {
            "sample_id": ids[:2],
            "review_status": ["edited", "accepted"],
            "edited_caption": [EDITED, None],
        }
    )
    return reviewed_copy(
        review_dataset, tmp_path_factory.mktemp("release-src") / "dataset", reviews
    )


@pytest.fixture(scope="module")
def release(output: Path, tmp_path_factory: pytest.TempPathFactory) -> ReleaseLayout:
    root = tmp_path_factory.mktemp("release") / "r1"
    make_release(output, root, OPTIONS)
    return ReleaseLayout(root)


@pytest.fixture(scope="module")
def index(release: ReleaseLayout) -> pa.Table:
    return pq.read_table(release.metadata)


def _shard_rows(output: Path, columns: list[str]) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(p, columns=columns) for p in DatasetLayout(output).finished_shards().values()
    )


def test_layout_and_checksums(release: ReleaseLayout, index: pa.Table) -> None:
    info = json.loads(release.release_json.read_text())
    lines = release.sha256sums.read_text().splitlines()
    summed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    expected = {
        "README.md",
        "metadata.parquet",
        "band_stats.json",
        "collection.json",
        "release.json",
        *(release.relative(p) for p in release.data_files()),
    }
    assert set(summed) == expected
    assert [line.split("  ", 1)[1] for line in lines] == sorted(summed)
    for name, digest in summed.items():
        assert hashlib.sha256((release.root / name).read_bytes()).hexdigest() == digest
    for split in SPLITS:
        n = info["counts"][split]
        assert n > 0, f"no {split} sample: choose another RULE"
        files = info["files"][split]
        assert len(files) == -(-n // OPTIONS.samples_per_file)
        assert files == [
            f"data/{split}-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))
        ]
        assert pc.sum(pc.equal(index.column("split"), split)).as_py() == n
        rows = sum(pq.read_metadata(release.root / f).num_rows for f in files)
        assert rows == n
    # Rows are sorted by split, then source order: the index follows the files.
    assert index.column("file").to_pylist() == sorted(
        index.column("file").to_pylist(),
        key=lambda f: (SPLITS.index(f.split("/")[1].split("-")[0]), f),
    )


def test_splits_are_spatial(output: Path, release: ReleaseLayout, index: pa.Table) -> None:
    data = pa.concat_tables(
        pq.read_table(p, columns=["sample_id", "location_id", "lon", "lat"])
        for p in release.data_files()
    )
    split_of = dict(zip(*index.select(["sample_id", "split"]).to_pydict().values(), strict=True))
    by_location: dict[str, set[str]] = {}
    by_cell: dict[tuple[int, int], set[str]] = {}
    for sid, loc, lon, lat in zip(*data.to_pydict().values(), strict=True):
        by_location.setdefault(loc, set()).add(split_of[sid])
        by_cell.setdefault(RULE.cell(lon, lat), set()).add(split_of[sid])
    assert all(len(s) == 1 for s in by_location.values())
    assert all(len(s) == 1 for s in by_cell.values())
    assert len(by_cell) >= 3


def test_split_rule_property() -> None:
    rng = random.Random(1)
    rule = SplitRule()
    seen: dict[tuple[int, int], str] = {}
    for _ in range(20_000):
        lon, lat = rng.uniform(-180, 180), rng.uniform(-80, 80)
        split = rule.split(lon, lat)
        assert seen.setdefault(rule.cell(lon, lat), split) == split
    cells = [(x, y) for x in range(100) for y in range(100)]
    shares = {s: sum(rule.cell_split(c) == s for c in cells) / len(cells) for s in SPLITS}
    assert shares["train"] == pytest.approx(0.8, abs=0.02)
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    assert rule.cell(10.3, 47.0) == (103, 470)  # not 102 from 10.3 / 0.1 = 102.999...
    assert SplitRule(seed=1).describe()["seed"] == 1
    assert [rule.cell_split(c) for c in cells[:50]] != [
        SplitRule(seed=1).cell_split(c) for c in cells[:50]
    ]
    with pytest.raises(ValueError, match="sum to"):
        SplitRule((0.5, 0.1, 0.1))


def test_only_ok_samples(output: Path, index: pa.Table) -> None:
    shards = _shard_rows(output, ["sample_id", "status"])
    ok = set(shards.filter(pc.equal(shards.column("status"), "ok")).column("sample_id").to_pylist())
    assert ok
    assert set(index.column("sample_id").to_pylist()) == ok
    assert index.num_rows == len(ok)


def test_include_failed(output: Path, tmp_path: Path) -> None:
    opts = ReleaseOptions(split_rule=RULE, samples_per_file=50, include_failed=True)
    summary = make_release(output, tmp_path / "all", opts)
    assert sum(summary.counts.values()) == _shard_rows(output, ["sample_id"]).num_rows


def test_reviews_applied(output: Path, release: ReleaseLayout) -> None:
    data = pa.concat_tables(
        pq.read_table(p, columns=["sample_id", "caption", "caption_original", "review_status"])
        for p in release.data_files()
    ).to_pylist()
    original = dict(
        zip(*_shard_rows(output, ["sample_id", "caption"]).to_pydict().values(), strict=True)
    )
    reviewed = {r["sample_id"]: r for r in data if r["review_status"]}
    assert sorted(r["review_status"] for r in reviewed.values()) == ["accepted", "edited"]
    for sid, row in reviewed.items():
        if row["review_status"] == "edited":
            assert row["caption"] == EDITED
            assert row["caption_original"] == original[sid]
        else:
            assert row["caption"] == original[sid]
            assert row["caption_original"] is None
    for row in data:
        if not row["review_status"]:
            assert row["caption"] == original[row["sample_id"]]
    card = release.readme.read_text()
    assert "`accepted` 1, `edited` 1" in card
    assert "1 captions replaced" in card


def test_release_is_deterministic(output: Path, release: ReleaseLayout, tmp_path: Path) -> None:
    again = tmp_path / "r2"
    make_release(output, again, OPTIONS)
    first = sorted(p.relative_to(release.root) for p in release.root.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (release.root / rel).read_bytes() == (again / rel).read_bytes(), rel
    # Released again into the same folder: old data files go, the result is the same.
    make_release(output, again, ReleaseOptions(split_rule=RULE, samples_per_file=500))
    assert len(ReleaseLayout(again).data_files()) == 3
    make_release(output, again, OPTIONS)
    assert (again / "SHA256SUMS").read_bytes() == release.sha256sums.read_bytes()


def test_byte_ranges_fetch_the_sample(release: ReleaseLayout, index: pa.Table) -> None:
    for row in index.to_pylist():
        path = release.root / row["file"]
        with path.open("rb") as f:
            f.seek(row["byte_offset"])
            chunk = f.read(row["byte_length"])
        assert len(chunk) == row["byte_length"]
        assert hashlib.sha256(chunk).hexdigest() == row["range_sha256"]
        group = pq.ParquetFile(path).read_row_group(row["row_group"], columns=["sample_id"])
        assert group.column("sample_id")[row["row_in_group"]].as_py() == row["sample_id"]
    meta = pq.read_metadata(release.data_files()[0])
    assert meta.row_group(0).num_rows == OPTIONS.rows_per_group
    # Consecutive row groups tile the file: each range ends where the next begins.
    first = index.filter(pc.equal(index.column("file"), index.column("file")[0]))
    starts = sorted({(r["byte_offset"], r["byte_length"]) for r in first.to_pylist()})
    for (a, n), (b, _) in itertools.pairwise(starts):
        assert a + n == b


def test_metadata_columns(release: ReleaseLayout, index: pa.Table) -> None:
    assert index.column_names == [
        "sample_id",
        "split",
        "file",
        "row_group",
        "row_in_group",
        "byte_offset",
        "byte_length",
        "range_sha256",
        "geometry",
        "bbox",
        "lon",
        "lat",
        "datetime",
        "period",
        "cloud_fraction",
        "classes",
        "caption_flags",
        "review_status",
    ]
    geo = json.loads(pq.read_schema(release.metadata).metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]


def test_metadata_opens_in_geopandas(release: ReleaseLayout, index: pa.Table) -> None:
    # geopandas is a dependency of the release contract (docs/release.md); no skip.
    import geopandas

    frame = geopandas.read_parquet(release.metadata)
    assert len(frame) == index.num_rows
    assert frame.crs is not None and frame.crs.to_string() == "OGC:CRS84"  # GeoParquet default
    assert frame.geometry.is_valid.all()
    assert frame.total_bounds[0] >= 10.8


def test_opens_with_datasets_and_duckdb(release: ReleaseLayout, tmp_path: Path) -> None:
    import datasets
    import duckdb

    info = json.loads(release.release_json.read_text())
    loaded = datasets.load_dataset(
        "parquet", data_dir=str(release.root), cache_dir=str(tmp_path / "hf")
    )
    assert {s: loaded[s].num_rows for s in loaded} == info["counts"]
    row = loaded["train"][0]
    assert row["rgb"].mode == "RGB"
    # Schema 2.0: the cube is one binary value, (bands, size, size) uint16 as byte planes.
    cube = json.loads(pq.read_schema(release.data_files()[0]).metadata[b"eocap"])["cubes"]
    assert cube["pixels"]["shape"][0] == len(row["bands"])
    assert len(row["pixels"]) == 2 * math.prod(cube["pixels"]["shape"])
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{release.data_dir}/*.parquet')").fetchone()
    assert n == (sum(info["counts"].values()),)
    joined = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{release.data_dir}/*.parquet') d "
        f"JOIN read_parquet('{release.metadata}') m USING (sample_id) WHERE d.caption IS NOT NULL"
    ).fetchone()
    assert joined == n


def test_card(release: ReleaseLayout) -> None:
    import datasets

    text = release.readme.read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    data_files = front["configs"][0]["data_files"]
    assert [d["split"] for d in data_files] == list(SPLITS)
    schema = pq.read_schema(release.data_files()[0])
    assert front["dataset_info"]["features"] == hf_features(schema)
    # The features are those `datasets` reads from the files (rgb an Image).
    written = datasets.Features._from_yaml_list(front["dataset_info"]["features"])
    assert written == datasets.Features.from_arrow_schema(schema)
    assert "© OpenStreetMap contributors, Overture Maps Foundation" in text
    for licence in ("ODbL-1.0", "CC-BY-4.0", "CDLA-Permissive-2.0", "Copernicus Sentinel"):
        assert licence in text
    assert "template" in text  # the captioner
    body = text.split("---\n", 2)[2]
    assert "Overture Maps release" in body and "STAC API" in body


def test_band_stats_match_numpy(release: ReleaseLayout) -> None:
    stats = json.loads(release.band_stats.read_text())
    files = [p for p in release.data_files() if p.name.startswith("train-")]
    table = pa.concat_tables(pq.read_table(p, columns=["pixels", "scl", "bands"]) for p in files)
    pixels, scl = read_cubes(table, "pixels"), read_cubes(table, "scl")
    clear = ~np.isin(scl, INVALID_SCL)
    for b, name in enumerate(table.column("bands")[0].as_py()):
        values = pixels[:, b][clear & (pixels[:, b] != 0)]
        got = stats["bands"][name]
        assert got["valid_pixels"] == values.size
        assert got["mean"] == pytest.approx(values.mean(dtype=np.float64), rel=1e-12)
        assert got["std"] == pytest.approx(values.std(dtype=np.float64), rel=1e-9)
        for p in PERCENTILES:
            assert got[f"p{p}"] == int(np.percentile(values, p, method="inverted_cdf"))


def test_collection(release: ReleaseLayout, index: pa.Table) -> None:
    import pystac

    collection = pystac.Collection.from_file(str(release.collection))
    bbox = collection.extent.spatial.bboxes[0]
    assert bbox[0] == pc.min(pc.struct_field(index.column("bbox"), "xmin")).as_py()
    start, end = collection.extent.temporal.intervals[0]
    assert start == pc.min(index.column("datetime")).as_py()
    assert end == pc.max(index.column("datetime")).as_py()
    bands = collection.summaries.get_list("eo:bands")
    assert bands is not None and bands[0]["name"] == "B01"
    assert collection.license == "other"
    assert {link.rel for link in collection.links} >= {"license"}


def test_export_captions(output: Path, tmp_path: Path) -> None:
    table = caption_table(output)
    assert table.schema == CAPTION_TABLE_SCHEMA
    assert table.column_names == [
        "caption",
        "question_1",
        "question_2",
        "question_3",
        "file",
        "sample_id",
        "time_id",
        "classes",
        "tags",
        "names",
    ]
    shards = _shard_rows(output, ["sample_id", "status", "caption", "period", "classes"])
    ok = shards.filter(pc.equal(shards.column("status"), "ok")).to_pylist()
    assert table.num_rows == len(ok)
    periods = [
        p["name"] for p in json.loads((output / "run.json").read_text())["config"]["periods"]
    ]
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    for shard_row in ok:
        row = rows[shard_row["sample_id"]]
        assert row["caption"] == shard_row["caption"]
        assert row["classes"] == shard_row["classes"]
        assert row["time_id"] == periods.index(shard_row["period"])
        assert row["question_1"] is None  # the template captioner asks no question
        assert row["file"].startswith("shards/")
    assert export_captions(output, tmp_path / "c.parquet") == table.num_rows
    assert pq.read_table(tmp_path / "c.parquet").equals(table)
    assert export_captions(output, tmp_path / "c.csv") == table.num_rows
    import pyarrow.csv as pcsv

    csv = pcsv.read_csv(tmp_path / "c.csv")
    assert csv.column_names == table.column_names
    assert json.loads(csv.column("classes")[0].as_py()) == table.column("classes")[0].as_py()


def test_cli(output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "release",
            str(output),
            str(tmp_path / "rel"),
            "--cell-deg",
            "0.01",
            "--fractions",
            "0.5,0.25,0.25",
            "--samples-per-file",
            "5",
        ]
    )
    assert code == 0
    assert (tmp_path / "rel" / "SHA256SUMS").exists()
    assert main(["export-captions", str(output), str(tmp_path / "c.csv")]) == 0
    assert main(["release", str(tmp_path), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "has no run.json" in err and err.count("\n") >= 1
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["release", str(output), str(tmp_path / "busy")]) == 2
    assert "not empty and holds no release" in capsys.readouterr().err
    assert main(["release", str(output), str(tmp_path / "y"), "--fractions", "0.5,0.5,0.5"]) == 2
