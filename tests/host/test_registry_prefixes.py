"""Prefix entries (`timm:<model>`): exact names first, then the longest prefix; duplicates are refused."""
import pytest

from bench.errors import BenchError, UnknownNameError
from bench.host.registry import DuplicateNameError, Registry


class _Tokenizer(str):
    """A stand-in tokenizer that is its own name: create() checks that a tokenizer factory makes a callable."""

    def __call__(self, texts):
        return self


def _registry():
    registry = Registry()
    registry.add("tokenizers", "hub:special", lambda *a: _Tokenizer("exact"), "the exact one", "p1")
    registry.add("tokenizers", "hub:", lambda rest: (lambda *a: _Tokenizer(f"short {rest}")), "any hub model", "p1",
                 prefix=True, placeholder="model")
    registry.add("tokenizers", "hub:big/", lambda rest: (lambda *a: _Tokenizer(f"long {rest}")), "big models", "p2",
                 prefix=True)
    return registry


def test_exact_name_wins_over_a_prefix():
    assert _registry().get("tokenizers", "hub:special").create() == "exact"


def test_longest_prefix_wins_and_gets_the_rest_of_the_name():
    registry = _registry()
    assert registry.get("tokenizers", "hub:big/x").create() == "long x"
    entry = registry.get("tokenizers", "hub:small")
    assert entry.create() == "short small" and entry.name == "hub:small" and entry.plugin == "p1"
    assert entry.meta["prefix"] == "hub:"


def test_the_bare_prefix_is_not_a_name():
    with pytest.raises(UnknownNameError, match=r"available: hub:special, hub:<model>, hub:big/<name>"):
        _registry().get("tokenizers", "hub:")


def test_a_prefix_registered_twice_names_both_plugins():
    with pytest.raises(DuplicateNameError, match="prefix 'hub:' is registered twice: by plugin 'p1' and by plugin 'p3'"):
        _registry().add("tokenizers", "hub:", lambda rest: None, "", "p3", prefix=True)


def test_listing_shows_prefixes_after_names_with_their_placeholder():
    entries = _registry().entries("tokenizers")
    assert [e.display_name for e in entries] == ["hub:special", "hub:<model>", "hub:big/<name>"]
    assert [e.display_name for e in _registry().entries("tokenizers", "hub:b*")] == ["hub:big/<name>"]


def test_a_resolver_error_reaches_the_user():
    registry = Registry()

    def resolve(rest):
        raise BenchError(f"no model {rest!r}")

    registry.add("encoders", "x:", resolve, "", "p", prefix=True)
    with pytest.raises(BenchError, match="no model 'y'"):
        registry.get("encoders", "x:y")


@pytest.mark.parametrize("name", ["", "two words", "odd,name", "odd@set"])
def test_a_name_an_option_would_split_or_cannot_hold_is_refused_at_registration(name):
    """Comma lists (--transfer a,b) and DATASET@TEMPLATES split at ',' and '@': such a name could never be asked for."""
    with pytest.raises(BenchError, match="registered an invalid dataset name"):
        Registry().add("datasets", name, lambda *a: None, "", "p")


def test_checking_what_a_dataset_factory_made_does_not_make_its_lazy_images():
    """The synthetic set draws its images on first use, and a run with --limit-train draws only the subset: the
    check that a factory returned a dataset must not read ``images`` (it cost every run 0.4 s)."""
    drawn = []

    class Lazy:
        labels, classes = [0, 1], ("a", "b")

        @property
        def images(self):
            drawn.append(1)
            return []

        def subset(self, n):
            return self

    registry = Registry()
    registry.add("datasets", "lazy", lambda *a: Lazy(), "", "p")
    assert isinstance(registry.get("datasets", "lazy").create("train", None, 0), Lazy) and drawn == []
