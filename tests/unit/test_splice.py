"""splice.py: socketpairs stand in for the proxy's stdin/stdout; a real TCP server on port 0."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import pytest

from interactive_slurm.splice import splice

TIMEOUT = 20.0
MIB = 1 << 20


def recv_all(sock: socket.socket) -> bytes:
    """Everything until EOF (a timeout raises instead of hanging)."""
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def send_then_eof(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def background(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"{thread.name} hung for {TIMEOUT} s"


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

    stdin: socket.socket  # the ssh client's end: write here
    stdout: socket.socket  # the ssh client's end: read here
    thread: threading.Thread
    errors: list[BaseException]


@contextmanager
def spliced(server: Server, initial: bytes = b"") -> Iterator[Proxy]:
    stdin_client, stdin_proxy = socket.socketpair()
    stdout_proxy, stdout_client = socket.socketpair()
    for end in (stdin_client, stdout_client):
        end.settimeout(TIMEOUT)
    sock = server.connect()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            splice(stdin_proxy.fileno(), stdout_proxy.fileno(), sock, initial)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stdout_proxy.close()  # the proxy process exits: ssh sees EOF on our stdout
            stdin_proxy.close()
            sock.close()

    proxy = Proxy(stdin_client, stdout_client, background(run), errors)
    try:
        yield proxy
    finally:
        stdin_client.close()
        stdout_client.close()


def pump_through(server: Server, up: bytes) -> bytes:
    """Splice ``up`` (then EOF) to ``server``; return everything that came back down."""
    with spliced(server) as proxy:
        writer = background(lambda: send_then_eof(proxy.stdin, up))
        got = recv_all(proxy.stdout)
        join(writer)
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []
    return got


def test_5_mib_both_ways_byte_identical() -> None:
    up_payload = os.urandom(5 * MIB)
    down_payload = os.urandom(5 * MIB)
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        # Send and receive at once; close only when both are done (a socket EOF ends splice).
        sender = background(lambda: conn.sendall(down_payload))
        received.append(recv_all(conn))
        join(sender)

    got = pump_through(Server(handler), up_payload)
    assert received == [up_payload]
    assert got == down_payload


def test_5_mib_echo() -> None:
    payload = os.urandom(5 * MIB)

    def echo(conn: socket.socket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data)

    got = pump_through(Server(echo), payload)
    assert len(got) == len(payload)
    assert got == payload


def test_initial_bytes_go_first() -> None:
    received: list[bytes] = []
    server = Server(lambda conn: received.append(recv_all(conn)))
    with spliced(server, initial=b"SSH-2.0-OpenSSH_9.2\r\n") as proxy:
        proxy.stdin.sendall(b"after")
        proxy.stdin.shutdown(socket.SHUT_WR)
        assert recv_all(proxy.stdout) == b""
        join(proxy.thread)
    server.finish()
    assert received == [b"SSH-2.0-OpenSSH_9.2\r\nafter"]


def test_stdin_eof_is_a_half_close_and_the_reply_still_arrives() -> None:
    received: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        received.append(recv_all(conn))  # returns only when the proxy half-closed
        conn.sendall(b"reply after your EOF")

    server = Server(handler)
    with spliced(server) as proxy:
        proxy.stdin.sendall(b"request")
        proxy.stdin.shutdown(socket.SHUT_WR)
        assert recv_all(proxy.stdout) == b"reply after your EOF"
        join(proxy.thread)
    server.finish()
    assert received == [b"request"]
    assert proxy.errors == []


def test_server_close_ends_splice_while_stdin_stays_open() -> None:
    server = Server(lambda conn: conn.sendall(b"bye"))
    with spliced(server) as proxy:
        # stdin is never closed: the server closing alone must end the splice.
        assert recv_all(proxy.stdout) == b"bye"
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []


@pytest.mark.parametrize("size", [0, 1, 65536 * 4 + 1])
def test_server_close_after_a_large_reply_delivers_it_all(size: int) -> None:
    reply = os.urandom(size)

    def handler(conn: socket.socket) -> None:
        conn.sendall(reply)

    server = Server(handler)
    with spliced(server) as proxy:
        assert recv_all(proxy.stdout) == reply
        join(proxy.thread)
    server.finish()
    assert proxy.errors == []


def test_splice_ends_when_the_client_stops_reading_stdout() -> None:
    stop = threading.Event()

    def flood(conn: socket.socket) -> None:
        chunk = b"x" * 65536
        try:
            while not stop.is_set():
                conn.sendall(chunk)
        except OSError:
            pass  # the proxy went away: expected

    server = Server(flood)
    with spliced(server) as proxy:
        assert proxy.stdout.recv(65536)  # the flood has started
        proxy.stdout.close()  # the ssh client is gone
        join(proxy.thread)
        stop.set()
    server.finish()
    assert proxy.errors == []
