"""bench.app.dataset_lookup: what a run, bench eval, pretrained models and transfer look up of a dataset by name.
It sits below the modules that use it (no import of transfer, run or evaluate), and picks each template set as
documented: a dataset's own set for zero-shot, CLIP's published prompts for a pretrained CLIP."""
from pathlib import Path

import bench
import bench.testing
from bench.app import dataset_lookup
from tests.support.imports import import_statements


def test_the_dataset_lookups_import_no_other_app_module():
    """run, evaluate and transfer import the lookups; one importing back would be a cycle through the app layer."""
    source = Path(dataset_lookup.__file__).read_text()
    imported = {module for module, _ in import_statements(source, "bench.app")}
    assert not {m for m in imported if m.startswith("bench.app.")}, imported


class Unprompted:
    """A test-only dataset that names no template set of its own."""

    @bench.hookimpl
    def register_datasets(self, register):
        from bench.data.datasets import make_synthetic

        register("unprompted", make_synthetic, "synthetic colours without a template set")


def test_zero_shot_takes_a_datasets_own_template_set_and_a_pretrained_clip_clips_published_prompts():
    assert dataset_lookup.zero_shot_templates("cifar10", "openai") == "seed"  # bench's own training set
    assert dataset_lookup.published_templates("cifar10") == "openai"  # CLIP's CIFAR-10 prompts, not bench's seed
    assert dataset_lookup.published_templates("stl10") == "openai_stl10"
    with bench.testing.plugin_registered(Unprompted()):
        assert dataset_lookup.dataset_templates("unprompted") is None
        assert dataset_lookup.zero_shot_templates("unprompted", "openai") == "openai"  # the caller's fallback
