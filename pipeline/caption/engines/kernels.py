"""Triton GQA-folded decode attention (q_len=1) that reads only each row's keys ``0..pos[row]``.

The positions are read on the device, so one captured CUDA graph stays valid for every decode
step, whatever length each row has reached. This module imports Triton unconditionally: load
it through :func:`pipeline.caption.engines.autotune.triton_decode_kernel`, which returns
``None`` where Triton is not installed (CPU-only machines).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# (keys per iteration, warps, pipelining stages) tried by the attention autotuning.
TRITON_CONFIGS = [(64, 4, 3), (128, 4, 3), (64, 4, 4), (128, 8, 3), (32, 4, 4)]


# Triton specialises on parameter annotations: only the tl.constexpr ones have one. Triton ships
# no type hints, so its decorator leaves the kernel untyped for mypy.
@triton.jit  # type: ignore[untyped-decorator, unused-ignore]
def _decode_attention_kernel(  # type: ignore[no-untyped-def]
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
    """GQA-folded q_len=1 attention: one program per (row, KV head), keys 0..pos[row]."""
    pid = tl.program_id(0)
    b = pid // n_kv
    h = pid % n_kv
    kv_len = tl.load(pos_ptr + b) + 1  # this row's keys 0..pos[b]
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
        k = tl.load(k_base + n[:, None] * skn + offs_d[None, :], mask=n_mask[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC)
        s = tl.where(n_mask[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + n[:, None] * svn + offs_d[None, :], mask=n_mask[:, None], other=0.0)
        pv = tl.dot(p.to(v.dtype), v, input_precision=PREC)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / l_i[:, None]
    o_off = b * sob + h * soh + offs_g[:, None] * sog + offs_d[None, :]
    tl.store(o_ptr + o_off, out.to(o_ptr.dtype.element_ty), mask=g_mask)


def triton_decode_attention(
    q: Tensor, k: Tensor, v: Tensor, pos: Tensor, block_n: int, warps: int, stages: int
) -> Tensor:
    """Decode attention over each row's keys ``0..pos[row]`` (read on the device, graph-safe).

    Args:
        q: ``(B, KV, G, D)`` folded queries.
        k: ``(B, KV, L, D)`` key cache (``L > pos``).
        v: ``(B, KV, L, D)`` value cache.
        pos: ``(B,)`` each row's current position (its key/value already written).
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
