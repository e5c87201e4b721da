"""Where a sweep's runs go is checked against this machine and the plan before anything runs or is written:
bad placement is one line naming the option and the fix, exit 2, and the results folder stays as it was.

This machine has no GPU; the GPU count the checks see is set through bench.app.sweep.placement.visible_gpus."""
import importlib.util
import socket
import time

import pytest

from tests.support.runs import TINY

TINY_RUN = ["--dataset", "synthetic", "--preset", "smoke", "--epochs", "1", "--limit-train", "32", "--limit-test",
            "32", "--batch-size", "16", *TINY]
FLAGS_FORM = ["sweep", "--encoder", "modified_resnet", "--seeds", "0,1", *TINY_RUN]


# a grid of seeds 0 and 1, and a point of its own that trains under --deterministic: three distinct runs
MIXED = "[[include]]\nseed = 7\ndeterministic = true\n"


def _sweep_file(tmp_path, table: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(f"[base]\nout = '{tmp_path / 'res'}'\n[grid]\nseed = [0, 1]\n{table}")
    return str(path)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else None


@pytest.fixture
def gpus(monkeypatch):
    """Set how many GPUs the placement checks see."""
    from bench.app.sweep import placement

    def set_count(n: int):
        monkeypatch.setattr(placement, "visible_gpus", lambda: n)

    return set_count


# (id, GPUs seen, extra arguments, a sweep file's [sweep]/[slurm] tables or None for the flags form, message)
CASES = [
    ("gpu-that-does-not-exist", 1, ["--gpus", "0,7"], None, "--gpus 0,7: there is no GPU 7, this machine has 1"),
    ("gpus-without-gpu", 0, ["--gpus", "0"], None, "--gpus 0: torch sees no GPU on this machine; leave --gpus out"),
    ("gpus-all-without-gpu", 0, ["--gpus", "all"], None, "--gpus all: torch sees no GPU"),
    ("gpu-named-twice", 2, ["--gpus", "1,1"], None, "--gpus names a GPU twice"),
    ("gpus-not-indices", 2, ["--gpus", "first"], None, "--gpus takes GPU indices separated by commas"),
    ("gpus-negative-index", 2, ["--gpus", "-1"], None, "--gpus takes GPU indices"),
    ("gpus-for-cpu-runs", 2, ["--gpus", "0", "--device", "cpu"], None, "but the runs use --device cpu; drop --gpus"),
    ("gpus-with-a-cuda-index", 2, ["--gpus", "0,1", "--device", "cuda:1"], None, "drop --device cuda:1"),
    ("cuda-index-that-does-not-exist", 1, ["--device", "cuda:3"], None,
     "the runs use --device cuda:3, and torch sees 1 GPU(s) on this machine, numbered from 0; use --device cuda:0"),
    ("cuda-index-without-gpu", 0, ["--device", "cuda:3"], None, "the runs use --device cuda:3, and torch sees no GPU"),
    # with --gpus each worker sees its one GPU as cuda:0: the fix is to drop the index, not to pick a lower one
    ("gpus-with-a-cuda-index-past-the-gpus", 2, ["--gpus", "0,1", "--device", "cuda:3"], None,
     "--gpus gives each worker one GPU as cuda:0; drop --device cuda:3"),
    # by default a sweep whose runs may use CUDA gives each worker one GPU, seen as cuda:0, so a run pinned to
    # cuda:N (a grid or a point that sets device) would fail at its start in every worker but one
    ("default-workers-with-a-cuda-index-in-the-grid", 2, [],
     "lr = [0.001, 0.002]\ndevice = ['cuda', 'cuda:1']\n[[exclude]]\nlr = 0.001\ndevice = 'cuda:1'\n[[exclude]]\n"
     "lr = 0.002\ndevice = 'cuda'\n",
     "the runs mix --device cuda:1 with --device cuda, and with cuda among them each worker gets one of this "
     "machine's 2 GPUs, seen as cuda:0; drop the index (use cuda)"),
    ("default-workers-with-a-point-on-cuda-index", 2, [], "[[include]]\ndevice = 'cuda:1'\nseed = 7\n",
     "the runs mix --device cuda:1 with --device auto"),
    ("default-workers-with-a-cuda-index-past-the-gpus", 3, ["--workers", "2"], "device = ['auto', 'cuda:5']\n",
     "the runs mix --device cuda:5 with --device auto"),
    ("negative-workers", 0, ["--workers", "-2"], None, "--workers must be a whole number of at least 1 (worker processes on this machine), got -2"),
    ("more-workers-than-runs", 0, ["--workers", "3"], None,
     "--workers 3 starts more workers than the plan has runs (2); use --workers 2 or fewer"),
    ("zero-concurrent", 0, ["--concurrent", "0"], None, "--concurrent must be a whole number of at least 1 (runs trained at once in one process), got 0"),
    ("negative-concurrent", 0, ["--concurrent", "-4"], None, "--concurrent must be a whole number of at least 1"),
    ("fraction-without-gpu", 0, ["--launcher", "ray", "--gpus-per-run", "0.5"], None,
     "--gpus-per-run 0.5: this machine has no GPU for the local Ray to share"),
    ("more-gpus-per-run-than-gpus", 1, ["--launcher", "ray", "--gpus-per-run", "2"], None,
     "--gpus-per-run 2: no run could start, this machine has 1 GPU(s)"),
    ("fraction-above-one", 2, ["--launcher", "ray", "--gpus-per-run", "1.5"], None,
     "--gpus-per-run 1.5: a run takes a fraction of one GPU or whole GPUs; use 1 or 2"),
    ("negative-gpus-per-run", 1, ["--launcher", "ray", "--gpus-per-run", "-1"], None,
     "--gpus-per-run must be between 0 and 8"),
    ("no-gpu-for-cuda-runs", 1, ["--launcher", "ray", "--gpus-per-run", "0", "--device", "cuda"], None,
     "--gpus-per-run 0 gives each run no GPU, but the runs use --device cuda"),
    # a Ray task sees the GPUs it gets, numbered from cuda:0; a local Ray has this machine's GPUs only
    ("cuda-on-a-local-ray-without-gpu", 0, ["--launcher", "ray", "--device", "cuda"], None,
     "the runs use --device cuda, and torch sees no GPU on this machine for the local Ray; use --device cpu or auto"),
    ("ray-task-with-a-cuda-index-past-its-gpu", 2, ["--launcher", "ray", "--device", "cuda:1"], None,
     "--gpus-per-run 1 (the default) gives each Ray task 1 GPU(s), numbered from cuda:0, but the runs use --device "
     "cuda:1; drop the index"),
    ("ray-fraction-with-a-cuda-index", 2, ["--launcher", "ray", "--gpus-per-run", "0.5", "--device", "cuda:1"], None,
     "--gpus-per-run 0.5 gives each Ray task 1 GPU(s), numbered from cuda:0"),
    ("ray-cluster-no-gpu-for-cuda-runs", 0,
     ["--launcher", "ray", "--ray-address", "127.0.0.1:9", "--gpus-per-run", "0", "--device", "cuda"], None,
     "--gpus-per-run 0 gives each run no GPU, but the runs use --device cuda; give them GPUs (e.g. --gpus-per-run 1)"),
    ("ray-cluster-default-with-a-cuda-index-past-its-gpu", 0,
     ["--launcher", "ray", "--ray-address", "127.0.0.1:9", "--device", "cuda:1"], None,
     "--gpus-per-run 1 (the default on a cluster with GPUs) gives each Ray task 1 GPU(s), numbered from cuda:0, but "
     "the runs use --device cuda:1; drop the index"),
    # a Slurm job sees the GPUs it asks for, numbered from cuda:0; submitit's local cluster none when it asks none
    ("slurm-job-without-gpu-for-cuda-runs", 0, ["--launcher", "slurm", "--slurm", "gpus_per_job=0", "--device",
                                                "cuda"], None,
     "slurm gpus_per_job is 0, so each job gets no GPU, but the runs use --device cuda; set slurm gpus_per_job=1"),
    ("file-slurm-local-unset-gpus-for-cuda-runs", 0, ["--device", "cuda:0"],
     "[sweep]\nlauncher = 'slurm'\n[slurm]\ncluster = 'local'\n",
     "slurm gpus_per_job is not set, so each job gets no GPU, but the runs use --device cuda:0"),
    ("slurm-job-with-a-cuda-index-past-its-gpus", 0, ["--launcher", "slurm", "--slurm", "gpus_per_job=2",
                                                      "--device", "cuda:2"], None,
     "slurm gpus_per_job 2 gives each job 2 GPU(s), numbered from cuda:0, but the runs use --device cuda:2; drop "
     "the index"),
    ("gpus-per-run-without-ray", 1, ["--gpus-per-run", "0.5"], None,
     "--gpus-per-run applies to --launcher ray only, and this sweep uses --launcher local"),
    ("ray-address-without-ray", 0, ["--ray-address", "auto"], None, "--ray-address applies to --launcher ray only"),
    ("workers-with-ray", 0, ["--launcher", "ray", "--workers", "2"], None,
     "--workers applies to --launcher local only, and this sweep uses --launcher ray; drop --workers"),
    ("gpus-with-slurm", 1, ["--launcher", "slurm", "--gpus", "0"], None, "--gpus applies to --launcher local only"),
    ("slurm-without-slurm", 0, ["--slurm", "partition=gpu"], None, "--slurm applies to --launcher slurm only"),
    ("slurm-zero-runs-per-job", 0, ["--launcher", "slurm", "--slurm", "runs_per_job=0"], None,
     "slurm runs_per_job must be at least 1, got 0"),
    ("slurm-unknown-setting", 0, ["--launcher", "slurm", "--slurm", "partion=gpu"], None,
     "unknown slurm setting 'partion'"),
    ("slurm-time-as-a-word", 0, ["--launcher", "slurm", "--slurm", "time_min=abc"], None,
     "slurm time_min must be at least 1, got 'abc' (a whole number)"),
    ("file-slurm-folder-number", 0, [], "[sweep]\nlauncher = 'slurm'\n[slurm]\ncluster = 'local'\nfolder = 3\n",
     "slurm folder must be text, got 3"),
    ("file-slurm-setup-string", 0, [], "[sweep]\nlauncher = 'slurm'\n[slurm]\nsetup = 'module load cuda'\n",
     "slurm setup must be a list of shell lines"),
    # the same options in a sweep file's [sweep] table
    ("file-zero-concurrent", 0, [], "[sweep]\nconcurrent = 0\n", "s.toml: sweep.concurrent must be a whole number"),
    ("file-workers-word", 0, [], "[sweep]\nworkers = 'two'\n", "s.toml: sweep.workers must be a whole number"),
    ("file-gpu-that-does-not-exist", 1, [], "[sweep]\ngpus = [0, 7]\n", "s.toml: sweep.gpus 0,7: there is no GPU 7"),
    ("file-fraction-without-gpu", 0, [], "[sweep]\nlauncher = 'ray'\ngpus_per_run = 0.25\n",
     "s.toml: sweep.gpus_per_run 0.25: this machine has no GPU for the local Ray to share"),
    ("file-unknown-launcher", 0, [], "[sweep]\nlauncher = 'k8s'\n", "s.toml: sweep.launcher must be local, ray or slurm"),
    ("file-slurm-cluster", 0, [], "[sweep]\nlauncher = 'slurm'\n[slurm]\ncluster = 'aws'\n",
     "slurm cluster must be slurm, local or debug, got 'aws'"),
    ("flag-over-file", 1, ["--gpus", "3"], "[sweep]\ngpus = '0'\n", "--gpus 3: there is no GPU 3"),
    # deterministic is a setting of the whole process: refused where one process trains several of the runs
    ("deterministic-mixed-in-this-process", 0, [], MIXED,
     "deterministic varies within the sweep (true for 1 of 3 runs), and it is a setting of the whole process, "
     "where --launcher local trains several runs in one process (this one, or each worker); run the "
     "deterministic runs as a sweep of their own, or use --launcher ray or slurm (each process given runs of one "
     "setting)"),
    ("deterministic-mixed-concurrent", 0, ["--concurrent", "3"], MIXED, "--launcher local trains several runs in one"),
    ("deterministic-mixed-workers", 0, ["--workers", "2"], MIXED, "--launcher local trains several runs in one"),
    ("deterministic-mixed-slurm-debug", 0, [], f"{MIXED}[sweep]\nlauncher = 'slurm'\n[slurm]\ncluster = 'debug'\n",
     "where slurm cluster debug runs every job in this process; run the deterministic runs as a sweep of their "
     "own, or use cluster local or slurm"),
    ("ray-address-without-port", 0, ["--launcher", "ray", "--ray-address", "head-node"], None,
     "--ray-address head-node: not a Ray address; give auto, HOST:PORT or ray://HOST:PORT"),
    ("file-ray-address-bad-port", 0, [], "[sweep]\nlauncher = 'ray'\nray_address = 'head:gcs'\n",
     "s.toml: sweep.ray_address head:gcs: not a Ray address"),
]


@pytest.mark.parametrize("count, extra, tables, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_placement_exits_2_with_one_line_before_anything_is_written(count, extra, tables, message, tmp_path,
                                                                       run_cli, gpus):
    gpus(count)
    out = tmp_path / "res"
    if tables is None:
        args = [*FLAGS_FORM, *extra, "--out", out]
    else:
        args = ["sweep", _sweep_file(tmp_path, tables), *TINY_RUN, *extra]
    code, stdout, stderr = run_cli(*args)
    assert code == 2, stderr
    assert stderr.startswith("bench: error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert stdout == "" and not out.exists()


def test_a_rejected_placement_leaves_an_existing_results_folder_byte_identical(tmp_path, run_cli, gpus):
    """A sweep run once, then the same sweep with a GPU this machine lacks: nothing in OUT changes."""
    gpus(0)
    out = tmp_path / "res"
    code, _, err = run_cli(*FLAGS_FORM, "--no-checkpoints", "--out", out)
    assert code == 0, err
    before = _snapshot(out)
    code, _, err = run_cli(*FLAGS_FORM, "--no-checkpoints", "--out", out, "--gpus", "0")
    assert code == 2 and "torch sees no GPU" in err
    code, _, err = run_cli(*FLAGS_FORM, "--no-checkpoints", "--out", out, "--workers", "9")
    assert code == 2 and "more workers than the plan has runs" in err
    assert _snapshot(out) == before


def test_a_refused_mix_of_deterministic_leaves_an_existing_results_folder_byte_identical(tmp_path, run_cli, gpus):
    """The sweep run once, then with a --deterministic point added: refused before the results folder is touched
    (the refusal came after the folder was made, from the runner, and once workers had started)."""
    gpus(0)
    out = tmp_path / "res"
    code, _, err = run_cli("sweep", _sweep_file(tmp_path, ""), *TINY_RUN, "--no-checkpoints")
    assert code == 0, err
    before = _snapshot(out)
    for extra in ([], ["--workers", "2"], ["--concurrent", "2"]):
        code, stdout, err = run_cli("sweep", _sweep_file(tmp_path, MIXED), *TINY_RUN, "--no-checkpoints", *extra)
        assert code == 2 and err.count("\n") == 1 and "deterministic varies within the sweep" in err, err
        assert stdout == ""
    assert _snapshot(out) == before


def test_a_mix_of_deterministic_passes_where_each_run_has_a_process_of_its_own(gpus):
    """A Ray task (one process per run for such a plan), a Slurm job (its runs agree, test below) on a cluster or
    submitit's local one, and a plan that agrees on deterministic anywhere: accepted."""
    from bench.app.sweep.placement import check_placement, read_placement
    from bench.config import make_config

    gpus(0)
    mixed = [make_config("smoke", seed=s, device="cpu", deterministic=s == 2) for s in range(3)]
    agreed = [make_config("smoke", seed=s, device="cpu", deterministic=True) for s in range(3)]
    with pytest.raises(Exception, match="deterministic varies"):
        check_placement(read_placement({}, {}, {}, ()), mixed)
    assert check_placement(read_placement({}, {"concurrent": 3}, {}, ()), agreed).workers == 1
    if importlib.util.find_spec("ray"):
        assert check_placement(read_placement({}, {"launcher": "ray"}, {}, ()), mixed).gpus_per_run == 0
    if importlib.util.find_spec("submitit"):
        for cluster, runs_per_job in (("local", 1), ("slurm", 2)):
            slurm = {"cluster": cluster, "runs_per_job": runs_per_job}
            check_placement(read_placement({}, {"launcher": "slurm"}, slurm, ()), mixed)
        with pytest.raises(Exception, match="slurm cluster debug runs every job in this process"):
            check_placement(read_placement({}, {"launcher": "slurm"}, {"cluster": "debug"}, ()), mixed)
        check_placement(read_placement({}, {"launcher": "slurm"}, {"cluster": "debug"}, ()), agreed)


def test_the_runs_of_one_slurm_job_agree_on_deterministic():
    """A job's process trains its runs_per_job runs under one setting: a mixed plan is cut into jobs of one
    setting each; a plan that agrees is cut in its order, as before."""
    from bench.app.sweep.launchers import job_chunks
    from bench.app.sweep.plan import Planned
    from bench.config import make_config

    flags = [False, True, False, True, True]
    todo = [Planned(make_config("smoke", seed=i, deterministic=d), f"r{i}") for i, d in enumerate(flags)]
    chunks = job_chunks(todo, 2)
    assert [[p.run_id for p in c] for c in chunks] == [["r0", "r2"], ["r1", "r3"], ["r4"]]
    assert all(len({p.cfg.deterministic for p in c}) == 1 for c in chunks)
    same = [Planned(make_config("smoke", seed=i), f"r{i}") for i in range(5)]
    assert [[p.run_id for p in c] for c in job_chunks(same, 2)] == [["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_a_ray_task_holds_its_runs_deterministic_setting(monkeypatch, tmp_path):
    """Each Ray task runs under its own run's --deterministic (before, a task held none: a Ray run asked for
    deterministic kernels got the default ones), and the previous settings come back after it."""
    import torch

    from bench.app.sweep import launchers
    from bench.app.sweep.in_process import Outcome
    from bench.config import make_config
    from bench.host import manager

    seen = []

    def fake_run(p, stop):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return Outcome(p, "done")

    monkeypatch.setattr(launchers, "run_planned", fake_run)
    monkeypatch.setattr(manager, "set_host", lambda host: None)  # keep this process's host as it is
    before = torch.are_deterministic_algorithms_enabled()
    for deterministic in (True, False):
        cfg = make_config("smoke", out=str(tmp_path), device="cpu", deterministic=deterministic)
        launchers.run_payload({"config": cfg.to_dict(), "run_id": "r", "cwd": str(tmp_path)}, ((), ()))
    assert seen == [True, before] and torch.are_deterministic_algorithms_enabled() == before


def test_a_ray_sweep_that_mixes_deterministic_gives_each_run_a_process_of_its_own(monkeypatch, tmp_path):
    """Ray runs task after task in one worker process unless told otherwise; a plan that mixes deterministic asks
    for a fresh process per task (max_calls=1), and a plan that agrees keeps Ray's reuse."""
    ray = pytest.importorskip("ray")
    from bench.app.sweep.launchers import ray_sweep
    from bench.app.sweep.placement import Placement
    from bench.app.sweep.plan import Planned
    from bench.config import make_config

    class Stop(Exception):
        pass

    asked = []

    def remote(*args, **kwargs):
        asked.append(kwargs.get("max_calls"))
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # no Ray started
    monkeypatch.setattr(ray, "remote", remote)
    for flags, wanted in (((False, True), 1), ((True, True), None)):
        planned = [Planned(make_config("smoke", out=str(tmp_path), seed=i, deterministic=d), f"r{i}")
                   for i, d in enumerate(flags)]
        with pytest.raises(Stop):
            ray_sweep(planned, Placement(launcher="ray", gpus_per_run=0), ((), ()))
        assert asked.pop() == wanted


def test_a_dry_run_checks_the_form_of_placement_but_not_this_machines_gpus(tmp_path, run_cli, gpus):
    """A plan for a GPU node reads on a machine without GPUs; a malformed value fails anywhere."""
    gpus(0)
    out = tmp_path / "res"
    code, stdout, err = run_cli(*FLAGS_FORM, "--out", out, "--gpus", "0,1", "--dry-run")
    assert code == 0 and "2 runs: 2 to do" in stdout, err
    code, _, err = run_cli(*FLAGS_FORM, "--out", out, "--gpus", "0,x", "--dry-run")
    assert code == 2 and "--gpus takes GPU indices" in err
    assert not out.exists()


def test_defaults_resolve_to_one_worker_per_visible_gpu(gpus):
    """No --gpus: every visible GPU, one worker each, when there are several and the runs may use CUDA."""
    from bench.app.sweep.placement import check_placement, read_placement
    from bench.config import make_config

    cfgs = [make_config("smoke", seed=s) for s in range(4)]
    gpus(2)
    placed = check_placement(read_placement({}, {}, {}, ()), cfgs)
    assert (placed.gpus, placed.workers) == (["0", "1"], 2)
    placed = check_placement(read_placement({}, {"workers": 4}, {}, ()), cfgs)
    assert (placed.gpus, placed.workers) == (["0", "1"], 4)  # round robin: two workers a GPU
    assert check_placement(read_placement({}, {}, {}, ()), [make_config("smoke", device="cpu")]).gpus is None
    gpus(1)
    placed = check_placement(read_placement({}, {}, {}, ()), cfgs)
    assert (placed.gpus, placed.workers) == (None, 1)
    placed = check_placement(read_placement({"gpus": 0}, {}, {}, ()), cfgs)  # a file's bare index
    assert (placed.gpus, placed.workers) == (["0"], 1)


def test_a_gpu_index_that_the_runs_process_sees_passes(gpus):
    """cuda:N is refused only where the process that trains the run cannot see GPU N: runs that all name their GPU
    run in the one process that sees every GPU, a Ray task or Slurm job with 2 GPUs has cuda:1, and a Slurm
    cluster (not submitit's local one) may give a job GPUs it did not ask for."""
    from bench.app.sweep.placement import check_placement, read_placement
    from bench.config import make_config

    gpus(2)
    pinned = [make_config("smoke", seed=s, device=f"cuda:{s}") for s in range(2)]
    placed = check_placement(read_placement({}, {}, {}, ()), pinned)
    assert (placed.gpus, placed.workers) == (None, 1)
    placed = check_placement(read_placement({}, {"workers": 2}, {}, ()), pinned)
    assert (placed.gpus, placed.workers) == (None, 2)  # workers that see every GPU
    if importlib.util.find_spec("ray"):
        assert check_placement(read_placement({}, {"launcher": "ray", "gpus_per_run": 2}, {}, ()),
                               pinned).gpus_per_run == 2
    if importlib.util.find_spec("submitit"):
        check_placement(read_placement({}, {"launcher": "slurm"}, {"gpus_per_job": 2}, ()), pinned)
        gpus(0)
        check_placement(read_placement({}, {"launcher": "slurm"}, {"cluster": "slurm"}, ()), pinned)


def test_a_worker_gets_the_gpu_its_index_names_under_cuda_visible_devices(monkeypatch):
    """--gpus counts the GPUs torch sees; with CUDA_VISIBLE_DEVICES=2,3 index 1 is device 3."""
    from bench.app.sweep.launchers import worker_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert worker_env(0, "1")["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_env(1, "1")["CUDA_VISIBLE_DEVICES"] == "1" and worker_env(1, "1")["BENCH_SWEEP_WORKER"] == "1"


@pytest.fixture
def silent_port():
    """A port of this machine where nothing answers: bound but never listening, so no other process takes it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("form", ["host-port", "client", "auto-from-env", "file"])
def test_an_unreachable_ray_address_is_one_line_in_seconds_and_writes_nothing(form, tmp_path, run_cli, gpus,
                                                                               silent_port, monkeypatch):
    """A --ray-address where no cluster answers fails before anything is written, in seconds, with one line naming
    the address and the fix: ray.init retried it for over 40 s of warnings, and the sweep looked hung."""
    pytest.importorskip("ray")
    gpus(0)
    out = tmp_path / "res"
    here = f"127.0.0.1:{silent_port}"
    address = {"host-port": here, "client": f"ray://{here}", "auto-from-env": "auto", "file": here}[form]
    monkeypatch.setenv("RAY_ADDRESS", here)  # what auto reads first, as ray.init does
    if form == "file":
        args = ["sweep", _sweep_file(tmp_path, f"[sweep]\nlauncher = 'ray'\nray_address = '{here}'\n"), *TINY_RUN]
    else:
        args = [*FLAGS_FORM, "--out", out, "--launcher", "ray", "--ray-address", address]
    started = time.monotonic()
    code, stdout, stderr = run_cli(*args)
    assert code == 2 and time.monotonic() - started < 15, stderr
    named = {"host-port": f"--ray-address {here}", "client": f"--ray-address ray://{here}",
             "auto-from-env": f"--ray-address auto (RAY_ADDRESS={here})", "file": f"s.toml: sweep.ray_address {here}"}
    assert stderr.startswith("bench: error: ") and (f"{named[form]}: cannot reach a Ray cluster at {here}, nothing "
                                                    f"listens there (connection refused); start the cluster (ray "
                                                    f"start --head)") in stderr, stderr
    assert stderr.count("\n") == 1 and "leave" in stderr and stdout == "" and not out.exists()
    # --dry-run reads the plan without the cluster (a login node may not reach it), and checks the form only
    code, stdout, stderr = run_cli(*args, "--dry-run")
    assert code == 0 and "2 runs: 2 to do" in stdout, stderr


def test_ray_address_in_the_environment_is_the_cluster_a_ray_sweep_joins(run_cli, tmp_path, gpus, monkeypatch,
                                                                          silent_port):
    """With RAY_ADDRESS set and no --ray-address, ray.init joins that cluster, as every Ray tool does; a sweep there
    must not also ask for the local Ray's num_cpus (which Ray refuses on a cluster, with a traceback): it joins as
    auto does, so an address that does not answer is one line in seconds, naming RAY_ADDRESS, and writes nothing."""
    pytest.importorskip("ray")
    gpus(0)
    here = f"127.0.0.1:{silent_port}"
    monkeypatch.setenv("RAY_ADDRESS", here)
    started = time.monotonic()
    code, stdout, stderr = run_cli(*FLAGS_FORM, "--out", tmp_path / "res", "--launcher", "ray")
    assert code == 2 and time.monotonic() - started < 15 and stdout == "", stderr
    assert stderr.count("\n") == 1 and f"(RAY_ADDRESS={here}): cannot reach a Ray cluster at {here}" in stderr, stderr
    assert not (tmp_path / "res").exists()


def test_ray_address_auto_without_a_cluster_is_one_line(run_cli, tmp_path, gpus, monkeypatch, silent_port):
    """auto with RAY_ADDRESS unset looks where Ray looks (the last `ray start` here, else a running cluster): none
    found, or one found that no longer answers (a stale record of a crashed head), is one line, not Ray's
    ConnectionError traceback or a hang."""
    pytest.importorskip("ray")
    from bench.app.sweep import ray_address

    gpus(0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_address, "_started_here", lambda: "")  # this machine's search finds no cluster
    args = [*FLAGS_FORM, "--out", tmp_path / "res", "--launcher", "ray", "--ray-address", "auto"]
    code, _, stderr = run_cli(*args)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "--ray-address auto: no Ray cluster is running on this machine and RAY_ADDRESS is not set" in stderr
    monkeypatch.setattr(ray_address, "_started_here", lambda: f"127.0.0.1:{silent_port}")
    code, _, stderr = run_cli(*args)
    assert code == 2 and f"--ray-address auto (127.0.0.1:{silent_port}): cannot reach a Ray cluster" in stderr
    assert not (tmp_path / "res").exists()


def test_concurrent_caps_the_runs_a_ray_sweep_has_in_flight_only_when_given():
    """Under Ray each run is a task of its own: --concurrent K (or a sweep file's concurrent) is the most runs in
    flight at once; left out, Ray runs as many as its cluster places. It was silently ignored."""
    from bench.app.sweep.placement import read_placement

    assert read_placement({}, {"launcher": "ray"}, {}, ()).ray_in_flight is None
    assert read_placement({}, {"launcher": "ray", "concurrent": 2}, {}, ()).ray_in_flight == 2
    assert read_placement({"launcher": "ray", "concurrent": 3}, {}, {}, (), "s.toml").ray_in_flight == 3
    assert read_placement({"launcher": "ray", "concurrent": 3}, {"concurrent": 1}, {}, ()).ray_in_flight == 1
    assert read_placement({"concurrent": 3}, {}, {}, ()).ray_in_flight is None  # local: K runs in one process


def test_a_ray_address_that_answers_but_will_not_connect_is_one_line(tmp_path, run_cli, gpus, monkeypatch):
    """Something answers at the address, but Ray's connection fails (no Ray there, a Ray Client server that went
    away): ray.init's ConnectionError becomes one line naming the address, not a traceback."""
    ray = pytest.importorskip("ray")
    gpus(0)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(**kwargs):
        raise ConnectionError("ray client connection timeout\nmore detail")

    monkeypatch.setattr(ray, "init", refuse)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"ray://127.0.0.1:{server.getsockname()[1]}"
        code, _, stderr = run_cli(*FLAGS_FORM, "--out", tmp_path / "res", "--launcher", "ray", "--ray-address", address)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert f"--ray-address {address}: Ray could not connect (ConnectionError: ray client connection timeout)" in stderr


def test_ray_address_in_the_environment_takes_the_clusters_gpus_not_this_machines(gpus, monkeypatch):
    """With RAY_ADDRESS set, the sweep joins that cluster, so the GPUs its tasks ask for are the cluster's: a login
    node without a GPU must not be refused as if it started a local Ray (--gpus-per-run 1 was 'this machine has no
    GPU for the local Ray to share', --device cuda 'torch sees no GPU on this machine for the local Ray')."""
    pytest.importorskip("ray")
    from bench.app.sweep import placement
    from bench.config import make_config
    from bench.errors import BenchError

    gpus(0)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(placement, "check_reachable", lambda address, label: None)  # no cluster to ask here
    cuda = [make_config("smoke", seed=s, device="cuda") for s in range(2)]
    placed = placement.check_placement(placement.read_placement({}, {"launcher": "ray", "gpus_per_run": 1}, {}, ()),
                                       cuda)
    assert (placed.gpus_per_run, placed.ray_address) == (1, "auto")
    # left to its default, it is the cluster's to decide once joined, not this machine's count (0 here)
    placed = placement.check_placement(placement.read_placement({}, {"launcher": "ray"}, {}, ()), cuda)
    assert placed.gpus_per_run is None
    assert placement.cluster_gpus_per_run(8, {"cuda"}, "--gpus-per-run") == (
        1, "--gpus-per-run 1 (the default: the cluster has 8 GPU(s))")
    assert placement.cluster_gpus_per_run(0, {"auto", "cpu"}, "--gpus-per-run")[0] == 0
    with pytest.raises(BenchError, match=r"--gpus-per-run 0 \(the default: the cluster has 0 GPU\(s\)\) gives each "
                                         r"run no GPU, but the runs use --device cuda; give them GPUs"):
        placement.cluster_gpus_per_run(0, {"cuda", "cpu"}, "--gpus-per-run")


def test_a_ray_cluster_sweep_from_a_machine_without_gpu_gives_each_run_a_gpu_of_the_cluster(gpus, monkeypatch,
                                                                                           tmp_path):
    """A sweep submitted from a login node without a GPU to a cluster with GPUs: each task asks for one GPU by
    default (it asked for none, so runs on --device auto trained on the CPUs of GPU nodes), and the sweep says so."""
    ray = pytest.importorskip("ray")
    from bench.app.sweep import launchers
    from bench.app.sweep.placement import Placement
    from bench.app.sweep.plan import Planned
    from bench.config import make_config

    gpus(0)
    asked = {}

    class Task:
        def options(self, **kwargs):
            asked.update(kwargs)
            raise RuntimeError("asked")  # no cluster here: what the task asks for is the point

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # joined
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    monkeypatch.setattr(ray, "remote", lambda f=None, **kw: Task() if f is not None else (lambda g: Task()))
    lines = []
    planned = [Planned(make_config("smoke", device="auto", out=str(tmp_path)), "r0", {})]
    with pytest.raises(RuntimeError, match="asked"):
        launchers.ray_sweep(planned, Placement(launcher="ray", ray_address="10.0.0.1:6379"), ((), ()), lines.append)
    assert asked["num_gpus"] == 1.0
    assert lines == ["Ray: --gpus-per-run 1 (the default: the cluster has 8 GPU(s))"]


def test_a_plan_of_fewer_runs_than_gpus_starts_a_worker_per_run(gpus):
    """By default a sweep starts one worker per GPU; with fewer runs than GPUs (one run, an adaptive sweep's first
    round) it starts one per run, where it was refused as '--workers 2 starts more workers than the plan has runs'
    though no --workers was typed. A --workers typed too high is still refused."""
    from bench.app.sweep.placement import check_placement, read_placement
    from bench.config import make_config
    from bench.errors import BenchError

    gpus(2)
    one = [make_config("smoke", device="auto")]
    placed = check_placement(read_placement({}, {}, {}, ()), one)
    assert placed.workers == 1 and placed.gpus == ["0", "1"]
    assert check_placement(read_placement({}, {"gpus": "all"}, {}, ()), one).workers == 1
    with pytest.raises(BenchError, match="--workers 2 starts more workers than the plan has runs"):
        check_placement(read_placement({}, {"workers": 2}, {}, ()), one)
