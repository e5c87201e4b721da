"""``--ray-address``: its form, and whether anything answers there, checked before ``ray.init``.

Ray retries an address that does not answer for a long time (``127.0.0.1:1``: still retrying, with a warning
every few seconds, after 40 s), so an unreachable cluster looked like a sweep that hangs. A TCP connect with a
short timeout tells in a few seconds, and the sweep stops with one line naming the address and the fix.

The forms are Ray's: ``HOST:PORT`` (the head node's GCS, 6379 unless ``ray start --port`` changed it),
``ray://HOST[:PORT]`` (Ray Client, 10001 by default) and ``auto`` (``RAY_ADDRESS`` if set, as ``ray.init``
reads it, else the cluster ``ray start`` started on this machine). Another protocol (``anyscale://``) is left
to Ray.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ...errors import BenchError

CONNECT_SECONDS = 5.0  # a head that answers at all accepts a TCP connection well within this
CLIENT_PORT = 10001  # Ray Client's default port, when a ray:// address leaves it out
FORMS = "auto, HOST:PORT or ray://HOST:PORT"


@dataclass(frozen=True)
class Endpoint:
    """Where ``ray.init`` will connect: ``host``:``port``, and how the messages name the address."""

    host: str
    port: int
    shown: str  # ``--ray-address 10.0.0.5:6379`` or ``--ray-address auto (RAY_ADDRESS=10.0.0.5:6379)``


def check_form(address: str, label: str):
    """A one-line error unless ``address`` is auto, local, HOST:PORT, ray://HOST[:PORT] or another protocol's."""
    address = address.strip()
    if address not in ("auto", "local") and _ours(address):
        _endpoint(address, f"{label} {address}")


def check_reachable(address: str | None, label: str, timeout: float = CONNECT_SECONDS):
    """A one-line error unless something accepts a TCP connection where ``address`` points. None and
    ``local`` start a Ray of this machine: nothing to reach."""
    endpoint = resolve(address, label)
    if endpoint is None:
        return
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return
    except socket.gaierror:
        why = f"there is no host {endpoint.host!r}"
    except TimeoutError:
        why = f"nothing answered within {timeout:g} s"
    except ConnectionRefusedError:
        why = "nothing listens there (connection refused)"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    raise BenchError(f"{endpoint.shown}: cannot reach a Ray cluster at {endpoint.host}:{endpoint.port}, {why}; "
                     f"start the cluster (ray start --head), correct the address, or leave {label} out to start a "
                     f"local Ray for the sweep")


def resolve(address: str | None, label: str) -> Endpoint | None:
    """The endpoint ``ray.init(address=address)`` connects to; None where Ray starts a local instance or
    finds the address itself (another protocol, a Ray without the search bench reads)."""
    if address is None or address.strip() == "local":
        return None
    address = address.strip()
    if address != "auto":
        return _endpoint(address, f"{label} {address}") if _ours(address) else None
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":  # ray.init reads it before anything else for auto
        shown = f"{label} auto (RAY_ADDRESS={env})"
        return _endpoint(env, shown) if _ours(env) else None
    found = _started_here()
    if found is None:
        return None
    if not found:
        raise BenchError(f"{label} auto: no Ray cluster is running on this machine and RAY_ADDRESS is not set; start "
                         f"one (ray start --head), give its HOST:PORT, or leave {label} out to start a local Ray for "
                         f"the sweep")
    return _endpoint(found, f"{label} auto ({found})")


def _started_here() -> str | None:
    """The address ``auto`` finds without ``RAY_ADDRESS``: the last ``ray start`` on this machine, else a
    running cluster; "" when there is none; None when this Ray does not offer the search (Ray then does it)."""
    try:  # Ray's own search for auto, so the check looks where ray.init will connect
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address("auto") or ""
    except ConnectionError:  # "Could not find any running Ray instance"
        return ""


def _ours(address: str) -> bool:
    """HOST:PORT or ray://: the forms whose host and port bench reads (another protocol is Ray's to read)."""
    return "://" not in address or address.startswith("ray://")


def _endpoint(address: str, shown: str) -> Endpoint:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST[:PORT]`` as host and port; a one-line error otherwise."""
    client = address.startswith("ray://")
    rest = address[len("ray://"):] if client else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or "]" in port:  # no port (or only an IPv6 address's colons)
        host, port = rest, str(CLIENT_PORT) if client else ""
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"{shown}: not a Ray address; give {FORMS} (a head node's GCS port is 6379 unless "
                         f"ray start --port changed it)")
    return Endpoint(host, int(port), shown)
