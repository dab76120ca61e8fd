"""GPU captioning benchmark: LLaVA-Next Llama-3-8B, plain ``generate`` against the fast engine.

The model is the full-size llava-hf/llama3-llava-next-8b-hf architecture (CLIP ViT-L/14-336 +
Llama-3-8B, 8.36 B parameters) built with random bf16 weights straight on the GPU from a
hand-written config: nothing is downloaded, and speed does not depend on the weight values.
A 264 px chip with anyres (336x672 grid) gives 1,176 image tokens; with 250 text prompt tokens
the prefill is 1,426 tokens.

Random weights never stop by themselves: EOS is masked (as ``min_new_tokens`` does in
``generate``) and each caption stops at a length given to it (``--lengths``):

* ``fixed``: every caption decodes exactly ``--new-tokens`` tokens, the decode at its longest;
* ``template``: each caption stops at its own length, drawn from the lengths the template
  captioner writes on the demo region (``benchmarks/results/template_caption_tokens.json``:
  228 captions, mean 36.6 tokens, CLIP BPE + EOS), a stand-in for where a trained model emits
  EOS. A static batch (plain ``generate``, the ``transformers`` backend) runs until its longest
  row ends; the fast engine gives a finished row's slot to the next caption.

One process measures, in this order:

1. the compute floor: a large bf16 matmul (TFLOP/s) and a device-to-device copy (GB/s);
2. a token-for-token correctness check of the fast engine against plain ``generate`` in fp32 on
   a tiny LLaVA-Next config (greedy), on the same device: prompts of different lengths, rows
   that end at different steps, more rows than slots (refilled slots);
3. plain ``model.generate`` (bf16, sdpa, one batch of ``--plain-batch`` rows);
4. the ``transformers`` backend's generation (``--backend-batch``): the same rows in ``generate``
   calls of its ``captioner.batch_size`` rows (its processor's CPU time is not included);
5. the fast engine at each requested slot count, over ``--requests`` captions.

The fast path is the engine :class:`pipeline.caption.engines.fast_llava.FastLlavaEngine`
(continuous batching over a static KV cache, split prefill, CUDA-graph decode, GQA-folded decode
attention, autotuned attention variants; its module says how). This file is only the harness:
the random-weight model and inputs, the baselines, the correctness check, the timing and the
JSON report. It needs the ``models`` extra; the Triton decode kernel needs the ``gpu`` extra.

Run ``python -m benchmarks.caption_gpu --out results.json`` from the repository root on the GPU
machine (torch and transformers are all it needs there, not the rest of eocap's dependencies);
``python -m benchmarks.caption_gpu --check --device cpu --tiny`` runs the check on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import importlib.metadata
import json
import logging
import platform
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.caption.engines.autotune import triton_decode_kernel
from pipeline.caption.engines.fast_llava import (
    FastLlavaEngine,
    Geometry,
    Request,
    eos_ids,
    fuse_projections,
    image_geometry,
)
from pipeline.caption.engines.timing import sync, time_ms

_T0 = time.time()
LOG = logging.getLogger("caption_gpu")

TEMPLATE_LENGTHS = Path(__file__).parent / "results" / "template_caption_tokens.json"
"""Tokens per caption of the template captioner on the demo region (``--lengths template``)."""


class _SinceStart(logging.Formatter):
    """``[   12.3s] message``: seconds since the benchmark started."""

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - _T0:7.1f}s] {record.getMessage()}"


def log_to_stdout() -> None:
    """Print the harness's and the engine's progress lines on stdout (once per process)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_SinceStart())
    for logger in (LOG, logging.getLogger("pipeline.caption.engines")):
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


# --------------------------------------------------------------------------------------------
# Model configuration and construction
# --------------------------------------------------------------------------------------------

PINPOINTS_8B = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


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
    fuse_projections(model)
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


