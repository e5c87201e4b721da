"""bench sweep --until: the seed schedule (checked against hand-computed t intervals), its replay from the finished
runs, the round loop, bad options refused before anything is written, and an adaptive sweep that is SIGKILLed
mid-round and ends with the same runs as one never stopped."""
import json
import math
import signal
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.app.sweep import launchers
from bench.app.sweep.in_process import Outcome
from bench.app.sweep.placement import WORKER_VARIABLE
from bench.app.sweep.precision import AT_MAX, PRECISE, Until, next_count, stage
from bench.results.columns import config_key
from bench.results.runs_csv import append_run, finish_run
from bench.results.stats import mean_halfwidth
from tests.support.processes import spawn_bench
from tests.support.sweep_files import sweep_text

# Two configurations of the tiny CLIP on the synthetic set whose final training loss spreads very differently
# over seeds: lr 0.01 settles at the chance loss of a batch of 16 (log 16 = 2.77; std over seeds about 0.03),
# lr 1e-5 stays near its random start (std about 0.7). At ±0.15 the first is precise after its first round of 3
# seeds (half-width about 0.035), the second cannot be at 5 (about 0.8) and stops at --max-seeds.
UNTIL = ("--until", "final_train_loss:0.15", "--max-seeds", "5")


def sweep_file(tmp_path, name="s.toml", out="res", extra="") -> Path:
    path = tmp_path / name
    path.write_text(sweep_text({"lr": [0.01, 0.00001]}, log_every=2, out=out) + textwrap.dedent(extra))
    return path


def test_the_half_width_is_the_t_interval_of_the_mean():
    """0.50, 0.52, 0.54: s = 0.02, t_0.975(2) = 4.302653, so the half-width is 4.302653 * 0.02 / sqrt(3) = 0.049683."""
    assert mean_halfwidth([0.50, 0.52, 0.54]) == pytest.approx(0.049683, abs=1e-6)
    assert mean_halfwidth([0.5]) == math.inf and mean_halfwidth([0.5, 0.5]) == 0.0


def test_a_round_adds_the_seeds_the_spread_asks_for_at_most_doubling_and_never_past_the_maximum():
    """s = 0.02 at n = 3. Half-widths the same s gives at m seeds: m = 4: 3.182446 * 0.02 / 2 = 0.031825;
    m = 5: 2.776445 * 0.02 / sqrt(5) = 0.024833; m = 6: 2.570582 * 0.02 / sqrt(6) = 0.020989."""
    values = [0.50, 0.52, 0.54]
    assert next_count(values, 0.032, 20) == 4
    assert next_count(values, 0.025, 20) == 5  # 0.024833 <= 0.025 < 0.031825
    assert next_count(values, 0.021, 20) == 6  # 0.020989 <= 0.021
    assert next_count(values, 0.0001, 20) == 6  # would need hundreds: a round at most doubles n
    assert next_count(values, 0.0001, 4) == 4  # and stops at --max-seeds
    assert next_count(values, 0.0001, 3) == 4  # at least one seed (stage() stops at the maximum before asking)


def test_the_schedule_is_replayed_from_the_finished_seeds_and_a_half_done_round_is_finished_first():
    until = Until("zeroshot_top1", 0.025, min_seeds=3, max_seeds=10)
    first = {0: 0.50, 1: 0.52, 2: 0.54}
    assert stage({}, until).todo == (0, 1, 2)
    assert stage({1: 0.52}, until).todo == (0, 2)  # a first round cut short: its missing seeds
    after = stage(first, until)  # half-width 0.049683 > 0.025: the round to 5 seeds (see the test above)
    assert (after.n, after.todo, after.stop, after.done) == (5, (3, 4), None, 3)
    assert after.halfwidth == pytest.approx(0.049683, abs=1e-6)
    # killed after seed 3: seeds 0-3 alone (s = 0.017078, 3.182446 * s / 2 = 0.027175 > 0.025) would decide a
    # new round; the replay finishes the round the first three seeds decided instead
    assert stage({**first, 3: 0.51}, until).todo == (4,)
    # 0.50 0.52 0.54 0.51 0.53: s = sqrt(0.001 / 4) = 0.015811, half-width 2.776445 * s / sqrt(5) = 0.019632
    done = stage({**first, 3: 0.51, 4: 0.53}, until)
    assert (done.n, done.todo, done.stop) == (5, (), PRECISE) and done.halfwidth == pytest.approx(0.019632, abs=1e-6)
    assert stage({**first, 3: 0.51, 4: 0.53, 9: 0.99}, until) == done  # a seed the schedule never reached
    capped = Until("zeroshot_top1", 0.025, min_seeds=3, max_seeds=4)
    assert stage(first, capped).todo == (3,)
    assert stage({**first, 3: 0.51}, capped).stop == AT_MAX


