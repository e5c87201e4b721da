"""Pretrained CLIPs under bench's protocol: an open_clip model (``bench eval --open-clip``) and an OpenAI-format
state dict (``bench eval FILE``) give open_clip's own zero-shot logits, land in runs.csv as rows that compare and
report read like any run's, and bad names or files are one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import bench
import bench.testing

from tests.support.runs import TINY

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)

# A small ResNet CLIP in open_clip's config format: 64-px input (so the 32-px test images are resized, bicubic),
# QuickGELU and text heads of width 64 as OpenAI's build_model infers them, so its state dict is OpenAI-format too.
CONFIG = {"embed_dim": 32, "quick_gelu": True,
          "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
N_IMAGES = 12


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """(config file, weights file, open_clip model, its eval transform, its tokenizer): randomly initialised
    with a fixed seed and saved as open_clip's own state dict."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / "tiny-rn.json"
    config.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-rn", pretrained=None)
    with torch.no_grad():  # the random init leaves logit-relevant parts at zero; give every tensor some signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    weights = folder / "tiny-rn.pt"
    torch.save(model.state_dict(), weights)
    return config, weights, model.eval(), preprocess, open_clip.get_tokenizer("tiny-rn")


@pytest.fixture(scope="module")
def theirs(tiny_open_clip):
    """open_clip's own zero-shot logits of the tiny model on the synthetic test images under the openai templates,
    computed once: each test that compares a bench path with them only reads them."""
    _, _, model, preprocess, tokenizer = tiny_open_clip
    return open_clip_logits(model, preprocess, tokenizer, synthetic_test(), openai_templates())


def synthetic_test(n=N_IMAGES):
    from bench.host.manager import get_entry

    return get_entry("datasets", "synthetic").create("test", None, 0).subset(n)


def open_clip_logits(model, preprocess, tokenizer, test, templates) -> torch.Tensor:
    """open_clip's own zero-shot: its transform on each PIL image, its classifier builder, 100 x cosine."""
    import open_clip
    from PIL import Image

    images = torch.stack([preprocess(Image.fromarray(a)) for a in np.asarray(test.images)])  # NHWC uint8
    with torch.no_grad():
        feats = F.normalize(model.encode_image(images), dim=-1)
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, list(test.classes), list(templates),
                                                          num_classes_per_batch=None)
    return 100.0 * feats @ classifier


def openai_templates():
    from bench.host.manager import get_entry

    return get_entry("templates", "openai").create()


