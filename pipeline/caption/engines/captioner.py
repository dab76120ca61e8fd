"""The fast engine as a captioner backend (``captioner.backend: fast``).

:class:`FastLlavaCaptioner` is the ``transformers`` backend (same model loading, chat rendering,
multi-turn prompts, token accounting) with the generation replaced by
:class:`~pipeline.caption.engines.fast_llava.FastLlavaEngine`: every chat of a round goes into
the engine's queue, ``captioner.batch_size`` of them decode at once, and a chat that ends frees
its slot for the next. Greedy only (``temperature: 0``).

The captioner registry loads this module by name, only when a config asks for ``fast``, so the
default captioning path never imports the engine (nor torch for it).
"""

from __future__ import annotations

import copy
import io
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.caption.backends.model import Completion
from pipeline.caption.backends.transformers import TransformersCaptioner
from pipeline.caption.engines.fast_llava import FastLlavaEngine, Request, fuse_projections
from pipeline.core.errors import ConfigError

__all__ = ["FastLlavaCaptioner"]

_LOG = logging.getLogger(__name__)

PREFILL_CHUNK = 32
"""Most rows per prefill call: enough tokens per GEMM, and a bounded stall of the decode."""

PREPROCESS_THREADS = 8
"""Chats the processor prepares at once: decoding, resizing and normalising a chip takes ~20 ms
of CPU, half a caption's GPU time, and PIL and numpy release the GIL for the pixel work."""

FULL_ROUND_FACTOR = 4
"""Chats per round, in slots, from which a round's drain (its last chats decode in a part-empty
batch) stops mattering much; below one slot's worth, slots stay empty all round."""

CAPACITY_STEP = 128
"""Cache tokens per slot grow in this step: prompts lengthen a little with each chip's facts and
with each turn, and every growth captures the decode graphs again (a coarser step costs memory:
256 slots x 128 tokens are 4 GiB of the 8B model's cache)."""


class FastLlavaCaptioner(TransformersCaptioner):
    """LLaVA-Next through the fast engine: continuous batching, stop at EOS, CUDA graphs.

    Args:
        model: Local folder or hub id of a LLaVA-Next model (CLIP vision tower, Llama).
        prompt: Prompt name or path.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda:0``... On a CPU the engine runs
            eagerly (no compilation, no graphs), for tests.
        batch_size: Slots: chats decoded at once (their KV cache is allocated at the first
            round).
        max_new_tokens: Generation limit per turn.
        temperature: Must be 0: the engine decodes greedily.

    Raises:
        ConfigError: for a temperature above 0.
    """

    backend = "fast"

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
        if temperature > 0:
            raise ConfigError(
                "captioner.temperature",
                "backend 'fast' decodes greedily; use 'transformers' or 'openai' to sample",
            )
        super().__init__(
            model, prompt, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
        fuse_projections(self.net)
        on_gpu = self.device.startswith("cuda")
        self.engine = FastLlavaEngine(
            self.net,
            slots=batch_size,
            chunk=PREFILL_CHUNK,
            refill_rows=max(1, batch_size // 16),
            stop_ids=sorted(self.stop_ids),
            capacity_step=CAPACITY_STEP,
            use_compile=on_gpu,
            use_graphs=on_gpu,
        )
        self._preprocess = ThreadPoolExecutor(PREPROCESS_THREADS, "fast-preprocess")
        self._processors = threading.local()
        self._warned_small_round = False

    def request(self, text: str, png: bytes) -> Request:
        """The engine request of one rendered chat and its image (the processor's tokens)."""
        from PIL import Image

        pil = Image.open(io.BytesIO(png)).convert("RGB")
        inputs: Any = self._thread_processor()(text=[text], images=[pil], return_tensors="pt")
        height, width = (int(v) for v in inputs["image_sizes"][0])
        return Request(
            inputs["input_ids"][0], inputs["pixel_values"][0], (height, width), self.max_new_tokens
        )

    def _thread_processor(self) -> Any:
        """This thread's copy of the processor.

        A fast tokenizer raises "Already borrowed" when two threads call it at once
        (huggingface/tokenizers#537).
        """
        processor = getattr(self._processors, "processor", None)
        if processor is None:
            processor = self._processors.processor = copy.deepcopy(self.processor)
        return processor

    def _request_or_error(self, text: str, png: bytes) -> Request | Exception:
        try:
            return self.request(text, png)
        except Exception as exc:
            return exc

    def _warn_if_small(self, chats: int) -> None:
        """Say once per process when a round leaves slots empty (a round is a shard's chats).

        An empty round (every image unreadable) has nothing to decode, so it says nothing.
        """
        slots = self.engine.slots
        if self._warned_small_round or not 0 < chats < slots:
            return
        self._warned_small_round = True
        _LOG.warning(
            "fast engine: a round of %d chats leaves %d of %d slots (captioner.batch_size) "
            "empty the whole round; a round is one shard's chats: output.shard_size of %d "
            "fills every slot, and %d (%d x batch_size) or more also keeps the drain at each "
            "round's end short",
            chats,
            slots - chats,
            slots,
            slots,
            FULL_ROUND_FACTOR * slots,
            FULL_ROUND_FACTOR,
        )

    def _generate(
        self, texts: Sequence[str], images: Sequence[bytes]
    ) -> list[Completion | Exception]:
        """Generate an answer for each rendered chat through the engine's queue."""
        import torch

        out: list[Completion | Exception] = [RuntimeError("not generated")] * len(texts)
        prepared = list(self._preprocess.map(self._request_or_error, texts, images))
        requests: dict[int, Request] = {}
        for i, request in enumerate(prepared):
            if isinstance(request, Exception):  # an unreadable image fails its chat only
                out[i] = request
            else:
                requests[i] = request
        self._warn_if_small(len(requests))
        setup_before = self.engine.setup_s
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                generations, _ = self.engine.generate(list(requests.values()))
        except Exception as exc:  # a failed round fails its chats, not the shard
            for i in requests:
                out[i] = exc
            return out
        setup = self.engine.setup_s - setup_before
        if setup:
            _LOG.info("fast engine warm-up: %.1f s", setup)
        # The warm-up (compilation, graph capture) happens once per worker: not a caption's cost.
        latency = (time.perf_counter() - t0 - setup) / max(1, len(requests))
        for (i, request), generation in zip(requests.items(), generations, strict=True):
            out[i] = self.completion(generation.tokens, request.prompt_len, latency)
        return out
