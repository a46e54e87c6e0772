"""A byte pump between the proxy's stdin/stdout and a TCP socket.

Event-driven (poll), non-blocking on every side, with backpressure (a side is read only while
the buffer toward the other side has room) and half-close both ways: stdin EOF becomes
``shutdown(SHUT_WR)`` on the socket; the socket's EOF ends the pump once everything received is
written to stdout (sshd never half-closes, so the stdin side is done then too), and the proxy's
exit closes stdout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket

CHUNK = 65536
LIMIT = 4 * CHUNK


class _Interest:
    """Keeps a selector's registrations in line with what each side wants now."""

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        self.current: dict[int, int] = {}

    def want(self, fd: int, events: int) -> None:
        old = self.current.get(fd, 0)
        if events == old:
            return
        if not events:
            self.sel.unregister(fd)
            del self.current[fd]
        elif not old:
            self.sel.register(fd, events)
            self.current[fd] = events
        else:
            self.sel.modify(fd, events)
            self.current[fd] = events


def splice(in_fd: int, out_fd: int, sock: socket.socket, initial: bytes = b"") -> None:
    """Pump bytes until the socket side has closed and its data is written (or stdout is gone)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    for fd in (in_fd, out_fd):
        os.set_blocking(fd, False)
    sfd = sock.fileno()
    up = bytearray(initial)  # stdin -> socket
    down = bytearray()  # socket -> stdout
    in_open, sock_open, out_open, shut_wr = True, True, True, False
    R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
    with selectors.PollSelector() as sel:
        interest = _Interest(sel)
        while sock_open or (down and out_open):
            if not in_open and not up and not shut_wr:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                shut_wr = True
            interest.want(in_fd, R if in_open and len(up) < LIMIT else 0)
            interest.want(out_fd, W if down and out_open else 0)
            sock_events = (R if sock_open and len(down) < LIMIT else 0) | (W if up else 0)
            interest.want(sfd, sock_events)
            if not interest.current:
                break
            for key, events in sel.select():
                fd = key.fd
                if fd == in_fd and events & R:
                    data = _read(in_fd)
                    if data is None:
                        continue
                    if data:
                        up += data
                    else:
                        in_open = False
                if fd == sfd and events & W and up:
                    try:
                        sent = sock.send(up)
                        del up[:sent]
                    except BlockingIOError:
                        pass
                    except OSError:  # peer reset: nothing more goes up
                        up.clear()
                        in_open = False
                if fd == sfd and events & R:
                    try:
                        chunk = sock.recv(CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        down += chunk
                    else:
                        sock_open = False
                if fd == out_fd and events & W and down:
                    try:
                        written = os.write(out_fd, down)
                        del down[:written]
                    except BlockingIOError:
                        pass
                    except OSError:  # the ssh client went away
                        out_open = False
                        down.clear()
                        sock_open = False


def _read(fd: int) -> bytes | None:
    """Read a chunk; None when nothing is there after all, b"" at EOF or on error."""
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return None
        return b""