def test_open_clip_through_bench_gives_open_clips_own_logits(tiny_open_clip, theirs):
    """bench's zero-shot path (uint8 images -> the model's transform, trimmed tokens padded back, ensembled
    classifier) on an open_clip model gives open_clip's own logits on the same images, to float32 rounding."""
    from bench.clip.pretrained import load_open_clip
    from bench.data.loader import to_device_uint8
    from bench.evaluation.zero_shot import build_zero_shot_classifier, image_features

    config, weights, model, preprocess, tokenizer = tiny_open_clip
    test, templates = synthetic_test(), openai_templates()
    adapted, bench_tokenizer, info = load_open_clip(str(config), str(weights), torch.device("cpu"))
    assert (info["name"], info["image_size"], info["interpolation"]) == ("tiny-rn", 64, "bicubic")
    feats = image_features(adapted, to_device_uint8(test.images, torch.device("cpu")))
    classifier = build_zero_shot_classifier(adapted, list(test.classes), templates, bench_tokenizer, "cpu")
    ours = 100.0 * feats @ classifier
    assert theirs.std() > 0.1  # the logits separate classes, so equality is not between two constants
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # a run, an open_clip eval, compare and report
def test_bench_eval_open_clip_appends_a_row_that_compare_and_report_read(tiny_open_clip, theirs, tmp_path, run_cli):
    """``bench eval --open-clip CONFIG --pretrained FILE`` writes one runs.csv row (encoder, pretrained file and
    digest, params, preprocessing; no training columns) whose top-1 and saved predictions are open_clip's own;
    ``bench compare --split-by encoder`` and ``bench report`` take it next to a trained run."""
    config, weights, model, preprocess, tokenizer = tiny_open_clip
    results = tmp_path / "results"
    code, _, err = run_cli("run", "--dataset", "synthetic", "--epochs", "1", "--limit-train", "64", "--limit-test",
                           N_IMAGES, "--batch-size", "16", "--device", "cpu", "--templates", "openai", *TINY,
                           "--out", results)
    assert code == 0, err
    code, stdout, err = run_cli("eval", "--open-clip", config, "--pretrained", weights, "--dataset", "synthetic",
                                "--limit-test", N_IMAGES, "--results", results, "--device", "cpu")
    assert code == 0, err
    rows = pd.read_csv(results / "runs.csv")
    assert len(rows) == 2
    row = rows[rows["encoder"] == "open_clip:tiny-rn"].iloc[0]
    labels = torch.as_tensor(synthetic_test().labels)
    assert row["zeroshot_top1"] == pytest.approx(float((theirs.argmax(1) == labels).float().mean()))
    assert (row["pretrained"], row["params"], row["image_size"]) == ("tiny-rn.pt", sum(
        p.numel() for p in model.parameters()), 64)
    assert row["preset"] == "pretrained" and row["templates"] == "openai" and len(row["pretrained_sha256"]) == 12
    assert all(pd.isna(row[c]) for c in ("epochs", "lr", "seed", "train_seconds", "final_train_loss"))
    from bench.results.predictions import FILENAME, load_predictions

    _, top1 = load_predictions(results / "runs" / row["run_id"] / FILENAME)
    assert top1.tolist() == theirs.argmax(1).tolist()
    assert "zeroshot_top1" in stdout and "open_clip:tiny-rn" in stdout

    code, stdout, err = run_cli("compare", results, "--split-by", "encoder", "--results", results)
    assert code == 0, err
    assert "open_clip:tiny-rn" in stdout and "modified_resnet" in stdout
    code, _, err = run_cli("report", "--results", results, "--out", tmp_path / "report")
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "open_clip:tiny-rn" in report and "modified_resnet" in report


def test_an_openai_format_state_dict_is_evaluated_with_openais_preprocessing(tiny_open_clip, theirs, tmp_path, run_cli):
    """The same weights as an OpenAI-format state dict, given to ``bench eval FILE``, load through bench's own
    build_model and ModifiedResNet, at their 64-px input with OpenAI's bicubic resize and mean/std, and give
    open_clip's top-1 and per-image logits (two implementations of one architecture agreeing)."""
    from bench.clip.pretrained import load_openai_state_dict
    from bench.data.loader import to_device_uint8
    from bench.evaluation.zero_shot import build_zero_shot_classifier, image_features
    from bench.host.manager import get_entry

    _, weights, model, preprocess, tokenizer = tiny_open_clip
    test, templates = synthetic_test(), openai_templates()
    state = torch.load(weights, weights_only=True)
    adapted, info = load_openai_state_dict(state, torch.device("cpu"))
    assert info["image_size"] == 64 and info["normalization"].startswith("mean=0.4815")
    feats = image_features(adapted, to_device_uint8(test.images, torch.device("cpu")))
    bpe = get_entry("tokenizers", "clip_bpe").create(77, [])
    ours = 100.0 * feats @ build_zero_shot_classifier(adapted, list(test.classes), templates, bpe, "cpu")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)

    code, stdout, err = run_cli("eval", weights, "--dataset", "synthetic", "--limit-test", N_IMAGES, "--device", "cpu",
                                "--format", "json")
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert row["encoder"] == "openai_state_dict" and row["image_size"] == 64 and row["eval_templates"] == "openai"
    labels = torch.as_tensor(test.labels)
    assert row["zeroshot_top1"] == pytest.approx(float((theirs.argmax(1) == labels).float().mean()))
    # bench predict needs a run's class names, which a state dict has not: one line that says so
    from PIL import Image

    Image.fromarray(np.asarray(test.images)[0]).save(tmp_path / "one.png")
    code, _, err = run_cli("predict", weights, tmp_path / "one.png")
    assert code == 2 and "is an OpenAI-layout state dict, which names no classes to predict" in err


