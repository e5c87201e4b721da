"""Claims on shared work that processes on any machine sharing a folder respect (sweep runs)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .atomic_files import CREATE_MODE

# the tokens of the claims this process holds: a claim file naming this process's pid but none of these tokens was
# left by an earlier process that had the same pid (a container restarted, where the sweep is pid 1 again)
_HELD: set[str] = set()


class Claim:
    """An exclusive claim on a piece of work that processes on any machine sharing a folder respect: the claim
    file is created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFSv3+, unlike ``flock``) and holds
    who took it. The holder refreshes its modification time every ``heartbeat`` seconds; a claim whose holder
    is gone (a dead pid on this host, or no heartbeat for ``stale_after`` seconds elsewhere) is taken over.
    """

    def __init__(self, path: str | os.PathLike, heartbeat: float = 30.0, stale_after: float = 300.0):
        self.path, self.heartbeat, self.stale_after = Path(path), heartbeat, stale_after
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the claim; False when a live holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _HELD.add(self.token)  # before the file exists: this process's other threads judge it by its token
        for _ in range(2):  # a second try after taking over a stale claim
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, CREATE_MODE)
            except FileExistsError:
                if not self._take_over_stale():
                    break
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                                    "since": time.time()}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, name=f"claim {self.path.name}", daemon=True)
            self._thread.start()
            return True
        _HELD.discard(self.token)
        return False

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_claim(self.path)
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        _HELD.discard(self.token)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _take_over_stale(self) -> bool:
        seen = read_claim(self.path)
        if seen is None:  # released since our try: try again, never move aside a claim we did not judge stale
            return True
        if claim_alive(self.path, seen, self.stale_after):
            return False
        # move the stale file aside (a rename succeeds for one taker only), then check it was the one judged stale
        aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # its holder just released it
        moved = read_claim(aside)
        if moved is not None and moved.get("token") != seen.get("token"):
            with contextlib.suppress(OSError):  # a fresh claim taken meanwhile: put it back, never over another
                os.link(aside, self.path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True


def read_claim(path: str | os.PathLike) -> dict | None:
    """A claim file's holder, or None when there is none (a half-written file reads as an anonymous holder)."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def claim_alive(path: str | os.PathLike, holder: dict, stale_after: float = 300.0) -> bool:
    """Whether the process that holds the claim at ``path`` still runs: on this host, its pid; elsewhere, a
    heartbeat within ``stale_after`` seconds. A claim with this process's own pid is alive only while this process
    holds it: the pid of a process that died can come back as this one's."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if holder["pid"] == os.getpid():
            return holder.get("token") in _HELD
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - os.stat(path).st_mtime < stale_after
    except FileNotFoundError:
        return False
