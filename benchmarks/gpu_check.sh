#!/usr/bin/env bash
# The CUDA checks and GPU figures, in one pass, on a machine with a CUDA GPU (CI has none, so
# these paths are checked here; a run's output belongs in docs/how-to/scale-and-speed.md):
#   1. the GPU's facts (torch, CUDA, NCCL, bf16);
#   2. the CUDA tests (tests/unit/test_cuda.py: fp32/bf16/fp16 fine-tunes served in float32,
#      GPU and CPU predictions alike, a killed GPU run resumed, DDP + SyncBatchNorm over NCCL,
#      torchrun refusing more processes than GPUs) and the gloo torchrun tests beside them;
#   3. the CLI end to end on the GPU: the demo (probe, evaluate with its analysis), a fine-tune
#      (auto precision), export (verified), predict, recommend;
#   4. benchmarks/precision.py (fp32, bf16, fp16) and benchmarks/train_throughput.py.
#
#     PYTHON=.venv/bin/python benchmarks/gpu_check.sh [DATA] [OUT]
#
# DATA: a class-per-folder dataset with train/ and val/ (default ../shared/datasets/hymenoptera);
# OUT: where the run folders and logs go (default a new temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${1:-../shared/datasets/hymenoptera}
OUT=${2:-$(mktemp -d)}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'NCCL', '.'.join(map(str, torch.cuda.nccl.version())), 'bf16', torch.cuda.is_bf16_supported(), \
torch.cuda.get_device_name())" || exit 1

step "CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py tests/unit/test_ddp.py

step "CLI on the GPU: the demo's probe and evaluate, a fine-tune, export, predict, recommend"
hs() { "$PY" -m headstart --no-progress "$@"; }
hs train "$DATA" --strategy probe --out "$OUT/probe" --overwrite | tail -n 4
hs evaluate "$OUT/probe" "$DATA" | head -n 12
hs train "$DATA" --strategy finetune --epochs 3 --out "$OUT/ft" --overwrite | tail -n 8
hs evaluate "$OUT/ft" --no-analysis | head -n 6
hs export "$OUT/ft" | tail -n 3
hs predict "$OUT/ft/model.onnx" "$(find "$DATA/val" -name '*.jpg' | sort | head -n 1)"
hs recommend "$DATA" --out "$OUT/rec" | tail -n 8

step "benchmarks/precision.py"
"$PY" benchmarks/precision.py --data "$DATA"

step "benchmarks/train_throughput.py"
"$PY" benchmarks/train_throughput.py --data "$DATA" --rounds 1
step "done"
