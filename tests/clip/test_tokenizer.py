"""CLIP BPE ids, context handling, and the fallback vocabulary."""
import pytest

from bench import tokenize
from bench.clip.tokenizer import EOT_TOKEN_ID, SOT_TOKEN_ID, MinimalTokenizer, SimpleTokenizer, create_tokenizer
from bench.errors import BenchError


def test_tokenize_matches_openai_clip_ids():
    tokens = tokenize("a photo of a cat")
    assert tokens.shape == (1, 77)
    assert tokens[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokens[0, 7:].eq(0).all()


def test_bpe_splits_rare_words_and_decodes_back():
    tok = SimpleTokenizer()
    ids = tok.encode("Automobile!!")
    assert tok.decode(ids).strip() == "automobile !!"
    assert tok.vocab_size == 49408 and len(tok.encoder) == 49408


def test_over_long_text_is_an_error_unless_truncation_is_asked():
    text = "cat " * 100
    with pytest.raises(BenchError, match="longer than the context of 77"):
        tokenize(text)
    tokens = tokenize(text, truncate=True)
    assert tokens[0, -1] == EOT_TOKEN_ID and tokens[0, 0] == SOT_TOKEN_ID


def test_missing_bpe_file_falls_back_to_a_word_vocabulary_with_a_warning(monkeypatch):
    monkeypatch.setenv("BENCH_BPE_PATH", "/nonexistent/bpe.txt.gz")
    with pytest.warns(UserWarning, match="minimal word vocabulary"):
        tok = create_tokenizer(77, prompts=["a photo of a cat", "a photo of a dog"])
    assert isinstance(tok, MinimalTokenizer)
    ids = tok(["a photo of a dog", "a photo of a zebra"])
    assert ids[0, 0] == SOT_TOKEN_ID and ids[0, 6] == EOT_TOKEN_ID
    assert ids[0, 5] != ids[1, 5] and ids[1, 5] == MinimalTokenizer.UNK  # unseen word
    assert ids.argmax(dim=1).tolist() == [6, 6]  # end-of-text pooling still finds the end


def test_the_merges_read_as_far_as_used_are_the_files_first_lines():
    """The tokenizer decompresses its BPE file only up to the merges CLIP uses: they are the file's lines after its
    header, as reading the whole file gives them, also at the end of the file and past it."""
    import gzip

    from bench.clip.tokenizer import _merge_lines, default_bpe_path

    path = default_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    for count in (0, 1, 48894, len(lines) - 2, len(lines) - 1, len(lines) + 5):
        assert _merge_lines(path, count) == lines[1:count + 1]
