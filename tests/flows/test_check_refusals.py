"""`eocap check` makes every check `eocap run` makes before work; both refuse with one line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import main
from pipeline.core.config import RunConfig
from pipeline.demo.coherence import COHERENCE_COLLECTION

TODAY = dt.datetime.now(dt.UTC).date()


def _period(start: dt.date, end: dt.date) -> list[dict[str, str]]:
    return [{"name": "p", "start": start.isoformat(), "end": end.isoformat()}]


REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("small region", {"region.bbox": [10.86, 47.55, 10.87, 47.56]}, "region.bbox", "no chip fits"),
    ("north of 84", {"region.bbox": [10.0, 84.2, 12.0, 84.3]}, "region.bbox", "82.8 N"),
    ("north of 82.8", {"region.bbox": [10.0, 82.9, 12.0, 83.0]}, "region.bbox", "82.8 N"),
    (
        "a point south of 56",
        {
            "region.bbox": None,
            "region.points": [{"lon": 10.9, "lat": 47.6}, {"lon": 0, "lat": -60}],
        },
        "region.points[1]",
        "outside Sentinel-2's systematic coverage",
    ),
    (
        "future period",
        {"periods": _period(TODAY + dt.timedelta(days=30), TODAY + dt.timedelta(days=120))},
        "periods[0].start",
        "after today",
    ),
    (
        "period partly in the future",
        {"periods": _period(TODAY - dt.timedelta(days=30), TODAY + dt.timedelta(days=30))},
        "periods[0].end",
        "never rebuilt",
    ),
    (
        "period ending today",
        {"periods": _period(TODAY - dt.timedelta(days=30), TODAY)},
        "periods[0].end",
        "not before today",
    ),
    (
        "period before Sentinel-2",
        {"periods": _period(dt.date(2014, 6, 1), dt.date(2014, 8, 31))},
        "periods[0].end",
        "Sentinel-2A was launched 2015-06-23",
    ),
]


# Checks of the sources: `eocap check` and `eocap run` make them, `eocap plan` does not.
# Unchecked, each costs a whole run: every sample fails, or (Sentinel-1) records
# no_acquisition or search_error and stays ok, so nothing stops.
SERVER_REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    # An in-process model that does not exist: it would fail at load, after all the work.
    (
        "an in-process model folder that does not exist",
        {"captioner.backend": "transformers", "captioner.model": "/models/no-such-llava"},
        "captioner.model",
        "/models/no-such-llava",
    ),
    # The demo's Overture copy left in a config of another region: every context empty.
    (
        "an Overture copy of another place",
        {"region.bbox": [13.30, 52.45, 13.40, 52.52]},
        "overture.source",
        "none near the region",
    ),
    # A collection of another product: every sample would fail with missing_band.
    (
        "a collection without Sentinel-2 bands",
        {"stac.collection": "sentinel-1-rtc"},
        "stac.collection",
        "items of 'sentinel-1-rtc' lack what the run reads",
    ),
    (
        "unknown SAR collection",
        {"sar": {"collection": "sentinel-1-rtcx"}},
        "sar.collection",
        "not found",
    ),
    (
        "unknown coherence collection",
        {"sar": {"coherence": {"collection": "sentinel-1-coh"}}},
        "sar.coherence.collection",
        "'sentinel-1-coh' not found",
    ),
    (
        "SAR catalog unreachable",
        {"sar": {"api_url": "http://127.0.0.1:9/"}, "stac.max_retries": 0},
        "sar.api_url",
        "cannot open STAC API http://127.0.0.1:9/",
    ),
    (
        "SAR account key unset",
        {"sar": {"signing": "planetary-computer", "signing_key_env": "EOCAP_TEST_NO_SUCH_KEY"}},
        "sar.signing_key_env",
        "EOCAP_TEST_NO_SUCH_KEY, which is not set",
    ),
]


def _write(config: RunConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


PLANNING = ("check", "plan", "run")
PREFLIGHT = ("check", "run")


@pytest.mark.parametrize(
    ("commands", "updates", "field", "words"),
    [(PLANNING, *case[1:]) for case in REFUSALS]
    + [(PREFLIGHT, *case[1:]) for case in SERVER_REFUSALS],
    ids=[case[0] for case in REFUSALS + SERVER_REFUSALS],
)
def test_the_commands_that_check_refuse_with_the_same_line(
    config: RunConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    commands: tuple[str, ...],
    updates: dict[str, Any],
    field: str,
    words: str,
) -> None:
    path = _write(config.with_updates(updates), tmp_path / "run.yaml")
    lines = {}
    for command in commands:
        assert main([command, str(path)]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        lines[command] = err[-1]
        assert lines[command].startswith(f"error: config field '{field}': "), err
        assert words in lines[command] and "Traceback" not in "\n".join(err)
    assert len(set(lines.values())) == 1, lines
    assert not config.output.dir.exists()  # the run stopped before any work


def test_check_refuses_an_output_folder_of_another_config(
    config: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked inside the flow before: `eocap check` said "config ok", then the run failed.
    config.output.dir.mkdir(parents=True)
    (config.output.dir / "run.json").write_text(json.dumps({"config_hash": "0" * 16}))
    path = _write(config, tmp_path / "run.yaml")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "config field 'output.dir'" in err and "another config" in err


def test_check_passes_what_run_accepts(
    config: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yesterday = TODAY - dt.timedelta(days=1)
    ok = config.with_updates({"periods": _period(dt.date(2024, 6, 1), yesterday)})
    assert main(["check", str(_write(ok, tmp_path / "run.yaml"))]) == 0
    assert capsys.readouterr().out.startswith("config ok")
    # Sentinel-1 and coherence from the same catalog, as the demo serves them.
    with_sar = ok.with_updates({"sar": {"coherence": {"collection": COHERENCE_COLLECTION}}})
    assert main(["check", str(_write(with_sar, tmp_path / "sar.yaml"))]) == 0
    assert capsys.readouterr().out.startswith("config ok")
