"""bench.testing: the conformance checks pass good plugins and name what breaks in bad ones."""
import numpy as np
import pytest
import torch
from torch import nn

import bench
from bench.clip.tokenizer import MinimalTokenizer
from bench.data.datasets import ArrayDataset
from bench.testing import check_dataset, check_encoder, check_entry, check_templates, check_tokenizer


@pytest.mark.parametrize("kind,name,kwargs", [
    ("encoders", "modified_resnet", {"width": 8}), ("encoders", "modified_resnet_cifar", {"width": 8}),
    ("encoders", "timm/regnetx_002", {}), ("tokenizers", "clip_bpe", {}), ("templates", "seed", {}),
    ("templates", "openai", {}), ("datasets", "synthetic", {})])
def test_built_ins_meet_their_contract(kind, name, kwargs):
    """The built-in plugins pass the checks offered to plugin authors (the checks are not too strict)."""
    check_entry(kind, name, **kwargs).assert_ok()


class _Linear(nn.Module):
    def __init__(self, embed_dim, image_size):
        super().__init__()
        self.proj = nn.Linear(3 * image_size * image_size, embed_dim)

    def forward(self, x):
        return self.proj(x.flatten(1))


class _WrongWidth(_Linear):
    def forward(self, x):
        return super().forward(x)[:, :-1]


class _Noisy(_Linear):
    def forward(self, x):
        return super().forward(x) + torch.rand(1)  # random even in eval mode


class _BatchStats(_Linear):
    def forward(self, x):
        out = super().forward(x)
        return out - out.mean(dim=0)  # each image's features depend on the rest of the batch


class _Unregistered(_Linear):
    def __init__(self, embed_dim, image_size):
        super().__init__(embed_dim, image_size)
        self.unused = nn.Linear(2, 2)  # never called: no gradient
        self.scale = torch.rand(embed_dim)  # state outside the state dict: a loaded copy differs


class _Float32Only(_Linear):
    def forward(self, x):
        return super().forward(x.double()).float() if x.dtype == torch.float64 else super().forward(x)


@pytest.mark.parametrize("cls,problem", [
    (_WrongWidth, "output shape: expected (3, 32), got (3, 31)"),
    (_Noisy, "deterministic: two eval-mode forwards differ"),
    (_BatchStats, "batch independent"),
    (_Unregistered, "gradients: no gradient for unused.weight, unused.bias"),
    (_Float32Only, "float64: float64 weights and input gave torch.float32"),
])
def test_check_encoder_names_what_breaks(cls, problem):
    """Each contract violation is reported by name, with what was expected and what came."""
    report = check_encoder(cls)
    assert not report.ok and any(p.startswith(problem) for p in report.problems), str(report)


def test_check_encoder_reports_state_outside_the_state_dict():
    """A tensor kept as a plain attribute is lost in a state-dict round trip; the check sees it."""
    class Scaled(_Linear):
        def __init__(self, embed_dim, image_size):
            super().__init__(embed_dim, image_size)
            self.scale = torch.rand(embed_dim) + 1

        def forward(self, x):
            return super().forward(x) * self.scale

    report = check_encoder(Scaled)
    assert [p.split(":")[0] for p in report.problems] == ["state-dict round trip"], str(report)


def test_check_encoder_keeps_going_after_a_crash_in_construction():
    """An encoder factory that raises gives one problem with the exception, not a traceback."""
    def factory(embed_dim, image_size):
        raise ValueError("needs width")

    report = check_encoder(factory)
    assert report.problems == ["construct: raised ValueError: needs width"]
    assert "1 problem(s)" in str(report)
    with pytest.raises(AssertionError, match="needs width"):
        report.assert_ok()


class _ReversedIds(MinimalTokenizer):
    """End token 1 and start token vocab-1: CLIP's argmax pooling would read the start token."""

    def __init__(self, prompts, context_length):
        super().__init__(prompts, context_length)
        self.sot_token_id, self.eot_token_id = self.eot_token_id, self.sot_token_id


def test_check_tokenizer_finds_an_end_token_that_is_not_the_maximum():
    report = check_tokenizer(lambda context_length, prompts: _ReversedIds(prompts, context_length))
    assert any(p.startswith("eot is the row maximum") for p in report.problems), str(report)


def test_check_tokenizer_passes_the_minimal_word_tokenizer():
    report = check_tokenizer(lambda context_length, prompts: MinimalTokenizer(prompts, context_length))
    report.assert_ok()


def test_check_templates_finds_duplicates_bad_placeholders_and_shared_lists():
    shared = ["a {}", "a {}", "{} and {}"]
    report = check_templates(lambda: shared)
    names = {p.split(":")[0] for p in report.problems}
    assert names == {"templates", "distinct", "fresh list"}, str(report)


def test_check_dataset_finds_split_mismatch_and_nondeterminism():
    def factory(split, data_dir=None, seed=0):
        rng = np.random.default_rng()  # ignores the seed
        classes = ("a", "b") if split == "train" else ("a", "c")
        return ArrayDataset(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, 4), classes)

    names = {p.split(":")[0] for p in check_dataset(factory).problems}
    assert names == {"same classes", "deterministic"}


def test_check_dataset_rejects_something_that_is_not_an_array_dataset():
    report = check_dataset(lambda split, data_dir=None, seed=0: {"images": []})
    assert report.problems == ["train split: factory returned dict, not bench.data.ArrayDataset",
                               "test split: factory returned dict, not bench.data.ArrayDataset"]


def test_check_entry_refuses_an_unknown_kind():
    with pytest.raises(bench.BenchError, match="unknown kind 'models'"):
        check_entry("models", "x")


class _NoReturn(_Linear):
    def forward(self, x):
        super().forward(x)  # the features computed, the `return` forgotten


@pytest.mark.parametrize("check,factory,problem", [
    (check_encoder, lambda embed_dim, image_size: None, "construct: factory returned NoneType, not an nn.Module"),
    (check_encoder, _NoReturn, "output shape: expected (3, 32), got NoneType"),
    (check_tokenizer, lambda context_length, prompts: None, "construct: factory returned NoneType, not callable"),
    (check_tokenizer, lambda context_length, prompts: lambda texts, context_length=None, truncate=False: None,
     "attributes"),
    (check_templates, lambda: None, "list of strings: factory returned NoneType"),
    (check_dataset, lambda split, data_dir=None, seed=0: None,
     "train split: factory returned NoneType, not bench.data.ArrayDataset"),
])
def test_a_factory_or_forward_that_forgets_its_return_fails_the_check(check, factory, problem):
    """None is what a forgotten `return` gives; the checks report it rather than take it for a failure already
    reported (which passed such plugins with "all 0 checks passed")."""
    report = check(factory)
    assert not report.ok and report.problems[0].startswith(problem), str(report)


def test_check_tokenizer_reports_a_single_string_that_gives_none():
    """A tokenizer whose output for one string is None is reported on that check; the others still run."""
    class OneStringForgotten(MinimalTokenizer):
        def __call__(self, texts, context_length=None, truncate=False):
            return None if isinstance(texts, str) else super().__call__(texts, context_length, truncate)

    report = check_tokenizer(lambda context_length, prompts: OneStringForgotten(prompts, context_length))
    assert report.problems == ["single string: one string gave shape NoneType or different ids than in a list"]
