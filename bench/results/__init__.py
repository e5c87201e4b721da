"""Result tables: ``runs.csv`` and the per-run files, the tidy tables, the runs a user names (``lookup``) and the
runs without a row (``unfinished``), which metrics are accuracies and the options giving a number in a metric's
unit (``metric_units``, without pandas), comparisons with their statistics, equivalence tests (``equivalence``),
time to target (``time_to_target``, ``survival``), reports (``report``) and the figures drawn for them
(``figures``), and live curves (``loggers``). Imports the base modules and the quality target's metric names
(``bench.evaluation.target``): pandas, not the model or the engine.
"""
