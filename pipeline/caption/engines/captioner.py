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
import functools
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pipeline.caption.backends.model import Completion
from pipeline.caption.backends.transformers import TransformersCaptioner
from pipeline.caption.engines.fast_llava import (
    DecodeStats,
    FastLlavaEngine,
    Request,
    fuse_projections,
)
from pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image
    from torch import Tensor

__all__ = ["FastLlavaCaptioner"]

_LOG = logging.getLogger(__name__)

PREFILL_CHUNK = 32
"""Most rows per prefill call: enough tokens per GEMM, and a bounded stall of the decode."""

PREPROCESS_THREADS = 8
"""Chips turned into anyres tiles at once: resizing and normalising a chip takes ~13 ms of CPU,
a third of a caption's GPU time, and PIL and numpy release the GIL for the pixel work (2 threads
on 2 cores: 6.7 ms per chip, against 12.7 for one; docs/benchmarks.md)."""

FULL_ROUND_FACTOR = 4
"""Chats per round, in slots, from which a round's drain (its last chats decode in a part-empty
batch) stops mattering much; below one slot's worth, slots stay empty all round."""

CAPACITY_STEP = 128
"""Cache tokens per slot grow in this step: prompts lengthen a little with each chip's facts and
with each turn, and every growth captures the decode graphs again (a coarser step costs memory:
256 slots x 128 tokens are 4 GiB of the 8B model's cache)."""


