"""The claims a caption can make about a chip, each defined once: its words and what supports it.

A claim is ``kind:value`` (``land_cover:forest``, ``water:lake``, ``settlement:settlement``,
``count:120``, ``name:Aldersee``...). Each :class:`ClaimType` holds the words that express it
and its :class:`Support`, the map or pixel facts under which a caption may make it. Both sides of
captioning read these definitions:

* the template captioner (:mod:`pipeline.caption.template`) writes each context class with the
  phrase :data:`CLASS_VOCABULARY` gives it, and only when that phrase's claim is supported; it
  states building counts with :func:`stated_count` and names only features of the context;
* the grounding check (:mod:`pipeline.caption.grounding`) finds claims with a lexicon made of
  the same words and phrases, and tests them with the same rules (:func:`supported`).

So a template caption is never flagged, by construction;
tests/pipeline/caption/test_grounding.py checks this on many random contexts and keeps the
check's hand-labelled precision and recall.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.types import ChipStats, MapContext, ShareItem

__all__ = [
    "BUILDING",
    "CLAIM_TYPES",
    "CLASS_PHRASES",
    "CLASS_VOCABULARY",
    "CLOUD",
    "COUNT_WORDS",
    "GENERIC_NAME_WORDS",
    "SETTLEMENT",
    "SNOW",
    "Claim",
    "ClaimType",
    "ClassPhrase",
    "Support",
    "count_claims",
    "known_names",
    "lexicon_words",
    "stated_count",
    "supported",
    "vocabulary",
]

MIN_SHARE = 0.01
"""Share of the chip from which a mapped class supports a claim (1 % of a 2.6 km chip: ~7 ha,
~700 pixels of 10 m, clearly visible)."""

MIN_PIXEL_FRACTION = 0.02
"""Fraction of the chip's pixels (scene classification) from which clouds, snow or open water
support a claim."""

SETTLEMENT_MIN_BUILDINGS = 5
"""Buildings from which the map supports a settlement; a stated count this high claims one."""

COUNT_TOLERANCE = 2.0
"""A stated building count is supported within this factor of the mapped count."""


@dataclass(frozen=True)
class Claim:
    """Something a caption asserts is in the image.

    Attributes:
        kind: ``land_cover``, ``land_use``, ``water``, ``settlement``, ``building``, ``road``,
            ``rail``, ``snow``, ``cloud``, ``name``, ``count`` or ``not_visible``.
        value: What is claimed (``forest``, ``lake``, ``Aldersee``, ``120``...).
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Support:
    """The facts that support a claim: any one of them suffices; none listed, never supported.

    Attributes:
        land_cover: Land-cover classes whose summed share reaches ``min_share``.
        land_use: Land-use classes whose summed share reaches ``min_share``.
        water: Water feature kinds, any one present in the context.
        pixels: A scene-classification fraction (``water``, ``snow``, ``cloud``) that reaches
            ``min_fraction``.
        min_buildings: Mapped buildings needed, if buildings support the claim.
        roads: Whether any mapped road supports the claim.
        tag_prefix: An OSM-style tag prefix (``railway=``) whose presence supports the claim.
        min_share: See ``land_cover`` and ``land_use``.
        min_fraction: See ``pixels``.
    """

    land_cover: tuple[str, ...] = ()
    land_use: tuple[str, ...] = ()
    water: tuple[str, ...] = ()
    pixels: Literal["water", "snow", "cloud"] | None = None
    min_buildings: int | None = None
    roads: bool = False
    tag_prefix: str | None = None
    min_share: float = MIN_SHARE
    min_fraction: float = MIN_PIXEL_FRACTION

    def holds(self, ctx: MapContext, stats: ChipStats) -> bool:
        """Whether the chip's map context or pixels support the claim."""
        fractions = {
            "water": stats.water_fraction,
            "snow": stats.snow_fraction,
            "cloud": stats.cloud_fraction,
        }
        return (
            _share(ctx.land_cover, self.land_cover) >= self.min_share
            or _share(ctx.land_use, self.land_use) >= self.min_share
            or any(w.kind in self.water for w in ctx.water)
            or (self.pixels is not None and fractions[self.pixels] >= self.min_fraction)
            or (self.min_buildings is not None and ctx.building_count >= self.min_buildings)
            or (self.roads and bool(ctx.roads))
            or (
                self.tag_prefix is not None and any(t.startswith(self.tag_prefix) for t in ctx.tags)
            )
        )


