"""Captions generated in-process with Hugging Face transformers (GPU boxes without vLLM, tests).

Chats are rendered with the processor's chat template and generated in batches of
``batch_size`` with left padding. transformers' continuous batching (``generate_batch``) takes
token ids only, not ``pixel_values``, so a vision-language model cannot use it; batches are
static and grouped by prompt length to keep padding small.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from typing import Any

from pipeline.caption.backends.model import Completion, ModelCaptioner
from pipeline.caption.prompts import ChatMessage
from pipeline.core.config import CaptionerConfig

__all__ = ["TransformersCaptioner"]


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

    @classmethod
    def from_config(cls, config: CaptionerConfig) -> TransformersCaptioner:
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
        """Generate an answer for each chat, ``batch_size`` chats at a time."""
        with self._lock:
            return self._generate(chats, images)

    def _generate(
        self, chats: Sequence[list[ChatMessage]], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        import torch
        from PIL import Image

        texts = [
            self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in chats
        ]
        order = sorted(range(len(chats)), key=lambda i: len(texts[i]))
        out: list[Completion | Exception] = [RuntimeError("not generated")] * len(chats)
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
                prompt_len = batch["input_ids"].shape[1]
                new = generated[:, prompt_len:]
                eos = self.net.generation_config.eos_token_id
                eos_ids = set(eos if isinstance(eos, list) else [eos])
                pad = self.processor.tokenizer.pad_token_id
                for row, i in enumerate(idx):
                    tokens = [t for t in new[row].tolist() if t != pad]
                    stopped = any(t in eos_ids for t in tokens)
                    n_prompt = int(batch["attention_mask"][row].sum())
                    out[i] = Completion(
                        text=self.processor.decode(tokens, skip_special_tokens=True),
                        finish_reason="stop" if stopped else "length",
                        prompt_tokens=n_prompt,
                        completion_tokens=len(tokens),
                        latency_s=latency,
                    )
            except Exception as exc:  # a failed batch fails its chats, not the shard
                for i in idx:
                    out[i] = exc
        return out