class TilesAhead:
    """A round's anyres tiles, prepared in threads ahead of the engine's prefills.

    The engine prefills a round's chats in queue order. Asked for chat ``i``, this starts the
    tiles of the chats up to ``i + ahead`` and drops those more than ``ahead`` behind ``i``
    (the warm-up reads the first chats again), so the GPU decodes while the next chats' images
    are prepared, and the host holds about ``2 x ahead`` chats' tiles (~7 MB each for the 8B
    model) instead of a round's.

    Args:
        pool: The threads that prepare tiles.
        jobs: One function per chat that prepares its tiles.
        ahead: Chats prepared ahead of the last one asked for; the first ``ahead`` start now.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, jobs: Sequence[Callable[[], Tensor]], ahead: int
    ) -> None:
        self._pool = pool
        self._jobs = jobs
        self._ahead = max(1, ahead)
        self._futures: dict[int, Future[Tensor]] = {}
        self._submitted = 0
        self.wait_s = 0.0
        """Time :meth:`get` spent waiting for tiles not yet prepared."""
        self._start(self._ahead)

    def _start(self, stop: int) -> None:
        for i in range(self._submitted, min(stop, len(self._jobs))):
            self._futures[i] = self._pool.submit(self._jobs[i])
        self._submitted = max(self._submitted, min(stop, len(self._jobs)))

    @property
    def held(self) -> int:
        """Chats whose tiles are being prepared or kept."""
        return len(self._futures)

    def get(self, i: int) -> Tensor:
        """Chat ``i``'s tiles (prepared here if they were dropped)."""
        self._start(i + 1 + self._ahead)
        for old in [j for j in self._futures if j < i - self._ahead]:
            del self._futures[old]
        future = self._futures.get(i)
        t0 = time.perf_counter()
        tiles = future.result() if future is not None else self._jobs[i]()
        self.wait_s += time.perf_counter() - t0
        return tiles


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
        self._image_tokens: dict[tuple[int, int], int] = {}
        """Image placeholder tokens per image size (width, height), from the processor."""
        self.tiles_ahead = batch_size + PREFILL_CHUNK
        """Chats whose tiles are prepared ahead of the engine (:class:`TilesAhead`): a full
        batch for the first admission, then a prefill chunk."""
        self._warned_small_round = False

    def request(self, text: str, png: bytes) -> Request:
        """The engine request of one rendered chat and its image, its tiles prepared now."""
        image = _open_rgb(png)
        ids, tiles = self._prompt_ids(text, image), self._tiles(image)
        return Request(ids, tiles, (image.height, image.width), self.max_new_tokens)

    def _prompt_ids(self, text: str, image: Image) -> Tensor:
        """The chat's prompt ids, its image placeholder expanded as the processor expands it.

        The placeholder count depends on the image size only: the first chat of each size goes
        through the whole processor (tiles included), later ones through its tokenizer alone,
        so that the tiles can be prepared later, while the engine decodes.
        """
        processor = self._thread_processor()
        token = processor.image_token
        count = self._image_tokens.get(image.size)
        if count is not None and text.count(token) == 1:
            expanded = text.replace(token, token * count)
            ids: Tensor = processor(text=[expanded], return_tensors="pt")["input_ids"][0]
            return ids
        ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0]
        if text.count(token) == 1:
            self._image_tokens[image.size] = int((ids == processor.image_token_id).sum())
        return ids

    def _tiles(self, image: Image) -> Tensor:
        """The image's anyres tiles, as the processor makes them for a chat."""
        processor = self._thread_processor()
        inputs = processor(text=[processor.image_token], images=[image], return_tensors="pt")
        tiles: Tensor = inputs["pixel_values"][0]
        return tiles

    def _thread_processor(self) -> Any:
        """This thread's copy of the processor.

        A fast tokenizer raises "Already borrowed" when two threads call it at once
        (huggingface/tokenizers#537).
        """
        processor = getattr(self._processors, "processor", None)
        if processor is None:
            processor = self._processors.processor = copy.deepcopy(self.processor)
        return processor

    def _prompt_or_error(self, text: str, png: bytes) -> tuple[Tensor, Image] | Exception:
        try:
            image = _open_rgb(png)
            return self._prompt_ids(text, image), image
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
        prompts: dict[int, tuple[Tensor, Image]] = {}
        for i, prompt in enumerate(self._preprocess.map(self._prompt_or_error, texts, images)):
            if isinstance(prompt, Exception):  # an unreadable image fails its chat only
                out[i] = prompt
            else:
                prompts[i] = prompt
        self._warn_if_small(len(prompts))
        tiles = TilesAhead(
            self._preprocess,
            [functools.partial(self._tiles, image) for _, image in prompts.values()],
            self.tiles_ahead,
        )
        requests = {
            i: Request(
                ids,
                functools.partial(tiles.get, k),
                (image.height, image.width),
                self.max_new_tokens,
            )
            for k, (i, (ids, image)) in enumerate(prompts.items())
        }
        setup_before = self.engine.setup_s
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                generations, stats = self.engine.generate(list(requests.values()))
        except Exception as exc:  # a failed round fails its chats, not the shard
            for i in requests:
                out[i] = exc
            return out
        setup = self.engine.setup_s - setup_before
        if setup:
            _LOG.info("fast engine warm-up: %.1f s", setup)
        if requests:
            self._report_round(len(requests), time.perf_counter() - t0 - setup, stats, tiles)
        # The warm-up (compilation, graph capture) happens once per worker: not a caption's cost.
        latency = (time.perf_counter() - t0 - setup) / max(1, len(requests))
        for (i, request), generation in zip(requests.items(), generations, strict=True):
            out[i] = self.completion(generation.tokens, request.prompt_len, latency)
        return out

    def _report_round(
        self, chats: int, seconds: float, stats: DecodeStats, tiles: TilesAhead
    ) -> None:
        """Log where a round's time went (warm-up excluded)."""
        slots = self.engine.slots
        _LOG.info(
            "fast engine: %d chats in %.1f s (%.2f/s): prefill %.1f s, decode %.1f s over %d "
            "steps with %.0f%% of %d slots live, %d refills; %.1f s waiting for image tiles",
            chats,
            seconds,
            chats / max(seconds, 1e-9),
            stats.prefill_s,
            stats.decode_s,
            stats.decode_steps,
            100 * stats.live_row_steps / max(1, stats.decode_steps * slots),
            slots,
            stats.refilled_rows,
            tiles.wait_s,
        )


def _open_rgb(png: bytes) -> Image:
    """The chip's image, decoded now (a broken file fails its chat here, not the round)."""
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")