def _share(items: Sequence[ShareItem], classes: tuple[str, ...]) -> float:
    return sum(i.share for i in items if i.cls in classes)


@dataclass(frozen=True)
class ClaimType:
    """One claim a caption can make: the words that express it and what supports it.

    Attributes:
        kind: The claim's kind (see :class:`Claim`).
        value: The claim's value.
        words: Regular expression of the words that make the claim, matched as whole words on
            lower-cased text; the phrases :data:`CLASS_VOCABULARY` gives the claim are added.
        support: When the claim holds.
    """

    kind: str
    value: str
    words: str
    support: Support

    @property
    def claim(self) -> Claim:
        """The claim these words make."""
        return Claim(self.kind, self.value)


FOREST = ClaimType(
    "land_cover",
    "forest",
    r"forests?|woodlands?|woods|wooded|trees",
    Support(land_cover=("forest",), land_use=("forest",)),
)
CROP = ClaimType(
    "land_cover",
    "crop",
    r"croplands?|farmlands?|agricultural|fields?|crops?|farms?|orchards?|vineyards?",
    Support(land_cover=("crop",), land_use=("farmland", "orchard", "vineyard", "farmyard")),
)
GRASS = ClaimType(
    "land_cover",
    "grass",
    r"grasslands?|meadows?|pastures?|grass",
    Support(land_cover=("grass",), land_use=("meadow", "grass", "park", "recreation_ground")),
)
BARREN = ClaimType(
    "land_cover",
    "barren",
    r"bare ground|bare soil|barren|rocks?|rocky|quarry|quarries|desert",
    Support(land_cover=("barren",), land_use=("quarry",)),
)
WETLAND = ClaimType(
    "land_cover", "wetland", r"wetlands?|marsh(?:es)?|swamps?", Support(land_cover=("wetland",))
)
SHRUB = ClaimType(
    "land_cover", "shrub", r"shrublands?|shrubs?|scrub(?:land)?", Support(land_cover=("shrub",))
)
MOSS = ClaimType("land_cover", "moss", r"moss(?:es)?|lichens?", Support(land_cover=("moss",)))
MANGROVE = ClaimType("land_cover", "mangrove", r"mangroves?", Support(land_cover=("mangrove",)))
PARK = ClaimType("land_use", "park", r"parks?", Support(land_use=("park",)))
CEMETERY = ClaimType(
    "land_use", "cemetery", r"cemeter(?:y|ies)|graveyards?", Support(land_use=("cemetery",))
)
SCHOOL = ClaimType("land_use", "school", r"schools?", Support(land_use=("school",)))
RECREATION_GROUND = ClaimType(
    "land_use",
    "recreation_ground",
    r"recreation grounds?",
    Support(land_use=("recreation_ground",)),
)
ALLOTMENTS = ClaimType("land_use", "allotments", r"allotments?", Support(land_use=("allotments",)))
LAKE = ClaimType(
    "water",
    "lake",
    r"lakes?|ponds?|reservoirs?",
    # Open water seen by the scene classification supports "lake" even if unmapped.
    Support(water=("lake", "pond", "reservoir"), pixels="water"),
)
RIVER = ClaimType(
    "water", "river", r"rivers?|streams?|canals?", Support(water=("river", "stream", "canal"))
)
SEA = ClaimType(
    "water",
    "sea",
    r"sea|ocean|coast(?:al|line)?|beach(?:es)?",
    Support(water=("ocean", "sea", "bay")),
)
WATER_BODY = ClaimType(
    "water",
    "water",
    r"water bod(?:y|ies)",
    Support(
        water=("water", *LAKE.support.water, *RIVER.support.water, *SEA.support.water),
        pixels="water",
    ),
)
SETTLEMENT = ClaimType(
    "settlement",
    "settlement",
    r"towns?|city|cities|villages?|urban|residential|settlements?|built-up|industrial|commercial",
    Support(
        land_cover=("urban",),
        land_use=("residential", "industrial", "commercial"),
        min_buildings=SETTLEMENT_MIN_BUILDINGS,
    ),
)
BUILDING = ClaimType("building", "building", r"buildings?|houses?", Support(min_buildings=1))
ROAD = ClaimType(
    "road", "road", r"roads?|highways?|motorways?|streets?|tracks?", Support(roads=True)
)
RAIL = ClaimType(
    "rail",
    "rail",
    r"railways?|railroads?|rail lines?|train tracks?",
    Support(tag_prefix="railway="),
)
SNOW = ClaimType(
    "snow",
    "snow",
    r"snow(?:-covered)?|snowy|glaciers?|ice",
    Support(land_cover=("snow",), pixels="snow"),
)
CLOUD = ClaimType("cloud", "cloud", r"clouds?(?!-free)|cloudy|overcast", Support(pixels="cloud"))
_NEVER = Support()  # 10 m pixels cannot show these
NOT_VISIBLE = (
    ClaimType("not_visible", "vehicles", r"cars?|trucks?|vehicles?|buses", _NEVER),
    ClaimType("not_visible", "people", r"people|persons?|pedestrians?|crowds?", _NEVER),
    ClaimType("not_visible", "animals", r"animals?|cows?|sheep|cattle|horses?", _NEVER),
    ClaimType("not_visible", "single trees", r"individual trees|single trees?", _NEVER),
)

