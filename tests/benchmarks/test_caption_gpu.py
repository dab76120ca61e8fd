"""The GPU benchmark's fast captioning path, checked token for token on CPU (tiny fp32 model).

The speed figures need an H100 (docs/benchmarks.md); correctness does not: the engine's split
prefill, static KV cache, GQA-folded decode attention and graph-free decode loop
(pipeline/caption/engines/fast_llava.py) must reproduce plain `model.generate` exactly on a tiny
LLaVA-Next. Run as a module from the repository root, so it imports this checkout's `pipeline`.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_fast_path_matches_generate_on_cpu():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.caption_gpu",
            "--check",
            "--device",
            "cpu",
            "--tiny",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "check PASSED" in out.stdout