def test_open_clip_weights_as_safetensors_are_read(tiny_open_clip, theirs, tmp_path, run_cli):
    """``--pretrained FILE.safetensors`` (the file open_clip's Hub weights come as, open_clip_model.safetensors, and
    which open_clip itself loads) gives the same row as the weights saved by torch.save. (It was refused as "not a
    readable torch file", so the offline way a failed download names did not work for those weights.)"""
    from safetensors.torch import save_file

    config, weights, model, preprocess, tokenizer = tiny_open_clip
    safetensors = tmp_path / "open_clip_model.safetensors"
    save_file(torch.load(weights, weights_only=True), safetensors)
    code, _, err = run_cli("eval", "--open-clip", config, "--pretrained", safetensors, "--dataset", "synthetic",
                           "--limit-test", N_IMAGES, "--results", tmp_path / "results", "--device", "cpu")
    assert code == 0, err
    (row,) = pd.read_csv(tmp_path / "results" / "runs.csv").to_dict("records")
    labels = torch.as_tensor(synthetic_test().labels)
    assert row["zeroshot_top1"] == pytest.approx(float((theirs.argmax(1) == labels).float().mean()))
    assert row["pretrained"] == "open_clip_model.safetensors"


class SlashedTemplates:
    """A template set named with a namespace, as docs/plugins.md advises plugins to name theirs."""

    @bench.hookimpl
    def register_templates(self, register):
        register("mine/short", lambda: ["a {}", "a photo of a {}"], "two short prompts")


def test_a_template_set_named_with_a_slash_gets_one_run_folder_named_by_its_row(tiny_open_clip, tmp_path, run_cli):
    """A pretrained model evaluated with a plugin's ``mine/short`` set records one run folder directly under runs/,
    named by its row's run id: a ``/`` in the id made a nested folder that bench results then counted as a run
    stopped before its first checkpoint, and the row's run id named no folder."""
    config, weights, *_ = tiny_open_clip
    results = tmp_path / "results"
    with bench.testing.plugin_registered(SlashedTemplates()):
        code, _, err = run_cli("eval", "--open-clip", config, "--pretrained", weights, "--dataset", "synthetic",
                               "--templates", "mine/short", "--limit-test", N_IMAGES, "--results", results,
                               "--device", "cpu")
        assert code == 0, err
        (row,) = pd.read_csv(results / "runs.csv").to_dict("records")
        assert row["templates"] == "mine/short"
        assert [p.name for p in (results / "runs").iterdir()] == [row["run_id"]]
        assert (results / "runs" / row["run_id"] / "result.json").is_file()
        code, _, err = run_cli("results", results)
        assert code == 0 and "no row" not in err, err


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_pretrained_model_reports_seen_and_unseen_top1_on_a_named_split(tiny_open_clip, theirs, tmp_path, run_cli):
    """``--holdout-classes red,blue`` with --open-clip: no training, so the split only says which test images count as
    unseen; the row's seen/unseen/harmonic top-1 are open_clip's own predictions read that way, and it records the
    split as a held-out run does (so the two compare on the same split)."""
    config, weights, model, preprocess, tokenizer = tiny_open_clip
    results = tmp_path / "results"
    code, _, err = run_cli("eval", "--open-clip", config, "--pretrained", weights, "--dataset", "synthetic",
                           "--limit-test", N_IMAGES, "--results", results, "--device", "cpu",
                           "--holdout-classes", "red,blue")
    assert code == 0, err
    (row,) = pd.read_csv(results / "runs.csv").to_dict("records")
    labels = synthetic_test().labels
    hits, unseen = theirs.argmax(1).numpy() == labels, np.isin(labels, [0, 5])  # red and blue
    assert unseen.any() and (~unseen).any()
    seen, held = hits[~unseen].mean(), hits[unseen].mean()
    harmonic = 0.0 if 0 in (seen, held) else 2 * seen * held / (seen + held)
    assert [row["seen_top1"], row["unseen_top1"], row["harmonic_top1"]] == pytest.approx([seen, held, harmonic])
    # the split as bench run keeps it (names sorted, so red,blue and blue,red are one configuration); the unseen
    # classes in the dataset's order
    assert (row["holdout_classes"], row["unseen_classes"], row["eval_dataset"]) == ("blue,red", "red,blue",
                                                                                   "synthetic")
    code, _, err = run_cli("eval", "--open-clip", config, "--pretrained", weights, "--dataset", "synthetic",
                           "--limit-test", N_IMAGES, "--results", results, "--device", "cpu",
                           "--holdout-classes", "blue,red")
    rows = pd.read_csv(results / "runs.csv")
    assert code == 0 and rows["config_id"].nunique() == 1 and rows["holdout_classes"].tolist() == ["blue,red"] * 2
    # a dataset that cannot be evaluated (no such class there) stops before any row: the table is as it was
    code, _, err = run_cli("eval", "--open-clip", config, "--pretrained", weights, "--dataset", "synthetic,cifar10",
                           "--limit-test", N_IMAGES, "--results", results, "--device", "cpu",
                           "--holdout-classes", "red,blue")
    assert code == 2 and len(pd.read_csv(results / "runs.csv")) == 2, err


