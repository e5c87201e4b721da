"""Result tables: ``runs.csv`` and the per-run files, the tidy tables, sources, comparisons with their
statistics, and reports. Imports only the base modules (pandas, not the model or the engine).
"""
