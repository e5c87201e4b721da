"""Text-template sets as plain data; ``{}`` is the class name."""

SEED_TEMPLATES = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a {} photo",
    "a {} picture",
)

# The 18 CIFAR-10 prompts of the CLIP paper (OpenAI's notebook "Prompt_Engineering_for_ImageNet", CIFAR10)
OPENAI_CIFAR10_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)


def validated_templates(name: str, templates, plugin: str | None = None) -> list[str]:
    """Validate a template set: a non-empty list of strings with exactly one ``{}`` each; ``plugin``, where given,
    is named in the error with the fix."""
    from ..errors import BenchError

    templates = list(templates)
    by, fix = (f" (plugin {plugin!r})", "; fix the plugin") if plugin else ("", "")
    if not templates:
        raise BenchError(f"template set {name!r}{by} is empty; register at least one template{fix}")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise BenchError(f"template {t!r} of set {name!r}{by} must be a string with exactly one '{{}}' "
                             f"placeholder{fix}")
    return templates


def load_templates(name: str) -> list[str]:
    """The registered template set ``name``, validated; a broken one is named with the plugin that registered it."""
    from ..host.manager import get_entry

    entry = get_entry("templates", name)
    return validated_templates(name, entry.create(), plugin=entry.plugin)


def fill(templates, class_names) -> list[str]:
    """Every prompt, class-major: prompt ``c * len(templates) + t`` is template ``t`` of class ``c``."""
    return [t.format(c) for c in class_names for t in templates]
