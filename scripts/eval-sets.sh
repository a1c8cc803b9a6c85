#!/usr/bin/env bash
# The held-out sets of issue 7 (docs/model-card.md), synthesised by `trainer degrade` from the
# held-out photographs; a set whose folder exists is left as it is.
#   scripts/eval-sets.sh TRAINER HELDOUT OUT [SET...]
# SET: eval-six (the six acceptance degradations at their evaluation levels, whole images),
# eval-all (all 19 classes at random levels, 128×128 centre crops, 4 per image and class),
# eval-all-whole (the same draws on the whole images), eval-medium (all 19 at their medium
# levels, 128×128 crops); all four when none is named.
set -euo pipefail
trainer=${1:?usage: scripts/eval-sets.sh TRAINER HELDOUT OUT [SET...]} heldout=${2:?} out=${3:?}
shift 3
[ $# -gt 0 ] || set -- eval-six eval-all eval-all-whole eval-medium
for set in "$@"; do
    case $set in
        eval-six) args=(--seed 11 --classes noise,motion_blur,jpeg,haze,rain_streak,low_light --level medium
                        --at "jpeg=jpeg quality=20") ;;
        eval-all) args=(--seed 12 --per-image 4 --crop 128) ;;
        eval-all-whole) args=(--seed 12 --per-image 4) ;;
        eval-medium) args=(--seed 11 --crop 128 --level medium --per-image 4) ;;
        *) echo "unknown held-out set '$set' (eval-six, eval-all, eval-all-whole, eval-medium)" >&2; exit 2 ;;
    esac
    [ -d "$out/$set" ] || "$trainer" degrade --in "$heldout" --out "$out/$set" "${args[@]}"
done
