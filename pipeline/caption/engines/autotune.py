"""Attention autotuning: every variant is checked against the math backend, then timed.

Prefill (causal, chunk of rows) and decode (q_len=1, GQA fold) each have several exact
variants: SDPA backends with native GQA or expanded K/V, and the Triton decode kernel where
Triton is installed. :func:`pick_fastest` keeps the fastest one that agrees with the reference
on the real shapes and layouts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.caption.engines.timing import time_ms

_LOG = logging.getLogger(__name__)

Attn = Callable[..., Tensor]
DecodeKernel = Callable[[Tensor, Tensor, Tensor, Tensor, int, int, int], Tensor]


def triton_decode_kernel() -> tuple[DecodeKernel, list[tuple[int, int, int]]] | None:
    """The Triton decode attention and its configurations, or ``None`` without Triton.

    Returns:
        ``(kernel, configs)``; ``None`` where Triton is not installed (CPU-only machines).
    """
    try:
        from pipeline.caption.engines.kernels import TRITON_CONFIGS, triton_decode_attention
    except ImportError:  # the GPU extra's Triton; a CPU-only install need not have it
        return None
    return triton_decode_attention, TRITON_CONFIGS


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


def decode_attention_candidates(use_triton: bool) -> dict[str, Attn]:
    """q_len=1 decode attention with the GQA fold (query heads in the length axis).

    Every candidate takes ``(q, k, v, mask, pos)`` with a mask and a position per row: the SDPA
    ones use the ``(B, 1, 1, L)`` additive mask, the Triton kernel the ``(B,)`` positions.

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
    triton = triton_decode_kernel() if use_triton else None
    if triton is not None:
        kernel, configs = triton
        for bn, nw, ns in configs:

            def tri(
                q: Tensor,
                k: Tensor,
                v: Tensor,
                mask: Tensor,
                pos: Tensor,
                _c: tuple[int, int, int] = (bn, nw, ns),
            ) -> Tensor:
                return kernel(q, k, v, pos, *_c)

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
            ms = time_ms(functools.partial(fn, *args), device, iters=5, warmup=2)
        except Exception as exc:
            report[name] = f"unavailable ({type(exc).__name__})"
            continue
        report[name] = round(ms, 4)
        if best is None or ms < best[0]:
            best = (ms, name)
    if best is None:  # only the math backend left
        _LOG.info("%s attention: no fused kernel works, math backend; all: %s", label, report)
        return "math", reference, report
    _LOG.info("%s attention: %s (%.3f ms); all: %s", label, best[1], best[0], report)
    return best[1], cands[best[1]], report
