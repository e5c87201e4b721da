"""Sweeps: sweep files and their plan, concurrent runs that compute exactly what sequential runs compute, a
sweep that survives SIGKILL, runs that fail without stopping the sweep, and Ray / submitit launchers."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.app.sweep.in_process import run_plan
from bench.app.sweep.plan import plan
from bench.config import make_config
from tests.support.processes import spawn_bench
from tests.support.sweep_files import sweep_text


def sweep_file(tmp_path, body="", epochs=2, name="s.toml", out="res") -> Path:
    path = tmp_path / name
    path.write_text(sweep_text(epochs=epochs, log_every=2, out=out) + textwrap.dedent(body))
    return path


def tiny(out, seed, templates="seed"):
    return make_config("smoke", model=dict(embed_dim=16, width=32, heads=2, layers=1, encoder_opts=(("width", 8),)),
                       dataset="synthetic", epochs=2, limit_train=64, limit_test=32, batch_size=16, seed=seed,
                       log_every=2, templates=templates, out=str(out), progress=False)


@pytest.fixture
def user_threads():
    """Two intra-op threads, as torch picks on this 2-core machine (conftest runs tests at one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_sweep_file_plan_and_dry_run(tmp_path, run_cli):
    path = sweep_file(tmp_path, """
        [grid]
        templates = ["seed", "openai"]
        seed = [0, 1, 2]
        [[exclude]]
        templates = "openai"
        seed = [1, 2]
        [[include]]
        templates = "openai"
        seed = 5
        lr = 0.001
    """)
    code, out, err = run_cli("sweep", path, "--dry-run")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4 + 1 + 1 and lines[-1].startswith("5 runs: 5 to do")
    assert "templates=openai seed=5 lr=0.001" in lines[4]
    assert "templates=seed seed=2 lr=0.0001" in lines[2]  # lr varies (the include sets it): shown, as run
    ids = [line.split()[1] for line in lines[:-1]]
    assert len(set(ids)) == 5 and all(i.startswith("modified_resnet-") for i in ids)
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    # the ids are the configuration and seed: the flags form of the same runs names the same ids
    code, out2, err = run_cli("sweep", "--encoder", "modified_resnet", "--templates", "seed", "--seeds", "0,1,2",
                              "--preset", "smoke", "--dataset", "synthetic", "--epochs", "2", "--limit-train", "64",
                              "--limit-test", "32", "--batch-size", "16", "--embed-dim", "16", "--text-width", "32",
                              "--text-layers", "1", "--text-heads", "2", "--encoder-opt", "width=8", "--log-every", "2",
                              "--out", "res", "--dry-run")
    assert code == 0, err
    assert [line.split()[1] for line in out2.strip().splitlines()[:-1]] == ids[:3]


def test_a_plan_of_one_run_says_one_run(tmp_path, run_cli):
    """Counts in the plan's last line agree with their number: "1 run", not "1 runs"."""
    code, out, err = run_cli("sweep", "--encoder", "modified_resnet", "--seeds", "0", "--preset", "smoke", "--dataset",
                             "synthetic", "--out", tmp_path / "res", "--dry-run")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("1 run: 1 to do -> ")


def test_sweep_lines_show_a_target_in_its_one_spelling(tmp_path, run_cli):
    """A target varied in a sweep file is shown as the run's config keeps it (the spelling of its row and id),
    not as the file spelled it: "zeroshot_top1 = .90" and "zeroshot_top1=0.9" are one target and look alike in
    the plan and the progress lines (through the same labels), and in an adaptive sweep's configurations."""
    path = sweep_file(tmp_path, """
        stop_at_target = true
        [grid]
        target = ["zeroshot_top1 = .90", "zeroshot_top1=0.5"]
        [[include]]
        target = "zeroshot_top1=0.900"
        lr = 0.001
    """)
    code, out, err = run_cli("sweep", path, "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("target=zeroshot_top1=0.9 lr=0.0001") and lines[1].endswith("target=zeroshot_top1=0.5 "
                                                                                         "lr=0.0001"), out
    assert lines[2].endswith("target=zeroshot_top1=0.9 lr=0.001") and ".90" not in out, out
    code, out, err = run_cli("sweep", path, "--dry-run", "--until", "zeroshot_top1:0.05")
    assert code == 0 and "target=zeroshot_top1=0.9 lr=0.0001\n" in out and ".90" not in out, (out, err)


@pytest.mark.parametrize("body, needle", [
    ("[grid]\nseed = 3\n", "grid.seed must be a non-empty list"),
    ("[grid]\nbatch_sise = [8, 16]\n", "unknown option 'batch_sise'; did you mean batch_size?"),
    ("[grid]\nseed = [0]\n[gird]\nx = 1\n", "unknown table [gird]"),
    ("[grid]\nweight_decay = [0.01, 3.0]\n", "--weight-decay must be in [0, 1], got 3.0"),
    ("[grid]\nseed = [0]\n[sweep]\nconcurent = 2\n", "unknown key sweep.concurent"),
    ("[grid]\nseed = [0, 0]\n", "are the same run"),
    ("[grid]\nseed = [0]\nlr = ['fast']\n", "lr = 'fast'"),
    ("[grid]\nseed = [0\n", "is not valid TOML"),
    ("[grid]\nencoder = ['modified_resnet', 'nope']\n", "unknown encoder 'nope'"),
    # options checked beside the model's (checkpoints, clipping, data), a later point's too: one model, two points
    ("[grid]\nmax_grad_norm = [1.0, -1.0]\n", "--max-grad-norm must be a positive number, got -1.0"),
    ("[grid]\nseed = [0, 1]\n[[include]]\nseed = 2\ncheckpoint_every = -1\n", "--checkpoint-every must be >= 0 steps"),
    # a list, table or date where the option takes one value
    ("[grid]\nlr = [[0.1]]\n", "lr = [0.1] is a list, and --lr takes one value"),
    ("[[include]]\nepochs = 2020-01-01\n", "epochs = datetime.date(2020, 1, 1) is date, and --epochs takes one"),
    ("[grid]\nseed = [0]\n[[include]]\nlr = {a = 1}\n", "lr = {'a': 1} is a table, and --lr takes one value"),
    ("[grid]\nseed = [1.5]\n", "seed = 1.5 is not a valid integer; give a whole number"),
    ("[grid]\neval_every = [true]\n", "eval_every = True is not a valid integer"),
    # a list option's value as str() would read it: a class named 'True' or "{'a': 1}", refused only mid-sweep
    ("[grid]\nseed = [0]\n[[include]]\nholdout_classes = true\n", "holdout_classes = True holds true or false; "
                                                                 "--holdout-classes takes names or numbers"),
    ("[grid]\nholdout_classes = ['red', {a = 1}]\n", "holdout_classes = {'a': 1} holds a table"),
    ("[grid]\nseed = [0]\n[[include]]\ntransfer = [['stl10']]\n", "transfer = [['stl10']] holds a list"),
    # a typo in an exclude would silently drop nothing
    ("[grid]\nseed = [0, 1]\n[[exclude]]\nseed = 7\n", "exclude #1 has seed = 7, which grid.seed does not list (0, 1)"),
    # counted before the cross product is built (four lists of 1000 would be 10^12 points, more than memory holds)
    ("[grid]\n" + "".join(f"{k} = {list(range(20))}\n" for k in ("seed", "lr", "weight_decay", "label_smoothing")),
     "[grid] has 160,000 points (20 x 20 x 20 x 20); a sweep plans at most 100,000"),
])
def test_bad_sweep_file_is_one_line_naming_the_key(tmp_path, run_cli, body, needle):
    code, out, err = run_cli("sweep", sweep_file(tmp_path, body), "--dry-run")
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_flags_override_the_file_but_not_what_it_sweeps(tmp_path, run_cli):
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n")
    code, out, err = run_cli("sweep", path, "--epochs", "1", "--dry-run")
    assert code == 0, err
    planned = [line.split()[1] for line in out.splitlines()[:-1]]
    code, out_default, _ = run_cli("sweep", path, "--dry-run")
    assert planned != [line.split()[1] for line in out_default.splitlines()[:-1]]  # epochs is in the config id
    path = sweep_file(tmp_path, "[grid]\nlr = [0.001, 0.002]\n", name="lr.toml")
    code, out, err = run_cli("sweep", path, "--lr", "0.01", "--dry-run")
    assert code == 2 and "sweeps lr, and --lr was given too" in err


def _files(out: Path, run_id: str):
    folder = out / "runs" / run_id
    ckpt = torch.load(folder / "last.pt", weights_only=True)["model"]
    return ckpt, pd.read_csv(folder / "history.csv"), pd.read_csv(folder / "train_log.csv")


@pytest.mark.slow  # two runs writing TensorBoard files; tests/results/test_loggers.py covers the logger
def test_a_sweep_file_asks_every_run_for_its_loggers(tmp_path, run_cli):
    """``log`` in [base] gives each run of the sweep its own TensorBoard folder; it is not part of the run ids."""
    path = sweep_file(tmp_path, 'log = ["tensorboard"]\n[grid]\nseed = [0, 1]\n', epochs=1)
    code, _, err = run_cli("sweep", path)
    assert code == 0, err
    runs = sorted((tmp_path / "res" / "runs").iterdir())
    assert [r.name.rsplit("-", 1)[1] for r in runs] == ["s0", "s1"]
    assert all(len(list((r / "tensorboard").glob("events.out.tfevents.*"))) == 1 for r in runs)


@pytest.mark.slow  # six runs, three at a time on two threads each
def test_concurrent_runs_equal_sequential_runs_bit_for_bit(tmp_path, user_threads):
    """K = 3 runs at once (one thread each, two intra-op threads each) == the same runs one after another."""
    plans = {name: plan([tiny(tmp_path / name, seed, tpl) for seed, tpl in ((0, "seed"), (1, "seed"), (0, "openai"))])
             for name in ("one", "three")}
    alone = run_plan(plans["one"], concurrent=1, echo=lambda line: None)
    together = run_plan(plans["three"], concurrent=3, echo=lambda line: None)
    assert [o.status for o in alone] == [o.status for o in together] == ["done"] * 3
    for a, b in zip(alone, together):
        assert a.planned.run_id == b.planned.run_id
        for key in ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall", "final_train_loss"):
            assert a.row[key] == b.row[key], key
        wa, ha, la = _files(tmp_path / "one", a.planned.run_id)
        wb, hb, lb = _files(tmp_path / "three", b.planned.run_id)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert np.array_equal(ha["train_loss"].to_numpy(), hb["train_loss"].to_numpy())
        assert np.array_equal(la["train_loss"].to_numpy(), lb["train_loss"].to_numpy())
    assert alone[0].row["final_train_loss"] != alone[1].row["final_train_loss"]  # seeds really differ
    table = pd.read_csv(tmp_path / "three" / "runs.csv")
    assert sorted(table.run_id) == sorted(p.run_id for p in plans["three"])


FAILING_ENCODER = '''
    import bench
    import torch
    from torch import nn

    class Fragile(nn.Module):
        """Builds and passes the forward check; fails in its first training step."""
        def __init__(self, embed_dim, image_size):
            super().__init__()
            self.proj = nn.Linear(3 * image_size * image_size, embed_dim)
        def forward(self, x):
            if self.training and torch.is_grad_enabled():
                raise RuntimeError("boom: this encoder fails at run time")
            return self.proj(x.flatten(1))

    @bench.hookimpl
    def register_encoders(register):
        register("fragile", Fragile, "fails in training", family="test", source="tests")
'''


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, run_cli):
    from tests.support.plugins import write_plugin

    write_plugin(tmp_path / "plugins", "fragile", FAILING_ENCODER)
    path = sweep_file(tmp_path, """
        [[include]]
        encoder = "fragile"
        encoder_opt = {}
        [[include]]
        seed = 1
    """, epochs=1)  # what is asked of the run that trains is that it ran: one epoch shows it
    code, out, err = run_cli("--plugins-dir", tmp_path / "plugins", "sweep", path)
    assert code == 1, err
    assert "FAILED encoder_opt={} encoder=fragile" in out and "boom: this encoder fails at run time" in out
    assert "1 of 2 runs failed" in err
    runs = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert list(runs.seed) == [1]  # the run after the failed one ran
    failed = list((tmp_path / "res" / "sweep" / "failed").glob("*.json"))
    assert len(failed) == 1 and "boom" in json.loads(failed[0].read_text())["error"]
    code, out, err = run_cli("--plugins-dir", tmp_path / "plugins", "sweep", path, "--status")
    assert code == 0 and "failed" in out.splitlines()[0] and "boom" in out.splitlines()[0]
    assert "1 done, 1 failed" in out