@dataclass
class Inputs:
    """A batch of same-shape captioning inputs, as the processor lays them out.

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

    def requests(self, lengths: Sequence[int]) -> list[Request]:
        """The rows as fast-engine requests, row ``i`` generating ``lengths[i]`` tokens."""
        return [
            Request(self.input_ids[i], self.pixel_values[i], (int(h), int(w)), n)
            for i, ((h, w), n) in enumerate(zip(self.image_sizes.tolist(), lengths, strict=True))
        ]


def caption_lengths(mode: str, n: int, new_tokens: int, seed: int) -> list[int]:
    """Tokens each of ``n`` captions generates.

    Args:
        mode: ``fixed`` (all ``new_tokens``) or ``template`` (drawn from
            :data:`TEMPLATE_LENGTHS`, at most ``new_tokens``).
        n: Captions.
        new_tokens: The generation limit.
        seed: Seed of the draw.

    Returns:
        The lengths.
    """
    if mode == "fixed":
        return [new_tokens] * n
    pool = json.loads(TEMPLATE_LENGTHS.read_text())["lengths"]
    rng = random.Random(seed)
    return [min(new_tokens, rng.choice(pool)) for _ in range(n)]


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
# Ceilings
# --------------------------------------------------------------------------------------------


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
# Plain generate
# --------------------------------------------------------------------------------------------


def plain_generate(model: nn.Module, inp: Inputs, lengths: Sequence[int]) -> list[list[int]]:
    """Plain ``model.generate``: greedy, EOS masked, row ``i`` stopping after ``lengths[i]``.

    One static batch: it runs until its longest row ends (rows that ended are padded).

    Args:
        model: The LLaVA-Next model.
        inp: Inputs.
        lengths: Tokens each row generates.

    Returns:
        Each row's generated ids.
    """
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    eos = eos_ids(model.config)
    prompt_len = inp.input_ids.shape[1]
    target = torch.tensor(list(lengths), device=inp.input_ids.device)

    class StopAtLength(StoppingCriteria):
        """Row ``i`` is done once it has ``lengths[i]`` new tokens."""

        def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
            return (input_ids.shape[1] - prompt_len) >= target

    gen_cfg = GenerationConfig(
        max_new_tokens=max(lengths),
        do_sample=False,
        suppress_tokens=eos,
        eos_token_id=eos,
        pad_token_id=eos[0],
        bos_token_id=model.config.text_config.bos_token_id,
    )
    out = model.generate(
        **inp.kwargs(),
        generation_config=gen_cfg,
        stopping_criteria=StoppingCriteriaList([StopAtLength()]),
    )
    new = out[:, prompt_len:]
    return [new[i, :n].tolist() for i, n in enumerate(lengths)]


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
    device: torch.device,
    use_compile: bool,
    use_graphs: bool,
    rows: int = 6,
    slots: int = 4,
    new_tokens: int = 24,
) -> dict[str, Any]:
    """Token-for-token check of the fast engine against plain ``generate`` (tiny config, fp32).

    Row ``i`` has ``20 + 3i`` text tokens and generates ``new_tokens - 3i`` tokens (EOS masked),
    and there are more rows than slots: prompts of different lengths share a batch, rows end at
    different steps and their slots are refilled. Prefill runs in chunks of 2 rows, decode over
    3 KV-length buckets, with ``torch.compile``, CUDA graphs and the Triton decode kernel as
    configured. Each row's reference is ``generate`` on that row alone.

    Args:
        device: Device to run on.
        use_compile: Use ``torch.compile`` in the fast engine.
        use_graphs: Use CUDA graphs in the fast engine.
        rows: Requests.
        slots: Engine slots (fewer than ``rows``).
        new_tokens: New tokens of the first row.

    Returns:
        The check's report; ``passed`` is True when every token agrees.
    """
    t0 = time.perf_counter()
    with exact_fp32():
        cfg = build_config(tiny=True)
        model = build_model(cfg, device, torch.float32, std=0.15)
        requests: list[Request] = []
        ref: list[list[int]] = []
        for i in range(rows):
            geo = image_geometry(cfg, 44, 20 + 3 * i, new_tokens - 3 * i)
            inp = make_inputs(cfg, geo, 1, device, torch.float32, seed=11 + i)
            ref += plain_generate(model, inp, [geo.new_tokens])
            requests += inp.requests([geo.new_tokens])
        use_triton = device.type == "cuda" and triton_decode_kernel() is not None
        engine = FastLlavaEngine(
            model,
            slots=slots,
            chunk=2,
            refill_rows=1,
            kv_buckets=3,
            suppress_ids=eos_ids(cfg),
            use_compile=use_compile,
            use_graphs=use_graphs,
            decode_attention="triton-64-4-3" if use_triton else None,
        )
        engine.setup(requests)
        got, stats = engine.generate(requests)
        again, _ = engine.generate(requests)  # a second run must reset all state
    tokens = [g.tokens for g in got]
    same = [a == b for a, b in zip(tokens, ref, strict=True)]
    report = {
        "config": "tiny LLaVA-Next (2 Llama layers, GQA 8q/2kv, head dim 16, 3 CLIP layers), "
        "fp32, greedy",
        "device": str(device),
        "rows": rows,
        "slots": slots,
        "prompt_lens": [r.prompt_len for r in requests],
        "new_tokens": [r.max_new_tokens for r in requests],
        "refilled_rows": stats.refilled_rows,
        "decode_buckets": engine.bucket_lens,
        "compile": use_compile,
        "cuda_graphs": engine.use_graphs,
        "rows_identical": sum(same),
        "tokens_identical": sum(
            a == b for t, r in zip(tokens, ref, strict=True) for a, b in zip(t, r, strict=False)
        ),
        "tokens_total": sum(len(r) for r in ref),
        "second_run_identical": [g.tokens for g in again] == tokens,
        "distinct_tokens_in_reference": len({t for r in ref for t in r}),
        "attention": engine.attn_report,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    report["passed"] = all(same) and report["second_run_identical"]
    if not report["passed"]:
        bad = same.index(False) if not all(same) else 0
        report["first_bad_row"] = {"ref": ref[bad], "fast": tokens[bad]}
    engine.free()
    del model, engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    verdict = "PASSED" if report["passed"] else "FAILED"
    LOG.info(
        f"check {verdict}: {report['tokens_identical']}/{report['tokens_total']} tokens, "
        f"{report['rows_identical']}/{rows} rows identical ({stats.refilled_rows} refilled "
        f"slots), {report['distinct_tokens_in_reference']} distinct tokens"
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
        "triton": importlib.metadata.version("triton") if triton_decode_kernel() else None,
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
    model: nn.Module,
    inp: Inputs,
    lengths: Sequence[int],
    batch: int,
    runs: int,
    device: torch.device,
) -> tuple[dict[str, Any], list[list[int]]]:
    """Time plain ``generate`` over ``inp``'s rows, ``batch`` rows per call.

    One warm-up call, then ``runs`` timed passes over all rows, then a prefill-only forward of
    one call's rows (``generate`` does not report its prefill).

    Args:
        model: The model.
        inp: Inputs (all rows are captioned).
        lengths: Tokens each row generates.
        batch: Rows per ``generate`` call.
        runs: Timed passes.
        device: The device.

    Returns:
        The report and the last pass's tokens.
    """
    n = inp.input_ids.shape[0]
    batch = min(batch, n)
    LOG.info(f"plain generate: warm-up at batch {batch}")
    plain_generate(model, inp.rows(0, batch), lengths[:batch])
    reset_peak(device)
    times = []
    out: list[list[int]] = []
    for r in range(runs):
        sync(device)
        t0 = time.perf_counter()
        out = []
        for start in range(0, n, batch):
            out += plain_generate(
                model, inp.rows(start, start + batch), lengths[start : start + batch]
            )
        sync(device)
        times.append(time.perf_counter() - t0)
        LOG.info(
            f"plain generate b{batch} run {r + 1}: {times[-1]:.2f} s = {n / times[-1]:.2f} "
            "captions/s"
        )
    sync(device)
    t0 = time.perf_counter()
    model(**inp.rows(0, batch).kwargs(), use_cache=True, logits_to_keep=1)
    sync(device)
    prefill_ms = (time.perf_counter() - t0) * 1e3 / batch
    best = min(times)
    decode_ms = best * 1e3 / n - prefill_ms
    new_tokens = sum(lengths)
    rep = {
        "batch": batch,
        "rows": n,
        "runs_s": [round(t, 3) for t in times],
        "captions_per_s": n / best,
        "captions_per_s_runs": [n / t for t in times],
        "mean_new_tokens": new_tokens / n,
        "prefill_ms_per_caption": prefill_ms,
        "decode_ms_per_caption_est": decode_ms,
        "prefill_tokens_per_s": inp.input_ids.shape[1] / (prefill_ms * 1e-3),
        "decode_tokens_per_s_est": (new_tokens - n) / max(1e-9, decode_ms * 1e-3 * n),
        "peak_memory_gib": peak_gib(device),
    }
    free_memory(device)
    return rep, out


def static_decode_steps(lengths: Sequence[int], batch: int) -> int:
    """Decode steps of static batches of ``batch`` rows, in order, over captions of ``lengths``.

    A static batch (plain ``generate``, the ``transformers`` backend) steps until its longest
    row ends; the first token of every row comes from the prefill, as in the fast engine.
    """
    return sum(max(lengths[i : i + batch]) - 1 for i in range(0, len(lengths), batch))


def bench_fast(
    model: nn.Module,
    requests: Sequence[Request],
    slots: int,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[dict[str, Any], list[list[int]]]:
    """Set up the fast engine with ``slots`` slots and time ``args.runs`` passes over requests.

    Args:
        model: The model.
        requests: The captions of one pass.
        slots: Rows decoded at once.
        args: CLI arguments (chunk, refill rows, buckets, compile, graphs, runs).
        device: The device.

    Returns:
        The report and the last pass's tokens.
    """
    n = len(requests)
    reset_peak(device)
    engine = FastLlavaEngine(
        model,
        slots=slots,
        chunk=args.chunk,
        refill_rows=args.refill_rows,
        kv_buckets=args.decode_buckets,
        suppress_ids=eos_ids(model.config),
        use_compile=not args.no_compile,
        use_graphs=not args.no_graphs,
    )
    LOG.info(f"fast path: setup at batch {slots} (chunk {engine.chunk})")
    engine.setup(requests)
    LOG.info(
        f"fast path: setup took {engine.setup_s:.1f} s (KV buckets {engine.bucket_lens}, "
        f"capacity {engine.capacity})"
    )
    prompt_len = max(r.prompt_len for r in requests)
    prof = engine.profile(prompt_len) if device.type == "cuda" else {}
    if prof:
        LOG.info(f"layer profile (ms): { {k: round(v, 3) for k, v in prof.items()} }")
    chunk = list(requests[: engine.chunk])
    vision = functools.partial(engine.image_features, chunk)
    vision_ms = time_ms(vision, device, iters=3, warmup=1) / len(chunk)
    passes = []
    out: list[list[int]] = []
    for r in range(args.runs):
        sync(device)
        t0 = time.perf_counter()
        generations, stats = engine.generate(requests)
        wall = time.perf_counter() - t0
        passes.append((wall, stats))
        out = [g.tokens for g in generations]
        LOG.info(
            f"fast run {r + 1}: {wall:.2f} s = {n / wall:.2f} captions/s (prefill "
            f"{stats.prefill_s * 1e3 / n:.2f} ms/caption, decode {stats.decode_s * 1e3 / n:.2f} "
            f"ms/caption, {stats.decode_steps} steps, "
            f"{stats.live_row_steps / max(1, stats.decode_steps * slots):.1%} of slots live)"
        )
    wall, best = min(passes, key=lambda p: p[0])
    static_steps = static_decode_steps([r.max_new_tokens for r in requests], slots)
    live_steps = sum(r.max_new_tokens - 1 for r in requests)
    LOG.info(
        f"static batches of {slots} would take {static_steps} decode steps "
        f"({live_steps / max(1, static_steps * slots):.1%} of slots live); refilled slots took "
        f"{best.decode_steps} ({best.decode_steps / max(1, static_steps):.2f}x)"
    )
    rep = {
        "batch": slots,
        "requests": n,
        "chunk": engine.chunk,
        "refill_rows": engine.refill_rows,
        "decode_kv_buckets": engine.bucket_lens,
        "capacity": engine.capacity,
        "compile": engine.pre_prefill.compiled is not None,
        "compile_error": engine.pre_prefill.error or engine.post_decode.error or None,
        "cuda_graphs": engine.use_graphs,
        "graph_error": engine.graph_error or None,
        "attention": engine.attn_report,
        "setup_s": engine.setup_s,
        "runs_s": [round(w, 3) for w, _ in passes],
        "captions_per_s": n / wall,
        "captions_per_s_runs": [n / w for w, _ in passes],
        "ms_per_caption": wall * 1e3 / n,
        "mean_new_tokens": best.new_tokens / n,
        "prefill_ms_per_caption": best.prefill_s * 1e3 / n,
        "prefill_vision_ms_per_caption": vision_ms,
        "decode_ms_per_caption": best.decode_s * 1e3 / n,
        "host_ms_per_caption": (wall - best.prefill_s - best.decode_s) * 1e3 / n,
        "decode_steps": best.decode_steps,
        "decode_ms_per_step": best.decode_s * 1e3 / max(1, best.decode_steps),
        "decode_steps_per_kv_length": dict(sorted(best.kv_lengths.items())),
        "live_slots_per_step": best.live_row_steps / max(1, best.decode_steps),
        "static_batch_decode_steps": static_steps,
        "static_batch_live_fraction": live_steps / max(1, static_steps * slots),
        "decode_steps_over_static": best.decode_steps / max(1, static_steps),
        "refilled_rows": best.refilled_rows,
        "prefill_tokens_per_s": best.prompt_tokens / max(1e-9, best.prefill_s),
        "decode_tokens_per_s": (best.new_tokens - n) / max(1e-9, best.decode_s),
        "peak_memory_gib": peak_gib(device),
        "layer_profile_ms": prof,
    }
    if prof:
        n_layers = len(engine.layers)
        c = engine.chunk
        pre_post = prof["prefill_chunk_pre_ms"] + prof["prefill_chunk_post_ms"]
        dec_attn = engine.attn_report["decode"]["ms_per_layer_full_cache"]
        dec_attn_ms = dec_attn[engine.attn_report["decode"]["chosen"]]
        steps_per_caption = best.decode_steps / n
        rep["time_split_ms_per_caption"] = {
            "prefill_gemms": prof["prefill_chunk_gemm_total_ms"] * n_layers / c,
            "prefill_attention": prof["prefill_chunk_attention_ms"] * n_layers / c,
            "prefill_norm_rope_act_residual": (pre_post - prof["prefill_chunk_gemm_total_ms"])
            * n_layers
            / c,
            "prefill_vision_and_embed": vision_ms,
            "decode_gemms_incl_lm_head": (
                prof["decode_step_gemm_total_ms"] * n_layers + prof["decode_step_lm_head_ms"]
            )
            * steps_per_caption,
            "decode_attention_at_full_cache": dec_attn_ms * n_layers * steps_per_caption,
            "note": "parts timed alone on the real shapes; the runs' totals are measured",
        }
    engine.free()
    del engine
    free_memory(device)
    return rep, out


def preprocess_ms(image_px: int, chips: int, threads: int) -> dict[str, float]:
    """CPU milliseconds per caption to turn a PNG chip into the 8B model's anyres tiles.

    The fast backend decodes a round's chips before the engine starts (``decode``), then makes
    their tiles in ``threads`` threads while the engine runs (``tiles``): only the decode adds
    to the GPU's time per caption, and the tiles bound the rate if they are the slower.

    Args:
        image_px: Side of the square chip.
        chips: Chips timed.
        threads: The backend's preprocessing threads.

    Returns:
        Milliseconds per chip: ``decode_<threads>_threads``, and ``tiles_one_thread`` and
        ``tiles_<threads>_threads``.
    """
    import io
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image
    from transformers import LlavaNextImageProcessor

    processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=PINPOINTS_8B,
    )
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(chips):
        buf = io.BytesIO()
        pixels = rng.integers(0, 255, (image_px, image_px, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
        pngs.append(buf.getvalue())

    def decode(png: bytes) -> Image.Image:
        return Image.open(io.BytesIO(png)).convert("RGB")

    def tiles(image: Image.Image) -> Any:
        return processor(images=[image], do_pad=True, return_tensors="pt")

    def per_chip(fn: Any, items: Sequence[Any], workers: int) -> float:
        with ThreadPoolExecutor(workers) as pool:
            t0 = time.perf_counter()
            list(pool.map(fn, items))
            return (time.perf_counter() - t0) * 1e3 / len(items)

    images = [decode(png) for png in pngs]
    tiles(images[0])
    return {
        f"decode_{threads}_threads": per_chip(decode, pngs, threads),
        "tiles_one_thread": per_chip(tiles, images, 1),
        f"tiles_{threads}_threads": per_chip(tiles, images, threads),
    }


def agreement(fast: Sequence[Sequence[int]], plain: Sequence[Sequence[int]]) -> dict[str, Any]:
    """How many of the plain baseline's tokens the fast engine reproduced (bf16: informational)."""
    pairs = list(zip(fast, plain, strict=False))
    same = [a == b for f, p in pairs for a, b in zip(f, p, strict=False)]
    return {
        "rows": len(pairs),
        "first_token": sum(f[:1] == p[:1] for f, p in pairs) / max(1, len(pairs)),
        "tokens": sum(same) / max(1, len(same)),
        "rows_identical": sum(list(f) == list(p) for f, p in pairs),
        "note": "informational: random bf16 weights make the top logits near-ties",
    }


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
    LOG.info(f"env: {report['env']}")

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))

    report["ceilings_start"] = measure_ceilings(device)
    LOG.info(f"ceilings: {report['ceilings_start']}")
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
    LOG.info(
        f"geometry: {geo.image_tokens} image tokens ({geo.n_tiles} tiles) + "
        f"{geo.prompt_tokens} text = prefill {geo.prefill_len}, {geo.new_tokens} new tokens"
    )
    t0 = time.perf_counter()
    model = build_model(cfg, device, dtype, std=0.02)
    sync(device)
    LOG.info(f"model built in {time.perf_counter() - t0:.1f} s")
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
    tflops = report["ceilings_start"]["matmul_tflops"]
    requests = args.requests or max(batches) * (4 if args.lengths == "template" else 1)
    rows = max(requests, args.plain_batch)
    all_inp = make_inputs(cfg, geo, rows, device, dtype, args.seed)
    lengths = caption_lengths(args.lengths, rows, geo.new_tokens, args.seed)
    mean_new_tokens = sum(lengths[:requests]) / requests
    report["lengths"] = {
        "mode": args.lengths,
        "mean_new_tokens": mean_new_tokens,
        "min": min(lengths),
        "max": max(lengths),
    }
    # The floor of a caption of the mean length.
    floor_geo = dataclasses.replace(geo, new_tokens=round(mean_new_tokens))
    flops = flops_per_caption(cfg, floor_geo)
    report["flops_per_caption"] = flops

    plain_out = None
    baselines = [("plain", args.plain_batch), ("transformers_backend", args.backend_batch)]
    for name, batch in baselines:
        if args.plain_batch <= 0 or batch <= 0:
            continue
        try:
            report[name], out = bench_plain(
                model,
                all_inp.rows(0, args.plain_batch),
                lengths[: args.plain_batch],
                batch,
                args.runs,
                device,
            )
            plain_out = plain_out or out
        except torch.OutOfMemoryError as exc:
            report[name] = {"batch": batch, "error": f"OOM: {exc}"}
            free_memory(device)
        save()

    report["backend_preprocess_ms_per_caption"] = preprocess_ms(
        args.image_px, 64, args.preprocess_threads
    )
    LOG.info(f"backend preprocessing: {report['backend_preprocess_ms_per_caption']} ms/caption")
    report["fast"] = []
    for b in batches:
        try:
            rep, fast_out = bench_fast(
                model, all_inp.rows(0, requests).requests(lengths[:requests]), b, args, device
            )
        except torch.OutOfMemoryError as exc:
            report["fast"].append({"batch": b, "error": f"OOM: {str(exc)[:300]}"})
            LOG.info(f"fast path at batch {b}: out of memory")
            free_memory(device)
            continue
        if plain_out is not None:
            rep["agreement_with_plain_bf16"] = agreement(fast_out, plain_out)
        report["fast"].append(rep)
        save()

    report["ceilings_end"] = measure_ceilings(device)
    LOG.info(f"ceilings at the end: {report['ceilings_end']}")
    summarize(report, flops, tflops, floor_geo, cfg, dtype)
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
        geo: Geometry (new tokens: the mean caption length).
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
    backend_cps = report.get("transformers_backend", {}).get("captions_per_s")
    # The fast backend decodes a round's chips before the engine starts, tiles them while it runs.
    preprocess = report.get("backend_preprocess_ms_per_caption", {})
    decode_ms = min((v for k, v in preprocess.items() if k.startswith("decode")), default=0.0)
    tiles_ms = min((v for k, v in preprocess.items() if k.startswith("tiles")), default=0.0)
    report["summary"] = {
        "plain_captions_per_s": plain_cps,
        "plain_batch": plain.get("batch"),
        "fast_captions_per_s": best["captions_per_s"] if best else None,
        "fast_batch": best["batch"] if best else None,
        "ratio_fast_over_plain": best.get("ratio_vs_plain") if best else None,
        "transformers_backend_captions_per_s": backend_cps,
        "ratio_fast_over_transformers_backend": best["captions_per_s"] / backend_cps
        if best and backend_cps
        else None,
        "mean_new_tokens": report["lengths"]["mean_new_tokens"],
        # the decode (and the prompt's tokenising, not timed) adds to each caption's time; the
        # tiles overlap the engine and bound the rate when they are the slower
        "fast_backend_captions_per_s_est": min(
            1 / (1 / best["captions_per_s"] + decode_ms / 1e3),
            1e3 / tiles_ms if tiles_ms else float("inf"),
        )
        if best
        else None,
        "floor_captions_per_s": floor_cps,
        "fast_fraction_of_floor": best["fraction_of_floor"] if best else None,
        "plain_fraction_of_floor": plain_cps / floor_cps if plain_cps else None,
        "check_passed": report.get("check", {}).get("passed"),
    }
    rows = []
    for name, label in (("plain", "plain generate"), ("transformers_backend", "transformers b.")):
        base = report.get(name, {})
        if "captions_per_s" not in base:
            continue
        base["fraction_of_floor"] = base["captions_per_s"] / floor_cps
        rows.append(
            (
                f"{label} b{base['batch']}",
                base["captions_per_s"],
                base["captions_per_s"] / plain_cps if plain_cps else float("nan"),
                base["prefill_tokens_per_s"],
                base["decode_tokens_per_s_est"],
                base["fraction_of_floor"],
                base["prefill_ms_per_caption"],
                base["decode_ms_per_caption_est"],
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
    p.add_argument("--batch", default="256", help="fast-path slot count(s), comma-separated")
    p.add_argument("--plain-batch", type=int, default=64, help="plain generate batch (0: skip)")
    p.add_argument(
        "--backend-batch",
        type=int,
        default=0,
        help="the transformers backend's batch_size: its generate calls over the plain batch's "
        "rows (0: skip)",
    )
    p.add_argument(
        "--lengths",
        choices=["fixed", "template"],
        default="fixed",
        help="fixed: every caption --new-tokens tokens; template: per-caption lengths of the "
        "template captioner on the demo region",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=0,
        help="captions per fast-path run (default: the largest batch; 4x that with "
        "--lengths template, so that slots are refilled)",
    )
    p.add_argument("--new-tokens", type=int, default=128, help="new tokens per caption (limit)")
    p.add_argument("--prompt-tokens", type=int, default=250, help="text prompt tokens")
    p.add_argument("--image-px", type=int, default=264, help="square chip side in pixels")
    p.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="expected image tokens (computed from anyres: 1176 for 264 px); checked",
    )
    p.add_argument("--chunk", type=int, default=32, help="rows per prefill chunk")
    p.add_argument(
        "--preprocess-threads",
        type=int,
        default=8,
        help="threads of the preprocessing measure (the fast backend's PREPROCESS_THREADS)",
    )
    p.add_argument(
        "--refill-rows", type=int, default=16, help="refill slots once this many are free"
    )
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
    log_to_stdout()
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
