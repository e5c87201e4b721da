"""Data-parallel training: N gloo ranks with batch B must train exactly as one process with batch N x B.

The multi-process tests start two real processes (torch.multiprocessing) on CPU with gloo, with the
variables torchrun sets, once for the module.
"""
import contextlib
import io
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.clip.loss import ClipLoss
from bench.clip.model import CLIP
from bench.data.datasets import make_synthetic
from bench.data.loader import DeviceLoader
from bench.engine.train_step import TrainState, clip_step
from tests.support.processes import free_port, spawn_bench
from tests.support.runs import TINY, history, run_dir_of

B = 4  # images per rank in the step test
# (loss, text mode, dtype): fp32 is what training runs in; fp64 takes summation-order rounding out of the
# comparison, so there the gradients must agree to 1e-5 absolute, as the issue asks, with orders to spare.
# The fp64 cases also smooth the labels, whose uniform part spans every rank's columns.
CASES = [(kind, mode, dtype) for dtype in (torch.float32, torch.float64) for kind in ("clip", "multipositive")
         for mode in ("unique", "all")]


# One intra-op thread here, as in the workers: these steps are tiny, and on a shared machine two spinning OpenMP
# threads per process cost about 3x the CPU time.
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_clip():
    # the reference architecture (ModifiedResNet with batch norm, causal text Transformer), shrunk
    return CLIP(embed_dim=16, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, context_length=8,
                vocab_size=64, transformer_width=16, transformer_heads=2, transformer_layers=1)


def _step_inputs():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 60, (6, 8), generator=g)
    tokens[:, -1] = 63  # end-of-text: the largest id, where the text tower pools
    # labels repeat across ranks (multi-positive pairs cross the rank boundary); prompts repeat within a
    # rank and the two ranks encode different sets of unique prompts
    return {"images": torch.randn(2 * B, 3, 32, 32, generator=g), "labels": torch.tensor([0, 1, 1, 2, 2, 0, 3, 1]),
            "prompt_ids": torch.tensor([0, 1, 1, 2, 3, 3, 4, 0]), "tokens": tokens,
            "test_images": torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8),
            "test_labels": torch.tensor([0, 1, 2, 3, 1]), "classifier": torch.nn.functional.normalize(
                torch.randn(16, 4, generator=g), dim=0)}


def _model(inputs, dtype):
    model = _tiny_clip()
    model.load_state_dict(inputs["state"])
    return model.to(dtype)


