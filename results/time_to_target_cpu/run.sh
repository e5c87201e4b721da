#!/usr/bin/env bash
# Issue 27's CPU demonstration on real CIFAR-10 (the 2-core development VM, two torch threads): does the compact
# token embedding (a speed-up that trains only the token rows the prompts use) leave accuracy alone, and does it
# reach a target sooner? Two configurations of the scaled-down fast recipe of results/airbench_methods_cpu (Muon,
# 4 epochs on 10,000 images, evaluated every epoch on 2,000 test images), 5 seeds each, target 60% zero-shot
# top-1; then bench compare (Welch, paired, TOST equivalence within ±1 point, time to target with the log-rank
# test) and bench report (the time-to-accuracy figure).
# Usage: bash results/time_to_target_cpu/run.sh      (CIFAR-10 arrays in ~/.cache/cifar10, see ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/time_to_target_cpu
export OMP_NUM_THREADS=2 PYTHONPATH=.
RECIPE=(--preset fast --epochs 4 --batch-size 256 --lr-warmup-steps 39 --limit-train 10000 --limit-test 2000
        --encoder-opt 'widths=[32,64,64]' --encoder-opt whiten=true --flip alternate --schedule linear
        --optimizer muon --lr 1 --weight-decay 0.005 --text-lr 2e-3 --text-weight-decay 0.05
        --data-dir "$HOME/.cache/cifar10" --device cpu --no-progress --no-checkpoints --target zeroshot_top1=0.6)
# the configurations alternate seed by seed, so drift in the machine's load falls on both alike
for seed in 0 1 2 3 4; do
  python -m bench run "${RECIPE[@]}" --seed "$seed" --out "$here/compact"
  python -m bench run "${RECIPE[@]}" --seed "$seed" --no-compact-embedding --out "$here/dense"
done
python -m bench compare "$here/dense" "$here/compact" --equivalence zeroshot_top1:0.01 > "$here/compare.md"
python -m bench report "$here/dense" "$here/compact" --out "$here/report" --correct holm \
    --title "Compact token embedding against the dense one: scaled-down fast recipe on CPU"
