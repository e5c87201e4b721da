"""Encode a table of prompts as one token tree: each shared prefix is computed once, exactly.

Why: CIFAR-10 prompts are templates x classes, so they share long prefixes ("<start> a photo of a" is
the same for ten prompts). Under the causal mask a token's hidden state depends only on the tokens up to
it, so every prompt with the same prefix has the same hidden states along that prefix. Merging the
prompts into a trie and running the text Transformer once over its nodes, each node attending to its
ancestors (itself included) at positions given by its depth, gives every prompt's end-of-text state
exactly as the plain per-prompt computation does (the same keys and values, in a different memory
layout), for a fraction of the tokens: the 5 seed templates x 10 classes are 350 tokens as a table
trimmed to 7, and 122 nodes as a tree. The gradient of a shared node sums the gradients of the prompts
that share it, as separate copies would.

The idea is the tree attention of speculative decoding (SpecInfer, Medusa); here it trains.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..deterministic import take_rows

# id(table) -> (weak reference to the table, its tree); tensors cannot be dict keys (== is elementwise)
_CACHE: dict = {}


@dataclass
class PromptTree:
    tokens: torch.Tensor  # (N,) token id of each node
    depth: torch.Tensor  # (N,) position of each node in its prompts (0 = start token)
    allowed: torch.Tensor  # (N, N) bool: node j is an ancestor of node i, or i itself
    paths: torch.Tensor  # (P, N) bool: the nodes of prompt p's path, start to end-of-text
    eot: torch.Tensor  # (P,) the node holding prompt p's end-of-text token

    @classmethod
    def build(cls, table: torch.Tensor) -> "PromptTree":
        """The trie of the prompts in ``table`` (P, L): each row ends at its end-of-text, the largest id."""
        rows = table.cpu().tolist()
        ends = table.argmax(dim=-1).cpu().tolist()
        children: dict[tuple[int, int], int] = {}
        tokens, depth, parent, paths, eot = [], [], [], [], []
        for row, end in zip(rows, ends):
            node, path = -1, []
            for position, token in enumerate(row[:end + 1]):
                key = (node, token)
                if key not in children:
                    children[key] = len(tokens)
                    tokens.append(token)
                    depth.append(position)
                    parent.append(node)
                node = children[key]
                path.append(node)
            paths.append(path)
            eot.append(node)
        n = len(tokens)
        allowed = torch.eye(n, dtype=torch.bool)
        for i in range(n):  # parents come before children, so a parent's row is complete when read
            if parent[i] >= 0:
                allowed[i] |= allowed[parent[i]]
        path_mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for p, path in enumerate(paths):
            path_mask[p, path] = True
        device = table.device
        return cls(torch.tensor(tokens, device=device), torch.tensor(depth, device=device), allowed.to(device),
                   path_mask.to(device), torch.tensor(eot, device=device))

    def __len__(self):
        return len(self.tokens)


def tree_for(table: torch.Tensor) -> PromptTree:
    """The tree of ``table``, built once per table tensor."""
    hit = _CACHE.get(id(table))
    if hit is not None and hit[0]() is table:
        return hit[1]
    for key in [k for k, (ref, _) in _CACHE.items() if ref() is None]:  # forget tables that are gone
        del _CACHE[key]
    tree = PromptTree.build(table)
    _CACHE[id(table)] = (weakref.ref(table), tree)
    return tree


def encode_tree(model, table: torch.Tensor, prompt_ids: torch.Tensor, only_used: bool = True) -> torch.Tensor:
    """Text features of captions ``prompt_ids`` (rows of ``table``), from one pass over the prompt tree.

    ``only_used`` keeps only the nodes on the paths of the prompts in this batch (data-dependent shapes,
    for CPUs); otherwise the whole tree is encoded (static shapes).
    """
    tree = tree_for(table)
    tokens, depth, allowed, eot = tree.tokens, tree.depth, tree.allowed, tree.eot[prompt_ids]
    if only_used:
        used = tree.paths[prompt_ids].any(dim=0)
        keep = used.nonzero().squeeze(1)
        tokens, depth, allowed = tokens[keep], depth[keep], allowed[keep][:, keep]
        eot = (used.cumsum(0) - 1)[eot]  # node index -> index among the kept nodes
    dtype = model.dtype
    # row gathers whose backward is deterministic (bench.deterministic), not positional_embedding[depth] / x[eot]
    x = model.token_embedding(tokens).type(dtype) + take_rows(model.positional_embedding, depth).type(dtype)
    x = model.transformer(x.unsqueeze(0), ~allowed)  # True = may not attend, as CLIP's causal mask
    x = model.ln_final(x).type(dtype)[0]
    return take_rows(x, eot) @ model.text_projection
