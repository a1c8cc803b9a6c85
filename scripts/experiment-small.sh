#!/usr/bin/env bash
# The small-model experiment (docs/results.md): MaskDCPT pre-training → fine-tuning against
# fine-tuning from scratch with the same budget, evaluated on held-out photos. About 45 min
# on 2 CPU cores. Needs target/release/trainer (see docs/trainer.md) and writes runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
trainer=target/release/trainer
if [ ! -d runs/photos/heldout ]; then
    venv="$HOME/.cache/maskdcpt/venv-photos"
    [ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet scikit-image==0.26.0; }
    "$venv/bin/python" scripts/prepare-photos.py runs/photos
fi
pre_steps=$(sed -n 's/^steps = //p' trainer/configs/small-pretrain.toml)
fine_steps=$(printf '%08d' "$(sed -n 's/^steps = //p' trainer/configs/small-finetune.toml)")

"$trainer" pretrain --config trainer/configs/small-pretrain.toml --resume --quiet
"$trainer" finetune --config trainer/configs/small-finetune.toml --resume --quiet \
    --init "runs/small-pretrain/ckpt-$(printf '%08d' "$pre_steps").safetensors"
sed 's#runs/small-finetune#runs/small-scratch#' trainer/configs/small-finetune.toml > trainer/configs/.small-scratch.toml
"$trainer" finetune --config trainer/configs/.small-scratch.toml --resume --quiet
rm trainer/configs/.small-scratch.toml

# Held-out sets: the six acceptance degradations at their evaluation levels (whole images),
# and all 19 classes at random levels (128×128 centre crops, 4 per image and class).
[ -d runs/eval-six ] || "$trainer" degrade --in runs/photos/heldout --out runs/eval-six --seed 11 \
    --classes noise,motion_blur,jpeg,haze,rain_streak,low_light --level medium --at "jpeg=jpeg quality=20"
[ -d runs/eval-all ] || "$trainer" degrade --in runs/photos/heldout --out runs/eval-all --seed 12 --per-image 4 --crop 128
for run in small-finetune small-scratch; do
    "$trainer" eval --model "runs/$run/ckpt-$fine_steps.safetensors" --data runs/eval-six runs/eval-all \
        --json "runs/$run-eval.json" | tee "runs/$run-eval.txt"
done
