"""Bad input to any command: exit code 2, one line naming the problem and the fix, and nothing on disk changes."""
from __future__ import annotations

import copy
import pickle
import shutil

import pytest
import torch

from tests.support.runs import FLAGS, files_left_open, finished_run, run_dir_of, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread in this module (tests/conftest.py)


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


def _lock_folder(tmp):  # runs.csv.lock that cannot be opened for writing (a folder: unwritable even for root)
    (tmp / "locked" / "runs.csv.lock").mkdir(parents=True)
    (tmp / "locked" / "runs").mkdir()


def _emptied_table(tmp):  # a results folder whose runs.csv was emptied: its run records can rebuild it
    (tmp / "emptied" / "runs").mkdir(parents=True)
    (tmp / "emptied" / "runs.csv").write_text("")


def _dangling_link(tmp):  # --out a link whose folder is gone
    (tmp / "dangling").symlink_to(tmp / "gone")


def _binary(tmp):
    (tmp / "blob.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00")


def _pets(tmp, empty=None, broken=None, rename=None):
    """``tmp/pets/{train,test}/{cat,dog}/{0,1}.png``, with one class folder emptied, one image broken or one class
    folder renamed."""
    from PIL import Image

    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp / "pets" / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp / "pets" / split / name / f"{i}.png")
    for f in (tmp / "pets" / empty).iterdir() if empty else ():
        f.unlink()
    if broken:
        (tmp / "pets" / broken).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    if rename:
        (tmp / "pets" / rename[0]).rename(tmp / "pets" / rename[1])


def _not_image(tmp):
    (tmp / "notes.txt").write_text("a caption, not a picture\n")


def _image(tmp):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp / "img.png")


def _garbage_checkpoint(tmp):
    (tmp / "garbage.pt").write_bytes(b"\x00\x01 this is no torch file" * 10)


def _truncated_pickle(cut):
    """A checkpoint in torch's legacy (pickle) format cut off after ``cut`` bytes, as a killed copy leaves it."""
    def make(tmp):
        (tmp / "cut.pt").write_bytes(pickle.dumps({"model": {"w": [1.5, 2.5]}, "config": {}}, protocol=2)[:cut])
    return make


_LOADED = {}  # checkpoint path -> its payload, as torch.load returned it once


def _payload(path):
    """A fresh copy of the checkpoint at ``path``, which never changes in this module: about 20 cases edit the
    finished run's 18 MB last.pt, and loading it once and deep-copying it (each case edits its own) saves ~0.1 s a
    case of the quick tier over a torch.load each."""
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = torch.load(path, weights_only=True)
    return copy.deepcopy(_LOADED[key])


def _edited_checkpoint(edit):
    def make(tmp, ckpt):
        payload = _payload(ckpt)
        edit(payload)
        torch.save(payload, tmp / "other.pt")

    make.needs_checkpoint = True
    return make


def _stopped_copy(edit=None, result=None):
    """The finished run copied as a stopped one, ``{tmp}/stopped/runs/stopped-run`` (no row, no result.json), its
    last.pt saying it is that run's unless ``edit`` changes it; ``result``: a result.json to leave there."""
    def make(tmp, ckpt):
        run = tmp / "stopped" / "runs" / "stopped-run"
        shutil.copytree(ckpt.parent, run)
        (run / "result.json").unlink()
        payload = _payload(ckpt.parent / "last.pt")  # the copied last.pt's own payload
        payload["run_id"] = "stopped-run"
        if edit is not None:
            edit(payload)
        torch.save(payload, run / "last.pt")
        if result is not None:
            (run / "result.json").write_text(result)

    make.needs_checkpoint = True
    return make


_HELD = []  # locks of runs "being trained" by this process while a case runs


def _row_lost(tmp, ckpt):
    """The finished run's results folder copied to ``{tmp}/lost`` with its runs.csv row gone: --rebuild would
    restore it from the run's record."""
    shutil.copytree(ckpt.parent.parent.parent, tmp / "lost")
    header = (tmp / "lost" / "runs.csv").read_text().splitlines()[0]
    (tmp / "lost" / "runs.csv").write_text(header + "\n")


_row_lost.needs_checkpoint = True


def _being_trained(tmp, ckpt):
    """The stopped copy, with its run lock held as the process training it holds it."""
    from bench.atomic_files import ProcessLock
    from bench.results.run_folder import RUNNING_LOCK

    _stopped_copy()(tmp, ckpt)
    _HELD.append(ProcessLock(tmp / "stopped" / "runs" / "stopped-run" / RUNNING_LOCK))


_being_trained.needs_checkpoint = True


def _foreign_run_id(payload):  # another run's last.pt copied into this run's folder
    payload["run_id"] = "20260101-000000-another-s0-abcdef"


def _wider_embedding(payload):  # the config now builds another architecture than the weights hold
    payload["config"]["model"]["embed_dim"] = 64


def _smaller_vocab(payload):  # weights trained with another tokenizer's vocabulary
    payload["model"]["token_embedding.weight"] = payload["model"]["token_embedding.weight"][:1000].clone()


def _stopped_mid_epoch_of_another_split(payload):  # the dataset changed between the stop and the resume
    payload["progress"].update(step_in_epoch=1, order=torch.arange(10), epoch_loss_sum=torch.tensor(3.0),
                               epoch_images=8)


RUN = ["run", *FLAGS, "--out", "{out}"]
# the same run without the tiny ModifiedResNet's --encoder-opt width=8, for other encoders' options
PLAIN = [f for i, f in enumerate(FLAGS) if f != "--encoder-opt" and (i == 0 or FLAGS[i - 1] != "--encoder-opt")]
RUN_ENC = ["run", *PLAIN, "--out", "{out}"]
SWEEP = ["sweep", "--encoder", "modified_resnet", *FLAGS, "--out", "{out}"]
THROUGHPUT = ["throughput", "--device", "cpu", "--steps", "1", "--untimed-steps", "0", "--embed-dim", "32", "--text-width",
              "32", "--text-layers", "1", "--text-heads", "2", "--out", "{tmp}/tp"]
