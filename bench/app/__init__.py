"""The application layer: one run as phases (``run``), resume, sweeps, evaluating saved checkpoints and
pretrained models, zero-shot transfer to other datasets (``transfer``), a registered dataset's split, template sets
and evaluation target looked up by name (``dataset_lookup``), the catalog ``bench list`` shows, the checks of every
option run before any work (``validation``), and what each command does with its parsed options (``run_command``,
``sweep.command``, ``eval_command``, ``tables``), so the CLI only declares and wires. Imports everything below the
CLI.
"""
