"""A byte pump between the proxy's stdin/stdout and a socket (TCP, or the srun transport's
unix socketpair; on the node, the bridge's stdio and the session's unix socket).

Two flows, each from one fd to another: up (stdin -> socket) and down (socket -> stdout).
OpenSSH gives a ProxyCommand pipes, so on Linux (Python 3.10+) each flow is ``os.splice``: the
kernel moves pages pipe -> socket and socket -> pipe, and no byte passes through Python. Where
splice is unavailable (older Python, not Linux, neither end a pipe, or the kernel says EINVAL) a
flow copies through a bounded buffer instead; the semantics are the same either way:

- event-driven (poll), non-blocking on every side;
- backpressure: a flow reads its source only while its destination can take more (splice: the
  source waits until the destination is writable again; copy: a bounded buffer);
- half-close: stdin EOF becomes ``shutdown(SHUT_WR)`` on the socket; the socket's EOF ends the
  pump once everything received is on stdout (sshd never half-closes), and the proxy's exit
  closes stdout;
- when one side goes away (the ssh client stops reading, the peer resets) the pump ends;
- ``TCP_NODELAY`` on a TCP socket;
- a SIGPIPE sent to the proxy (not one the kernel raised for a write to a closed pipe or socket,
  which the flows handle as EPIPE) ends the pump at once; SIGHUP and SIGTERM keep their default
  action (the proxy ends; the job is never touched once its session answers).

Sizes (measured on the 2-core test machine, 1 GiB socket -> pipe through this pump): a splice
moves at most one pipe's capacity per call, so the stdio pipes are grown to :data:`PIPE_SIZE`
(1 MiB, the unprivileged maximum) where the kernel allows it: 0.35 s/GiB against 0.55 s/GiB with
the default 64 KiB. Socket buffers are left to the kernel's autotuning.
"""

from __future__ import annotations

import _socket  # the constants, without socket's import (~5 ms)
import errno
import os
import select
import stat
import sys

TYPE_CHECKING = False  # not typing's
if TYPE_CHECKING:
    import signal as _signal
    from _socket import socket as Socket
else:
    import _signal  # signal's functions without its enums (~3 ms of the fast path)

CHUNK = 65536
LIMIT = 4 * CHUNK  # the copy flow's buffer
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ target for the stdin/stdout pipes (unprivileged maximum)
SPLICE_CHUNK = PIPE_SIZE
_F_SETPIPE_SZ = 1031  # Linux fcntl; not exported by Python's fcntl module before 3.10

R = select.POLLIN
W = select.POLLOUT
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT,
         errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EIO)

MODES = ("auto", "splice", "copy")


def splice_available() -> bool:
    return sys.platform == "linux" and hasattr(os, "splice")