def test_the_replay_counts_the_rounds_a_configuration_has_reached():
    """A stage knows its round from the values alone (the first round is 1, each decision adds one), so every
    process that replays the schedule, a restarted sweep or --status, names the same round."""
    until = Until("zeroshot_top1", 0.025, min_seeds=3, max_seeds=10)
    first = {0: 0.50, 1: 0.52, 2: 0.54}
    assert stage({}, until).round == 1 and stage({1: 0.52}, until).round == 1
    assert stage(first, until).round == 2  # the round to 5 seeds, not started
    assert stage({**first, 3: 0.51}, until).round == 2  # ... and half done
    assert stage({**first, 3: 0.51, 4: 0.53}, until).round == 2  # precise at its end: stopped in round 2
    wide = {s: 0.4 + 0.2 * (s % 2) for s in range(10)}  # 3 -> 6 -> 10 (--max-seeds): stopped in round 3
    assert stage(wide, until).round == 3 and stage(wide, until).stop == AT_MAX


def _fake_launch(spread: dict, launched: list):
    """A launcher that 'runs' each planned run at once: its record and row, with final_train_loss from
    ``spread[lr]`` (seed -> value), as a finished run leaves them."""
    def launch(planned, placement, argv, in_worker, echo=print, plugins=((), ())):
        launched.append(sorted(p.run_id for p in planned))
        outcomes = []
        for p in planned:
            row = {"run_id": p.run_id, "config_id": config_key(p.cfg), "seed": p.cfg.seed,
                   "encoder": p.cfg.model.encoder, "templates": p.cfg.templates, "lr": p.cfg.lr,
                   "final_train_loss": spread[p.cfg.lr][p.cfg.seed], "zeroshot_top1": 0.1}
            p.run_dir.mkdir(parents=True, exist_ok=True)
            finish_run(p.out, p.run_dir, row)
            outcomes.append(Outcome(p, "done", row))
        return outcomes
    return launch


# lr 0.01: 2.85, 2.86, 2.85: s = 0.0057735, half-width 4.302653 * s / sqrt(3) = 0.014343, precise at ±0.15;
# lr 1e-5: 4, 5, 6, ...: s = 1, half-width 2.48 at 3 seeds, 0.939 at 6, never precise by then
SPREAD = {0.01: {s: 2.85 + 0.01 * (s % 2) for s in range(20)},
          0.00001: {s: 4.0 + 1.0 * (s % 3) for s in range(20)}}


def test_rounds_stop_each_configuration_at_its_half_width_or_at_the_maximum(tmp_path, run_cli, monkeypatch):
    launched = []
    monkeypatch.setattr(launchers, "launch", _fake_launch(SPREAD, launched))
    path = sweep_file(tmp_path)
    append_run(tmp_path / "res", {"run_id": "by-hand", "config_id": "other", "seed": 0, "zeroshot_top1": 0.3})
    code, out, err = run_cli("sweep", path, "--until", "final_train_loss:0.15", "--max-seeds", "6")
    assert code == 0, err  # a run of another configuration, without the metric, is left alone
    # round 1: both at seeds 0-2; then only the wide one, 3 -> 6 (doubling, at the maximum), then it stops there
    assert [len(r) for r in launched] == [6, 3]
    assert all(r.endswith(("-s3", "-s4", "-s5")) for r in launched[1])
    assert "lr=0.01: n=3, 2.853 ±0.01434, precise (±0.01434 <= ±0.15)" in out
    assert "lr=1e-05: n=6" in out and "at --max-seeds 6, still wider than ±0.15" in out
    assert "1 of 2 configuration(s) reached --max-seeds 6" in err and "lr=1e-05" in err
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert sorted(table.groupby("lr").seed.apply(sorted).items()) == [(1e-5, [0, 1, 2, 3, 4, 5]), (0.01, [0, 1, 2])]
    # the same command again finds both stopped and runs nothing; --status says why each stopped
    assert run_cli("sweep", path, "--until", "final_train_loss:0.15", "--max-seeds", "6")[0] == 0
    assert len(launched) == 2
    code, out, err = run_cli("sweep", path, "--until", "final_train_loss:0.15", "--max-seeds", "6", "--status")
    assert code == 0 and "2 configurations: 1 precise, 1 at --max-seeds, 0 with a round to run (0 runs)" in out
    # a larger --max-seeds later goes on from the runs there are: 6 -> 12, the next doubling
    code, out, err = run_cli("sweep", path, "--until", "final_train_loss:0.15", "--max-seeds", "12", "--dry-run")
    assert code == 0 and "round 3: seeds 6-11" in out and "lr=1e-05" in out


