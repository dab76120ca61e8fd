"""`eocap pull` and `eocap verify` against a tiny release served by a real HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.cli import main as eocap
from pipeline.dataset.integrity import parse_sha256sums
from pipeline.dataset.layout import ReleaseLayout
from pipeline.dataset.pull import (
    PullError,
    PullFilter,
    plan_pull,
    pull_release,
)
from pipeline.dataset.verify import verify_release
from pipeline.io.remote import open_release_source
from tests.conftest import REPO_ROOT
from tests.pipeline.dataset.release_fixture import (
    RecordingServer,
    build_release,
    recording_server,
    reviewed_copy,
)

HUB_PATH = "datasets/eocap/tiny/resolve/main"
"""Where the release lies under the fake Hub's root: the Hub's resolve URL layout."""


@pytest.fixture(scope="module")
def hub_root(review_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    build_release(review_dataset, tmp_path_factory.mktemp("src"), root / HUB_PATH)
    return root


@pytest.fixture(scope="module")
def release(hub_root: Path) -> Path:
    return hub_root / HUB_PATH


@pytest.fixture
def server(release: Path) -> Iterator[RecordingServer]:
    with recording_server(release) as s:
        yield s


def _index(root: Path) -> pa.Table:
    return pq.read_table(root / ReleaseLayout.INDEX)


def _rows(root: Path, sample_ids: list[str]) -> pa.Table:
    """The data rows of ``sample_ids``, in that order, read from every data file of a release."""
    table = pa.concat_tables(pq.read_table(p) for p in sorted((root / "data").glob("*.parquet")))
    position = {sid: i for i, sid in enumerate(table.column("sample_id").to_pylist())}
    return table.take([position[s] for s in sample_ids])


def _pull(source: str, dest: Path, filters: PullFilter) -> list[str]:
    with open_release_source(source) as src:
        return pull_release(plan_pull(src, dest, filters))


def test_release_fixture_verifies(release: Path) -> None:
    index = _index(release)
    assert verify_release(release) == []
    assert set(index.column("split").to_pylist()) == {"train", "validation", "test"}
    assert index.num_rows >= 8


def test_pull_over_http_fetches_exactly_the_matching_rows(
    release: Path, server: RecordingServer, tmp_path: Path
) -> None:
    index = _index(release).to_pylist()
    filters = PullFilter(split="train", review_status="accepted")
    expected = [
        r["sample_id"] for r in index if r["split"] == "train" and r["review_status"] == "accepted"
    ]
    dest = tmp_path / "pulled"

    assert (
        eocap(["pull", server.url, str(dest), "--split", "train", "--review-status", "accepted"])
        == 0
    )

    pulled = _index(dest)
    assert expected and len(expected) < sum(r["split"] == "train" for r in index)
    assert pulled.column("sample_id").to_pylist() == expected
    # Byte-identical rows: every column decodes to the source's values.
    assert _rows(dest, expected).equals(_rows(release, expected))
    assert verify_release(dest) == []
    assert eocap(["verify", str(dest)]) == 0
    record = json.loads((dest / "release.json").read_text())["pulled_from"]
    assert record["filters"] == filters.record()
    assert record["samples"] == {"train": len(expected)}
    # Partly selected files came by row group: Range requests only, no whole-file GET.
    for file in {r["file"] for r in index if r["sample_id"] in expected}:
        ranges = server.fetched(file)
        assert ranges and all(ranges), (file, ranges)
        n_groups = len(
            {r["row_group"] for r in index if r["file"] == file and r["sample_id"] in expected}
        )
        assert len(ranges) == n_groups + 1  # the footer, then each selected row group once


def test_whole_files_are_downloaded_once_and_kept_byte_identical(
    release: Path, server: RecordingServer, tmp_path: Path
) -> None:
    dest = tmp_path / "pulled"
    _pull(server.url, dest, PullFilter(split="validation"))
    index = _index(release).to_pylist()
    files = sorted({r["file"] for r in index if r["split"] == "validation"})
    for k, file in enumerate(files):
        assert server.fetched(file) == [""]
        target = dest / f"data/validation-{k:05d}-of-{len(files):05d}.parquet"
        assert target.read_bytes() == (release / file).read_bytes()
    assert verify_release(dest) == []


def test_local_source_and_max_samples_take_the_first_in_index_order(
    release: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "pulled"
    _pull(str(release), dest, PullFilter(max_samples=3, max_cloud=1.0))
    first = [
        r["sample_id"]
        for r in _index(release).to_pylist()
        if r["cloud_fraction"] is not None and r["cloud_fraction"] <= 1.0
    ][:3]
    assert _index(dest).column("sample_id").to_pylist() == first
    assert verify_release(dest) == []


def test_bbox_dates_and_classes_select_on_the_index(release: Path) -> None:
    index = _index(release)
    boxes = index.column("bbox").to_pylist()
    west = sorted(b["xmin"] for b in boxes)[len(boxes) // 2]
    mask = PullFilter(bbox=(west, -90.0, 180.0, 90.0)).select(index)
    assert mask.tolist() == [b["xmax"] >= west for b in boxes]
    days = [d.date() for d in index.column("datetime").to_pylist()]
    day = sorted(days)[len(days) // 2]
    assert PullFilter(start=day, end=day).select(index).tolist() == [d == day for d in days]
    classes = index.column("classes").to_pylist()
    some = next(c[0] for c in classes if c)
    assert PullFilter(classes=(some, "no-such-class")).select(index).tolist() == [
        some in (c or []) for c in classes
    ]
    with pytest.raises(PullError, match="no sample matches"):
        plan_pull(open_release_source(release), Path("unused"), PullFilter(classes=("nothing",)))


def _damage(release: Path, tmp_path: Path) -> tuple[Path, str, int]:
    """A copy of the release with one byte flipped inside a row group of its first data file."""
    copy = tmp_path / "damaged"
    shutil.copytree(release, copy)
    row = _index(copy).to_pylist()[0]
    path = copy / row["file"]
    data = bytearray(path.read_bytes())
    data[row["byte_offset"] + row["byte_length"] // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return copy, row["file"], row["row_group"]


def test_a_flipped_byte_is_caught_by_pull_and_verify(release: Path, tmp_path: Path) -> None:
    damaged, file, group = _damage(release, tmp_path)
    index = _index(damaged).to_pylist()
    in_group = [r["sample_id"] for r in index if r["file"] == file and r["row_group"] == group]

    # A partial pull fetching the damaged row group: its range hash fails.
    dest = tmp_path / "partial"
    with pytest.raises(PullError, match=f"row group {group} .* has sha256"):
        _pull(str(damaged), dest, PullFilter(split=index[0]["split"], max_samples=1))
    assert not any((dest / "data").glob("*"))
    assert not (dest / ReleaseLayout.INDEX).exists()
    # A whole-file pull: the file's SHA256SUMS entry fails, and nothing is left half-written.
    whole = tmp_path / "whole"
    with pytest.raises(PullError, match="differs from SHA256SUMS"):
        _pull(str(damaged), whole, PullFilter(split=index[0]["split"]))
    assert not any((whole / "data").glob("*"))
    assert in_group

    problems = verify_release(damaged)
    assert any(f"{file}: sha256" in p for p in problems)
    assert any(f"row group {group}" in p and "hash" in p for p in problems)
    assert eocap(["verify", str(damaged)]) == 1


def test_verify_reports_missing_and_unlisted_files(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    first = sorted((copy / "data").glob("*.parquet"))[0]
    shutil.move(first, copy / "data" / "extra.parquet")
    problems = verify_release(copy)
    assert any(p.endswith("listed in SHA256SUMS but missing") for p in problems)
    assert any("extra.parquet: not listed in SHA256SUMS" in p for p in problems)
    assert any("indexed in metadata.parquet" in p for p in problems)


def test_a_killed_pull_resumes_without_fetching_finished_files(
    release: Path, server: RecordingServer, tmp_path: Path
) -> None:
    dest = tmp_path / "pulled"
    with open_release_source(server.url) as source:
        plan = plan_pull(source, dest, PullFilter(split="train"))
    assert len(plan.files) >= 2 and plan.files[0].whole
    first, second = plan.files[0], plan.files[1]
    server.hold.add(second.path)
    log = tmp_path / "pull.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "pull", server.url, str(dest), "--split", "train"],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    state = dest / ReleaseLayout.PULL_STATE
    deadline = time.monotonic() + 120
    while not (state.exists() and json.loads(state.read_text())["done"]):
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the pull did not finish its first file in 120 s"
        time.sleep(0.1)
    while not server.fetched(second.path):  # the child now waits on the held second file
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(json.loads(state.read_text())["done"]) == [first.target]
    assert not (dest / ReleaseLayout.INDEX).exists()

    server.hold.clear()
    server.requests.clear()
    fetched = _pull(server.url, dest, PullFilter(split="train"))

    assert first.target not in fetched and second.target in fetched
    assert server.fetched(first.path) == []
    assert verify_release(dest) == []
    ids = [r["sample_id"] for r in _index(release).to_pylist() if r["split"] == "train"]
    assert _index(dest).column("sample_id").to_pylist() == ids


def test_a_destination_of_another_pull_is_refused(release: Path, tmp_path: Path) -> None:
    dest = tmp_path / "pulled"
    _pull(str(release), dest, PullFilter(split="test"))
    with pytest.raises(PullError, match="pull into a new folder"):
        _pull(str(release), dest, PullFilter(split="train"))


def test_hf_source_resolves_against_hf_endpoint(
    hub_root: Path, release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording_server(hub_root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url.rstrip("/"))
        dest = tmp_path / "pulled"
        _pull("hf://datasets/eocap/tiny", dest, PullFilter(split="test"))
        assert all(path.startswith(HUB_PATH + "/") for path, _ in hub.requests)
    ids = pc.filter(
        _index(release).column("sample_id"), pc.equal(_index(release).column("split"), "test")
    )
    assert _index(dest).column("sample_id").to_pylist() == ids.to_pylist()
    assert json.loads((dest / "release.json").read_text())["pulled_from"]["source"] == (
        "hf://datasets/eocap/tiny"
    )
    assert verify_release(dest) == []


def test_release_uploaded_and_pulled_over_s3_gives_the_http_bytes(
    review_dataset: Path, release: Path, server: RecordingServer, s3, tmp_path: Path
) -> None:
    # `eocap release OUTPUT s3://...` builds locally and uploads; the pull over s3:// must give
    # the same files as the pull of the same release over http.
    source = reviewed_copy(review_dataset, tmp_path / "dataset")
    url = "s3://eocap-releases/tiny/v1"
    s3.create_bucket("eocap-releases")
    options = ["--fractions", "0.5,0.25,0.25", "--seed", "2", "--cell-deg", "0.01"]
    sizes = ["--samples-per-file", "3", "--rows-per-group", "1"]
    assert eocap(["release", str(source), url, *options, *sizes]) == 0
    uploaded = {u.removeprefix(url + "/") for u in s3.list_urls(url)}
    assert uploaded == set(parse_sha256sums((release / "SHA256SUMS").read_text())) | {"SHA256SUMS"}

    filters = PullFilter(split="train", max_samples=4)
    over_s3, over_http = tmp_path / "s3", tmp_path / "http"
    _pull(url, over_s3, filters)
    _pull(server.url, over_http, filters)
    assert verify_release(over_s3) == []
    # release.json records where it was pulled from (and SHA256SUMS its hash); all else equal.
    sums = {d: parse_sha256sums((d / "SHA256SUMS").read_text()) for d in (over_s3, over_http)}
    assert sums[over_s3].keys() == sums[over_http].keys()
    for name, digest in sums[over_http].items():
        if name != "release.json":
            assert sums[over_s3][name] == digest, name
            assert (over_s3 / name).read_bytes() == (over_http / name).read_bytes(), name


def test_loader_reads_a_remote_release_by_ranges_like_the_local_copy(
    release: Path, server: RecordingServer
) -> None:
    from pipeline.dataset.loader import SampleDataset

    def samples(source: str) -> list[tuple[str, bytes]]:
        data = SampleDataset(source, split="train", crop=32, random_crop=False, seed=3)
        return [(s["sample_id"], s["pixels"].numpy().tobytes()) for s in data]

    assert samples(server.url) == samples(str(release))
    # Only ranges: no request fetched a whole data file.
    data_requests = [(p, r) for p, r in server.requests if p.startswith("data/")]
    assert data_requests and all(r for _, r in data_requests)
