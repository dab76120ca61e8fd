"""The wheel as a user who never clones gets it: built, installed into a fresh venv, run.

Only the `eocap` CLI and the installed package roots are used, never internal module paths, so
the test holds however `pipeline/` is split into subpackages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "flows", "validation", "prompts")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds through build/ in the checkout and would ship whatever a stale
    # build/lib still holds (modules moved or deleted since): it starts and ends without it.
    build = ROOT / "build"
    egg_info = ROOT / "eocap.egg-info"  # an editable install's; keep it if it was there
    had_egg_info = egg_info.exists()
    shutil.rmtree(build, ignore_errors=True)
    try:
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
        done = subprocess.run(
            [*pip_wheel, "--no-build-isolation", str(ROOT), "-w", str(out)],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if not had_egg_info:
            shutil.rmtree(egg_info, ignore_errors=True)
    (path,) = out.glob("eocap-*.whl")
    yield path


def test_the_wheel_ships_prompts_vocabulary_and_templates(wheel: Path) -> None:
    """Everything that is read at run time as a file is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [
        *(
            f"prompts/{p.name}"
            for p in (ROOT / "prompts").iterdir()
            if p.suffix in (".yaml", ".j2")
        ),
        "pipeline/core/data/clip_bpe_vocab_16e6.txt.gz",
        "validation/templates/review.html",
        "validation/static/review.js",
        "trainer/cli.py",
        "trainer/evaldata/templates.py",
    ]
    assert len(expected) > 5 and not set(expected) - names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel, installed non-editable; its dependencies borrowed.

    Only our wheel is new: `pip install -c constraints.txt WHEEL` would download and unpack
    torch, Prefect and the rest (minutes, and it needs the index). Instead the venv gets no pip
    and no dependencies, the test's pip installs the wheel into it with --no-deps (`--python`),
    and then a .pth file appends the test venv's site-packages, so the dependencies are the
    pinned ones already installed. Plain path lines, not `site.addsitedir`: the .pth files
    there (the editable install's finder, which maps `pipeline` to the checkout) stay unread.
    The .pth comes after the install, or pip would find the editable eocap 0.1.0 and keep it.
    """
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    done = subprocess.run(
        [*install, "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (Path(purelib) / "_eocap_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    return root


def test_installed_wheel_plans_and_builds_outside_the_checkout(
    venv: Path, region, servers, tmp_path: Path
) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    # Nothing may lead back to the checkout: no PYTHONPATH, cwd outside it, no EOCAP_* config
    # from the caller; Prefect's temporary server keeps its database here.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("EOCAP_")
    }
    env["PREFECT_HOME"] = str(tmp_path / "prefect")

    def run(*args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout

    where = run(
        str(venv / "bin" / "python"),
        "-c",
        f"import importlib; print(*(importlib.import_module(p).__file__ for p in {PACKAGES}))",
    ).split()
    assert len(where) == len(PACKAGES)
    for path in map(Path, where):
        assert path.is_relative_to(venv) and not path.is_relative_to(ROOT), path

    eocap = str(venv / "bin" / "eocap")
    # The user's path (README): `eocap config > my-run.yaml`, edit, `eocap plan`, `eocap run`.
    settings = yaml.safe_load(run(eocap, "config"))
    assert {"region", "periods", "stac", "overture", "output"} <= set(settings)
    out = work / "out"
    ours = make_config(region, servers, out, **{"output.shard_size": 8}).model_dump(mode="json")
    for key in ("region", "periods", "stac", "overture", "output"):
        settings[key] = ours[key]
    config = work / "my-run.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))

    plan = run(eocap, "plan", config.name)
    assert re.match(r"8 samples \(4 locations x 2 periods\) in 1 shards of up to 8", plan), plan

    run(eocap, "run", config.name, timeout=300)
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == ["00000.parquet"]
    rows = pq.read_table(out / "shards" / "00000.parquet").to_pylist()
    assert len(rows) == 8 and len({r["sample_id"] for r in rows}) == 8
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 6 and all(r["caption"] for r in ok)