def test_a_restarted_sweep_numbers_its_rounds_where_the_stopped_one_was(tmp_path, run_cli, monkeypatch):
    """The round numbers come from the runs, as the rounds do: a sweep stopped in its second round and started
    again says "round 2" for the rest of that round and "round 3" for the next, as one never stopped (it counted
    from 1 in every process, so a restart called the second round "round 1")."""
    from bench.errors import Interrupted

    launched = []
    finish = _fake_launch(SPREAD, launched)

    def stopped_in_round_2(planned, *args, **kwargs):  # round 2: one run finishes, then a SIGTERM
        if launched:
            finish(planned[:1], *args, **kwargs)
            raise Interrupted("sweep stopped by SIGTERM: 2 run(s) left; run the same command again to continue")
        return finish(planned, *args, **kwargs)

    args = ("sweep", sweep_file(tmp_path), "--until", "final_train_loss:0.15", "--max-seeds", "12")
    monkeypatch.setattr(launchers, "launch", stopped_in_round_2)
    code, out, err = run_cli(*args)
    assert code == 130 and "round 1: 6 runs" in out and "round 2: 3 runs" in out, (out, err)
    code, out, err = run_cli(*args, "--status")
    assert code == 0 and "round 2: seeds 4,5" in out, out
    monkeypatch.setattr(launchers, "launch", finish)
    code, out, err = run_cli(*args)
    assert code == 0, err
    # the wide configuration: seeds 4-5 finish round 2 (3 -> 6), then round 3 doubles it to 12
    assert "round 1" not in out and "round 2: 2 runs" in out and "round 3: 6 runs" in out, out
    assert [len(r) for r in launched] == [6, 1, 2, 6]


def test_a_run_of_the_sweep_without_the_metric_is_one_line(tmp_path, run_cli, monkeypatch):
    """A (configuration, seed) already in runs.csv counts as done, but one made without the metric cannot be
    judged: refused with the run named, before any round."""
    launched = []
    monkeypatch.setattr(launchers, "launch", _fake_launch(SPREAD, launched))
    path = sweep_file(tmp_path)
    assert run_cli("sweep", path, "--until", "final_train_loss:0.15", "--max-seeds", "3")[0] == 0
    code, out, err = run_cli("sweep", path, "--until", "zeroshot_top5:0.01")
    assert code == 2 and "has no zeroshot_top5" in err and len(err.strip().splitlines()) == 1
    assert len(launched) == 1


def test_transfer_rows_are_not_seeds_of_an_adaptive_sweep(tmp_path, run_cli, monkeypatch):
    """Each run also leaves a transfer row (another dataset evaluated: its run's config id and seed, no training
    loss): the rounds and the summary go by the runs' own rows, exactly as without the transfer rows."""
    launched = []
    fake = _fake_launch(SPREAD, launched)

    def launch(planned, *args, **kwargs):
        outcomes = fake(planned, *args, **kwargs)
        for p in planned:
            row = {"run_id": f"{p.run_id}@stl", "config_id": config_key(p.cfg), "seed": p.cfg.seed,
                   "dataset": "synthetic", "eval_dataset": "stl", "source_run_id": p.run_id, "zeroshot_top1": 0.33}
            (p.out / "runs" / row["run_id"]).mkdir(parents=True)
            finish_run(p.out, p.out / "runs" / row["run_id"], row)
        return outcomes

    monkeypatch.setattr(launchers, "launch", launch)
    code, out, err = run_cli("sweep", sweep_file(tmp_path), "--until", "final_train_loss:0.15", "--max-seeds", "6")
    assert code == 0, err
    assert [len(r) for r in launched] == [6, 3] and "lr=1e-05: n=6" in out
    assert "33.0" not in out  # no summary line made of transfer rows


