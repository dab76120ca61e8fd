"""The template captioner: rule-based, grounded captions from the map context and chip statistics.

The template captioner writes a fluent caption from facts only: the map context (land cover,
land use, water, buildings, roads, named features with positions) and the chip's SCL/spectral
statistics (clouds, snow). Its words for each class, and the rule under which it may say them,
are the claim definitions of :mod:`pipeline.caption.claims`, which the grounding check also
reads: it writes a phrase only where that phrase's claim is supported, so the grounding check
never flags a template caption. It records which classes it named (``mentions``) so that this
is checkable on every sample. Its phrasing varies per sample, deterministically (seeded by the
sample id), for n-gram diversity.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from pipeline.caption.claims import (
    BUILDING,
    CLASS_PHRASES,
    CLASS_VOCABULARY,
    CLOUD,
    SNOW,
    ClaimType,
    stated_count,
    vocabulary,
)
from pipeline.caption.interface import CaptionInput, CaptionResult
from pipeline.core.types import ChipStats, MapContext, NamedFeature

__all__ = [
    "CLASS_PHRASES",
    "TemplateCaptioner",
]

_OPENINGS = (
    "A Sentinel-2 {season} image of {scene}.",
    "Satellite view in {season} of {scene}.",
    "This {season} Sentinel-2 scene shows {scene}.",
    "Satellite image from {season} showing {scene}.",  # "A autumn" read badly
)
_TEMPLATES = {
    "openings": _OPENINGS,
    "phrases": CLASS_PHRASES,
    "cloudy": "A Sentinel-2 {season} image almost entirely covered by clouds; the ground is "
    "not visible.",
    "nodata": "A Sentinel-2 {season} image with almost no valid data; the ground is not visible.",
    "claims": vocabulary(),
}
TEMPLATE_VERSION = "template-v1"


def _template_hash() -> str:
    blob = json.dumps(_TEMPLATES, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _where(position: str) -> str:
    if position == "throughout":
        return "across much of the image"
    if position == "centre":
        return "in the centre"
    return f"in the {position}"


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


class _Chip:
    """One chip's facts, and which claims they let a caption make."""

    def __init__(self, ctx: MapContext, stats: ChipStats) -> None:
        self.ctx = ctx
        self.stats = stats

    def supports(self, claim_type: ClaimType) -> bool:
        return claim_type.support.holds(self.ctx, self.stats)

    def sayable(self, theme: str, cls: str) -> bool:
        """Whether the class has a phrase, and the claim of that phrase is supported."""
        phrase = CLASS_VOCABULARY[theme].get(cls)
        return phrase is not None and self.supports(phrase.claim)


class TemplateCaptioner:
    """Rule-based, grounded captions from the map context and chip statistics.

    Args:
        seed: Seed mixed with each sample id to pick phrasings.
        cloudy_threshold: Cloud fraction from which the caption only says the view is hidden
            (0 for chips known to be hidden, by clouds or missing data).
    """

    name = "template"
    generation_params = "{}"

    def __init__(self, seed: int = 0, cloudy_threshold: float = 0.9) -> None:
        self.seed = seed
        self.cloudy_threshold = cloudy_threshold
        self.prompt_version = f"{TEMPLATE_VERSION}+{_template_hash()}"

    def caption_batch(self, inputs: Sequence[CaptionInput]) -> list[CaptionResult]:
        """Caption each chip; the template backend never fails."""
        return [self._caption(x) for x in inputs]

    def _caption(self, x: CaptionInput) -> CaptionResult:
        rng = random.Random(f"{self.seed}|{x.sample_id}")
        season = x.period
        chip = _Chip(x.context, x.stats)
        if x.stats.cloud_fraction >= self.cloudy_threshold:
            # Hidden: by clouds where they are what hides it, else by missing data.
            if chip.supports(CLOUD) and x.stats.cloud_fraction >= x.stats.nodata_fraction:
                text = str(_TEMPLATES["cloudy"]).format(season=season)
                return CaptionResult(x.sample_id, text, ("scl:cloud",))
            return CaptionResult(x.sample_id, str(_TEMPLATES["nodata"]).format(season=season))
        mentions: list[str] = []
        sentences = [rng.choice(_OPENINGS).format(season=season, scene=_scene(chip, mentions))]
        sentences += _water(chip, mentions, rng)
        sentences += _settlement(chip, mentions)
        sentences += _roads(chip, mentions)
        sentences += _conditions(chip, mentions)
        caption = " ".join(s for s in sentences if s)
        return CaptionResult(x.sample_id, caption, tuple(dict.fromkeys(mentions)))