# A linear tower that notes, at each forward, whether it trains, whether the cyclic GC is on, and whether objects
# were frozen out of its sight (bench.app.own_process); torch is imported when the tower is built, as bench's are.
# Its prefix form (gcprobe:NAME) is looked up by a resolver that imports torch, as timm:NAME's does, and notes at
# each lookup whether the GC is on and whether torch had loaded before it
GC_PROBE_ENCODER = '''
    import gc
    import json
    import sys

    import bench

    @bench.hookimpl
    def register_encoders(register):
        def factory(embed_dim, image_size):
            from torch import nn

            class Probe(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.proj = nn.Linear(3 * image_size * image_size, embed_dim)

                def forward(self, x):
                    with open("gc_probe.jsonl", "a") as f:
                        f.write(json.dumps([self.training, gc.isenabled(), gc.get_freeze_count() > 0]) + "\\n")
                    return self.proj(x.flatten(1))

            return Probe()

        register("gcprobe", factory, "notes the GC's state at each forward", family="test", source="tests")

        def resolve(rest):
            with open("gc_lookups.jsonl", "a") as f:
                f.write(json.dumps([gc.isenabled(), "torch" in sys.modules]) + "\\n")
            import torch  # noqa: F401

            return factory

        register("gcprobe:", resolve, "the probe, looked up by a resolver that imports torch", prefix=True,
                 family="test", source="tests")
'''
TINY_SWEEP = ["--encoder", "gcprobe", "--preset", "smoke", "--dataset", "synthetic", "--seeds", "0,1", "--epochs", "1",
              "--limit-train", "32", "--limit-test", "16", "--batch-size", "16", "--embed-dim", "16", "--text-width",
              "32", "--text-layers", "1", "--text-heads", "2", "--no-progress"]


