"""Overture releases: `latest` from a catalog shaped like Overture's, pinned per output dir.

The catalog is served by a real HTTP server on 127.0.0.1 in the layout of
https://stac.overturemaps.org/catalog.json (a root catalog with a ``latest`` field and one child
link per release). The releases themselves are a local tree ``<folder>/<release-id>/theme=*``,
each a link to the test region's Overture extract.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from flows.cli import main
from pipeline.core.config import OvertureConfig, load_config
from pipeline.core.config_hash import config_hash
from pipeline.core.errors import ConfigError, PreflightError
from pipeline.dataset.layout import DatasetLayout
from pipeline.demo.servers import free_port
from pipeline.io.overture import read_catalog, release_key
from pipeline.runner.build import build_shard
from pipeline.runner.plan import plan_run, preflight
from tests.conftest import make_config
from tests.faults import serve_in_thread

OLDER, PINNED, NEWER = "2026-09-17.0", "2026-10-22.0", "2026-11-19.0"


def write_catalog(folder: Path, releases: list[str], *, absolute: str | None = None) -> None:
    """Overture's root catalog (and a child catalog per release), newest release first.

    Child hrefs are relative (``./<id>/catalog.json``) or, with ``absolute``, URLs under it as
    Overture's generator writes them.
    """
    ordered = sorted(releases, key=release_key, reverse=True)
    links: list[dict[str, object]] = [
        {"rel": "root", "href": "./catalog.json", "type": "application/json"}
    ]
    for i, release in enumerate(ordered):
        href = f"{absolute}/{release}/catalog.json" if absolute else f"./{release}/catalog.json"
        link: dict[str, object] = {"rel": "child", "href": href, "type": "application/json"}
        link["title"] = "Latest Overture Release" if i == 0 else f"{release} Overture Release"
        if i == 0:
            link["latest"] = True
        links.append(link)
        child = folder / release / "catalog.json"
        child.parent.mkdir(parents=True, exist_ok=True)
        child.write_text(
            json.dumps({"type": "Catalog", "id": release, "stac_version": "1.1.0", "links": []})
        )
    root = {
        "type": "Catalog",
        "id": "Overture Releases",
        "title": "Overture Releases",
        "description": "All Overture Releases",
        "stac_version": "1.1.0",
        "links": links,
        "latest": ordered[0],
    }
    (folder / "catalog.json").write_text(json.dumps(root, indent=1))


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    app = FastAPI()
    app.mount("/", StaticFiles(directory=folder))
    with serve_in_thread(app) as base:
        yield base


def add_release(tree: Path, release: str, region_root: Path) -> None:
    tree.mkdir(parents=True, exist_ok=True)
    (tree / release).symlink_to(region_root, target_is_directory=True)


@pytest.mark.parametrize("absolute", [False, True])
def test_catalog_lists_releases_and_names_latest(tmp_path: Path, absolute: bool):
    with serve_folder(tmp_path) as base:
        write_catalog(tmp_path, [OLDER, NEWER, PINNED], absolute=base if absolute else None)
        catalog = read_catalog(f"{base}/catalog.json")
    assert catalog.releases == (NEWER, PINNED, OLDER)
    assert catalog.latest == NEWER


def test_release_ids_sort_by_date_then_number():
    ids = ["2026-01-07.9", "2025-12-17.0", "2026-01-07.10"]
    assert sorted(ids, key=release_key, reverse=True) == [
        "2026-01-07.10",
        "2026-01-07.9",
        "2025-12-17.0",
    ]


def test_unreadable_catalog_names_catalog_url(tmp_path: Path):
    with serve_folder(tmp_path) as base:
        (tmp_path / "catalog.json").write_text('{"type": "Catalog", "links": []}')
        with pytest.raises(PreflightError) as info:
            read_catalog(f"{base}/catalog.json")
        assert info.value.field == "overture.catalog_url"
        assert "no child links" in str(info.value)
    with pytest.raises(PreflightError) as info:
        read_catalog(f"http://127.0.0.1:{free_port()}/catalog.json")
    assert info.value.field == "overture.catalog_url"


def test_check_of_a_release_the_tree_lacks_lists_the_available(
    region, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    tree = tmp_path / "releases"
    for release in (OLDER, PINNED):
        add_release(tree, release, region.overture_root)
    (tmp_path / "run.yaml").write_text(
        f"overture:\n  source: {tree}/{{release}}\n  release: {NEWER}\n"
        f"output:\n  dir: {tmp_path / 'out'}\n"  # not the checkout's output/demo
    )
    assert main(["check", str(tmp_path / "run.yaml")]) == 2
    expected = f"config field 'overture.release': release {NEWER} is not in {tree}; available: "
    expected += f"{PINNED}, {OLDER}"
    # Rich wraps long lines (and paths) anywhere: compare without whitespace.
    assert "".join(expected.split()) in "".join(capsys.readouterr().err.split())


def test_latest_resolves_to_newest_and_stays_pinned_on_resume(region, servers, tmp_path: Path):
    tree, stac = tmp_path / "releases", tmp_path / "stac"
    for release in (OLDER, PINNED):
        add_release(tree, release, region.overture_root)
    write_catalog(stac, [OLDER, PINNED])
    with serve_folder(stac) as base:
        config = make_config(
            region,
            servers,
            tmp_path / "out",
            **{
                "overture.source": f"{tree}/{{release}}",
                "overture.release": "latest",
                "overture.catalog_url": f"{base}/catalog.json",
            },
        )
        assert preflight(config).overture.release == PINNED
        plan = plan_run(config)
        assert plan.config.overture.release == PINNED
        assert plan.overture_root == tree / PINNED
        run = json.loads((tmp_path / "out" / "run.json").read_text())
        assert run["config"]["overture"]["release"] == PINNED
        first = next(plan.iter_shards())
        build_shard(first, plan.config, overture_root=plan.overture_root)
        shard = pq.read_table(DatasetLayout(tmp_path / "out").shard_path(0))
        assert set(shard.column("overture_release").to_pylist()) == {PINNED}
        assert "ok" in shard.column("status").to_pylist()

        # A newer release is published: the output dir keeps its release...
        add_release(tree, NEWER, region.overture_root)
        write_catalog(stac, [OLDER, PINNED, NEWER])
        assert preflight(config).overture.release == PINNED
        resumed = plan_run(config)
        assert resumed.config.overture.release == PINNED
        assert resumed.is_done(first.index)
        # ...a new output dir takes the newest, and the old one refuses another release.
        fresh = config.with_updates({"output.dir": str(tmp_path / "out2")})
        assert plan_run(fresh).config.overture.release == NEWER
        with pytest.raises(ConfigError) as info:
            plan_run(config.with_updates({"overture.release": NEWER}))
        assert info.value.field == "output.dir"


def test_a_single_release_tree_takes_its_label():
    cfg = OvertureConfig(source="/data/overture-extract", release="2026-10-22.0")
    assert not cfg.has_releases
    assert cfg.root == "/data/overture-extract"
    tree = OvertureConfig(source="s3://overturemaps-us-west-2/release/{release}", release=NEWER)
    assert tree.root == f"s3://overturemaps-us-west-2/release/{NEWER}"
    assert tree.releases_root == "s3://overturemaps-us-west-2/release"


def test_catalog_url_and_source_do_not_change_the_config_hash():
    config = load_config(env={}).with_updates({"overture.release": PINNED})
    moved = config.with_updates(
        {
            "overture.catalog_url": "http://127.0.0.1:1/mirror/catalog.json",
            "overture.source": "/data/overture/{release}",
        }
    )
    assert config_hash(moved) == config_hash(config)
    assert config_hash(config.with_updates({"overture.release": NEWER})) != config_hash(config)
    latest = moved.with_updates({"overture.release": "latest"})
    with pytest.raises(ValueError, match="not resolved"):
        config_hash(latest)


def test_review_app_finds_the_pinned_release_of_a_release_tree(tmp_path):
    """The review overlay reads the release the run pinned, from a `{release}` source."""
    from validation.dataset import Dataset

    releases = tmp_path / "releases"
    (releases / OLDER / "theme=base").mkdir(parents=True)
    (releases / NEWER / "theme=base").mkdir(parents=True)
    out = tmp_path / "dataset"
    (out / "shards" / "_stats").mkdir(parents=True)
    (out / "shards" / "00000.parquet").write_bytes(b"")
    (out / "shards" / "_stats" / "00000_stats.json").write_text("{}")
    overture = {"source": f"{releases}/{{release}}", "release": OLDER}
    (out / "run.json").write_text(json.dumps({"config": {"overture": overture}}))
    assert Dataset(out).overture_root == releases / OLDER
    overture["source"] = "s3://overturemaps-us-west-2/release/{release}"
    (out / "run.json").write_text(json.dumps({"config": {"overture": overture}}))
    assert Dataset(out).overture_root is None  # its extract is not there
    (out / "overture" / OLDER).mkdir(parents=True)
    assert Dataset(out).overture_root == out / "overture" / OLDER
