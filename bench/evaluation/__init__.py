"""Evaluation: zero-shot classification (``zero_shot``), seen/unseen/harmonic top-1 over held-out classes
(``holdout``), metrics, and the suite (``suite``: retrieval, linear probe, robustness); quality targets (``target``:
``--target``, when a history first reaches one). Imports clip, data, distributed and the base modules, never the
engine, results or app.

The suite's evaluation names live here, torch-free, so ``--evals`` is checked (``bench.app.validation``) without
torch.
"""
from __future__ import annotations

from ..errors import BenchError

EVALS = ("retrieval", "probe", "robustness")


def parse_evals(names) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(names or ()))
    unknown = [n for n in names if n not in EVALS]
    if unknown:
        raise BenchError(f"unknown evaluation {unknown[0]!r} in --evals; choose from {', '.join(EVALS)}")
    return names
