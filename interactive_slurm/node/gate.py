"""The session's gate: the connections that have not proven the keyhole secret yet.

Each accepted connection gets the keyhole HELLO at once and waits here, watched on the session's
selector, until it sends a valid PROOF (it is then answered and handed back, to go to
``sshd -i``), sends anything else or goes away (closed), or reaches its deadline of
``keyhole.DEADLINE`` seconds (closed). Beyond :data:`MAX_PENDING` waiting connections the oldest
is dropped, so idle connections cannot starve the port. Dropping frees a file descriptor that the
very next accept may reuse, so a readiness event collected in the same ``select()`` batch for the
dropped connection is stale: :meth:`Gate.readable` ignores any event whose key is not the one the
gate registered, and a read with nothing to read yet (EAGAIN) only means "wait".

No I/O of its own beyond what it is handed: the accepted sockets and the selector; the caller
passes the time.
"""

from __future__ import annotations

import selectors
import socket

from interactive_slurm.connect import keyhole

#: Connections that have not proven the secret yet, at most; beyond, the oldest is dropped.
MAX_PENDING = 1024


class Knock:
    """One waiting connection: its socket, its side of the keyhole, and when it must be done."""

    __slots__ = ("deadline", "fd", "keyhole", "sock")

    def __init__(self, sock: socket.socket, door: keyhole.Gate, deadline: float) -> None:
        self.sock, self.keyhole, self.deadline = sock, door, deadline
        self.fd = sock.fileno()


class Gate:
    """The unproven connections of one session, oldest first."""

    def __init__(self, secret: bytes, job_id: str, selector: selectors.BaseSelector, *,
                 limit: int | None = None, wait: float = keyhole.DEADLINE) -> None:
        self.secret, self.job_id, self.selector = secret, job_id, selector
        self.limit = MAX_PENDING if limit is None else limit
        self.wait = wait
        self.pending: dict[int, Knock] = {}  # by fd; insertion order: oldest first

    def admit(self, conn: socket.socket, now: float) -> bool:
        """Send the HELLO and start waiting for the proof (dropping the oldest beyond the limit);
        False when the connection is gone already (closed)."""
        conn.setblocking(False)
        door = keyhole.Gate(self.secret, self.job_id)
        try:
            conn.send(door.hello)
        except OSError:
            conn.close()
            return False
        while len(self.pending) >= self.limit:
            self.evict_oldest()
        knock = Knock(conn, door, now + self.wait)
        self.pending[knock.fd] = knock
        self.selector.register(conn, selectors.EVENT_READ, knock)
        return True

    def readable(self, key: selectors.SelectorKey) -> socket.socket | None:
        """A readiness event for a waiting connection: the socket once it has proven the secret
        (answered, no longer watched: the caller owns it), else None: still waiting, dropped
        now, or a stale event (its connection was dropped earlier in this ``select()`` batch and
        its fd may already be another connection's: that one is left alone)."""
        knock = self.pending.get(key.fd)
        if knock is None or knock is not key.data:
            return None  # a stale event: that connection went earlier in this batch
        try:
            data = knock.sock.recv(keyhole.PROOF_SIZE + 1)
            answer = knock.keyhole.feed(data) if data else None
        except BlockingIOError:
            return None  # EAGAIN: nothing to read yet, the peer is still there
        except (OSError, keyhole.KeyholeError):
            data, answer = b"", None
        if not data:
            self.drop(knock)
            return None
        if answer is None:
            return None
        del self.pending[knock.fd]
        self.selector.unregister(knock.sock)
        try:
            if knock.sock.send(answer) != len(answer):
                raise OSError("short send")
        except OSError:
            knock.sock.close()
            return None
        return knock.sock

    def expire(self, now: float) -> None:
        """Drop the connections whose deadline has come."""
        while self.pending:  # deadlines only grow with insertion order
            knock = next(iter(self.pending.values()))
            if knock.deadline > now:
                break
            self.drop(knock)

    def next_deadline(self) -> float | None:
        """When the oldest waiting connection is due, if there is one."""
        return next(iter(self.pending.values())).deadline if self.pending else None

    def evict_oldest(self) -> None:
        if self.pending:
            self.drop(next(iter(self.pending.values())))

    def drop(self, knock: Knock) -> None:
        del self.pending[knock.fd]
        self.selector.unregister(knock.sock)
        knock.sock.close()

    def close(self) -> None:
        """Close every waiting connection (the selector may be closed already)."""
        for knock in self.pending.values():
            knock.sock.close()
        self.pending.clear()