CLAIM_TYPES: tuple[ClaimType, ...] = (
    FOREST,
    CROP,
    GRASS,
    BARREN,
    WETLAND,
    SHRUB,
    MOSS,
    MANGROVE,
    PARK,
    CEMETERY,
    SCHOOL,
    RECREATION_GROUND,
    ALLOTMENTS,
    LAKE,
    RIVER,
    SEA,
    WATER_BODY,
    SETTLEMENT,
    BUILDING,
    ROAD,
    RAIL,
    SNOW,
    CLOUD,
    *NOT_VISIBLE,
)
"""Every claim with fixed words; counts and names are the two claims whose value varies."""


@dataclass(frozen=True)
class ClassPhrase:
    """How a caption names a context class, and the claim that phrase makes."""

    text: str
    claim: ClaimType


def _phrases(table: dict[str, tuple[str, ClaimType]]) -> dict[str, ClassPhrase]:
    return {cls: ClassPhrase(text, claim) for cls, (text, claim) in table.items()}


CLASS_VOCABULARY: dict[str, dict[str, ClassPhrase]] = {
    "land_cover": _phrases(
        {
            "forest": ("forest", FOREST),
            "crop": ("cropland", CROP),
            "grass": ("grassland", GRASS),
            "urban": ("built-up land", SETTLEMENT),
            "barren": ("bare ground", BARREN),
            "snow": ("permanent snow and ice", SNOW),
            "wetland": ("wetland", WETLAND),
            "shrub": ("shrubland", SHRUB),
            "moss": ("moss and lichen", MOSS),
            "mangrove": ("mangroves", MANGROVE),
        }
    ),
    "land_use": _phrases(
        {
            "residential": ("a residential area", SETTLEMENT),
            "farmland": ("farmland", CROP),
            "meadow": ("meadows", GRASS),
            "quarry": ("a quarry", BARREN),
            "park": ("a park", PARK),
            "cemetery": ("a cemetery", CEMETERY),
            "school": ("a school ground", SCHOOL),
            "industrial": ("an industrial area", SETTLEMENT),
            "commercial": ("a commercial area", SETTLEMENT),
            "orchard": ("orchards", CROP),
            "vineyard": ("vineyards", CROP),
            "forest": ("managed forest", FOREST),
            "grass": ("grass land use", GRASS),
            "recreation_ground": ("a recreation ground", RECREATION_GROUND),
            "allotments": ("allotment gardens", ALLOTMENTS),
        }
    ),
    "water": _phrases(
        {
            "lake": ("lake", LAKE),
            "river": ("river", RIVER),
            "stream": ("stream", RIVER),
            "reservoir": ("reservoir", LAKE),
            "pond": ("pond", LAKE),
            "canal": ("canal", RIVER),
            "ocean": ("sea", SEA),
            "water": ("water body", WATER_BODY),
        }
    ),
    "segment": _phrases(
        {
            "motorway": ("a motorway", ROAD),
            "trunk": ("a trunk road", ROAD),
            "primary": ("a main road", ROAD),
            "secondary": ("a secondary road", ROAD),
            "tertiary": ("a local road", ROAD),
            "residential": ("residential streets", ROAD),
            "track": ("farm tracks", ROAD),
        }
    ),
}
"""The phrase for each context class (theme -> class) and the claim it makes."""

