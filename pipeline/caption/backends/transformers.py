"""Captions generated in-process with Hugging Face transformers (GPU boxes without vLLM, tests).

Chats are rendered with the processor's chat template and generated in batches of
``batch_size`` with left padding. transformers' continuous batching (``generate_batch``) takes
token ids only, not ``pixel_values``, so a vision-language model cannot use it; batches are
static and grouped by prompt length to keep padding small. The ``fast`` backend
(:mod:`pipeline.caption.engines.captioner`) shares this class's loading, rendering and
accounting and replaces only the generation.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from typing import Any, Self

from pipeline.caption.backends.model import Completion, ModelCaptioner
from pipeline.caption.prompts import ChatMessage
from pipeline.core.config import CaptionerConfig

__all__ = ["TransformersCaptioner", "until_stop"]


def until_stop(tokens: Sequence[int], stop_ids: frozenset[int]) -> tuple[list[int], bool]:
    """The generated tokens up to and including the first stop id.

    What ``generate`` writes after a row's stop (padding, which may be the stop id itself) is
    not part of the answer.

    Returns:
        The tokens, and whether a stop id ended them.
    """
    for n, token in enumerate(tokens):
        if token in stop_ids:
            return list(tokens[: n + 1]), True
    return list(tokens), False


class TransformersCaptioner(ModelCaptioner):
    """LLaVA-Next (or any image-text-to-text model) run with ``model.generate``.

    Args:
        model: Local folder or hub id (offline: a folder).
        prompt: Prompt name or path.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda:0``...
        batch_size: Chats per ``generate`` call.
        max_new_tokens: Generation limit per turn.
        temperature: 0 = greedy.
    """

    backend = "transformers"

    def __init__(
        self,
        model: str,
        prompt: str,
        *,
        device: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
    ) -> None:
        super().__init__(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature)
        import torch
        import transformers

        tf: Any = transformers  # untyped library
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one generate at a time: shard threads share the model
        self.processor: Any = tf.AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.net: Any = tf.AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        self.net.to(device).eval()
        eos = self.net.generation_config.eos_token_id
        self.stop_ids = frozenset(eos if isinstance(eos, list) else [eos])
        """The model's EOS ids: a turn ends at the first of them."""

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> Self:
        """Build from the ``captioner`` config section."""
        return cls(
            config.model,
            config.prompt,
            device=config.device,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        )

    def image_part(self, png: bytes) -> ChatMessage:
        """Images go to the processor separately; the chat holds a placeholder."""
        return {"type": "image"}

    def complete_round(
        self, chats: Sequence[list[ChatMessage]], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Generate an answer for each chat."""
        texts = [
            self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in chats
        ]
        with self._lock:
            return self._generate(texts, images)

    def completion(self, tokens: Sequence[int], prompt_tokens: int, latency_s: float) -> Completion:
        """The answer a turn's generated tokens make.

        The text ends before the first EOS; the EOS counts as a completion token, what
        ``generate`` wrote after it does not.

        Args:
            tokens: The tokens generated for the turn.
            prompt_tokens: The turn's prompt tokens (image tokens included, padding not).
            latency_s: The turn's share of the generation time.
        """
        answer, stopped = until_stop(tokens, self.stop_ids)
        return Completion(
            text=self.processor.decode(answer, skip_special_tokens=True),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(answer),
            latency_s=latency_s,
        )

    def _generate(
        self, texts: Sequence[str], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Generate an answer for each rendered chat, ``batch_size`` chats at a time."""
        import torch
        from PIL import Image

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Completion | Exception] = [RuntimeError("not generated")] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            try:
                pil = [Image.open(io.BytesIO(images[i])).convert("RGB") for i in idx]
                batch = self.processor(
                    text=[texts[i] for i in idx], images=pil, return_tensors="pt", padding=True
                ).to(self.device)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    generated = self.net.generate(
                        **batch,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=self.temperature > 0,
                        temperature=self.temperature if self.temperature > 0 else None,
                    )
                latency = (time.perf_counter() - t0) / len(idx)
                new = generated[:, batch["input_ids"].shape[1] :]
                for row, i in enumerate(idx):
                    n_prompt = int(batch["attention_mask"][row].sum())
                    out[i] = self.completion(new[row].tolist(), n_prompt, latency)
            except Exception as exc:  # a failed batch fails its chats, not the shard
                for i in idx:
                    out[i] = exc
        return out
