"""The GPU benchmark's fast captioning path, checked token for token on CPU (tiny fp32 model).

The speed figures need an H100 (docs/benchmarks.md); correctness does not: the split prefill,
static KV cache, GQA-folded decode attention and the graph-free decode loop must reproduce
plain `model.generate` exactly on a tiny LLaVA-Next.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fast_path_matches_generate_on_cpu():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "caption_gpu.py"),
            "--check",
            "--device",
            "cpu",
            "--tiny",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "check PASSED" in out.stdout
