"""A keyhole server in a thread for unit tests: the session's side without a session."""

from __future__ import annotations

import contextlib
import socket
import threading

from interactive_slurm.connect import keyhole


def serve_once(listener: socket.socket, secret: bytes, job_id: str,
               after: bytes = b"SSH-2.0-test\r\n") -> threading.Thread:
    """Accept one connection, run the session's side of the keyhole, then send ``after``."""

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            gate = keyhole.Gate(secret, job_id)
            conn.sendall(gate.hello)
            answer = None
            try:
                while answer is None:
                    data = conn.recv(keyhole.PROOF_SIZE)
                    if not data:
                        return
                    answer = gate.feed(data)
            except keyhole.KeyholeError:
                return
            conn.sendall(answer + after)
            with contextlib.suppress(OSError):
                conn.recv(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
