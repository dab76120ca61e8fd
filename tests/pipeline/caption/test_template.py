from __future__ import annotations

import datetime as dt
import re

from pipeline.caption.interface import CaptionInput
from pipeline.caption.template import CLASS_PHRASES, TemplateCaptioner
from pipeline.core.types import ChipStats, MapContext, NamedFeature, ShareItem

CLEAR = ChipStats(0.0, 0.0, 0.0, 0.0, 0.1, 0.5, -0.2, 0.08)


def make_input(ctx: MapContext, stats: ChipStats = CLEAR, sid: str = "s_1") -> CaptionInput:
    return CaptionInput(
        sid, "summer", dt.datetime(2024, 7, 6, tzinfo=dt.UTC), 10.9, 47.5, ctx, stats
    )


LAKE_TOWN = MapContext(
    land_cover=[ShareItem("forest", 0.55), ShareItem("grass", 0.25), ShareItem("urban", 0.1)],
    land_use=[ShareItem("residential", 0.12)],
    water=[NamedFeature("Aldersee", "lake", "water", "north-east", share=0.08)],
    building_count=143,
    building_share=0.03,
    roads=[ShareItem("primary", 2.1), ShareItem("residential", 4.0)],
    named_features=[
        NamedFeature("Aldersee", "lake", "water", "north-east", share=0.08),
        NamedFeature("Kesselbach", "residential", "land_use", "south-west", share=0.12),
        NamedFeature("Bundesstrasse 2", "primary", "segment", "centre", length_km=2.1),
        NamedFeature("St. Georg", "church", "place", "south-west"),
    ],
    classes=["forest", "grass", "urban", "residential", "lake", "house", "primary"],
    tags=[],
    names=["Aldersee", "Kesselbach"],
)


def phrases_in(caption: str) -> set[str]:
    """Context classes (theme:class) whose phrase occurs in a caption."""
    found = set()
    for theme, table in CLASS_PHRASES.items():
        for cls, phrase in table.items():
            core = phrase.removeprefix("a ").removeprefix("an ")
            if re.search(rf"\b{re.escape(core)}\b", caption):
                found.add(f"{theme}:{cls}")
    return found


def allowed(ctx: MapContext) -> set[str]:
    return (
        {f"land_cover:{i.cls}" for i in ctx.land_cover}
        | {f"land_use:{i.cls}" for i in ctx.land_use}
        | {f"water:{f.kind}" for f in ctx.water}
        | {f"segment:{r.cls}" for r in ctx.roads}
    )


def test_caption_is_grounded_in_context():
    result = TemplateCaptioner().caption_batch([make_input(LAKE_TOWN)])[0]
    caption = result.caption
    assert caption and "Aldersee" in caption and "north-east" in caption
    assert "forest" in caption and "summer" in caption
    assert "residential area with about 140 buildings" in caption
    assert "main road" in caption
    assert phrases_in(caption) <= allowed(LAKE_TOWN)
    assert set(result.mentions) - {"building"} <= allowed(LAKE_TOWN)


def test_no_class_outside_context_for_many_variants():
    cap = TemplateCaptioner(seed=3)
    empty = MapContext()
    forest_only = MapContext(land_cover=[ShareItem("forest", 0.9)], classes=["forest"])
    for ctx in (empty, forest_only, LAKE_TOWN):
        for i in range(20):
            caption = cap.caption_batch([make_input(ctx, sid=f"s_{i}")])[0].caption
            assert caption
            assert phrases_in(caption) <= allowed(ctx), caption
    assert "no mapped land cover" in cap.caption_batch([make_input(empty)])[0].caption


def test_cloudy_chip_says_so_and_names_no_ground_class():
    stats = ChipStats(0.0, 0.95, 0.0, 0.0, 0.0, None, None, 0.5)
    result = TemplateCaptioner().caption_batch([make_input(LAKE_TOWN, stats)])[0]
    assert "clouds" in result.caption and phrases_in(result.caption) == set()
    assert result.mentions == ("scl:cloud",)


def test_chip_hidden_by_missing_data_is_not_called_cloudy():
    # The runner captions every hidden chip with cloudy_threshold=0: clouds are named only
    # where they, not missing data, hide the ground.
    obscured = TemplateCaptioner(cloudy_threshold=0.0)
    nodata = ChipStats(0.95, 0.01, 0.0, 0.0, 0.0, None, None, None)
    result = obscured.caption_batch([make_input(LAKE_TOWN, nodata)])[0]
    assert "no valid data" in result.caption and "cloud" not in result.caption
    assert result.mentions == ()
    cloudy = ChipStats(0.05, 0.93, 0.0, 0.0, 0.0, None, None, None)
    result = obscured.caption_batch([make_input(LAKE_TOWN, cloudy)])[0]
    assert "covered by clouds" in result.caption and result.mentions == ("scl:cloud",)


def test_snow_and_partial_clouds_from_scl():
    stats = ChipStats(0.0, 0.35, 0.02, 0.6, 0.0, 0.1, 0.0, 0.4)
    caption = TemplateCaptioner().caption_batch([make_input(LAKE_TOWN, stats)])[0].caption
    assert "covered by snow" in caption and "Clouds hide" in caption


def test_deterministic_per_sample_and_varied_across_samples():
    cap = TemplateCaptioner()
    a = [cap.caption_batch([make_input(LAKE_TOWN, sid=f"s_{i}")])[0].caption for i in range(12)]
    b = [cap.caption_batch([make_input(LAKE_TOWN, sid=f"s_{i}")])[0].caption for i in range(12)]
    assert a == b
    assert len(set(a)) > 1
    assert cap.prompt_version.startswith("template-v1+")
