"""Import each named module in a process of its own: ``python -m tests.support.import_each MODULE...``.

One fresh interpreter per module costs about 2 s each (torch's import alone), minutes for bench's ~110 modules.
So this fresh interpreter imports only the libraries nearly every module imports whole (torch, numpy, pandas) or
several import at a cost (scipy.stats, 0.8 s in each of the results modules), and forks a child per module: each
child starts with no module of the project imported, so a module that imports only because another one ran first
still fails. As many children import at once as there are cores (the check is in the quick tier, where one at a
time took 16 s on two cores). Prints one line per module that fails to import, in the order given; exits 1 if any
does.
"""
import collections
import importlib
import os
import sys

import numpy  # noqa: F401
import pandas  # noqa: F401
import scipy.stats  # noqa: F401
import torch  # noqa: F401


def start_child(module: str) -> tuple[str, int, int]:
    """Fork a child that imports ``module`` and writes to a pipe what went wrong, if anything: (module, its pid,
    the pipe's read end)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, leave without running the parent's cleanup
        os.close(read)
        try:
            importlib.import_module(module)
            message = ""
        except BaseException as exc:
            message = f"{module}: {type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)  # so the pipe ends when the child does, and later children do not hold it open
    return module, pid, read


def finish_child(module: str, pid: int, read: int) -> str:
    """'' if the child of :func:`start_child` imported ``module``, else one line naming it and its error."""
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if not message and status != 0:
        message = f"{module}: the importing process ended with status {status}"
    return message


def main(modules: list[str]) -> int:
    width = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    running, lines = collections.deque(), []
    for module in modules:
        running.append(start_child(module))
        if len(running) >= width:
            lines.append(finish_child(*running.popleft()))
    lines += [finish_child(*child) for child in running]
    failed = [line for line in lines if line]
    print("\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