CLASS_PHRASES: dict[str, dict[str, str]] = {
    theme: {cls: phrase.text for cls, phrase in table.items()}
    for theme, table in CLASS_VOCABULARY.items()
}
"""Words the template captioner uses for each context class (theme -> class -> phrase)."""


def lexicon_words(claim_type: ClaimType) -> str:
    """The regular expression of everything that makes ``claim_type``: its words and phrases.

    Class phrases come first, longest first, so that a match covers a whole phrase ("bare
    ground", not "bare"); across claims the grounding check takes the longest match, so
    "residential streets" is a road, not a settlement.
    """
    phrases = {
        re.escape(p.text.removeprefix("a ").removeprefix("an "))
        for table in CLASS_VOCABULARY.values()
        for p in table.values()
        if p.claim == claim_type
    }
    return "|".join([*sorted(phrases, key=lambda p: (-len(p), p)), claim_type.words])


_BY_CLAIM = {t.claim: t for t in CLAIM_TYPES}


COUNT_WORDS = r"(\d{1,6})\s+(?:\w+\s+)?buildings"
"""A stated number of buildings ("120 buildings", "3 scattered buildings"); group 1: the number."""


def stated_count(n: int) -> int:
    """The number a caption states for ``n`` mapped buildings: rounded, and always supported.

    Exact below 20, then to 10 (below 200) or 50; the rounding error stays far inside
    :data:`COUNT_TOLERANCE`, and the rounded count reaches :data:`SETTLEMENT_MIN_BUILDINGS`
    exactly when ``n`` does.
    """
    if n < 20:
        return n
    step = 10 if n < 200 else 50
    return int(round(n / step) * step)


def count_claims(n: int) -> list[Claim]:
    """The claims of "``n`` buildings": the count, and a settlement from 5 buildings on.

    The map supports a settlement from ``SETTLEMENT_MIN_BUILDINGS``, so stating them claims one.
    """
    claims = [Claim("count", str(n))]
    if n >= SETTLEMENT_MIN_BUILDINGS:
        claims.append(SETTLEMENT.claim)
    return claims


GENERIC_NAME_WORDS = frozenset(
    {"Lake", "River", "Mount", "Mountain", "Forest", "Town", "Village", "Road", "Street", "St"}
)
"""Capitalised words that name a kind of feature, not a feature ("Lake Aldersee")."""


def _name_words(name: str) -> list[str]:
    """The words of a name (letters or digits), without generic words such as ``Lake``."""
    return [w for w in re.findall(r"[^\W\d_]+|\d+", name) if w not in GENERIC_NAME_WORDS]


def known_names(ctx: MapContext) -> list[str]:
    """Every name the context holds (features, water, the ``names`` list), longest first."""
    names = {*ctx.names, *(f.name for f in ctx.named_features), *(w.name for w in ctx.water)}
    return sorted((n for n in names if n), key=lambda n: (-len(n), n))


def _name_supported(name: str, ctx: MapContext) -> bool:
    # Whole words of one known name ("Frankfurt" of "Frankfurt am Main"), never a prefix of a
    # word: "Alder" is not "Aldersee".
    words = _name_words(name)
    for known in known_names(ctx):
        kw = _name_words(known)
        if any(kw[i : i + len(words)] == words for i in range(len(kw) - len(words) + 1)):
            return True
    return not words


def supported(claim: Claim, ctx: MapContext, stats: ChipStats) -> bool:
    """Whether the chip's map context or pixels support ``claim``."""
    if claim.kind == "count":
        n = int(claim.value)
        return ctx.building_count > 0 and (
            1 / COUNT_TOLERANCE <= n / ctx.building_count <= COUNT_TOLERANCE
        )
    if claim.kind == "name":
        return _name_supported(claim.value, ctx)
    claim_type = _BY_CLAIM.get(claim)
    return claim_type is not None and claim_type.support.holds(ctx, stats)


def vocabulary() -> dict[str, Any]:
    """Every definition here as plain data: what the template captioner's version hashes."""
    return {
        "claims": {
            str(t.claim): {"words": lexicon_words(t), "support": dataclasses.asdict(t.support)}
            for t in CLAIM_TYPES
        },
        "count": {
            "words": COUNT_WORDS,
            "settlement_min_buildings": SETTLEMENT_MIN_BUILDINGS,
            "tolerance": COUNT_TOLERANCE,
        },
        "generic_name_words": sorted(GENERIC_NAME_WORDS),
    }
