"""``bench throughput``: rows for every encoder asked for, failures kept as rows, out-of-memory retried."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.perf.throughput import COLUMNS, ThroughputCfg, measure, resolve, with_oom_retry

TEXT = ["--embed-dim", "32", "--text-width", "32", "--text-layers", "1", "--text-heads", "2"]


def test_throughput_command_writes_rows_with_provenance_and_keeps_failures(run_cli, monkeypatch):
    """Two encoders, both modes: 6 rows appended to throughput.csv; an encoder that fails while timed is an error
    row and the other encoder's rows are still measured."""
    import bench.perf.throughput as throughput

    measure_real = throughput.measure

    def measure_or_fail(cfg, component, mode):
        if cfg.encoder == "airbench":
            raise RuntimeError("kernel launch failed")
        return measure_real(cfg, component, mode)

    monkeypatch.setattr(throughput, "measure", measure_or_fail)
    args = ["throughput", "--encoder", "modified_resnet,airbench", "--device", "cpu", "--batch-size", "4",
            "--steps", "1", "--untimed-steps", "0", *TEXT, "--out", "res"]
    code, out, err = run_cli(*args, "--encoder-opt", "width=8")
    assert code == 2 and "airbench" in err and "width" in err and len(err.strip().splitlines()) == 1
    assert not Path("res/throughput.csv").exists()  # checked before the first encoder was timed
    code, out, err = run_cli(*args)
    assert code == 0, err
    table = pd.read_csv("res/throughput.csv")
    assert list(table.columns) == COLUMNS and len(table) == 8
    ok = table[table.encoder == "modified_resnet"]
    assert ok["error"].isna().all() and (ok["samples_per_s"] > 0).all() and (ok["gflops_per_sample"] > 0).all()
    assert set(zip(ok.component, ok["mode"])) == {("vision", "infer"), ("vision", "train"), ("text", "train"),
                                                     ("clip", "train")}
    params = ok.groupby("component")["params"].max()
    assert params["clip"] > params["vision"] and params["text"] == params["clip"] - params["vision"]
    bad = table[table.encoder == "airbench"]
    assert bad["error"].str.contains("RuntimeError: kernel launch failed").all() and bad["samples_per_s"].isna().all()
    assert table["git_commit"].notna().all() and (table["device"] == "cpu").all()
    assert "| modified_resnet" in out
    code, _, _ = run_cli("throughput", "--encoder", "modified_resnet", "--mode", "infer", "--device", "cpu",
                         "--steps", "1", "--untimed-steps", "0", "--encoder-opt", "width=8", *TEXT, "--out", "res")
    assert code == 0 and len(pd.read_csv("res/throughput.csv")) == 9  # appended; the old rows are kept


def test_encoder_all_means_every_registered_encoder(host):
    cfg, names = resolve("all", device="cpu")
    assert names == host.registry.names("encoders") and "airbench" in names
    assert (cfg.precision, cfg.steps) == ("fp32", 5)


@pytest.mark.parametrize("args, message", [
    (["--encoder", "nope"], "nope"),
    (["--batch-size", "1"], "--batch-size"),
    (["--steps", "0"], "--steps"),
])
def test_bad_input_is_one_line_exit_2(run_cli, args, message):
    code, _, err = run_cli("throughput", "--device", "cpu", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_out_of_memory_halves_the_batch_and_says_so():
    """A step that runs out of memory above batch 8 is retried at 16 -> 8, and the retries are counted."""
    tried = []

    def step(batch):
        tried.append(batch)
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert with_oom_retry(step, 32, torch.device("cpu")) == ("ok", 8, 2)
    assert tried == [32, 16, 8]
    with pytest.raises(ValueError):  # anything else is not retried
        with_oom_retry(lambda b: (_ for _ in ()).throw(ValueError("shape")), 32, torch.device("cpu"))


def test_measure_records_the_retry(monkeypatch):
    """measure() reports the batch it finally ran and how many retries it took."""
    import bench.perf.throughput as tp

    real = tp._vision_step

    def flaky(cfg, model, batch, device, train):
        if batch > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(cfg, model, batch, device, train)

    monkeypatch.setattr(tp, "_vision_step", flaky)
    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=8, steps=1, untimed_steps=0, embed_dim=32,
                        text_width=32, text_heads=2, text_layers=1, encoder_opts=(("width", 8),))
    row = measure(cfg, "vision", "infer")
    assert (row["batch_size"], row["oom_retries"]) == (2, 2)


