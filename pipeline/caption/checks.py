"""Caption checks: cheap, explainable tests run on every caption and stored as columns.

A check never drops a sample: it adds a flag to ``caption_flags`` (and measurements to their
own columns) so that filtering is the dataset user's choice. Flags:

``empty``, ``refusal`` (the model declines), ``boilerplate`` ("Sure! Here is a caption"),
``repetition`` (a phrase looping), ``truncated`` (stopped by the token limit or mid-sentence),
``not_english``, ``over_77_clip_tokens`` (CLIP's text tower truncates at 77), ``too_short``,
``ungrounded`` (the grounding check found unsupported claims: see
:mod:`pipeline.caption.grounding`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from pipeline.caption.grounding import unsupported_claims
from pipeline.core.clip_tokenizer import clip_token_ids
from pipeline.core.types import ChipStats, MapContext

__all__ = ["CLIP_CONTEXT", "CaptionChecks", "check_caption", "clip_token_count"]

CLIP_CONTEXT = 77
"""CLIP's text context, start and end tokens included."""

_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i cannot|i can'?t|as an ai|i am unable|i'm unable|"
    r"unable to (?:see|view|determine|provide|describe)|cannot be determined|"
    r"not possible to (?:determine|tell|see))\b"
)
_BOILERPLATE = re.compile(
    r"^(?:sure|certainly|of course|here is|here's|caption:|answer:)\b|"
    r"\b(?:as requested|i hope this helps)\b"
)
_STOPWORDS = frozenset(
    {
        "the",
        "a",
        "an",
        "of",
        "and",
        "or",
        "but",
        "in",
        "on",
        "with",
        "is",
        "are",
        "was",
        "be",
        "to",
        "by",
        "from",
        "at",
        "as",
        "its",
        "it",
        "this",
        "that",
        "there",
        "which",
        "what",
        "i",
        "you",
        "we",
        "they",
        "can",
        "not",
        "no",
        "into",
        "over",
        "near",
        "along",
        "around",
        "between",
        "through",
        "some",
        "several",
        "few",
        "most",
        "much",
        "many",
        "has",
        "have",
        "small",
        "large",
        "part",
        "where",
        "while",
    }
)


def clip_token_count(text: str) -> int:
    """Tokens CLIP's BPE makes of ``text``, plus its start and end tokens."""
    return len(clip_token_ids(text)) + 2


def _repetition(words: list[str]) -> bool:
    if len(words) < 6:
        return False
    run = max((len(list(g)) for g in _runs(words)), default=0)
    trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
    return run >= 4 or (bool(trigrams) and trigrams.most_common(1)[0][1] >= 3)


def _runs(words: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for w in words:
        if out and out[-1][-1] == w:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _language(text: str, words: list[str]) -> str:
    # Control or replacement characters mean decoding garbage, whatever the words.
    if any(c == "\ufffd" or (unicodedata.category(c) == "Cc" and c not in "\n\t") for c in text):
        return "unknown"
    letters = [c for c in text if c.isalpha()]
    if not letters or not words:
        return "unknown"
    if sum(c.isascii() for c in letters) / len(letters) < 0.9:
        return "unknown"
    # Too few words to judge by function words: the too_short flag covers such captions.
    if len(words) >= 5 and sum(w in _STOPWORDS for w in words) / len(words) < 0.12:
        return "unknown"
    return "en"


@dataclass(frozen=True)
class CaptionChecks:
    """What the checks found for one caption.

    Attributes:
        flags: Names of the checks the caption failed, sorted.
        clip_tokens: CLIP tokens (with start/end).
        words: Word count.
        language: ``en`` or ``unknown``.
        unsupported_claims: Claims the context and pixels do not support (``kind:value``).
    """

    flags: tuple[str, ...]
    clip_tokens: int
    words: int
    language: str
    unsupported_claims: tuple[str, ...]


def check_caption(
    caption: str | None,
    *,
    finish_reason: str | None,
    context: MapContext,
    stats: ChipStats,
) -> CaptionChecks:
    """Run every check on one caption."""
    text = (caption or "").strip()
    words = re.findall(r"[\w'-]+", text.lower())
    flags = []
    if not text:
        flags.append("empty")
    if _REFUSAL.search(text.lower()):
        flags.append("refusal")
    if _BOILERPLATE.search(text.lower()):
        flags.append("boilerplate")
    if _repetition(words):
        flags.append("repetition")
    if text and (finish_reason == "length" or text[-1] not in ".!?\"')"):
        flags.append("truncated")
    language = _language(text, words)
    if text and language != "en":
        flags.append("not_english")
    clip_tokens = clip_token_count(text) if text else 0
    if clip_tokens > CLIP_CONTEXT:
        flags.append("over_77_clip_tokens")
    if text and len(words) < 5:
        flags.append("too_short")
    # The grounding lexicon is English: for other text it would only find false "names".
    claims = tuple(unsupported_claims(text, context, stats)) if language == "en" else ()
    if claims:
        flags.append("ungrounded")
    return CaptionChecks(tuple(sorted(flags)), clip_tokens, len(words), language, claims)
