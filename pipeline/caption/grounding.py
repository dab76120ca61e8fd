"""Grounding: which things a caption claims that the map context and the pixels do not support.

A claim is a phrase from a fixed lexicon (land cover, water, settlements, roads, rail, snow,
clouds), a named feature (a capitalised name), a building count, or something that 10 m pixels
cannot show (cars, people, single trees). Each claim is checked against the chip's map context
(Overture) and its scene-classification statistics (clouds, snow, water), so water seen in the
pixels but missing from the map still counts as supported. Negated mentions ("no clouds",
"cloud-free") are not claims. The check is deliberately lexical and transparent: every
unsupported claim is reported as ``kind:value`` so a reviewer can see why.

Precision and recall on hand-labelled captions are measured in tests/test_grounding.py and
reported in docs/captioning.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.types import ChipStats, MapContext, ShareItem

__all__ = ["Claim", "extract_claims", "unsupported_claims"]


@dataclass(frozen=True)
class Claim:
    """Something a caption asserts is in the image.

    Attributes:
        kind: ``land_cover``, ``water``, ``settlement``, ``road``, ``rail``, ``snow``,
            ``cloud``, ``name``, ``count`` or ``not_visible``.
        value: What is claimed (``forest``, ``lake``, ``Aldersee``, ``120``...).
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


# (kind, value, pattern); patterns are matched on lower-cased text with word boundaries.
_LEXICON: tuple[tuple[str, str, str], ...] = (
    ("land_cover", "forest", r"forests?|woodlands?|woods|wooded|trees"),
    ("land_cover", "crop", r"croplands?|farmlands?|agricultural|fields?|crops?|farms?"),
    ("land_cover", "grass", r"grasslands?|meadows?|pastures?|grass"),
    ("land_cover", "barren", r"bare ground|bare soil|barren|rocks?|rocky|quarry|desert"),
    ("land_cover", "wetland", r"wetlands?|marsh(?:es)?|swamps?"),
    ("water", "lake", r"lakes?|ponds?|reservoirs?"),
    ("water", "river", r"rivers?|streams?|canals?"),
    ("water", "sea", r"sea|ocean|coast(?:al|line)?|beach(?:es)?"),
    (
        "settlement",
        "settlement",
        r"towns?|city|cities|villages?|urban|residential|settlements?|built-up|houses|buildings?",
    ),
    ("road", "road", r"roads?|highways?|motorways?|streets?"),
    ("rail", "rail", r"railways?|railroads?|rail lines?|train tracks?"),
    ("snow", "snow", r"snow(?:-covered)?|snowy|glaciers?|ice"),
    ("cloud", "cloud", r"clouds?(?!-free)|cloudy|overcast"),
    ("not_visible", "vehicles", r"cars?|trucks?|vehicles?|buses"),
    ("not_visible", "people", r"people|persons?|pedestrians?|crowds?"),
    ("not_visible", "animals", r"animals?|cows?|sheep|cattle|horses?"),
    ("not_visible", "single trees", r"individual trees|single trees?"),
)
_COMPILED = [(k, v, re.compile(rf"\b(?:{p})\b")) for k, v, p in _LEXICON]
_NEGATION = re.compile(r"\b(?:no|not|without|free of|absence of|lack of|nor)\s+(?:\w+\s+){0,2}$")
_COUNT = re.compile(r"\b(\d{1,6})\s+(?:\w+\s+)?buildings\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-zà-ÿß]+(?:[ -][A-Z][a-zà-ÿß]+)*)")
_NOT_NAMES = frozenset(
    {
        "Sentinel",
        "The",
        "This",
        "A",
        "An",
        "In",
        "On",
        "At",
        "North",
        "South",
        "East",
        "West",
        "Spring",
        "Summer",
        "Autumn",
        "Winter",
        "Satellite",
        "Image",
        "Overall",
        "Its",
        "It",
        "There",
        "Part",
        "Much",
        "Most",
        "Some",
        "Several",
        "Clouds",
        "Snow",
    }
)


_GENERIC_NAME_WORDS = frozenset(
    {"Lake", "River", "Mount", "Mountain", "Forest", "Town", "Village", "Road", "Street", "St"}
)


def extract_claims(caption: str) -> list[Claim]:
    """The claims a caption makes, in order of appearance, without duplicates."""
    text = caption.lower()
    found: dict[str, tuple[int, Claim]] = {}
    for kind, value, rx in _COMPILED:
        for m in rx.finditer(text):
            if _NEGATION.search(text[: m.start()]):
                continue
            claim = Claim(kind, value)
            found.setdefault(str(claim), (m.start(), claim))
    for m in _COUNT.finditer(text):
        claim = Claim("count", m.group(1))
        found.setdefault(str(claim), (m.start(), claim))
    for m in _NAME.finditer(caption):
        name = m.group(1)
        if name.split()[0] in _NOT_NAMES or name.split("-")[0] in _NOT_NAMES:
            continue
        claim = Claim("name", name)
        found.setdefault(str(claim), (m.start(), claim))
    return [c for _, c in sorted(found.values(), key=lambda t: t[0])]


def _share(items: Sequence[ShareItem], classes: set[str]) -> float:
    return sum(i.share for i in items if i.cls in classes)


def _supported(claim: Claim, ctx: MapContext, stats: ChipStats) -> bool:
    lc, lu = ctx.land_cover, ctx.land_use
    water_kinds = {w.kind for w in ctx.water}
    if claim.kind == "land_cover":
        uses = {
            "forest": {"forest"},
            "crop": {"farmland", "orchard", "vineyard", "farmyard"},
            "grass": {"meadow", "grass", "park", "recreation_ground"},
            "barren": {"quarry"},
            "wetland": {"wetland"},
        }[claim.value]
        return _share(lc, {claim.value}) >= 0.02 or _share(lu, uses) >= 0.02
    if claim.kind == "water":
        kinds = {
            "lake": {"lake", "pond", "reservoir"},
            "river": {"river", "stream", "canal"},
            "sea": {"ocean", "sea", "bay"},
        }[claim.value]
        # Open water seen by the scene classification supports "lake" even if unmapped.
        return bool(water_kinds & kinds) or (claim.value == "lake" and stats.water_fraction >= 0.02)
    if claim.kind == "settlement":
        return (
            ctx.building_count >= 5
            or _share(lc, {"urban"}) >= 0.01
            or _share(lu, {"residential", "industrial", "commercial"}) >= 0.01
        )
    if claim.kind == "road":
        return bool(ctx.roads)
    if claim.kind == "rail":
        return any(t.startswith("railway=") for t in ctx.tags)
    if claim.kind == "snow":
        return stats.snow_fraction >= 0.02 or _share(lc, {"snow"}) >= 0.01
    if claim.kind == "cloud":
        return stats.cloud_fraction >= 0.02
    if claim.kind == "count":
        n = int(claim.value)
        return ctx.building_count > 0 and 0.5 <= n / ctx.building_count <= 2.0
    if claim.kind == "name":
        known = " | ".join(ctx.names)
        words = [w for w in re.split(r"[ -]", claim.value) if w not in _GENERIC_NAME_WORDS]
        return all(w in known for w in words)
    return False  # not_visible: never supported at 10 m


def unsupported_claims(caption: str, ctx: MapContext, stats: ChipStats) -> list[str]:
    """The caption's claims that neither the map context nor the chip's pixels support."""
    return [str(c) for c in extract_claims(caption) if not _supported(c, ctx, stats)]
