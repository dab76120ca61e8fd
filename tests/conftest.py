"""Shared fixtures: a small generated region served by real local servers, Prefect offline.

The region is generated once per session by the same generator as `eocap demo`
(torchgeo-style fake data, but in the real layouts), then served by a real STAC API and a real
HTTP file server on 127.0.0.1.
"""

from __future__ import annotations

import os
import tempfile

# Set before anything imports prefect: its settings are read once.
os.environ.update(
    {
        "PREFECT_HOME": tempfile.mkdtemp(prefix="eocap-test-prefect-"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_UI_ENABLED": "false",
        # Logs stay local: the API log handler would flush after the server is stopped.
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
)
os.environ.pop("PREFECT_API_URL", None)

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import Period, RunConfig, load_config
from pipeline.demo.flavors import ItemFlavor
from pipeline.demo.region import DemoRegion, generate_demo_region, load_items, served_items
from pipeline.demo.scene import Acquisition
from pipeline.demo.servers import DemoServers, ServerHandle, serve_demo, start_transformers_server
from pipeline.demo.tiny_llava import ensure_tiny_llava_next
from pipeline.stages.sampling import SampleSpec, plan_shards
from pipeline.stages.scenes import search_scenes

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout; tests are laid out like the packages, at different depths below it."""

SMALL_BBOX = (10.86, 47.55, 10.94, 47.60)
UTC = dt.UTC

SMALL_ACQUISITIONS = (
    Acquisition(dt.datetime(2024, 7, 6, 10, 20, tzinfo=UTC), cloud_fraction=0.02),
    Acquisition(dt.datetime(2024, 8, 15, 10, 20, tzinfo=UTC), cloud_fraction=0.45),
    # Autumn: the least cloudy scene covers only the east; the west must fall back.
    Acquisition(
        dt.datetime(2024, 9, 20, 10, 20, tzinfo=UTC), cloud_fraction=0.01, footprint="east"
    ),
    Acquisition(dt.datetime(2024, 10, 25, 10, 20, tzinfo=UTC), cloud_fraction=0.15),
)
PERIODS = [
    Period(name="summer", start=dt.date(2024, 6, 1), end=dt.date(2024, 8, 31)),
    Period(name="autumn", start=dt.date(2024, 9, 1), end=dt.date(2024, 11, 30)),
]


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_server() -> Iterator[None]:
    yield
    # Stop Prefect's temporary server while pytest's streams are still open; left to atexit it
    # logs to a closed stream after the test summary.
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


def _small_region(
    factory: pytest.TempPathFactory, name: str, flavor: ItemFlavor = "earth-search-c1"
) -> DemoRegion:
    return generate_demo_region(
        factory.mktemp("region") / name,
        bbox=SMALL_BBOX,
        acquisitions=SMALL_ACQUISITIONS,
        item_flavor=flavor,
    )


@pytest.fixture(scope="session")
def region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    """A small region shaped like Earth Search sentinel-2-c1-l2a: 4 acquisitions, ~6 x 5.5 km."""
    return _small_region(tmp_path_factory, "es")


@pytest.fixture(scope="session")
def l2a_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    """The same region as Earth Search sentinel-2-l2a serves it (offset already removed)."""
    return _small_region(tmp_path_factory, "es-l2a", "earth-search")


@pytest.fixture(scope="session")
def pc_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    """The same region in Planetary Computer item shape."""
    return _small_region(tmp_path_factory, "pc", "planetary-computer")


@pytest.fixture(scope="session")
def servers(region: DemoRegion) -> Iterator[DemoServers]:
    with serve_demo(region.root, served_items(region)) as s:
        yield s


@pytest.fixture(scope="session")
def pc_servers(pc_region: DemoRegion) -> Iterator[DemoServers]:
    with serve_demo(pc_region.root, served_items(pc_region)) as s:
        yield s


@pytest.fixture(scope="session")
def l2a_servers(l2a_region: DemoRegion) -> Iterator[DemoServers]:
    with serve_demo(l2a_region.root, served_items(l2a_region)) as s:
        yield s


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight LLaVA-Next with the real architecture, built offline."""
    return ensure_tiny_llava_next(tmp_path_factory.mktemp("models") / "tiny-llava-next")


@pytest.fixture(scope="session")
def caption_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """`transformers serve` of the tiny model: a real OpenAI-compatible server."""
    with start_transformers_server(tiny_model, log_dir=tmp_path_factory.mktemp("serve")) as s:
        yield s


def search_all(config: RunConfig) -> tuple[list[SampleSpec], dict[str, Any]]:
    """Plan every sample of a config and choose its scene."""
    samples = [s for shard in plan_shards(config) for s in shard.samples]
    result = search_scenes(
        samples,
        config.stac,
        config.chips.band_list,
        chip_size=config.chips.size_px,
        resolution=config.chips.resolution_m,
    )
    return samples, result


def make_config(
    region: DemoRegion, servers: DemoServers, out: Path, **updates: object
) -> RunConfig:
    """A run config for the small region against the running servers."""
    base = load_config(env={}).with_updates(
        {
            "region.bbox": list(SMALL_BBOX),
            "periods": [p.model_dump(mode="json") for p in PERIODS],
            "stac.api_url": servers.stac_url,
            "stac.collection": load_items(region)[0]["collection"],
            "overture.source": str(region.overture_root),
            "output.dir": str(out),
            "output.shard_size": 4,
        }
    )
    return base.with_updates(dict(updates)) if updates else base


@pytest.fixture
def config(region: DemoRegion, servers: DemoServers, tmp_path: Path) -> RunConfig:
    return make_config(region, servers, tmp_path / "out")


@pytest.fixture
def region_copy(region: DemoRegion, tmp_path: Path) -> DemoRegion:
    """A private copy of the region's files, for tests that damage COGs."""
    root = tmp_path / "region"
    shutil.copytree(region.root, root)
    return DemoRegion(
        root=root,
        bbox=region.bbox,
        crs=region.crs,
        items_path=root / "stac" / "items.json",
        overture_root=root / "overture",
        cog_root=root / "cogs",
        item_ids=region.item_ids,
    )


@pytest.fixture(scope="session")
def review_dataset(
    region: DemoRegion, servers: DemoServers, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished small dataset (template captions) for the review app, built once."""
    from pipeline.runner.build import build_shard
    from pipeline.runner.plan import plan_run

    out = tmp_path_factory.mktemp("review") / "dataset"
    plan = plan_run(make_config(region, servers, out, **{"output.shard_size": 8}))
    for shard in plan.iter_shards():
        build_shard(shard, plan.config, overture_root=plan.overture_root)
    return out


SKIP_SERVICES = "EOCAP_TEST_SKIP_SERVICES"
SERVICES_FIX = "run `sudo bash .ci/services.sh`, then `make test`"


def require_service(what: str, available: bool, fix: str = SERVICES_FIX) -> None:
    """Fail a test whose service is missing, in one line naming the fix.

    `make test` provides PostgreSQL, Chromium and docker-compose (.ci/services.sh); a test only
    skips when the user opts out with EOCAP_TEST_SKIP_SERVICES=1, and never under CI.
    """
    if available:
        return
    if os.environ.get(SKIP_SERVICES) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{SKIP_SERVICES}=1: {what} not provided")
    opt_out = "" if os.environ.get("CI") else f" (or {SKIP_SERVICES}=1 to skip)"
    pytest.fail(f"{what} not available: {fix}{opt_out}", pytrace=False)


def review_postgres_url() -> str:
    """The PostgreSQL URL `make test` starts (.ci/services.sh exports EOCAP_TEST_POSTGRES_URL)."""
    url = os.environ.get("EOCAP_TEST_POSTGRES_URL")
    require_service("PostgreSQL (EOCAP_TEST_POSTGRES_URL)", url is not None)
    assert url is not None
    return url


# No silent skips: every skip is listed at the end, loudly, and fails the run unless it is the
# documented opt-out (EOCAP_TEST_SKIP_SERVICES=1) outside CI.
_skipped: list[tuple[str, str]] = []


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append((report.nodeid, _skip_reason(report)))


def _skips_fail_the_run() -> bool:
    opted_out = all(reason.startswith(f"{SKIP_SERVICES}=1") for _, reason in _skipped)
    return bool(_skipped) and (bool(os.environ.get("CI")) or not opted_out)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skips_fail_the_run() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _skipped:
        return
    tr = terminalreporter
    n = len(_skipped)
    tr.section(f"{n} TEST{'S' * (n != 1)} SKIPPED: the suite did not fully run", sep="!", red=True)
    reasons = Counter(reason for _, reason in _skipped)
    for reason, count in reasons.items():
        tr.write_line(f"{count} skipped: {reason}", red=True)
    if _skips_fail_the_run():
        tr.write_line(
            "This run FAILS because of these skips (a skip is allowed only for "
            f"{SKIP_SERVICES}=1, and not under CI).",
            red=True,
            bold=True,
        )
    else:
        tr.write_line(
            f"Allowed because {SKIP_SERVICES}=1; `make test` without it runs them.",
            yellow=True,
            bold=True,
        )


# --- S3: a moto S3 server on 127.0.0.1 (tests/s3.py) -------------------------------------------
from tests.s3 import S3Server, serve_s3  # noqa: E402


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session; tests reach it through the ``s3`` fixture."""
    with serve_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with AWS_ENDPOINT_URL and its credentials set for this test only."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


# --- Planetary Computer's SAS token endpoint, real, on 127.0.0.1 (tests/tokens.py) -------------
from tests.tokens import TokenEndpoint, serve_token_endpoint  # noqa: E402


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    """A token endpoint of this test's own (set ``account_key`` to make it ask for a key)."""
    with serve_token_endpoint() as endpoint:
        yield endpoint