def test_kernels_per_step_counts_the_work_one_step_launches():
    """kernels_per_step (on a CPU the top-level aten ops of one eager step, forward, backward and optimizer) is
    the same on a second count, and each extra text-tower layer adds the same number of ops."""
    from bench.perf.throughput import count_kernels

    counts = []
    for layers in (1, 2, 3):
        cfg = ThroughputCfg(encoder="modified_resnet", batch_size=4, steps=1, untimed_steps=0, embed_dim=32,
                            text_width=32, text_heads=2, text_layers=layers, encoder_opts=(("width", 8),))
        counts.append(measure(cfg, "clip", "train")["kernels_per_step"])
    assert counts[0] > 100 and counts[1] - counts[0] == counts[2] - counts[1] > 0, counts
    x = torch.randn(8, 8)
    assert count_kernels(lambda: (x @ x).relu().sum(), torch.device("cpu")) == 3


def test_a_batch_whose_inputs_exceed_the_memory_available_is_halved_before_anything_is_allocated(monkeypatch):
    """On the CPU Linux overcommits: a batch far beyond the memory would not raise, the process would be killed.
    With memory for 4 x 4 samples' inputs, batch 64 is halved to 4 without building a step for a larger one."""
    import bench.perf.throughput as tp

    per_sample = 3 * 32 * 32 * 4 + 77 * 8
    monkeypatch.setattr(tp, "_available_bytes", lambda: 4 * 4 * per_sample)
    built = []
    real = tp._vision_step

    def step(cfg, model, batch, device, train):
        built.append(batch)
        return real(cfg, model, batch, device, train)

    monkeypatch.setattr(tp, "_vision_step", step)
    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=64, steps=1, untimed_steps=0, embed_dim=32,
                        text_width=32, text_heads=2, text_layers=1, encoder_opts=(("width", 8),))
    row = measure(cfg, "vision", "infer")
    assert (row["batch_size"], row["oom_retries"], built) == (4, 4, [4])


def _resident_peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's resettable peak resident set")
def test_cpu_peak_memory_is_the_timed_steps_own_not_an_earlier_rows():
    """On a CPU, peak_mem_mb is the process's peak resident set during the timed steps: 1 GiB touched and freed
    before the measurement (as an earlier, larger encoder's rows in the same `bench throughput` would) is not in it."""
    big = torch.ones(2 ** 28)  # 1 GiB of float32, every page written
    del big
    lifetime_peak = _resident_peak_mb()
    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=4, steps=1, untimed_steps=0, embed_dim=32,
                        text_width=32, text_heads=2, text_layers=1, encoder_opts=(("width", 8),))
    row = measure(cfg, "vision", "infer")
    assert 0 < row["peak_mem_mb"] < lifetime_peak - 512, (row["peak_mem_mb"], lifetime_peak)


def test_cuda_step_times_are_events_on_the_measured_devices_stream_read_after_a_sync(monkeypatch):
    """On CUDA each timed step sits between two events recorded on the measured device's current stream (under
    --device cuda:1 not cuda:0's, the current device's), and the events are read only after that device is
    synchronised. A fake CUDA module records the calls, so this runs on a CPU."""
    from bench.perf.throughput import time_steps

    calls = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self, stream=None):
            calls.append(("record", stream))

        def elapsed_time(self, end):
            calls.append(("read", None))
            return 2.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    device = torch.device("cuda", 1)
    times = time_steps(lambda: calls.append(("step", None)), 3, device)
    assert times == [2.0, 2.0, 2.0]
    assert calls[:9] == [("record", "stream of cuda:1"), ("step", None), ("record", "stream of cuda:1")] * 3
    assert calls[9:] == [("sync", device)] + [("read", None)] * 3


def test_cpu_step_times_read_the_clock_around_each_step_and_touch_no_cuda(monkeypatch):
    """On a CPU the clock is read right before and after each step, with nothing else between; no CUDA call."""
    import bench.perf.throughput as tp

    ticks = iter(range(0, 100, 1))
    monkeypatch.setattr(tp.time, "perf_counter", lambda: next(ticks) / 1e3)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: pytest.fail("synchronize on a CPU"))
    assert tp.time_steps(lambda: None, 3, torch.device("cpu")) == pytest.approx([1.0, 1.0, 1.0])


def test_rows_record_the_torch_thread_count_they_were_timed_with(monkeypatch):
    """A CPU step's time depends several-fold on torch's thread count (docs/performance.md times with one), which
    neither the command line nor the device name shows: every row records it."""
    import bench.perf.throughput as tp

    monkeypatch.setattr(tp, "measure", lambda cfg, component, mode: {"samples_per_s": 1.0})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        table = tp.run_throughput(ThroughputCfg(), ["modified_resnet"], "infer")
    finally:
        torch.set_num_threads(threads)
    assert list(table["torch_threads"]) == [1]


