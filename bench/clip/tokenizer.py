"""CLIP's byte-level BPE tokenizer (OpenAI's ``simple_tokenizer``), and a fallback word vocabulary.

The BPE merges are read from ``bpe_simple_vocab_16e6.txt.gz`` as shipped inside the ``open_clip_torch``
package (``BENCH_BPE_PATH`` points elsewhere). Without that file, :class:`MinimalTokenizer` builds a word
vocabulary from the run's own prompts, as the reference implementation does, and says so; the run's checkpoints
keep its words (:func:`own_vocabulary`), from which a later evaluation rebuilds the same ids. :func:`tokenize`,
which has no run's prompts, falls back to CLIP's byte tokens instead (:class:`ByteTokenizer`).
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import os
import warnings
from functools import cached_property, lru_cache
from pathlib import Path

import regex as re
import torch

from ..errors import BenchError

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCABULARY_KEY = "tokenizer_vocabulary"  # a checkpoint's entry for a run's own word vocabulary (own_vocabulary)
_PATTERN = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE
)


@lru_cache()
def bytes_to_unicode():
    """Map every byte to a printable unicode character, so BPE never sees whitespace or control bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return {(a, b) for a, b in zip(word[:-1], word[1:])}


def fix_text(text: str) -> str:
    """ftfy's ``fix_text`` (OpenAI's ``basic_clean``), which leaves printable ASCII without ``&`` as it is: every one
    of its fixes needs a non-ASCII character, a control character or an HTML entity. Such text, as prompts are,
    skips it, and ftfy (a fifth of a second to import) is imported only for other text."""
    if text.isascii() and text.isprintable() and "&" not in text:
        return text
    from ftfy import fix_text as ftfy_fix_text

    return ftfy_fix_text(text)


def clean(text: str) -> str:
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def default_bpe_path() -> Path | None:
    """The BPE merges file: ``BENCH_BPE_PATH`` if set, else the copy inside the open_clip package."""
    env = os.environ.get("BENCH_BPE_PATH")
    if env:
        return Path(env) if Path(env).is_file() else None
    spec = importlib.util.find_spec("open_clip")  # locate, do not import: open_clip imports torch and timm
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BPE_FILE
        if path.is_file():
            return path
    return None


class _Base:
    vocab_size = VOCAB_SIZE
    sot_token_id = SOT_TOKEN_ID
    eot_token_id = EOT_TOKEN_ID

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        self.context_length = context_length

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def __call__(self, texts, context_length: int | None = None, truncate: bool = False) -> torch.LongTensor:
        """Tokenize ``texts`` to a ``(N, context_length)`` LongTensor: start, tokens, end, zero padding.

        Raises:
            BenchError: a text is longer than the context and ``truncate`` is False.
        """
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > context_length:
                if not truncate:
                    raise BenchError(f"text {text[:40]!r} is {len(tokens)} tokens, longer than the context of "
                                     f"{context_length}; shorten it or ask for truncate=True")
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = torch.tensor(tokens)
        return result


