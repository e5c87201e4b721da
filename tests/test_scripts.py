"""The measurement scripts behind docs/performance.md run at tiny size, so they cannot rot."""
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vs_open_clip_tiny_same_loss(tmp_path):
    """bench's fast path and open_clip's plain one give the same loss on the same weights and batch."""
    pytest.importorskip("open_clip")
    table = load("vs_open_clip").main(["--tiny", "--rounds", "1", "--bench-steps", "1", "--baseline-steps", "1",
                                       "--out", str(tmp_path)])
    assert table["loss_step0_abs_diff"].iloc[0] < 1e-4 and table["loss_step1_abs_diff"].iloc[0] < 1e-4
    assert set(table["engine"]) == {"bench", "open_clip"} and (tmp_path / "vs_open_clip.csv").is_file()


def test_loader_speed_and_step_ablation_tiny(tmp_path):
    loader = load("loader_speed").main(["--tiny", "--rounds", "1", "--batch-size", "16", "--out", str(tmp_path)])
    assert set(loader["path"]) == {"device", "torchvision"} and (loader["images_per_s"] > 0).all()
    ablation = load("cpu_step_ablation").main(["--tiny", "--rounds", "1", "--steps", "1", "--out", str(tmp_path)])
    assert len(ablation) == 5 and ablation["git_commit"].notna().all()


def test_checkpoint_cost_tiny(tmp_path):
    """The epoch-end checkpoint timing behind docs/performance.md runs, times both modes and leaves no files."""
    table = load("checkpoint_cost").main(["--tiny", "--rounds", "1", "--out", str(tmp_path)])
    assert set(table["mode"]) == {"blocking", "background"} and (table["blocked_s"] > 0).all()
    assert (table["files_mb"] > 0).all() and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_cost.csv"]
