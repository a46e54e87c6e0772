"""Connect to the first live endpoint (shared by the lean entry and the proxy)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from interactive_slurm.endpoint import Endpoint

CONNECT_TIMEOUT = 5.0


def open_connection(ep: Endpoint, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A TCP connection to the session's sshd; raises OSError (callers may want the reason)."""
    return socket.create_connection((ep.host, ep.port), timeout=timeout)


def connect(ep: Endpoint, timeout: float = CONNECT_TIMEOUT) -> socket.socket | None:
    try:
        return open_connection(ep, timeout)
    except OSError:
        return None


def connect_first(endpoints: Iterable[Endpoint]) -> socket.socket | None:
    for ep in endpoints:
        sock = connect(ep)
        if sock is not None:
            return sock
    return None
