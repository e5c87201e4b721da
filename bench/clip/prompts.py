"""The prompt table a CLIP trains on: every template filled with every class name, tokenized once and trimmed to
the longest prompt. A training caption is a row id into it (row ``c * len(templates) + t`` is template ``t`` of
class ``c``), so the text tower encodes prompts, not captions."""
from __future__ import annotations

import torch

from .templates import fill
from .tokenizer import CONTEXT_LENGTH, create_tokenizer, trim_tokens


def prompt_table(templates, class_names, tokenizer=None, device=None,
                 context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """``(len(class_names) * len(templates), L)`` token ids, ``L`` the longest prompt's length; ``tokenizer``: any
    registered tokenizer (default: CLIP's BPE at ``context_length``, or its fallback vocabulary from these
    prompts); on ``device`` when given."""
    prompts = fill(templates, class_names)
    tokenizer = tokenizer if tokenizer is not None else create_tokenizer(context_length, prompts)
    tokens = trim_tokens(tokenizer(prompts))
    return tokens if device is None else tokens.to(device)