def test_without_out_the_rows_are_printed_and_no_file_is_written(run_cli, tmp_path):
    """Run in a checkout, `bench throughput` must not append to the committed results/throughput.csv unasked:
    without --out it prints the table and writes nothing."""
    Path("results").mkdir()
    Path("results/throughput.csv").write_text("committed\n")
    before = sorted(p for p in tmp_path.rglob("*"))
    code, out, err = run_cli("throughput", "--encoder", "modified_resnet", "--mode", "infer", "--device", "cpu",
                             "--batch-size", "4", "--steps", "1", "--untimed-steps", "0", "--encoder-opt", "width=8",
                             *TEXT)
    assert code == 0, err
    assert "| modified_resnet" in out and "--out DIR" in out
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert Path("results/throughput.csv").read_text() == "committed\n"


@pytest.mark.parametrize("component, mode", [("vision", "infer"), ("vision", "train"), ("clip", "train")])
def test_the_timed_region_is_the_last_steps_calls_after_the_untimed_ones_the_row_counts(monkeypatch, component, mode):
    """The clock runs over exactly --steps calls of the step, after every untimed one (FLOP count, compilation,
    kernel count, --untimed-steps); the row's untimed_steps is how many ran untimed, not just the option."""
    import bench.perf.throughput as tp

    calls, seen = [0], {}

    def counted(step):
        def run():
            calls[0] += 1
            return step()
        return run

    real_vision, real_clip, real_time = tp._vision_step, tp._clip_step, tp.time_steps
    monkeypatch.setattr(tp, "_vision_step", lambda *a, **k: counted(real_vision(*a, **k)))
    monkeypatch.setattr(tp, "_clip_step", lambda *a: (lambda s, g: (counted(s), g))(*real_clip(*a)))

    def timed(fn, steps, device):
        seen["before"] = calls[0]
        out = real_time(fn, steps, device)
        seen["timed"] = calls[0] - seen["before"]
        return out

    monkeypatch.setattr(tp, "time_steps", timed)
    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=4, steps=3, untimed_steps=2, embed_dim=32,
                        text_width=32, text_heads=2, text_layers=1, encoder_opts=(("width", 8),))
    row = measure(cfg, component, mode)
    assert seen == {"before": 5, "timed": 3} and calls[0] == 8
    assert row["untimed_steps"] == 5


def test_clip_train_flops_are_the_vision_and_text_rows_plus_the_loss_logits():
    """The rows split bench run's step: clip/train counts vision/train plus text/train plus the loss's logits (one
    batch x batch x embed_dim product forward, two backward). text/train once encoded the whole prompt table
    where the CPU step encodes only the prompt tree of the batch's prompts: about 5x the step's text work at
    batch 32."""
    batch, embed = 8, 32
    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=batch, steps=1, untimed_steps=0, embed_dim=embed,
                        text_width=32, text_heads=2, text_layers=1, encoder_opts=(("width", 8),))
    flops = {component: measure(cfg, component, "train")["gflops_per_sample"] * batch * 1e9
             for component in ("vision", "text", "clip")}
    logits = 3 * 2 * batch * batch * embed
    assert flops["clip"] == pytest.approx(flops["vision"] + flops["text"] + logits, rel=1e-9), flops


def test_text_train_updates_the_text_parameters_bench_runs_step_updates():
    """text/train's optimizer holds what the engine's optimizer holds outside the vision tower: with the compact
    token embedding (bench run's default) only the rows the prompts use, not the dense 49408-row embedding whose
    AdamW update was most of the row's time on a CPU and which no bench run step updates."""
    from bench.engine.build import build_engine
    from bench.perf import throughput

    cfg = ThroughputCfg(encoder="modified_resnet", batch_size=4, embed_dim=32, text_width=32, text_heads=2,
                        text_layers=1, encoder_opts=(("width", 8),))
    device = torch.device("cpu")
    built = {}
    original = torch.optim.AdamW.__init__

    def spy(self, params, *args, **kwargs):
        params = list(params)
        built["text"] = sum(p.numel() for p in params)
        original(self, params, *args, **kwargs)

    model, _, _ = throughput._build(cfg, device, "text")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "__init__", spy)
        throughput._text_step(cfg, model, cfg.batch_size, device)
    reference, vision, _ = throughput._build(cfg, device, "clip")
    engine = build_engine(reference, throughput._prompt_table(device)[0], throughput.clip_recipe(cfg, 4))
    engine_text = sum(p.numel() for g in engine.state.optimizer.param_groups for p in g["params"]) - vision
    assert built["text"] == engine_text
    assert engine_text < 49408 * 32  # the compact embedding is in force: fewer than the dense embedding's rows