def _step(model, train_model, kind, mode, rank, world, inputs, rows):
    smoothing = 0.1 if model.dtype == torch.float64 else 0.0
    state = TrainState(train_model, torch.optim.SGD(model.parameters(), lr=0.0), None,
                       ClipLoss(kind, rank, world, smoothing), inputs["tokens"], text_mode=mode)
    images = inputs["images"][rows].to(model.dtype)
    loss = clip_step(state, images, inputs["labels"][rows], inputs["prompt_ids"][rows])
    return {"loss": float(loss), "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers() if "running" in n}}


RUN = ["--dataset", "synthetic", "--preset", "smoke", "--device", "cpu", "--limit-train", "64", "--limit-test", "64",
       "--epochs", "1", *TINY]


def _worker(rank, port, folder):
    """One of two gloo ranks, with the variables torchrun sets: a DDP step on its half of the batch,
    sharded zero-shot metrics, then a whole ``bench run`` through the CLI."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    from bench.cli import main
    from bench.distributed.world import init_distributed, shutdown
    from bench.engine.ddp import wrap_model
    from bench.evaluation.zero_shot import validate_sharded

    world = init_distributed("cpu")
    inputs = torch.load(Path(folder) / "inputs.pt")
    out = {"bench": __import__("bench").__file__}
    for kind, mode, dtype in CASES:
        model = _model(inputs, dtype)
        out[kind, mode, dtype] = _step(model, wrap_model(model, world, sync_bn=True), kind, mode, rank, 2, inputs,
                                       slice(rank * B, (rank + 1) * B))
    out["metrics"] = validate_sharded(model, inputs["test_images"], inputs["test_labels"], inputs["classifier"], world)
    # running statistics that differ between the ranks (--no-sync-bn after a step): evaluated with rank 0's
    bn = _model(inputs, torch.float32)
    for name, buffer in bn.named_buffers():
        if name.endswith("running_mean"):
            buffer.fill_(float(rank))
    out["bn_metrics"] = validate_sharded(bn, inputs["test_images"], inputs["test_labels"], inputs["classifier"], world)
    out["bn_means"] = [float(b.sum()) for n, b in bn.named_buffers() if n.endswith("running_mean")]

    with contextlib.redirect_stdout(io.StringIO()) as stdout, contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            main(["run", *RUN, "--batch-size", "8", "--out", str(Path(folder) / "ddp"), "--log", "tensorboard"])
        except SystemExit as exc:  # a failed rank must die, so that spawn stops the other rank too
            raise RuntimeError(f"rank {rank}: bench run exited {exc.code}: {stderr.getvalue()[-2000:]}") from None
    out["cli"] = stdout.getvalue(), stderr.getvalue()
    with contextlib.redirect_stderr(io.StringIO()) as stderr:  # 2 ranks x 8 > 12 images: no whole batch a rank
        try:
            main(["run", *RUN, "--batch-size", "8", "--limit-train", "12", "--out", str(Path(folder) / "too_few")])
        except SystemExit as exc:
            out["too_few"] = exc.code, stderr.getvalue()
    torch.save(out, Path(folder) / f"rank{rank}.pt")
    shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Start two gloo ranks once for the tests below (process start-up is most of their cost)."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("two_ranks")
    torch.manual_seed(0)
    inputs = {**_step_inputs(), "state": _tiny_clip().state_dict()}
    torch.save(inputs, folder / "inputs.pt")
    mp.spawn(_worker, args=(free_port(), str(folder)), nprocs=2)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]  # our own files
    assert ranks[0]["bench"] == __import__("bench").__file__  # the workers ran this checkout
    return inputs, ranks, folder


@pytest.mark.slow  # two gloo rank processes
def test_two_gloo_ranks_step_equals_one_process_with_the_concatenated_batch(two_ranks):
    """Loss, every gradient and the batch-norm running stats of one DDP step on 2 x 4 images equal one
    process's on the 8 images, for both losses and both text-encoding modes; and sharded zero-shot
    evaluation over uneven shards (3 + 2 images) gives one process's metrics.

    In fp64 every value agrees within 1e-5 absolute. In fp32 the tolerance is 1e-5 relative to each
    tensor's scale when that exceeds 1: some gradients reach ~50, where fp32 rounding of a different
    summation order alone is ~3e-5 (8 ulps). A wrong or missing term (no gradient through the gather,
    per-rank batch norm) is off by orders of magnitude more in either precision.
    """
    from bench.evaluation.zero_shot import zero_shot_metrics

    inputs, ranks, _ = two_ranks

    for case in CASES:
        kind, mode, dtype = case
        model = _model(inputs, dtype)
        ref = _step(model, model, kind, mode, 0, 1, inputs, slice(None))
        mean_loss = sum(r[case]["loss"] for r in ranks) / 2
        assert abs(mean_loss - ref["loss"]) <= 1e-5, (case, mean_loss, ref["loss"])
        for r in ranks:
            for name, grad in ref["grads"].items():
                assert r[case]["grads"][name].dtype == dtype
                diff = (r[case]["grads"][name] - grad).abs().max().item()
                scale = 1.0 if dtype == torch.float64 else max(1.0, grad.abs().max().item())
                assert diff <= 1e-5 * scale, (case, name, diff)
            for name, buf in ref["buffers"].items():
                torch.testing.assert_close(r[case]["buffers"][name], buf, atol=1e-5, rtol=0)
        assert ranks[0][case]["loss"] != ranks[1][case]["loss"]  # each rank scored its own rows

    expected = zero_shot_metrics(model, inputs["test_images"], inputs["test_labels"], inputs["classifier"])
    for r in ranks:
        assert r["metrics"]["top1"] == expected["top1"] and r["metrics"]["top5"] == expected["top5"]
        assert (r["metrics"]["confusion"] == expected["confusion"]).all()


def test_ranks_draw_slices_of_the_global_batch():
    """Rank r of 2 with batch 4 gets exactly slice r of each batch of one process with batch 8: images
    (augmentation included), labels and prompts; so the data stream depends on the global batch only."""
    data = make_synthetic("train", n=40)

    def batches(batch_size, shard):
        gen = torch.Generator().manual_seed(3)
        return list(DeviceLoader(data, batch_size, "cpu", 5, gen, shard=shard))

    whole = batches(8, (0, 1))
    halves = [batches(4, (r, 2)) for r in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 5
    for step, batch in enumerate(whole):
        for field in ("images", "labels", "prompt_ids"):
            joined = torch.cat([getattr(halves[r][step], field) for r in range(2)])
            assert torch.equal(joined, getattr(batch, field)), (step, field)


def test_batch_norm_subclasses_are_left_alone_and_named():
    """--sync-bn swaps only plain BatchNorm: a subclass (timm's BatchNormAct2d fuses an activation that a
    plain swap would drop) stays, and is reported so the run can warn."""
    from bench.engine.ddp import CpuSyncBatchNorm, convert_sync_batchnorm

    class BatchNormAct(torch.nn.BatchNorm2d):
        pass

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Sequential(BatchNormAct(4)))
    weight = net[1].weight
    assert convert_sync_batchnorm(net, torch.device("cpu")) == ["BatchNormAct"]
    assert type(net[1]) is CpuSyncBatchNorm and net[1].weight is weight
    assert type(net[2][0]) is BatchNormAct


def test_rank_variables_without_a_rendezvous_are_refused(run_cli, monkeypatch):
    """RANK/WORLD_SIZE without MASTER_ADDR/PORT (not torchrun) is one error line and exit 2, not a hang."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    code, out, err = run_cli("run", "--dataset", "synthetic", "--preset", "smoke", "--device", "cpu", *TINY)
    assert code == 2 and err.count("\n") == 1 and "torchrun" in err


@pytest.mark.slow  # two gloo rank processes
def test_two_rank_bench_run_writes_one_row_and_trains_as_one_process(two_ranks, run_cli, tmp_path):
    """A 2-rank ``bench run`` (gloo, torchrun's variables) writes exactly one runs.csv row and one run
    folder (rank 0 only), prints one summary that names the 2 ranks, and trains as one process with the
    doubled batch: same loss and zero-shot metrics; its checkpoint is rank-agnostic (CLIP's keys). Only rank 0
    logs to TensorBoard (one event file) and says where."""
    _, ranks, folder = two_ranks
    stdout = [r["cli"][0] for r in ranks]
    assert stdout[0].count("zero-shot top-1") == 1 and "on 2 ranks" in stdout[0] and stdout[1] == ""
    assert "2 ranks on 1 node(s), backend gloo" in ranks[0]["cli"][1]
    ddp = pd.read_csv(folder / "ddp" / "runs.csv")
    assert len(ddp) == 1 and len(list((folder / "ddp" / "runs").iterdir())) == 1
    assert ddp.loc[0, "world_size"] == 2 and ddp.loc[0, "global_batch_size"] == 16 and ddp.loc[0, "batch_size"] == 8
    assert len(list((folder / "ddp" / "runs").glob("*/tensorboard/events.out.tfevents.*"))) == 1
    assert ["TensorBoard logs in" in r["cli"][1] for r in ranks] == [True, False]

    code, _, err = run_cli("run", *RUN, "--batch-size", "16", "--out", tmp_path / "one")
    assert code == 0, err
    one = pd.read_csv(tmp_path / "one" / "runs.csv")
    # the logged loss (train_log.csv, TensorBoard) is the run's over both ranks, as history.csv's, not rank 0's
    logged = [pd.read_csv(run_dir_of(o) / "train_log.csv")["train_loss"].tolist() for o in (folder / "ddp",
                                                                                          tmp_path / "one")]
    assert logged[0] == pytest.approx(logged[1], rel=1e-5)
    assert ddp.loc[0, "final_train_loss"] == pytest.approx(one.loc[0, "final_train_loss"], rel=1e-5)
    for column in ("zeroshot_top1", "zeroshot_top5", "mean_per_class_recall"):
        assert ddp.loc[0, column] == one.loc[0, column]
    assert ddp.loc[0, "config_id"] == one.loc[0, "config_id"]  # 2 x 8 is the configuration of 1 x 16
    ckpt = torch.load(folder / "ddp" / "runs" / ddp.loc[0, "run_id"] / "last.pt", weights_only=True)
    ref = torch.load(tmp_path / "one" / "runs" / one.loc[0, "run_id"] / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ref["world_size"] == 1
    # weights are not compared: AdamW turns rounding noise in a zero gradient (attnpool's k_proj bias
    # cannot change the softmax) into +-lr steps, so they differ by ~lr even when training is identical
    assert {k: v.shape for k, v in ckpt["model"].items()} == {k: v.shape for k, v in ref["model"].items()}


@pytest.mark.slow  # three bench processes
def test_one_rank_under_torchrun_is_a_plain_run_unless_ddp_is_forced(tmp_path, monkeypatch):
    """``torchrun --nproc_per_node 1`` exports RANK=0, WORLD_SIZE=1 and a rendezvous. bench then runs as a plain
    process: no process group and no DDP wrapper (nothing to pay), and the history is bit-identical to a run without
    torchrun. BENCH_FORCE_DDP=1 keeps the group and DDP, to measure its reducer, and trains to the same numbers."""
    def run(name, **env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        proc = spawn_bench("run", *RUN, "--batch-size", "16", "--out", tmp_path / name)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        for key in env:
            monkeypatch.delenv(key)
        return history(run_dir_of(tmp_path / name)), err

    plain, _ = run("plain")
    launch = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    one, err_one = run("one", MASTER_PORT=str(free_port()), **launch)
    forced, err_forced = run("forced", MASTER_PORT=str(free_port()), BENCH_FORCE_DDP="1", **launch)
    assert "backend" not in err_one and "1 ranks on 1 node(s), backend gloo" in err_forced
    pd.testing.assert_frame_equal(plain, one, check_exact=True)
    pd.testing.assert_frame_equal(plain, forced, check_exact=True)


@pytest.mark.slow  # two gloo rank processes
def test_ranks_evaluate_with_rank_0s_batch_norm_statistics_and_refuse_a_global_batch_past_the_data(two_ranks):
    """Under --no-sync-bn each rank's last step leaves its own running statistics: sharded evaluation first gives
    every rank rank 0's (those the checkpoint saves), so the metrics are one model's. A global batch larger than
    the training set is one line and exit 2 on every rank, not an epoch of no steps."""
    from bench.evaluation.zero_shot import zero_shot_metrics

    inputs, ranks, _ = two_ranks
    assert [r["bn_means"] for r in ranks] == [ranks[0]["bn_means"]] * 2 and not any(ranks[0]["bn_means"])
    model = _model(inputs, torch.float32)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.zero_()
    model.eval()
    alone = zero_shot_metrics(model, inputs["test_images"], inputs["test_labels"], inputs["classifier"])
    for r in ranks:
        assert r["bn_metrics"]["top1"] == alone["top1"]
        torch.testing.assert_close(torch.as_tensor(r["bn_metrics"]["predictions"]),
                                   torch.as_tensor(alone["predictions"]))
        code, err = r["too_few"]
        assert code == 2 and "the global batch, 2 ranks x 8, is larger than the 12 training images" in err


@pytest.mark.slow  # two bench processes
def test_two_ranks_resuming_a_run_stopped_after_its_result_append_one_row_and_print_one_line(tmp_path_factory,
                                                                                              monkeypatch):
    """A run stopped after its result.json, before its row, resumed under torchrun with 2 ranks: rank 0 appends the
    saved row and every rank exits 0, whichever rank looks first. The ranks check on their own (this path starts no
    process group), so rank 1 may find the row rank 0 has just appended, and must not call the run finished; and
    only rank 0 prints the run's line, as in a run that trains."""
    import shutil

    from tests.support.runs import finished_run

    out = tmp_path_factory.mktemp("stopped_after_result") / "out"
    shutil.copytree(finished_run(tmp_path_factory.getbasetemp()), out)
    for table in ("runs.csv", "runs_long.csv"):
        (out / table).unlink(missing_ok=True)
    run_id = run_dir_of(out).name
    launch = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = []
    for rank in range(2):
        for key, value in {**launch, "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
            monkeypatch.setenv(key, value)
        procs.append(spawn_bench("run", "--resume", run_id, "--out", out))
    results = [(p.returncode, out_, err) for p in procs for out_, err in [p.communicate(timeout=300)]]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert [o.count(f"run {run_id}: zero-shot top-1") for _, o, _ in results] == [1, 0]
    assert [e for _, _, e in results] == ["", ""]
    rows = pd.read_csv(out / "runs.csv")
    assert rows["run_id"].tolist() == [run_id]


@pytest.mark.slow  # two bench processes
def test_a_signal_to_two_ranks_stops_both_and_only_rank_0_says_where_the_checkpoint_is(tmp_path, monkeypatch):
    """SIGTERM to both ranks of a training run (as torchrun forwards it): both stop at the agreed step with exit 130,
    rank 0 saves last.pt and prints the one line that says how to resume; the other rank prints nothing, as the
    other ranks print nothing anywhere in a run (docs/distributed.md)."""
    import signal
    import time

    out = tmp_path / "out"
    launch = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = []
    for rank in range(2):
        for key, value in {**launch, "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
            monkeypatch.setenv(key, value)
        procs.append(spawn_bench("run", *RUN, "--epochs", "100", "--batch-size", "4", "--log-every", "1",
                                 "--checkpoint-every", "2", "--out", out))
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/*/last.pt")):  # training is under way on both ranks: the handlers are set
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the run did not start"
        time.sleep(0.2)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]
    assert [code for code, _ in results] == [130, 130], results
    assert results[0][1].count("bench: interrupted: stopped by SIGTERM") == 1 and "--resume" in results[0][1]
    assert results[1][1] == ""
