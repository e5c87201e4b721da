"""Test helpers for plugin authors: register a plugin for the length of a block, and check what it registers.

Example (pytest)::

    import bench.testing
    import my_plugin

    def test_my_encoder_meets_the_contract():
        with bench.testing.plugin_registered(my_plugin):
            bench.testing.check_encoder("my_encoder").assert_ok()

Each ``check_*`` runs one registered thing (or a bare factory) through the contract of its hook in
:mod:`bench.host.hookspecs` and returns a :class:`Report` listing every problem found, not only the first.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from .errors import BenchError, PluginError
from .host import manager as _plugins

__all__ = ["Report", "plugin_registered", "check_encoder", "check_tokenizer", "check_templates", "check_dataset",
           "check_entry"]


@contextlib.contextmanager
def plugin_registered(plugin, name: str | None = None):
    """Make ``plugin`` (a module, class or instance with ``@bench.hookimpl`` functions) part of every host.

    Inside the block, :func:`bench.plugins.get_host` and in-process ``bench.cli.main([...])`` calls see the
    plugins they would load anyway plus ``plugin``; afterwards the previous host comes back. A plugin that fails to load,
    raises in a hook or registers a name another plugin has raises :class:`~bench.errors.PluginError` here instead
    of printing a warning.
    """
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    _plugins.EXTRA_PLUGINS.append((plugin, name))
    previous = _plugins.set_host(None)
    try:
        host = _plugins.get_host()
        info = host.infos.get(name)
        if not host.pm.is_registered(plugin) or (info and info.error):  # an error in a hook or a name conflict too
            raise PluginError(info.error if info and info.error else f"plugin {name!r} was not registered")
        yield host
    finally:
        _plugins.EXTRA_PLUGINS.remove((plugin, name))
        _plugins.set_host(previous)


@dataclass
class Report:
    """What a conformance check found: ``passed`` names the checks that held, ``problems`` what broke."""

    subject: str
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, name: str, ok: bool, problem: str) -> bool:
        (self.passed if ok else self.problems).append(name if ok else f"{name}: {problem}")
        return ok

    def __str__(self):
        if self.ok:
            return f"{self.subject}: all {len(self.passed)} checks passed"
        return f"{self.subject}: {len(self.problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in self.problems)

    def assert_ok(self):
        """Raise AssertionError listing every problem (for use in tests)."""
        if not self.ok:
            raise AssertionError(str(self))


def _factory(kind: str, target):
    if isinstance(target, str):
        return target, _plugins.get_entry(kind, target).factory
    return getattr(target, "__name__", repr(target)), target


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# What _attempt returns for a call that raised: not None, which a factory that forgets its `return` gives
# and which the checks must report, not take for a problem already reported.
_FAILED = object()


def _shape(value):
    """A tensor's shape as a tuple, or for anything else (a forgotten ``return``) the name of its type."""
    import torch

    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _attempt(report: Report, name: str, fn):
    """Run ``fn``; on an exception record it as ``name``'s problem and return :data:`_FAILED`."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reporting what breaks is the point
        report.problems.append(f"{name}: raised {_one_line(exc)}")
        return _FAILED


# -- encoders ----------------------------------------------------------------------------------------------
def check_encoder(target, embed_dim: int = 32, image_size: int = 32, batch: int = 3, **opts) -> Report:
    """Check an encoder (registered name or factory) against ``register_encoders``' contract.

    Checks: the factory returns an ``nn.Module``; images ``(N, 3, H, W)`` float32 map to finite float32
    ``(N, embed_dim)``; every trainable parameter gets a gradient; seeded construction is reproducible;
    eval-mode outputs are deterministic and do not depend on the rest of the batch; a state dict loads
    strictly into a fresh instance and reproduces the outputs; float64 weights give float64 outputs; for a
    registered name, a declared ``params`` equals the tower's count at ``bench list``'s size (embed width 512).
    """
    import torch
    from torch import nn

    label, factory = _factory("encoders", target)
    report = Report(f"encoder {label!r}")

    def build(seed):
        torch.manual_seed(seed)
        return factory(embed_dim, image_size, **opts)

    model = _attempt(report, "construct", lambda: build(0))
    if model is _FAILED or not report.check("construct", isinstance(model, nn.Module),
                                         f"factory returned {type(model).__name__}, not an nn.Module"):
        return report
    initial = {k: v.clone() for k, v in model.state_dict().items()}  # before training-mode BatchNorm updates
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    model.train()
    out = _attempt(report, "forward", lambda: model(x))
    if out is _FAILED:
        return report
    shape_ok = report.check("output shape", isinstance(out, torch.Tensor) and tuple(out.shape) == (batch, embed_dim),
                            f"expected ({batch}, {embed_dim}), got {_shape(out)}")
    if not shape_ok:
        return report
    report.check("output dtype", out.dtype == torch.float32, f"float32 input gave {out.dtype}")
    report.check("finite output", bool(torch.isfinite(out).all()), "output has NaN or inf")
    if not out.requires_grad:
        report.check("gradients", False, "the output does not require grad, so the tower cannot train")
    elif _attempt(report, "backward", lambda: out.square().mean().backward()) is not _FAILED:
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        report.check("gradients", not missing, f"no gradient for {', '.join(missing[:5])}"
                     + (f" and {len(missing) - 5} more" if len(missing) > 5 else "") + " (unused parameters)")

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        report.check("deterministic", torch.allclose(a, b, atol=1e-6, rtol=1e-5),
                     f"two eval-mode forwards differ by {float((a - b).abs().max()):.3g}")
        single = model(x[:1])
        report.check("batch independent", torch.allclose(single[0], a[0], atol=1e-4, rtol=1e-3),
                     f"eval-mode output of image 0 changes with the rest of the batch by "
                     f"{float((single[0] - a[0]).abs().max()):.3g}")
        twin = _attempt(report, "seeded construction", lambda: build(0))
        if twin is not _FAILED:
            same = all(torch.equal(p, q) for p, q in zip(initial.values(), twin.state_dict().values()))
            report.check("seeded construction", same, "two builds under one torch seed have different weights")
        other = _attempt(report, "state-dict round trip", lambda: build(1))
        if other is not _FAILED:
            loaded = _attempt(report, "state-dict round trip", lambda: other.load_state_dict(model.state_dict()))
            if loaded is not _FAILED:
                other.eval()
                c = other(x)
                report.check("state-dict round trip", torch.allclose(a, c, atol=1e-6, rtol=1e-5),
                             f"a fresh instance loaded with the state dict differs by {float((a - c).abs().max()):.3g}")
        double = _attempt(report, "float64", lambda: model.double()(x.double()))
        if double is not _FAILED:
            report.check("float64", getattr(double, "dtype", None) == torch.float64,
                         f"float64 weights and input gave {getattr(double, 'dtype', type(double).__name__)}")
    if isinstance(target, str):
        _check_declared_params(report, _plugins.get_entry("encoders", target))
    return report


def _check_declared_params(report: Report, entry):
    """The ``params`` a registration declares (what ``bench list encoders`` shows) is the built tower's count."""
    from .app.catalog import LISTING_SIZE, declared_params, encoder_params

    if "params" not in entry.meta:
        return
    declared = declared_params(entry)
    if not report.check("declared params", declared is not None,
                        f"params={entry.meta['params']!r} is not a whole number of parameters"):
        return
    counted = encoder_params(entry)  # on the meta device, else built for real
    if counted is None:
        tower = _attempt(report, "declared params", lambda: entry.factory(*LISTING_SIZE))
        if tower is _FAILED:
            return
        counted = sum(p.numel() for p in tower.parameters())
    report.check("declared params", counted == declared,
                 f"registered params={declared:,}, but the tower at embed width {LISTING_SIZE[0]} and "
                 f"{LISTING_SIZE[1]} px has {counted:,}")


