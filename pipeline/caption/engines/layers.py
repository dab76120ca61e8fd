"""The Llama and CLIP layer halves around attention, over a model's own (fused) weights.

Attention is left out of these functions so that the engine can choose it per shape
(:mod:`pipeline.caption.engines.autotune`); everything between two attentions (norms, fused
GEMMs, RoPE, activations, residual adds) is one function that ``torch.compile`` can fuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG = logging.getLogger(__name__)


def rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
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
        h = rms_norm(x, ln1, eps)
        # torch.split / torch.unflatten: the Tensor methods are unannotated in torch
        q, k, v = torch.split(F.linear(h, w_qkv), split, dim=-1)
        q = torch.unflatten(q, -1, (n_heads, hd))
        k = torch.unflatten(k, -1, (n_kv, hd))
        v = torch.unflatten(v, -1, (n_kv, hd))
        q = (q * cos) + (_rotate_half(q) * sin)
        k = (k * cos) + (_rotate_half(k) * sin)
        return q, k, v

    def post(
        x: Tensor, attn: Tensor, w_o: Tensor, ln2: Tensor, w_gu: Tensor, w_down: Tensor
    ) -> Tensor:
        x = x + F.linear(attn.reshape(x.shape), w_o)
        h = rms_norm(x, ln2, eps)
        gate, up = torch.split(F.linear(h, w_gu), inter, dim=-1)
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
        q, k, v = torch.unflatten(F.linear(h, w, b), -1, (3, n_heads, hd)).unbind(-3)
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
    """``torch.compile`` a function; on a compile error fall back to eager for good.

    Args:
        fn: The function.
        name: Its name in the log.
        enabled: Compile it (else it always runs eagerly).
        dynamic: Compile once for varying sizes (prefill: rows and prompt lengths vary) rather
            than once per shape (decode: the slot count is fixed, and CUDA graphs replay it).
    """

    def __init__(self, fn: Callable[..., Any], name: str, enabled: bool, dynamic: bool) -> None:
        self.fn = fn
        self.name = name
        self.compiled: Callable[..., Any] | None = None
        self.error = ""
        if enabled:
            self.compiled = torch.compile(fn, dynamic=dynamic, fullgraph=True)

    def __call__(self, *args: Any) -> Any:
        """Call the compiled function (or the eager one)."""
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # compile failures only happen on first use of a shape
                self.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                _LOG.warning(
                    "torch.compile of %s failed, eager from now on: %s", self.name, self.error
                )
                self.compiled = None
        return self.fn(*args)
