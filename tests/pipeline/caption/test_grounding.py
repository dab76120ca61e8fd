"""The grounding check on hand-written captions with hand-labelled unsupported claims.

Precision and recall over the whole set are asserted and printed; docs/captioning.md quotes
them. Each case: (caption, context, stats, the unsupported claims a careful reader marks).
Then the check and the template captioner against each other: both read the claim definitions
of pipeline.caption.claims, so no template caption of any context may be flagged.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from pipeline.caption.claims import (
    CLASS_PHRASES,
    CLASS_VOCABULARY,
    count_claims,
    stated_count,
    supported,
)
from pipeline.caption.grounding import extract_claims, unsupported_claims
from pipeline.caption.interface import CaptionInput
from pipeline.caption.template import TemplateCaptioner
from pipeline.core.types import ChipStats, MapContext, NamedFeature, ShareItem
from tests.pipeline.caption.test_template import CLEAR, LAKE_TOWN

CLOUDY = ChipStats(0.0, 0.4, 0.05, 0.0, 0.0, 0.3, -0.1, 0.3)
SNOWY = ChipStats(0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.1, 0.6)
DARK_WATER = ChipStats(0.0, 0.0, 0.0, 0.0, 0.3, 0.1, 0.3, 0.05)
FARMS = MapContext(
    land_cover=[ShareItem("crop", 0.7), ShareItem("grass", 0.2)],
    land_use=[ShareItem("farmland", 0.6)],
    roads=[ShareItem("track", 3.0)],
    building_count=3,
    named_features=[NamedFeature("Emmer", "river", "water", "south", length_km=1.2)],
    water=[NamedFeature("Emmer", "river", "water", "south", length_km=1.2)],
    names=["Emmer"],
    tags=["highway=track", "landuse=farmland"],
)
MOUNTAIN = MapContext(
    land_cover=[ShareItem("barren", 0.5), ShareItem("forest", 0.3), ShareItem("snow", 0.05)],
    named_features=[NamedFeature("Gamsspitze", "peak", "land", "north")],
    names=["Gamsspitze"],
)
EMPTY = MapContext()

CASES: list[tuple[str, MapContext, ChipStats, set[str]]] = [
    (
        "A summer view of forest and grassland with the lake Aldersee in the north-east.",
        LAKE_TOWN,
        CLEAR,
        set(),
    ),
    (
        "The town of Kesselbach with about 150 buildings lies beside a lake.",
        LAKE_TOWN,
        CLEAR,
        set(),
    ),
    (
        "Cars and people crowd the streets of Kesselbach next to the lake.",
        LAKE_TOWN,
        CLEAR,
        {"not_visible:vehicles", "not_visible:people"},
    ),
    ("Forest surrounds the lake; a railway runs along the shore.", LAKE_TOWN, CLEAR, {"rail:rail"}),
    (
        "A snowy landscape with clouds over the forest.",
        LAKE_TOWN,
        CLEAR,
        {"snow:snow", "cloud:cloud"},
    ),
    (
        "Farmland and fields stretch along the river Emmer; a few farms are visible.",
        FARMS,
        CLEAR,
        set(),
    ),
    (
        "Farmland with a large lake and the village of Oberdorf in the centre.",
        FARMS,
        CLEAR,
        {"water:lake", "settlement:settlement", "name:Oberdorf"},
    ),
    ("Fields crossed by farm tracks, with no clouds and no snow.", FARMS, CLEAR, set()),
    (
        "Agricultural land with about 300 buildings and a motorway.",
        FARMS,
        CLEAR,
        {"count:300", "settlement:settlement"},
    ),
    ("Clouds cover part of the cropland.", FARMS, CLOUDY, set()),
    (
        "Bare rock and forest below the summit of Gamsspitze, partly covered by snow.",
        MOUNTAIN,
        SNOWY,
        set(),
    ),
    (
        "Bare rock with a glacier and the town of Gamsbach in the valley.",
        MOUNTAIN,
        SNOWY,
        {"settlement:settlement", "name:Gamsbach"},
    ),
    (
        "Forest and rocky slopes with sheep grazing on meadows.",
        MOUNTAIN,
        CLEAR,
        {"not_visible:animals", "land_cover:grass"},
    ),
    ("Dark open water fills most of the image.", EMPTY, DARK_WATER, set()),
    ("A river flows past the lake in this image.", EMPTY, DARK_WATER, {"water:river"}),
    ("A cloud-free image of an unmapped area.", EMPTY, CLEAR, set()),
    (
        "Dense forest with individual trees visible along a road.",
        EMPTY,
        CLEAR,
        {"land_cover:forest", "not_visible:single trees", "road:road"},
    ),
]


def test_grounding_precision_and_recall():
    tp = fp = fn = 0
    for caption, ctx, stats, gold in CASES:
        pred = set(unsupported_claims(caption, ctx, stats))
        tp += len(pred & gold)
        fp += len(pred - gold)
        fn += len(gold - pred)
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(
        f"grounding check on {len(CASES)} captions: precision {precision:.2f}, "
        f"recall {recall:.2f} ({tp} true, {fp} false positives, {fn} missed)"
    )
    assert precision >= 0.9 and recall >= 0.85


def test_negations_are_not_claims():
    kinds = {str(c) for c in extract_claims("No clouds, no snow and without roads; cloud-free.")}
    assert kinds == set()


def test_claims_in_order():
    claims = [str(c) for c in extract_claims("A lake, then forest and 12 buildings near Ulm.")]
    assert claims == [
        "water:lake",
        "land_cover:forest",
        "count:12",
        "settlement:settlement",
        "name:Ulm",
    ]


# (caption, context, stats, the exact unsupported claims), one rule each.
EXACT_CASES: list[tuple[str, MapContext, ChipStats, set[str]]] = [
    # A settlement word needs buildings (or urban/residential land): none here.
    ("A village surrounded by bare rock and forest.", MOUNTAIN, CLEAR, {"settlement:settlement"}),
    # A few buildings are buildings, not a settlement; the template writes this sentence.
    ("About 3 scattered buildings are present.", FARMS, CLEAR, set()),
    ("About 3 scattered buildings are present.", EMPTY, CLEAR, {"count:3"}),
    ("A few houses stand among the fields.", FARMS, CLEAR, set()),
    ("Scattered buildings among bare rock.", MOUNTAIN, CLEAR, {"building:building"}),
    ("Farmland with about 40 buildings.", FARMS, CLEAR, {"count:40", "settlement:settlement"}),
    # Names match whole words of a known name: not a name sharing its first letters.
    ("The lake Alderbach lies in the north-east.", LAKE_TOWN, CLEAR, {"name:Alderbach"}),
    ("Forest around the lake Alder in the north-east.", LAKE_TOWN, CLEAR, {"name:Alder"}),
    ("The town of Kessel lies beside the lake.", LAKE_TOWN, CLEAR, {"name:Kessel"}),
    ("The lake Aldersee lies in the north-east.", LAKE_TOWN, CLEAR, set()),
    # A named feature counts even where the ``names`` list leaves it out.
    ("A main road (Bundesstrasse 2) crosses the town.", LAKE_TOWN, CLEAR, set()),
    (
        "Cropland near Frankfurt.",
        MapContext(land_cover=[ShareItem("crop", 0.8)], names=["Frankfurt am Main"]),
        CLEAR,
        set(),
    ),
    # A name's words are no claims: "Castle Rock" claims no rocks.
    (
        "About 4 scattered buildings are present, around Castle Rock.",
        MapContext(
            building_count=4,
            named_features=[NamedFeature("Castle Rock", "town", "place", "centre")],
        ),
        CLEAR,
        set(),
    ),
    # A phrase wins over the words inside it: farm tracks are a road, not farmland.
    (
        "Grassland crossed by farm tracks.",
        MapContext(land_cover=[ShareItem("grass", 0.9)], roads=[ShareItem("track", 2.0)]),
        CLEAR,
        set(),
    ),
    # Every class the template can name is a claim of the check.
    (
        "Mangroves and shrubland line the coast.",
        FARMS,
        CLEAR,
        {"land_cover:mangrove", "land_cover:shrub", "water:sea"},
    ),
    (
        "A park and a cemetery lie in the town.",
        LAKE_TOWN,
        CLEAR,
        {"land_use:park", "land_use:cemetery"},
    ),
    # 1 % of the chip is enough to name a class (a demo chip has 1.25 % forest).
    (
        "A mix of cropland, grassland and forest.",
        MapContext(
            land_cover=[
                ShareItem("crop", 0.7),
                ShareItem("grass", 0.2),
                ShareItem("forest", 0.0125),
            ]
        ),
        CLEAR,
        set(),
    ),
    (
        "Cropland with a strip of forest.",
        MapContext(land_cover=[ShareItem("crop", 0.99), ShareItem("forest", 0.005)]),
        CLEAR,
        {"land_cover:forest"},
    ),
]


@pytest.mark.parametrize(("caption", "ctx", "stats", "expected"), EXACT_CASES)
def test_unsupported_claims_per_case(caption, ctx, stats, expected):
    assert set(unsupported_claims(caption, ctx, stats)) == expected


def test_every_class_phrase_makes_its_own_claim():
    for theme, table in CLASS_VOCABULARY.items():
        for cls, phrase in table.items():
            assert extract_claims(phrase.text) == [phrase.claim.claim], (theme, cls, phrase.text)


def test_stated_counts_are_supported():
    for n in range(1, 5000):
        ctx = MapContext(building_count=n)
        claims = count_claims(stated_count(n))
        assert all(supported(c, ctx, CLEAR) for c in claims), (n, claims)


_NAMES = (
    "Aldersee",
    "Alder",
    "Emmer",
    "Emmerbrücke (A 97)",
    "A 97",
    "St 2588",
    "St. Georg",
    "Castle Rock",
    "Forest Lake",
    "Cloudy Bay",
    "Old Town",
    "Frankfurt am Main",
    "O'Brien Park",
    "McDonald Farm",
    "Café am Markt",
    "Kesselbach-Ost",
    "Lake",
    "Rock",
    "Part",
    "",
)
_POSITIONS = ("north-west", "north", "north-east", "west", "centre", "east", "south", "throughout")


def _shares(rng: random.Random, classes: list[str]) -> list[ShareItem]:
    picked = rng.sample(classes, rng.randint(0, min(4, len(classes))))
    items = [ShareItem(c, rng.choice((rng.uniform(0, 0.02), rng.uniform(0, 1)))) for c in picked]
    return sorted(items, key=lambda i: -i.share)


def _feature(rng: random.Random, theme: str, kinds: list[str]) -> NamedFeature:
    return NamedFeature(
        rng.choice(_NAMES),
        rng.choice(kinds),
        theme,
        rng.choice(_POSITIONS),
        share=rng.choice((0.0, 0.003, rng.uniform(0, 0.5))),
        length_km=rng.choice((0.0, 0.1, rng.uniform(0, 3))),
    )


def random_chip(rng: random.Random) -> tuple[MapContext, ChipStats]:
    """A random context and chip statistics, biased towards the thresholds of the claims."""
    land_cover = [*CLASS_PHRASES["land_cover"], "unmapped_cover"]
    land_use = [*CLASS_PHRASES["land_use"], "nature_reserve", "farmyard"]
    water_kinds = [*CLASS_PHRASES["water"], "bay", "basin"]
    roads = [*CLASS_PHRASES["segment"], "footway", "service"]
    water = [_feature(rng, "water", water_kinds) for _ in range(rng.randint(0, 3))]
    named = water + [
        _feature(rng, theme, kinds)
        for theme, kinds in (
            ("place", ["town", "church", "bakery"]),
            ("land_use", land_use),
            ("segment", roads),
            ("land", ["peak"]),
        )
        for _ in range(rng.randint(0, 2))
    ]
    ctx = MapContext(
        land_cover=_shares(rng, land_cover),
        land_use=_shares(rng, land_use),
        water=water,
        building_count=rng.choice((0, 1, 3, 4, 5, 6, 19, 20, 25, 199, 225, rng.randint(0, 3000))),
        roads=[ShareItem(r, rng.uniform(0, 5)) for r in rng.sample(roads, rng.randint(0, 3))],
        named_features=named,
        tags=rng.sample(["railway=rail", "highway=track", "landuse=farmland"], rng.randint(0, 2)),
        names=sorted({f.name for f in named if f.name}) if rng.random() < 0.7 else [],
    )
    fraction = (0.0, 0.01, 0.019, 0.02, 0.04, 0.05, 0.14, 0.15, 0.3, 0.5, 0.9, 0.95, rng.random())
    stats = ChipStats(
        rng.choice(fraction),
        rng.choice(fraction),
        0.0,
        rng.choice(fraction),
        rng.choice(fraction),
        None,
        None,
        None,
    )
    return ctx, stats


def test_template_captions_are_never_flagged():
    rng = random.Random(20240706)
    captioners = [TemplateCaptioner(seed=7), TemplateCaptioner(seed=7, cloudy_threshold=0.0)]
    checked = 0
    for i in range(3000):
        ctx, stats = random_chip(rng)
        x = CaptionInput(
            f"s_{i}",
            rng.choice(("spring", "summer", "autumn", "winter")),
            dt.datetime(2024, 7, 6, tzinfo=dt.UTC),
            10.9,
            47.5,
            ctx,
            stats,
        )
        for captioner in captioners:
            caption = captioner.caption_batch([x])[0].caption
            assert caption
            assert unsupported_claims(caption, ctx, stats) == [], (caption, ctx, stats)
            checked += 1
    assert checked == 6000


def test_the_checks_never_flag_a_template_caption_ungrounded():
    from pipeline.caption.checks import check_caption

    rng = random.Random(7)
    for i in range(300):
        ctx, stats = random_chip(rng)
        x = CaptionInput(
            f"s_{i}", "summer", dt.datetime(2024, 7, 6, tzinfo=dt.UTC), 0, 0, ctx, stats
        )
        caption = TemplateCaptioner().caption_batch([x])[0].caption
        checks = check_caption(caption, finish_reason=None, context=ctx, stats=stats)
        assert "ungrounded" not in checks.flags, (caption, checks.unsupported_claims)
