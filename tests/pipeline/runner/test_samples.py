"""The runner's per-sample state: captioning rules, row status, one record per sample."""

from __future__ import annotations

import datetime as dt

from pipeline.caption.interface import CaptionInput
from pipeline.core.config import Period, RunConfig
from pipeline.core.errors import SampleFailure
from pipeline.core.types import ChipStats, MapContext, ShareItem
from pipeline.dataset.columns import SampleRecord
from pipeline.runner.captioning import CAPTION_RESULT_COLUMNS, caption_samples
from pipeline.runner.samples import (
    SampleWork,
    StageFailure,
    sample_record,
    status_columns,
)
from pipeline.stages.sampling import Location, SampleSpec

SUMMER = Period(name="summer", start=dt.date(2024, 6, 1), end=dt.date(2024, 8, 31))


def chip_input(sample_id: str, cloud: float, nodata: float = 0.0) -> CaptionInput:
    stats = ChipStats(nodata, cloud, 0.0, 0.0, 0.1, 0.4, 0.0, 0.2)
    context = MapContext(land_cover=[ShareItem("forest", 0.8)], classes=["forest"])
    when = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    return CaptionInput(sample_id, "summer", when, 10.9, 47.6, context, stats, b"png")


def test_captioning_rules_give_one_outcome_per_chip():
    config = RunConfig().with_updates(
        {"captioner.skip_cloud_fraction": 0.95, "captioner.cloudy_threshold": 0.6}
    )
    inputs = [chip_input("clear", 0.0), chip_input("hidden", 0.7), chip_input("cloud", 0.97)]
    outcomes = caption_samples(inputs, config)
    assert set(outcomes) == {"clear", "hidden", "cloud"}
    clear, hidden, cloud = (outcomes[k] for k in ("clear", "hidden", "cloud"))
    assert clear.failure is None and clear.columns()["captioner"] == "template"
    assert clear.columns()["caption"] and clear.columns()["caption_words"] > 0
    assert hidden.failure is None and hidden.columns()["captioner"] == "rule:obscured"
    assert cloud.failure is not None and cloud.failure.reason == "too_cloudy"
    assert cloud.columns() == dict.fromkeys(CAPTION_RESULT_COLUMNS)  # never sent
    for outcome in outcomes.values():
        assert tuple(outcome.columns()) == CAPTION_RESULT_COLUMNS


def test_status_follows_from_what_the_sample_reached():
    failed = StageFailure("chips", SampleFailure("cog_open", "nir.tif: not a TIFF"))
    assert status_columns(failed, captioned=False) == {
        "status": "failed",
        "error_reason": "cog_open",
        "error_message": "[chips] nir.tif: not a TIFF",
    }
    assert status_columns(None, captioned=True)["status"] == "ok"
    assert status_columns(None, captioned=False)["status"] == "pending_caption"


def test_a_sample_failed_in_search_is_a_row_of_its_plan_only():
    spec = SampleSpec("s1", Location("loc_1", 10.9, 47.6, "Reutte"), SUMMER, 0)
    work = SampleWork(spec, failure=StageFailure("search", SampleFailure("no_scene", "none")))
    config = RunConfig()
    record = sample_record(work, config)
    assert record == SampleRecord(
        sample_id="s1",
        status="failed",
        location_id="loc_1",
        location_name="Reutte",
        lon=10.9,
        lat=47.6,
        period="summer",
        period_start=SUMMER.start,
        period_end=SUMMER.end,
        error_reason="no_scene",
        error_message="[search] none",
        overture_release=config.overture.release,
    )
