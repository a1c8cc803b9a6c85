#!/usr/bin/env bash
# Trainer throughput on the GPU test host (H100/H200, torch 2.11.0+cu130 installed, no Rust):
# `trainer bench` (built on a CPU host with `scripts/gpu-check-trainer.sh --build`, carried as
# target/gpu/trainer) next to the same step in PyTorch, in one run. Prints JSON lines and a
# ratio; record the result in docs/perf.md.
#   CPU host:  scripts/gpu-check-trainer.sh --build
#   GPU host:  scripts/gpu-check-trainer.sh            (carry target/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--build" ]; then
    LIBTORCH=$(scripts/setup-libtorch.sh)
    export LIBTORCH
    cargo build --release -p maskdcpt-trainer --no-default-features --features cuda
    mkdir -p target/gpu
    strip -o target/gpu/trainer target/release/trainer
    ls -la target/gpu/trainer
    exit 0
fi
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
steps=${STEPS:-200}
ours=$(target/gpu/trainer bench --config trainer/configs/gpu-bench.toml --phase finetune --steps "$steps" --warmup 20)
echo "$ours"
theirs=$(python3 scripts/bench_train_torch.py --steps "$steps" --warmup 20 --amp fp16)
echo "$theirs"
target/gpu/trainer bench --config trainer/configs/gpu-bench.toml --phase pretrain --steps 50 --warmup 10 || true
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"trainer {ours['ms_per_step']:.1f} ms/step, pytorch {theirs['ms_per_step']:.1f} ms/step, "
      f"throughput ratio {theirs['ms_per_step'] / ours['ms_per_step']:.3f} (target >= 0.9)")
PY
