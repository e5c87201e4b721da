"""One engine typed by a recipe: bench throughput times the step bench run builds, the CUDA-graph rule lives in
one place, and fp16 trains with dynamic loss scaling (a step skipped on an overflow, exact resume of the scale)."""
import ast
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench.app.run  # imported before any patch: it binds build_engine at import
from bench.engine import build as engine_build
from bench.engine.build import autocast_dtype_for, build_engine, captures_graph
from bench.engine.recipe import TrainRecipe
from bench.errors import BenchError

from tests.support.models import batch, prompt_tables, tiny_clip
from tests.support.runs import FLAGS, assert_same_run, run_dir_of, stop_at_ask

pytestmark = pytest.mark.usefixtures("one_thread")  # exact resume holds at a fixed thread count
ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ["--embed-dim", "32", "--text-width", "32", "--text-layers", "1", "--text-heads", "2",
              "--encoder-opt", "width=8"]


class _Built(BenchError):
    """Raised by the recorder in place of building (a one-line error to the CLI): the recipe is all these tests
    want."""


def _recorded_recipes(monkeypatch, run_cli, command: list) -> list:
    seen = []

    def record(model, prompt_tokens, recipe, world=None, ddp_options=None):
        seen.append(recipe)
        raise _Built

    monkeypatch.setattr(engine_build, "build_engine", record)
    monkeypatch.setattr(bench.app.run, "build_engine", record)
    run_cli(*command)
    return seen


@pytest.mark.parametrize("flags", [
    ["--precision", "fp32"],
    ["--precision", "bf16", "--batch-size", "16", "--no-tower-streams", "--no-cuda-graph"],
    ["--precision", "fp16", "--compile", "--batch-size", "8"],
])
def test_bench_throughput_times_the_step_bench_run_builds_for_the_same_flags(monkeypatch, run_cli, flags):
    """The recipe bench throughput's CLIP step is built from equals the one bench run builds its step from, given the
    same flags (the schedule's length aside: a run's epoch is its loader's length)."""
    # the limits only spare making the 5000 synthetic images: the recipe's one data-sized field is steps_per_epoch
    ran = _recorded_recipes(monkeypatch, run_cli, ["run", "--dataset", "synthetic", "--limit-train", "32",
                                                  "--limit-test", "8", "--device", "cpu", *TINY_MODEL,
                                                  "--no-progress", *flags])
    monkeypatch.setattr("bench.perf.throughput.measurements", lambda mode: [("clip", "train")])
    timed = _recorded_recipes(monkeypatch, run_cli, ["throughput", "--encoder", "modified_resnet", "--mode", "train",
                                                    "--device", "cpu", "--steps", "1", *TINY_MODEL, *flags])
    assert len(ran) == 1 and len(timed) == 1
    assert replace(ran[0], steps_per_epoch=None) == replace(timed[0], steps_per_epoch=None)


def test_auto_precision_is_bf16_on_a_gpu_with_it_fp16_on_one_without_and_fp32_on_a_cpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype_for("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert autocast_dtype_for("auto", cuda) is torch.float16
    assert autocast_dtype_for("auto", torch.device("cpu")) is None
    assert autocast_dtype_for("fp16", torch.device("cpu")) is torch.float16


def test_the_cuda_graph_rule_needs_cuda_static_shapes_and_an_overflow_check_on_the_device():
    cuda, cpu, adamw, sgd = torch.device("cuda"), torch.device("cpu"), TrainRecipe(), TrainRecipe(optimizer="sgd")
    assert captures_graph(adamw, cuda, "all", torch.bfloat16)
    assert captures_graph(adamw, cuda, "all", torch.float16)  # fused AdamW skips an overflowed step in its kernel
    assert not captures_graph(sgd, cuda, "all", torch.float16)  # SGD/Muon look for the overflow on the host
    assert captures_graph(sgd, cuda, "all", torch.bfloat16)
    assert not captures_graph(adamw, cuda, "unique", None)  # data-dependent shapes
    assert not captures_graph(adamw, cpu, "all", None)
    assert not captures_graph(replace(adamw, cuda_graph=False), cuda, "all", None)


def _python_files():
    for folder in ("bench", "scripts", "benchmarks", "tests", "plugins"):
        yield from (ROOT / folder).rglob("*.py")


def test_only_the_engine_builds_a_graph_step_or_sets_backend_flags():
    """Outside bench/engine/ and the engine's own unit tests, nothing constructs a CudaGraphStep or sets a
    torch.backends flag: every step is built by build_engine from a recipe."""
    allowed = {ROOT / "tests" / "test_determinism.py"}  # deterministic_mode's own test, which restores the flags
    flag = re.compile(r"torch\.backends\.[\w.]+\s*=(?!=)")
    offenders = []
    for path in _python_files():
        if path.relative_to(ROOT).parts[:2] in (("bench", "engine"), ("tests", "engine")) or path in allowed:
            continue
        text = path.read_text()
        calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(
            n.func, "attr", None)) == "CudaGraphStep"]
        if calls or flag.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _fp16_engine(**recipe):
    model = tiny_clip().float()
    return build_engine(model, prompt_tables()[1], TrainRecipe(precision="fp16", text_mode="unique", **recipe))


