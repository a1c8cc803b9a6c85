#!/usr/bin/env bash
# The trainer's checks (called by scripts/test.sh, which exports LIBTORCH first): the tiny
# end-to-end run through the command line — degrade, pretrain (interrupted and resumed),
# finetune from it, export, eval, and `maskdcpt restore` on the export; `show-config`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LIBTORCH:?run through scripts/test.sh or export LIBTORCH=\$(scripts/setup-libtorch.sh)}"
trainer=target/release/trainer
maskdcpt=target/release/maskdcpt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed -e "s#../../tests/trainer-data/clean#$PWD/tests/trainer-data/clean#" -e "s#../../runs/#$work/#" \
    trainer/configs/tiny-cpu.toml > "$work/pre.toml"
sed -e "s#../../tests/trainer-data/clean#$PWD/tests/trainer-data/clean#" -e "s#../../runs/#$work/#" \
    trainer/configs/tiny-cpu-finetune.toml > "$work/fine.toml"

"$trainer" pretrain --config "$work/pre.toml" --max-steps 30 --quiet
"$trainer" pretrain --config "$work/pre.toml" --resume --quiet
"$trainer" finetune --config "$work/fine.toml" --init "$work/tiny-pretrain/ckpt-00000060.safetensors" --quiet
"$trainer" degrade --in tests/trainer-data/clean --out "$work/eval" --classes noise,jpeg,haze --crop 64 --seed 5
"$trainer" eval --model "$work/tiny-finetune/ckpt-00000060.safetensors" --data "$work/eval" --json "$work/eval.json"
"$trainer" export --checkpoint "$work/tiny-finetune/ckpt-00000060.safetensors" --format pth -o "$work/model.pth"
"$maskdcpt" restore -m "$work/model.pth" -i tests/trainer-data/clean/coffee.png -o "$work/coffee.png"
test -s "$work/coffee.png"
# A config read through its `extends` chain: the child's values over the base's.
"$trainer" show-config trainer/configs/default-model-photos-128.toml > "$work/shown.toml"
grep -qx "crop = 128" "$work/shown.toml" && grep -qx "seed = 11" "$work/shown.toml"
grep -q "^clean = .*runs/photos/packages" "$work/shown.toml"
# A bad input is a one-line error and a failure status, never a panic.
if "$trainer" pretrain --config "$work/missing.toml" 2> "$work/err.txt"; then
    echo "a missing config must fail" >&2; exit 1
fi
grep -q "cannot read config" "$work/err.txt"
echo "trainer command-line checks passed"
