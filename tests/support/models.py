"""A tiny float64 CLIP with its prompt tables and batches, and a few training steps on them: the exactness tests
compare the engine's fast paths against plain computations at this size."""
import torch

from bench.clip.model import create_model
from bench.clip.templates import SEED_TEMPLATES, fill
from bench.clip.tokenizer import tokenize, trim_tokens
from bench.data.datasets import CIFAR10_CLASSES
from bench.engine.train_step import clip_step

CPU = torch.device("cpu")


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    model = create_model(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                         encoder_opts={"width": 8})
    return model.double()


def prompt_tables(templates=SEED_TEMPLATES):
    full = tokenize(fill(templates, CIFAR10_CLASSES))  # (P, 77): the plain form
    return full, trim_tokens(full)


def batch(n=12, n_prompts=50, n_templates=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, n_prompts, (n,), generator=g)
    ids[1] = ids[0]  # at least one repeated caption, whose gradients must add up
    return torch.randn(n, 3, 32, 32, generator=g, ), ids // n_templates, ids


def run_steps(state, n, step_fn=clip_step):
    losses = []
    for i in range(n):
        images, labels, ids = batch(seed=10 + i)
        losses.append(float(step_fn(state, images, labels, ids)))
    return losses
