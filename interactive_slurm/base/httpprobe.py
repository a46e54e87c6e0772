"""Does a web app answer? One HTTP/1.1 request on a unix socket or a TCP address, its status.

Used in the job (is the app up behind its socket?) and on the laptop (does it answer through the
forward?). Standard library only, no redirects followed: the status of the one request is the
answer.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

_STATUS_RE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])[ \r\n]")


def request_bytes(path: str, headers: Mapping[str, str] | None = None,
                  host: str = "127.0.0.1") -> bytes:
    """A GET of ``path`` that asks the server to close the connection after its answer."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept: */*",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_status(head: bytes) -> int | None:
    """The status code of a response's first line; None when it is not HTTP."""
    m = _STATUS_RE.match(head)
    return int(m.group(1)) if m else None


def status(address: str | tuple[str, int], path: str, *, headers: Mapping[str, str] | None = None,
           timeout: float = 10.0, host: str = "127.0.0.1") -> int | None:
    """The HTTP status of GET ``path`` at ``address`` (a unix socket's path, or (host, port));
    None when nothing answers there or the answer is not HTTP."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request_bytes(path, headers, host))
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    return parse_status(head)
