#!/usr/bin/env bash
# Issue 15's GPU work as one prepared device call: the fast backend with real stopping against
# plain generate and the transformers backend, then the fixed-length regression run.
#
# Run from the repository root on the GPU machine (its python3 holds torch and transformers):
#   bash benchmarks/gpu_issue15.sh            # writes to $OUT if set, else benchmarks/results
# CAPTION_GPU_EXTRA is appended to both runs (later flags win), e.g. for a CPU smoke test:
#   CAPTION_GPU_EXTRA="--tiny --device cpu --batch 4 --requests 16 --plain-batch 8 \
#     --backend-batch 2" PYTHON=.venv/bin/python OUT=/tmp/smoke bash benchmarks/gpu_issue15.sh
# Each run has its own timeout so that the whole fits one 10-minute device call; a run cut
# short still leaves the JSON of what it finished (the harness saves after every path).
set -u
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
extra=(${CAPTION_GPU_EXTRA:-})
python=${PYTHON:-python3}  # the GPU machine's python3 holds torch
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    > "$out/issue15_gpu.txt" 2>&1 || echo "no nvidia-smi" > "$out/issue15_gpu.txt"
# 1. The token-for-token check (tiny fp32 config, ragged prompts, EOS, refills), then the 8B
#    model with template caption lengths: 1,024 captions through 256 refilled slots.
timeout 360 "$python" -m benchmarks.caption_gpu --batch 256 --lengths template --requests 1024 \
    --plain-batch 64 --backend-batch 8 --runs 1 "${extra[@]}" \
    --out "$out/caption_gpu_issue15_stopping.json" 2>&1 | tee "$out/issue15_stopping.log"
# 2. Every caption 128 tokens, as issue 8 measured (20.7 captions/s): has the engine regressed?
timeout 180 "$python" -m benchmarks.caption_gpu --skip-check --batch 256 --runs 1 "${extra[@]}" \
    --out "$out/caption_gpu_issue15_fixed.json" 2>&1 | tee "$out/issue15_fixed.log"
