"""The part every model-backed captioner shares: prompts, conversations, turns, accounting.

A backend only has to complete one *round*: a list of chats (one per sample still alive) in,
one :class:`Completion` or exception per chat out. :class:`ModelCaptioner` renders the prompt,
runs one round for single-pass prompts or ``1 + len(follow-ups)`` rounds for the multi-turn
Llama3-MS-CLIP structure (feeding each answer back), sums tokens and latency over the turns,
and turns exceptions into per-sample failures, so no sample is ever dropped silently.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.caption.interface import CaptionInput, CaptionResult
from pipeline.caption.prompts import ChatMessage, PromptTemplate, load_prompt, prompt_facts

__all__ = ["CaptionBackendError", "Completion", "ModelCaptioner", "png_data_url"]


@dataclass(frozen=True)
class Completion:
    """One model answer.

    Attributes:
        text: The generated text.
        finish_reason: ``stop``, ``length`` (truncated) or backend specific.
        prompt_tokens: Tokens in the prompt (image tokens included), if known.
        completion_tokens: Generated tokens, if known.
        latency_s: Wall time of the request or batch share.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


class CaptionBackendError(Exception):
    """A chat could not be completed; ``reason`` is recorded as the sample's error reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def png_data_url(png: bytes) -> str:
    """A PNG as a base64 ``data:`` URL (the OpenAI image_url form)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


class ModelCaptioner(ABC):
    """Base of model-backed captioners.

    Args:
        model: Model id (served name or local path), recorded on every sample.
        prompt: Prompt name in ``prompts/`` or a path to a prompt YAML.
        max_new_tokens: Generation limit per turn.
        temperature: Sampling temperature (0 = greedy).
    """

    backend = "model"

    def __init__(
        self, model: str, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0
    ) -> None:
        self.model = model
        self.prompt: PromptTemplate = load_prompt(prompt)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.name = f"{self.backend}:{model}"
        self.prompt_version = self.prompt.prompt_version

    @property
    def generation_params(self) -> str:
        """Generation settings as JSON, recorded on every sample."""
        return json.dumps(
            {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature},
            sort_keys=True,
        )

    @abstractmethod
    def complete_round(
        self, chats: Sequence[list[ChatMessage]], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Complete each chat (its image is ``images[i]`` as PNG); never raise per chat."""

    def image_part(self, png: bytes) -> ChatMessage:
        """The content part that carries the image in a chat (OpenAI data-URL form)."""
        return {"type": "image_url", "image_url": {"url": png_data_url(png)}}

    def caption_batch(self, inputs: Sequence[CaptionInput]) -> list[CaptionResult]:
        """Caption ``inputs``: one result per input, in order, failures included."""
        chats = [
            self.prompt.first_turn(prompt_facts(x), self.image_part(x.rgb_png)) for x in inputs
        ]
        alive = list(range(len(inputs)))
        answers: list[list[str]] = [[] for _ in inputs]
        totals: list[Completion | None] = [None] * len(inputs)
        failures: dict[int, tuple[str, str]] = {}
        last: dict[int, Completion] = {}
        for turn, follow_up in enumerate([None, *self.prompt.follow_ups()]):
            if turn > 0:
                for i in alive:
                    chats[i].append({"role": "assistant", "content": answers[i][-1]})
                    chats[i].append({"role": "user", "content": follow_up})
            done = self.complete_round(
                [chats[i] for i in alive], [inputs[i].rgb_png for i in alive]
            )
            still = []
            for i, out in zip(alive, done, strict=True):
                if isinstance(out, Exception):
                    reason = out.reason if isinstance(out, CaptionBackendError) else "caption_error"
                    failures[i] = (reason, f"turn {turn + 1}: {out}")
                    continue
                answers[i].append(out.text.strip())
                last[i] = out
                prev = totals[i]
                totals[i] = (
                    out
                    if prev is None
                    else Completion(
                        out.text,
                        out.finish_reason,
                        _add(prev.prompt_tokens, out.prompt_tokens),
                        _add(prev.completion_tokens, out.completion_tokens),
                        prev.latency_s + out.latency_s,
                    )
                )
                still.append(i)
            alive = still
        results = []
        questions = [*self.prompt.questions]
        for i, x in enumerate(inputs):
            if i in failures:
                reason, message = failures[i]
                results.append(
                    CaptionResult(x.sample_id, None, error_reason=reason, error_message=message)
                )
                continue
            total = totals[i]
            assert total is not None
            qa = tuple(zip(questions, answers[i][: len(questions)], strict=False))
            results.append(
                CaptionResult(
                    x.sample_id,
                    answers[i][-1],
                    finish_reason=last[i].finish_reason,
                    prompt_tokens=total.prompt_tokens,
                    completion_tokens=total.completion_tokens,
                    latency_s=round(total.latency_s, 4),
                    qa=qa,
                )
            )
        return results
