"""GPU captioning benchmark: LLaVA-Next Llama-3-8B, plain ``generate`` against a split fast path.

The model is the full-size llava-hf/llama3-llava-next-8b-hf architecture (CLIP ViT-L/14-336 +
Llama-3-8B, 8.36 B parameters) built with random bf16 weights straight on the GPU from a
hand-written config: nothing is downloaded, and speed does not depend on the weight values.
A 264 px chip with anyres (336x672 grid) gives 1,176 image tokens; with 250 text prompt tokens
the prefill is 1,426 tokens, and every caption decodes exactly 128 new tokens (EOS is masked,
as ``min_new_tokens == max_new_tokens`` does in ``generate``).

One process measures, in this order:

1. the compute floor: a large bf16 matmul (TFLOP/s) and a device-to-device copy (GB/s);
2. a token-for-token correctness check of the fast path against plain ``generate`` in fp32 on a
   tiny LLaVA-Next config (greedy), on the same device;
3. plain ``model.generate`` (bf16, sdpa, batch 64, 128 forced new tokens);
4. the fast path at each requested batch size.

The fast path:

* prefill in chunks of rows: the vision tower, projector and anyres packing are the model's own
  (``get_image_features``), the Llama layers run as hand-written functions over the model's own
  weights (q/k/v and gate/up fused into single GEMMs, RMSNorm/RoPE/SiLU fused by
  ``torch.compile``), writing K/V straight into one preallocated cache for the whole batch;
* decode of the whole batch with one static KV cache; each step (embedding, 32 layers, head,
  greedy argmax with EOS masked, cache/position/mask updates) is captured in a CUDA graph, one
  graph per KV-length bucket, so a step attends only over the filled part of the cache;
* q_len=1 decode attention with the GQA fold: each KV head's query heads are folded into the
  query-length axis (exact), so K/V are read once per KV head; the SDPA backend for prefill and
  decode is chosen by timing the candidates on the real shapes (after checking them against the
  math backend).

Run ``python benchmarks/caption_gpu.py --out results.json`` on the GPU machine;
``python benchmarks/caption_gpu.py --check --device cpu --tiny`` runs the check on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # the GPU machine has Triton; a CPU-only install need not
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only environments
    triton = None

_T0 = time.perf_counter()
Attn = Callable[..., Tensor]


def log(msg: str) -> None:
    """Print a progress line with the seconds since start.

    Args:
        msg: The message.
    """
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Model configuration and construction
# --------------------------------------------------------------------------------------------

PINPOINTS_8B = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


@dataclass
class Geometry:
    """Token geometry of one caption request.

    Attributes:
        image_px: Side of the square input chip in pixels.
        image_tokens: Image placeholder tokens after anyres packing (base tile + unpadded grid).
        n_tiles: Vision tiles per image (base tile + grid tiles).
        prompt_tokens: Text tokens of the prompt (without the image tokens).
        new_tokens: Generated tokens per caption (all forced, EOS masked).
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


def build_config(tiny: bool) -> Any:
    """Hand-written LLaVA-Next config.

    Args:
        tiny: A tiny config for the correctness check instead of llama3-llava-next-8b.

    Returns:
        A ``LlavaNextConfig``.
    """
    from transformers import LlavaNextConfig

    if tiny:
        vision: dict[str, Any] = {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": 56,
            "patch_size": 14,
            "projection_dim": 32,
        }
        text: dict[str, Any] = {
            "model_type": "llama",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "vocab_size": 512,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
        pinpoints = [[56, 112], [112, 56], [112, 112]]
        image_token = 500
    else:
        # llava-hf/llama3-llava-next-8b-hf: CLIP ViT-L/14-336 + Meta-Llama-3-8B-Instruct.
        vision = {
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
            "vocab_size": 32000,
        }
        text = {
            "model_type": "llama",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128320,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "bos_token_id": 128000,
            "eos_token_id": 128009,
        }
        pinpoints = PINPOINTS_8B
        image_token = 128256
    return LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_grid_pinpoints=pinpoints,
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


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
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
        unpad_image,
    )

    vc = config.vision_config
    side = vc.image_size // vc.patch_size
    size = (image_px, image_px)
    gh, gw = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, vc.image_size)
    unpadded = unpad_image(torch.empty(1, gh * side, gw * side, device="meta"), size)
    h, w = unpadded.shape[1:]
    tokens = side * side + h * (w + 1)
    tiles = image_size_to_num_patches(size, config.image_grid_pinpoints, vc.image_size)
    return Geometry(image_px, int(tokens), int(tiles), prompt_tokens, new_tokens)


def build_model(config: Any, device: torch.device, dtype: torch.dtype, std: float) -> nn.Module:
    """Build ``LlavaNextForConditionalGeneration`` on the device with random weights.

    Weight init of transformers and torch is skipped; every parameter is then filled on the
    device (normal(0, std); norm weights 1 + 0.1 * normal). The q/k/v and gate/up projections of
    each decoder layer are re-pointed to row views of one fused buffer each, so the plain path
    and the fast path use the very same weights.

    Args:
        config: The LLaVA-Next config.
        device: Target device.
        dtype: Parameter dtype.
        std: Standard deviation of the random weights.

    Returns:
        The model in eval mode.
    """
    from transformers import LlavaNextForConditionalGeneration

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights

    config._attn_implementation = "sdpa"
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device, no_init_weights():
            model = LlavaNextForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(prev)
    # No model.to(dtype): it would also cast the fp32 RoPE inverse frequencies.
    _fuse_projections(model)
    gen = torch.Generator(device=device).manual_seed(1234)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")
            for pname, param in module.named_parameters(recurse=False):
                if is_norm and pname == "weight":
                    param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen, device=device))
                else:
                    param.normal_(0.0, std, generator=gen)
    model.eval()
    model.requires_grad_(False)
    return model


def _fuse_projections(model: nn.Module) -> None:
    """Re-point q/k/v and gate/up weights of every decoder layer to views of fused buffers."""
    for layer in model.model.language_model.layers:
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
    for layer in model.model.vision_tower.encoder.layers:
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


@dataclass
class Inputs:
    """A batch of captioning requests.

    Attributes:
        input_ids: ``(B, S)`` prompt ids with the image placeholders.
        attention_mask: ``(B, S)`` ones.
        pixel_values: ``(B, tiles, 3, H, W)`` anyres tiles.
        image_sizes: ``(B, 2)`` original image sizes (H, W).
    """

    input_ids: Tensor
    attention_mask: Tensor
    pixel_values: Tensor
    image_sizes: Tensor

    def rows(self, start: int, stop: int) -> Inputs:
        """Return a slice of rows."""
        return Inputs(
            self.input_ids[start:stop],
            self.attention_mask[start:stop],
            self.pixel_values[start:stop],
            self.image_sizes[start:stop],
        )

    def kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments for the HF model."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "pixel_values": self.pixel_values,
            "image_sizes": self.image_sizes,
        }


def make_inputs(
    config: Any, geo: Geometry, batch: int, device: torch.device, dtype: torch.dtype, seed: int
) -> Inputs:
    """Random prompts and images with the real token layout.

    Layout per row: BOS, 4 header tokens, the image placeholders, the rest of the text prompt
    (``prompt_tokens`` text tokens in all), as in the llama3 LLaVA-Next chat template.

    Args:
        config: The LLaVA-Next config.
        geo: Token geometry.
        batch: Rows.
        device: Target device.
        dtype: Pixel dtype.
        seed: Random seed.

    Returns:
        The inputs.
    """
    if geo.prompt_tokens < 6:
        raise ValueError("--prompt-tokens must be at least 6")
    gen = torch.Generator(device=device).manual_seed(seed)
    tc = config.text_config
    hi = min(tc.vocab_size, 128000, config.image_token_index)
    eos = set(eos_ids(config))
    text = torch.randint(3, hi, (batch, geo.prompt_tokens), generator=gen, device=device)
    for e in eos:
        text[text == e] = 3
    text[:, 0] = tc.bos_token_id
    head, tail = text[:, :5], text[:, 5:]
    img = torch.full((batch, geo.image_tokens), config.image_token_index, device=device)
    ids = torch.cat([head, img, tail], dim=1)
    side = config.vision_config.image_size
    pix = torch.randn((batch, geo.n_tiles, 3, side, side), generator=gen, device=device)
    sizes = torch.tensor([[geo.image_px, geo.image_px]] * batch, device=device)
    return Inputs(ids, torch.ones_like(ids), pix.to(dtype), sizes)


