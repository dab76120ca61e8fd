"""What a captioner takes and returns, and the protocol every captioner follows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.core.types import ChipStats, MapContext


@dataclass(frozen=True)
class CaptionInput:
    """What a captioner knows about one chip.

    Attributes:
        sample_id: The sample.
        period: Period name (e.g. ``summer``).
        datetime: Acquisition time of the scene.
        lon: Chip centre longitude.
        lat: Chip centre latitude.
        context: The chip's map context.
        stats: The chip's SCL fractions and spectral indices.
        rgb_png: The true-colour composite (for vision-language backends).
    """

    sample_id: str
    period: str
    datetime: dt.datetime
    lon: float
    lat: float
    context: MapContext
    stats: ChipStats
    rgb_png: bytes = b""


@dataclass(frozen=True)
class CaptionResult:
    """A caption, or why there is none.

    Attributes:
        sample_id: The sample.
        caption: The caption text, ``None`` when captioning failed.
        mentions: Context classes the caption names (``water:lake``, ``land_cover:forest``,
            ``scl:cloud``...), for grounding checks.
        error_reason: Failure reason when ``caption`` is ``None``.
        error_message: Failure details.
        finish_reason: Why generation stopped (``stop``, ``length``...) for model backends.
        prompt_tokens: Prompt tokens over all turns (image tokens included), if known.
        completion_tokens: Generated tokens over all turns, if known.
        latency_s: Model time over all turns.
        qa: (question, answer) pairs of a multi-turn prompt.
    """

    sample_id: str
    caption: str | None
    mentions: tuple[str, ...] = field(default=())
    error_reason: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    qa: tuple[tuple[str, str], ...] = field(default=())


class Captioner(Protocol):
    """A captioning backend: captions a batch of chips at a time."""

    name: str
    """Backend and model id, recorded on every sample (e.g. ``template``)."""
    prompt_version: str
    """Version and content hash of the prompt/template, recorded on every sample."""

    @property
    def generation_params(self) -> str:
        """Generation settings as JSON, recorded on every sample."""
        ...

    def caption_batch(self, inputs: Sequence[CaptionInput]) -> list[CaptionResult]:
        """Caption ``inputs``; one result per input, in order, failures included."""
        ...