def test_a_round_that_cannot_make_progress_is_one_line_not_an_endless_loop(tmp_path, run_cli, monkeypatch):
    """A run whose result.json exists counts as done, so a launcher skips it; if that record cannot be read and
    runs.csv has no row for it, its value never comes: the sweep names the run and stops instead of repeating
    the round for ever."""
    launched = []
    fake = _fake_launch(SPREAD, launched)

    def launch(planned, *args, **kwargs):  # as the real launchers: a run with a result.json is skipped
        todo = [p for p in planned if not (p.run_dir / "result.json").is_file()]
        return fake(todo, *args, **kwargs) + [Outcome(p, "skipped") for p in planned if p not in todo]

    monkeypatch.setattr(launchers, "launch", launch)
    args = ("sweep", sweep_file(tmp_path), "--until", "final_train_loss:0.15", "--max-seeds", "3")
    assert run_cli(*args)[0] == 0
    res = tmp_path / "res"
    table = pd.read_csv(res / "runs.csv")
    damaged = str(table["run_id"].iloc[0])
    table.iloc[1:].to_csv(res / "runs.csv", index=False)
    (res / "runs" / damaged / "result.json").write_text("{")
    code, out, err = run_cli(*args)
    assert code == 2 and f"their records cannot be read and runs.csv has no row for them ({damaged})" in err
    *warnings, last = err.strip().splitlines()  # the error, after the damaged record's own warnings
    assert last.startswith("bench: error: ") and all("not a readable run record" in w for w in warnings)


def test_runs_that_hold_classes_out_take_until_on_their_held_out_metrics(tmp_path, run_cli):
    path = tmp_path / "h.toml"
    path.write_text(sweep_text({"lr": [0.01]}, holdout_classes="red,blue", out="res"))
    code, out, err = run_cli("sweep", path, "--until", "harmonic_top1:0.05", "--dry-run")
    assert code == 0 and "round 1: seeds 0-2" in out, err
    code, out, err = run_cli("sweep", sweep_file(tmp_path), "--until", "harmonic_top1:0.05", "--dry-run")
    assert code == 2 and "--until harmonic_top1: held-out accuracies are reported only by runs with " \
                         "--holdout-classes, and the sweep's runs hold no class out" in err, err
    # a grid over the split with no hold-out among its values: the message says some runs, not that none report it
    path.write_text(sweep_text({"holdout_classes": ["red,blue", ""]}, out="res"))
    code, out, err = run_cli("sweep", path, "--until", "seen_top1:0.05", "--dry-run")
    assert code == 2 and "and some of the sweep's runs hold no class out; give every run held-out classes" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "res").exists()



def test_until_takes_the_top1_without_tta_of_encoders_that_average_views_and_refuses_it_of_others(tmp_path, run_cli):
    """zeroshot_top1_no_tta is in the row of a run whose encoder averages test-time views (the fast preset's
    airbench_wide, a tiny airbench), so --until takes it there; a modified_resnet run, or an airbench with its
    mirror off, does not report it, and the refusal says why (configurations are checked, nothing is trained)."""
    fast = tmp_path / "fast.toml"  # the fast preset's own encoder, at its own size
    fast.write_text(sweep_text({"lr": [0.002]}, preset="fast", encoder_opt=None, embed_dim=None, out="res"))
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(sweep_text({"lr": [0.01, 0.001]}, encoder="airbench", encoder_opt={"widths": [8, 8, 8]}, out="res"))
    for path in (fast, tiny):
        code, out, err = run_cli("sweep", path, "--until", "zeroshot_top1_no_tta:0.01", "--dry-run")
        assert code == 0 and "round 1: seeds 0-2" in out, err
    mirror_off = tmp_path / "off.toml"
    mirror_off.write_text(sweep_text({"lr": [0.01]}, encoder="airbench",
                                     encoder_opt={"widths": [8, 8, 8], "flip_tta": False}, out="res"))
    mixed = tmp_path / "mixed.toml"  # one encoder without test-time augmentation is enough to refuse
    mixed.write_text(sweep_text({"encoder": ["airbench", "modified_resnet"]}, encoder_opt=None, out="res"))
    for path, encoder in ((sweep_file(tmp_path), "'modified_resnet' (width=8)"),
                          (mirror_off, "'airbench' (flip_tta=False widths=[8, 8, 8])"), (mixed, "'modified_resnet'")):
        code, out, err = run_cli("sweep", path, "--until", "zeroshot_top1_no_tta:0.01")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert (f"--until zeroshot_top1_no_tta: the encoder {encoder} has no test-time augmentation; "
                f"zeroshot_top1_no_tta is reported only for encoders that average views") in err
    assert not (tmp_path / "res").exists()