def test_fp16_skips_a_step_whose_gradients_overflow_and_counts_it():
    """An overflowed fp16 step changes no weight, no optimizer moment, no decayed token row; the scale halves and the
    step is counted; the next step trains again."""
    engine = _fp16_engine()
    images, labels, ids = batch()
    images = images.float()
    engine.step(images, labels, ids)  # creates the scale and AdamW's state
    state, scaler = engine.state, engine.state.scaler.scaler
    skipped = engine.skipped_steps()
    weights = {k: v.detach().clone() for k, v in engine.model.named_parameters()}
    moments = [s["exp_avg"].clone() for s in state.optimizer.state.values()]
    decay = engine.model.token_embedding.decay.clone()
    scaler.update(new_scale=2.0 ** 127)  # huge enough that the scaled loss's gradients overflow fp16 and fp32
    engine.step(images, labels, ids)
    assert engine.skipped_steps() == skipped + 1
    assert float(scaler.get_scale()) == 2.0 ** 126
    after = dict(engine.model.named_parameters())
    assert [k for k in weights if not torch.equal(weights[k], after[k])] == []
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, state.optimizer.state.values()))
    assert torch.equal(decay, engine.model.token_embedding.decay)
    scaler.update(new_scale=1024.0)
    engine.step(images, labels, ids)
    assert engine.skipped_steps() == skipped + 1
    assert not torch.equal(weights["visual.conv1.weight"], after["visual.conv1.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_fp16_skips_an_overflowed_step_under_sgd_and_muon_too(optimizer):
    engine = _fp16_engine(optimizer=optimizer, lr=0.05, text_lr=1e-3)
    images, labels, ids = batch()
    engine.step(images.float(), labels, ids)
    weights = {k: v.detach().clone() for k, v in engine.model.named_parameters()}
    engine.state.scaler.scaler.update(new_scale=2.0 ** 127)
    engine.step(images.float(), labels, ids)
    after = dict(engine.model.named_parameters())
    assert [k for k in weights if not torch.equal(weights[k], after[k])] == []


def test_fp16_scale_undoes_itself_in_the_gradients_the_optimizer_sees():
    """Under SGD (a step is lr x gradient, so a gradient left scaled would show 16-fold) one fp16 step moves the
    weights alike at loss scales 2**8 and 2**12: the optimizer sees the true gradients. (Not bit for bit: a
    gradient that is subnormal in fp16 at one scale keeps fewer bits than at the other.)"""
    from bench.engine.loss_scale import LossScale

    updates = []
    for scale in (2.0 ** 8, 2.0 ** 12):
        engine = _fp16_engine(optimizer="sgd", lr=0.05, text_lr=1e-3)
        engine.state.scaler = LossScale(engine.device, init_scale=scale)
        before = {k: v.detach().clone() for k, v in engine.model.named_parameters()}
        images, labels, ids = batch()
        engine.step(images.float(), labels, ids)
        assert engine.skipped_steps() == 0
        updates.append({k: v.detach() - before[k] for k, v in engine.model.named_parameters()})
    low, high = updates
    largest = max(float(u.abs().max()) for u in low.values())
    assert largest > 0
    assert [k for k in low if not torch.allclose(low[k], high[k], rtol=1e-3, atol=1e-3 * largest)] == []


@pytest.mark.slow  # three in-process runs
def test_an_fp16_run_stopped_mid_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch, run_cli):
    """The grad scaler's scale, growth tracker and skip count travel in last.pt: the resumed run's history, weights
    and skipped steps are the uninterrupted run's, bit for bit."""
    flags = [*FLAGS, "--precision", "fp16"]
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "whole")
    assert code == 0, err
    stop_at_ask(monkeypatch, 5)  # after the 5th of 8 steps of epoch 1
    code, _, err = run_cli("run", *flags, "--out", tmp_path / "cut")
    assert code == 130, err
    saved = torch.load(run_dir_of(tmp_path / "cut") / "last.pt", weights_only=True)
    assert saved["scaler"]["skipped"] >= 1  # the interesting case: the scale has moved before the stop
    monkeypatch.undo()
    code, _, err = run_cli("run", "--resume", "latest", "--out", tmp_path / "cut")
    assert code == 0, err
    row = assert_same_run(tmp_path / "whole", tmp_path / "cut")
    whole = pd.read_csv(tmp_path / "whole" / "runs.csv").iloc[0]
    assert row["precision"] == "fp16" and row["skipped_steps"] == whole["skipped_steps"] >= 1



def test_restoring_an_optimizer_keeps_the_lr_tensors_a_cuda_graph_reads():
    """A capturable optimizer's lr is a device tensor the captured step reads on every replay. Loading a
    checkpoint (saved lr 0.25, read to the CPU) writes the value into that tensor; load_state_dict alone would
    swap in the checkpoint's CPU tensor, and a graph captured on it replays one fixed number."""
    from bench.engine.checkpoint import _load_optimizer

    param = torch.nn.Parameter(torch.zeros(3))
    saved = torch.optim.AdamW([param], lr=torch.tensor(0.25), foreach=False).state_dict()
    optimizer = torch.optim.AdamW([param], lr=torch.tensor(1e-3), foreach=False)
    lr = optimizer.param_groups[0]["lr"]
    _load_optimizer(optimizer, saved)
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == 0.25