def _scene(chip: _Chip, mentions: list[str]) -> str:
    ctx = chip.ctx
    covers = [i for i in ctx.land_cover if chip.sayable("land_cover", i.cls)][:3]
    if not covers:
        uses = [i for i in ctx.land_use if chip.sayable("land_use", i.cls)][:2]
        if not uses:
            return "an area with no mapped land cover"
        mentions.extend(f"land_use:{i.cls}" for i in uses)
        return _join([CLASS_PHRASES["land_use"][i.cls] for i in uses])
    mentions.extend(f"land_cover:{i.cls}" for i in covers)
    words = [CLASS_PHRASES["land_cover"][i.cls] for i in covers]
    if covers[0].share >= 0.6:
        head = f"a landscape dominated by {words[0]}"
        rest = words[1:]
        return head + (f" with some {_join(rest)}" if rest else "")
    return f"a mix of {_join(words)}"


def _water(chip: _Chip, mentions: list[str], rng: random.Random) -> list[str]:
    out = []
    for f in chip.ctx.water[:2]:
        if not chip.sayable("water", f.kind) or (f.share < 0.005 and f.length_km < 0.3):
            continue
        noun = CLASS_PHRASES["water"][f.kind]
        mentions.append(f"water:{f.kind}")
        label = f"the {noun} {f.name}" if f.name else f"a {noun}"
        if f.kind in ("river", "stream", "canal") and f.position == "throughout":
            out.append(f"{_capitalised(label)} flows through the image.")
        else:
            verb = rng.choice(("lies", "is visible", "can be seen"))
            out.append(f"{_capitalised(label)} {verb} {_where(f.position)}.")
    return out


def _settlement(chip: _Chip, mentions: list[str]) -> list[str]:
    ctx = chip.ctx
    if not chip.supports(BUILDING):
        return []
    # The stated count claims a settlement exactly when the mapped count supports one.
    count = stated_count(ctx.building_count)
    uses = {i.cls for i in ctx.land_use}
    place = next((f for f in ctx.named_features if f.theme == "place"), None)
    if "residential" in uses and chip.sayable("land_use", "residential"):
        mentions.append("land_use:residential")
        where = ""
        area = next(
            (f for f in ctx.named_features if f.theme == "land_use" and f.kind == "residential"),
            None,
        )
        if area is not None:
            where = f" {_where(area.position)}"
        text = f"{_capitalised(CLASS_PHRASES['land_use']['residential'])} with about {count} "
        text += f"buildings lies{where}" if where else "buildings is present"
    else:
        text = f"About {count} scattered buildings are present"
    mentions.append("building")
    if place is not None:
        text += f", around {place.name}"
    return [text + "."]


def _roads(chip: _Chip, mentions: list[str]) -> list[str]:
    ctx = chip.ctx
    major = [r for r in ctx.roads if chip.sayable("segment", r.cls) and r.share >= 0.2][:2]
    if not major:
        return []
    mentions.extend(f"segment:{r.cls}" for r in major)
    named: NamedFeature | None = next(
        (f for f in ctx.named_features if f.theme == "segment" and f.kind == major[0].cls),
        None,
    )
    words = [CLASS_PHRASES["segment"][r.cls] for r in major]
    text = f"The area is crossed by {_join(words)}"
    if named is not None:
        text += f" ({named.name})"
    return [text + "."]


def _conditions(chip: _Chip, mentions: list[str]) -> list[str]:
    stats = chip.stats
    out = []
    if stats.snow_fraction >= 0.15 and chip.supports(SNOW):
        mentions.append("scl:snow")
        amount = "Much of the ground" if stats.snow_fraction >= 0.5 else "Part of the ground"
        out.append(f"{amount} is covered by snow.")
    if chip.supports(CLOUD):
        if stats.cloud_fraction >= 0.3:
            mentions.append("scl:cloud")
            out.append("Clouds hide a large part of the view.")
        elif stats.cloud_fraction >= 0.05:
            mentions.append("scl:cloud")
            out.append("A few clouds are present.")
    if stats.nodata_fraction >= 0.2:
        out.append("Part of the image has no data.")
    return out
