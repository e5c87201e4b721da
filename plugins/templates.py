"""The template sets of the reference spec and of the CLIP paper."""
from bench import hookimpl
from bench.clip.templates import OPENAI_CIFAR10_TEMPLATES, SEED_TEMPLATES


@hookimpl
def register_templates(register):
    register("seed", lambda: list(SEED_TEMPLATES), "the reference spec's 5 templates ('a photo of a {}', ...)")
    register("openai", lambda: list(OPENAI_CIFAR10_TEMPLATES), "the CLIP paper's 18 CIFAR-10 prompts")
