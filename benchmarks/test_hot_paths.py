"""Hot paths of training and evaluation, each timed on its own (see conftest.py for how to run). Each docstring
says what is timed and what it protects: the figure or choice a slower path would undo."""
import statistics

import pytest
import torch

from bench.clip.model import create_model
from bench.clip.prompts import prompt_table
from bench.clip.templates import SEED_TEMPLATES, fill
from bench.clip.tokenizer import create_tokenizer
from bench.config import make_config
from bench.data.datasets import CIFAR10_CLASSES, make_synthetic
from bench.data.loader import to_device_uint8
from bench.engine.build import build_engine
from bench.engine.train_step import encode_prompts
from bench.evaluation.zero_shot import build_zero_shot_classifier, zero_shot_metrics
from bench.perf.loader_speed import device_batches, device_loader, images_per_second, torchvision_batches

BATCH = 32
PROMPTS = fill(SEED_TEMPLATES, CIFAR10_CLASSES)


def make_model(size):
    torch.manual_seed(0)
    if size == "tiny":
        return create_model(embed_dim=32, transformer_width=32, transformer_heads=2, transformer_layers=1,
                            encoder_opts={"width": 8})
    return create_model()  # the reference configuration


@pytest.fixture(scope="module")
def tokenizer():
    return create_tokenizer(77, PROMPTS)


@pytest.fixture(scope="module")
def table(tokenizer):
    return prompt_table(SEED_TEMPLATES, CIFAR10_CLASSES, tokenizer)


@pytest.fixture(scope="module")
def data(size):
    return make_synthetic("train", 0, n=512 if size == "tiny" else 5000)


def test_tokenize_batch(benchmark, tokenizer):
    """The reference path tokenizes 32 captions per step; bench does it once per run. Protects: what bench saves per
    step by building its prompt table once."""
    captions = [PROMPTS[i] for i in torch.randint(0, len(PROMPTS), (BATCH,), generator=torch.Generator().manual_seed(0))]
    tokens = benchmark(tokenizer, captions)
    assert tokens.shape == (BATCH, 77)


def test_batch_augmentation(benchmark, data, table):
    """One training batch from the device loader: gather, flip, crop, normalise, template ids. Protects: the
    loader's per-batch cost behind the >= 20x torchvision target (results/loader_speed.csv)."""
    loader = device_loader(data, BATCH, table)
    order = loader.epoch_order()
    batch = benchmark(loader.make_batch, order[:BATCH])
    assert batch.images.shape == (BATCH, 3, 32, 32) and float(batch.images.abs().max()) <= 1


def test_device_loader_vs_torchvision(benchmark, data, table, benchmarking):
    """The engine's loader against torchvision per-sample transforms through a DataLoader. Protects: the >= 20x
    target on CPU, asserted when timed."""
    n_device, n_torchvision = 40, 4
    loader = device_loader(data, BATCH, table)
    torchvision_rate = statistics.median(images_per_second(torchvision_batches(data, BATCH, n_torchvision))
                                         for _ in range(3 if benchmarking else 1))
    benchmark(lambda: images_per_second(device_batches(loader, n_device, table)))
    if benchmarking:
        device_rate = n_device * BATCH / benchmark.stats.stats.median
        benchmark.extra_info.update(device_images_per_s=device_rate, torchvision_images_per_s=torchvision_rate,
                                    ratio=device_rate / torchvision_rate)
        assert device_rate / torchvision_rate >= 20


@pytest.mark.parametrize("mode", ["tree", "unique", "all"])
def test_text_encoding(benchmark, size, table, mode):
    """Forward and backward of the text tower for one batch's captions, per text mode. Protects: the modes'
    relative costs, on which the engine's choice rests (the prompt tree on a CPU)."""
    model = make_model(size).train()
    ids = torch.randint(0, len(table), (BATCH,), generator=torch.Generator().manual_seed(0))

    def step():
        model.zero_grad(set_to_none=True)
        encode_prompts(model, table, ids, mode).sum().backward()

    benchmark(step)


def test_training_step(benchmark, size, table):
    """bench's whole CLIP training step at batch 32 (the `bench run` engine, reference recipe, on CPU). Protects: the
    step behind the >= 10x open_clip target (results/vs_open_clip.csv)."""
    model = make_model(size).train()
    engine = build_engine(model, table, make_config("reference", batch_size=BATCH, device="cpu").recipe())
    g = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 32, 32, generator=g)
    prompt_ids = torch.randint(0, len(table), (BATCH,), generator=g)
    loss = benchmark(engine.step, images, prompt_ids // len(SEED_TEMPLATES), prompt_ids)
    assert torch.isfinite(loss)


def test_zero_shot_eval(benchmark, size, tokenizer):
    """Zero-shot evaluation: the template-ensembled classifier, then 500 test images. Protects: what each epoch's
    evaluation adds to a run."""
    model = make_model(size)
    test = make_synthetic("test", 0, n=500)
    images, labels = to_device_uint8(test.images, "cpu"), torch.as_tensor(test.labels)

    def evaluate():
        classifier = build_zero_shot_classifier(model, CIFAR10_CLASSES, SEED_TEMPLATES, tokenizer, "cpu")
        return zero_shot_metrics(model, images, labels, classifier)

    metrics = benchmark(evaluate)
    assert 0 <= metrics["top1"] <= 1
