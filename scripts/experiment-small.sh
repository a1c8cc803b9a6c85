#!/usr/bin/env bash
# The small-model experiment (docs/results.md): MaskDCPT pre-training → fine-tuning against
# fine-tuning from scratch with the same budget, evaluated on held-out photos. About 45 min
# on 2 CPU cores. Needs target/release/trainer (see docs/trainer.md) and writes runs/.
#
#   scripts/experiment-small.sh [REPLICATE]
#
# REPLICATE 0 (the default) is the recorded run; REPLICATE k > 0 repeats it with every seed
# (pre-training, both fine-tunings) increased by 1000·k, so no two runs of any replicates
# share a seed, into runs/small-*-rK.
set -euo pipefail
cd "$(dirname "$0")/.."
trainer=target/release/trainer
replicate=${1:-0}
[[ "$replicate" =~ ^[0-9]+$ ]] || { echo "REPLICATE must be a whole number, got '$replicate'" >&2; exit 2; }
replicate=$((10#$replicate))
suffix=$([ "$replicate" = 0 ] || echo "-r$replicate")
if [ ! -d runs/photos/heldout ]; then
    venv="$HOME/.cache/maskdcpt/venv-photos"
    [ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet scikit-image==0.26.0; }
    "$venv/bin/python" scripts/prepare-photos.py runs/photos
fi
pre_steps=$(printf '%08d' "$(sed -n 's/^steps = //p' trainer/configs/small-pretrain.toml)")
fine_steps=$(printf '%08d' "$(sed -n 's/^steps = //p' trainer/configs/small-finetune.toml)")

# One config per arm in a scratch folder: the run folder gets the suffix, the seed the offset.
configs=$(mktemp -d)
trap 'rm -rf "$configs"' EXIT
# The checkout's path as a sed replacement (its #, & and \ escaped).
root=$(printf '%s' "$PWD" | sed -e 's/[#&\\]/\\&/g')
arm() { # SOURCE RUN: writes $configs/RUN.toml (paths made absolute: the config moved)
    local seed
    seed=$(sed -n 's/^seed = //p' "trainer/configs/$1.toml")
    sed -e "s#\"\.\./\.\./runs/small-[a-z]*\"#\"$root/runs/$2$suffix\"#" \
        -e "s#\"\.\./\.\./runs/#\"$root/runs/#g" \
        -e "s#^seed = .*#seed = $((seed + 1000 * replicate))#" "trainer/configs/$1.toml" > "$configs/$2.toml"
}
arm small-pretrain small-pretrain
arm small-finetune small-finetune
arm small-finetune small-scratch

"$trainer" pretrain --config "$configs/small-pretrain.toml" --resume --quiet
"$trainer" finetune --config "$configs/small-finetune.toml" --resume --quiet \
    --init "runs/small-pretrain$suffix/ckpt-$pre_steps.safetensors"
"$trainer" finetune --config "$configs/small-scratch.toml" --resume --quiet

# Held-out sets: the six acceptance degradations at their evaluation levels (whole images),
# and all 19 classes at random levels (128×128 centre crops, 4 per image and class).
scripts/eval-sets.sh "$trainer" runs/photos/heldout runs eval-six eval-all
for run in small-finetune small-scratch; do
    "$trainer" eval --model "runs/$run$suffix/ckpt-$fine_steps.safetensors" --data runs/eval-six runs/eval-all \
        --json "runs/$run$suffix-eval.json" | tee "runs/$run$suffix-eval.txt"
done
