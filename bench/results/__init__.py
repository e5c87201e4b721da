"""Result tables: ``runs.csv`` and the per-run files, the tidy tables, sources, comparisons with their
statistics, and reports. Imports the base modules and the quality target's metric names
(``bench.evaluation.target``): pandas, not the model or the engine.
"""