def gc_states(tmp_path, *args) -> set:
    """``python -m bench sweep`` of the probe tower in ``tmp_path`` (its own process, as a user runs it): the
    distinct ``(training, GC on, objects frozen)`` its forwards noted."""
    from tests.support.plugins import write_plugin

    write_plugin(tmp_path / "plugins", "gc_probe", GC_PROBE_ENCODER)
    proc = spawn_bench("--plugins-dir", tmp_path / "plugins", "sweep", *TINY_SWEEP, "--out", tmp_path / "res", *args,
                       cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return {tuple(json.loads(line)) for line in (tmp_path / "gc_probe.jsonl").read_text().splitlines()}


def test_a_sweeps_own_process_imports_torch_with_the_gc_off_and_plans_with_it_on(tmp_path):
    """``bench sweep`` as its own process imports torch and pandas with the GC held off and then frozen, as ``bench
    run`` does: the plan's forward check of each tower finds torch's objects frozen and the GC on again (the sweep
    imported them with the GC on, whose full collections walked them all)."""
    assert gc_states(tmp_path, "--dry-run") == {(False, True, True)}


def test_a_sweeps_own_process_looks_up_a_prefix_name_with_the_gc_off(tmp_path):
    """``bench sweep --encoder timm:NAME`` as its own process: the names are looked up before the heavy imports by
    their plugin's resolver, which imports torch (timm's does), so the lookup runs inside the GC-off window, as
    ``bench run``'s does; the sweep looked them up before its window, and torch's import ran with the GC on."""
    from tests.support.plugins import write_plugin

    write_plugin(tmp_path / "plugins", "gc_probe", GC_PROBE_ENCODER)
    args = ["--encoder", "gcprobe:lookup", *TINY_SWEEP[2:], "--out", tmp_path / "res", "--dry-run"]
    proc = spawn_bench("--plugins-dir", tmp_path / "plugins", "sweep", *args, cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lookups = [json.loads(line) for line in (tmp_path / "gc_lookups.jsonl").read_text().splitlines()]
    assert lookups[0] == [False, False]  # the first lookup imported torch, with the GC off
    assert [gc_on for gc_on, torch_loaded in lookups if not torch_loaded] == [False]


@pytest.mark.slow  # a sweep of two runs in a child process
def test_a_sweep_that_trains_in_its_own_process_trains_with_the_gc_on(tmp_path):
    """A sweep whose runs train in its own process imports the engine (torch._dynamo, bench's run) with the GC off
    before its first run, and trains with the GC on: every training forward of both runs saw it on, after torch's
    objects were frozen out of its sight."""
    states = gc_states(tmp_path)
    assert {s for s in states if s[0]} == {(True, True, True)}
    assert len((tmp_path / "res" / "runs.csv").read_text().splitlines()) == 3  # both runs trained and recorded


@pytest.mark.slow  # a SIGKILLed sweep process, then two more
def test_sigkilled_sweep_continues_each_run_under_its_own_id(tmp_path):
    """SIGKILL in the middle of the second run; the same command again ends with one row per planned run, the
    killed run resumed from its last.pt (same run id, a resume counted) and equal to an uninterrupted sweep."""
    body = "[grid]\nseed = [0, 1, 2]\n"
    path = sweep_file(tmp_path, body, epochs=3)
    clean = sweep_file(tmp_path, body, epochs=3, name="clean.toml", out="clean")
    proc = spawn_bench("sweep", path, "--checkpoint-every", "2")
    runs = tmp_path / "res" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list(runs.glob("*/result.json"))
        started = [p for p in runs.glob("*/last.pt") if not (p.parent / "result.json").exists()]
        if len(done) == 1 and started:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"the sweep never reached its second run: {proc.communicate()}")
    killed = started[0].parent.name
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (runs / killed / "result.json").exists()
    again = spawn_bench("sweep", path, "--checkpoint-every", "2")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"resume seed={killed[-1]} ({killed})" in out and "skipped" in out
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert len(table) == 3 and table.run_id.is_unique and killed in set(table.run_id)
    assert int(table.set_index("run_id").loc[killed, "resumes"]) == 1
    ref = spawn_bench("sweep", clean, "--checkpoint-every", "2")
    assert ref.wait(timeout=300) == 0
    reference = pd.read_csv(tmp_path / "clean" / "runs.csv").set_index("run_id")
    for key in ("zeroshot_top1", "final_train_loss"):
        assert table.set_index("run_id").loc[killed, key] == reference.loc[killed, key], key


WRITER = """
import os, signal, sys, time
from pathlib import Path
import bench.results.runs_csv as rt
out, i, victim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if i == victim:  # SIGKILL itself halfway through writing the new table
    real = rt.atomic_write_text
    def torn(path, text):
        if Path(path).name == "runs.csv":  # as atomic_file writes: a temp file beside it, then the rename
            with open(Path(path).parent / f".runs.csv.{i}.tmp", "w") as f:
                f.write(text[: len(text) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        real(path, text)
    rt.atomic_write_text = torn
while not (out / "go").exists():
    time.sleep(0.001)
run_dir = out / "runs" / f"run-{i}"
run_dir.mkdir(parents=True)
rt.finish_run(out, run_dir, {"run_id": f"run-{i}", "config_id": "c", "seed": i, "zeroshot_top1": i / 10,
                             "encoder": "x", "epochs": 1})
"""


@pytest.mark.slow  # eight writer processes, one SIGKILLed
def test_eight_writers_one_killed_every_finished_run_once(tmp_path):
    from bench.results.runs_csv import read_table, reconcile_runs

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "res"
    out.mkdir()
    procs = [subprocess.Popen([sys.executable, script, out, str(i), "3"]) for i in range(8)]
    time.sleep(1.0)
    (out / "go").touch()
    codes = [p.wait(timeout=120) for p in procs]
    assert codes[3] == -signal.SIGKILL and all(c == 0 for i, c in enumerate(codes) if i != 3)
    table = read_table(out / "runs.csv")
    assert not table.problems  # no damaged row
    assert table.run_ids() == {f"run-{i}" for i in range(8) if i != 3}  # the killed writer's row never landed
    # its record did: the table built from the records has every run exactly once
    assert reconcile_runs(out) == 1 and reconcile_runs(out) == 0
    frame = read_table(out / "runs.csv").frame()
    assert sorted(frame.run_id) == sorted(f"run-{i}" for i in range(8)) and frame.run_id.is_unique


def test_results_rebuild_restores_the_table_from_the_records(tmp_path, run_cli):
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n", epochs=1)
    assert run_cli("sweep", path, "--no-checkpoints")[0] == 0
    csv = tmp_path / "res" / "runs.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:2] + ["damaged,row"]) + "\n")  # one row lost, one damaged
    code, out, err = run_cli("results", "--results", tmp_path / "res", "--rebuild")
    assert code == 0, err
    assert "2 runs, 1 added from records, 1 dropped" in err
    table = pd.read_csv(csv)
    assert len(table) == 2 and table.run_id.is_unique
    assert list((tmp_path / "res").glob("runs.csv.*.bak"))  # the old file is kept


@pytest.mark.slow  # starts a local Ray
def test_ray_local_sweep_three_runs_gives_the_rows_of_the_same_sweep_run_locally(tmp_path, run_cli):
    """3 runs on a local Ray of 2 CPUs end with 3 rows, the same bits as --launcher local gives (losses, top-1),
    at the sweep's torch thread count and with the sweep's command. Ray gives a task of num_cpus=1 one thread
    (OMP_NUM_THREADS=1), and each row recorded the Ray worker's command line."""
    ray = pytest.importorskip("ray")
    from bench.results.run_folder import provenance

    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n", epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the tests' one thread is also what Ray would give: 2 tells them apart
    try:
        code, out, err = run_cli("sweep", path, "--no-checkpoints", "--out", tmp_path / "local")
        assert code == 0, err
        ray.init(num_cpus=2, include_dashboard=False)  # a local Ray of 2 CPUs; the sweep uses the running one
        try:
            code, out, err = run_cli("sweep", path, "--launcher", "ray", "--no-checkpoints")
        finally:
            ray.shutdown()
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert out.count("queued") == 3 and out.count(" done ") == 3
    table = pd.read_csv(tmp_path / "res" / "runs.csv").set_index("run_id").sort_index()
    local = pd.read_csv(tmp_path / "local" / "runs.csv").set_index("run_id").sort_index()
    assert len(table) == 3 and list(table.index) == list(local.index)
    assert (table.torch_threads == 2).all() and (table.command == provenance()["command"]).all()
    for column in ("final_train_loss", "zeroshot_top1", "zeroshot_top5", "torch_threads", "config_id"):
        assert table[column].tolist() == local[column].tolist(), column


@pytest.mark.slow  # starts a local Ray
def test_concurrent_caps_a_ray_sweeps_runs_in_flight(tmp_path, run_cli):
    """--concurrent 1 with --launcher ray: on a Ray of 2 CPUs, which would run two tasks at once, no two runs
    overlap in time (each from its config.json, written as it starts, to its result.json) and the next run is
    handed to Ray only when one ends. --concurrent was silently ignored under Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n", epochs=1)
    try:
        code, out, err = run_cli("sweep", path, "--launcher", "ray", "--concurrent", "1", "--no-checkpoints")
    finally:
        ray.shutdown()
    assert code == 0, err
    events = [line.split()[1] for line in out.splitlines() if line.split()[1:2] in (["queued"], ["done"])]
    assert events == ["queued", "done"] * 3, out
    runs = list((tmp_path / "res" / "runs").iterdir())
    starts = sorted((run / "config.json").stat().st_mtime_ns for run in runs)
    ends = sorted((run / "result.json").stat().st_mtime_ns for run in runs)
    assert len(runs) == 3 and all(end < start for end, start in zip(ends, starts[1:])), (starts, ends)


@pytest.mark.slow  # submitit's local executor: a process per run
def test_submitit_local_sweep_three_runs(tmp_path, run_cli):
    pytest.importorskip("submitit")
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n[slurm]\ncluster = 'local'\nruns_per_job = 2\n"
                                "time_min = 10\n", epochs=1)
    code, out, err = run_cli("sweep", path, "--launcher", "slurm", "--no-checkpoints")
    assert code == 0, err
    assert "submitted 2 job(s)" in out
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert len(table) == 3 and table.run_id.is_unique
    from bench.results.run_folder import provenance

    assert (table.command == provenance()["command"]).all()  # the sweep's, not submitit's job command line
    code, out, err = run_cli("sweep", path, "--launcher", "slurm", "--no-checkpoints")  # every run done: no job
    assert code == 0 and "submitted" not in out and "Warning" not in err, err


def test_missing_launcher_extra_is_one_line(tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setitem(sys.modules, "submitit", None)
    path = sweep_file(tmp_path, "[grid]\nseed = [0]\n", epochs=1)
    code, out, err = run_cli("sweep", path, "--launcher", "ray")
    assert code == 2 and "pip install 'bench[ray]'" in err
    code, out, err = run_cli("sweep", path, "--launcher", "slurm")
    assert code == 2 and "pip install 'bench[slurm]'" in err


@pytest.mark.slow  # two worker processes
def test_two_workers_share_the_plan_each_run_once(tmp_path, run_cli):
    """--workers 2 (on CPU; one per GPU with --gpus): two processes take runs through the claims, none twice."""
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2, 3]\n", epochs=1)
    code, out, err = run_cli("sweep", path, "--workers", "2", "--no-checkpoints")
    assert code == 0, err
    done = [line.split()[-1] for line in out.splitlines() if " start " in line]
    assert len(done) == 4 and len(set(done)) == 4, out
    assert {line[:2] for line in out.splitlines() if " start " in line} <= {"w0", "w1"}
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert len(table) == 4 and table.run_id.is_unique


def _sweep_with_two_checkpoints(tmp_path, path, *options):
    """A ``bench sweep`` process started with ``options``, once two of its runs have a last.pt; and its runs folder."""
    proc = spawn_bench("sweep", path, *options, "--checkpoint-every", "2")
    runs = tmp_path / "res" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(runs.glob("*/last.pt"))) < 2:
        time.sleep(0.05)
    return proc, runs


def _same_command_continues(tmp_path, path, *options, runs: int) -> str:
    """The stopped sweep's command again: it ends well with ``runs`` rows, once each, the stopped ones resumed once;
    its standard output."""
    again = spawn_bench("sweep", path, *options, "--checkpoint-every", "2")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert len(table) == runs and table.run_id.is_unique and table.resumes.max() == 1
    return out


@pytest.mark.slow  # two bench sweep processes
def test_sigterm_stops_concurrent_runs_with_checkpoints_and_the_same_command_continues(tmp_path):
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n", epochs=8)
    proc, runs = _sweep_with_two_checkpoints(tmp_path, path, "--concurrent", "2")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "sweep stopped by SIGTERM" in err and "run the same command again" in err
    assert not list(runs.glob("*/result.json")) or len(list(runs.glob("*/result.json"))) < 2
    out = _same_command_continues(tmp_path, path, "--concurrent", "2", runs=2)
    assert "resume" in out


@pytest.mark.slow  # a bench sweep with two worker processes, then another
def test_sigterm_to_a_sweep_with_workers_stops_them_with_checkpoints(tmp_path):
    """`kill PID` of a --workers sweep: each worker's runs save their checkpoints, the sweep exits 130, and the same
    command continues them. (The parent died alone; its workers died writing to its closed pipe, each run in flight
    recorded as failed with a BrokenPipeError.)"""
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n", epochs=8)
    proc, _ = _sweep_with_two_checkpoints(tmp_path, path, "--workers", "2")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert out.count("stopped by SIGTERM") == 2 and "sweep workers stopped by a signal" in err, (out, err)
    assert not (tmp_path / "res" / "sweep" / "failed").exists(), out
    _same_command_continues(tmp_path, path, "--workers", "2", runs=3)


@pytest.mark.slow  # a bench sweep process that starts a local Ray, then another
def test_sigterm_to_a_ray_sweep_stops_its_tasks_with_checkpoints_and_the_same_command_continues(tmp_path):
    """`kill PID` of a --launcher ray sweep: its tasks are cancelled, each run in flight saves its checkpoint and
    releases its claim, and the sweep exits 130 saying to run the command again, which continues them. (The driver
    died at once, Ray's shutdown killed the runs in flight, and the sweep exited 1; a Ctrl-C exited 130 with
    advice for a single run.)"""
    pytest.importorskip("ray")
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n", epochs=16)
    proc, _ = _sweep_with_two_checkpoints(tmp_path, path, "--launcher", "ray")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "sweep stopped by SIGTERM" in err and "run the same command again" in err, (out, err)
    assert not list((tmp_path / "res" / "sweep" / "claims").iterdir())  # every run let go of its claim
    assert not (tmp_path / "res" / "sweep" / "failed").exists(), out
    _same_command_continues(tmp_path, path, "--launcher", "ray", runs=3)


def test_claims_exclude_each_other_and_stale_ones_are_taken_over(tmp_path):
    import socket

    from bench.claims import Claim

    path = tmp_path / "claim"
    a, b = Claim(path), Claim(path)
    assert a.acquire() and not b.acquire()
    a.release()
    assert b.acquire()
    b.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"token": "t", "host": socket.gethostname(), "pid": dead.pid}))
    taker = Claim(path)
    assert taker.acquire()  # its holder's process is gone
    taker.release()
    path.write_text(json.dumps({"token": "u", "host": "another-node", "pid": 1}))
    assert not Claim(path, stale_after=60).acquire()  # another machine's, with a fresh heartbeat
    old = time.time() - 120
    os.utime(path, (old, old))
    beating = Claim(path, heartbeat=0.05, stale_after=60)
    assert beating.acquire()  # no heartbeat for 2 minutes: stale
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 1  # the holder's heartbeat keeps it fresh
    beating.release()
    assert not path.exists()


@pytest.mark.slow  # a bench sweep process whose submitit local jobs are processes, then another
def test_sigterm_to_a_slurm_sweep_stops_its_jobs_with_checkpoints_and_the_same_command_continues(tmp_path):
    """`kill PID` of a --launcher slurm sweep on submitit's local cluster: each job is asked to stop, its runs in
    flight save their checkpoints, and the sweep exits 130 saying to run the command again, which continues them.
    (The sweep died alone with code 143 and no line, and its jobs went on training unseen.)"""
    pytest.importorskip("submitit")
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1, 2]\n[slurm]\ncluster = 'local'\nruns_per_job = 1\n",
                      epochs=16)
    proc, runs = _sweep_with_two_checkpoints(tmp_path, path, "--launcher", "slurm")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "stopping 3 job(s)" in out and "run the same command again" in err, (out, err)
    time.sleep(1)  # a job still training would write its result.json now
    assert len(list(runs.glob("*/result.json"))) < 3 and not (tmp_path / "res" / "runs.csv").exists()
    _same_command_continues(tmp_path, path, "--launcher", "slurm", runs=3)


def test_a_preempted_slurm_job_requeues_itself_with_its_runs():
    submitit = pytest.importorskip("submitit")
    from bench.app.sweep.launchers import SlurmJob

    job = SlurmJob([{"config": {}, "run_id": "r"}], ([], []), concurrent=2)
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, SlurmJob) and again.function.payloads == job.payloads
    assert again.function.concurrent == 2


def test_a_remote_worker_reads_a_relative_image_folder_where_the_sweep_was_started(tmp_path, monkeypatch):
    """A Ray task starts in a folder of its own: the run's dataset imagefolder:ifold (relative, part of its
    configuration) is read from the folder the sweep was started in, as the command meant it."""
    from bench.app.options import config_from_flags
    from bench.app.sweep.launchers import _payload, _portable, run_payload
    from bench.app.sweep.plan import Planned, planned_run_id
    from bench.data.datasets import make_synthetic
    from bench.host.manager import set_host
    from tests.support.archives import write_image_folder

    for split in ("train", "test"):
        data = make_synthetic(split, 0, n=40)
        write_image_folder(tmp_path / "start" / "ifold" / split, data.images, data.labels, data.classes)
    monkeypatch.chdir(tmp_path / "start")
    cfg = config_from_flags(dataset="imagefolder:ifold", preset="smoke", epochs=1, batch_size=8, embed_dim=16,
                            text_width=32, text_layers=1, text_heads=2, encoder_opts=("width=8",), out="res",
                            progress=False)
    payload = _payload(_portable(Planned(cfg, planned_run_id(cfg), {})))
    monkeypatch.chdir(tmp_path)  # where the worker starts
    previous = set_host(None)
    try:
        result = run_payload(payload, ([], []))
    finally:
        set_host(previous)
    assert result["status"] == "done", result.get("error")
    assert (tmp_path / "start" / "res" / "runs" / payload["run_id"] / "result.json").is_file()


def test_a_remote_worker_records_the_sweeps_command_and_trains_at_the_thread_count_it_is_given(tmp_path,
                                                                                              monkeypatch):
    """A Ray task or Slurm job records the sweep's command line in its row, not the Ray worker's or submitit's
    (bench report lists them), and trains at the torch thread count the payload carries (a local Ray's task got
    Ray's one thread where the same run under --launcher local had the sweep's count)."""
    from bench.app.sweep import launchers
    from bench.app.sweep.plan import Planned
    from bench.host.manager import set_host

    seen = {}

    def fake_run_planned(p, stop):
        seen.update(argv=list(sys.argv), threads=torch.get_num_threads(), run_id=p.run_id)
        return launchers.Outcome(p, "done")

    monkeypatch.setattr(launchers, "run_planned", fake_run_planned)
    cfg = make_config(out=str(tmp_path / "res"), progress=False)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/bench", "sweep", "s.toml", "--launcher", "ray"])
    payload = launchers._payload(Planned(cfg, "r0", {}), threads=3)
    monkeypatch.setattr(sys, "argv", ["/ray/default_worker.py", "--node-ip-address=1.2.3.4"])  # in the worker
    previous, threads = set_host(None), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        launchers.run_payload(payload, ([], []))
    finally:
        set_host(previous)
        torch.set_num_threads(threads)
    assert seen == {"argv": ["/venv/bin/bench", "sweep", "s.toml", "--launcher", "ray"], "threads": 3, "run_id": "r0"}


def test_a_remote_worker_reads_data_where_the_sweeps_environment_says_and_gets_its_own_back(tmp_path, monkeypatch):
    """A Ray cluster's worker starts with its node's environment: the sweep's BENCH_DATASETS_DIR (relative here, so
    made absolute), BENCH_DATA_DIR and BENCH_LOAD_PLUGINS (empty: no installed plugin) hold for the task's run, over
    the worker's own values; a variable the sweep leaves unset or empty keeps the worker's; after the run the
    worker's environment is as it was (a Ray worker runs task after task, perhaps another sweep's)."""
    from bench.app.sweep import launchers
    from bench.app.sweep.plan import Planned
    from bench.host.manager import set_host

    names = ("BENCH_DATASETS_DIR", "BENCH_DATA_DIR", "BENCH_LOAD_PLUGINS", "BENCH_CACHE_DIR")
    seen = {}

    def fake_run_planned(p, stop):
        seen.update({k: os.environ.get(k) for k in names})
        return launchers.Outcome(p, "done")

    monkeypatch.setattr(launchers, "run_planned", fake_run_planned)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_DATASETS_DIR", "sets")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cifar"))
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "")
    monkeypatch.setenv("BENCH_CACHE_DIR", "")  # an empty path names no folder
    payload = launchers._payload(Planned(make_config(out=str(tmp_path / "res"), progress=False), "r0", {}))
    worker = {"BENCH_DATASETS_DIR": "/node/sets", "BENCH_LOAD_PLUGINS": "airbench", "BENCH_CACHE_DIR": "/node/cache"}
    monkeypatch.delenv("BENCH_DATA_DIR")
    for k, v in worker.items():
        monkeypatch.setenv(k, v)
    previous = set_host(None)
    try:
        launchers.run_payload(payload, ([], []))
    finally:
        set_host(previous)
    assert seen == {"BENCH_DATASETS_DIR": str(tmp_path / "sets"), "BENCH_DATA_DIR": str(tmp_path / "cifar"),
                    "BENCH_LOAD_PLUGINS": "", "BENCH_CACHE_DIR": "/node/cache"}
    assert {k: os.environ.get(k) for k in names} == {**worker, "BENCH_DATA_DIR": None}


def test_a_remote_worker_loads_the_sweeps_bench_plugins_dir(tmp_path, monkeypatch):
    """BENCH_PLUGINS_DIR of the sweep's environment is among the plugin folders handed to Ray tasks and Slurm jobs,
    absolute: a node elsewhere has no such variable, and a worker resolves a relative path in its own folder."""
    from bench.app.sweep.launchers import _absolute_plugins

    (tmp_path / "plug").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_PLUGINS_DIR", "plug")
    assert _absolute_plugins((["other"], ["mod"])) == ([str(tmp_path / "plug"), str(tmp_path / "other")], ["mod"])
    monkeypatch.delenv("BENCH_PLUGINS_DIR")
    assert _absolute_plugins(([], [])) == ([], [])


def test_a_concurrent_run_that_fails_before_training_is_a_failure_not_a_silent_thread_death(tmp_path, run_cli,
                                                                                          monkeypatch):
    """A run whose CUDA stream cannot be made fails with its record and the sweep exits 1, as a run failing
    anywhere else does (its thread died unseen and the sweep exited 0). Runs asking for CUDA on a machine without
    it are refused before anything runs: one line, exit 2, nothing written. A run built but never entered lets
    its folder's lock go (it stayed held, as by another process, until the garbage collector came by)."""
    from bench.app.sweep import in_process
    from tests.support.runs import files_left_open

    def no_stream(device):
        raise RuntimeError("CUDA stream: no device")

    monkeypatch.setattr(in_process, "_run_stream", no_stream)
    path = tmp_path / "s.toml"
    path.write_text(sweep_text({"seed": [0, 1]}, out="res"))
    with files_left_open() as left_open:
        code, out, err = run_cli("sweep", path, "--concurrent", "2")
    assert code == 1 and "CUDA stream: no device" in out + err, (out, err)
    assert len(list((tmp_path / "res" / "sweep" / "failed").glob("*"))) == 2
    assert len(list((tmp_path / "res" / "runs").iterdir())) == 2  # both built, so both took their locks
    assert list((tmp_path / "res" / "runs").glob("*/.running.lock")) == [] and left_open == [], left_open
    path.write_text(sweep_text({"seed": [0, 1]}, device="cuda", out="cuda_res"))
    code, out, err = run_cli("sweep", path, "--concurrent", "2")
    assert code == 2 and "the runs use --device cuda, and torch sees no GPU" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cuda_res").exists()


