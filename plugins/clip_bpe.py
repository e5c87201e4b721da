"""CLIP's byte-level BPE tokenizer (default), with its fallback word vocabulary."""
from bench import hookimpl


def _clip_bpe(context_length=77, prompts=None):
    from bench.clip.tokenizer import create_tokenizer

    return create_tokenizer(context_length, prompts)


@hookimpl
def register_tokenizers(register):
    register("clip_bpe", _clip_bpe,
             "CLIP byte-level BPE (ftfy + regex), vocab 49408, start/end 49406/49407, context 77; "
             "merges from open_clip_torch's bpe_simple_vocab_16e6.txt.gz")
