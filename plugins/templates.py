"""The template sets of the reference spec, of the CLIP paper (openai/CLIP data/prompts.md) and bench's own for
Fashion-MNIST, which prompts.md lacks."""
from bench import hookimpl
from bench.clip.dataset_prompts import (FASHION_MNIST_TEMPLATES, OPENAI_CIFAR100_TEMPLATES, OPENAI_MNIST_TEMPLATES,
                                        OPENAI_STL10_TEMPLATES)
from bench.clip.templates import OPENAI_CIFAR10_TEMPLATES, SEED_TEMPLATES


@hookimpl
def register_templates(register):
    register("seed", lambda: list(SEED_TEMPLATES), "the reference spec's 5 templates ('a photo of a {}', ...)")
    register("openai", lambda: list(OPENAI_CIFAR10_TEMPLATES), "the CLIP paper's 18 CIFAR-10 prompts")
    register("openai_cifar100", lambda: list(OPENAI_CIFAR100_TEMPLATES),
             "the CLIP paper's 18 CIFAR-100 prompts (data/prompts.md; the same words as its CIFAR-10 ones)")
    register("openai_stl10", lambda: list(OPENAI_STL10_TEMPLATES),
             "the CLIP paper's 2 STL-10 prompts ('a photo of a {}.', 'a photo of the {}.')")
    register("openai_mnist", lambda: list(OPENAI_MNIST_TEMPLATES),
             "the CLIP paper's MNIST prompt ('a photo of the number: \"{}\".'); SVHN's too (prompts.md has none for "
             "it)")
    register("plain_fashion_mnist", lambda: list(FASHION_MNIST_TEMPLATES),
             "bench's 4 Fashion-MNIST prompts (prompts.md has none): 'a photo of a {}.', ... 'a type of clothing or "
             "accessory'")
