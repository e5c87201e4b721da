"""A run is an object with phases that ``run()`` drives; two runs stepped in turn in one process each compute
exactly what they compute alone (the base a sweep scheduler interleaves runs on)."""
import numpy as np
import pandas as pd
import pytest
import torch

from bench.app.run import Run, run
from bench.config import make_config


def tiny(tmp_path, name, seed):
    return make_config("smoke", model=dict(embed_dim=16, width=32, heads=2, layers=1), dataset="synthetic",
                       epochs=3, limit_train=64, limit_test=32, batch_size=16, seed=seed, log_every=2,
                       out=str(tmp_path / name), progress=False, save_checkpoints=True)


def weights(row, out):
    return torch.load(out / "runs" / row["run_id"] / "last.pt", weights_only=True)["model"]


@pytest.mark.slow  # four runs; every quick run goes through these phases too
def test_two_runs_stepped_in_turn_equal_each_run_alone(tmp_path):
    """Bit-identical metrics, weights and loss log, at torch's default thread count (what users run)."""
    alone = [run(tiny(tmp_path, "alone", seed)) for seed in (0, 1)]
    jobs = [Run(tiny(tmp_path, "turns", seed)) for seed in (0, 1)]
    for job in jobs:
        job.__enter__()
    try:
        while not all(job.done for job in jobs):
            for job in jobs:
                if not job.done:
                    job.step()
    finally:
        for job in jobs:
            job.__exit__(None, None, None)
    together = [job.finish() for job in jobs]
    for a, b in zip(alone, together):
        for key in ("zeroshot_top1", "zeroshot_top5", "final_train_loss", "best_epoch"):
            assert a[key] == b[key], key
        wa, wb = weights(a, tmp_path / "alone"), weights(b, tmp_path / "turns")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        ha = pd.read_csv(tmp_path / "alone" / "runs" / a["run_id"] / "train_log.csv")
        hb = pd.read_csv(tmp_path / "turns" / "runs" / b["run_id"] / "train_log.csv")
        assert np.array_equal(ha["train_loss"].to_numpy(), hb["train_loss"].to_numpy())
    assert alone[0]["final_train_loss"] != alone[1]["final_train_loss"]  # the two seeds really differ


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_a_warm_up_longer_than_the_run_is_said_once_it_is_known(tmp_path, capsys):
    """A preset's warm-up on a shortened run (fast's 98 steps on 12) never reaches --lr and never decays: a note,
    which a warm-up within the run does not get."""
    from dataclasses import replace

    run(replace(tiny(tmp_path, "long", 0), epochs=1, warmup_steps=5))  # 64 images / 16 a step: 4 steps
    assert "--lr-warmup-steps 5 (the smoke preset's, unless given) is longer than the run's 4 steps" in \
        capsys.readouterr().err
    run(replace(tiny(tmp_path, "short", 0), epochs=1, warmup_steps=4))
    assert "--lr-warmup-steps" not in capsys.readouterr().err



@pytest.mark.parametrize("fails_in", ["building", "entering"])
def test_a_run_that_fails_after_taking_its_lock_lets_it_go(tmp_path, monkeypatch, fails_in):
    """An error after the run folder's lock was taken (a bad-input error the CLI turns into exit 2 included), in
    the constructor or on entering ``with run:``, releases the lock: its file removed and no descriptor left open
    for the garbage collector to find (until then the run would look as if another process trained it)."""
    from bench.app import run as run_module
    from bench.errors import BenchError
    from tests.support.runs import files_left_open

    def refuse(*args, **kwargs):
        raise BenchError("refused after the lock was taken")

    monkeypatch.setattr(run_module, "CheckpointSaver" if fails_in == "building" else "stop_on_signal", refuse)
    out = tmp_path / "out"
    with files_left_open() as left_open:
        with pytest.raises(BenchError, match="refused after the lock was taken"):
            run(tiny(tmp_path, "out", 0))
    assert len(list((out / "runs").iterdir())) == 1  # the run folder was made, so its lock was taken
    assert list((out / "runs").glob("*/.running.lock")) == []
    assert left_open == []


def test_a_run_whose_last_checkpoint_cannot_be_written_lets_its_lock_go(tmp_path, monkeypatch):
    """The last epoch's last.pt is written in the background and its failure (a full disk) comes up on leaving
    ``with run:`` with no error on its way in; finish() then never comes, so leaving lets the lock go as any failure
    does (it stayed held, as by another process, until the garbage collector closed its file)."""
    import errno
    from dataclasses import replace

    from bench.engine import checkpoint
    from bench.errors import BenchError
    from tests.support.runs import files_left_open

    def disk_full(payload, path):
        if path.name == "last.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(payload, path)

    save = checkpoint.save_checkpoint
    monkeypatch.setattr(checkpoint, "save_checkpoint", disk_full)
    out = tmp_path / "out"
    with files_left_open() as left_open:
        with pytest.raises(BenchError, match="could not write a checkpoint"):
            run(replace(tiny(tmp_path, "out", 0), epochs=1))
    assert len(list((out / "runs").iterdir())) == 1
    assert list((out / "runs").glob("*/.running.lock")) == []
    assert left_open == []
