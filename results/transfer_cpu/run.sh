#!/usr/bin/env bash
# Issue 28's CPU demonstrations on real CIFAR-10 (the 2-core development VM, two torch threads):
#  1. a model trained on CIFAR-10 (the scaled-down fast recipe of results/airbench_methods_cpu, Muon, 4 epochs on
#     10,000 images) evaluated zero-shot on CIFAR-10's test split and on an image folder written from the same
#     10,000 test images as PNGs: the two evaluations must agree exactly;
#  2. the same recipe with two classes held out of training (cat, truck), 3 seeds: seen, unseen and harmonic top-1.
# Usage: bash results/transfer_cpu/run.sh [WORK_DIR]   (CIFAR-10 arrays in ~/.cache/cifar10, see ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=results/transfer_cpu
work="${1:-/tmp/bench-transfer-cpu}"
export OMP_NUM_THREADS=2 PYTHONPATH=.
RECIPE=(--preset fast --epochs 4 --batch-size 256 --lr-warmup-steps 39 --limit-train 10000
        --encoder-opt 'widths=[32,64,64]' --encoder-opt whiten=true --flip alternate --schedule linear
        --optimizer muon --lr 1 --weight-decay 0.005 --text-lr 2e-3 --text-weight-decay 0.05
        --data-dir "$HOME/.cache/cifar10" --device cpu --no-progress)

# 1. train once, evaluate on cifar10 and on the image folder of its test images
python -m bench run "${RECIPE[@]}" --seed 0 --eval-every 4 --out "$here/trained"
run_dir=$(ls -d "$here"/trained/runs/*/ | head -1)
python - "$work/cifar10_test_png" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.datasets import CIFAR10_CLASSES

root = Path(sys.argv[1])
for split, n in (("test", 10_000), ("train", 1_000)):  # the folder needs both splits; only test is evaluated
    data = np.load(Path.home() / ".cache/cifar10" / f"{split}.npz")
    for i, (image, label) in enumerate(zip(data["images"][:n], data["labels"][:n])):
        folder = root / split / CIFAR10_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
print(f"wrote {root}")
PY
python -m bench eval "$run_dir/last.pt" --dataset cifar10 --data-dir "$HOME/.cache/cifar10" --templates seed \
    --device cpu --format csv > "$here/eval_cifar10.csv"
BENCH_CACHE_DIR="$work/cache" python -m bench eval "$run_dir/last.pt" --dataset "imagefolder:$work/cifar10_test_png" \
    --templates seed --device cpu --format csv > "$here/eval_imagefolder.csv"

# 2. two classes never seen in training, three seeds
python -m bench run "${RECIPE[@]}" --seeds 0,1,2 --holdout-classes cat,truck --limit-test 2000 --eval-every 2 \
    --out "$here/holdout"
python -m bench results "$here/holdout" --columns run_id,seed,holdout_classes,unseen_classes,zeroshot_top1,seen_top1,unseen_top1,harmonic_top1,train_seconds \
    > "$here/holdout.md"
