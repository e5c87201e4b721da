"""Import each named module in a process of its own: ``python -m tests.support.import_each MODULE...``.

One fresh interpreter per module costs about 2 s each (torch's import alone), minutes for bench's ~90 modules.
So this fresh interpreter imports only the libraries nearly every module imports whole (torch, numpy, pandas)
and forks a child per module: each child starts with no module of the project imported, so a module that
imports only because another one ran first still fails. Prints one line per module that fails to import;
exits 1 if any does.
"""
import importlib
import os
import sys

import numpy  # noqa: F401
import pandas  # noqa: F401
import torch  # noqa: F401


def import_in_child(module: str) -> str:
    """'' if ``module`` imports in a forked child, else one line naming it and its error."""
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
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if not message and status != 0:
        message = f"{module}: the importing process ended with status {status}"
    return message


def main(modules: list[str]) -> int:
    failed = [line for line in map(import_in_child, modules) if line]
    print("\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
