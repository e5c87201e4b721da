"""The one home of the test suite's plain helpers; fixtures live in tests/conftest.py.

Test modules import helpers from here and never from one another (tests/test_suite_layout.py checks it), so a
test file can move or go without breaking another. One module per job:

- ``processes``: ``bench`` as a child process the way a user starts it, free ports for a rendezvous
- ``runs``: the tiny run flags, one finished tiny run, stopping a run at a chosen step, comparing runs bit for
  bit, snapshots of a folder
- ``models``: a tiny float64 CLIP, its prompt tables and batches, a few training steps
- ``fake_results``: results folders as ``bench run`` leaves them, written without training
- ``sweep_files``: sweep files of the tiny synthetic runs
- ``plugins``: plugin source files and installed-looking distributions
- ``imports``: a module's import statements, relative ones resolved (the layout tests)
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
