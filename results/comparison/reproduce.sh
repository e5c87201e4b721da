#!/bin/bash
# Rebuild everything in this folder from the CIFAR-10 copy at ~/.cache/cifar10 (train.npz/test.npz).
# Run from the repository root. One intra-op thread: on a shared 2-core box it was 4-5x faster than two.
set -euo pipefail
export OMP_NUM_THREADS=1
out=results/comparison
nice -n 10 python -m bench sweep --encoder modified_resnet,modified_resnet_cifar --templates seed --seeds 0,1,2 \
  --dataset cifar10 --limit-train 2500 --limit-test 1000 --epochs 1 \
  --evals retrieval,probe,robustness --robust-limit 250 --robust-severities 1,3,5 \
  --log-every 5 --no-progress --out "$out"
for run in "$out"/runs/*/; do
  id=$(basename "$run")
  python -m bench eval "$run/best.pt" --templates seed,openai --per-template --out "$out/template_ablation/$id" \
    --format csv > /dev/null
done
python -m bench report "$out" --out "$out/report" \
  --title "modified_resnet vs modified_resnet_cifar on CIFAR-10 (short CPU runs, 3 seeds)"
python -m bench compare "$out" --split-by encoder > "$out/compare.md"
