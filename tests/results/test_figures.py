"""bench.results.figures draws from what it is given: it reads no run folder and imports no report code, and a
figure with nothing to draw writes no file (the report leaves its link out)."""
from pathlib import Path

import pandas as pd

from bench.results import figures
from bench.results.columns import LABEL
from tests.support.imports import import_statements


def test_figures_import_neither_the_report_nor_a_reader_of_run_folders():
    """report.py imports figures.py (one way, no cycle), and reading run files stays the report's job."""
    source = Path(figures.__file__).read_text()
    imported = {module for module, _ in import_statements(source, "bench.results")}
    readers = {"bench.results.report", "bench.results.run_folder", "bench.results.lookup", "bench.results.runs_csv"}
    assert not imported & readers


def test_each_figure_with_nothing_to_draw_says_so_and_writes_no_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    colors = figures.config_colors(["a"])
    empty = {
        "curves": figures.plot_overlaid_curves([], colors, tmp_path / "curves.png"),
        "confusion": figures.plot_confusions({}, tmp_path / "confusion.png"),
        "per_class": figures.plot_per_class(None, colors, tmp_path / "per_class.png"),
        "scatter": figures.plot_scatter(pd.DataFrame({LABEL: ["a"], "zeroshot_top1": [0.5]}), "train_seconds",
                                        "training time (s)", colors, tmp_path / "scatter.png"),
        "differences": figures.plot_differences(pd.DataFrame(), tmp_path / "differences.png"),
        "robustness": figures.plot_robustness(pd.DataFrame({LABEL: ["a"], "zeroshot_top1_mean": [0.5]}), colors,
                                              tmp_path / "robustness.png"),
        "time": figures.plot_accuracy_against_time([], set(), "zeroshot_top1", colors, tmp_path / "time.png"),
    }
    assert not any(empty.values()), empty
    assert list(tmp_path.iterdir()) == []


def test_a_drawn_figure_is_a_png_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    history = pd.DataFrame({"epoch": [1, 2], "step": [4, 8], "train_loss": [2.0, 1.5], "zeroshot_top1": [0.3, 0.4]})
    path = tmp_path / "curves.png"
    assert figures.plot_overlaid_curves([("a", history, None)], figures.config_colors(["a"]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_panels_of_many_configurations_wrap_into_rows_of_four(tmp_path):
    """Nine configurations' confusion matrices: three rows of at most four panels, not one figure nine panels
    (some 50 inches) wide whose titles run into each other."""
    import numpy as np
    from PIL import Image

    import matplotlib

    matplotlib.use("Agg")
    classes = ["a", "b", "c"]
    confusions = {f"configuration {i} " + "x" * 40: (np.eye(3, dtype=int) * 5 + 1, classes) for i in range(9)}
    assert figures.plot_confusions(confusions, tmp_path / "confusion.png")
    with Image.open(tmp_path / "confusion.png") as img:
        width, height = img.size
    dpi = 120  # figures._save's
    assert width < (figures.PANELS_PER_ROW + 1) * 5.4 * dpi, width  # four panels a row, five would not fit
    assert height > 2 * 5.2 * dpi * 0.8, height  # three rows of panels