def is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a larger pipe buffer (fewer, larger splices); silently keep the old one."""
    import fcntl

    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass  # not allowed (over the user's pipe quota): the old size works too


class _Flow:
    """Bytes from ``src`` to ``dst``, by splice or by copy through ``buf``.

    ``buf`` also holds bytes that must go first (the client's bytes read while waiting); a
    splicing flow sends those before it splices. A splicing flow waits for its source to be
    readable; when the splice then finds the destination full (EAGAIN with a readable source,
    and we are the source's only reader), it waits for the destination instead.
    """

    def __init__(self, src: int, dst: int, *, use_splice: bool, initial: bytes = b"") -> None:
        self.src, self.dst, self.use_splice = src, dst, use_splice
        self.buf = bytearray(initial)
        self.src_open = True  # False once the source said EOF (or failed)
        self.src_eof = False  # the source itself said EOF
        self.dst_gone = False  # the destination (or the source) failed: nothing more moves
        self.blocked = False  # splice: the source has data, the destination is full
        self.moved = 0
        self.epipe = False  # a write failed with EPIPE (the kernel's SIGPIPE comes with it)

    @property
    def done(self) -> bool:
        return self.dst_gone or (not self.src_open and not self.buf)

    def wants(self) -> list[tuple[int, int]]:
        if self.dst_gone:
            return []
        out = []
        if self.buf:
            out.append((self.dst, W))
        if self.src_open:
            if self.use_splice:
                if not self.buf:
                    out.append((self.dst, W) if self.blocked else (self.src, R))
            elif len(self.buf) < LIMIT:
                out.append((self.src, R))
        return out

    def ready(self, fd: int, events: int) -> None:
        """React to poll ``events`` on ``fd`` (only those this flow asked for)."""
        if self.done:
            return
        hangup = events & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
        if fd == self.dst and (events & W or hangup) and (self.buf or self.blocked):
            if self.buf:
                self._write()
            elif self.blocked:
                self._splice()
        if fd == self.src and (events & R or hangup) and self.src_open and not self.dst_gone:
            if self.use_splice and not self.buf and not self.blocked:
                self._splice()
            elif not self.use_splice and len(self.buf) < LIMIT:
                self._read()
                if self.buf:
                    self._write()  # the destination is usually writable: save a poll round

    def _splice(self) -> None:
        try:
            n = os.splice(self.src, self.dst, SPLICE_CHUNK,
                          flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            # The source was readable, so the destination is full: wait for it.
            self.blocked = True
            return
        except InterruptedError:
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL and not self.moved:
                self.use_splice = False  # this pair of fds cannot splice: copy instead
                self.blocked = False
                return
            self._failed(exc)
            return
        self.blocked = False
        if n == 0:
            self.src_open = False
            self.src_eof = True
        self.moved += n

    def _read(self) -> None:
        try:
            data = os.read(self.src, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(exc)
            return
        if data:
            self.buf += data
        else:
            self.src_open = False
            self.src_eof = True

    def _write(self) -> None:
        try:
            n = os.write(self.dst, self.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(exc)
            return
        del self.buf[:n]
        self.moved += n

    def _failed(self, exc: OSError) -> None:
        if exc.errno not in _GONE and exc.errno != errno.EBADF:
            raise exc
        self.epipe = self.epipe or exc.errno == errno.EPIPE
        self.dst_gone = True
        self.src_open = False
        self.buf.clear()


def choose(in_fd: int, out_fd: int, mode: str = "auto") -> tuple[bool, bool]:
    """Whether the up and down flows splice: ``auto`` where possible, or forced."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "copy" or not splice_available():
        return False, False
    if mode == "splice":
        return True, True
    return is_pipe(in_fd), is_pipe(out_fd)


def _ignore(signum: int, frame: object) -> None:
    """A Python-level handler, so the signal reaches the wakeup fd (SIG_IGN would not)."""


def _watch_sigpipe() -> tuple[int, int, object, int] | None:
    """(read fd, write fd, old handler, old wakeup fd) of a SIGPIPE wakeup pipe; None outside
    the main thread (where signals cannot be handled)."""
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    try:
        old_handler = _signal.signal(_signal.SIGPIPE, _ignore)
    except ValueError:
        os.close(rfd)
        os.close(wfd)
        return None
    try:
        old_wakeup = _signal.set_wakeup_fd(wfd)
    except ValueError:
        _signal.signal(_signal.SIGPIPE, old_handler)
        os.close(rfd)
        os.close(wfd)
        return None
    return rfd, wfd, old_handler, old_wakeup


def _unwatch(watch: tuple[int, int, object, int] | None) -> None:
    if watch is None:
        return
    rfd, wfd, old_handler, old_wakeup = watch
    _signal.set_wakeup_fd(old_wakeup)
    _signal.signal(_signal.SIGPIPE, old_handler)  # type: ignore[arg-type]
    os.close(rfd)
    os.close(wfd)


def splice(in_fd: int, out_fd: int, sock: Socket, initial: bytes = b"",
           *, mode: str = "auto") -> bool:
    """Pump bytes until the socket side has closed and its data is written (or stdout is gone,
    or someone sent the proxy SIGPIPE).

    Returns whether the session's side closed first, while ssh still had its stdin open (a
    session going away, not ssh hanging up): the caller may then look for the session's note.

    ``mode``: ``auto`` (splice each flow whose stdio end is a pipe, copy the others),
    ``splice`` or ``copy`` (force one; a forced splice still copies after an EINVAL).
    """
    watch = _watch_sigpipe()
    try:
        return _pump(in_fd, out_fd, sock, initial, mode, None if watch is None else watch[0])
    finally:
        _unwatch(watch)


def _sent_sigpipe(wake_fd: int, flows: tuple[_Flow, _Flow]) -> bool:
    """Whether a SIGPIPE arrived that no EPIPE of ours explains (so someone sent it)."""
    try:
        signums = os.read(wake_fd, 256)
    except (BlockingIOError, InterruptedError):
        return False
    return _signal.SIGPIPE in signums and not any(flow.epipe for flow in flows)


def _pump(in_fd: int, out_fd: int, sock: Socket, initial: bytes, mode: str,
          wake_fd: int | None) -> bool:
    if sock.family != _socket.AF_UNIX:  # the srun transport's socketpair and bridge: no TCP
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    for fd in (in_fd, out_fd):
        os.set_blocking(fd, False)
    sfd = sock.fileno()
    splice_up, splice_down = choose(in_fd, out_fd, mode)
    if splice_up:
        grow_pipe(in_fd)
    if splice_down:
        grow_pipe(out_fd)
    up = _Flow(in_fd, sfd, use_splice=splice_up, initial=initial)
    down = _Flow(sfd, out_fd, use_splice=splice_down)
    shut_wr = False
    poller = select.poll()
    registered: dict[int, int] = {}
    if wake_fd is not None:
        poller.register(wake_fd, R)
    while not down.done:
        if up.done and not shut_wr:
            if up.dst_gone:
                pass  # the socket refused our bytes: it is going away anyway
            else:
                try:
                    sock.shutdown(_socket.SHUT_WR)
                except OSError:
                    pass  # the session went away meanwhile: its EOF ends the pump
            shut_wr = True
        wanted: dict[int, int] = {}
        for flow in (up, down):
            for fd, ev in flow.wants():
                wanted[fd] = wanted.get(fd, 0) | ev
        for fd in set(registered) | set(wanted):
            ev = wanted.get(fd, 0)
            if registered.get(fd, 0) == ev:
                continue
            if not ev:
                poller.unregister(fd)
                del registered[fd]
            elif fd in registered:
                poller.modify(fd, ev)
                registered[fd] = ev
            else:
                poller.register(fd, ev)
                registered[fd] = ev
        if not registered:
            break
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == wake_fd:
                if _sent_sigpipe(wake_fd, (up, down)):
                    return False
                continue
            for flow in (up, down):
                for want_fd, want_ev in flow.wants():
                    if want_fd == fd:
                        flow.ready(fd, ev & (want_ev | select.POLLHUP | select.POLLERR
                                             | select.POLLNVAL))
                        break
    return not up.src_eof
