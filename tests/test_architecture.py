"""The import-linter contracts cover the whole package, so a new subpackage cannot escape them."""

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return config["contracts"]


def _layer_names(contract: dict) -> set[str]:
    return {name.strip() for row in contract["layers"] for name in row.split("|")}


def test_every_pipeline_subpackage_is_in_a_layer(contracts):
    (layers,) = [c for c in contracts if c.get("containers") == ["pipeline"]]
    packages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert packages == _layer_names(layers)


def test_stages_caption_and_dataset_are_independent_siblings(contracts):
    (layers,) = [c for c in contracts if c.get("containers") == ["pipeline"]]
    row = next(r for r in layers["layers"] if "stages" in r)
    assert {n.strip() for n in row.split("|")} == {"stages", "caption", "dataset"}


def test_prefect_is_forbidden_outside_flows(contracts):
    forbidden = [
        c for c in contracts if c["type"] == "forbidden" and "prefect" in c["forbidden_modules"]
    ]
    assert forbidden and set(forbidden[0]["source_modules"]) == {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in {"flows", "tests", "benchmarks", "prompts"}
    }


def test_tests_mirror_the_packages():
    tested = {
        p.name
        for p in (ROOT / "tests" / "pipeline").iterdir()
        if p.is_dir() and p.name != "__pycache__"
    }
    packages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert tested <= packages, tested - packages
    assert not list((ROOT / "tests").glob("test_*.py")) or {
        p.name for p in (ROOT / "tests").glob("test_*.py")
    } <= {"test_architecture.py", "test_wheel.py"}
