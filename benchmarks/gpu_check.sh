#!/usr/bin/env bash
# The GPU paths in one short run, for a machine with a CUDA GPU: the paper profile's SFT optimisation in bf16 on
# smoke-sized data, the kit's rollout engine and its tests on CUDA, and the vLLM backend when vllm is installed.
# On a machine without a GPU it says so and exits 0. Usage: bash benchmarks/gpu_check.sh [MODEL]
#   MODEL: a local model folder to fine-tune (default: the embedded model; hub models cannot be downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: skipped: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine"
  exit 0
fi
"$PY" -c 'import torch; print("gpu_check: device", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())'
run=$(mktemp -d)/gpu-check
"$PY" -m steca_lib.expert_data --profile smoke --run-dir "$run" >/dev/null
# paper-profile optimisation (bf16, activation checkpointing, lr schedule) on 32 smoke trajectories, one epoch
"$PY" -m steca_lib.sft --profile paper --run-dir "$run" --model "${1:-embedded}" --set n_trajectories=32 \
  --set epochs=1 --set batch_size=8 --set per_device_batch_size=4 --set max_length=2048 --set bf16=true \
  --set tiny_hidden=256 | tail -n 20
"$PY" -m pytest -q -p no:cacheprovider tests/test_rollouts.py  # the rollout engine, on CUDA now
if "$PY" -c 'import vllm' 2>/dev/null; then
  "$PY" - "$run/01_sft/model" <<'PY'
import sys
from steca_lib.backends import open_backend
from steca_lib.generation import Sampling
backend = open_backend("vllm", sys.argv[1], "bfloat16")
print("gpu_check: vLLM answered:", backend.generate([[{"role": "user", "content": "Your task is to: look."}]],
                                                     Sampling(temperature=0.0, max_new_tokens=16)))
backend.close()
PY
else
  echo "gpu_check: vLLM not installed (pip install vllm on the GPU machine): its backend was not checked"
fi
echo "gpu_check: done ($run)"
