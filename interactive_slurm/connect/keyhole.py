"""The keyhole: a mutual proof of the session's secret on a fresh TCP connection, before SSH.

Every session has a random 32-byte secret that only its 0600 endpoint record holds. The session
serves its port itself; on each accepted connection, before any SSH byte::

    session -> proxy   HELLO  = MAGIC | VERSION | sn            (37 bytes; sn: 32 random bytes)
    proxy -> session   PROOF  = cn | HMAC(secret, "client" | sn | cn | job_id)   (64 bytes)
    session -> proxy   ANSWER = HMAC(secret, "server" | sn | cn | job_id)        (32 bytes)

Only then does the session hand the socket to ``sshd -i``, and only after checking ANSWER does the
proxy pass any byte on to the ssh client. Both nonces are fresh, so a recorded exchange replays
nowhere, and a relay learns nothing it can use elsewhere; a port that answers anything else (a
stale record, a squatter, an impostor sshd, a silent listener) fails within :data:`DEADLINE`.

Stdlib only and cheap to import: the proxy's fast path uses it on every connection. HMAC-SHA256
is written out here (RFC 2104, checked against :mod:`hmac` in the unit tests) over CPython's
built-in SHA-256, because :mod:`hmac` and :mod:`hashlib` load OpenSSL: ~3 ms of every connect.
"""

from __future__ import annotations

import os
import time
from _socket import timeout as SocketTimeout  # socket.timeout, without socket's ~5 ms import

TYPE_CHECKING = False  # not typing's
if TYPE_CHECKING:
    from _socket import socket as Socket
    from hashlib import sha256
    from hmac import compare_digest
else:
    try:  # CPython's own SHA-256 (3.12 renamed its module); hashlib (OpenSSL) elsewhere
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - depends on the Python build
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256
    try:  # what hmac.compare_digest is, without importing hmac
        from _operator import _compare_digest as compare_digest
    except ImportError:  # pragma: no cover
        from hmac import compare_digest

MAGIC = b"ISKH"
VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32
SECRET_SIZE = 32
HELLO_SIZE = len(MAGIC) + 1 + NONCE_SIZE
PROOF_SIZE = NONCE_SIZE + MAC_SIZE
ANSWER_SIZE = MAC_SIZE
#: Seconds for the whole exchange, on either side.
DEADLINE = 3.0


class KeyholeError(Exception):
    """The other side did not prove the secret (or said nothing sensible in time)."""


def new_secret() -> bytes:
    return os.urandom(SECRET_SIZE)


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104): the same bytes as ``hmac.digest(key, message, "sha256")``."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(key.translate(_IPAD) + message).digest()
    return sha256(key.translate(_OPAD) + inner).digest()


def _mac(secret: bytes, label: bytes, sn: bytes, cn: bytes, job_id: str) -> bytes:
    return hmac_sha256(secret, label + sn + cn + job_id.encode("ascii"))


def hello(sn: bytes) -> bytes:
    return MAGIC + bytes([VERSION]) + sn


def parse_hello(data: bytes) -> bytes:
    """The server nonce of a session's HELLO; KeyholeError for anything else."""
    if len(data) != HELLO_SIZE or data[:len(MAGIC)] != MAGIC:
        raise KeyholeError("the port does not answer like an interactive-slurm session")
    if data[len(MAGIC)] != VERSION:
        raise KeyholeError(f"the session speaks keyhole version {data[len(MAGIC)]}, not {VERSION}")
    return data[len(MAGIC) + 1:]


def client_proof(secret: bytes, sn: bytes, cn: bytes, job_id: str) -> bytes:
    return cn + _mac(secret, b"client", sn, cn, job_id)


def server_answer(secret: bytes, sn: bytes, cn: bytes, job_id: str) -> bytes:
    return _mac(secret, b"server", sn, cn, job_id)


class Gate:
    """The session's side of one connection, fed bytes as they arrive (no I/O of its own).

    ``hello`` goes out on accept; :meth:`feed` returns the ANSWER once a valid PROOF is in, None
    while more bytes are due, and raises KeyholeError on a wrong or oversized proof.
    """

    def __init__(self, secret: bytes, job_id: str, sn: bytes | None = None) -> None:
        self.secret, self.job_id = secret, job_id
        self.sn = sn if sn is not None else os.urandom(NONCE_SIZE)
        self.hello = hello(self.sn)
        self.buffer = b""

    def feed(self, data: bytes) -> bytes | None:
        self.buffer += data
        if len(self.buffer) < PROOF_SIZE:
            return None
        if len(self.buffer) > PROOF_SIZE:
            raise KeyholeError("more bytes than a proof before the answer")
        cn, mac = self.buffer[:NONCE_SIZE], self.buffer[NONCE_SIZE:]
        if not compare_digest(mac, _mac(self.secret, b"client", self.sn, cn, self.job_id)):
            raise KeyholeError("wrong proof")
        return server_answer(self.secret, self.sn, cn, self.job_id)


def _recv_exactly(sock: Socket, size: int, deadline: float, prefix: bytes = b"") -> bytes:
    """``size`` bytes, failing early when they do not start with ``prefix``."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise KeyholeError("no answer in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(data))
        except SocketTimeout as exc:
            raise KeyholeError("no answer in time") from exc
        if not chunk:
            raise KeyholeError("the port closed the connection")
        data += chunk
        if data[:len(prefix)] != prefix[:len(data)]:
            raise KeyholeError("the port does not answer like an interactive-slurm session")
    return data


def prove(sock: Socket, secret: bytes, job_id: str, timeout: float = DEADLINE) -> None:
    """The proxy's side on a connected socket: KeyholeError (or OSError) unless the session
    there holds ``secret``. Reads no byte beyond the ANSWER, so what follows is sshd's."""
    deadline = time.monotonic() + timeout
    sn = parse_hello(_recv_exactly(sock, HELLO_SIZE, deadline, MAGIC))
    cn = os.urandom(NONCE_SIZE)
    sock.sendall(client_proof(secret, sn, cn, job_id))
    answer = _recv_exactly(sock, ANSWER_SIZE, deadline)
    if not compare_digest(answer, server_answer(secret, sn, cn, job_id)):
        raise KeyholeError("the session's answer does not prove its secret")
    sock.settimeout(None)