def test_dry_run_and_status_read_a_results_folder_they_cannot_write_and_a_sweep_says_it_cannot(tmp_path, run_cli,
                                                                                            monkeypatch):
    """--dry-run and --status only read; the sweep itself needs the folder, and one the permission bits allow but
    the file system refuses (/sys, even to root) is one line before any run, not a traceback."""
    import os

    from bench import atomic_files

    path = sweep_file(tmp_path, "[grid]\nseed = [0]\n")
    out = tmp_path / "res"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(atomic_files.os, "access", lambda p, mode: str(p) != str(out) and real_access(p, mode))
    for flag in ("--dry-run", "--status"):
        code, _, err = run_cli("sweep", path, "--out", out, flag)
        assert code == 0, err
    code, _, err = run_cli("sweep", path, "--out", out)
    assert code == 2 and "is not writable" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(atomic_files.os, "access", real_access)

    def refuse(self, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomic_files.Path, "mkdir", refuse)
    code, _, err = run_cli("sweep", path, "--out", tmp_path / "virtual")
    assert code == 2 and err.strip() == (f"bench: error: cannot create results folder '{tmp_path / 'virtual'}' "
                                         f"(Operation not permitted); pass a writable --out"), err


def test_the_epoch_lines_of_concurrent_runs_never_run_into_each_other(monkeypatch):
    """--concurrent K prints one line per epoch per run from K threads: each line is written whole, so a line never
    ends in the middle of another run's (print wrote the text and its newline apart: 'eval 0.07 sbench: ...')."""
    import threading

    from bench.distributed.world import World, log_main

    class Slow:  # a stream that lets other threads in at every write, as a busy terminal or pipe does
        def __init__(self):
            self.text = []

        def write(self, s):
            self.text.append(s)
            time.sleep(0.0005)
            return len(s)

        def flush(self):
            pass

    stream = Slow()
    monkeypatch.setattr(sys, "stderr", stream)
    world = World(torch.device("cpu"))
    threads = [threading.Thread(target=lambda n=n: [log_main(world, f"run-{n}: epoch {i}") for i in range(60)])
               for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(stream.text).splitlines()
    assert len(lines) == 180 and all(line.startswith("bench: run-") and line.count("bench:") == 1 for line in lines)


def test_a_claim_left_by_a_dead_process_that_had_this_pid_is_taken_over(tmp_path, run_cli):
    """A restarted container runs the sweep under the pid its killed predecessor had (pid 1, same hostname): the
    claims that predecessor left name this very pid. They are stale, not this process's own (the sweep took them
    for another process's and left both runs undone, exit 0, on every restart); a claim this process holds stays
    alive to its other threads."""
    import socket

    from bench.app.sweep.plan import RUNNING
    from bench.claims import Claim, claim_alive, read_claim

    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n", epochs=1)
    code, out, _ = run_cli("sweep", path, "--dry-run")
    ids = [line.split()[1] for line in out.splitlines()[:-1]]
    claims = tmp_path / "res" / "sweep" / "claims"
    claims.mkdir(parents=True)
    for run_id in ids:  # as the killed predecessor wrote them
        (claims / run_id).write_text(json.dumps({"token": "before-the-restart", "host": socket.gethostname(),
                                                 "pid": os.getpid(), "since": time.time()}))
    code, out, err = run_cli("sweep", path, "--status")
    assert code == 0 and f" {RUNNING} " not in out and "2 to do" in out, out
    code, out, err = run_cli("sweep", path, "--concurrent", "2", "--no-checkpoints")
    assert code == 0, err
    assert "left to it" not in out and out.count(" done ") == 2, out
    assert len(pd.read_csv(tmp_path / "res" / "runs.csv")) == 2 and not list(claims.iterdir())
    mine = Claim(tmp_path / "mine")
    assert mine.acquire() and claim_alive(mine.path, read_claim(mine.path)) and not Claim(mine.path).acquire()
    mine.release()


def test_a_slurm_job_that_stops_after_a_run_counts_that_run_done(tmp_path, run_cli, monkeypatch):
    """A job of the array that ends in an error (here: stopped by a signal during its second run) failed only the
    runs it did not finish; its finished first run is done, not 'failed' (it was counted failed with the job, and
    the sweep said 2 of 2 runs failed)."""
    pytest.importorskip("submitit")
    import pdb

    from tests.support.runs import stop_at_ask

    monkeypatch.setattr(pdb, "post_mortem", lambda *a: None)  # submitit's in-process 'debug' cluster debugs errors
    path = tmp_path / "s.toml"
    path.write_text(sweep_text({"seed": [0, 1]}, epochs=1, limit_train=32, out=str(tmp_path / "res"))
                    + "[slurm]\ncluster = 'debug'\nruns_per_job = 2\n")
    stop_at_ask(monkeypatch, 4)  # run 1: 2 steps and its epoch end; the first step of run 2
    code, out, err = run_cli("sweep", path, "--launcher", "slurm", "--no-checkpoints")
    assert code == 1 and "1 of 2 runs failed" in err, (out, err)
    assert "FAILED seed=0" not in out and "FAILED seed=1" in out, out
