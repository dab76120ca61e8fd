"""Release transport: local folders, http(s) with Range requests and retries, hf:// URLs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.io.remote import (
    HttpSource,
    LocalSource,
    RemoteError,
    hf_resolve_url,
    open_release_source,
)
from tests.pipeline.dataset.release_fixture import recording_server

DATA = bytes(range(256)) * 40


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "a b.bin").write_bytes(DATA)
    return folder


def test_hf_urls_resolve_to_the_hub_resolve_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hf_resolve_url("hf://datasets/org/name") == (
        "https://huggingface.co/datasets/org/name/resolve/main"
    )
    assert hf_resolve_url("hf://datasets/org/name@refs/pr/1", endpoint="http://h:1/") == (
        "http://h:1/datasets/org/name/resolve/refs%2Fpr%2F1"
    )
    assert hf_resolve_url("hf://datasets/org/name@refs/pr/1/data", endpoint="http://h") == (
        "http://h/datasets/org/name/resolve/refs%2Fpr%2F1/data"
    )
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hf_resolve_url("hf://datasets/org/name@v1/sub/dir/") == (
        "http://127.0.0.1:9/datasets/org/name/resolve/v1/sub/dir"
    )
    with pytest.raises(RemoteError, match="not a Hub dataset URL"):
        hf_resolve_url("hf://models/org/name")


def test_local_and_http_sources_read_the_same_bytes(root: Path, tmp_path: Path) -> None:
    with recording_server(root) as server:
        for source in (LocalSource(root), HttpSource(server.url)):
            with source:
                assert source.read_range("data/a b.bin", 1000, 300) == DATA[1000:1300]
                assert source.read_tail("data/a b.bin", 100) == (DATA[-100:], len(DATA))
                assert source.read_tail("data/a b.bin", 10**6) == (DATA, len(DATA))
                target = tmp_path / type(source).__name__
                digest = source.download("data/a b.bin", target)
                assert digest == hashlib.sha256(DATA).hexdigest()
                assert target.read_bytes() == DATA
        assert ("data/a b.bin", "bytes=1000-1299") in server.requests
        assert ("data/a b.bin", "bytes=-100") in server.requests


def test_a_hash_mismatch_leaves_no_file(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RemoteError, match="differs from SHA256SUMS"):
        LocalSource(root).download("data/a b.bin", target, sha256="0" * 64)
    assert list(tmp_path.glob("*out.bin*")) == []


def test_http_retries_5xx_with_backoff_then_gives_up(root: Path) -> None:
    with recording_server(root) as server:
        server.failures = 2
        with HttpSource(server.url, backoff_s=0.01) as source:
            assert source.read_range("data/a b.bin", 0, 10) == DATA[:10]
            assert source.read("data/a b.bin") == DATA
        assert len(server.requests) == 4
        server.failures = 10
        flaky = HttpSource(server.url, max_retries=2, backoff_s=0.01)
        with flaky as source, pytest.raises(RemoteError, match="HTTP 503"):
            source.read_range("data/a b.bin", 0, 10)
        with HttpSource(server.url) as source:
            server.failures = 0
            with pytest.raises(RemoteError, match="not found"):
                source.read("data/missing.bin")


def test_connection_errors_are_retried_then_reported() -> None:
    closed = HttpSource("http://127.0.0.1:9/", max_retries=1, backoff_s=0.01, timeout_s=2)
    with closed as source, pytest.raises(RemoteError, match="ConnectError after 2 tries"):
        source.read_range("x", 0, 1)


def test_open_release_source_picks_the_transport(root: Path) -> None:
    assert isinstance(open_release_source(root), LocalSource)
    assert isinstance(open_release_source("https://example.org/r"), HttpSource)
    with pytest.raises(RemoteError, match="no such folder"):
        open_release_source(root / "nope")
    with pytest.raises(RemoteError, match="unknown scheme"):
        open_release_source("ftp://x/y")
