"""The application layer: one run as phases (``run``), resume, sweeps, evaluating saved checkpoints, the
catalog ``bench list`` shows, and the input checks run before any work. Imports everything below the CLI.
"""
