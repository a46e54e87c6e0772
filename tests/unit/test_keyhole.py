"""keyhole.py: the mutual proof of a session's secret before any SSH byte."""

from __future__ import annotations

import hmac
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from interactive_slurm.connect import keyhole
from interactive_slurm.connect.keyhole import Gate, KeyholeError

SECRET = bytes(range(32))
SN = b"s" * 32
CN = b"c" * 32


def test_good_proof_both_ways() -> None:
    gate = Gate(SECRET, "42", sn=SN)
    assert gate.hello == b"ISKH\x01" + SN and len(gate.hello) == keyhole.HELLO_SIZE
    sn = keyhole.parse_hello(gate.hello)
    answer = gate.feed(keyhole.client_proof(SECRET, sn, CN, "42"))
    assert answer == keyhole.server_answer(SECRET, SN, CN, "42")
    assert answer != keyhole.client_proof(SECRET, SN, CN, "42")[32:]  # labels differ


def test_proof_may_arrive_in_pieces() -> None:
    gate = Gate(SECRET, "42", sn=SN)
    proof = keyhole.client_proof(SECRET, SN, CN, "42")
    assert gate.feed(proof[:1]) is None
    assert gate.feed(proof[1:40]) is None
    assert gate.feed(proof[40:]) is not None


@pytest.mark.parametrize(
    ("secret", "job_id"), [(bytes(32), "42"), (SECRET, "43")], ids=["wrong secret", "other job"]
)
def test_wrong_secret_or_job_is_refused(secret: bytes, job_id: str) -> None:
    gate = Gate(SECRET, "42", sn=SN)
    with pytest.raises(KeyholeError, match="wrong proof"):
        gate.feed(keyhole.client_proof(secret, SN, CN, job_id))


def test_a_replayed_proof_fails_against_a_new_nonce() -> None:
    recorded = keyhole.client_proof(SECRET, SN, CN, "42")
    assert Gate(SECRET, "42", sn=SN).feed(recorded) is not None
    with pytest.raises(KeyholeError):
        Gate(SECRET, "42").feed(recorded)  # a fresh random server nonce
    # ...and a replayed server answer fails against the proxy's fresh client nonce.
    old_answer = keyhole.server_answer(SECRET, SN, CN, "42")
    assert old_answer != keyhole.server_answer(SECRET, SN, os.urandom(32), "42")


def test_oversized_input_is_refused() -> None:
    gate = Gate(SECRET, "42", sn=SN)
    with pytest.raises(KeyholeError, match="more bytes than a proof"):
        gate.feed(keyhole.client_proof(SECRET, SN, CN, "42") + b"SSH-2.0-")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "does not answer like"),
        (b"ISKH\x01" + SN[:10], "does not answer like"),
        (b"ISKH\x01" + SN + b"x", "does not answer like"),
        (b"ISKH\x02" + SN, "keyhole version 2"),
    ],
)
def test_parse_hello_refuses_anything_else(data: bytes, problem: str) -> None:
    with pytest.raises(KeyholeError, match=problem):
        keyhole.parse_hello(data)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


def test_prove_against_a_gate(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, session_side = pair
    gate = Gate(SECRET, "42")
    session_side.sendall(gate.hello)

    def session() -> None:
        proof = b""
        while len(proof) < keyhole.PROOF_SIZE:
            proof += session_side.recv(keyhole.PROOF_SIZE)
        answer = gate.feed(proof)
        assert answer is not None
        session_side.sendall(answer + b"SSH-2.0-sshd\r\n")

    thread = threading.Thread(target=session)
    thread.start()
    keyhole.prove(proxy_side, SECRET, "42")
    thread.join(5)
    assert proxy_side.recv(100) == b"SSH-2.0-sshd\r\n"  # nothing of sshd's was consumed


def test_prove_refuses_a_wrong_answer(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, session_side = pair
    session_side.sendall(keyhole.hello(SN) + b"x" * keyhole.ANSWER_SIZE)
    with pytest.raises(KeyholeError, match="does not prove its secret"):
        keyhole.prove(proxy_side, SECRET, "42")


def test_prove_fails_fast_on_an_ssh_banner(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, session_side = pair
    session_side.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # shorter than a HELLO, then silence
    start = time.monotonic()
    with pytest.raises(KeyholeError, match="does not answer like"):
        keyhole.prove(proxy_side, SECRET, "42", timeout=5)
    assert time.monotonic() - start < 1


def test_prove_gives_up_at_its_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, _silent = pair
    start = time.monotonic()
    with pytest.raises(KeyholeError, match="no answer in time"):
        keyhole.prove(proxy_side, SECRET, "42", timeout=0.3)
    assert 0.25 < time.monotonic() - start < 2


def test_prove_gives_up_when_the_answer_stalls(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, session_side = pair
    session_side.sendall(keyhole.hello(SN))  # a HELLO, but never an answer (a relay that stalls)
    with pytest.raises(KeyholeError, match="no answer in time"):
        keyhole.prove(proxy_side, SECRET, "42", timeout=0.3)


def test_prove_on_a_closed_port(pair: tuple[socket.socket, socket.socket]) -> None:
    proxy_side, session_side = pair
    session_side.close()
    with pytest.raises(KeyholeError, match="closed the connection"):
        keyhole.prove(proxy_side, SECRET, "42")


def test_keyhole_imports_stay_small() -> None:
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); import interactive_slurm.connect.keyhole;"
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(eval(out.stdout)) <= {"hmac", "hashlib", "interactive_slurm",
                                     "interactive_slurm.connect",
                                     "interactive_slurm.connect.keyhole", "socket", "selectors",
                                     "enum", "errno", "array", "operator", "warnings",
                                     "collections", "collections.abc", "keyword",
                                     "itertools", "reprlib", "functools", "types", "math",
                                     "select", "time", "os", "stat", "io"}


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("message", [b"", b"client" + SN + CN + b"42", bytes(range(256)) * 9])
def test_the_written_out_hmac_is_hmac_sha256(key_size: int, message: bytes) -> None:
    key = os.urandom(key_size)
    assert keyhole.hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
