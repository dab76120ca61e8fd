"""The grounding check, case by case: each caption's exact set of unsupported claims.

test_grounding.py measures precision and recall over a labelled set, which a wrong rule can
stay above. Here every case must come out exactly as the module's rules say it should,
with names that share their first letters with a mapped feature but are other names.
"""

from __future__ import annotations

import pytest

from pipeline.caption.grounding import unsupported_claims
from pipeline.core.types import ChipStats, MapContext, NamedFeature, ShareItem

CLEAR = ChipStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.5, -0.2, 0.08)  # no water, snow or cloud seen
SNOWY = ChipStats(0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.1, 0.6)
LAKE_TOWN = MapContext(
    land_cover=[ShareItem("forest", 0.55), ShareItem("grass", 0.25), ShareItem("urban", 0.1)],
    land_use=[ShareItem("residential", 0.12)],
    water=[NamedFeature("Aldersee", "lake", "water", "north-east", share=0.08)],
    building_count=143,
    roads=[ShareItem("primary", 2.1)],
    named_features=[
        NamedFeature("Aldersee", "lake", "water", "north-east", share=0.08),
        NamedFeature("Kesselbach", "residential", "land_use", "south-west", share=0.12),
    ],
    names=["Aldersee", "Kesselbach"],
)
FARMS = MapContext(
    land_cover=[ShareItem("crop", 0.7)],
    land_use=[ShareItem("farmland", 0.6)],
    building_count=3,
    water=[NamedFeature("Emmer", "river", "water", "south", length_km=1.2)],
    named_features=[NamedFeature("Emmer", "river", "water", "south", length_km=1.2)],
    names=["Emmer"],
)
MOUNTAIN = MapContext(
    land_cover=[ShareItem("barren", 0.5), ShareItem("snow", 0.05)],
    named_features=[NamedFeature("Gamsspitze", "peak", "land", "north")],
    names=["Gamsspitze"],
)

# (case id, caption, map context, chip stats, the unsupported claims, exactly)
CASES: list[tuple[str, str, MapContext, ChipStats, set[str]]] = [
    ("mapped names", "The lake Aldersee lies north of Kesselbach.", LAKE_TOWN, CLEAR, set()),
    (
        "lake name sharing four letters",
        "The lake Alderwald lies north of Kesselbach.",
        LAKE_TOWN,
        CLEAR,
        {"name:Alderwald"},
    ),
    (
        "town name sharing six letters",
        "Forest around the town of Kesselberg.",
        LAKE_TOWN,
        CLEAR,
        {"name:Kesselberg"},
    ),
    ("generic word kept apart", "Forest beside Lake Aldersee.", LAKE_TOWN, CLEAR, set()),
    (
        "generic word, other name",
        "Forest beside Lake Aldertal.",
        LAKE_TOWN,
        CLEAR,
        {"name:Lake Aldertal"},
    ),
    ("mapped river", "Fields along the river Emmer.", FARMS, CLEAR, set()),
    (
        "river name extending a mapped one",
        "Fields along the river Emmerbach.",
        FARMS,
        CLEAR,
        {"name:Emmerbach"},
    ),
    ("mapped peak", "Bare rock below the summit of Gamsspitze.", MOUNTAIN, SNOWY, set()),
    (
        "peak name sharing four letters",
        "Bare rock and snow below the Gamsberg.",
        MOUNTAIN,
        SNOWY,
        {"name:Gamsberg"},
    ),
    (
        "two names, one mapped",
        "Farmland between Emmer and Emsdorf.",
        FARMS,
        CLEAR,
        {"name:Emsdorf"},
    ),
    (
        "unmapped things and unseen ones",
        "Cars on a railway through the forest near Kesselbach.",
        LAKE_TOWN,
        CLEAR,
        {"not_visible:vehicles", "rail:rail"},
    ),
    (
        "count within a factor of two",
        "A town of about 150 buildings by the lake.",
        LAKE_TOWN,
        CLEAR,
        set(),
    ),
    (
        "count far off, and too few buildings for a settlement",
        "Farmland with 40 buildings.",
        FARMS,
        CLEAR,
        {"count:40", "settlement:settlement"},
    ),
    ("negations", "Farmland with no clouds, no snow and no lake.", FARMS, CLEAR, set()),
    (
        "unseen snow and clouds",
        "Snowy fields under clouds.",
        FARMS,
        CLEAR,
        {"snow:snow", "cloud:cloud"},
    ),
]


@pytest.mark.parametrize(
    ("caption", "ctx", "stats", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_unsupported_claims_case_by_case(caption, ctx, stats, expected):
    assert set(unsupported_claims(caption, ctx, stats)) == expected
