"""The text tower at evaluation: each distinct prompt encoded once per evaluation, at the longest prompt's length.

A recorder wraps ``CLIP.encode_text`` and keeps the token tables it was given; the tests count them."""
import numpy as np
import pytest
import torch

from bench.clip.model import CLIP, create_model
from bench.clip.templates import OPENAI_CIFAR10_TEMPLATES, SEED_TEMPLATES, fill
from bench.clip.tokenizer import create_tokenizer
from bench.data.corruptions import PROTOCOL
from bench.data.datasets import CIFAR10_CLASSES, ArrayDataset


@pytest.fixture
def encoded(monkeypatch):
    """Every token table bench's text tower encodes, in order."""
    tables = []
    plain = CLIP.encode_text

    def recording(self, text):
        tables.append(text.clone())
        return plain(self, text)

    monkeypatch.setattr(CLIP, "encode_text", recording)
    return tables


def tiny(width=32, heads=2):
    torch.manual_seed(0)
    return create_model(embed_dim=16, transformer_width=width, transformer_heads=heads, transformer_layers=1,
                        encoder_opts={"width": 8}).eval()


def split(n=24):
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10, CIFAR10_CLASSES,
                        "cifar10/test")


def prompts_encoded(tables) -> list[tuple]:
    """Each row of every table, up to its end-of-text token: one tuple per prompt the text tower encoded."""
    return [tuple(row[:end + 1]) for table in tables for row, end in zip(table.tolist(), table.argmax(-1).tolist())]


def tokenizer_for(templates):
    return create_tokenizer(77, fill(templates, CIFAR10_CLASSES))


def test_the_suite_encodes_each_prompt_once_for_retrieval_and_robustness(encoded):
    """Retrieval's captions and robustness's classifier are one prompt table: the text tower encodes each of its
    prompts once, not once per evaluation that uses it."""
    from bench.evaluation.suite import SuiteOptions, run_suite

    test = split()
    opts = SuiteOptions(evals=("retrieval", "robustness"), robust_limit=8, robust_severities=(1,),
                        corruptions=("gaussian_noise", "contrast"))
    run_suite(tiny(), opts, train=test, test=test, templates=list(SEED_TEMPLATES),
              tokenizer=tokenizer_for(SEED_TEMPLATES), device="cpu")
    prompts = prompts_encoded(encoded)
    assert len(prompts) == len(set(prompts)) == len(CIFAR10_CLASSES) * len(SEED_TEMPLATES)


def test_bench_eval_encodes_each_prompt_of_a_set_once_for_its_rows_and_suite(encoded):
    """``bench eval --per-template --suite retrieval,robustness``: the set's classifier, each single template's and
    the suite's come from one encoding of the set's prompts, trimmed to its longest prompt; the numbers are those of
    encoding each single template's prompts on their own."""
    from bench.app.evaluate import evaluate_sets
    from bench.evaluation.suite import SuiteOptions
    from bench.evaluation.zero_shot import build_zero_shot_classifier, image_features

    model, test, tokenizer = tiny(), split(), tokenizer_for(OPENAI_CIFAR10_TEMPLATES)
    sets = {"openai": list(OPENAI_CIFAR10_TEMPLATES)}
    suite = SuiteOptions(evals=("retrieval", "robustness"), robust_limit=8, robust_severities=(1,),
                         corruptions=("gaussian_noise",))
    result = evaluate_sets(model, tokenizer, test, sets, "cpu", None, per_template=True, suite=suite)
    prompts = prompts_encoded(encoded)
    assert len(prompts) == len(set(prompts)) == len(CIFAR10_CLASSES) * len(OPENAI_CIFAR10_TEMPLATES)
    assert len(encoded) == 1 and encoded[0].shape[1] == int(encoded[0].argmax(-1).max()) + 1  # no padding column

    feats = image_features(model, torch.from_numpy(test.images).permute(0, 3, 1, 2).contiguous())
    for i, template in enumerate(OPENAI_CIFAR10_TEMPLATES[:3]):
        alone = build_zero_shot_classifier(model, CIFAR10_CLASSES, [template], tokenizer, "cpu")
        row = next(r for r in result.rows if r["eval_templates"] == f"openai[{i}]")
        top1 = float(((feats @ alone).argmax(1) == torch.as_tensor(test.labels)).float().mean())
        assert row["zeroshot_top1"] == pytest.approx(top1)


def test_an_openai_state_dicts_text_tower_sees_prompts_trimmed_not_padded_to_77(encoded):
    """``bench eval STATE_DICT`` loads an OpenAI state dict as bench's own CLIP, which takes the trimmed table as it
    is (its causal mask makes the cut padding irrelevant): no column past the longest prompt, and the same classifier
    as the padded 77-token computation."""
    from bench.clip.pretrained import load_openai_state_dict
    from bench.evaluation.zero_shot import build_zero_shot_classifier

    adapted, info = load_openai_state_dict(tiny(width=64, heads=1).state_dict(), torch.device("cpu"))
    assert info["context_length"] == 77
    templates, tokenizer = list(OPENAI_CIFAR10_TEMPLATES), tokenizer_for(OPENAI_CIFAR10_TEMPLATES)
    classifier = build_zero_shot_classifier(adapted, CIFAR10_CLASSES, templates, tokenizer, "cpu")
    (table,) = encoded
    assert table.shape[1] == int(table.argmax(-1).max()) + 1 < 77
    padded = torch.nn.functional.pad(table, (0, 77 - table.shape[1]))
    with torch.no_grad():
        full = torch.nn.functional.normalize(adapted.model.encode_text(padded), dim=-1)
    reference = torch.nn.functional.normalize(full.view(10, len(templates), -1).mean(1), dim=-1).t()
    torch.testing.assert_close(classifier, reference, rtol=1e-5, atol=1e-5)


def test_a_runs_final_weights_encode_each_prompt_once(encoded, tmp_path):
    """``bench run`` on an encoder with test-time augmentation and ``--evals retrieval,robustness``: the last epoch's
    evaluation, the one without test-time augmentation and the suite all read one encoding of the prompt table under
    the final weights (each earlier evaluated epoch has its own)."""
    from bench.app.run import run
    from bench.config import make_config

    model = {"encoder": "airbench", "encoder_opts": (("widths", (8, 16, 16)),), "embed_dim": 16, "width": 32,
             "heads": 2, "layers": 1}
    cfg = make_config("smoke", model=model,
                      dataset="synthetic", epochs=2, limit_train=32, limit_test=16, batch_size=16, progress=False,
                      save_checkpoints=False, evals=("retrieval", "robustness"), robust_limit=8, robust_severities=(1,),
                      out=str(tmp_path / "results"))
    row = run(cfg)
    assert "zeroshot_top1_no_tta" in row and "retrieval_i2t_r1" in row and "robust_mean" in row
    assert row["robust_protocol"] == PROTOCOL  # what bench compare checks before it sets robust_* side by side
    assert len(encoded) == 2  # epoch 1's evaluation; epoch 2's, shared by everything after it
    prompts = prompts_encoded(encoded[1:])
    assert len(prompts) == len(set(prompts)) == len(encoded[0])
