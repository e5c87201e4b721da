"""Checkpoints are written on a background thread: what lands on disk is the state at the save, whatever
training does next; a failed write is reported as one line, and a state dict keeps its metadata."""
from __future__ import annotations

import pytest
import torch

from bench.clip.loss import ClipLoss
from bench.clip.model import CLIP
from bench.config import make_config
from bench.distributed.world import World
from bench.engine.checkpoint import CheckpointSaver, RunProgress, snapshot
from bench.engine.train_step import TrainState
from bench.errors import BenchError


def _saver(run_dir):
    model = CLIP(embed_dim=8, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, context_length=8,
                 vocab_size=64, transformer_width=8, transformer_heads=2, transformer_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = TrainState(model, optimizer, None, ClipLoss("clip"), torch.zeros(2, 8, dtype=torch.long))
    return CheckpointSaver(run_dir, state, {"config": make_config("smoke").to_dict(), "classes": ["a", "b"]},
                           torch.Generator().manual_seed(0), "run", RunProgress(), World(torch.device("cpu")))


def test_background_write_holds_the_state_of_the_save_not_of_later_steps(tmp_path):
    saver = _saver(tmp_path)
    model = saver.state.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with saver:
        saver.save_last({"epoch": 1})
        with torch.no_grad():  # a training step while the thread writes
            for p in model.parameters():
                p.add_(1.0)
        saver.state.step = 1
        saver.save_best({"epoch": 1})
    assert saver.saved_step == 0
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for key, value in before.items():
        assert torch.equal(last["model"][key], value), key
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(best["model"][key], value + 1.0), key
    assert "optimizer" in last and "optimizer" not in best and best["step"] == 1


def test_best_of_the_same_step_reuses_the_copy_of_last_and_equals_it(tmp_path):
    saver = _saver(tmp_path)
    with saver:
        saver.save_last({"epoch": 1})
        saver.save_best({"epoch": 1})
        assert saver._weights is not None and saver._weights[0] == 0
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert last["model"].keys() == best["model"].keys()
    assert all(torch.equal(last["model"][k], best["model"][k]) for k in last["model"])


def test_failed_write_is_one_line_naming_the_folder_and_the_fix(tmp_path):
    saver = _saver(tmp_path / "gone")  # the folder does not exist: the write fails on the thread
    saver.save_last()
    with pytest.raises(BenchError, match=r"could not write a checkpoint in .*gone.*--no-checkpoints") as info:
        saver.wait()
    assert "\n" not in str(info.value)
    assert saver.saved_step is None and saver.describe() == "no checkpoint had been written yet"


def test_snapshot_copies_tensors_and_keeps_state_dict_metadata():
    model = torch.nn.BatchNorm1d(3)
    sd = model.state_dict()
    snap = snapshot({"model": sd, "rng": (1, [2, torch.ones(2)])})
    assert snap["model"]._metadata == sd._metadata
    assert snap["model"]["weight"].data_ptr() != sd["weight"].data_ptr()
    assert torch.equal(snap["model"]["weight"], sd["weight"]) and isinstance(snap["rng"], tuple)