def test_the_metric_check_builds_each_model_configuration_once_on_the_meta_device(monkeypatch):
    """Configurations that share a model (a grid over lr) share one tower build to answer --until
    zeroshot_top1_no_tta, and that build allocates nothing: the check stays cheap for a large sweep."""
    import bench.clip.model
    from bench.app.sweep.precision import check_metric
    from bench.clip.configs import ModelCfg
    from bench.config import RunConfig

    devices = []
    real = bench.clip.model.create_visual

    def counted(*args):
        tower = real(*args)
        devices.append(next(tower.parameters()).device.type)
        return tower

    monkeypatch.setattr(bench.clip.model, "create_visual", counted)
    cfgs = [RunConfig(model=ModelCfg(encoder=e), lr=lr) for e in ("airbench", "airbench_wide") for lr in range(1, 21)]
    check_metric(Until("zeroshot_top1_no_tta", 0.01), cfgs)
    assert devices == ["meta", "meta"]
    devices.clear()  # a metric every run reports needs no tower at all
    check_metric(Until("zeroshot_top1", 0.01), cfgs)
    assert devices == []


def test_a_worker_runs_one_round_and_leaves_the_next_to_its_parent(tmp_path, run_cli, monkeypatch):
    launched = []
    monkeypatch.setattr(launchers, "launch", _fake_launch(SPREAD, launched))
    monkeypatch.setenv(WORKER_VARIABLE, "0")
    code, out, err = run_cli("sweep", sweep_file(tmp_path), "--until", "final_train_loss:0.15")
    assert code == 0, err
    assert [len(r) for r in launched] == [6]


def test_dry_run_shows_each_configuration_and_the_first_round_and_writes_nothing(tmp_path, run_cli):
    path = sweep_file(tmp_path, extra="seed = [0, 1]\n")  # the grid's seeds: replaced, with a note
    code, out, err = run_cli("sweep", path, *UNTIL, "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("until the 95% interval of the mean final_train_loss is within ±0.15 (3 to 5 seeds")
    assert "n=0" in lines[1] and "round 1: seeds 0-2" in lines[1] and lines[1].endswith("lr=0.01")
    assert "2 configurations: 0 precise, 0 at --max-seeds, 2 with a round to run (6 runs)" in out
    assert out.count("  to do ") == 6 and "6 runs: 6 to do" in out and "--until picks each configuration's seeds" in err
    assert not (tmp_path / "res").exists()


def test_points_that_differ_only_in_options_outside_the_id_are_refused_not_merged(tmp_path, run_cli):
    """Two points whose runs are the same run (an observed target, not in the configuration id) are refused with
    --until as a plain sweep refuses them, not merged into one configuration that silently keeps the first's."""
    path = tmp_path / "s.toml"
    path.write_text(sweep_text({"target": ["zeroshot_top1=0.1", "zeroshot_top1=0.5"]}, out="res"))
    code, out, err = run_cli("sweep", path, *UNTIL, "--dry-run")
    assert code == 2 and "are the same run" in err, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (("--until", "zeroshot_top1"), "is not METRIC:HALFWIDTH"),
    (("--until", "zeroshot_top1:abc"), "is not METRIC:HALFWIDTH"),
    (("--until", "zeroshot_top1:nan"), "is not METRIC:HALFWIDTH"),
    (("--until", "zeroshot_top1:0"), "HALFWIDTH must be > 0"),
    (("--until", "zeroshot_top1:-0.01"), "HALFWIDTH must be > 0"),
    (("--until", "zeroshot_top1:0.5"), "accuracies are fractions, so HALFWIDTH is too"),
    (("--until", "zershot_top1:0.01"), "did you mean zeroshot_top1?"),
    (("--until", "probe_top1:0.01"), "add --evals probe"),
    (("--until", "zeroshot_top1:0.01", "--min-seeds", "1"), "--min-seeds must be at least 2"),
    (("--until", "zeroshot_top1:0.01", "--min-seeds", "5", "--max-seeds", "4"), "--max-seeds 4 is below --min-seeds 5"),
    (("--until", "zeroshot_top1:0.01", "--max-seeds", "1"), "--max-seeds 1 is below --min-seeds 3"),
    (("--max-seeds", "5"), "--max-seeds bounds an adaptive sweep; add --until"),
    (("--min-seeds", "5"), "--min-seeds bounds an adaptive sweep; add --until"),
])
def test_bad_until_options_are_one_line_exit_2_and_nothing_written(tmp_path, run_cli, args, needle):
    code, out, err = run_cli("sweep", sweep_file(tmp_path), *args)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_until_with_seeds_in_the_flags_form_is_refused(tmp_path, run_cli):
    code, out, err = run_cli("sweep", "--encoder", "modified_resnet", "--seeds", "0,1", "--until",
                             "zeroshot_top1:0.01", "--dataset", "synthetic", "--out", tmp_path / "res")
    assert code == 2 and "--until picks each configuration's seeds (0, 1, 2, ...); drop --seeds" in err
    assert not (tmp_path / "res").exists()


