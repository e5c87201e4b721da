"""Sweeps: a plan of runs with fixed ids (``plan``), read from a TOML file (``toml_file``) or the flags' cross
product as configs (``points``), placed and checked against this machine (``placement``), executed in this
process K at a time (``in_process``) or by worker processes, Ray or Slurm (``launchers``), the transfer
evaluations finished runs lack (``backfill``); ``command`` is ``bench sweep`` from its parsed options. Imports the
app layer and everything below it."""