class SimpleTokenizer(_Base):
    """CLIP's byte-level BPE: ftfy + html unescape, lower case, regex pre-split, then byte-pair merges."""

    def __init__(self, bpe_path: str | os.PathLike | None = None, context_length: int = CONTEXT_LENGTH):
        super().__init__(context_length)
        bpe_path = bpe_path or default_bpe_path()
        if bpe_path is None:
            raise BenchError(f"CLIP BPE file {BPE_FILE} not found; pip install open_clip_torch or set BENCH_BPE_PATH")
        self.byte_encoder = bytes_to_unicode()
        merges = list(map(tuple, map(str.split, _merge_lines(bpe_path, 49152 - 256 - 2))))
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + list(map("".join, merges))
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        tokens = []
        for token in re.findall(_PATTERN, clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            tokens.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return tokens

    @cached_property
    def decoder(self) -> dict:
        return {v: k for k, v in self.encoder.items()}

    @cached_property
    def byte_decoder(self) -> dict:
        return {v: k for k, v in self.byte_encoder.items()}

    def decode(self, tokens) -> str:
        text = "".join(self.decoder[int(t)] for t in tokens)
        return bytearray([self.byte_decoder[c] for c in text]).decode("utf-8", errors="replace").replace("</w>", " ")


def _merge_lines(path, count: int) -> list[str]:
    """The first ``count`` merges of a BPE file (the lines after its header), decompressed only as far as they go:
    CLIP uses 48,894 of the 262,144 in the file, about a fifth of it."""
    data, newlines, complete = bytearray(), 0, False
    with gzip.open(path) as f:
        while newlines <= count:
            chunk = f.read(1 << 18)
            if not chunk:
                complete = True
                break
            data += chunk
            newlines += chunk.count(b"\n")
    text = bytes(data if complete else data[:data.rindex(b"\n")]).decode("utf-8")  # whole lines: whole characters
    return text.split("\n", count + 1)[1:count + 1]


class MinimalTokenizer(_Base):
    """A word vocabulary built from known prompts, for when the BPE file is missing.

    Ids 1..n are the sorted words; start and end keep CLIP's ids, so end-of-text pooling (argmax) works
    and the model keeps its 49408-row embedding. A word never seen maps to ``UNK`` (49405).
    """

    UNK = VOCAB_SIZE - 3

    def __init__(self, prompts, context_length: int = CONTEXT_LENGTH):
        super().__init__(context_length)
        words = sorted({w for p in prompts for w in re.findall(_PATTERN, clean(p))})
        if len(words) >= self.UNK:
            raise BenchError(f"{len(words)} distinct words do not fit the fallback vocabulary; install open_clip_torch")
        self.encoder = {w: i + 1 for i, w in enumerate(words)}

    def encode(self, text: str) -> list[int]:
        return [self.encoder.get(w, self.UNK) for w in re.findall(_PATTERN, clean(text))]


class ByteTokenizer(_Base):
    """CLIP's byte-level BPE with no merges, for :func:`tokenize` when the BPE file is missing: each word is its
    UTF-8 bytes, the last marked end-of-word, under the ids CLIP's vocabulary gives them (0..511).

    Why not a :class:`MinimalTokenizer` there: its ids follow the texts it was built from, so two calls (two batches
    through :func:`bench.collate_fn`) would give one word two ids and two words one; here a text's ids never depend
    on the other texts, as with the reference's own minimal vocabulary.
    """

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        super().__init__(context_length)
        self.byte_encoder = bytes_to_unicode()
        chars = list(self.byte_encoder.values())
        self.encoder = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}

    def encode(self, text: str) -> list[int]:
        tokens = []
        for word in re.findall(_PATTERN, clean(text)):
            chars = [self.byte_encoder[b] for b in word.encode("utf-8")]
            chars[-1] += "</w>"
            tokens.extend(self.encoder[c] for c in chars)
        return tokens


def create_tokenizer(context_length: int = CONTEXT_LENGTH, prompts=None):
    """The CLIP BPE tokenizer, or (with a warning) a word vocabulary from ``prompts`` when its file is missing."""
    path = default_bpe_path()
    if path is not None:
        return _cached_bpe(str(path), context_length)
    warnings.warn(f"CLIP BPE file {BPE_FILE} not found (pip install open_clip_torch): using a minimal word "
                  f"vocabulary built from the run's prompts; its ids are not CLIP's", stacklevel=2)
    return MinimalTokenizer(prompts or [], context_length)


@lru_cache(maxsize=4)
def _cached_bpe(path: str, context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(path, context_length)


def own_vocabulary(tokenizer) -> dict:
    """What a checkpoint must keep to tokenize as its run did: a :class:`MinimalTokenizer`'s words (its ids follow
    the prompts it was built from, which another command's prompts would not reproduce); nothing for CLIP's BPE."""
    return {VOCABULARY_KEY: list(tokenizer.encoder)} if isinstance(tokenizer, MinimalTokenizer) else {}


def tokenize(texts, context_length: int = CONTEXT_LENGTH, truncate: bool = False) -> torch.LongTensor:
    """Tokenize with the default tokenizer (CLIP BPE): a ``(N, context_length)`` LongTensor. Without the BPE file,
    with a warning, CLIP's bytes without merges (:class:`ByteTokenizer`).

    Example:
        >>> tokenize("a photo of a cat")[0, :7].tolist()
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    path = default_bpe_path()
    if path is None:
        warnings.warn(f"CLIP BPE file {BPE_FILE} not found (pip install open_clip_torch): tokenizing into CLIP's "
                      f"byte tokens without merges; its ids are not CLIP BPE's", stacklevel=2)
        return ByteTokenizer(context_length)(texts, context_length, truncate)
    return _cached_bpe(str(path), context_length)(texts, context_length, truncate)


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Cut the padding (id 0) columns after the longest text: exact under the causal mask, and undone by padding
    with 0 again (what a model with a fixed context, such as open_clip's, does; :mod:`bench.clip.pretrained`).

    For CLIP's BPE the last column kept is the longest text's end-of-text token. Padding is found, not assumed
    from the end-of-text id being the largest, so other tokenizers (open_clip's Hugging Face ones) trim safely.
    """
    used = (tokens != 0).any(dim=0).nonzero()
    return tokens[:, :int(used.max()) + 1 if len(used) else 1]