# -- tokenizers --------------------------------------------------------------------------------------------
_SAMPLE_PROMPTS = ("a photo of a cat", "a picture of a dog.", "an image of a ship", "a truck photo", "A Bird!")


def check_tokenizer(target, context_length: int = 77, prompts=_SAMPLE_PROMPTS) -> Report:
    """Check a tokenizer (registered name or factory) against ``register_tokenizers``' contract.

    Checks: integer ``vocab_size``, ``sot_token_id`` and ``eot_token_id`` inside the vocabulary; texts map to
    an int64 ``(N, context_length)`` tensor of ids in the vocabulary; each row starts with the start token
    and holds the end token as its largest id (CLIP pools the text at ``argmax``), then zero padding; one
    string gives one row; ``context_length=`` overrides the width; ``truncate=True`` cuts a long text and
    keeps the end token last; tokenizing is deterministic.
    """
    import torch

    label, factory = _factory("tokenizers", target)
    report = Report(f"tokenizer {label!r}")
    prompts = list(prompts)
    tok = _attempt(report, "construct", lambda: factory(context_length, prompts))
    if tok is _FAILED or not report.check("construct", callable(tok), f"factory returned {type(tok).__name__}, not callable"):
        return report
    ids = {a: getattr(tok, a, None) for a in ("vocab_size", "sot_token_id", "eot_token_id")}
    if not report.check("attributes", all(isinstance(v, int) for v in ids.values()),
                        f"vocab_size, sot_token_id and eot_token_id must be ints, got {ids}"):
        return report
    vocab, sot, eot = ids["vocab_size"], ids["sot_token_id"], ids["eot_token_id"]
    report.check("special ids in vocabulary", 0 <= sot < vocab and 0 <= eot < vocab and sot != eot,
                 f"sot {sot} and eot {eot} must be distinct ids below vocab_size {vocab}")
    tokens = _attempt(report, "tokenize", lambda: tok(prompts))
    if tokens is _FAILED or not report.check(
            "output", isinstance(tokens, torch.Tensor) and tokens.dtype == torch.int64
            and tuple(tokens.shape) == (len(prompts), context_length),
            f"expected int64 ({len(prompts)}, {context_length}), got {getattr(tokens, 'dtype', type(tokens))} "
            f"{tuple(getattr(tokens, 'shape', ()))}"):
        return report
    report.check("ids in vocabulary", bool(((tokens >= 0) & (tokens < vocab)).all()), "an id is outside 0..vocab_size-1")
    report.check("starts with sot", bool((tokens[:, 0] == sot).all()), "a row does not start with sot_token_id")
    ends = tokens.argmax(dim=1)
    report.check("eot is the row maximum", bool((tokens[torch.arange(len(tokens)), ends] == eot).all()),
                 "the largest id of a row is not eot_token_id, so CLIP's argmax pooling reads the wrong token")
    after = torch.arange(context_length)[None, :] > ends[:, None]
    report.check("zero padding", bool((tokens[after] == 0).all()), "ids after the end token are not 0")
    again = _attempt(report, "deterministic", lambda: tok(prompts))
    if again is not _FAILED:
        report.check("deterministic", isinstance(again, torch.Tensor) and torch.equal(tokens, again), "tokenizing twice gives different ids")
    one = _attempt(report, "single string", lambda: tok(prompts[0]))
    if one is not _FAILED:
        report.check("single string", _shape(one) == (1, context_length) and torch.equal(one[0], tokens[0]),
                     f"one string gave shape {_shape(one)} or different ids than in a list")
    width = int(ends[0]) + 3  # room for the first prompt, narrower than context_length
    short = _attempt(report, "context_length override", lambda: tok(prompts[:1], context_length=width))
    if short is not _FAILED:
        report.check("context_length override", _shape(short) == (1, width)
                     and torch.equal(short[0], tokens[0, :width]),
                     f"context_length={width} gave shape {_shape(short)} or different ids")
    long_text = " ".join(["photo"] * (2 * context_length))
    cut = _attempt(report, "truncate", lambda: tok([long_text], truncate=True))
    if cut is not _FAILED:
        shaped = _shape(cut) == (1, context_length)
        report.check("truncate", shaped and int(cut[0, -1]) == eot, f"truncate=True gave shape {_shape(cut)}"
                     + (f", last id {int(cut[0, -1])} (want eot {eot})" if shaped else ""))
    return report


