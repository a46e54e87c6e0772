"""node/gate.py: unproven connections on real sockets (127.0.0.1) and a real selector."""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Iterator

import pytest

from interactive_slurm.connect import keyhole
from interactive_slurm.node.gate import Gate

SECRET, JOB = b"s" * 32, "4711"


class Door:
    """A listener, a selector and a gate on it, as the session's loop holds them."""

    def __init__(self, limit: int = 8) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sel = selectors.DefaultSelector()
        self.gate = Gate(SECRET, JOB, self.sel, limit=limit)
        self.clients: list[socket.socket] = []

    def knock(self, now: float = 0.0) -> socket.socket:
        """A new client, accepted and admitted at ``now``."""
        client = socket.create_connection(self.listener.getsockname())
        client.settimeout(2)
        self.clients.append(client)
        conn, _ = self.listener.accept()
        assert self.gate.admit(conn, now)
        return client

    def events(self) -> list[selectors.SelectorKey]:
        return [key for key, _ in self.sel.select(0.5)]

    def close(self) -> None:
        self.gate.close()
        self.sel.close()
        self.listener.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def door() -> Iterator[Door]:
    d = Door()
    yield d
    d.close()


def hello_of(client: socket.socket) -> bytes:
    data = b""
    while len(data) < keyhole.HELLO_SIZE:
        chunk = client.recv(keyhole.HELLO_SIZE - len(data))
        assert chunk, "the gate closed the connection"
        data += chunk
    return keyhole.parse_hello(data)


def closed(client: socket.socket) -> bool:
    try:
        while True:
            data = client.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:  # (TimeoutError from Python 3.10 on)
        return False


def prove(client: socket.socket) -> bytes:
    """Send a valid proof; the answer the session must give."""
    sn, cn = hello_of(client), os.urandom(keyhole.NONCE_SIZE)
    client.sendall(keyhole.client_proof(SECRET, sn, cn, JOB))
    return keyhole.server_answer(SECRET, sn, cn, JOB)


def test_a_valid_proof_is_answered_and_the_socket_handed_back(door: Door) -> None:
    client = door.knock()
    answer = prove(client)
    [key] = door.events()
    sock = door.gate.readable(key)
    assert sock is not None and sock.fileno() == key.fd
    assert client.recv(64) == answer
    assert door.gate.pending == {} and door.sel.get_map() == {}  # the caller owns it now
    sock.close()


def test_a_proof_in_pieces_waits_and_a_spurious_event_is_no_hang_up(door: Door) -> None:
    client = door.knock()
    sn, cn = hello_of(client), os.urandom(keyhole.NONCE_SIZE)
    proof = keyhole.client_proof(SECRET, sn, cn, JOB)
    client.sendall(proof[:10])
    [key] = door.events()
    assert door.gate.readable(key) is None
    assert door.gate.readable(key) is None  # nothing to read (EAGAIN): still waiting
    assert list(door.gate.pending) == [key.fd]
    client.sendall(proof[10:])
    [key] = door.events()
    sock = door.gate.readable(key)
    assert sock is not None and client.recv(64) == keyhole.server_answer(SECRET, sn, cn, JOB)
    sock.close()


@pytest.mark.parametrize("send", [b"x" * keyhole.PROOF_SIZE, b"SSH-2.0-OpenSSH_9.2\r\n" * 4, b""])
def test_a_wrong_proof_or_a_hang_up_is_closed(door: Door, send: bytes) -> None:
    client = door.knock()
    hello_of(client)
    if send:
        client.sendall(send)
    else:
        client.shutdown(socket.SHUT_WR)
    [key] = door.events()
    assert door.gate.readable(key) is None
    assert door.gate.pending == {} and door.sel.get_map() == {}
    assert closed(client)


def test_beyond_the_limit_the_oldest_unproven_connections_go_first() -> None:
    door = Door(limit=4)
    try:
        flood = [door.knock(now=i) for i in range(6)]
        assert len(door.gate.pending) == 4
        assert [closed(c) for c in flood[:2]] == [True, True]
        for client in flood[2:]:
            client.settimeout(0.2)
            assert not closed(client)
        owner = door.knock(now=6)  # the owner: evicts flood[2], then gets in
        answer = prove(owner)
        proven = [s for key in door.events() if (s := door.gate.readable(key)) is not None]
        assert len(proven) == 1 and owner.recv(64) == answer
        assert len(door.gate.pending) == 3 and closed(flood[2])
        proven[0].close()
    finally:
        door.close()


def test_unproven_connections_are_closed_at_their_deadline(door: Door) -> None:
    early, late = door.knock(now=100.0), door.knock(now=101.0)
    assert door.gate.next_deadline() == 100.0 + keyhole.DEADLINE
    door.gate.expire(100.0 + keyhole.DEADLINE - 0.01)
    assert len(door.gate.pending) == 2
    door.gate.expire(100.0 + keyhole.DEADLINE)
    assert closed(early) and len(door.gate.pending) == 1
    assert door.gate.next_deadline() == 101.0 + keyhole.DEADLINE
    door.gate.expire(1000.0)
    assert closed(late) and door.gate.pending == {} and door.gate.next_deadline() is None


def test_an_event_of_a_dropped_connection_never_touches_the_one_that_took_its_fd(
    door: Door,
) -> None:
    gone = door.knock()
    gone.shutdown(socket.SHUT_WR)
    [stale] = door.events()
    newcomer = socket.create_connection(door.listener.getsockname())
    newcomer.settimeout(2)
    door.clients.append(newcomer)
    door.gate.evict_oldest()  # as an accept in the same batch would: its fd is free again
    conn, _ = door.listener.accept()
    assert door.gate.admit(conn, 0.0)
    [knock] = door.gate.pending.values()
    assert knock.fd == stale.fd  # the kernel reused the number
    assert door.gate.readable(stale) is None
    assert list(door.gate.pending.values()) == [knock]
    answer = prove(newcomer)
    [key] = door.events()
    sock = door.gate.readable(key)
    assert sock is not None and newcomer.recv(64) == answer
    sock.close()
