"""The grounding check on hand-written captions with hand-labelled unsupported claims.

Precision and recall over the whole set are asserted and printed; docs/captioning.md quotes
them. Each case: (caption, context, stats, the unsupported claims a careful reader marks).
"""

from __future__ import annotations

from pipeline.caption.grounding import extract_claims, unsupported_claims
from pipeline.core.types import ChipStats, MapContext, NamedFeature, ShareItem

from .test_captioner import CLEAR, LAKE_TOWN

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
