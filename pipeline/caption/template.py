"""The template captioner: fluent captions written from facts only, grounded by construction.

The template captioner writes a fluent caption from facts only: the map context (land cover,
land use, water, buildings, roads, named features with positions) and the chip's SCL/spectral
statistics (clouds, snow). It never names a class that is not in the chip's context, and it
records which classes it named (``mentions``) so that this is checkable on every sample. Its
phrasing varies per sample, deterministically (seeded by the sample id), for n-gram diversity.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

from pipeline.caption.interface import CaptionInput, CaptionResult
from pipeline.core.types import ChipStats, MapContext, NamedFeature

__all__ = [
    "CLASS_PHRASES",
    "TemplateCaptioner",
]


CLASS_PHRASES: dict[str, dict[str, str]] = {
    "land_cover": {
        "forest": "forest",
        "crop": "cropland",
        "grass": "grassland",
        "urban": "built-up land",
        "barren": "bare ground",
        "snow": "permanent snow and ice",
        "wetland": "wetland",
        "shrub": "shrubland",
        "moss": "moss and lichen",
        "mangrove": "mangroves",
    },
    "land_use": {
        "residential": "a residential area",
        "farmland": "farmland",
        "meadow": "meadows",
        "quarry": "a quarry",
        "park": "a park",
        "cemetery": "a cemetery",
        "school": "a school ground",
        "industrial": "an industrial area",
        "commercial": "a commercial area",
        "orchard": "orchards",
        "vineyard": "vineyards",
        "forest": "managed forest",
        "grass": "grass land use",
        "recreation_ground": "a recreation ground",
        "allotments": "allotment gardens",
    },
    "water": {
        "lake": "lake",
        "river": "river",
        "stream": "stream",
        "reservoir": "reservoir",
        "pond": "pond",
        "canal": "canal",
        "ocean": "sea",
        "water": "water body",
    },
    "segment": {
        "motorway": "a motorway",
        "trunk": "a trunk road",
        "primary": "a main road",
        "secondary": "a secondary road",
        "tertiary": "a local road",
        "residential": "residential streets",
        "track": "farm tracks",
    },
}
"""Words the template captioner uses for each context class (theme -> class -> phrase)."""

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


class TemplateCaptioner:
    """Rule-based, grounded captions from the map context and chip statistics.

    Args:
        seed: Seed mixed with each sample id to pick phrasings.
        cloudy_threshold: Cloud fraction from which the caption only says the view is clouded.
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
        if x.stats.cloud_fraction >= self.cloudy_threshold:
            return CaptionResult(
                x.sample_id, str(_TEMPLATES["cloudy"]).format(season=season), ("scl:cloud",)
            )
        mentions: list[str] = []
        ctx = x.context
        sentences = [rng.choice(_OPENINGS).format(season=season, scene=self._scene(ctx, mentions))]
        sentences += self._water(ctx, mentions, rng)
        sentences += self._settlement(ctx, mentions)
        sentences += self._roads(ctx, mentions)
        sentences += self._conditions(x.stats, mentions)
        caption = " ".join(s for s in sentences if s)
        return CaptionResult(x.sample_id, caption, tuple(dict.fromkeys(mentions)))

    @staticmethod
    def _scene(ctx: MapContext, mentions: list[str]) -> str:
        covers = [i for i in ctx.land_cover if i.cls in CLASS_PHRASES["land_cover"]][:3]
        if not covers:
            uses = [i for i in ctx.land_use if i.cls in CLASS_PHRASES["land_use"]][:2]
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

    @staticmethod
    def _water(ctx: MapContext, mentions: list[str], rng: random.Random) -> list[str]:
        out = []
        for f in ctx.water[:2]:
            noun = CLASS_PHRASES["water"].get(f.kind)
            if noun is None or (f.share < 0.005 and f.length_km < 0.3):
                continue
            mentions.append(f"water:{f.kind}")
            label = f"the {noun} {f.name}" if f.name else f"a {noun}"
            if f.kind in ("river", "stream", "canal") and f.position == "throughout":
                out.append(f"{label[0].upper()}{label[1:]} flows through the image.")
            else:
                verb = rng.choice(("lies", "is visible", "can be seen"))
                out.append(f"{label[0].upper()}{label[1:]} {verb} {_where(f.position)}.")
        return out

    @staticmethod
    def _settlement(ctx: MapContext, mentions: list[str]) -> list[str]:
        if ctx.building_count == 0:
            return []
        uses = {i.cls for i in ctx.land_use}
        place = next((f for f in ctx.named_features if f.theme == "place"), None)
        if "residential" in uses:
            mentions.append("land_use:residential")
            where = ""
            area = next(
                (
                    f
                    for f in ctx.named_features
                    if f.theme == "land_use" and f.kind == "residential"
                ),
                None,
            )
            if area is not None:
                where = f" {_where(area.position)}"
            text = f"A residential area with about {_round_count(ctx.building_count)} buildings "
            text += f"lies{where}" if where else "is present"
        else:
            text = f"About {_round_count(ctx.building_count)} scattered buildings are present"
        mentions.append("building")
        if place is not None:
            text += f", around {place.name}"
        return [text + "."]

    @staticmethod
    def _roads(ctx: MapContext, mentions: list[str]) -> list[str]:
        major = [r for r in ctx.roads if r.cls in CLASS_PHRASES["segment"] and r.share >= 0.2][:2]
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

    @staticmethod
    def _conditions(stats: ChipStats, mentions: list[str]) -> list[str]:
        out = []
        if stats.snow_fraction >= 0.15:
            mentions.append("scl:snow")
            amount = "Much of the ground" if stats.snow_fraction >= 0.5 else "Part of the ground"
            out.append(f"{amount} is covered by snow.")
        if stats.cloud_fraction >= 0.3:
            mentions.append("scl:cloud")
            out.append("Clouds hide a large part of the view.")
        elif stats.cloud_fraction >= 0.05:
            mentions.append("scl:cloud")
            out.append("A few clouds are present.")
        if stats.nodata_fraction >= 0.2:
            out.append("Part of the image has no data.")
        return out


def _round_count(n: int) -> int:
    if n < 20:
        return n
    step = 10 if n < 200 else 50
    return int(round(n / step) * step)
