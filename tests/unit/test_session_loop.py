"""session.py's loop wiring: listener events accept into the gate, proven connections go to the
keeper's (fake) sshd starter, and a flood never costs an honest connection its place."""

from __future__ import annotations

import io
import os
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from interactive_slurm.connect import keyhole
from interactive_slurm.node import gate
from interactive_slurm.node import session as session_mod
from interactive_slurm.node.session import Session, SessionSpec

from .fakes import FakeRunner
from .test_keeper import FakeClock, FakeSpawn

JOB = "4711"


class Loop:
    """A session whose loop runs one ``select()`` batch at a time, on a 127.0.0.1 listener."""

    def __init__(self, tmp_path: Path, *, idle: int = 0) -> None:
        self.clock, self.spawn = FakeClock(), FakeSpawn()
        spec = SessionSpec(JOB, "cpu", "default", 600, "/usr/sbin/sshd", idle_timeout=idle)
        self.session = Session(FakeRunner({}), spec, log=io.StringIO(), clock=self.clock,
                               wall=self.clock.wall, spawn=self.spawn)
        self.session.tmp, self.session.cfg = tmp_path, tmp_path / "sshd_config"
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        self.address = listener.getsockname()
        self.session.listeners = [listener]
        self.sel = selectors.DefaultSelector()
        self.gate = self.session.attach(self.sel)

    def batch(self, timeout: float = 0.2) -> None:
        """One ``select()`` and its events, as :meth:`Session.serve` handles them."""
        for key, _events in self.sel.select(timeout):
            self.session.handle(key)

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.address)
        client.settimeout(2)
        return client

    def close(self) -> None:
        self.session.stop_children()
        self.sel.close()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    lp = Loop(tmp_path)
    yield lp
    lp.close()


def send_proof(client: socket.socket, secret: bytes) -> bytes | None:
    """Read the HELLO and send a valid proof: the answer due, or None when the session hung up."""
    data = b""
    try:
        while len(data) < keyhole.HELLO_SIZE:
            chunk = client.recv(keyhole.HELLO_SIZE - len(data))
            if not chunk:
                return None
            data += chunk
        sn, cn = keyhole.parse_hello(data), os.urandom(keyhole.NONCE_SIZE)
        client.sendall(keyhole.client_proof(secret, sn, cn, JOB))
    except OSError:
        return None
    return keyhole.server_answer(secret, sn, cn, JOB)


def answered(client: socket.socket, answer: bytes | None) -> bool:
    try:
        return answer is not None and client.recv(64) == answer
    except OSError:
        return False


def test_a_proven_connection_goes_to_sshd_with_the_jobs_config(loop: Loop,
                                                                tmp_path: Path) -> None:
    client = loop.connect()
    loop.batch()  # accepted: the HELLO is on its way
    answer = send_proof(client, loop.session.secret)
    loop.batch()
    assert answered(client, answer)
    [sshd] = loop.spawn.started
    assert sshd.argv == ("/usr/sbin/sshd", "-i", "-f", str(tmp_path / "sshd_config"),
                         "-E", str(tmp_path / "sshd.log"))
    [child] = loop.session.keeper.children.values()
    assert sshd.fd == child.sock.fileno() and child.sock.getpeername() == client.getsockname()
    assert loop.gate.pending == {}


def test_a_proven_connection_on_the_unix_socket_goes_to_sshd_too(loop: Loop,
                                                                  tmp_path: Path) -> None:
    """The srun transport's bridge connects to the session's unix socket: same gate, same sshd;
    sshd names such a peer "UNKNOWN port 65535", which is how the keeper finds it in its log."""
    unix = session_mod.bind_unix(tmp_path / "session.sock")
    assert unix is not None
    loop.session.listeners.append(unix)
    loop.sel.register(unix, selectors.EVENT_READ, session_mod.LISTEN)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "session.sock"))
    client.settimeout(2)
    loop.batch()
    answer = send_proof(client, loop.session.secret)
    loop.batch()
    assert answered(client, answer)
    [sshd] = loop.spawn.started
    [child] = loop.session.keeper.children.values()
    assert sshd.fd == child.sock.fileno() and child.peer == "UNKNOWN port 65535"
    client.close()


def test_an_unproven_connection_never_reaches_sshd(loop: Loop) -> None:
    client = loop.connect()
    loop.batch()
    client.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + b"x" * 60)
    loop.batch()
    assert client.recv(4096).startswith(keyhole.MAGIC)  # the HELLO, then nothing: closed
    with pytest.raises(ConnectionResetError):  # (closed with the rest of the bytes unread)
        assert client.recv(4096) == b""
    assert loop.spawn.started == [] and loop.gate.pending == {}


def test_flood_with_churn_never_closes_an_honest_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "MAX_PENDING", 8)
    loop = Loop(tmp_path)
    try:
        flood = [loop.connect() for _ in range(8)]
        for _ in range(20):
            if len(loop.gate.pending) == 8:
                break
            loop.batch()
        assert len(loop.gate.pending) == 8
        honest = [loop.connect() for _ in range(4)]  # queued: the listener is readable first...
        for client in flood:
            client.shutdown(socket.SHUT_WR)  # ...then the flood churns: readable too
        loop.batch()  # accepting the honest four evicts the oldest four, whose fds they reuse
        answers = [send_proof(client, loop.session.secret) for client in honest]
        for _ in range(3):
            loop.batch(0.05)
        assert [answered(c, a) for c, a in zip(honest, answers)] == [True] * 4
        assert len(loop.spawn.started) == 4 and loop.gate.pending == {}
        for client in flood + honest:
            client.close()
    finally:
        loop.close()


def test_unproven_connections_do_not_keep_an_idle_session_alive(tmp_path: Path) -> None:
    loop = Loop(tmp_path, idle=30)
    try:
        loop.session.keeper.restart_idle()
        clients = [loop.connect() for _ in range(3)]
        loop.batch()
        assert len(loop.gate.pending) == 3
        loop.clock.advance(30)
        loop.session.keeper.reap()
        assert loop.session.keeper.idle_over()
        for client in clients:
            client.close()
    finally:
        loop.close()
