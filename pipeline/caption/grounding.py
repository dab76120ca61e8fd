"""Grounding: which things a caption claims that the map context and the pixels do not support.

A claim is a phrase of the lexicon (land cover, land use, water, settlements, buildings, roads,
rail, snow, clouds), a building count ("120 buildings"), a named feature (a capitalised name),
or something that 10 m pixels cannot show (cars, people, single trees). The lexicon and the
rule that supports each claim are the definitions of :mod:`pipeline.caption.claims`, the same
ones the template captioner writes from, so a template caption is never flagged. Each claim is
checked against the chip's map context (Overture) and its scene-classification statistics
(clouds, snow, water), so water seen in the pixels but missing from the map still counts as
supported. Negated mentions ("no clouds", "cloud-free") are not claims. The check is
deliberately lexical and transparent: every unsupported claim is reported as ``kind:value`` so
a reviewer can see why.

Precision and recall on hand-labelled captions are measured in
tests/pipeline/caption/test_grounding.py and reported in docs/captioning.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipeline.caption.claims import (
    CLAIM_TYPES,
    COUNT_WORDS,
    GENERIC_NAME_WORDS,
    Claim,
    count_claims,
    known_names,
    lexicon_words,
    supported,
)
from pipeline.core.types import ChipStats, MapContext

__all__ = ["extract_claims", "unsupported_claims"]

# Patterns are matched on lower-cased text with word boundaries.
_LEXICON = [(t.claim, re.compile(rf"\b(?:{lexicon_words(t)})\b")) for t in CLAIM_TYPES]
_COUNT = re.compile(rf"\b{COUNT_WORDS}\b")
_NEGATION = re.compile(r"\b(?:no|not|without|free of|absence of|lack of|nor)\s+(?:\w+\s+){0,2}$")
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
_MASK = "\0"


def extract_claims(caption: str, known: Iterable[str] = ()) -> list[Claim]:
    """The claims a caption makes, in order of appearance, without duplicates.

    Args:
        caption: The caption.
        known: Names of the chip's features. Each one found whole is a name claim, and its
            words are no other claim ("Castle Rock" claims no rocks, "Frankfurt am Main" no
            name "Main").
    """
    found: list[tuple[int, Claim]] = []
    for name in sorted(set(known), key=lambda n: (-len(n), n)):
        whole = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
        found += [(m.start(), Claim("name", name)) for m in whole.finditer(caption)]
        caption = whole.sub(lambda m: _MASK * len(m.group()), caption)
    text = caption.lower()
    # Where matches overlap, the leftmost and then the longest wins: "farm tracks" is a road,
    # not farmland, and "individual trees" no forest.
    matches = [(m.start(), m.end(), [claim]) for claim, rx in _LEXICON for m in rx.finditer(text)]
    matches += [(m.start(), m.end(), count_claims(int(m.group(1)))) for m in _COUNT.finditer(text)]
    end = 0
    for start, stop, claims in sorted(matches, key=lambda m: (m[0], -m[1])):
        if start < end:
            continue
        end = stop
        if not _NEGATION.search(text[:start]):
            found += [(start, c) for c in claims]
    for m in _NAME.finditer(caption):
        name = m.group(1)
        if name.split()[0] in _NOT_NAMES or name.split("-")[0] in _NOT_NAMES:
            continue
        if all(w in GENERIC_NAME_WORDS for w in re.split(r"[ -]", name)):
            continue
        found.append((m.start(), Claim("name", name)))
    unique: dict[Claim, int] = {}
    for start, claim in sorted(found, key=lambda f: f[0]):
        unique.setdefault(claim, start)
    return list(unique)


def unsupported_claims(caption: str, ctx: MapContext, stats: ChipStats) -> list[str]:
    """The caption's claims that neither the map context nor the chip's pixels support."""
    return [
        str(c) for c in extract_claims(caption, known_names(ctx)) if not supported(c, ctx, stats)
    ]