# -- template sets -----------------------------------------------------------------------------------------
def check_templates(target) -> Report:
    """Check a template set: a non-empty list of distinct strings with one ``{}``, a fresh list per call."""
    from .clip.templates import validated_templates

    label, factory = _factory("templates", target)
    report = Report(f"template set {label!r}")
    first = _attempt(report, "construct", factory)
    if first is _FAILED:
        return report
    if not report.check("list of strings", isinstance(first, list), f"factory returned {type(first).__name__}"):
        return report
    if _attempt(report, "templates", lambda: validated_templates(label, first)) is not _FAILED:
        report.passed.append("templates")
    report.check("distinct", len(set(first)) == len(first), "a template appears twice (it would weigh double)")
    first.append("mutated {}")
    second = _attempt(report, "fresh list", factory)
    if second is not _FAILED:
        report.check("fresh list", "mutated {}" not in second and second == first[:-1],
                     "a second call returned a changed list (return a copy, not shared state)")
    return report


# -- datasets ----------------------------------------------------------------------------------------------
def check_dataset(target, data_dir=None, seed: int = 0) -> Report:
    """Check a dataset: ``train`` and ``test`` splits as :class:`bench.data.ArrayDataset` with uint8 images
    ``(N, H, W, 3)``, int64 labels within the classes, the same class names, and the same arrays again for
    the same seed."""
    import numpy as np

    from .data.datasets import ArrayDataset

    label, factory = _factory("datasets", target)
    report = Report(f"dataset {label!r}")
    splits = {}
    for split in ("train", "test"):
        ds = _attempt(report, f"{split} split", lambda s=split: factory(s, data_dir, seed))
        if ds is _FAILED or not report.check(f"{split} split", isinstance(ds, ArrayDataset),
                                          f"factory returned {type(ds).__name__}, not bench.data.ArrayDataset"):
            continue
        images, labels = np.asarray(ds.images), np.asarray(ds.labels)
        report.check(f"{split} images", images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
                     and len(images) > 0, f"need uint8 (N>0, H, W, 3), got {images.dtype} {images.shape}")
        report.check(f"{split} labels", labels.dtype == np.int64 and labels.shape == (len(images),)
                     and bool(((labels >= 0) & (labels < len(ds.classes))).all()),
                     f"need int64 ({len(images)},) within 0..{len(ds.classes) - 1}")
        report.check(f"{split} classes", all(isinstance(c, str) for c in ds.classes)
                     and len(set(ds.classes)) == len(ds.classes) >= 2, "need two or more distinct class names")
        splits[split] = ds
    if len(splits) == 2:
        report.check("same classes", splits["train"].classes == splits["test"].classes,
                     "train and test name different classes")
        again = _attempt(report, "deterministic", lambda: factory("train", data_dir, seed))
        if again is not _FAILED:
            report.check("deterministic", isinstance(again, ArrayDataset) and np.array_equal(again.images, splits["train"].images)
                         and np.array_equal(again.labels, splits["train"].labels),
                         "the same split and seed gave different arrays")
    return report


_CHECKS = {"encoders": check_encoder, "tokenizers": check_tokenizer, "templates": check_templates,
           "datasets": check_dataset}


def check_entry(kind: str, name: str, **kwargs) -> Report:
    """Run the check for ``kind`` (``encoders``, ``tokenizers``, ``templates`` or ``datasets``) on ``name``."""
    if kind not in _CHECKS:
        raise BenchError(f"unknown kind {kind!r}; kinds are {', '.join(_CHECKS)}")
    return _CHECKS[kind](name, **kwargs)