def param_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts of the whole model and its parts."""

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    return {
        "total": count(model),
        "language_model_layers": count(model.model.language_model.layers),
        "embed_tokens": count(model.model.language_model.embed_tokens),
        "lm_head": count(model.lm_head),
        "vision_tower": count(model.model.vision_tower),
        "projector": count(model.model.multi_modal_projector),
    }


def flops_per_caption(config: Any, geo: Geometry) -> dict[str, float]:
    """Matmul FLOPs of one caption (2 * params * tokens plus attention).

    Args:
        config: The LLaVA-Next config.
        geo: Token geometry.

    Returns:
        FLOPs per part and in total.
    """
    tc, vc = config.text_config, config.vision_config
    d, inter, n_layers = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    hd = getattr(tc, "head_dim", None) or d // tc.num_attention_heads
    qd, kvd = tc.num_attention_heads * hd, tc.num_key_value_heads * hd
    per_tok = 2 * n_layers * (d * qd + 2 * d * kvd + qd * d + 3 * d * inter)
    p, n = geo.prefill_len, geo.new_tokens
    vt = (vc.image_size // vc.patch_size) ** 2 + 1
    dv, iv, lv = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    out = {
        "vision": geo.n_tiles
        * (
            vt * 2 * lv * (4 * dv * dv + 2 * dv * iv)
            + lv * 4 * vt * vt * dv
            + (vt - 1) * 2 * 3 * vc.patch_size**2 * dv
        ),
        "projector": geo.n_tiles * (vt - 1) * 2 * (dv * d + d * d),
        "prefill_linear": per_tok * p,
        "prefill_attention": n_layers * 2 * p * p * qd,
        "lm_head": 2 * d * tc.vocab_size * n,
        "decode_linear": per_tok * (n - 1),
        "decode_attention": sum(n_layers * 4 * (p + s + 1) * qd for s in range(n - 1)),
    }
    out["prefill_total"] = (
        out["vision"]
        + out["projector"]
        + out["prefill_linear"]
        + out["prefill_attention"]
        + 2 * d * tc.vocab_size
    )
    out["total"] = sum(v for k, v in out.items() if k != "prefill_total")
    return {k: float(v) for k, v in out.items()}


def decode_bytes_per_caption(config: Any, geo: Geometry, batch: int, dtype_bytes: int) -> float:
    """Fewest bytes one caption's decode must read: its KV cache each step + its share of weights.

    Args:
        config: The LLaVA-Next config.
        geo: Token geometry.
        batch: Decode batch (weights are read once per step for the whole batch).
        dtype_bytes: Bytes per element.

    Returns:
        Bytes per caption over all decode steps.
    """
    tc = config.text_config
    hd = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    kv_per_tok = tc.num_hidden_layers * 2 * tc.num_key_value_heads * hd * dtype_bytes
    d, inter = tc.hidden_size, tc.intermediate_size
    qd, kvd = tc.num_attention_heads * hd, tc.num_key_value_heads * hd
    weights = (
        tc.num_hidden_layers * (d * qd + 2 * d * kvd + qd * d + 3 * d * inter) + d * tc.vocab_size
    ) * dtype_bytes
    steps = range(geo.new_tokens - 1)
    return float(sum(kv_per_tok * (geo.prefill_len + s + 1) + weights / batch for s in steps))


# --------------------------------------------------------------------------------------------
# Timing helpers and ceilings
# --------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stamp:
    """A point in time on the device stream (CUDA event) or on the host clock (CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.event: torch.cuda.Event | None = None
        self.host = 0.0
        if device.type == "cuda":
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record()
        else:
            self.host = time.perf_counter()

    def ms_to(self, other: Stamp) -> float:
        """Milliseconds from this stamp to a later one (synchronize first on CUDA)."""
        if self.event is not None and other.event is not None:
            return float(self.event.elapsed_time(other.event))
        return (other.host - self.host) * 1e3


def time_ms(
    fn: Callable[[], Any], device: torch.device, iters: int, warmup: int, inner: int = 1
) -> float:
    """Median milliseconds per call of ``fn``.

    Args:
        fn: The work.
        device: Its device.
        iters: Timed samples.
        warmup: Untimed calls first.
        inner: Back-to-back calls per sample (keeps the launch queue full for short kernels).

    Returns:
        Median milliseconds per call.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        a = Stamp(device)
        for _ in range(inner):
            fn()
        b = Stamp(device)
        sync(device)
        times.append(a.ms_to(b) / inner)
    times.sort()
    return times[len(times) // 2]


def measure_ceilings(device: torch.device) -> dict[str, float]:
    """Measure the bf16 matmul rate (8192^3, random data) and device-to-device copy bandwidth.

    Args:
        device: The device.

    Returns:
        ``matmul_tflops`` and ``copy_gbps`` (bytes read + written).
    """
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    dt = torch.bfloat16 if cuda else torch.float32
    gen = torch.Generator(device=device).manual_seed(7)
    a = torch.randn((n, n), generator=gen, device=device).to(dt)
    b = torch.randn((n, n), generator=gen, device=device).to(dt)
    c = torch.empty((n, n), device=device, dtype=dt)
    ms = time_ms(lambda: torch.mm(a, b, out=c), device, iters=30 if cuda else 3, warmup=5)
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    numel = (1 << 30) if cuda else (1 << 24)
    x = torch.empty(numel, device=device, dtype=torch.bfloat16).normal_()
    y = torch.empty_like(x)
    ms_copy = time_ms(lambda: y.copy_(x), device, iters=20 if cuda else 3, warmup=3)
    gbps = 2 * x.numel() * x.element_size() / (ms_copy * 1e-3) / 1e9
    return {"matmul_tflops": tflops, "matmul_n": float(n), "copy_gbps": gbps}


# --------------------------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------------------------


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Llama RMSNorm, exactly as transformers computes it."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def make_layer_fns(
    eps: float, n_heads: int, n_kv: int, hd: int, inter: int
) -> tuple[Callable[..., tuple[Tensor, Tensor, Tensor]], Callable[..., Tensor]]:
    """Build the two halves of a Llama decoder layer around attention.

    ``pre(x, ln1, w_qkv, cos, sin) -> q, k, v``: RMSNorm, one fused q/k/v GEMM, RoPE; shapes
    ``(..., H, hd)``, ``(..., KV, hd)``, ``(..., KV, hd)``.
    ``post(x, attn, w_o, ln2, w_gu, w_down) -> x``: o_proj + residual, RMSNorm, one fused
    gate/up GEMM, SiLU * up, down + residual. ``attn`` is reshaped to ``x.shape``.

    Args:
        eps: RMSNorm epsilon.
        n_heads: Query heads.
        n_kv: KV heads.
        hd: Head dim.
        inter: MLP intermediate size.

    Returns:
        ``(pre, post)``.
    """
    split = [n_heads * hd, n_kv * hd, n_kv * hd]

    def pre(
        x: Tensor, ln1: Tensor, w_qkv: Tensor, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        h = _rms(x, ln1, eps)
        q, k, v = F.linear(h, w_qkv).split(split, dim=-1)
        q = q.unflatten(-1, (n_heads, hd))
        k = k.unflatten(-1, (n_kv, hd))
        v = v.unflatten(-1, (n_kv, hd))
        q = (q * cos) + (_rotate_half(q) * sin)
        k = (k * cos) + (_rotate_half(k) * sin)
        return q, k, v

    def post(
        x: Tensor, attn: Tensor, w_o: Tensor, ln2: Tensor, w_gu: Tensor, w_down: Tensor
    ) -> Tensor:
        x = x + F.linear(attn.reshape(x.shape), w_o)
        h = _rms(x, ln2, eps)
        gate, up = F.linear(h, w_gu).split(inter, dim=-1)
        return x + F.linear(F.silu(gate) * up, w_down)

    return pre, post


def make_vision_fns(
    eps: float, n_heads: int, hd: int, act: str, proj_act: str
) -> tuple[
    Callable[..., tuple[Tensor, Tensor, Tensor]], Callable[..., Tensor], Callable[..., Tensor]
]:
    """Build the halves of a CLIP encoder layer around attention, and the projector.

    ``vpre(x, ln1_w, ln1_b, w_qkv, b_qkv) -> q, k, v`` (``(..., heads, hd)`` each);
    ``vpost(x, attn, w_o, b_o, ln2_w, ln2_b, w1, b1, w2, b2) -> x``;
    ``proj(x, w1, b1, w2, b2) -> features`` (the LLaVA multimodal projector).

    Args:
        eps: LayerNorm epsilon.
        n_heads: Attention heads.
        hd: Head dim.
        act: CLIP MLP activation (``quick_gelu`` or ``gelu``).
        proj_act: Projector activation (``gelu`` or ``quick_gelu``).

    Returns:
        ``(vpre, vpost, proj)``.
    """

    def activation(x: Tensor, name: str) -> Tensor:
        if name == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)

    def vpre(
        x: Tensor, lw: Tensor, lb: Tensor, w: Tensor, b: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        h = F.layer_norm(x, (x.shape[-1],), lw, lb, eps)
        q, k, v = F.linear(h, w, b).unflatten(-1, (3, n_heads, hd)).unbind(-3)
        return q, k, v

    def vpost(
        x: Tensor,
        attn: Tensor,
        w_o: Tensor,
        b_o: Tensor,
        lw: Tensor,
        lb: Tensor,
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
    ) -> Tensor:
        x = x + F.linear(attn.reshape(x.shape), w_o, b_o)
        h = F.layer_norm(x, (x.shape[-1],), lw, lb, eps)
        return x + F.linear(activation(F.linear(h, w1, b1), act), w2, b2)

    def proj(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        return F.linear(activation(F.linear(x, w1, b1), proj_act), w2, b2)

    return vpre, vpost, proj


class MaybeCompiled:
    """``torch.compile`` a function; on a compile error fall back to eager for good."""

    def __init__(self, fn: Callable[..., Any], name: str, enabled: bool) -> None:
        self.fn = fn
        self.name = name
        self.compiled: Callable[..., Any] | None = None
        self.error = ""
        if enabled:
            self.compiled = torch.compile(fn, dynamic=False, fullgraph=True)

    def __call__(self, *args: Any) -> Any:
        """Call the compiled function (or the eager one)."""
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # compile failures only happen on first use of a shape
                self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log(f"torch.compile of {self.name} failed, eager from now on: {self.error}")
                self.compiled = None
        return self.fn(*args)


def _sdpa_ctx(backend: Any) -> contextlib.AbstractContextManager[Any]:
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()


def _backends() -> dict[str, Any]:
    from torch.nn.attention import SDPBackend

    return {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }


def prefill_attention_candidates(group: int) -> dict[str, Attn]:
    """Causal prefill attention variants: native GQA or K/V expanded, per SDPA backend."""
    cands: dict[str, Attn] = {}
    for name, backend in _backends().items():

        def gqa(q: Tensor, k: Tensor, v: Tensor, _b: Any = backend) -> Tensor:
            with _sdpa_ctx(_b):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        def expand(q: Tensor, k: Tensor, v: Tensor, _b: Any = backend) -> Tensor:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            with _sdpa_ctx(_b):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        if name != "math":
            cands[f"gqa-{name}"] = gqa
        cands[f"expand-{name}"] = expand
    return cands


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(
        q_ptr,  # noqa: ANN001
        k_ptr,  # noqa: ANN001
        v_ptr,  # noqa: ANN001
        o_ptr,  # noqa: ANN001
        pos_ptr,  # noqa: ANN001
        scale,  # noqa: ANN001
        sqb,  # noqa: ANN001
        sqh,  # noqa: ANN001
        sqg,  # noqa: ANN001
        skb,  # noqa: ANN001
        skh,  # noqa: ANN001
        skn,  # noqa: ANN001
        svb,  # noqa: ANN001
        svh,  # noqa: ANN001
        svn,  # noqa: ANN001
        sob,  # noqa: ANN001
        soh,  # noqa: ANN001
        sog,  # noqa: ANN001
        n_kv,  # noqa: ANN001
        GROUP: tl.constexpr,
        BLOCK_G: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PREC: tl.constexpr,
    ) -> None:
        """GQA-folded q_len=1 attention: one program per (row, KV head), keys 0..pos."""
        pid = tl.program_id(0)
        b = pid // n_kv
        h = pid % n_kv
        kv_len = tl.max(tl.load(pos_ptr + tl.arange(0, 1)), 0) + 1  # keys 0..pos
        offs_g = tl.arange(0, BLOCK_G)
        offs_d = tl.arange(0, HEAD_DIM)
        offs_n = tl.arange(0, BLOCK_N)
        g_mask = offs_g[:, None] < GROUP
        q_off = b * sqb + h * sqh + offs_g[:, None] * sqg + offs_d[None, :]
        q = tl.load(q_ptr + q_off, mask=g_mask, other=0.0)
        k_base = k_ptr + b * skb + h * skh
        v_base = v_ptr + b * svb + h * svh
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
        qk_scale = scale * 1.4426950408889634
        for start in range(0, kv_len, BLOCK_N):
            n = start + offs_n
            n_mask = n < kv_len
            k = tl.load(
                k_base + n[:, None] * skn + offs_d[None, :], mask=n_mask[:, None], other=0.0
            )
            s = tl.dot(q, tl.trans(k), input_precision=PREC)
            s = tl.where(n_mask[None, :], s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(
                v_base + n[:, None] * svn + offs_d[None, :], mask=n_mask[:, None], other=0.0
            )
            pv = tl.dot(p.to(v.dtype), v, input_precision=PREC)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        out = acc / l_i[:, None]
        o_off = b * sob + h * soh + offs_g[:, None] * sog + offs_d[None, :]
        tl.store(o_ptr + o_off, out.to(o_ptr.dtype.element_ty), mask=g_mask)


def triton_decode_attention(
    q: Tensor, k: Tensor, v: Tensor, pos: Tensor, block_n: int, warps: int, stages: int
) -> Tensor:
    """Decode attention over keys ``0..pos`` (read on the device, so graphs stay valid).

    Args:
        q: ``(B, KV, G, D)`` folded queries.
        k: ``(B, KV, L, D)`` key cache (``L > pos``).
        v: ``(B, KV, L, D)`` value cache.
        pos: ``(1,)`` current position (its key/value already written).
        block_n: Keys per iteration.
        warps: Warps per program.
        stages: Software-pipelining depth.

    Returns:
        ``(B, KV, G, D)`` attention output.
    """
    b, n_kv, g, d = q.shape
    out = torch.empty((b, n_kv, g, d), device=q.device, dtype=q.dtype)
    _decode_attention_kernel[(b * n_kv,)](
        q,
        k,
        v,
        out,
        pos,
        d**-0.5,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *out.stride()[:3],
        n_kv,
        GROUP=g,
        BLOCK_G=max(16, triton.next_power_of_2(g)),
        HEAD_DIM=d,
        BLOCK_N=block_n,
        PREC="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps,
        num_stages=stages,
    )
    return out


TRITON_CONFIGS = [(64, 4, 3), (128, 4, 3), (64, 4, 4), (128, 8, 3), (32, 4, 4)]


def decode_attention_candidates(use_triton: bool) -> dict[str, Attn]:
    """q_len=1 decode attention with the GQA fold (query heads in the length axis).

    Every candidate takes ``(q, k, v, mask, pos)``: the SDPA ones use the additive mask, the
    Triton kernel the position.

    Args:
        use_triton: Include the Triton kernel configurations.

    Returns:
        Candidates by name.
    """
    cands: dict[str, Attn] = {}
    for name, backend in _backends().items():
        if name == "flash":
            continue  # no attention mask support

        def fold(
            q: Tensor, k: Tensor, v: Tensor, mask: Tensor, pos: Tensor, _b: Any = backend
        ) -> Tensor:
            with _sdpa_ctx(_b):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        cands[f"fold-{name}"] = fold
    if use_triton and triton is not None:
        for bn, nw, ns in TRITON_CONFIGS:

            def tri(
                q: Tensor,
                k: Tensor,
                v: Tensor,
                mask: Tensor,
                pos: Tensor,
                _c: tuple[int, int, int] = (bn, nw, ns),
            ) -> Tensor:
                return triton_decode_attention(q, k, v, pos, *_c)

            cands[f"triton-{bn}-{nw}-{ns}"] = tri
    return cands


def pick_fastest(
    label: str,
    cands: dict[str, Attn],
    args: Sequence[Tensor],
    small_args: Sequence[Tensor],
    reference: Attn,
    device: torch.device,
) -> tuple[str, Attn, dict[str, Any]]:
    """Check each candidate against ``reference`` on small inputs, then time it on real ones.

    Args:
        label: Name for the log.
        cands: Candidate callables.
        args: Real-size arguments for timing.
        small_args: Small arguments for the numerical check.
        reference: Reference callable (math backend).
        device: The device.

    Returns:
        Name and callable of the fastest correct candidate, and every candidate's result.
    """
    ref = reference(*small_args).float()
    scale = ref.abs().max().clamp_min(1e-6)
    report: dict[str, Any] = {}
    best: tuple[float, str] | None = None
    for name, fn in cands.items():
        try:
            err = float(((fn(*small_args).float() - ref).abs().max() / scale).item())
            if not math.isfinite(err) or err > 3e-2:
                report[name] = f"wrong (rel err {err:.2e})"
                continue
            ms = time_ms(lambda f=fn: f(*args), device, iters=5, warmup=2)
        except Exception as exc:
            report[name] = f"unavailable ({type(exc).__name__})"
            continue
        report[name] = round(ms, 4)
        if best is None or ms < best[0]:
            best = (ms, name)
    if best is None:  # only the math backend left
        log(f"{label} attention: no fused kernel works, math backend; all: {report}")
        return "math", reference, report
    log(f"{label} attention: {best[1]} ({best[0]:.3f} ms); all: {report}")
    return best[1], cands[best[1]], report


@dataclass
class LayerW:
    """One decoder layer's weights (fused views shared with the HF modules)."""

    ln1: Tensor
    qkv: Tensor
    o: Tensor
    ln2: Tensor
    gu: Tensor
    down: Tensor


class FastCaptioner:
    """Split prefill / CUDA-graph decode captioner over a LLaVA-Next model's own weights.

    Args:
        model: The LLaVA-Next model (from :func:`build_model`).
        geo: Token geometry (all rows share it).
        batch: Rows decoded together (one static KV cache for all of them).
        chunk: Rows per prefill chunk.
        buckets: Decode KV-length buckets (one CUDA graph each).
        use_compile: Fuse the elementwise work with ``torch.compile``.
        use_graphs: Capture decode steps in CUDA graphs (CUDA only).
        decode_attention: Force this decode attention candidate (default: fastest correct one).
    """

    def __init__(
        self,
        model: nn.Module,
        geo: Geometry,
        batch: int,
        chunk: int,
        buckets: int,
        use_compile: bool,
        use_graphs: bool,
        decode_attention: str | None = None,
    ) -> None:
        cfg = model.config
        tc = cfg.text_config
        lm = model.model.language_model
        self.model = model
        self.cfg = cfg
        self.geo = geo
        self.batch = batch
        self.chunk = min(chunk, batch)
        self.device = lm.embed_tokens.weight.device
        self.dtype = lm.embed_tokens.weight.dtype
        self.n_heads = tc.num_attention_heads
        self.n_kv = tc.num_key_value_heads
        self.hd = getattr(tc, "head_dim", None) or tc.hidden_size // self.n_heads
        self.group = self.n_heads // self.n_kv
        self.eps = tc.rms_norm_eps
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.w_emb = lm.embed_tokens.weight
        self.w_norm = lm.norm.weight
        self.w_lm = model.lm_head.weight
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
        self.pre = MaybeCompiled(pre, "pre", use_compile)
        self.post = MaybeCompiled(post, "post", use_compile)

        p, n = geo.prefill_len, geo.new_tokens
        self.max_len = -(-(p + n) // 16) * 16
        pos = torch.arange(self.max_len, device=self.device)[None]
        cos, sin = lm.rotary_emb(self.w_emb[:1][None], pos)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        shape = (batch, self.n_kv, self.max_len, self.hd)
        z = torch.zeros  # zeros: masked slots must hold finite values (0 * NaN is NaN)
        self.k_cache = [z(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v_cache = [z(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.neg = torch.finfo(self.dtype).min
        self.mask = torch.full(
            (1, 1, 1, self.max_len), self.neg, device=self.device, dtype=self.dtype
        )
        self.tok = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.out = torch.zeros((batch, n), dtype=torch.long, device=self.device)
        self.eos = torch.tensor(eos_ids(cfg), device=self.device)

        # Decode KV-length buckets: step s writes position p + s and needs p + s + 1 keys.
        steps = n - 1
        lens = sorted(
            {
                min(self.max_len, -(-(p + math.ceil(steps * (i + 1) / buckets)) // 16) * 16)
                for i in range(max(1, buckets))
            }
        )
        self.bucket_lens = lens
        self.step_bucket = [next(kv for kv in lens if kv > p + s) for s in range(steps)]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        default = F.scaled_dot_product_attention
        self.prefill_attn: Attn = lambda q, k, v: default(q, k, v, is_causal=True, enable_gqa=True)
        self.decode_attn: Attn = lambda q, k, v, m, pos: default(q, k, v, attn_mask=m)
        self.force_decode_attention = decode_attention
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
        self.vpre = MaybeCompiled(vpre, "vision pre", use_compile)
        self.vpost = MaybeCompiled(vpost, "vision post", use_compile)
        self.proj = MaybeCompiled(proj, "projector", use_compile)
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

    def _image_features(self, inp: Inputs) -> Tensor:
        """Vision tower (only the layers the selected feature needs), projector, anyres packing."""
        cfg, core = self.cfg, self.model.model
        if not self.own_vision:
            feats = core.get_image_features(
                pixel_values=inp.pixel_values,
                image_sizes=inp.image_sizes,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            ).pooler_output
            return torch.cat(list(feats), dim=0)
        vt = core.vision_tower
        tiles = self.geo.n_tiles
        x = vt.embeddings(inp.pixel_values[:, :tiles].flatten(0, 1))
        x = vt.pre_layrnorm(x)
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
            inp.image_sizes,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            image_newline=core.image_newline,
        )
        return torch.cat(packed, dim=0)

    def _embed(self, inp: Inputs) -> Tensor:
        """Text embeddings with the image features scattered in."""
        emb = F.embedding(inp.input_ids, self.w_emb)
        feats = self._image_features(inp).to(emb.dtype)
        mask = (inp.input_ids == self.cfg.image_token_index).unsqueeze(-1)
        return emb.masked_scatter(mask, feats)

    def _head(self, x: Tensor) -> Tensor:
        """Final norm, LM head, EOS masked (forced length), greedy argmax."""
        logits = F.linear(_rms(x, self.w_norm, self.eps), self.w_lm)
        logits = logits.index_fill(-1, self.eos, float("-inf"))
        return logits.argmax(-1)

    def _prefill_chunk(self, inp: Inputs, r0: int, marks: list[Stamp] | None) -> None:
        """Prefill rows ``r0 : r0 + len(inp)``: fill their KV cache rows and first tokens."""
        c, s = inp.input_ids.shape
        if marks is not None:
            marks.append(Stamp(self.device))
        x = self._embed(inp)
        if marks is not None:
            marks.append(Stamp(self.device))
        cos, sin = self.cos[:s].unsqueeze(1), self.sin[:s].unsqueeze(1)
        for li, w in enumerate(self.layers):
            q, k, v = self.pre(x, w.ln1, w.qkv, cos, sin)
            kc = self.k_cache[li][r0 : r0 + c, :, :s]
            vc = self.v_cache[li][r0 : r0 + c, :, :s]
            kc.copy_(k.transpose(1, 2))
            vc.copy_(v.transpose(1, 2))
            a = self.prefill_attn(q.transpose(1, 2), kc, vc)
            x = self.post(x, a.transpose(1, 2), w.o, w.ln2, w.gu, w.down)
        nxt = self._head(x[:, -1])
        self.tok[r0 : r0 + c] = nxt
        self.out[r0 : r0 + c, 0] = nxt
        if marks is not None:
            marks.append(Stamp(self.device))

    def _reset_decode(self) -> None:
        p = self.geo.prefill_len
        self.pos.fill_(p)
        self.mask.fill_(self.neg)
        self.mask[..., :p] = 0

    def _step(self, kv: int) -> None:
        """One decode step for the whole batch; all state lives in static buffers."""
        b = self.batch
        x = F.embedding(self.tok, self.w_emb)
        cos = self.cos.index_select(0, self.pos).unsqueeze(0)
        sin = self.sin.index_select(0, self.pos).unsqueeze(0)
        self.mask.index_fill_(3, self.pos, 0.0)
        mask = self.mask[..., :kv]
        for li, w in enumerate(self.layers):
            q, k, v = self.pre(x, w.ln1, w.qkv, cos, sin)
            self.k_cache[li].index_copy_(2, self.pos, k.unsqueeze(2))
            self.v_cache[li].index_copy_(2, self.pos, v.unsqueeze(2))
            qf = q.view(b, self.n_kv, self.group, self.hd)  # GQA fold: exact
            kc, vc = self.k_cache[li][:, :, :kv], self.v_cache[li][:, :, :kv]
            a = self.decode_attn(qf, kc, vc, mask, self.pos)
            x = self.post(x, a.reshape(b, -1), w.o, w.ln2, w.gu, w.down)
        nxt = self._head(x)
        self.tok.copy_(nxt)
        self.out.index_copy_(1, self.pos - (self.geo.prefill_len - 1), nxt.unsqueeze(1))
        self.pos.add_(1)

    def _rnd(self, *shape: int) -> Tensor:
        return torch.randn(shape, device=self.device).to(self.dtype)

    def _pick_attention(self) -> None:
        """Choose prefill and decode SDPA variants on the real shapes and layouts (CUDA)."""
        c, s = self.chunk, self.geo.prefill_len
        q = self._rnd(c, s, self.n_heads, self.hd).transpose(1, 2)  # as `pre` returns it
        k, v = self.k_cache[0][:c, :, :s], self.v_cache[0][:c, :, :s]
        k.normal_()
        v.normal_()
        cands = prefill_attention_candidates(self.group)
        ref = cands.pop("expand-math")
        small = (q[:1], k[:1], v[:1])
        name, fn, rep = pick_fastest("prefill", cands, (q, k, v), small, ref, self.device)
        self.prefill_attn = fn
        self.attn_report["prefill"] = {"chosen": name, "ms_per_layer_chunk": rep}
        del q
        b, kv = self.batch, self.max_len
        q = self._rnd(b, self.n_kv, self.group, self.hd)
        kc, vc = self.k_cache[0].normal_(), self.v_cache[0].normal_()
        # Checked with half the keys hidden (mask and position agree); timed on the full cache.
        half = torch.zeros((1, 1, 1, kv), device=self.device, dtype=self.dtype)
        half[..., kv // 2 :] = self.neg
        pos_half = torch.tensor([kv // 2 - 1], device=self.device)
        full = torch.zeros((1, 1, 1, kv), device=self.device, dtype=self.dtype)
        pos_full = torch.tensor([kv - 1], device=self.device)
        dcands = decode_attention_candidates(use_triton=True)
        ref = dcands.pop("fold-math")
        if self.force_decode_attention:
            dcands = {self.force_decode_attention: dcands[self.force_decode_attention]}
        small = (q[:4], kc[:4], vc[:4], half, pos_half)
        args = (q, kc, vc, full, pos_full)
        name, fn, rep = pick_fastest("decode", dcands, args, small, ref, self.device)
        self.decode_attn = fn
        self.attn_report["decode"] = {"chosen": name, "ms_per_layer_full_cache": rep}
        if name.startswith("triton"):  # reads keys 0..pos itself: no KV-length buckets needed
            self.bucket_lens = [self.max_len]
            self.step_bucket = [self.max_len] * len(self.step_bucket)
        kc.zero_()
        vc.zero_()

    def _time_layer(self, tag: str, x: Tensor, cos: Tensor, sin: Tensor) -> dict[str, float]:
        """Time ``pre``, ``post`` and the bare GEMMs of layer 0 on input ``x``."""
        w = self.layers[0]
        inner = 1 if x.dim() == 3 else 16  # decode-size kernels are short: time them in a row
        q, _, _ = self.pre(x, w.ln1, w.qkv, cos, sin)
        att = torch.zeros_like(q).flatten(-2)
        h = self._rnd(*x.shape[:-1], w.down.shape[1])
        out = {
            f"{tag}_pre_ms": time_ms(
                lambda: self.pre(x, w.ln1, w.qkv, cos, sin), self.device, 10, 2, inner
            ),
            f"{tag}_post_ms": time_ms(
                lambda: self.post(x, att, w.o, w.ln2, w.gu, w.down), self.device, 10, 2, inner
            ),
        }
        gemms = {"qkv": (x, "qkv"), "o": (x, "o"), "gate_up": (x, "gu"), "down": (h, "down")}
        total = 0.0
        for name, (a, attr) in gemms.items():
            # cycle through all layers' weights so that L2 does not hold them between calls
            ws = itertools.cycle([getattr(layer, attr) for layer in self.layers])
            ms = time_ms(lambda a=a, ws=ws: F.linear(a, next(ws)), self.device, 10, 2, inner)
            out[f"{tag}_gemm_{name}_ms"] = ms
            total += ms
        out[f"{tag}_gemm_total_ms"] = total
        return out

    def profile(self) -> dict[str, float]:
        """Time one layer's parts at the prefill-chunk and decode shapes (CUDA).

        Returns:
            Milliseconds per layer call: ``pre``/``attention``/``post`` and the bare GEMMs
            (cuBLAS through ``F.linear``) for one prefill chunk and one decode step.
        """
        c, s, b = self.chunk, self.geo.prefill_len, self.batch
        d = self.w_emb.shape[1]
        cos, sin = self.cos[:s].unsqueeze(1), self.sin[:s].unsqueeze(1)
        out = self._time_layer("prefill_chunk", self._rnd(c, s, d), cos, sin)
        cos, sin = self.cos[:1].unsqueeze(1), self.sin[:1].unsqueeze(1)
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

    def setup(self, sample: Inputs) -> None:
        """Pick attention, compile, warm the prefill shapes and capture the decode graphs.

        Args:
            sample: At least ``chunk`` rows of inputs (used for the warm-up prefill).
        """
        t0 = time.perf_counter()
        if self.device.type == "cuda":
            self._pick_attention()
        log(f"warm-up prefill chunk ({self.chunk} rows)")
        self._prefill_chunk(sample.rows(0, self.chunk), 0, None)
        sync(self.device)
        if self.use_graphs:
            try:
                self._capture_graphs()
            except Exception as exc:
                self.graph_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log(f"decode graph capture failed ({self.graph_error})")
                self.graphs.clear()
                torch.cuda.synchronize()
                if self.attn_report.get("decode", {}).get("chosen") != "fold-efficient":
                    log("retrying the capture with the efficient SDPA backend")
                    self.decode_attn = decode_attention_candidates(False)["fold-efficient"]
                    self.attn_report.setdefault("decode", {})["chosen"] = "fold-efficient"
                    try:
                        self._capture_graphs()
                    except Exception as exc2:
                        self.graph_error += f"; retry: {type(exc2).__name__}: {str(exc2)[:300]}"
                        self.graphs.clear()
                        self.use_graphs = False
                else:
                    self.use_graphs = False
                if not self.use_graphs:
                    log("decode without CUDA graphs (eager steps)")
        else:
            self._reset_decode()
            self._step(self.bucket_lens[0])
        sync(self.device)
        self.setup_s = time.perf_counter() - t0

    def _capture_graphs(self) -> None:
        """Warm up (side stream) and capture one decode-step graph per KV-length bucket."""
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        for kv in self.bucket_lens:
            self._reset_decode()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step(kv)
            torch.cuda.current_stream().wait_stream(side)
            self._reset_decode()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._step(kv)
            self.graphs[kv] = graph
        log(f"captured {len(self.graphs)} decode graphs (KV lengths {self.bucket_lens})")

    # ---------------------------------------------------------------------------- running
    def generate(self, inp: Inputs) -> tuple[Tensor, dict[str, float]]:
        """Caption ``batch`` rows: chunked prefill, then graph-replayed decode.

        Args:
            inp: ``batch`` rows of inputs.

        Returns:
            ``(B, new_tokens)`` token ids, and a timing breakdown in milliseconds.
        """
        if inp.input_ids.shape[0] != self.batch:
            raise ValueError("inputs must have exactly `batch` rows")
        t_start = Stamp(self.device)
        marks: list[Stamp] = []
        for r0 in range(0, self.batch, self.chunk):
            self._prefill_chunk(inp.rows(r0, r0 + self.chunk), r0, marks)
        self._reset_decode()
        t_dec = Stamp(self.device)
        bucket_marks = [t_dec]
        for s, kv in enumerate(self.step_bucket):
            if self.use_graphs:
                self.graphs[kv].replay()
            else:
                self._step(kv)
            if s + 1 == len(self.step_bucket) or self.step_bucket[s + 1] != kv:
                bucket_marks.append(Stamp(self.device))
        t_end = Stamp(self.device)
        sync(self.device)
        vision = sum(marks[i].ms_to(marks[i + 1]) for i in range(0, len(marks), 3))
        lm = sum(marks[i + 1].ms_to(marks[i + 2]) for i in range(0, len(marks), 3))
        timing = {
            "total_ms": t_start.ms_to(t_end),
            "prefill_ms": t_start.ms_to(t_dec),
            "prefill_vision_ms": vision,
            "prefill_lm_ms": lm,
            "decode_ms": t_dec.ms_to(t_end),
            "decode_bucket_ms": [
                bucket_marks[i].ms_to(bucket_marks[i + 1]) for i in range(len(bucket_marks) - 1)
            ],
        }
        return self.out.clone(), timing

    def free(self) -> None:
        """Drop graphs and caches."""
        self.graphs.clear()
        self.k_cache.clear()
        self.v_cache.clear()


# --------------------------------------------------------------------------------------------
# Plain generate
# --------------------------------------------------------------------------------------------


def plain_generate(model: nn.Module, inp: Inputs, new_tokens: int) -> Tensor:
    """Plain ``model.generate``: greedy, exactly ``new_tokens`` tokens (EOS ignored).

    Args:
        model: The LLaVA-Next model.
        inp: Inputs.
        new_tokens: Tokens to generate.

    Returns:
        ``(B, new_tokens)`` generated ids.
    """
    from transformers import GenerationConfig

    eos = eos_ids(model.config)
    gen_cfg = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos[0],
        bos_token_id=model.config.text_config.bos_token_id,
    )
    out = model.generate(**inp.kwargs(), generation_config=gen_cfg)
    return out[:, inp.input_ids.shape[1] :]


# --------------------------------------------------------------------------------------------
# Correctness check
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Disable TF32 in matmuls and cuDNN convolutions for the duration."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prec = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        torch.set_float32_matmul_precision(prec)


def run_check(
    device: torch.device, use_compile: bool, use_graphs: bool, batch: int = 6, new_tokens: int = 24
) -> dict[str, Any]:
    """Token-for-token check of the fast path against plain ``generate`` (tiny config, fp32).

    The fast path runs with several prefill chunks (one shorter than the others) and several
    decode buckets, with ``torch.compile`` and CUDA graphs as configured.

    Args:
        device: Device to run on.
        use_compile: Use ``torch.compile`` in the fast path.
        use_graphs: Use CUDA graphs in the fast path.
        batch: Rows.
        new_tokens: New tokens per row.

    Returns:
        The check's report; ``passed`` is True when every token agrees.
    """
    t0 = time.perf_counter()
    with exact_fp32():
        cfg = build_config(tiny=True)
        geo = image_geometry(cfg, 44, 20, new_tokens)
        model = build_model(cfg, device, torch.float32, std=0.15)
        inp = make_inputs(cfg, geo, batch, device, torch.float32, seed=11)
        ref = plain_generate(model, inp, new_tokens)
        forced = "triton-64-4-3" if device.type == "cuda" and triton is not None else None
        fast = FastCaptioner(model, geo, batch, 4, 3, use_compile, use_graphs, forced)
        fast.setup(inp)
        got, _ = fast.generate(inp)
        got2, _ = fast.generate(inp)  # a second run must reset all state
    same = (got == ref).all(dim=1)
    report = {
        "config": "tiny LLaVA-Next (2 Llama layers, GQA 8q/2kv, head dim 16, 3 CLIP layers), "
        "fp32, greedy",
        "device": str(device),
        "rows": batch,
        "new_tokens": new_tokens,
        "prefill_len": geo.prefill_len,
        "image_tokens": geo.image_tokens,
        "prefill_chunks": [4, batch - 4],
        "decode_buckets": fast.bucket_lens,
        "compile": use_compile,
        "cuda_graphs": fast.use_graphs,
        "rows_identical": int(same.sum()),
        "tokens_identical": int((got == ref).sum()),
        "tokens_total": int(ref.numel()),
        "second_run_identical": bool((got2 == got).all()),
        "distinct_tokens_in_reference": int(ref.unique().numel()),
        "attention": fast.attn_report,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    report["passed"] = bool(same.all()) and report["second_run_identical"]
    if not report["passed"]:
        bad = int((~same).nonzero()[0, 0])
        report["first_bad_row"] = {"ref": ref[bad].tolist(), "fast": got[bad].tolist()}
    fast.free()
    del model, fast
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    verdict = "PASSED" if report["passed"] else "FAILED"
    log(
        f"check {verdict}: {report['tokens_identical']}/{report['tokens_total']} tokens, "
        f"{report['rows_identical']}/{batch} rows identical, "
        f"{report['distinct_tokens_in_reference']} distinct tokens"
    )
    return report


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------


def env_info(device: torch.device) -> dict[str, Any]:
    """Versions and device description."""
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "triton": getattr(triton, "__version__", None),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sms=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last reset, GiB."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def reset_peak(device: torch.device) -> None:
    """Reset the peak memory counter."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device) -> None:
    """Collect garbage and return cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_plain(
    model: nn.Module, inp: Inputs, geo: Geometry, runs: int, device: torch.device
) -> tuple[dict[str, Any], Tensor]:
    """Time plain ``generate`` (one warm-up, then ``runs`` timed) and a prefill-only forward.

    Args:
        model: The model.
        inp: Inputs (its rows are the batch).
        geo: Geometry.
        runs: Timed runs.
        device: The device.

    Returns:
        The report and the last run's tokens.
    """
    b = inp.input_ids.shape[0]
    log(f"plain generate: warm-up at batch {b}")
    plain_generate(model, inp, geo.new_tokens)
    reset_peak(device)
    times = []
    out = None
    for r in range(runs):
        sync(device)
        t0 = time.perf_counter()
        out = plain_generate(model, inp, geo.new_tokens)
        sync(device)
        times.append(time.perf_counter() - t0)
        log(f"plain generate run {r + 1}: {times[-1]:.2f} s = {b / times[-1]:.2f} captions/s")
    sync(device)
    t0 = time.perf_counter()
    model(**inp.kwargs(), use_cache=True, logits_to_keep=1)
    sync(device)
    prefill_s = time.perf_counter() - t0
    best = min(times)
    assert out is not None
    rep = {
        "batch": b,
        "runs_s": [round(t, 3) for t in times],
        "captions_per_s": b / best,
        "captions_per_s_runs": [b / t for t in times],
        "prefill_s_separate_forward": prefill_s,
        "prefill_ms_per_caption": prefill_s * 1e3 / b,
        "decode_ms_per_caption_est": (best - prefill_s) * 1e3 / b,
        "decode_ms_per_step_est": (best - prefill_s) * 1e3 / max(1, geo.new_tokens - 1),
        "prefill_tokens_per_s": b * geo.prefill_len / prefill_s,
        "decode_tokens_per_s_est": b * (geo.new_tokens - 1) / max(1e-9, best - prefill_s),
        "peak_memory_gib": peak_gib(device),
    }
    free_memory(device)
    return rep, out


def bench_fast(
    model: nn.Module,
    inp: Inputs,
    geo: Geometry,
    args: argparse.Namespace,
    runs: int,
    device: torch.device,
) -> tuple[dict[str, Any], Tensor]:
    """Set up the fast path at ``len(inp)`` rows and time ``runs`` full batches.

    Args:
        model: The model.
        inp: Inputs (its rows are the batch).
        geo: Geometry.
        args: CLI arguments (chunk, buckets, compile, graphs).
        runs: Timed runs.
        device: The device.

    Returns:
        The report and the last run's tokens.
    """
    b = inp.input_ids.shape[0]
    reset_peak(device)
    fast = FastCaptioner(
        model, geo, b, args.chunk, args.decode_buckets, not args.no_compile, not args.no_graphs
    )
    log(f"fast path: setup at batch {b} (chunk {fast.chunk}, KV buckets {fast.bucket_lens})")
    fast.setup(inp)
    log(f"fast path: setup took {fast.setup_s:.1f} s")
    prof = fast.profile() if device.type == "cuda" else {}
    if prof:
        log(f"layer profile (ms): { {k: round(v, 3) for k, v in prof.items()} }")
    timings = []
    out = None
    for r in range(runs):
        sync(device)
        t0 = time.perf_counter()
        out, tm = fast.generate(inp)
        tm["wall_s"] = time.perf_counter() - t0
        timings.append(tm)
        log(
            f"fast run {r + 1}: {tm['wall_s']:.2f} s = {b / tm['wall_s']:.2f} captions/s "
            f"(prefill {tm['prefill_ms'] / b:.2f} ms/caption, vision "
            f"{tm['prefill_vision_ms'] / b:.2f}, decode {tm['decode_ms'] / b:.2f} ms/caption)"
        )
    best = min(timings, key=lambda t: t["wall_s"])
    assert out is not None
    n = geo.new_tokens
    rep = {
        "batch": b,
        "chunk": fast.chunk,
        "decode_kv_buckets": fast.bucket_lens,
        "compile": fast.pre.compiled is not None,
        "compile_error": fast.pre.error or fast.post.error or None,
        "cuda_graphs": fast.use_graphs,
        "graph_error": fast.graph_error or None,
        "attention": fast.attn_report,
        "setup_s": fast.setup_s,
        "runs_s": [round(t["wall_s"], 3) for t in timings],
        "captions_per_s": b / best["wall_s"],
        "captions_per_s_runs": [b / t["wall_s"] for t in timings],
        "ms_per_caption": best["wall_s"] * 1e3 / b,
        "prefill_ms_per_caption": best["prefill_ms"] / b,
        "prefill_vision_ms_per_caption": best["prefill_vision_ms"] / b,
        "prefill_lm_ms_per_caption": best["prefill_lm_ms"] / b,
        "decode_ms_per_caption": best["decode_ms"] / b,
        "decode_ms_per_step": best["decode_ms"] / max(1, n - 1),
        "decode_bucket_ms": best["decode_bucket_ms"],
        "prefill_tokens_per_s": b * geo.prefill_len / (best["prefill_ms"] * 1e-3),
        "decode_tokens_per_s": b * (n - 1) / max(1e-9, best["decode_ms"] * 1e-3),
        "peak_memory_gib": peak_gib(device),
        "layer_profile_ms": prof,
    }
    if prof:
        n_layers = len(fast.layers)
        c = fast.chunk
        pre_post = prof["prefill_chunk_pre_ms"] + prof["prefill_chunk_post_ms"]
        dec_attn = fast.attn_report["decode"]["ms_per_layer_full_cache"]
        dec_attn_ms = dec_attn[fast.attn_report["decode"]["chosen"]]
        rep["time_split_ms_per_caption"] = {
            "prefill_gemms": prof["prefill_chunk_gemm_total_ms"] * n_layers / c,
            "prefill_attention": prof["prefill_chunk_attention_ms"] * n_layers / c,
            "prefill_norm_rope_act_residual": (pre_post - prof["prefill_chunk_gemm_total_ms"])
            * n_layers
            / c,
            "prefill_vision_and_embed": rep["prefill_vision_ms_per_caption"],
            "decode_gemms_incl_lm_head": (
                prof["decode_step_gemm_total_ms"] * n_layers + prof["decode_step_lm_head_ms"]
            )
            * (n - 1)
            / b,
            "decode_attention_at_full_cache": dec_attn_ms * n_layers * (n - 1) / b,
            "note": "parts timed alone on the real shapes; the runs' totals are measured",
        }
    fast.free()
    del fast
    free_memory(device)
    return rep, out


def run_benchmark(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Run ceilings, check, plain generate and the fast path; return the report.

    Args:
        args: CLI arguments.
        device: The device.

    Returns:
        The full report (also written to ``args.out``).
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report: dict[str, Any] = {"env": env_info(device), "args": vars(args)}
    log(f"env: {report['env']}")

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))

    report["ceilings_start"] = measure_ceilings(device)
    log(f"ceilings: {report['ceilings_start']}")
    if not args.skip_check:
        report["check"] = run_check(device, not args.no_compile, not args.no_graphs)
        save()

    cfg = build_config(args.tiny)
    px = args.image_px if not args.tiny else args.image_px * 56 // 336
    geo = image_geometry(cfg, px, args.prompt_tokens, args.new_tokens)
    if args.image_tokens is not None and args.image_tokens != geo.image_tokens:
        raise SystemExit(
            f"--image-tokens {args.image_tokens} does not match anyres for {px} px "
            f"({geo.image_tokens}); the model only accepts the packed count"
        )
    batches = [int(b) for b in str(args.batch).split(",")]
    log(
        f"geometry: {geo.image_tokens} image tokens ({geo.n_tiles} tiles) + "
        f"{geo.prompt_tokens} text = prefill {geo.prefill_len}, {geo.new_tokens} new tokens"
    )
    t0 = time.perf_counter()
    model = build_model(cfg, device, dtype, std=0.02)
    sync(device)
    log(f"model built in {time.perf_counter() - t0:.1f} s")
    flops = flops_per_caption(cfg, geo)
    report["model"] = {
        "architecture": "llava-hf/llama3-llava-next-8b-hf (random weights)"
        if not args.tiny
        else "tiny LLaVA-Next",
        "dtype": str(dtype),
        "params": param_counts(model),
        "attn_implementation": model.config._attn_implementation,
    }
    report["geometry"] = {
        "image_px": geo.image_px,
        "image_tokens": geo.image_tokens,
        "vision_tiles": geo.n_tiles,
        "prompt_tokens": geo.prompt_tokens,
        "prefill_len": geo.prefill_len,
        "new_tokens": geo.new_tokens,
    }
    report["flops_per_caption"] = flops
    tflops = report["ceilings_start"]["matmul_tflops"]
    all_inp = make_inputs(cfg, geo, max([*batches, args.plain_batch]), device, dtype, args.seed)

    plain_out = None
    if args.plain_batch > 0:
        try:
            report["plain"], plain_out = bench_plain(
                model, all_inp.rows(0, args.plain_batch), geo, args.runs, device
            )
        except torch.OutOfMemoryError as exc:
            report["plain"] = {"batch": args.plain_batch, "error": f"OOM: {exc}"}
            free_memory(device)
        save()

    report["fast"] = []
    for b in batches:
        try:
            rep, out = bench_fast(model, all_inp.rows(0, b), geo, args, args.runs, device)
        except torch.OutOfMemoryError as exc:
            report["fast"].append({"batch": b, "error": f"OOM: {str(exc)[:300]}"})
            log(f"fast path at batch {b}: out of memory")
            free_memory(device)
            continue
        if plain_out is not None:
            n = min(plain_out.shape[0], out.shape[0])
            same = out[:n] == plain_out[:n]
            rep["agreement_with_plain_bf16"] = {
                "rows": n,
                "first_token": float(same[:, 0].float().mean()),
                "tokens": float(same.float().mean()),
                "rows_identical": int(same.all(dim=1).sum()),
                "note": "informational: random bf16 weights make the top logits near-ties",
            }
        report["fast"].append(rep)
        save()

    report["ceilings_end"] = measure_ceilings(device)
    log(f"ceilings at the end: {report['ceilings_end']}")
    summarize(report, flops, tflops, geo, cfg, dtype)
    save()
    return report


def summarize(
    report: dict[str, Any],
    flops: dict[str, float],
    tflops: float,
    geo: Geometry,
    cfg: Any,
    dtype: torch.dtype,
) -> None:
    """Add floor, ratios and the time split to ``report`` and print a table.

    Args:
        report: The report (updated in place).
        flops: FLOPs per caption.
        tflops: Measured matmul TFLOP/s (the compute floor's rate).
        geo: Geometry.
        cfg: Model config.
        dtype: Model dtype.
    """
    floor_cps = tflops * 1e12 / flops["total"]
    gbps = report["ceilings_start"]["copy_gbps"]
    report["floor"] = {
        "matmul_tflops": tflops,
        "tflop_per_caption": flops["total"] / 1e12,
        "captions_per_s": floor_cps,
        "prefill_ms_per_caption": flops["prefill_total"] / (tflops * 1e12) * 1e3,
    }
    fast_ok = [f for f in report.get("fast", []) if "captions_per_s" in f]
    plain = report.get("plain", {})
    plain_cps = plain.get("captions_per_s")
    best = max(fast_ok, key=lambda f: f["captions_per_s"]) if fast_ok else None
    for f in fast_ok:
        b = f["batch"]
        f["fraction_of_floor"] = f["captions_per_s"] / floor_cps
        f["prefill_tflops_achieved"] = flops["prefill_total"] / (f["prefill_ms_per_caption"] * 1e9)
        f["prefill_fraction_of_matmul_rate"] = f["prefill_tflops_achieved"] / tflops
        dbytes = decode_bytes_per_caption(cfg, geo, b, torch.finfo(dtype).bits // 8)
        f["decode_min_bytes_per_caption_gb"] = dbytes / 1e9
        f["decode_floor_ms_per_caption"] = dbytes / (gbps * 1e9) * 1e3
        f["decode_fraction_of_copy_bandwidth"] = (
            f["decode_floor_ms_per_caption"] / f["decode_ms_per_caption"]
        )
        if plain_cps:
            f["ratio_vs_plain"] = f["captions_per_s"] / plain_cps
    if plain_cps:
        plain["fraction_of_floor"] = plain_cps / floor_cps
    report["summary"] = {
        "plain_captions_per_s": plain_cps,
        "plain_batch": plain.get("batch"),
        "fast_captions_per_s": best["captions_per_s"] if best else None,
        "fast_batch": best["batch"] if best else None,
        "ratio_fast_over_plain": best.get("ratio_vs_plain") if best else None,
        "floor_captions_per_s": floor_cps,
        "fast_fraction_of_floor": best["fraction_of_floor"] if best else None,
        "plain_fraction_of_floor": plain.get("fraction_of_floor"),
        "check_passed": report.get("check", {}).get("passed"),
    }
    rows = []
    if plain_cps:
        rows.append(
            (
                f"plain generate b{plain['batch']}",
                plain_cps,
                1.0,
                plain["prefill_tokens_per_s"],
                plain["decode_tokens_per_s_est"],
                plain["fraction_of_floor"],
                plain["prefill_ms_per_caption"],
                plain["decode_ms_per_caption_est"],
            )
        )
    for f in fast_ok:
        rows.append(
            (
                f"fast path b{f['batch']}",
                f["captions_per_s"],
                f.get("ratio_vs_plain", float("nan")),
                f["prefill_tokens_per_s"],
                f["decode_tokens_per_s"],
                f["fraction_of_floor"],
                f["prefill_ms_per_caption"],
                f["decode_ms_per_caption"],
            )
        )
    print(
        "\n| path | captions/s | x plain | prefill tok/s | decode tok/s | of floor | "
        "prefill ms/cap | decode ms/cap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:,.0f} | {r[4]:,.0f} | {r[5]:.1%} | "
            f"{r[6]:.2f} | {r[7]:.2f} |"
        )
    print(
        f"| compute floor ({tflops:.0f} TFLOP/s, {flops['total'] / 1e12:.2f} TFLOP/caption) | "
        f"{floor_cps:.2f} | | | | 100% | {report['floor']['prefill_ms_per_caption']:.2f} | |"
    )
    print(json.dumps(report["summary"], indent=2), flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="256", help="fast-path batch size(s), comma-separated")
    p.add_argument("--plain-batch", type=int, default=64, help="plain generate batch (0: skip)")
    p.add_argument("--new-tokens", type=int, default=128, help="forced new tokens per caption")
    p.add_argument("--prompt-tokens", type=int, default=250, help="text prompt tokens")
    p.add_argument("--image-px", type=int, default=264, help="square chip side in pixels")
    p.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="expected image tokens (computed from anyres: 1176 for 264 px); checked",
    )
    p.add_argument("--chunk", type=int, default=32, help="rows per prefill chunk")
    p.add_argument("--decode-buckets", type=int, default=8, help="decode KV-length buckets")
    p.add_argument("--runs", type=int, default=3, help="timed runs per path")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile in the fast path")
    p.add_argument("--no-graphs", action="store_true", help="no CUDA graphs in the fast path")
    p.add_argument("--check", action="store_true", help="only run the correctness check")
    p.add_argument("--skip-check", action="store_true", help="skip the correctness check")
    p.add_argument("--tiny", action="store_true", help="tiny config (smoke test, CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=None,
        help="JSON report path (benchmark default: caption_gpu.json; --check writes only if given)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0, or 1 when the correctness check fails.
    """
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dyn = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dyn, name):
            setattr(dyn, name, 64)
    on_cpu = device.type == "cpu"
    if on_cpu:
        args.no_graphs = True
    with torch.inference_mode():
        if args.check:
            rep = run_check(device, not args.no_compile and not on_cpu, not args.no_graphs)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"check": rep}, indent=2, default=str))
            return 0 if rep["passed"] else 1
        if on_cpu and not args.tiny:
            raise SystemExit("the full-size benchmark needs a GPU; use --tiny on a CPU")
        if on_cpu:
            args.no_compile = True
        args.out = args.out or "caption_gpu.json"
        report = run_benchmark(args, device)
    check = report.get("check")
    return 1 if check is not None and not check["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
