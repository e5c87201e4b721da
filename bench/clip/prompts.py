"""The prompt table a CLIP trains on: every template filled with every class name, tokenized once and trimmed to
the longest prompt. A training caption is a row id into it (row ``c * len(templates) + t`` is template ``t`` of
class ``c``), so the text tower encodes prompts, not captions."""
from __future__ import annotations

import torch

from ..errors import BenchError
from .templates import fill
from .tokenizer import CONTEXT_LENGTH, create_tokenizer, trim_tokens


def prompt_table(templates, class_names, tokenizer=None, device=None,
                 context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """``(len(class_names) * len(templates), L)`` token ids, ``L`` the longest prompt's length; ``tokenizer``: any
    registered tokenizer (default: CLIP's BPE at ``context_length``, or its fallback vocabulary from these
    prompts); on ``device`` when given."""
    prompts = fill(templates, class_names)
    tokenizer = tokenizer if tokenizer is not None else create_tokenizer(context_length, prompts)
    tokens = tokenizer(prompts)
    if not (isinstance(tokens, torch.Tensor) and tokens.ndim == 2 and len(tokens) == len(prompts)
            and not tokens.is_floating_point() and not tokens.is_complex() and tokens.dtype != torch.bool):
        got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise BenchError(f"tokenizer {type(tokenizer).__name__} returned {got} for {len(prompts)} texts, not an integer "
                         f"tensor (N, context_length); fix the tokenizer plugin (docs/plugins.md)")
    tokens = trim_tokens(tokens.long())
    return tokens if device is None else tokens.to(device)
