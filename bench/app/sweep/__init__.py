"""Sweeps: a plan of runs with fixed ids (``plan``), read from a TOML file (``toml_file``), executed in this
process K at a time (``in_process``) or by worker processes, Ray or Slurm (``launchers``)."""
