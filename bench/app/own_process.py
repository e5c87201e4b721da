"""The cyclic garbage collector of a process that is the ``bench`` command itself (the console script, ``python -m
bench``), not a library call from a test or another program, which keep their GC as it is.

Why: torch and pandas leave a few hundred thousand objects alive until the process exits. Each full collection
walks them all and frees nothing: several collections during torch's import, more during ``torch._dynamo``'s
(which the optimizer's constructor imports), and the last ones at exit, a second or more of a smoke run's wall
time on a 2-core machine. So the command imports with the GC off and then freezes those objects out of its sight
(``gc.freeze``), and freezes everything once more at exit.
"""
from __future__ import annotations

import atexit
import contextlib
import gc


@contextlib.contextmanager
def imports_without_gc(own_process: bool):
    """Within the block, no cyclic GC, and the objects it created frozen afterwards; a no-op in a caller's process."""
    if not own_process:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def import_the_engine(own_process: bool):
    """What every run imports, with the command's GC held off: torch, pandas, bench's run, and ``torch._dynamo``,
    which torch's optimizer constructor imports in every run anyway. Once per process, before the first run is
    built: the freeze would keep a finished run's uncollected cycles alive for good."""
    with imports_without_gc(own_process):
        import torch._dynamo  # noqa: F401

        from . import run  # noqa: F401


def freeze_gc_at_exit():
    """Skip the exit's walk over objects the OS frees anyway. Registered before any other exit handler, so it runs
    after all of them."""
    atexit.register(gc.freeze)
