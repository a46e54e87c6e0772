"""splice.py: pipes stand in for the proxy's stdin/stdout (as OpenSSH gives them); a real TCP
server on port 0. Every behaviour is checked for both engines: the zero-copy splice and the
copying pump (forced), plus the automatic choice when stdio is not a pipe."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import pytest

from interactive_slurm.connect import splice as splice_mod
from interactive_slurm.connect.splice import PIPE_SIZE, splice

TIMEOUT = 20.0
MIB = 1 << 20
ENGINES = ["splice", "copy"] if splice_mod.splice_available() else ["copy"]


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF (a timeout raises instead of hanging)."""
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"{thread.name} hung for {TIMEOUT} s"


class End:
    """The ssh client's end of one of the proxy's stdio channels (a pipe or a socketpair)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view[:MIB])
            view = view[n:]

    def read_all(self) -> bytes:
        chunks: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no EOF on the proxy's stdout")
            chunk = os.read(self.fd, MIB)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def read_some(self) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], TIMEOUT)
        assert ready, "nothing arrived"
        return os.read(self.fd, 65536)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


@dataclass
class Server:
    """A one-connection TCP server; ``handler(conn)`` runs in a thread, errors are kept."""

    handler: Callable[[socket.socket], None]
    listener: socket.socket = field(init=False)
    thread: threading.Thread = field(init=False)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.thread = background(self._serve)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                self.handler(conn)
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.listener.getsockname()[:2], timeout=TIMEOUT)

    def finish(self) -> None:
        join(self.thread)
        self.listener.close()
        assert not self.errors, self.errors


@dataclass
class Proxy:
    """splice() running in a thread like the proxy process: stdout closes when it returns."""

    stdin: End  # the ssh client's end: write here
    stdout: End  # the ssh client's end: read here
    thread: threading.Thread
    errors: list[BaseException]
    returned: list[bool] = field(default_factory=list)  # splice's answer: the session closed first


def stdio_pair(kind: str) -> tuple[int, int]:
    """(reader, writer) fds of one channel."""
    if kind == "pipe":
        return os.pipe()
    a, b = socket.socketpair()
    return a.detach(), b.detach()


@contextmanager
def spliced(server: Server, engine: str, initial: bytes = b"", stdio: str = "pipe") -> Iterator[Proxy]:
    stdin_proxy, stdin_client = stdio_pair(stdio)
    stdout_client, stdout_proxy = stdio_pair(stdio)
    sock = server.connect()
    errors: list[BaseException] = []
    returned: list[bool] = []
    mode = "auto" if stdio != "pipe" else engine

    def run() -> None:
        try:
            returned.append(splice(stdin_proxy, stdout_proxy, sock, initial, mode=mode))
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(stdout_proxy)  # the proxy process exits: ssh sees EOF on our stdout
            os.close(stdin_proxy)
            sock.close()

    proxy = Proxy(End(stdin_client), End(stdout_client), background(run), errors, returned)
    try:
        yield proxy
    finally:
        proxy.stdin.close()
        proxy.stdout.close()


def send_then_eof(end: End, data: bytes) -> None:
    end.write_all(data)
    end.close()


def pump_through(server: Server, up: bytes, engine: str, stdio: str = "pipe") -> bytes:
    """Splice ``up`` (then EOF) to ``server``; return everything that came back down."""
    with spliced(server, engine, stdio=stdio) as proxy:
        writer = background(lambda: send_then_eof(proxy.stdin, up))
        got = proxy.stdout.read_all()
        join(writer)
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []
    return got


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def both_ways(up_payload: bytes, down_payload: bytes, engine: str, stdio: str = "pipe") -> None:
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        # Send and receive at once; close only when both are done (a socket EOF ends splice).
        sender = background(lambda: conn.sendall(down_payload))
        received.append(recv_all(conn))
        join(sender)

    got = pump_through(Server(handler), up_payload, engine, stdio)
    assert received == [up_payload]
    assert got == down_payload


def test_5_mib_both_ways_byte_identical(engine: str) -> None:
    both_ways(os.urandom(5 * MIB), os.urandom(5 * MIB), engine)


def test_64_mib_each_way(engine: str) -> None:
    both_ways(os.urandom(64 * MIB), b"", engine)
    both_ways(b"", os.urandom(64 * MIB), engine)


def test_all_256_byte_values_both_ways(engine: str) -> None:
    every = bytes(range(256)) * 4096  # 1 MiB, every value in every position mod 256
    both_ways(every, every[::-1], engine)


def test_5_mib_echo(engine: str) -> None:
    payload = os.urandom(5 * MIB)

    def echo(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data)

    got = pump_through(Server(echo), payload, engine)
    assert got == payload


def test_stdio_that_is_not_a_pipe_falls_back_to_copying() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert splice_mod.choose(a.fileno(), b.fileno()) == (False, False)
    r, w = os.pipe()
    try:
        assert splice_mod.choose(r, w, "copy") == (False, False)
        expected = splice_mod.splice_available()
        assert splice_mod.choose(r, w) == (expected, expected)
    finally:
        os.close(r)
        os.close(w)
    both_ways(os.urandom(3 * MIB), os.urandom(3 * MIB), "auto", stdio="socketpair")


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of auto, splice, copy"):
        splice_mod.choose(0, 1, "fast")


def test_initial_bytes_go_first(engine: str) -> None:
    received: list[bytes] = []
    server = Server(lambda conn: received.append(recv_all(conn)))
    with spliced(server, engine, initial=b"SSH-2.0-OpenSSH_9.2\r\n") as proxy:
        proxy.stdin.write_all(b"after")
        proxy.stdin.close()
        assert proxy.stdout.read_all() == b""
        join(proxy.thread)
    server.finish()
    assert received == [b"SSH-2.0-OpenSSH_9.2\r\nafter"]


def test_stdin_eof_is_a_half_close_and_the_reply_still_arrives(engine: str) -> None:
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        received.append(recv_all(conn))  # returns only when the proxy half-closed
        conn.sendall(b"reply after your EOF")

    server = Server(handler)
    with spliced(server, engine) as proxy:
        proxy.stdin.write_all(b"request")
        proxy.stdin.close()
        assert proxy.stdout.read_all() == b"reply after your EOF"
        join(proxy.thread)
    server.finish()
    assert received == [b"request"]
    assert proxy.errors == []
    assert proxy.returned == [False]  # ssh hung up first: no session note to wait for


def test_server_close_ends_splice_while_stdin_stays_open(engine: str) -> None:
    server = Server(lambda conn: conn.sendall(b"bye"))
    with spliced(server, engine) as proxy:
        # stdin is never closed: the server closing alone must end the splice.
        assert proxy.stdout.read_all() == b"bye"
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []
    assert proxy.returned == [True]  # the session's side closed first


@pytest.mark.parametrize("size", [0, 1, 65536 * 4 + 1, 8 * MIB + 3])
def test_server_close_after_a_large_reply_delivers_it_all(engine: str, size: int) -> None:
    reply = os.urandom(size)

    def handler(conn: socket.socket) -> None:
        conn.sendall(reply)

    server = Server(handler)
    with spliced(server, engine) as proxy:
        assert proxy.stdout.read_all() == reply
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []


def test_splice_ends_when_the_client_stops_reading_stdout(engine: str) -> None:
    stop = threading.Event()

    def flood(conn: socket.socket) -> None:
        chunk = b"x" * 65536
        try:
            while not stop.is_set():
                conn.sendall(chunk)
        except OSError:
            pass  # the proxy went away: expected

    server = Server(flood)
    with spliced(server, engine) as proxy:
        assert proxy.stdout.read_some()  # the flood has started
        proxy.stdout.close()  # the ssh client is gone
        join(proxy.thread)
        stop.set()
    server.finish()
    assert proxy.errors == []


def kernel_buffering() -> int:
    """The most a loopback connection and two stdio pipes can hold with no user-space buffer.

    TCP autotunes a socket's buffers up to the third field of ``tcp_rmem``/``tcp_wmem`` (32 MiB
    and 4 MiB on some kernels), so a fixed bound fails on one machine and passes on another.
    A proxy that buffers in user space takes without end, so ``fill`` never stops and the test
    fails on its deadline instead.
    """
    def most(name: str) -> int:
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            return int(f.read().split()[2])

    return most("tcp_rmem") + most("tcp_wmem") + 2 * PIPE_SIZE + 4 * MIB


def fill(fd: int, seconds: float = 1.0) -> int:
    """Write to non-blocking ``fd`` until it has refused for ``seconds``; bytes accepted."""
    os.set_blocking(fd, False)
    total, chunk = 0, b"u" * 65536
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < seconds:
        try:
            total += os.write(fd, chunk)
            idle_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    os.set_blocking(fd, True)
    return total


def test_backpressure_upward_a_slow_server_stops_reading_stdin(engine: str) -> None:
    """The server reads nothing for a while: the proxy must stop taking stdin, not buffer it."""
    go = threading.Event()
    received: list[int] = []

    def handler(conn: socket.socket) -> None:
        go.wait(TIMEOUT)
        received.append(len(recv_all(conn)))

    server = Server(handler)
    with spliced(server, engine) as proxy:
        accepted = fill(proxy.stdin.fd)
        assert accepted < kernel_buffering(), f"the proxy buffered {accepted} bytes for a server not reading"
        go.set()
        proxy.stdin.close()
        assert proxy.stdout.read_all() == b""
        join(proxy.thread)
    server.finish()
    assert received == [accepted]


def test_backpressure_downward_a_slow_client_stops_the_socket(engine: str) -> None:
    """The ssh client reads nothing for a while: the proxy must stop reading the socket."""
    sent: list[int] = []

    def handler(conn: socket.socket) -> None:
        sent.append(fill(conn.fileno()))
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)

    server = Server(handler)
    with spliced(server, engine) as proxy:
        join_deadline = time.monotonic() + TIMEOUT
        while not sent and time.monotonic() < join_deadline:
            time.sleep(0.05)
        assert sent and sent[0] < kernel_buffering(), f"the proxy took {sent} bytes for a client not reading"
        got = proxy.stdout.read_all()
        proxy.stdin.close()
        join(proxy.thread)
    server.finish()
    assert len(got) == sent[0] and set(got) == {ord("u")}


def test_a_peer_reset_ends_the_pump_without_an_error(engine: str) -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = Server(reset)
    with spliced(server, engine) as proxy:
        writer = background(lambda: _write_until_gone(proxy.stdin))
        assert proxy.stdout.read_all() == b""
        join(proxy.thread)
        proxy.stdin.close()
        join(writer)
    server.finish()
    assert proxy.errors == []


def _write_until_gone(end: End) -> None:
    try:
        for _ in range(200):
            end.write_all(b"z" * 65536)
    except OSError as exc:
        assert exc.errno in (errno.EPIPE, errno.EBADF)


PUMP = """
import socket, sys
sys.path.insert(0, sys.argv[1])
from interactive_slurm.connect.splice import splice
listener = socket.create_server(("127.0.0.1", 0))
a = socket.create_connection(listener.getsockname())
b, _ = listener.accept()
print("ready", flush=True)
splice(0, 1, a)
sys.stderr.write("returned\\n")
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGPIPE, 0), (signal.SIGTERM, -15),
                                              (signal.SIGHUP, -1)])
def test_a_signal_sent_to_the_proxy_ends_the_pump_at_once(signum: int, code: int) -> None:
    """SIGPIPE (ignored by Python) returns from the pump; SIGTERM/SIGHUP keep their default."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(splice_mod.__file__)))
    proc = subprocess.Popen([sys.executable, "-c", PUMP, root], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(0.2)  # in poll()
        proc.send_signal(signum)
        start = time.monotonic()
        proc.wait(timeout=5)
        assert time.monotonic() - start < 2
        assert proc.returncode == code
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
