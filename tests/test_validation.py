"""Bad input to any command: exit code 2, one line naming the problem and the fix, and nothing on disk changes."""
from __future__ import annotations

import shutil

import pytest
import torch

from .robust_support import one_thread  # noqa: F401  (autouse: one torch thread in this module)
from .robust_support import FLAGS, finished_run, run_dir_of, snapshot


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with one finished run: what bad commands must leave exactly as it is."""
    out = tmp_path_factory.mktemp("validation") / "results"
    shutil.copytree(finished_run(tmp_path_factory.getbasetemp()), out)
    return out


# -- inputs the cases point at, made in the case's own folder -------------------------------------------------
def _file(tmp):
    (tmp / "afile").write_text("not a folder\n")


def _corrupt_data(tmp):
    (tmp / "data").mkdir()
    for split in ("train", "test"):
        (tmp / "data" / f"{split}.npz").write_bytes(b"PK\x03\x04 this zip was cut short")


def _foreign_results(tmp):
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "runs.csv").write_text("name,score\nalice,3\n")


def _binary(tmp):
    (tmp / "blob.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00")


def _not_image(tmp):
    (tmp / "notes.txt").write_text("a caption, not a picture\n")


def _image(tmp):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp / "img.png")


def _garbage_checkpoint(tmp):
    (tmp / "garbage.pt").write_bytes(b"\x00\x01 this is no torch file" * 10)


def _edited_checkpoint(edit):
    def make(tmp, ckpt):
        payload = torch.load(ckpt, weights_only=True)
        edit(payload)
        torch.save(payload, tmp / "other.pt")

    make.needs_checkpoint = True
    return make


def _wider_embedding(payload):  # the config now builds another architecture than the weights hold
    payload["config"]["model"]["embed_dim"] = 64


def _smaller_vocab(payload):  # weights trained with another tokenizer's vocabulary
    payload["model"]["token_embedding.weight"] = payload["model"]["token_embedding.weight"][:1000].clone()


RUN = ["run", *FLAGS, "--out", "{out}"]

# (id, command line, what the one-line message must say, setup of the inputs it points at)
CASES = [
    ("unknown-encoder", RUN + ["--encoder", "resnet9000"], "unknown encoder 'resnet9000'", None),
    ("unknown-templates", RUN + ["--templates", "nope"], "unknown template set 'nope'", None),
    ("unknown-tokenizer", RUN + ["--tokenizer", "nope"], "unknown tokenizer 'nope'", None),
    ("unknown-dataset", RUN + ["--dataset", "imagenet22k"], "unknown dataset 'imagenet22k'", None),
    ("unknown-preset", RUN + ["--preset", "fastest"], "unknown preset 'fastest'", None),
    ("zero-epochs", RUN + ["--epochs", "0"], "--epochs must be at least 1", None),
    ("negative-batch", RUN + ["--batch-size", "-8"], "--batch-size must be at least 2", None),
    ("batch-over-data", RUN + ["--batch-size", "128"], "batch size 128 is larger than the 64 training images", None),
    ("zero-lr", RUN + ["--lr", "0"], "--lr must be in (0, 1]", None),
    ("huge-lr", RUN + ["--lr", "3"], "--lr must be in (0, 1]", None),
    ("negative-wd", RUN + ["--weight-decay", "-0.1"], "--weight-decay must be in [0, 1]", None),
    ("full-label-smoothing", RUN + ["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)", None),
    ("negative-crop-pad", RUN + ["--crop-pad", "-1"], "--crop-pad must be in [0, 32) for 32-pixel images", None),
    ("cutout-over-image", RUN + ["--cutout", "33"], "--cutout must be in [0, 32] for 32-pixel images", None),
    ("zero-limit-train", RUN + ["--limit-train", "0"], "--limit-train must be at least 1", None),
    ("negative-limit-test", RUN + ["--limit-test", "-5"], "--limit-test must be at least 1", None),
    ("zero-eval-every", RUN + ["--eval-every", "0"], "--eval-every must be at least 1", None),
    ("negative-warmup", RUN + ["--warmup-steps", "-1"], "--warmup-steps must be >= 0", None),
    ("negative-seed", RUN + ["--seed", "-1"], "--seed must be >= 0", None),
    ("unknown-device", RUN + ["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N", None),
    ("heads-vs-width", RUN + ["--text-heads", "3"], "must be a multiple of --text-heads (3)", None),
    ("unknown-encoder-opt", RUN + ["--encoder-opt", "depth=3"], "takes no option 'depth'", None),
    ("malformed-encoder-opt", RUN + ["--encoder-opt", "width"], "is not KEY=VALUE", None),
    ("not-an-int", RUN + ["--epochs", "two"], "'two' is not a valid integer", None),
    ("bad-precision", RUN + ["--precision", "fp64"], "'fp64' is not one of", None),
    ("negative-checkpoint-every", RUN + ["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0", None),
    ("zero-grad-norm", RUN + ["--max-grad-norm", "0"], "--max-grad-norm must be a positive number", None),
    ("nan-grad-norm", RUN + ["--max-grad-norm", "nan"], "--max-grad-norm must be a positive number", None),
    ("missing-data-dir", RUN + ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"], "is not a folder", None),
    ("corrupt-data-dir", RUN + ["--dataset", "cifar10", "--data-dir", "{tmp}/data"], "is not a readable CIFAR-10 .npz",
     _corrupt_data),
    ("out-is-a-file", ["run", *FLAGS, "--out", "{tmp}/afile"], "is a file, not a folder", _file),
    ("out-under-a-file", ["run", *FLAGS, "--out", "{tmp}/afile/results"], "is a file, not a folder", _file),
    ("out-has-foreign-table", ["run", *FLAGS, "--out", "{tmp}/foreign"], "is not a bench results table",
     _foreign_results),
    ("resume-unknown-run", ["run", "--resume", "no-such-run", "--out", "{out}"], "is neither a run id", None),
    ("resume-with-new-settings", ["run", "--resume", "{run_dir}", "--epochs", "5"], "drop --epochs", None),
    ("resume-finished-run", ["run", "--resume", "{run_dir}"], "already finished", None),
    ("resume-latest-none-left", ["run", "--resume", "latest", "--out", "{out}"], "no unfinished run", None),
    ("eval-missing-checkpoint", ["eval", "{tmp}/missing.pt"], "does not exist", None),
    ("eval-not-a-checkpoint", ["eval", "{tmp}/garbage.pt"], "is not a readable torch file", _garbage_checkpoint),
    ("eval-other-architecture", ["eval", "{tmp}/other.pt"], "tensors differ in shape (first text_projection",
     _edited_checkpoint(_wider_embedding)),
    ("eval-other-vocab", ["eval", "{tmp}/other.pt"], "its text vocabulary has 1000 tokens",
     _edited_checkpoint(_smaller_vocab)),
    ("eval-unknown-templates", ["eval", "{ckpt}", "--templates", "seed,nope"], "unknown template set 'nope'", None),
    ("eval-unknown-dataset", ["eval", "{ckpt}", "--dataset", "nope"], "unknown dataset 'nope'", None),
    ("eval-zero-limit", ["eval", "{ckpt}", "--limit-test", "0"], "--limit-test must be at least 1", None),
    ("eval-unknown-device", ["eval", "{ckpt}", "--device", "tpu"], "--device must be auto", None),
    ("predict-not-an-image", ["predict", "{ckpt}", "{tmp}/notes.txt"], "is not an image PIL can read", _not_image),
    ("predict-missing-image", ["predict", "{ckpt}", "{tmp}/missing.png"], "does not exist", None),
    ("predict-zero-top-k", ["predict", "{ckpt}", "{tmp}/img.png", "--top-k", "0"], "--top-k must be at least 1", _image),
    ("results-foreign-table", ["results", "{tmp}/foreign/runs.csv"], "is not a bench results table", _foreign_results),
    ("results-binary-file", ["results", "{tmp}/blob.csv"], "is not a results table", _binary),
    ("results-missing", ["results", "{tmp}/nowhere"], "is not a file or folder", None),
]


def test_the_table_is_large_enough():
    """The issue asks for at least 20 bad-input cases; ids must be unique to read failures."""
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args, expected, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(args, expected, setup, results, tmp_path, run_cli):
    """Each bad input: exit 2, a single 'bench: error:' line with the cause, no traceback, no file touched."""
    run_dir = run_dir_of(results)
    ckpt = run_dir / "best.pt"
    if setup is not None:
        setup(tmp_path, ckpt) if getattr(setup, "needs_checkpoint", False) else setup(tmp_path)
    before = snapshot(results), snapshot(tmp_path)
    values = {"out": results, "tmp": tmp_path, "run_dir": run_dir, "ckpt": ckpt}
    code, stdout, stderr = run_cli(*[a.format(**values) for a in args])
    assert code == 2, stderr
    assert stderr.startswith("bench: error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr, stderr
    assert stdout == ""
    assert (snapshot(results), snapshot(tmp_path)) == before
