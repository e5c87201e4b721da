"""Run folders an older bench wrote (tests/support/old_results: commit 7bd3d82) carry over: their configurations
keep their ids under today's config, so the sweep that made them, typed again, finds them done and trains
nothing, and an old config's --warm-up is today's --prewarm-steps."""
import json
import shutil

import pandas as pd

from bench.config import RunConfig
from bench.results.columns import config_key
from tests.support.fake_results import OLD_FLAGS, OLD_ID_RESULTS, OLD_RESULTS

SWEEP = ["sweep", "--encoder", "modified_resnet", "--templates", "seed,openai", "--seeds", "0,1", *OLD_FLAGS]


def test_old_configs_read_today_give_the_configuration_ids_their_runs_recorded():
    """A sweep finds a finished run by (config id, seed): an id computed differently today would train every old
    run again, and bench results would split one configuration in two."""
    runs = sorted((OLD_RESULTS / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        saved = json.loads((run / "config.json").read_text())
        recorded = json.loads((run / "result.json").read_text())["config_id"]
        assert config_key(RunConfig.from_dict(saved)) == recorded, run.name


def test_an_old_configs_warm_up_is_todays_prewarm_steps():
    """7bd3d82's --warm-up N (config warm_up) became --prewarm-steps (prewarm_steps): an old run resumed today
    prewarms as it did, not silently 0 steps."""
    saved = json.loads(next((OLD_RESULTS / "runs").glob("*/config.json")).read_text())
    assert "warm_up" in saved and "prewarm_steps" not in saved
    assert RunConfig.from_dict({**saved, "warm_up": 3}).prewarm_steps == 3
    assert RunConfig.from_dict(saved).prewarm_steps == 0


def test_the_old_sweep_typed_again_finds_every_run_done_and_trains_nothing(run_cli, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(OLD_RESULTS, out)
    before = sorted(p.name for p in (out / "runs").iterdir())
    code, status, err = run_cli(*SWEEP, "--out", str(out), "--status")
    assert code == 0, err
    lines = status.splitlines()
    assert "4 runs: 4 done" in lines[-1] and [line.split()[2] for line in lines[:-1]] == ["done"] * 4
    code, printed, err = run_cli(*SWEEP, "--out", str(out))
    assert code == 0, err
    assert (printed + err).count("skipped") == 4 and " start " not in printed + err
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    assert len(pd.read_csv(out / "runs.csv")) == 4


def test_old_rows_whose_ids_were_computed_otherwise_read_with_todays(run_cli, tmp_path):
    """7bd3d82 gave a run on 2 ranks x 16 images the id of 1 process x 16 (5704f20: that of its global batch,
    1 x 32), and an AdamW run with --momentum an id of its own (a51a997: momentum is sgd's and muon's). Read as
    recorded, the DDP run pooled with 1 x 16 runs, and a sweep of 1 x 16 found it 'done' and never trained its
    own run. Their config.json gives the ids bench computes now: both are the plain 1 x 32 configuration."""
    out = tmp_path / "ids"
    shutil.copytree(OLD_ID_RESULTS, out)
    recorded = pd.read_csv(out / "runs.csv", dtype={"config_id": str})
    assert recorded["config_id"].tolist() == ["9772bfffc0", "4d068f2f8d"]
    code, printed, err = run_cli("results", str(out), "--columns", "config_id,batch_size,world_size", "--format", "csv")
    assert code == 0, err
    assert printed.splitlines()[1:] == ["ff02f78e86,16,2", "ff02f78e86,32,1"]
    status = {}
    for batch in ("16", "32"):
        code, status[batch], err = run_cli("sweep", "--encoder", "modified_resnet", "--seeds", "0", *OLD_FLAGS,
                                           "--batch-size", batch, "--out", str(out), "--status")
        assert code == 0, err
    assert "1 run: 1 to do" in status["16"] and "1 run: 1 done" in status["32"], status


def test_a_row_without_its_run_folder_keeps_its_id_and_the_sweep_reads_only_multi_rank_rows(tmp_path):
    """The sweep's check of what is done runs once per planned run: it reads the configs of DDP rows only (an old
    AdamW row with a momentum trains again there, the same numbers, where a DDP row would skip a run)."""
    from bench.app.older_rows import with_current_config_ids

    runs = {json.loads((d / "result.json").read_text())["world_size"]: d for d in (OLD_ID_RESULTS / "runs").iterdir()}
    for name, source in (("ddp", runs[2]), ("adamw", runs[1])):
        (tmp_path / name).mkdir()
        shutil.copy(source / "config.json", tmp_path / name / "config.json")
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "config.json").write_text('{"eval_every": 2}')  # not a whole config: defaults would fill it
    table = pd.DataFrame({"run_id": ["gone", "adamw", "ddp", "part"],
                          "config_id": ["aaaaaaaaaa", "4d068f2f8d", "9772bfffc0", "bbbbbbbbbb"], "world_size": [2, 1, 2, 1]})
    where = {"adamw": tmp_path / "adamw", "ddp": tmp_path / "ddp", "part": tmp_path / "part"}.get
    assert with_current_config_ids(table, where)["config_id"].tolist() == [
        "aaaaaaaaaa", "ff02f78e86", "ff02f78e86", "bbbbbbbbbb"]
    assert with_current_config_ids(table, where, ranks_only=True)["config_id"].tolist() == [
        "aaaaaaaaaa", "4d068f2f8d", "ff02f78e86", "bbbbbbbbbb"]


def test_until_reads_an_old_ddp_rows_value_under_the_id_the_done_check_gives_it(tmp_path):
    """--until counts a configuration's seeds from metric_values: the old DDP run (recorded under 1 x 16's id) is a
    seed of today's 1 x 32 configuration there too, as the sweep's done check says, and not one of 1 x 16; the old
    AdamW row with a momentum keeps its recorded id, as the done check keeps it."""
    from bench.app.sweep.adaptive import metric_values

    out = tmp_path / "ids"
    shutil.copytree(OLD_ID_RESULTS, out)
    values = metric_values(out, "zeroshot_top1", {"ff02f78e86", "9772bfffc0", "4d068f2f8d"})
    assert sorted(values) == [("4d068f2f8d", 0), ("ff02f78e86", 0)]


def test_a_sweeps_summary_leaves_out_an_old_ddp_row_its_done_check_does_not_count(tmp_path):
    """After a sweep of 1 x 16 trained its own run beside the old DDP run (recorded under 1 x 16's id), its summary
    over seeds is that run's alone: read as recorded, the DDP run (1 x 32 now) was pooled into it as a second line
    or seed of the configuration the sweep had just found it is not."""
    from bench.app.summary import sweep_summary_lines

    out = tmp_path / "ids"
    shutil.copytree(OLD_ID_RESULTS, out)
    assert sweep_summary_lines(out, {("9772bfffc0", 0)}) == []  # the sweep's own run not yet there: nothing
    lines = sweep_summary_lines(out, {("ff02f78e86", 0)})  # a sweep of 1 x 32: the DDP run is its seed 0
    assert len(lines) == 1 and "over 1 seeds" in lines[0] and "train_seconds 5.1" in lines[0], lines
