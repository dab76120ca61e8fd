"""Fast LLaVA-Next captioning over the model's own weights: continuous batching, CUDA graphs.

How:

* **Slots.** :class:`FastLlavaEngine` decodes ``slots`` rows at once over one static KV cache of
  ``slots x capacity`` tokens. Requests wait in a queue; each takes a free slot with its own
  prompt length, image and token limit. A row that emits a stop id or reaches its
  ``max_new_tokens`` gives its slot back, and the next requests are prefilled into the free
  slots' cache rows, so the batch stays full until the queue runs dry.
* **Prefill** runs newcomers in chunks of rows, right-padded to a multiple of 16 tokens: every
  row's real tokens sit at positions ``0..L-1``, so RoPE positions are shared and causal attention
  never lets a real token see the padding after it. The vision tower, projector and anyres
  packing come first (CLIP layers hand-written up to the selected feature layer, with fused
  q/k/v), then the Llama layers as hand-written functions (:mod:`pipeline.caption.engines.layers`;
  q/k/v and gate/up fused into single GEMMs, RMSNorm/RoPE/SiLU fused by ``torch.compile``),
  writing K/V straight into the rows' slots.
* **Decode** covers every slot in one step; each row has its own position (its next cache index,
  which is also its RoPE position) and its own additive key mask, opened up to the row's prompt
  when it is admitted and one key per step after. A step (embedding, all layers, head, greedy
  argmax, per-row K/V writes, mask and position updates) is captured in a CUDA graph, one per
  KV-length bucket; each step replays the smallest bucket that holds the longest live row. Free
  slots are parked at position 0 and their tokens ignored.
* q_len=1 decode attention uses the GQA fold: each KV head's query heads are folded into the
  query-length axis (exact), so K/V are read once per KV head. The prefill and decode attention
  variants are chosen by :mod:`pipeline.caption.engines.autotune` on the real shapes.
* **Shapes are bucketed** so that compilation and graph capture happen once per worker: prefill
  functions are compiled once for any rows x length (dynamic shapes), decode functions once for
  the slot count, and the decode graphs once per cache capacity. The capacity grows (in steps of
  ``capacity_step`` tokens, graphs captured again) only when a request needs more.

Greedy output agrees with plain ``generate`` token for token in fp32, rows that stop early and
refilled slots included (tests/pipeline/caption/test_fast_engine.py on CPU;
``benchmarks/caption_gpu.py --check`` on a GPU with compilation, graphs and the Triton kernel).
On a CPU the engine runs the same code eagerly: no compilation, no graphs, SDPA attention.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.caption.engines.autotune import (
    Attn,
    decode_attention_candidates,
    pick_fastest,
    prefill_attention_candidates,
)
from pipeline.caption.engines.layers import (
    MaybeCompiled,
    make_layer_fns,
    make_vision_fns,
    rms_norm,
)
from pipeline.caption.engines.timing import sync, time_ms

_LOG = logging.getLogger(__name__)

TOKEN_ALIGN = 16
"""Prompt lengths (prefill) and cache lengths are rounded up to a multiple of this."""


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


@dataclass
class Geometry:
    """Token geometry of one caption request (the benchmark's fixed-shape requests).

    Attributes:
        image_px: Side of the square input chip in pixels.
        image_tokens: Image placeholder tokens after anyres packing (base tile + unpadded grid).
        n_tiles: Vision tiles per image (base tile + grid tiles).
        prompt_tokens: Text tokens of the prompt (without the image tokens).
        new_tokens: Generated tokens per caption.
    """

    image_px: int
    image_tokens: int
    n_tiles: int
    prompt_tokens: int
    new_tokens: int

    @property
    def prefill_len(self) -> int:
        """Prefill sequence length: text prompt plus image tokens."""
        return self.prompt_tokens + self.image_tokens


def eos_ids(config: Any) -> list[int]:
    """EOS ids masked during forced decoding (Llama-3 has two).

    Args:
        config: The LLaVA-Next config.

    Returns:
        The EOS token ids.
    """
    eos = config.text_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]
    if config.text_config.vocab_size > 128001 and 128001 not in ids:
        ids.insert(0, 128001)  # <|end_of_text|> next to <|eot_id|>
    return ids


def image_geometry(config: Any, image_px: int, prompt_tokens: int, new_tokens: int) -> Geometry:
    """Count image tokens for a square chip the way LLaVA-Next's anyres packing does.

    Uses the model's own helpers (best grid, unpadding, one newline per row), so the count is the
    one the model accepts.

    Args:
        config: The LLaVA-Next config.
        image_px: Side of the square chip in pixels.
        prompt_tokens: Text prompt tokens.
        new_tokens: New tokens per caption.

    Returns:
        The geometry.
    """
    from transformers.models.llava_next import modeling_llava_next

    llava: Any = modeling_llava_next  # helpers without annotations
    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    size = (image_px, image_px)
    gh, gw = llava.get_anyres_image_grid_shape(size, config.image_grid_pinpoints, vc.image_size)
    unpadded = llava.unpad_image(torch.empty(1, gh * side, gw * side, device="meta"), size)
    h, w = unpadded.shape[1:]
    tokens = side * side + h * (w + 1)
    tiles = llava.image_size_to_num_patches(size, config.image_grid_pinpoints, vc.image_size)
    return Geometry(image_px, int(tokens), int(tiles), prompt_tokens, new_tokens)


def fuse_projections(model: nn.Module) -> None:
    """Re-point q/k/v and gate/up weights of every decoder layer to views of fused buffers.

    :class:`FastCaptioner` runs one GEMM over each fused buffer; the model's own modules keep
    working on row views of the same memory, so plain ``generate`` and the fast path share one
    copy of the weights. Call it once per model, before building a :class:`FastCaptioner`;
    weights written into the parameters afterwards land in the fused buffers.

    Args:
        model: A ``LlavaNextForConditionalGeneration`` (CLIP vision tower, Llama text model).
    """
    net: Any = model  # submodules by attribute: nn.Module types them `Tensor | Module`
    for layer in net.model.language_model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        row = 0
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
            n = lin.weight.shape[0]
            lin.weight = nn.Parameter(qkv[row : row + n], requires_grad=False)
            row += n
        n = mlp.gate_proj.weight.shape[0]
        mlp.gate_proj.weight = nn.Parameter(gu[:n], requires_grad=False)
        mlp.up_proj.weight = nn.Parameter(gu[n:], requires_grad=False)
        layer._fused_qkv = qkv
        layer._fused_gate_up = gu
    for layer in net.model.vision_tower.encoder.layers:
        attn = layer.self_attn
        lins = (attn.q_proj, attn.k_proj, attn.v_proj)
        w = torch.cat([lin.weight for lin in lins])
        b = torch.cat([lin.bias for lin in lins])
        n = attn.q_proj.weight.shape[0]
        for i, lin in enumerate(lins):
            lin.weight = nn.Parameter(w[i * n : (i + 1) * n], requires_grad=False)
            lin.bias = nn.Parameter(b[i * n : (i + 1) * n], requires_grad=False)
        layer._fused_qkv = w
        layer._fused_qkv_bias = b


@dataclass(frozen=True)
class Request:
    """One prompt to complete.

    Attributes:
        input_ids: ``(L,)`` prompt ids, the image placeholders expanded (as the processor gives
            them).
        pixel_values: ``(tiles, 3, H, W)`` anyres tiles of the image (extra padding tiles, as a
            batched processor adds them, are ignored), or a function that returns them: the
            engine calls it each time it prefills the request (and at warm-up), so that a
            caller can prepare images while earlier requests decode.
        image_size: Original image size ``(H, W)``.
        max_new_tokens: Most tokens to generate.
    """

    input_ids: Tensor
    pixel_values: Tensor | Callable[[], Tensor]
    image_size: tuple[int, int]
    max_new_tokens: int

    def tiles(self) -> Tensor:
        """The image's anyres tiles (prepared now when :attr:`pixel_values` is a function)."""
        if isinstance(self.pixel_values, Tensor):
            return self.pixel_values
        return self.pixel_values()

    @property
    def prompt_len(self) -> int:
        """Prompt tokens, image tokens included."""
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Generation:
    """What one request generated.

    Attributes:
        tokens: The new token ids, the stop id included when one ended the row.
        stopped: A stop id ended the row (else its ``max_new_tokens`` did).
    """

    tokens: list[int]
    stopped: bool


@dataclass
class DecodeStats:
    """Where the time of one :meth:`FastLlavaEngine.generate` call went.

    Attributes:
        prefill_s: Wall time of the prefills (each ends by reading its first tokens).
        decode_s: Wall time of the decode steps (each ends by reading its tokens).
        decode_steps: Decode steps run.
        live_row_steps: Sum over steps of the rows that were live (batch occupancy).
        prefilled_rows: Requests prefilled.
        refilled_rows: Requests prefilled into a slot that an earlier row of the call had freed.
        prompt_tokens: Prompt tokens prefilled (image tokens included, padding not).
        new_tokens: Tokens generated.
        kv_lengths: Decode steps per KV-length bucket.
    """

    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    live_row_steps: int = 0
    prefilled_rows: int = 0
    refilled_rows: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    kv_lengths: collections.Counter[int] = field(default_factory=collections.Counter)


def _linear_next(x: Tensor, weights: Iterator[Tensor]) -> Tensor:
    """``x`` times the next of ``weights`` (timing GEMMs over weights that are not in L2)."""
    return F.linear(x, next(weights))


@dataclass
class LayerW:
    """One decoder layer's weights (fused views shared with the HF modules)."""

    ln1: Tensor
    qkv: Tensor
    o: Tensor
    ln2: Tensor
    gu: Tensor
    down: Tensor


class _Run:
    """The host's bookkeeping of one :meth:`FastLlavaEngine.generate` call.

    Args:
        requests: The call's requests.
        slots: The engine's slot count.
        stop_ids: Tokens that end a row.
    """

    def __init__(self, requests: Sequence[Request], slots: int, stop_ids: frozenset[int]) -> None:
        self.requests = requests
        self.stop_ids = stop_ids
        self.queue = collections.deque(range(len(requests)))
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.stopped = [False] * len(requests)
        self.request_of: list[int | None] = [None] * slots
        """The request each slot decodes; ``None`` for a free slot."""
        self.length = [0] * slots
        """Tokens in each slot's cache, i.e. its next position (mirrors the device's)."""
        self.used = [False] * slots
        """Slots that have held a row in this call: a new row there is a refill."""
        self.stats = DecodeStats()

    def free_slots(self) -> list[int]:
        """Free slots, lowest first."""
        return [s for s, i in enumerate(self.request_of) if i is None]

    def live_slots(self) -> list[int]:
        """Slots that hold a row."""
        return [s for s, i in enumerate(self.request_of) if i is not None]

    def add_token(self, i: int, token: int) -> bool:
        """Record request ``i``'s next token.

        Returns:
            Whether the request is done: a stop id, or its ``max_new_tokens`` reached.
        """
        self.tokens[i].append(token)
        self.stopped[i] = token in self.stop_ids
        return self.stopped[i] or len(self.tokens[i]) >= self.requests[i].max_new_tokens

    def place(self, slot: int, i: int) -> None:
        """Request ``i`` (prefilled) decodes in ``slot`` from now on."""
        if self.used[slot]:
            self.stats.refilled_rows += 1
        self.request_of[slot] = i
        self.length[slot] = self.requests[i].prompt_len
        self.used[slot] = True

    def generations(self) -> list[Generation]:
        """Every request's generation, in order."""
        return [Generation(t, s) for t, s in zip(self.tokens, self.stopped, strict=True)]


class FastLlavaEngine:
    """Continuous-batching greedy generation over a LLaVA-Next model's own weights.

    Build it once per worker, then call :meth:`generate` with any number of requests; the
    first call (or :meth:`setup`) picks the attention variants, compiles and captures the decode
    graphs, and :attr:`setup_s` says how long that took.

    Args:
        model: The LLaVA-Next model (CLIP vision tower, Llama text model without projection
            biases), its projections fused (:func:`fuse_projections`).
        slots: Rows decoded together (one static KV cache for all of them).
        chunk: Most rows per prefill call.
        refill_rows: Refill free slots once this many are free (or the queue holds no more), so
            newcomers are prefilled in groups rather than one at a time.
        kv_buckets: Decode KV-length buckets (one CUDA graph each).
        stop_ids: Tokens that end a row (the model's EOS ids); the stop token is kept.
        suppress_ids: Tokens never generated (the benchmark masks EOS to force lengths, as
            ``min_new_tokens`` does in ``generate``).
        capacity_step: Cache tokens per slot (the capacity: what the longest request needs) are
            a multiple of this. A request that needs more grows the cache and captures the graphs
            again: a coarse step means fewer re-captures as prompt lengths creep up, a fine one
            less memory.
        use_compile: Fuse the elementwise work with ``torch.compile``.
        use_graphs: Capture decode steps in CUDA graphs (CUDA only).
        decode_attention: Force this decode attention candidate (default: fastest correct one).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        slots: int,
        chunk: int,
        refill_rows: int = 1,
        kv_buckets: int = 8,
        stop_ids: Sequence[int] = (),
        suppress_ids: Sequence[int] = (),
        capacity_step: int = TOKEN_ALIGN,
        use_compile: bool,
        use_graphs: bool,
        decode_attention: str | None = None,
    ) -> None:
        net: Any = model  # transformers' modules and config, reached by attribute
        self.model = net
        self.cfg: Any = self.model.config
        tc = self.cfg.text_config
        if getattr(tc, "attention_bias", False) or getattr(tc, "mlp_bias", False):
            raise ValueError("the fast engine runs Llama layers without projection biases")
        lm = self.model.model.language_model
        self.slots = slots
        self.chunk = min(chunk, slots)
        self.refill_rows = max(1, min(refill_rows, slots))
        self.n_buckets = max(1, kv_buckets)
        self.capacity_step = _round_up(max(capacity_step, TOKEN_ALIGN), TOKEN_ALIGN)
        self.stop_ids = frozenset(stop_ids)
        self.w_emb: Tensor = lm.embed_tokens.weight
        self.w_norm: Tensor = lm.norm.weight
        self.w_lm: Tensor = self.model.lm_head.weight
        self.device = self.w_emb.device
        self.dtype = self.w_emb.dtype
        self.suppress = torch.tensor(
            sorted(set(suppress_ids)), dtype=torch.long, device=self.device
        )
        self.n_heads: int = tc.num_attention_heads
        self.n_kv: int = tc.num_key_value_heads
        self.hd: int = getattr(tc, "head_dim", None) or tc.hidden_size // self.n_heads
        self.group = self.n_heads // self.n_kv
        self.eps: float = tc.rms_norm_eps
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.layers = [
            LayerW(
                layer.input_layernorm.weight,
                layer._fused_qkv,
                layer.self_attn.o_proj.weight,
                layer.post_attention_layernorm.weight,
                layer._fused_gate_up,
                layer.mlp.down_proj.weight,
            )
            for layer in lm.layers
        ]
        pre, post = make_layer_fns(self.eps, self.n_heads, self.n_kv, self.hd, tc.intermediate_size)
        self.pre_prefill = MaybeCompiled(pre, "prefill pre", use_compile, dynamic=True)
        self.post_prefill = MaybeCompiled(post, "prefill post", use_compile, dynamic=True)
        self.pre_decode = MaybeCompiled(pre, "decode pre", use_compile, dynamic=False)
        self.post_decode = MaybeCompiled(post, "decode post", use_compile, dynamic=False)
        self.rotary = lm.rotary_emb
        self.neg = torch.finfo(self.dtype).min
        self.slot_ids = torch.arange(slots, device=self.device)
        self.tok = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(slots, dtype=torch.long, device=self.device)
        # Allocated for a capacity by _allocate: the caches, the additive key mask, RoPE tables.
        self.capacity = 0
        self.k_cache: list[Tensor] = []
        self.v_cache: list[Tensor] = []
        self.mask = torch.empty(0, device=self.device, dtype=self.dtype)
        self.cos = self.sin = torch.empty(0, device=self.device, dtype=self.dtype)
        self.bucket_lens: list[int] = []
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        default = F.scaled_dot_product_attention
        self.prefill_attn: Attn = lambda q, k, v: default(q, k, v, is_causal=True, enable_gqa=True)
        self.decode_attn: Attn = lambda q, k, v, m, pos: default(q, k, v, attn_mask=m)
        self.decode_attention_fixed = decode_attention
        self.decode_attention_reads_positions = False
        self._init_vision(use_compile)
        self.attn_report: dict[str, Any] = {}
        self.graph_error = ""
        self.setup_s = 0.0

    # ----------------------------------------------------------------------------- building
    def _init_vision(self, use_compile: bool) -> None:
        """Set up the hand-written CLIP path (HF's own ``get_image_features`` as fallback)."""
        cfg, core = self.cfg, self.model.model
        vc = cfg.vision_config
        n_layers = vc.num_hidden_layers
        layer_idx = cfg.vision_feature_layer
        self.own_vision = (
            isinstance(layer_idx, int)
            and vc.hidden_act in ("quick_gelu", "gelu")
            and cfg.projector_hidden_act in ("quick_gelu", "gelu")
            and cfg.vision_feature_select_strategy in ("default", "full")
        )
        if not self.own_vision:
            return
        # hidden_states[i] is the input of encoder layer i: only the first `needed` layers count.
        self.v_needed = layer_idx if layer_idx >= 0 else n_layers + 1 + layer_idx
        vpre, vpost, proj = make_vision_fns(
            vc.layer_norm_eps,
            vc.num_attention_heads,
            vc.hidden_size // vc.num_attention_heads,
            vc.hidden_act,
            cfg.projector_hidden_act,
        )
        # Tiles per prefill vary with its rows: one compilation for any count.
        self.vpre = MaybeCompiled(vpre, "vision pre", use_compile, dynamic=True)
        self.vpost = MaybeCompiled(vpost, "vision post", use_compile, dynamic=True)
        self.proj = MaybeCompiled(proj, "projector", use_compile, dynamic=True)
        self.vlayers = [
            (
                layer.layer_norm1.weight,
                layer.layer_norm1.bias,
                layer._fused_qkv,
                layer._fused_qkv_bias,
                layer.self_attn.out_proj.weight,
                layer.self_attn.out_proj.bias,
                layer.layer_norm2.weight,
                layer.layer_norm2.bias,
                layer.mlp.fc1.weight,
                layer.mlp.fc1.bias,
                layer.mlp.fc2.weight,
                layer.mlp.fc2.bias,
            )
            for layer in core.vision_tower.encoder.layers[: self.v_needed]
        ]

    def _allocate(self, capacity: int, shortest_prompt: int) -> None:
        """(Re)allocate the caches for ``capacity`` tokens per slot; plan the decode buckets.

        Args:
            capacity: Cache tokens per slot (a multiple of :data:`TOKEN_ALIGN`).
            shortest_prompt: The shortest prompt expected: the buckets span from it to the
                capacity (a shorter row uses the first bucket, which holds it too).
        """
        self.free()  # the old cache first: the new one may need its memory
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        shape = (self.slots, self.n_kv, capacity, self.hd)
        z = torch.zeros  # zeros: masked slots must hold finite values (0 * NaN is NaN)
        self.k_cache = [z(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v_cache = [z(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.mask = torch.full(
            (self.slots, 1, 1, capacity), self.neg, device=self.device, dtype=self.dtype
        )
        positions = torch.arange(capacity, device=self.device)[None]
        cos, sin = self.rotary(self.w_emb[:1][None], positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        low = min(shortest_prompt, capacity)
        self.bucket_lens = sorted(
            {
                min(
                    capacity,
                    _round_up(
                        low + math.ceil((capacity - low) * (i + 1) / self.n_buckets), TOKEN_ALIGN
                    ),
                )
                for i in range(self.n_buckets)
            }
        )
        self.capacity = capacity  # only once all of it is allocated
        self._reset_slots()

    def _reset_slots(self) -> None:
        """Free every slot: position 0, all keys masked (what the caches hold is never read)."""
        self.pos.zero_()
        self.mask.fill_(self.neg)

    def _kv_bucket(self, longest: int) -> int:
        """The smallest KV-length bucket whose keys cover a row of ``longest`` tokens."""
        if self.decode_attention_reads_positions:
            return self.capacity
        return next(kv for kv in self.bucket_lens if kv >= longest)

    # ----------------------------------------------------------------------------- the model
    def image_features(self, reqs: Sequence[Request]) -> Tensor:
        """Vision tower (only the layers the selected feature needs), projector, anyres packing.

        Returns:
            The packed features of all the requests' images, one after the other.
        """
        from transformers.models.llava_next import modeling_llava_next

        llava: Any = modeling_llava_next  # helpers without annotations
        cfg, core = self.cfg, self.model.model
        tiles = [
            int(
                llava.image_size_to_num_patches(
                    r.image_size, cfg.image_grid_pinpoints, cfg.vision_config.image_size
                )
            )
            for r in reqs
        ]
        pixels = torch.cat(
            [r.tiles()[:n].to(self.device, self.dtype) for r, n in zip(reqs, tiles, strict=True)]
        )
        sizes = torch.tensor([list(r.image_size) for r in reqs], device=self.device)
        if not self.own_vision:
            feats = core.get_image_features(
                pixel_values=pixels,
                image_sizes=sizes,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            ).pooler_output
            return torch.cat(list(feats), dim=0)
        vt = core.vision_tower
        x = vt.pre_layrnorm(vt.embeddings(pixels))
        for ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, w1, b1, w2, b2 in self.vlayers:
            q, k, v = self.vpre(x, ln1w, ln1b, wqkv, bqkv)
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
            x = self.vpost(x, a.transpose(1, 2), wo, bo, ln2w, ln2b, w1, b1, w2, b2)
        if cfg.vision_feature_select_strategy == "default":
            x = x[:, 1:]
        mmp = core.multi_modal_projector
        feats = self.proj(
            x, mmp.linear_1.weight, mmp.linear_1.bias, mmp.linear_2.weight, mmp.linear_2.bias
        )
        packed, _ = core.pack_image_features(
            list(feats.split(tiles)),
            sizes,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            image_newline=core.image_newline,
        )
        return torch.cat(packed, dim=0)

    def _embed(self, input_ids: Tensor, reqs: Sequence[Request]) -> Tensor:
        """Text embeddings with the image features scattered into the placeholders."""
        emb = F.embedding(input_ids, self.w_emb)
        feats = self.image_features(reqs).to(emb.dtype)
        mask = input_ids == self.cfg.image_token_index
        if int(mask.sum()) != feats.shape[0]:
            raise ValueError(
                f"{int(mask.sum())} image placeholders for {feats.shape[0]} image features"
            )
        return emb.masked_scatter(mask.unsqueeze(-1), feats)

    def _head(self, x: Tensor) -> Tensor:
        """Final norm, LM head, suppressed ids masked, greedy argmax."""
        logits = F.linear(rms_norm(x, self.w_norm, self.eps), self.w_lm)
        if self.suppress.numel():
            logits = logits.index_fill(-1, self.suppress, float("-inf"))
        return logits.argmax(-1)

    def _prefill(self, reqs: Sequence[Request], slots: Sequence[int]) -> list[int]:
        """Prefill ``reqs`` into the cache rows of ``slots``.

        Returns:
            Each request's first generated token.
        """
        c = len(reqs)
        lens = [r.prompt_len for r in reqs]
        s = _round_up(max(lens), TOKEN_ALIGN)
        ids = torch.zeros((c, s), dtype=torch.long, device=self.device)  # right padding
        for row, r in enumerate(reqs):
            ids[row, : r.prompt_len] = r.input_ids.to(self.device)
        x = self._embed(ids, reqs)
        cos, sin = self.cos[:s].unsqueeze(1), self.sin[:s].unsqueeze(1)
        slot_index = torch.tensor(list(slots), device=self.device)
        for li, w in enumerate(self.layers):
            q, k, v = self.pre_prefill(x, w.ln1, w.qkv, cos, sin)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            self.k_cache[li][:, :, :s].index_copy_(0, slot_index, k)
            self.v_cache[li][:, :, :s].index_copy_(0, slot_index, v)
            a = self.prefill_attn(q.transpose(1, 2), k, v)
            x = self.post_prefill(x, a.transpose(1, 2), w.o, w.ln2, w.gu, w.down)
        last = x[torch.arange(c, device=self.device), torch.tensor(lens, device=self.device) - 1]
        first: list[int] = self._head(last).tolist()
        return first

    def _start_rows(
        self, slots: Sequence[int], prompt_lens: Sequence[int], first: Sequence[int]
    ) -> None:
        """Decode state of newly prefilled rows: position, last token, key mask (reset).

        Args:
            slots: The rows' slots.
            prompt_lens: Their prompt lengths (their next position).
            first: Their first generated tokens (the next step's input).
        """
        if not slots:
            return
        index = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        lens = torch.tensor(list(prompt_lens), dtype=torch.long, device=self.device)
        self.pos[index] = lens
        self.tok[index] = torch.tensor(list(first), dtype=torch.long, device=self.device)
        keys = torch.arange(self.capacity, device=self.device)
        opened = torch.where(keys[None] < lens[:, None], 0.0, self.neg).to(self.dtype)
        self.mask[index] = opened.view(len(slots), 1, 1, self.capacity)

    def _park(self, slots: Sequence[int]) -> None:
        """Park free slots at position 0: they keep stepping with the batch, never past the end."""
        if slots:
            self.pos[torch.tensor(list(slots), dtype=torch.long, device=self.device)] = 0

    def _step(self, kv: int) -> None:
        """One decode step for every slot; all state lives in static buffers."""
        b = self.slots
        x = F.embedding(self.tok, self.w_emb)
        cos = self.cos.index_select(0, self.pos).unsqueeze(1)
        sin = self.sin.index_select(0, self.pos).unsqueeze(1)
        self.mask.scatter_(3, self.pos.view(b, 1, 1, 1), 0.0)
        mask = self.mask[..., :kv]
        for li, w in enumerate(self.layers):
            q, k, v = self.pre_decode(x, w.ln1, w.qkv, cos, sin)
            self.k_cache[li][self.slot_ids, :, self.pos] = k
            self.v_cache[li][self.slot_ids, :, self.pos] = v
            qf = q.view(b, self.n_kv, self.group, self.hd)  # GQA fold: exact
            kc, vc = self.k_cache[li][:, :, :kv], self.v_cache[li][:, :, :kv]
            a = self.decode_attn(qf, kc, vc, mask, self.pos)
            x = self.post_decode(x, a.reshape(b, -1), w.o, w.ln2, w.gu, w.down)
        self.tok.copy_(self._head(x))
        self.pos.add_(1)

    def _rnd(self, *shape: int) -> Tensor:
        return torch.randn(shape, device=self.device).to(self.dtype)

    def _pick_attention(self, prompt_len: int) -> None:
        """Choose prefill and decode SDPA variants on the real shapes and layouts (CUDA)."""
        c, s = self.chunk, _round_up(prompt_len, TOKEN_ALIGN)
        # as `pre` returns them, transposed to (rows, heads, tokens, head dim)
        q = self._rnd(c, s, self.n_heads, self.hd).transpose(1, 2)
        k = self._rnd(c, s, self.n_kv, self.hd).transpose(1, 2)
        v = self._rnd(c, s, self.n_kv, self.hd).transpose(1, 2)
        cands = prefill_attention_candidates(self.group)
        ref = cands.pop("expand-math")
        name, fn, rep = pick_fastest(
            "prefill", cands, (q, k, v), (q[:1], k[:1], v[:1]), ref, self.device
        )
        self.prefill_attn = fn
        self.attn_report["prefill"] = {"chosen": name, "ms_per_layer_chunk": rep}
        del q, k, v
        b, kv = self.slots, self.capacity
        q = self._rnd(b, self.n_kv, self.group, self.hd)
        kc, vc = self.k_cache[0].normal_(), self.v_cache[0].normal_()
        # Checked on rows at different positions (mask and positions agree); timed on the full
        # cache.
        rows = min(4, b)
        small_pos = torch.tensor([kv // 2 - 1, 0, kv - 1, kv // 3][:rows], device=self.device)
        keys = torch.arange(kv, device=self.device)
        small_mask = torch.where(keys[None] <= small_pos[:, None], 0.0, self.neg).to(self.dtype)
        full = torch.zeros((b, 1, 1, kv), device=self.device, dtype=self.dtype)
        pos_full = torch.full((b,), kv - 1, device=self.device)
        dcands = decode_attention_candidates(use_triton=True)
        ref = dcands.pop("fold-math")
        if self.decode_attention_fixed:
            dcands = {self.decode_attention_fixed: dcands[self.decode_attention_fixed]}
        small = (q[:rows], kc[:rows], vc[:rows], small_mask.view(rows, 1, 1, kv), small_pos)
        args = (q, kc, vc, full, pos_full)
        name, fn, rep = pick_fastest("decode", dcands, args, small, ref, self.device)
        self.decode_attn = fn
        self.attn_report["decode"] = {"chosen": name, "ms_per_layer_full_cache": rep}
        # The Triton kernel reads each row's keys 0..pos itself: one graph over the whole cache.
        self.decode_attention_reads_positions = name.startswith("triton")
        kc.zero_()
        vc.zero_()

    def setup(self, requests: Sequence[Request]) -> None:
        """Allocate the cache, pick attention, compile and capture the decode graphs.

        :meth:`generate` calls it when the cache is too small for its requests; call it first
        to keep the warm-up out of a timed run. Adds its wall time to :attr:`setup_s`.

        Args:
            requests: Requests like those to come (the cache fits the longest; warm-up
                prefills of up to ``chunk`` of them and of one compile the prefill).
        """
        t0 = time.perf_counter()
        need = max(r.prompt_len + r.max_new_tokens for r in requests)
        capacity = _round_up(need, self.capacity_step)
        shortest = min(r.prompt_len for r in requests)
        _LOG.info("fast engine: %d slots x %d cache tokens", self.slots, capacity)
        self._allocate(capacity, shortest)
        if self.device.type == "cuda":
            self._pick_attention(max(r.prompt_len for r in requests))
        # A full chunk and a single row: compilation specialises on one row (refills of one).
        for rows in sorted({min(self.chunk, len(requests)), 1}, reverse=True):
            _LOG.info("warm-up prefill (%d rows)", rows)
            self._prefill(requests[:rows], range(rows))
        if self.use_graphs:
            self._capture_graphs_or_fall_back()
        else:
            self._step(self.bucket_lens[0])
        self._reset_slots()  # forget the warm-up's rows
        sync(self.device)
        self.setup_s += time.perf_counter() - t0
        _LOG.info(
            "fast engine ready in %.1f s (total warm-up %.1f s)",
            time.perf_counter() - t0,
            self.setup_s,
        )

    def _capture_graphs_or_fall_back(self) -> None:
        """Capture the decode graphs; failing that, retry with efficient SDPA, then go eager."""
        try:
            self._capture_graphs()
            return
        except Exception as exc:
            self.graph_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            _LOG.warning("decode graph capture failed (%s)", self.graph_error)
        self.graphs.clear()
        torch.cuda.synchronize()
        if self.attn_report.get("decode", {}).get("chosen") != "fold-efficient":
            _LOG.info("retrying the capture with the efficient SDPA backend")
            self.decode_attn = decode_attention_candidates(False)["fold-efficient"]
            self.decode_attention_reads_positions = False
            self.attn_report.setdefault("decode", {})["chosen"] = "fold-efficient"
            try:
                self._capture_graphs()
                return
            except Exception as exc:
                self.graph_error += f"; retry: {type(exc).__name__}: {str(exc)[:300]}"
                self.graphs.clear()
        self.use_graphs = False
        _LOG.info("decode without CUDA graphs (eager steps)")

    def _capture_graphs(self) -> None:
        """Warm up (side stream) and capture one decode-step graph per KV-length bucket."""
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # unannotated in torch
        lens = [self.capacity] if self.decode_attention_reads_positions else self.bucket_lens
        for kv in lens:
            self._reset_slots()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step(kv)
            torch.cuda.current_stream().wait_stream(side)
            self._reset_slots()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._step(kv)
            self.graphs[kv] = graph
        _LOG.info("captured %d decode graphs (KV lengths %s)", len(self.graphs), lens)

    # ---------------------------------------------------------------------------- running
    def generate(self, requests: Sequence[Request]) -> tuple[list[Generation], DecodeStats]:
        """Generate greedily for every request, ``slots`` rows at a time, refilling freed slots.

        Args:
            requests: The requests, any number, any prompt lengths.

        Returns:
            One generation per request, in order, and where the time went.
        """
        run = _Run(requests, self.slots, self.stop_ids)
        if not requests:
            return [], run.stats
        if max(r.prompt_len + r.max_new_tokens for r in requests) > self.capacity:
            self.setup(requests)
        while run.queue or run.live_slots():
            free = run.free_slots()
            if run.queue and len(free) >= min(self.refill_rows, len(run.queue)):
                self._admit(run, free)
            live = run.live_slots()
            if live:
                self._decode_step(run, live)
        run.stats.new_tokens = sum(len(t) for t in run.tokens)
        return run.generations(), run.stats

    def _admit(self, run: _Run, free: list[int]) -> None:
        """Prefill queued requests into free slots, ``chunk`` rows per call, and start them.

        A request done at its first token leaves its slot free for the next admission.
        """
        while run.queue and free:
            n = min(self.chunk, len(free), len(run.queue))
            take = [run.queue.popleft() for _ in range(n)]
            slots, free = free[:n], free[n:]
            t0 = time.perf_counter()
            first = self._prefill([run.requests[i] for i in take], slots)
            run.stats.prefill_s += time.perf_counter() - t0
            run.stats.prefilled_rows += n
            run.stats.prompt_tokens += sum(run.requests[i].prompt_len for i in take)
            started = [
                (s, i, t)
                for s, i, t in zip(slots, take, first, strict=True)
                if not run.add_token(i, t)
            ]
            for s, i, _ in started:
                run.place(s, i)
            self._start_rows(
                [s for s, _, _ in started],
                [run.length[s] for s, _, _ in started],
                [t for _, _, t in started],
            )

    def _decode_step(self, run: _Run, live: list[int]) -> None:
        """One decode step over all slots (graph replay or eager); record the live rows' tokens."""
        kv = self._kv_bucket(max(run.length[s] for s in live) + 1)
        t0 = time.perf_counter()
        if self.use_graphs:
            self.graphs[kv].replay()
        else:
            self._step(kv)
        step_tokens: list[int] = self.tok.tolist()  # waits for the step
        run.stats.decode_s += time.perf_counter() - t0
        run.stats.decode_steps += 1
        run.stats.live_row_steps += len(live)
        run.stats.kv_lengths[kv] += 1
        done = []
        for s in live:
            i = run.request_of[s]
            assert i is not None
            run.length[s] += 1
            if run.add_token(i, step_tokens[s]):
                run.request_of[s] = None
                done.append(s)
        self._park(done)

    def _time_layer(self, tag: str, x: Tensor, cos: Tensor, sin: Tensor) -> dict[str, float]:
        """Time ``pre``, ``post`` and the bare GEMMs of layer 0 on input ``x``."""
        w = self.layers[0]
        decode = x.dim() == 2
        pre = self.pre_decode if decode else self.pre_prefill
        post = self.post_decode if decode else self.post_prefill
        inner = 16 if decode else 1  # decode-size kernels are short: time them in a row
        q, _, _ = pre(x, w.ln1, w.qkv, cos, sin)
        att = torch.zeros_like(q).flatten(-2)
        h = self._rnd(*x.shape[:-1], w.down.shape[1])
        out = {
            f"{tag}_pre_ms": time_ms(
                lambda: pre(x, w.ln1, w.qkv, cos, sin), self.device, 10, 2, inner
            ),
            f"{tag}_post_ms": time_ms(
                lambda: post(x, att, w.o, w.ln2, w.gu, w.down), self.device, 10, 2, inner
            ),
        }
        gemms = {"qkv": (x, "qkv"), "o": (x, "o"), "gate_up": (x, "gu"), "down": (h, "down")}
        total = 0.0
        for name, (a, attr) in gemms.items():
            # cycle through all layers' weights so that L2 does not hold them between calls
            ws = itertools.cycle([getattr(layer, attr) for layer in self.layers])
            ms = time_ms(functools.partial(_linear_next, a, ws), self.device, 10, 2, inner)
            out[f"{tag}_gemm_{name}_ms"] = ms
            total += ms
        out[f"{tag}_gemm_total_ms"] = total
        return out

    def profile(self, prompt_len: int) -> dict[str, float]:
        """Time one layer's parts at the prefill-chunk and decode shapes (CUDA).

        Args:
            prompt_len: Prompt tokens of the prefill shape.

        Returns:
            Milliseconds per layer call: ``pre``/``attention``/``post`` and the bare GEMMs
            (cuBLAS through ``F.linear``) for one prefill chunk and one decode step.
        """
        c, s, b = self.chunk, _round_up(prompt_len, TOKEN_ALIGN), self.slots
        d = self.w_emb.shape[1]
        cos, sin = self.cos[:s].unsqueeze(1), self.sin[:s].unsqueeze(1)
        out = self._time_layer("prefill_chunk", self._rnd(c, s, d), cos, sin)
        cos = self.cos[:1].expand(b, -1).unsqueeze(1)  # one row per slot, as a step has them
        sin = self.sin[:1].expand(b, -1).unsqueeze(1)
        out.update(self._time_layer("decode_step", self._rnd(b, d), cos, sin))
        kc, vc = self.k_cache[0][:c, :, :s], self.v_cache[0][:c, :, :s]
        qp = self._rnd(c, s, self.n_heads, self.hd).transpose(1, 2)
        out["prefill_chunk_attention_ms"] = time_ms(
            lambda: self.prefill_attn(qp, kc, vc), self.device, 10, 2
        )
        xl = self._rnd(b, d)
        out["decode_step_lm_head_ms"] = time_ms(
            lambda: F.linear(xl, self.w_lm), self.device, 10, 2, inner=8
        )
        return out

    def free(self) -> None:
        """Drop graphs and caches."""
        self.graphs.clear()
        self.k_cache.clear()
        self.v_cache.clear()
        self.capacity = 0
