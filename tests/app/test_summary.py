"""The lines commands print about finished runs: one configuration's seeds summarised per line, each line telling
its configuration apart from the others'."""
from bench.app.summary import summary_lines


def _row(i, config_id, lr, top1, **extra):
    return dict(run_id=f"r{i}", config_id=config_id, encoder="modified_resnet", templates="seed", lr=lr, seed=i % 2,
                zeroshot_top1=top1, zeroshot_top5=0.5, mean_per_class_recall=0.1, train_seconds=1.0,
                train_images_per_s=10.0, **extra)


def test_each_configuration_line_names_the_settings_that_tell_it_apart():
    """A sweep over lr printed two lines that both read 'modified_resnet / seed over 2 seeds'."""
    rows = [_row(0, "a", 0.01, 0.2), _row(1, "a", 0.01, 0.4), _row(2, "b", 1e-5, 0.1), _row(3, "b", 1e-5, 0.1)]
    lines = summary_lines(rows)
    assert [line.split(" over ")[0] for line in lines] == ["modified_resnet / seed, lr=0.01",
                                                          "modified_resnet / seed, lr=1e-05"]
    assert "zeroshot_top1 30.0 ± 14.1" in lines[0]


def test_configurations_that_differ_where_runs_csv_has_no_column_get_their_config_ids():
    rows = [_row(0, "a", 0.01, 0.2), _row(1, "b", 0.01, 0.1)]
    assert [line.split(" over ")[0] for line in summary_lines(rows)] == ["modified_resnet / seed [a]",
                                                                        "modified_resnet / seed [b]"]


def test_one_configuration_reads_as_before():
    rows = [_row(0, "a", 0.01, 0.2), _row(1, "a", 0.01, 0.4)]
    assert summary_lines(rows)[0].startswith("modified_resnet / seed over 2 seeds: zeroshot_top1 30.0 ± 14.1")
    assert "zeroshot_top1 30.0 ± 14.1%," in summary_lines(rows)[0]  # percent, where each run's line has fractions
    unmeasured = [{**r, "mean_per_class_recall": float("nan")} for r in rows]
    assert "mean_per_class_recall" not in summary_lines(unmeasured)[0]  # left out, not a lone "%"


def test_a_printed_table_writes_whole_number_settings_as_integers_and_blanks_as_blanks():
    """bench eval's rows: a dataset that needed no resize has no source_image_size, which made its neighbour's 96 a
    float; every format prints 96 (JSON: null beside it), never 96.0 or nan, and leaves the metrics as they are."""
    import json

    import pandas as pd

    from bench.app.tables import format_table

    table = pd.DataFrame({"eval_dataset": ["cifar10", "stl10"], "source_image_size": [float("nan"), 96.0],
                          "zeroshot_top1": [0.5, 1.0]})
    assert format_table(table, "csv").splitlines() == ["eval_dataset,source_image_size,zeroshot_top1",
                                                       "cifar10,,0.5", "stl10,96,1.0"]
    assert [r["source_image_size"] for r in json.loads(format_table(table, "json"))] == [None, 96]
    markdown = format_table(table, "markdown")
    assert "96" in markdown and "96.0" not in markdown and "nan" not in markdown
