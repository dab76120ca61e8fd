"""What the review app's tests share: databases (SQLite, PostgreSQL), dataset, server, Chromium."""

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.demo.servers import spawn_server
from tests.conftest import require_service, review_postgres_url
from validation.auth import create_user
from validation.campaigns import CampaignSettings, create_campaign
from validation.dataset import Dataset
from validation.db import connect, database_url, metadata

PASSWORD = "correct-horse"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reviews.db'}"
    url = database_url(review_postgres_url(), None)
    engine = sa.create_engine(url)
    metadata.drop_all(engine)  # a fresh schema per test
    engine.dispose()
    return url


@pytest.fixture
def dataset(review_dataset, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(review_dataset, copy, ignore=shutil.ignore_patterns("review"))
    return Dataset(copy)


@pytest.fixture
def browser():
    """Debian's Chromium driven by Playwright (every launch a fresh, empty profile)."""
    require_service(f"Debian chromium ({CHROMIUM})", CHROMIUM.exists())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def site(review_dataset, tmp_path):
    """The app served by `eocap review serve` (SQLite): admin, ann, bob and a 3-item campaign."""
    root = tmp_path / "dataset"
    shutil.copytree(review_dataset, root, ignore=shutil.ignore_patterns("review"))
    url = f"sqlite:///{tmp_path / 'reviews.db'}"
    engine = connect(url)
    for name, role in (("admin", "admin"), ("ann", "reviewer"), ("bob", "reviewer")):
        create_user(engine, name, PASSWORD, role)
    cid = create_campaign(
        engine,
        Dataset(root),
        "pilot",
        CampaignSettings(size=3, overlap_share=1.0, gold_share=0.0, seed=2),
    )
    server = spawn_server(
        ["review", "serve", str(root), "--db", url], None, "login", tmp_path, module="flows.cli"
    )
    yield server.url.rstrip("/"), engine, cid
    server.stop()
    engine.dispose()
