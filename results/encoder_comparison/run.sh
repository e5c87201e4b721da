#!/usr/bin/env bash
# The encoder comparison of results/encoder_comparison/README.md: the same budget for every encoder
# (reference recipe: AdamW 1e-4, wd 0.01, batch 32, cosine; 1 epoch on the first 10,000 CIFAR-10 training
# images; zero-shot on the first 2,000 test images with the 5 seed templates), seed 0, on CPU.
# One intra-op thread: on a CPU shared with other jobs, torch's default of one thread per core spins in
# OpenMP barriers and ran 50-100x slower in our measurements; one thread keeps every encoder's timing fair.
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
# Cheapest first, so the required set (both modified_resnets, three timm families) finishes earliest.
for encoder in timm/regnetx_002 modified_resnet timm/mobilenetv3_large_100 timm/convnext_atto \
               modified_resnet_cifar timm/vit_tiny_patch4_32 timm/efficientnet_b0 timm/resnet18; do
  nice -n 10 python -m bench run --encoder "$encoder" --dataset cifar10 --epochs 1 \
    --limit-train 10000 --limit-test 2000 --device cpu --seed 0 --no-checkpoints --no-progress \
    --log-every 50 --out results/encoder_comparison
done
