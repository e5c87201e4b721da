"""CLIP BPE ids, context handling, and the fallback vocabulary."""
import io

import pytest
import torch

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


def test_without_the_bpe_file_tokenize_gives_a_text_the_same_ids_whatever_else_it_tokenizes(monkeypatch):
    """tokenize() and collate_fn have no run's prompts to build a word vocabulary from: without the BPE file a text's
    ids must not depend on the other texts of the call (else every batch renumbers its words, and two words of
    different batches share an id). Bytes without merges give CLIP's own ids for them, all below the start and end."""
    from bench import collate_fn

    monkeypatch.setenv("BENCH_BPE_PATH", "/nonexistent/bpe.txt.gz")
    with pytest.warns(UserWarning, match="byte tokens"):
        cat, dog = tokenize("a photo of a cat"), tokenize("a photo of a dog")
        both = tokenize(["a photo of a zebra", "a photo of a cat"])
        batch = collate_fn([(torch.zeros(3), "a photo of a cat", 3)])[1]
    assert not torch.equal(cat, dog)
    assert torch.equal(both[1], cat[0]) and torch.equal(batch, cat)
    ids = cat[0, 1:cat[0].argmax()]
    # a</w> p h o t o</w> o f</w> a</w> c a t</w>, as CLIP's vocabulary numbers them
    assert ids.tolist() == [320, 79, 71, 78, 83, 334, 78, 325, 320, 66, 64, 339]
    assert cat.argmax(dim=1).tolist() == [len(ids) + 1] and cat[0, 0] == SOT_TOKEN_ID


def test_the_merges_read_as_far_as_used_are_the_files_first_lines():
    """The tokenizer decompresses its BPE file only up to the merges CLIP uses: they are the file's lines after its
    header, as reading the whole file gives them, also at the end of the file and past it."""
    import gzip

    from bench.clip.tokenizer import _merge_lines, default_bpe_path

    path = default_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    for count in (0, 1, 48894, len(lines) - 2, len(lines) - 1, len(lines) + 5):
        assert _merge_lines(path, count) == lines[1:count + 1]


def test_the_ascii_fast_path_of_fix_text_equals_ftfy_on_every_prompt_and_random_printable_ascii():
    """Printable ASCII without '&' skips ftfy: on every built-in prompt and on random printable ASCII, that is
    exactly what ftfy.fix_text returns; other text still goes through ftfy (mojibake repaired)."""
    import random
    import string

    import ftfy

    from bench.clip.templates import fill
    from bench.clip.tokenizer import fix_text
    from bench.host.manager import get_registry

    registry = get_registry()
    prompts = [p for name in registry.names("templates") for p in fill(registry.get("templates", name).create(),
                                                                        ["cat", "T-shirt/top", "7", "sweet pepper"])]
    rng = random.Random(0)
    alphabet = string.printable.replace("&", "").replace("\t", "").replace("\n", "").replace("\r", "")
    alphabet = alphabet.replace("\x0b", "").replace("\x0c", "")
    texts = prompts + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    assert all(t.isascii() and t.isprintable() and "&" not in t for t in texts)
    assert [fix_text(t) for t in texts] == [ftfy.fix_text(t) for t in texts]
    assert fix_text("cafÃ©") == ftfy.fix_text("cafÃ©") == "café"  # not ASCII: ftfy's repair
    assert fix_text("fish &amp; chips") == ftfy.fix_text("fish &amp; chips")


@pytest.mark.slow  # a run trained to far above chance, then evaluated
def test_a_run_on_the_fallback_vocabulary_is_evaluated_later_with_its_own_ids(tmp_path, monkeypatch, run_cli,
                                                                                   one_thread):
    """The fallback's ids follow the prompts it was built from, so the checkpoint keeps the run's words: bench eval
    with another template set beside the run's (other words, other sorted ids if rebuilt) gives the run's own
    top-1 on its set. Where the BPE file is missing, a checkpoint trained with CLIP's BPE is refused in one line."""
    import pandas as pd
    import torch

    from tests.support.runs import TINY

    monkeypatch.setenv("BENCH_BPE_PATH", str(tmp_path / "missing.txt.gz"))
    run = ["run", "--dataset", "synthetic", "--epochs", "3", "--limit-train", "960", "--limit-test", "100",
           "--batch-size", "64", "--lr", "3e-3", "--device", "cpu", *TINY, "--encoder-opt", "width=16"]
    with pytest.warns(UserWarning, match="minimal word vocabulary"):
        code, _, err = run_cli(*run, "--out", tmp_path / "res")
    assert code == 0, err
    row = pd.read_csv(tmp_path / "res" / "runs.csv").iloc[0]
    best = next((tmp_path / "res" / "runs").glob("*/best.pt"))
    words = torch.load(best, weights_only=True)["tokenizer_vocabulary"]
    assert "photo" in words and words == sorted(words)
    code, out, err = run_cli("eval", best, "--templates", "seed,openai", "--format", "json")
    assert code == 0, err
    rows = pd.read_json(io.StringIO(out)).set_index("eval_templates")
    metrics = ["zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"]
    assert row["zeroshot_top1"] > 0.5  # far from chance: ids off by one word would not give it again
    assert rows.loc["seed", metrics].tolist() == pytest.approx(row[metrics].tolist(), abs=1e-7)

    monkeypatch.delenv("BENCH_BPE_PATH")
    code, _, err = run_cli(*run, "--epochs", "1", "--limit-train", "32", "--batch-size", "8", "--out", tmp_path / "bpe")
    assert code == 0, err
    monkeypatch.setenv("BENCH_BPE_PATH", str(tmp_path / "missing.txt.gz"))
    code, _, err = run_cli("eval", next((tmp_path / "bpe" / "runs").glob("*/best.pt")))
    assert code == 2 and err.count("\n") == 1 and "the checkpoint's run tokenized with it" in err
