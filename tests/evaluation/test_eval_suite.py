"""End to end on synthetic data with a tiny CLIP: seeds, the evaluation suite, a resumable sweep, and
`bench eval` reproducing the run's own number from its checkpoint."""
import io

import pandas as pd
import pytest

from tests.support.runs import TINY

COMMON = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "48", "--limit-test", "24", "--batch-size", "16",
          *TINY]
SUITE = ["--evals", "retrieval,probe,robustness", "--robust-limit", "8", "--robust-severities", "2"]
# Tiny tensors: intra-op threads only add hand-offs (several times slower on the shared 2-core box).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # a sweep of seeds with the whole suite, then bench eval
def test_seeds_suite_sweep_and_eval(tmp_path, run_cli):
    out = tmp_path / "res"
    code, stdout, err = run_cli("run", *COMMON, *SUITE, "--seeds", "0,1", "--out", out)
    assert code == 0, err
    assert "over 2 seeds" in stdout and "±" in stdout
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.seed) == [0, 1] and runs.config_id.nunique() == 1
    for col in ("retrieval_i2t_r1", "retrieval_t2i_r10", "probe_top1", "robust_mean", "robust_contrast"):
        assert runs[col].between(0, 1).all(), col
    assert (runs.eval_checkpoint == "final epoch").all() and (runs.normalization == "[-1,1]").all()
    long = pd.read_csv(out / "runs_long.csv")
    assert len(long) == long.groupby(["run_id", "metric"]).ngroups and set(long.run_id) == set(runs.run_id)
    run_dir = out / "runs" / runs.run_id[0]
    robustness = pd.read_csv(run_dir / "robustness.csv")
    assert len(robustness) == 1 + 8 and set(robustness.severity) == {0, 2}
    assert (run_dir / "train_log.csv").is_file() and (run_dir / "probe_per_class.csv").is_file()

    # an interrupted or extended sweep: seeds 0 and 1 are there, only seed 2 runs (--evals is not part of the
    # configuration, so leaving it out here still matches the runs above)
    code, stdout, err = run_cli("sweep", "--encoder", "modified_resnet", "--seeds", "0,1,2", *COMMON, "--no-checkpoints", "--out", out)
    assert code == 0, err
    assert stdout.count("skipped") == 2 and len(pd.read_csv(out / "runs.csv")) == 3

    # the template-set ablation on the checkpoint; its 'seed' row reproduces the run's zero-shot top-1
    code, stdout, err = run_cli("eval", run_dir / "best.pt", "--templates", "seed,openai", "--per-template",
                                "--evals", "retrieval", "--format", "csv", "--out", tmp_path / "ev")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(stdout))
    assert len(table) == 2 + 5 + 18
    assert table.set_index("eval_templates").loc["seed", "zeroshot_top1"] == runs.zeroshot_top1[0]
    sets = table[table.template.isna()]
    assert list(sets.eval_templates) == ["seed", "openai"] and list(sets.n_templates) == [5, 18]
    assert (table.templates == "seed").all() and table.run_id.is_unique  # trained on seed; one id per row
    assert sets.retrieval_i2t_r1.notna().all() and table[table.template.notna()].retrieval_i2t_r1.isna().all()
    assert (table.image_size == 32).all() and table.checkpoint_sha256.nunique() == 1
    for name in ("eval.csv", "per_class.csv", "confusion-seed.csv", "confusion-openai.csv"):
        assert (tmp_path / "ev" / name).is_file(), name
    # the ablation table reads back like any results table: seed vs openai, one row per evaluated set
    code, stdout, err = run_cli("results", tmp_path / "ev" / "eval.csv", "--aggregate", "--format", "csv",
                                "--columns", "eval_templates,n,zeroshot_top1")
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(stdout))) == 25


def test_bad_suite_options_exit_2_before_training(tmp_path, run_cli):
    for args, needle in ((["--evals", "probe,nope"], "unknown evaluation 'nope'"),
                         (["--robust-severities", "0"], "--robust-severities"),
                         (["--robust-limit", "0"], "--robust-limit"),
                         (["--seeds", "1,1"], "--seeds")):
        code, _, err = run_cli("run", "--dataset", "synthetic", *args, "--out", tmp_path / "x")
        assert code == 2 and needle in err, (args, err)
    assert not (tmp_path / "x" / "runs.csv").exists()


@pytest.mark.slow  # over a second of the quick tier (2-minute budget)
def test_eval_of_a_checkpoint_measures_the_suite_as_its_run_did(tmp_path, run_cli):
    """``bench eval`` of a run's last.pt, told only which evaluations to run, reproduces every zero-shot and suite
    column of the run's row exactly for a run whose seeds are not 0: the probe's validation split and the corruption
    noise are drawn with the run's data seed (not 0), on the run's robustness images and severities."""
    from dataclasses import replace

    from bench.app.options import config_from_flags
    from bench.app.run import run

    out = tmp_path / "res"
    # data_seed has no flag (a sweep's runs share it); set here as a Python caller of bench.app.run sets it
    cfg = config_from_flags(dataset="synthetic", epochs=1, limit_train=48, limit_test=24, batch_size=16, embed_dim=32,
                            text_width=32, text_layers=1, text_heads=2, encoder_opts=("width=8",), progress=False,
                            evals=("retrieval", "probe", "robustness"), robust_limit=8, robust_severities=("2", "4"),
                            device="cpu", out=str(out))
    run(replace(cfg, seed=3, data_seed=3))
    row = pd.read_csv(out / "runs.csv").iloc[0]
    code, stdout, err = run_cli("eval", out / "runs" / row.run_id / "last.pt", "--evals", "retrieval,probe,robustness",
                                "--format", "csv")
    assert code == 0, err
    (evaluated,) = pd.read_csv(io.StringIO(stdout)).to_dict("records")
    columns = [c for c in row.index if c.startswith(("zeroshot_", "mean_per_class", "retrieval_", "probe_", "robust_"))]
    assert {"probe_val_top1", "robust_gaussian_noise", "robust_images", "robust_severities",
            "robust_protocol"} <= set(columns)
    assert {c: evaluated[c] for c in columns} == row[columns].to_dict()