COMPARE = ["compare", "{out}", "{out}"]
REPORT = ["report", "{out}", "--out", "{tmp}/report"]

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
    ("sgd-without-text-lr", RUN + ["--optimizer", "sgd", "--lr", "0.5"], "give its learning rate with --text-lr", None),
    ("huge-sgd-lr", RUN + ["--optimizer", "sgd", "--lr", "500", "--text-lr", "1e-3"], "--lr must be in (0, 100] with --optimizer sgd",
     None),
    ("huge-text-lr", RUN + ["--text-lr", "2"], "--text-lr must be in (0, 1] (AdamW)", None),
    ("momentum-one", RUN + ["--optimizer", "sgd", "--text-lr", "1e-3", "--momentum", "1"], "--momentum must be in [0, 1)",
     None),
    ("muon-without-text-lr", RUN + ["--optimizer", "muon"], "--optimizer muon trains the text tower with AdamW", None),
    ("muon-momentum-one", RUN + ["--optimizer", "muon", "--text-lr", "1e-3", "--muon-momentum", "1"],
     "--muon-momentum must be in [0, 1)", None),
    ("zero-muon-lr", RUN + ["--muon-lr", "0"], "--muon-lr must be in (0, 100]", None),
    ("whiten-bias-epochs", RUN + ["--encoder", "airbench", "--encoder-opt", "whiten_bias_epochs=-1"],
     "whiten_bias_epochs", None),
    ("negative-prewarm", RUN + ["--prewarm-steps", "-1"], "--prewarm-steps must be a number of steps >= 0", None),
    ("zero-norm-lr-scale", RUN + ["--norm-lr-scale", "0"], "--norm-lr-scale must be in (0, 1000]", None),
    ("lookahead-one", RUN + ["--lookahead", "1"], "--lookahead must be in [0, 1)", None),
    ("full-label-smoothing", RUN + ["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)", None),
    ("negative-crop-pad", RUN + ["--crop-pad", "-1"], "--crop-pad must be in [0, 32) for 32-pixel images", None),
    ("cutout-over-image", RUN + ["--cutout", "33"], "--cutout must be in [0, 32] for 32-pixel images", None),
    ("zero-limit-train", RUN + ["--limit-train", "0"], "--limit-train must be at least 1", None),
    ("negative-limit-test", RUN + ["--limit-test", "-5"], "--limit-test must be at least 1", None),
    ("zero-eval-every", RUN + ["--eval-every", "0"], "--eval-every must be at least 1", None),
    ("negative-lr-warmup", RUN + ["--lr-warmup-steps", "-1"], "--lr-warmup-steps must be >= 0", None),
    ("negative-seed", RUN + ["--seed", "-1"], "--seed must be >= 0", None),
    ("seed-past-numpys-range", RUN + ["--seed", "4294967296"], "--seed must be below 2**32 = 4294967296", None),
    ("unknown-device", RUN + ["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N", None),
    ("heads-vs-width", RUN + ["--text-heads", "3"], "must be a multiple of --text-heads (3)", None),
    ("unknown-encoder-opt", RUN + ["--encoder-opt", "depth=3"], "takes no option 'depth'", None),
    ("malformed-encoder-opt", RUN + ["--encoder-opt", "width"], "is not KEY=VALUE", None),
    ("not-an-int", RUN + ["--epochs", "two"], "'two' is not a valid integer", None),
    ("bad-precision", RUN + ["--precision", "fp64"], "'fp64' is not one of", None),
    ("negative-checkpoint-every", RUN + ["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0", None),
    ("zero-grad-norm", RUN + ["--max-grad-norm", "0"], "--max-grad-norm must be a positive number", None),
    ("nan-grad-norm", RUN + ["--max-grad-norm", "nan"], "--max-grad-norm must be a positive number", None),
    ("run-empty-out", ["run", *FLAGS, "--out", ""], "'--out': is empty; name a folder ('.' for the current one)",
     None),
    ("missing-data-dir", RUN + ["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"], "is not a folder", None),
    ("unknown-data-opt", RUN + ["--data-opt", "size=64"], "dataset 'synthetic' takes no option 'size'", None),
    ("malformed-data-opt", RUN + ["--data-opt", "size"],
     "--data-opt 'size' is not KEY=VALUE; write it like --data-opt test_fraction=0.2", None),
    # -- imagefolder:PATH: one line naming the file or folder, nothing written (the decoded cache included) --
    ("imagefolder-not-a-folder", RUN + ["--dataset", "imagefolder:{tmp}/nowhere"], "/nowhere' is not a folder; name a folder with one folder of images per class",
     None),
    ("imagefolder-no-images", RUN + ["--dataset", "imagefolder:{tmp}/pets"], "/pets/train/dog has no images", lambda tmp: _pets(tmp, empty="train/dog")),
    ("imagefolder-unreadable", RUN + ["--dataset", "imagefolder:{tmp}/pets"], "/pets/test/cat/1.png cannot be read", lambda tmp: _pets(tmp, broken="test/cat/1.png")),
    ("imagefolder-other-classes", RUN + ["--dataset", "imagefolder:{tmp}/pets"], "/pets/test have different classes (bird, dog)", lambda tmp: _pets(tmp, rename=("test/dog", "test/bird"))),
    ("imagefolder-bad-fraction", RUN + ["--dataset", "imagefolder:{tmp}/pets/train", "--data-opt", "test_fraction=2"],
     "test_fraction=2 must be a number in (0, 1)", _pets),
    ("imagefolder-unknown-opt", RUN + ["--dataset", "imagefolder:{tmp}/pets", "--data-opt", "shuffle=1"],
     "takes no option 'shuffle'; its options are test_fraction, split_seed, size", _pets),
    ("corrupt-data-dir", RUN + ["--dataset", "cifar10", "--data-dir", "{tmp}/data"], "is not a readable CIFAR-10 .npz",
     _corrupt_data),
    ("out-is-a-file", ["run", *FLAGS, "--out", "{tmp}/afile"], "is a file, not a folder", _file),
    ("out-under-a-file", ["run", *FLAGS, "--out", "{tmp}/afile/results"], "is a file, not a folder", _file),
    ("out-lock-not-a-file", ["run", *FLAGS, "--out", "{tmp}/locked"],
     "locked/runs.csv.lock' is not a file writable for you, so the run's row could not be appended", _lock_folder),
    ("rebuild-lock-not-a-file", ["results", "--rebuild", "--results", "{tmp}/locked"],
     "cannot lock", _lock_folder),
    ("out-dangling-link", ["run", *FLAGS, "--out", "{tmp}/dangling"], "dangling' is a link to", _dangling_link),
    ("out-has-foreign-table", ["run", *FLAGS, "--out", "{tmp}/foreign"], "is not a bench results table",
     _foreign_results),
    ("resume-unknown-run", ["run", "--resume", "no-such-run", "--out", "{out}"], "is neither a run id", None),
    ("resume-with-new-settings", ["run", "--resume", "{run_dir}", "--epochs", "5"], "drop --epochs", None),
    ("resume-finished-run", ["run", "--resume", "{run_dir}"], "already finished", None),
    ("resume-latest-none-left", ["run", "--resume", "latest", "--out", "{out}"], "no unfinished run", None),
    ("resume-another-runs-checkpoint", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "is the checkpoint of run 20260101-000000-another-s0-abcdef, not of run stopped-run",
     _stopped_copy(_foreign_run_id)),
    ("resume-a-run-being-trained", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "run stopped-run is being trained by another process now", _being_trained),
    ("resume-latest-leaves-a-run-being-trained", ["run", "--resume", "latest", "--out", "{tmp}/stopped"],
     "no unfinished run with a last.pt", _being_trained),
    ("resume-damaged-config", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged run configuration (TypeError", _stopped_copy(lambda p: p.update(config=None))),
    ("resume-mistyped-config", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged run configuration (epochs='abc')", _stopped_copy(lambda p: p["config"].update(epochs="abc"))),
    ("resume-no-step", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds no training state this bench can resume (no step)", _stopped_copy(lambda p: p.pop("step"))),
    ("resume-damaged-progress", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (KeyError: 'loss_window')",
     _stopped_copy(lambda p: p["progress"].pop("loss_window"))),
    ("resume-damaged-optimizer", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (KeyError: 'param_groups')", _stopped_copy(lambda p: p.update(optimizer={}))),
    # a state the run keeps but the checkpoint lacks would restart fresh (the schedule at step 0, the compact rows
    # re-split from their rounded product) and end silently elsewhere than the uninterrupted run: refused
    ("resume-no-scheduler", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (ValueError: no scheduler state, which this run's learning-rate schedule needs)",
     _stopped_copy(lambda p: p.update(scheduler=None))),
    ("resume-no-compact-embedding", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "(ValueError: no compact_embedding state, which this run's compact token embedding needs)",
     _stopped_copy(lambda p: p.pop("compact_embedding"))),
    ("resume-fp16-without-scaler", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "(ValueError: no scaler state, which this run's fp16 grad scaler needs)",
     _stopped_copy(lambda p: (p["config"].update(precision="fp16"), p.update(precision="fp16", scaler=None)))),
    # fp16's grad scaler state in the checkpoint of a run that trains without one: precision and checkpoint disagree
    ("resume-scaler-without-fp16", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "(ValueError: a scaler state, but this run has no fp16 grad scaler)",
     _stopped_copy(lambda p: p.update(scaler={"scaler": {"scale": 65536.0}, "skipped": torch.tensor(0)}))),
    # last.pt records the precision it trained in: one that is none, or not the one the config asks for, is damage
    ("resume-unknown-precision", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (precision 'fp64', not one of fp32, bf16, fp16)",
     _stopped_copy(lambda p: p.update(precision="fp64"))),
    ("resume-precision-not-the-configs", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (precision fp32, but its config asks for --precision bf16)",
     _stopped_copy(lambda p: p["config"].update(precision="bf16"))),
    ("resume-with-another-precision", ["run", "--resume", "{run_dir}", "--precision", "bf16"], "drop --precision",
     None),
    ("resume-mistyped-step", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (TypeError: epoch 2 and step '16' must be whole numbers)",
     _stopped_copy(lambda p: p.update(step="16"))),
    ("resume-damaged-world-size", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "holds a damaged training state (world_size None, not a number of ranks)",
     _stopped_copy(lambda p: p.update(world_size=None))),
    ("resume-dataset-changed-mid-epoch", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "stopped in an epoch over 10 training images, but the training split has 64 now",
     _stopped_copy(_stopped_mid_epoch_of_another_split)),
    ("resume-damaged-result", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "result.json is not run stopped-run's result (not JSON (JSONDecodeError)); delete it",
     _stopped_copy(result='{"a":')),
    ("resume-empty-result", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "result.json is not run stopped-run's result (it names run None)", _stopped_copy(result="{}")),
    ("resume-list-result", ["run", "--resume", "{tmp}/stopped/runs/stopped-run"],
     "result.json is not run stopped-run's result (it holds a list)", _stopped_copy(result="[1, 2]")),
    ("eval-mistyped-config", ["eval", "{tmp}/other.pt"], "holds a damaged run configuration (epochs='abc')",
     _edited_checkpoint(lambda p: p["config"].update(epochs="abc"))),
    ("eval-missing-checkpoint", ["eval", "{tmp}/missing.pt"], "does not exist", None),
    ("eval-not-a-checkpoint", ["eval", "{tmp}/garbage.pt"], "is not a readable torch file", _garbage_checkpoint),
    ("eval-truncated-pickle-index", ["eval", "{tmp}/cut.pt"], "is not a readable torch file (IndexError)",
     _truncated_pickle(4)),
    ("eval-truncated-pickle-struct", ["eval", "{tmp}/cut.pt"], "is not a readable torch file (error)",
     _truncated_pickle(8)),
    ("eval-other-architecture", ["eval", "{tmp}/other.pt"], "tensors differ in shape (first text_projection",
     _edited_checkpoint(_wider_embedding)),
    ("eval-weights-not-a-state-dict", ["eval", "{tmp}/other.pt"], "its weights are a list, not a state dict",
     _edited_checkpoint(lambda p: p.update(model=[1, 2]))),
    ("eval-weight-not-a-tensor", ["eval", "{tmp}/other.pt"], "its weight 'logit_scale' is a str, not a tensor",
     _edited_checkpoint(lambda p: p["model"].update(logit_scale="2.6"))),
    ("eval-damaged-world-size", ["eval", "{tmp}/other.pt"], "world_size 'two', not a number of ranks",
     _edited_checkpoint(lambda p: p.update(world_size="two"))),
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
    # -- bench run at the boundaries of every option (issue 12: no option is ever a traceback) --
    ("nan-lr", RUN + ["--lr", "nan"], "--lr must be in (0, 1], got nan", None),
    ("inf-lr", RUN + ["--lr", "inf"], "--lr must be in (0, 1], got inf", None),
    ("nan-wd", RUN + ["--weight-decay", "nan"], "--weight-decay must be in [0, 1]", None),
    ("huge-wd", RUN + ["--weight-decay", "2"], "--weight-decay must be in [0, 1]", None),
    ("nan-label-smoothing", RUN + ["--label-smoothing", "nan"], "--label-smoothing must be in [0, 1)", None),
    ("negative-label-smoothing", RUN + ["--label-smoothing", "-0.1"], "--label-smoothing must be in [0, 1)", None),
    ("crop-pad-whole-image", RUN + ["--crop-pad", "32"], "--crop-pad must be in [0, 32)", None),
    ("negative-cutout", RUN + ["--cutout", "-1"], "--cutout must be in [0, 32]", None),
    ("batch-of-one", RUN + ["--batch-size", "1"], "--batch-size must be at least 2 (a contrastive batch", None),
    ("float-epochs", RUN + ["--epochs", "2.5"], "'2.5' is not a valid integer", None),
    ("negative-epochs", RUN + ["--epochs", "-3"], "--epochs must be at least 1", None),
    ("zero-log-every", RUN + ["--log-every", "0"], "--log-every must be at least 1", None),
    ("inf-grad-norm", RUN + ["--max-grad-norm", "inf"], "--max-grad-norm must be a positive number", None),
    ("negative-grad-norm", RUN + ["--max-grad-norm", "-1"], "--max-grad-norm must be a positive number", None),
    ("zero-embed-dim", RUN + ["--embed-dim", "0"], "--embed-dim must be at least 1, got 0", None),
    ("negative-embed-dim", RUN + ["--embed-dim", "-32"], "--embed-dim must be at least 1", None),
    ("zero-text-width", RUN + ["--text-width", "0"], "--text-width must be at least 1, got 0", None),
    ("negative-text-width", RUN + ["--text-width", "-8"], "--text-width must be at least 1", None),
    ("zero-text-layers", RUN + ["--text-layers", "0"], "--text-layers must be at least 1", None),
    ("zero-text-heads", RUN + ["--text-heads", "0"], "--text-heads must be at least 1, got 0", None),
    ("tiny-image-size", RUN + ["--image-size", "0"], "--image-size must be at least 8, got 0", None),
    # a dataset at another size is resized to --image-size at load (bench.data.resize), but not enlarged past 8-fold
    ("image-size-far-above-the-data", RUN + ["--image-size", "257"],
     "dataset 'synthetic' stores 32x32 images, which --image-size 257 would enlarge more than 8-fold", None),
    ("huge-image-size", RUN + ["--image-size", "100000"], "use --image-size 32", None),
    ("bad-device-index", RUN + ["--device", "cuda:x"], "--device must be auto, cpu, cuda or cuda:N", None),
    ("cuda-without-gpu", RUN + ["--device", "cuda:0"], "torch sees no GPU", None),
    ("unknown-loss", RUN + ["--loss", "triplet"], "'triplet' is not one of 'clip', 'multipositive'", None),
    ("unknown-eval", RUN + ["--evals", "retrieval,nope"], "unknown evaluation 'nope' in --evals", None),
    ("zero-robust-limit", RUN + ["--robust-limit", "0"], "--robust-limit must be at least 1", None),
    ("severity-zero", RUN + ["--robust-severities", "0"], "--robust-severities takes integers 1..5", None),
    ("severity-six", RUN + ["--robust-severities", "1,6"], "--robust-severities takes integers 1..5", None),
    ("severity-word", RUN + ["--robust-severities", "high"], "--robust-severities takes integers 1..5", None),
    ("seeds-not-numbers", RUN + ["--seeds", "a,b"], "--seeds takes integers separated by commas", None),
    ("seeds-negative", RUN + ["--seeds", "-1"], "--seeds must be distinct integers >= 0", None),
    ("seeds-repeated", RUN + ["--seeds", "1,1"], "--seeds must be distinct integers >= 0", None),
    ("seeds-empty", RUN + ["--seeds", ""], "'--seeds': names no seed", None),
    ("resume-with-a-seed", ["run", "--resume", "{run_dir}", "--seed", "3"], "drop --seed", None),
    # -- encoder factories reject their options before anything is written --
    ("negative-width", RUN_ENC + ["--encoder-opt", "width=-3"], "width=-3 must be an integer of at least 2", None),
    ("zero-width", RUN_ENC + ["--encoder-opt", "width=0"], "width=0 must be an integer of at least 2", None),
    ("word-width", RUN_ENC + ["--encoder-opt", "width=abc"], "width='abc' must be an integer", None),
    ("fractional-width", RUN_ENC + ["--encoder-opt", "width=16.5"], "width=16.5 must be an integer", None),
    ("short-layers", RUN_ENC + ["--encoder-opt", "layers=[1]"], "layers=[1] must be a list of 4 integers", None),
    ("empty-stages", RUN_ENC + ["--encoder-opt", "layers=[0,0,0,0]"], "must be a list of 4 integers of at least 1", None),
    ("zero-heads", RUN_ENC + ["--encoder-opt", "heads=0"], "heads=0 must be a positive divisor of the attention pool", None),
    ("heads-not-dividing", RUN_ENC + ["--encoder-opt", "heads=3"], "heads=3 must be a positive divisor", None),
    ("stem-image-size", ["run", *PLAIN, "--dataset", "cifar10", "--data-dir", "{tmp}/data33", "--image-size", "33",
                         "--crop-pad", "0", "--out", "{out}"], "must be a multiple of 32; use 32, or modified_resnet_cifar",
     lambda tmp: _cifar_npz(tmp / "data33", 33)),
    ("timm-drop-rate-word", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "drop_rate=abc"],
     "drop_rate='abc' must be a number in [0, 1)", None),
    ("timm-drop-rate-over-one", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "drop_rate=2"],
     "drop_rate=2 must be a number in [0, 1)", None),
    ("timm-unknown-kwarg", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "depth=3"],
     "timm model 'resnet18' rejected an --encoder-opt", None),
    ("timm-unknown-pool", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "pool=median"], "unknown pool 'median'",
     None),
    ("timm-proj-bias-word", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "proj_bias=maybe"],
     "proj_bias='maybe' must be true or false", None),
    ("timm-pretrained", RUN_ENC + ["--encoder", "timm/resnet18", "--encoder-opt", "pretrained=true"],
     "pretrained weights are never loaded", None),
    ("airbench-widths", RUN_ENC + ["--encoder", "airbench", "--encoder-opt", "widths=[0,8,8]"],
     "widths=[0, 8, 8] must be a list of 3 integers of at least 1", None),
    ("airbench-momentum", RUN_ENC + ["--encoder", "airbench", "--encoder-opt", "bn_momentum=2"],
     "bn_momentum=2 must be a number in (0, 1]", None),
    ("airbench-tta-word", RUN_ENC + ["--encoder", "airbench", "--encoder-opt", "flip_tta=yes"],
     "flip_tta='yes' must be true or false", None),
    ("plugin-factory-raises", ["--plugins-dir", "{tmp}/plugins", *RUN_ENC, "--encoder", "fragile"],
     "encoder 'fragile' (plugin 'fragile') could not be built from (32, 32): ZeroDivisionError: integer division",
     lambda tmp: _plugin(tmp, FRAGILE)),
    ("plugin-forward-fails", ["--plugins-dir", "{tmp}/plugins", *RUN_ENC, "--encoder", "misshapen"],
     "encoder 'misshapen' (plugin 'misshapen') fails on 32-pixel images: RuntimeError", lambda tmp: _plugin(tmp, MISSHAPEN)),
    ("plugin-dataset-raises", ["--plugins-dir", "{tmp}/plugins", *RUN_ENC, "--dataset", "broken_set"],
     "dataset 'broken_set' (plugin 'broken_set') could not be built from ('train', None, 0): OSError: disk on fire",
     lambda tmp: _plugin(tmp, BROKEN_SET)),
    # a plugin whose factory or product breaks the contract: one line naming it, before anything is written
    *[(f"plugin-{case}", ["--plugins-dir", "{tmp}/plugins", *RUN_ENC, *args], words, lambda tmp: _plugin(tmp, MISBEHAVING))
      for case, args, words in [
          ("encoder-not-a-module", ["--encoder", "misbehaving/fn"], "its factory returned function, not an nn.Module"),
          ("encoder-float64", ["--encoder", "misbehaving/double"], "returns torch.float64 features for float32 images"),
          ("templates-none", ["--templates", "misbehaving/none"], "returned NoneType, not a list of template strings"),
          ("dataset-tuple", ["--dataset", "misbehaving/tuple"], "returned tuple, not a bench.data.ArrayDataset"),
          ("dataset-channels-first", ["--dataset", "misbehaving/chw"],
           "dataset 'misbehaving/chw' (plugin 'misbehaving'): dataset 'chw/train': images must be uint8 (N, H, W, 3), "
           "got uint8 (4, 3, 8, 8); fix the plugin"),
          ("dataset-too-few-class-names", ["--dataset", "misbehaving/classes"],
           "dataset 'misbehaving/classes' (plugin 'misbehaving'): dataset 'classes/train': labels 0..1 but 1 class "
           "names; give one class name per label, labels 0..n-1; fix the plugin"),
          ("dataset-fractional-labels", ["--dataset", "misbehaving/halves"],
           "dataset 'misbehaving/halves' (plugin 'misbehaving'): dataset 'halves/train': labels must be integers, "
           "got float64 values such as 0.5; fix the plugin"),
          ("templates-no-placeholder", ["--templates", "misbehaving/noslot"],
           "template 'a photo' of set 'misbehaving/noslot' (plugin 'misbehaving') must be a string with exactly one "
           "'{}' placeholder; fix the plugin"),
          ("encoder-too-wide", ["--encoder", "misbehaving/wide"],
           "encoder 'misbehaving/wide' (plugin 'misbehaving') returns features of shape (2, 35) for 2 images"),
          ("dataset-own-templates-missing", ["--dataset", "misbehaving/untemplated"],
           ("dataset 'misbehaving/untemplated' (plugin 'misbehaving') names template set 'nope/none' as its own, "
            "and no plugin registers it")),
          ("tokenizer-not-callable", ["--tokenizer", "misbehaving/str"], "returned str, not a callable tokenizer"),
          ("tokenizer-list", ["--tokenizer", "misbehaving/list"], "tokenizer AsList returned list for 50 texts, not an integer tensor"),
          ("tokenizer-past-the-embedding", ["--tokenizer", "misbehaving/big"],
           "gives id 99407, outside the text tower's 49408 token-embedding rows"),
          ("tokenizer-end-not-largest", ["--tokenizer", "misbehaving/eot"],
           "the largest id of prompt 'a photo of a red' is not its end token (eot_token_id 1)")]],
    # -- zero-shot transfer and held-out classes: forms refused before any data is read, names once it is --
    ("transfer-the-training-set", RUN + ["--transfer", "synthetic"], "is the dataset the run trains on", None),
    ("transfer-unknown-dataset", RUN + ["--transfer", "stl9"], "unknown dataset 'stl9'", None),
    ("transfer-unknown-templates", RUN + ["--transfer", "cifar10@nope"], "unknown template set 'nope'", None),
    ("transfer-no-templates", RUN + ["--transfer", "cifar10@"], "is not DATASET or DATASET@TEMPLATES", None),
    ("transfer-twice", RUN + ["--transfer", "cifar10,cifar10"], "names dataset 'cifar10' twice", None),
    ("holdout-unknown-class", RUN + ["--holdout-classes", "red,kitten"], "'kitten' is not a class of dataset "
                                                                        "'synthetic'; its classes are red, orange", None),
    ("holdout-every-class", RUN + ["--holdout-classes", "10"], "leaves no class to train on", None),
    ("holdout-names-and-count", RUN + ["--holdout-classes", "red,2"], "class names or one count, not both", None),
    ("holdout-zero", RUN + ["--holdout-classes", "0"], "holds out nothing", None),
    # an empty "$CLASSES" (or a lone comma) would train on every class: another configuration, recorded as asked
    ("holdout-names-no-class", RUN + ["--holdout-classes", ","], "Invalid value for '--holdout-classes': names no "
                                                               "class; give class names (cat,truck) or a count", None),
    ("holdout-empty", RUN + ["--holdout-classes", ""], "'--holdout-classes': names no class", None),
    ("sweep-holdout-names-no-class", SWEEP + ["--holdout-classes", ","], "'--holdout-classes': names no class", None),
    ("eval-holdout-names-no-class", ["eval", "{ckpt}", "--holdout-classes", ","], "'--holdout-classes': names no class",
     None),
    ("transfer-names-no-dataset", RUN + ["--transfer", ","], "'--transfer': names no dataset", None),
    # the probe runs after training: 4 images of 4 classes leave it no validation image, said before training
    ("probe-without-a-validation-image", RUN + ["--evals", "probe", "--limit-train", "4", "--batch-size", "2"],
     "--evals probe: the linear probe needs at least two training images of some class for validation", None),
    ("eval-dataset-names-no-dataset", ["eval", "{ckpt}", "--dataset", ""], "'--dataset': names no dataset", None),
    ("eval-open-clip-holdout-count", ["eval", "--open-clip", "RN50", "--pretrained", "openai", "--holdout-classes", "2"],
     "a pretrained model has none; name the classes", None),
    ("eval-data-dir-for-two-datasets", ["eval", "{ckpt}", "--dataset", "synthetic,cifar10", "--data-dir", "{tmp}"],
     # an offline user with the torchvision datasets in one folder learns how to name it for all of them
     "--data-dir names one dataset's folder; evaluate one --dataset at a time with it, or leave it out: the others are "
     "read from their default folders (BENCH_DATASETS_DIR names one for all", None),
    ("eval-holdout-without-the-runs-dataset", ["eval", "{ckpt}", "--dataset", "cifar10", "--holdout-classes", "red"],
     "--holdout-classes splits the run's own dataset 'synthetic', which --dataset does not list", None),
    # -- bench sweep --
    ("sweep-empty-encoder-list", ["sweep", "--encoder", ",", *FLAGS, "--out", "{out}"], "--encoder is empty", None),
    ("sweep-unknown-encoder", ["sweep", "--encoder", "modified_resnet,nope", *FLAGS, "--out", "{out}"],
     "unknown encoder 'nope'", None),
    ("sweep-unknown-templates", SWEEP + ["--templates", "seed,nope"], "unknown template set 'nope'", None),
    ("sweep-bad-seeds", SWEEP + ["--seeds", "x"], "--seeds takes integers separated by commas", None),
    ("sweep-empty-seeds", SWEEP + ["--seeds", ","], "'--seeds': names no seed", None),
    ("sweep-zero-epochs", SWEEP + ["--epochs", "0"], "--epochs must be at least 1", None),
    # --dry-run and --status only read the results folder, but it must be one
    ("sweep-dry-run-out-is-a-file", [*SWEEP[:-1], "{tmp}/afile", "--dry-run"], "is a file, not a folder", _file),
    ("sweep-status-out-under-a-file", [*SWEEP[:-1], "{tmp}/afile/results", "--status"], "is a file, not a folder",
     _file),
    ("sweep-bad-encoder-opt", ["sweep", "--encoder", "modified_resnet", *PLAIN, "--encoder-opt", "width=-3", "--out",
                               "{out}"], "width=-3 must be an integer of at least 2", None),
    # -- bench eval / predict --
    ("eval-negative-limit", ["eval", "{ckpt}", "--limit-test", "-1"], "--limit-test must be at least 1", None),
    ("eval-zero-robust-limit", ["eval", "{ckpt}", "--robust-limit", "0"], "--robust-limit must be at least 1", None),
    ("eval-severity-nine", ["eval", "{ckpt}", "--robust-severities", "9"], "--robust-severities takes integers 1..5", None),
    ("eval-unknown-eval", ["eval", "{ckpt}", "--evals", "nope"], "unknown evaluation 'nope'", None),
    ("eval-missing-data-dir", ["eval", "{ckpt}", "--data-dir", "{tmp}/nowhere"], "is not a folder", None),
    ("eval-unknown-format", ["eval", "{ckpt}", "--format", "xml"], "'xml' is not one of", None),
    ("eval-out-is-a-file", ["eval", "{ckpt}", "--out", "{tmp}/afile"], "is a file, not a folder", _file),
    ("eval-out-is-a-run-folder", ["eval", "{ckpt}", "--out", "{run_dir}"],
     "is a run folder, whose per_class.csv and confusion.csv bench eval would replace", None),
    ("eval-out-is-a-transfer-run-folder", ["eval", "{ckpt}", "--out", "{tmp}/run@stl10"], "is a run folder",
     lambda tmp: (tmp / "run@stl10").mkdir() or (tmp / "run@stl10" / "per_class.csv").write_text("class,accuracy\n")),
    ("eval-cuda-without-gpu", ["eval", "{ckpt}", "--device", "cuda"], "torch sees no GPU", None),
    ("predict-negative-top-k", ["predict", "{ckpt}", "{tmp}/img.png", "--top-k", "-1"], "--top-k must be at least 1",
     _image),
    ("predict-unknown-templates", ["predict", "{ckpt}", "{tmp}/img.png", "--templates", "nope"],
     "unknown template set 'nope'", _image),
    ("predict-unknown-device", ["predict", "{ckpt}", "{tmp}/img.png", "--device", "tpu"], "--device must be auto", _image),
    ("predict-missing-checkpoint", ["predict", "{tmp}/missing.pt", "{tmp}/img.png"], "does not exist", _image),
    # -- bench compare --
    ("compare-alpha-zero", COMPARE + ["--alpha", "0"], "--alpha must be in (0, 1), got 0.0", None),
    ("compare-alpha-one", COMPARE + ["--alpha", "1"], "--alpha must be in (0, 1), got 1.0", None),
    ("compare-alpha-nan", COMPARE + ["--alpha", "nan"], "--alpha must be in (0, 1), got nan", None),
    ("compare-alpha-word", COMPARE + ["--alpha", "abc"], "'abc' is not a valid float", None),
    ("compare-unknown-correction", COMPARE + ["--correct", "bonferroni"], "'bonferroni' is not one of 'none', 'holm'",
     None),
    ("compare-nan-threshold", COMPARE + ["--fail-on", "zeroshot_top1:nan"], "is not METRIC:DELTA", None),
    ("compare-inf-threshold", COMPARE + ["--fail-on", "zeroshot_top1:inf"], "is not METRIC:DELTA", None),
    ("compare-malformed-threshold", COMPARE + ["--fail-on", "zeroshot_top1"], "is not METRIC:DELTA", None),
    ("compare-unknown-threshold-metric", COMPARE + ["--fail-on", "nope:-1"], "--fail-on 'nope': no such metric", None),
    ("compare-significant-without-threshold", COMPARE + ["--fail-on-significant"],
     "--fail-on-significant refines --fail-on", None),
    ("compare-unknown-metric", COMPARE + ["--metrics", "nope"], "metric 'nope' is not in every side", None),
    ("compare-unknown-split", ["compare", "{out}", "--split-by", "nope"], "--split-by 'nope': no such column", None),
    ("compare-one-side", ["compare", "{out}"], "compare needs at least two sides", None),
    ("compare-unknown-join", COMPARE + ["--on", "nope"], "--on 'nope' is not a configuration column", None),
    ("compare-malformed-where", COMPARE + ["--where", "bad"], "--where 'bad' is not COLUMN=VALUE", None),
    ("compare-unknown-where", COMPARE + ["--where", "nope=1"], "--where: no column 'nope'", None),
    ("compare-where-matches-nothing", COMPARE + ["--where", "encoder=nothing"],
     "--where encoder=nothing leaves no run of", None),
    ("report-where-matches-nothing", REPORT + ["--where", "encoder=nothing"],
     "--where encoder=nothing leaves no runs to report on", None),
    ("compare-unknown-format", COMPARE + ["--format", "xml"], "'xml' is not one of", None),
    ("compare-missing-side", ["compare", "{out}", "{tmp}/nowhere"], "is not a file or folder", None),
    # -- bench throughput --
    ("throughput-zero-batch", THROUGHPUT + ["--batch-size", "0"], "--batch-size must be at least 2", None),
    ("throughput-zero-steps", THROUGHPUT + ["--steps", "0"], "--steps must be at least 1", None),
    ("throughput-negative-untimed", THROUGHPUT + ["--untimed-steps", "-1"], "--untimed-steps must be >= 0", None),
    ("throughput-zero-embed-dim", THROUGHPUT + ["--embed-dim", "0"], "--embed-dim must be at least 1", None),
    ("throughput-zero-text-width", THROUGHPUT + ["--text-width", "0"], "--text-width must be at least 1", None),
    ("throughput-zero-text-layers", THROUGHPUT + ["--text-layers", "0"], "--text-layers must be at least 1", None),
    ("throughput-heads-vs-width", THROUGHPUT + ["--text-heads", "3"], "must be a multiple of --text-heads (3)", None),
    ("throughput-unknown-encoder", THROUGHPUT + ["--encoder", "nope"], "unknown encoder 'nope'", None),
    ("throughput-empty-encoder", THROUGHPUT + ["--encoder", ","], "--encoder is empty", None),
    ("throughput-bad-encoder-opt", THROUGHPUT + ["--encoder-opt", "width=-3"], "width=-3 must be an integer", None),
    ("throughput-unknown-device", THROUGHPUT + ["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N", None),
    ("throughput-cuda-without-gpu", THROUGHPUT + ["--device", "cuda"], "torch sees no GPU", None),
    ("throughput-unknown-mode", THROUGHPUT + ["--mode", "fast"], "'fast' is not one of 'train', 'infer', 'both'", None),
    ("throughput-unknown-precision", THROUGHPUT + ["--precision", "fp8"], "'fp8' is not one of", None),
    ("throughput-out-is-a-file", THROUGHPUT[:-1] + ["{tmp}/afile"], "is a file, not a folder", _file),
    # -- bench report / results --
    ("report-out-is-a-file", ["report", "{out}", "--out", "{tmp}/afile"], "is a file", _file),
    ("report-missing-source", ["report", "{tmp}/nowhere", "--out", "{tmp}/report"], "is not a file or folder", None),
    ("report-malformed-where", REPORT + ["--where", "bad"], "--where 'bad' is not COLUMN=VALUE", None),
    ("report-unknown-where", REPORT + ["--where", "nope=1"], "--where: no column 'nope'", None),
    ("report-nothing-left", REPORT + ["--where", "encoder=none"], "no runs to report on", None),
    ("report-no-out", ["report", "{out}"], "Missing option '--out'", None),
    ("results-zero-limit", ["results", "{out}", "--limit", "0"], "--limit must be at least 1", None),
    ("results-unknown-sort", ["results", "{out}", "--sort", "nope"], "--sort: no column 'nope'", None),
    ("results-unknown-column", ["results", "{out}", "--columns", "nope"], "--columns: no column 'nope'", None),
    ("results-empty-table", ["results", "{tmp}/emptied"], "runs.csv' is empty; bench results", _emptied_table),
    ("results-aggregate-and-long", ["results", "{out}", "--aggregate", "--long"],
     "--aggregate (a row per configuration) and --long (a row per run and metric) are two views", None),
    ("results-rebuild-two-folders", ["results", "{out}", "{out}", "--rebuild"],
     "--rebuild rebuilds one results folder's runs.csv; name that folder alone", None),
    # the view is checked on the rebuilt table before the rebuild is written
    ("results-rebuild-unknown-sort", ["results", "{tmp}/lost", "--rebuild", "--sort", "nope"],
     "--sort: no column 'nope'", _row_lost),
    ("results-rebuild-unknown-where", ["results", "{tmp}/lost", "--rebuild", "--where", "nope=1"],
     "--where: no column 'nope'", _row_lost),
    ("report-out-is-a-run-folder", ["report", "{out}", "--out", "{run_dir}"],
     "is a run folder, whose curves.png bench report would replace", None),
    ("results-malformed-where", ["results", "{out}", "--where", "bad"], "--where 'bad' is not COLUMN=VALUE", None),
    ("results-where-in-percent", ["results", "{out}", "--where", "zeroshot_top1>=70"],
     "zeroshot_top1 is a fraction in runs.csv (the tables show percent); write 0.7 for 70%", None),
    ("results-where-one-value-in-percent", ["results", "{out}", "--where", "zeroshot_top1=0.5,60"],
     "write 0.6 for 60%", None),
    ("list-unknown-kind", ["list", "models"], "'models' is not one of", None),
    ("list-no-kind", ["list"], "Missing argument '{encoders|tokenizers|templates|datasets}'. Choose from: encoders, "
                               "tokenizers, templates, datasets", None),
    ("results-empty-results", ["results", "--results", ""], "'--results': is empty; name a folder", None),
    ("report-empty-out", ["report", "{out}", "--out", " "], "'--out': is empty; name a folder", None),
    ("results-rebuild-a-folder-without-runs", ["results", "{tmp}", "--rebuild"],
     "has no runs/ folder to rebuild runs.csv from", None),
    ("sweep-file-is-a-folder", ["sweep", "{tmp}", "--dry-run"], "is a folder; pass a .toml file", None),
    ("eval-a-run-folder", ["eval", "{run_dir}"], "is a folder; pass a .pt file written by bench run, e.g. ", None),
    ("plugins-dir-is-a-file", ["--plugins-dir", "{tmp}/afile", "list", "encoders"], "afile' is not a folder", _file),
]


FRAGILE = """
from bench import hookimpl


@hookimpl
def register_encoders(register):
    register("fragile", lambda embed_dim, image_size: embed_dim // 0, "divides by zero when built")
"""

MISSHAPEN = """
import torch
from bench import hookimpl


@hookimpl
def register_encoders(register):
    # builds fine; its forward needs 64-pixel inputs, so it fails on 32-pixel ones
    register("misshapen", lambda embed_dim, image_size: torch.nn.Sequential(torch.nn.Flatten(),
             torch.nn.Linear(3 * 64 * 64, embed_dim)), "expects 64-pixel images")
"""

BROKEN_SET = """
from bench import hookimpl


def _load(split, data_dir=None, seed=0):
    raise OSError("disk on fire")


@hookimpl
def register_datasets(register):
    register("broken_set", _load, "raises when read")
"""


MISBEHAVING = """
import torch
from torch import nn
from bench import hookimpl
from bench.clip.tokenizer import MinimalTokenizer


class Big(MinimalTokenizer):  # ids past CLIP's vocabulary
    def __call__(self, texts, context_length=None, truncate=False):
        out = super().__call__(texts, context_length, truncate)
        return torch.where(out > 0, out + 50000, out)


class EndNotLargest(MinimalTokenizer):
    eot_token_id = 1  # below the start token and most words: the argmax pooling would read another token


class AsList(MinimalTokenizer):
    def __call__(self, texts, context_length=None, truncate=False):
        return super().__call__(texts, context_length, truncate).tolist()


def _arrays(split, name, shape, n_classes, shift=0):
    import numpy as np
    from bench.data import ArrayDataset

    return ArrayDataset(np.zeros(shape, np.uint8), np.arange(4) % 2 + shift, ("red", "blue")[:n_classes],
                        f"{name}/{split}")


class Float64(nn.Module):
    def __init__(self, embed_dim, image_size):
        super().__init__()
        self.proj = nn.Linear(3, embed_dim)

    def forward(self, x):
        return self.proj(x.mean((2, 3))).double()


@hookimpl
def register_encoders(register):
    register("misbehaving/fn", lambda embed_dim, image_size: (lambda x: x), "a function, not a module")
    register("misbehaving/double", Float64, "float64 features")
    register("misbehaving/wide", lambda embed_dim, image_size: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(3, embed_dim + 3)), "3 features too many")


@hookimpl
def register_tokenizers(register):
    register("misbehaving/str", lambda context_length, prompts: "tok", "a string")
    register("misbehaving/list", lambda context_length, prompts: AsList(prompts, context_length), "lists")
    register("misbehaving/big", lambda context_length, prompts: Big(prompts, context_length), "ids past the vocabulary")
    register("misbehaving/eot", lambda context_length, prompts: EndNotLargest(prompts, context_length), "eot not largest")


@hookimpl
def register_templates(register):
    register("misbehaving/none", lambda: None, "a forgotten return")
    register("misbehaving/noslot", lambda: ["a photo", "a photo of a {}"], "a template without its class name")


@hookimpl
def register_datasets(register):
    register("misbehaving/tuple", lambda split, data_dir=None, seed=0: (1, 2), "a tuple")
    register("misbehaving/chw", lambda split, data_dir=None, seed=0: _arrays(split, "chw", (4, 3, 8, 8), 2),
             "(N, 3, H, W)")
    register("misbehaving/classes", lambda split, data_dir=None, seed=0: _arrays(split, "classes", (4, 8, 8, 3), 1),
             "two labels, one class name")
    register("misbehaving/halves", lambda split, data_dir=None, seed=0: _arrays(split, "halves", (4, 8, 8, 3), 2, 0.5),
             "labels 0.5 and 1.5")
    register("misbehaving/untemplated", lambda split, data_dir=None, seed=0: (1, 2), "x", templates="nope/none")
"""


def _plugin(tmp, source):
    (tmp / "plugins").mkdir(exist_ok=True)
    name = source.split('register("')[1].split('"')[0].split("/")[0]  # a namespaced name's namespace
    (tmp / "plugins" / f"{name}.py").write_text(source)


def _cifar_npz(folder, size):
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(folder / f"{split}.npz", images=rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, 64))


def test_the_table_is_large_enough():
    """At least 100 bad-input cases over every command's options; ids must be unique to read failures."""
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)
    commands = {next(a for a in args if not a.startswith("-") and "{" not in a) for _, args, _, _ in CASES}
    assert {"run", "sweep", "eval", "predict", "compare", "throughput", "report", "results"} <= commands


@pytest.mark.parametrize("args, expected, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(args, expected, setup, results, tmp_path, run_cli):
    """Each bad input: exit 2, a single 'bench: error:' line with the cause, no traceback, no file touched and
    none left open."""
    run_dir = run_dir_of(results)
    ckpt = run_dir / "best.pt"
    if setup is not None:
        setup(tmp_path, ckpt) if getattr(setup, "needs_checkpoint", False) else setup(tmp_path)
    try:
        before = snapshot(results), snapshot(tmp_path)
        values = {"out": results, "tmp": tmp_path, "run_dir": run_dir, "ckpt": ckpt}
        with files_left_open(collect=False) as left_open:  # a collection per case would cost 50 s in all
            code, stdout, stderr = run_cli(*[a.format(**values) for a in args])
        assert code == 2, stderr
        assert stderr.startswith("bench: error: ") and stderr.count("\n") == 1, stderr
        assert expected in stderr, stderr
        assert stdout == ""
        assert (snapshot(results), snapshot(tmp_path)) == before
        assert left_open == []  # a file the refused command opened is closed (numpy left a damaged .npz open)
    finally:
        while _HELD:  # the case's "other process" stops training
            _HELD.pop().release()