@pytest.mark.parametrize("args, message", [
    (["--open-clip", "RN5O", "--pretrained", "openai"], "unknown open_clip model 'RN5O'; did you mean RN50"),
    (["--open-clip", "RN50", "--pretrained", "laion9b"], "open_clip has no pretrained tag 'laion9b' for RN50 "
                                                         "(its tags: openai, yfcc15m, cc12m)"),
    (["--open-clip", "RN50", "--pretrained", "missing/weights.pt"], "--pretrained missing/weights.pt: no such weights "
                                                                    "file"),
    (["--open-clip", "RN50"], "--open-clip needs --pretrained TAG_OR_FILE"),
    (["--pretrained", "openai"], "bench eval takes a CHECKPOINT or --open-clip MODEL"),
    (["--open-clip", "tiny-rn.json", "--pretrained", "garbage.pt"], "is not a readable torch file"),
    (["--open-clip", "tiny-rn.json", "--pretrained", "other.pt"], "does not fit open_clip tiny-rn"),
    (["--open-clip", "tiny-rn.json", "--pretrained", "cut.safetensors"], "is not a readable safetensors file"),
])
def test_bad_open_clip_names_and_files_are_one_line_errors(args, message, tmp_path, run_cli):
    """exit 2, one line naming the problem and the fix, nothing downloaded and nothing written."""
    (tmp_path / "tiny-rn.json").write_text(json.dumps(CONFIG))
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file at all" * 10)
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    from safetensors.torch import save_file

    save_file({"visual.conv1.weight": torch.zeros(64, 64)}, tmp_path / "cut.safetensors")
    whole = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[:len(whole) // 2])  # a download cut short
    code, _, err = run_cli("eval", *args, "--dataset", "synthetic", "--results", tmp_path / "results")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results" / "runs.csv").exists()


@pytest.mark.slow  # a bench process that imports open_clip
def test_a_failed_download_is_one_line_that_names_the_offline_way(tmp_path, monkeypatch):
    """A tag open_clip cannot fetch (no network: the Hub offline) is one line on stderr, with none of open_clip's
    or huggingface_hub's log records (a real process, so real stderr), naming how to evaluate from a local file."""
    from tests.support.processes import spawn_bench

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to find offline
    proc = spawn_bench("eval", "--open-clip", "RN50", "--pretrained", "cc12m", "--dataset", "synthetic",
                       "--results", tmp_path / "results")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "could not fetch open_clip weights RN50/cc12m" in err and "--pretrained FILE" in err
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_each_open_clip_resize_mode_reports_its_image_size_and_bad_weight_files_are_one_line(tmp_path):
    """open_clip's "squash" transform (48 of its tags) has no crop and "longest" crops or pads: the row's image_size
    comes from each; a file whose keys are not names, or an OpenAI-layout dict with a tensor of another shape,
    is one line, not a traceback."""
    from open_clip.transform import image_transform

    from bench.clip.pretrained import _load_weights_file, _transform_facts, load_openai_state_dict
    from bench.errors import BenchError

    for mode in ("shortest", "squash", "longest"):
        assert _transform_facts(image_transform(96, False, resize_mode=mode))[:2] == (96, "bicubic"), mode
    torch.save({0: torch.zeros(3)}, tmp_path / "intkeys.pt")
    with pytest.raises(BenchError, match="holds no state dict"):
        _load_weights_file(torch.nn.Linear(1, 1), tmp_path / "intkeys.pt", "tiny")
    bad = {"positional_embedding": torch.zeros(77, 8), "text_projection": torch.zeros(8),
           "token_embedding.weight": torch.zeros(10, 8)}
    with pytest.raises(BenchError, match="build_model cannot load it"):
        load_openai_state_dict(bad, "cpu")


def test_weights_that_do_not_fit_name_what_did_not_fit(tiny_open_clip, tmp_path):
    """An open_clip weights file, or an OpenAI-layout state dict, that does not fit the model is one line whose cause
    names what did not fit: the first missing key, the first unexpected key, the first tensor of another shape (the
    file's shape and the model's), a weight that is no tensor; never torch's bare header ("Error(s) in loading
    state_dict for CLIP:") nor an empty cause."""
    import copy

    from bench.clip.pretrained import _load_weights_file, load_openai_state_dict
    from bench.errors import BenchError

    _, _, model, _, _ = tiny_open_clip
    own = model.state_dict()
    first = next(iter(own))
    cases = {
        "missing": ({k: v for k, v in own.items() if k != first}, f"1 tensor missing (first {first})"),
        "extra": ({**own, "extra.weight": torch.zeros(1)}, "1 unexpected (first extra.weight)"),
        "shape": ({**own, "visual.conv1.weight": torch.zeros(3)},
                  (f"1 tensor differs in shape (first visual.conv1.weight: [3] in the file, "
                   f"{list(own['visual.conv1.weight'].shape)} here)")),
        "not a tensor": ({**own, "logit_scale": 3}, "its weight 'logit_scale' is an int, not a tensor"),
    }
    for case, (state, detail) in cases.items():
        torch.save(state, tmp_path / "w.pt")
        with pytest.raises(BenchError) as caught:
            _load_weights_file(copy.deepcopy(model), tmp_path / "w.pt", "tiny-rn")
        message = str(caught.value)
        assert f"does not fit open_clip tiny-rn ({detail}" in message and "Error(s)" not in message, (case, message)
        assert "()" not in message and len(message.splitlines()) == 1, (case, message)
    # the same weights as an OpenAI-layout dict (this config is one): build_model's strict load, and the tensors its
    # shapes are read from
    for state, detail in (({k: v for k, v in own.items() if k != "logit_scale"}, "1 tensor missing (first logit_scale)"),
                          ({**own, "extra.weight": torch.zeros(1)}, "1 unexpected (first extra.weight)"),
                          ({k: v for k, v in own.items() if k != "ln_final.weight"}, "it has no 'ln_final.weight'")):
        with pytest.raises(BenchError, match="build_model cannot load it") as caught:
            load_openai_state_dict(state, "cpu")
        assert f"({detail}" in str(caught.value), str(caught.value)


def test_one_line_cause_keeps_the_detail_an_exception_puts_after_its_header():
    """A cause whose first line only introduces the next (torch's load_state_dict error) keeps the first detail line;
    an exception with an empty message is its type name, not "KeyError: " with nothing after it."""
    from bench.errors import one_line_cause

    with pytest.raises(RuntimeError) as caught:
        torch.nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)})
    assert one_line_cause(caught.value).startswith("RuntimeError: Error(s) in loading state_dict for Linear: size "
                                                   "mismatch for weight: copying a param with shape torch.Size([3, 2])")
    assert one_line_cause(KeyError()) == "KeyError"
    assert one_line_cause(ValueError("first\nsecond")) == "ValueError: first"
