"""Child processes: ``bench`` launched as a user launches it, and free ports for a process group's rendezvous."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from . import REPO


def bench_env(default_threads: bool = False) -> dict:
    """The environment of a child ``bench``: this checkout first on the path (ahead of the caller's PYTHONPATH,
    which is kept), no installed third-party plugins, one torch thread or, with ``default_threads``, torch's
    default thread count (one per core), as a user's shell gives it."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "BENCH_LOAD_PLUGINS": ""}
    if default_threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)
    return env


def spawn_bench(*args, default_threads: bool = False, **kwargs) -> subprocess.Popen:
    """``python -m bench ARGS`` in a child (environment as :func:`bench_env`), stdout and stderr piped as text."""
    return subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], env=bench_env(default_threads),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
