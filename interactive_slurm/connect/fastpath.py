"""Connect to a session through its keyhole (shared by the reuse path, the proxy and `connect`).

A record is used only when its lease is fresh and the port proves the record's secret; anything
else (expired lease, refused, silent, an impostor, a wrong proof, a corrupt record) means the
record is stale or squatted: it is removed (if it is still the same file), one line says so on
stderr, and the caller goes on (the next record, or the slow path) in the same connect.
Imported by the fast path: keep its imports lean.
"""

from __future__ import annotations

import _socket
import os
import sys

from interactive_slurm.connect import endpoint, keyhole
from interactive_slurm.connect.endpoint import Endpoint

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from _socket import socket as Socket
    from collections.abc import Iterable

CONNECT_TIMEOUT = 3.0


class StaleEndpoint(Exception):
    """The record's port is not its session's (or the lease ran out); ``str`` says why."""


def connect_tcp(host: str, port: int, timeout: float) -> Socket:
    """``socket.create_connection`` on ``_socket`` (importing socket costs the fast path ~5 ms):
    each address of ``host`` in turn; the last failure is raised."""
    error: OSError = OSError(f"{host}: no address")
    # An ASCII name goes as bytes: a str goes through the idna codec (re, unicodedata: ~8 ms).
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0,
                                                               _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def open_connection(ep: Endpoint, timeout: float = CONNECT_TIMEOUT) -> Socket:
    """A TCP connection to the session that passed the keyhole, ready for SSH bytes.

    Raises StaleEndpoint when the port is not that session's; OSError passes through only for
    a failure that says nothing about the record (none so far: every failure is the record's).
    """
    if endpoint.expired(ep):
        raise StaleEndpoint("its lease ran out (the session stopped renewing it)")
    try:
        sock = connect_tcp(ep.host, ep.port, timeout)
    except OSError as exc:
        raise StaleEndpoint(f"{ep.host}:{ep.port}: {exc.strerror or exc}") from exc
    try:
        keyhole.prove(sock, ep.secret_bytes(), ep.job_id, keyhole.DEADLINE)
    except (OSError, keyhole.KeyholeError) as exc:
        sock.close()
        raise StaleEndpoint(f"{ep.host}:{ep.port}: {exc}") from exc
    return sock


def say_dropped(job_id: str, why: str) -> None:
    sys.stderr.write(f"interactive-slurm: dropped the stale record of job {job_id} ({why})\n")
    sys.stderr.flush()


def drop(ep: Endpoint, why: str) -> None:
    if endpoint.discard(ep):
        say_dropped(ep.job_id, why)


def drop_broken(broken: Iterable[str]) -> None:
    for path in broken:
        try:
            os.unlink(path)
        except OSError:
            continue
        say_dropped(os.path.basename(os.path.dirname(path)), "unreadable or from an older version")


def connect_first(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, Socket] | None:
    """The first endpoint whose session proves itself; the stale ones met on the way are dropped."""
    for ep in endpoints:
        try:
            return ep, open_connection(ep)
        except StaleEndpoint as exc:
            drop(ep, str(exc))
    return None


def find_and_connect(
    kind: str, profile: str, container: str
) -> tuple[Endpoint, Socket] | None:
    broken: list[str] = []
    found = endpoint.find(kind, profile, container, broken=broken)
    drop_broken(broken)
    return connect_first(found)