def _by_run(out: Path) -> dict:
    table = pd.read_csv(out / "runs.csv")
    return dict(zip(table.run_id, table.final_train_loss))


@pytest.mark.slow  # three bench sweep processes, 16 tiny runs
def test_an_adaptive_sweep_killed_mid_round_ends_with_the_runs_of_one_never_stopped(tmp_path):
    """SIGKILL during the second round (the wide configuration's seeds 3-4); --status then shows the round, and the
    same command again finishes it: each configuration stops where an uninterrupted sweep stops (the narrow one
    precise at 3 seeds, the wide one at --max-seeds 5) with the same runs and the same numbers."""
    path = sweep_file(tmp_path)
    proc = spawn_bench("sweep", path, *UNTIL, "--checkpoint-every", "2")
    runs = tmp_path / "res" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        if list(runs.glob("*-s3/last.pt")) or list(runs.glob("*-s3/result.json")):
            break
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before its second round: {proc.communicate()}")
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"the sweep never reached its second round: {proc.communicate()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(runs.glob("*-s4/result.json"))  # killed mid-round
    status = spawn_bench("sweep", path, *UNTIL, "--status")
    shown, err = status.communicate(timeout=300)
    assert status.returncode == 0, err
    narrow, wide = shown.splitlines()[1:3]
    assert "stop: precise" in narrow and narrow.endswith("lr=0.01")
    assert "round 2: seeds " in wide and wide.endswith("lr=1e-05")
    again = spawn_bench("sweep", path, *UNTIL, "--checkpoint-every", "2")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "round 2: " in out and "lr=1e-05: seeds " in out and "lr=0.01: seeds" not in out  # only the round left
    assert "at --max-seeds 5" in out and "reached --max-seeds 5" in err
    assert "lr=0.01: n=3" in out and "precise" in out
    clean = sweep_file(tmp_path, name="clean.toml", out="clean")
    reference = spawn_bench("sweep", clean, *UNTIL, "--checkpoint-every", "2")
    ref_out, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err
    assert "round 2: 2 runs" in ref_out and "round 3" not in ref_out  # 3 + 3 seeds, then 2 more of the wide one
    killed, never = _by_run(tmp_path / "res"), _by_run(tmp_path / "clean")
    assert killed == never  # the same run ids (configuration and seed) with the same final losses
    seeds = sorted(int(r.rsplit("-s", 1)[1]) for r in never)
    assert seeds == [0, 0, 1, 1, 2, 2, 3, 4]
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*/result.json")]
    assert len(records) == 8


@pytest.mark.slow  # two worker processes a round
def test_workers_share_each_round_of_an_adaptive_sweep(tmp_path, run_cli):
    code, out, err = run_cli("sweep", sweep_file(tmp_path), "--until", "final_train_loss:0.15", "--max-seeds", "4",
                             "--workers", "2", "--no-checkpoints")
    assert code == 0, err
    started = [line.split()[-1] for line in out.splitlines() if " start " in line]
    assert len(started) == 7 and len(set(started)) == 7, out  # 3 + 3, then the wide one's seed 3
    assert {line[:2] for line in out.splitlines() if " start " in line} <= {"w0", "w1"}
    table = pd.read_csv(tmp_path / "res" / "runs.csv")
    assert len(table) == 7 and table.run_id.is_unique
