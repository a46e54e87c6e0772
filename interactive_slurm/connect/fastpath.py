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

from interactive_slurm.connect import endpoint, keyhole, transport
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


def open_connection(ep: Endpoint, timeout: float = CONNECT_TIMEOUT,
                    configured: str = "auto") -> Socket:
    """A connection to the session that passed the keyhole, ready for SSH bytes.

    How it gets there (:mod:`transport`): the record's own ``transport`` (its profile's), else
    ``configured`` (config.toml's). Raises StaleEndpoint when the session does not prove
    itself that way (or the lease ran out); for ``tcp`` the reason names the firewall case.
    """
    if endpoint.expired(ep):
        raise StaleEndpoint("its lease ran out (the session stopped renewing it)")
    how = ep.transport or configured
    if how == "auto":
        how = transport.remembered(ep) or "auto"
    if how == "srun":
        return _through_srun(ep, "")
    try:
        sock = connect_tcp(ep.host, ep.port, transport.AUTO_TCP_TIMEOUT if how == "auto"
                           else timeout)
    except OSError as exc:
        why = f"TCP to {ep.host}:{ep.port}: {_reason(exc)}"
        if how == "auto" and ep.node:
            return _through_srun(ep, why)
        hint = ("; if a firewall lets only Slurm's traffic reach the compute nodes, set "
                "transport = \"auto\" or \"srun\" in config.toml" if how == "tcp" else "")
        raise StaleEndpoint(why + hint) from exc
    _prove(ep, sock, keyhole.DEADLINE)
    return sock


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError) or exc.errno is None:
        return "no answer (filtered?)"
    return exc.strerror or str(exc)


def _prove(ep: Endpoint, sock: Socket, deadline: float) -> None:
    try:
        keyhole.prove(sock, ep.secret_bytes(), ep.job_id, deadline)
    except (OSError, keyhole.KeyholeError) as exc:
        sock.close()
        raise StaleEndpoint(f"{ep.host}:{ep.port}: {exc}") from exc


def _through_srun(ep: Endpoint, tcp_failed: str) -> Socket:
    """The ``srun`` transport; ``tcp_failed``: why ``auto``'s TCP try failed ("": chosen)."""
    before = f"{tcp_failed}; " if tcp_failed else ""
    try:
        sock = transport.open_srun(ep)
    except OSError as exc:
        raise StaleEndpoint(f"{before}srun: {exc.strerror or exc}") from exc
    try:
        _prove(ep, sock, transport.SRUN_DEADLINE)
    except StaleEndpoint as exc:
        raise StaleEndpoint(f"{before}through srun: {exc}") from exc
    if tcp_failed:
        transport.remember(ep, "srun")
        transport.say_chosen(ep, tcp_failed)
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


def connect_first(endpoints: Iterable[Endpoint], configured: str = "auto",
                  ) -> tuple[Endpoint, Socket] | None:
    """The first endpoint whose session proves itself; the stale ones met on the way are dropped."""
    for ep in endpoints:
        try:
            return ep, open_connection(ep, configured=configured)
        except StaleEndpoint as exc:
            drop(ep, str(exc))
    return None


def find_and_connect(
    kind: str, profile: str, container: str, configured: str = "auto",
) -> tuple[Endpoint, Socket] | None:
    broken: list[str] = []
    found = endpoint.find(kind, profile, container, broken=broken)
    drop_broken(broken)
    return connect_first(found, configured)
