"""The GPU engine (pipeline/caption/engines) on a CPU-only machine, and its benchmark harness.

Each test runs a fresh interpreter from the repository root: what some of them check is which
modules a process imports, and the harness (benchmarks/, not an installed package) is imported
from the checkout. The token-for-token check of the engine is in
tests/benchmarks/test_caption_gpu.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT as ROOT


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in the repository root without CUDA devices; fail on a non-zero exit."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_engine_imports_and_chooses_attention_without_triton():
    code = """
        import sys

        sys.modules["triton"] = None  # `import triton` raises ImportError, as on a CPU-only install
        import pipeline.caption.engines

        assert "torch" not in sys.modules, "the package itself must stay light"
        from pipeline.caption.engines import autotune, fast_llava, layers, timing

        assert autotune.triton_decode_kernel() is None
        names = set(autotune.decode_attention_candidates(use_triton=True))
        assert names == {"fold-cudnn", "fold-efficient", "fold-math"}, names
        try:
            import pipeline.caption.engines.kernels
        except ImportError:
            pass
        else:
            raise AssertionError("the kernel module needs Triton")
    """
    _python("-c", textwrap.dedent(code))


def test_default_captioning_path_does_not_import_the_engine():
    code = """
        import sys

        import pipeline.caption.backends.openai
        import pipeline.caption.backends.transformers
        import pipeline.caption.registry
        import pipeline.runner.build
        import pipeline.runner.caption

        loaded = [m for m in sys.modules if m.startswith("pipeline.caption.engines")]
        assert not loaded, loaded
    """
    _python("-c", textwrap.dedent(code))


def test_harness_geometry_and_flops_of_the_8b_model():
    code = """
        from benchmarks.caption_gpu import build_config, flops_per_caption
        from pipeline.caption.engines.fast_llava import image_geometry

        cfg = build_config(tiny=False)  # a config only: no weights are built
        geo = image_geometry(cfg, 264, 250, 128)
        assert (geo.image_tokens, geo.n_tiles, geo.prefill_len) == (1176, 3, 1426), geo
        assert round(flops_per_caption(cfg, geo)["total"] / 1e12, 2) == 23.66  # docs/benchmarks.md
    """
    _python("-c", textwrap.dedent(code))


def test_harness_runs_the_tiny_benchmark_on_cpu(tmp_path):
    report_path = tmp_path / "caption_gpu.json"
    out = _python(
        "-m",
        "benchmarks.caption_gpu",
        "--tiny",
        "--device",
        "cpu",
        "--batch",
        "4,6",
        "--plain-batch",
        "4",
        "--backend-batch",
        "2",
        "--lengths",
        "template",
        "--requests",
        "10",
        "--runs",
        "1",
        "--new-tokens",
        "24",
        "--prompt-tokens",
        "20",
        "--chunk",
        "2",
        "--refill-rows",
        "1",
        "--skip-check",
        "--out",
        str(report_path),
    )
    report = json.loads(report_path.read_text())
    assert report["model"]["architecture"] == "tiny LLaVA-Next"
    assert report["geometry"]["prefill_len"] == 20 + report["geometry"]["image_tokens"]
    lengths = report["lengths"]
    assert lengths["mode"] == "template" and 17 <= lengths["min"] < lengths["max"] <= 24
    assert report["plain"]["batch"] == 4 and report["plain"]["captions_per_s"] > 0
    assert report["transformers_backend"]["batch"] == 2
    assert report["transformers_backend"]["rows"] == report["plain"]["rows"] == 4
    fast = {f["batch"]: f for f in report["fast"]}
    assert set(fast) == {4, 6}
    for f in fast.values():
        assert f["captions_per_s"] > 0 and f["cuda_graphs"] is False and f["compile"] is False
        assert f["requests"] == 10 and f["refilled_rows"] > 0
        # refilled slots never step longer than static batches over the same captions
        assert f["static_batch_decode_steps"] >= f["decode_steps"] > 0
        assert 0 < f["static_batch_live_fraction"] <= 1
        assert f["mean_new_tokens"] == lengths["mean_new_tokens"]
        # the first rows are the baselines' rows: in fp32 the engine reproduces them
        assert f["agreement_with_plain_bf16"]["rows_identical"] == 4
    assert fast[6]["chunk"] == 2 and fast[6]["decode_kv_buckets"]
    summary = report["summary"]
    assert summary["fast_batch"] in (4, 6) and summary["check_passed"] is None
    assert summary["ratio_fast_over_transformers_backend"] > 0
    assert set(report["backend_preprocess_ms_per_caption"]) == {
        "decode_8_threads",
        "tiles_one_thread",
        "tiles_8_threads",
    }
    assert summary["fast_backend_captions_per_s_est"] < summary["fast_captions_per_s"]
    # progress lines of the harness and of the engine (its logger) reach stdout
    assert "fast path: setup at batch 6" in out.stdout
    assert "warm-up prefill (2 rows)" in out.stdout
    assert "| fast path b6 |" in out.stdout and "| transformers b. b2 |" in out.stdout
