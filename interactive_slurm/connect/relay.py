"""The one relay of a connection: warn about the time left, splice, close, report the end.

Every way in (the reuse path, the proxy's slow path, ``connect JOBID``) ends here once it holds
a keyhole-checked socket. Imported by the fast path: keep its imports lean.
"""

from __future__ import annotations

import sys
import time

from interactive_slurm.connect import endpoint
from interactive_slurm.connect.splice import splice

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from _socket import socket as Socket
    from collections.abc import Callable
    from typing import TextIO

    from interactive_slurm.connect.endpoint import Endpoint

#: A proxy whose session closed first looks for the session's ``ended`` note this long when
#: the session has already withdrawn its record (it is stopping: Slurm signals the shell, sshd
#: and the session at once, and the session asks Slurm why before it writes the note), and
#: only :data:`NOTE_GRACE` while the record is still there (an sshd that failed, most likely;
#: or a stop signal not yet handled).
NOTE_WAIT = 3.0  # the session asks Slurm why before it writes the note: seconds on a busy node
NOTE_GRACE = 0.3
NOTE_POLL = 0.05


def relay(ep: Endpoint, sock: Socket, *, threshold: Callable[[], float], stdin_fd: int = 0,
          stdout_fd: int = 1, initial: bytes = b"", err: TextIO | None = None) -> None:
    """Carry the connection until one side ends, then say why the job ended (if it did).

    ``threshold()`` (``warn_time_left``) is asked only when the record knows the job's end.
    """
    if ep.ends_at > 0:
        warn_time_left(ep, threshold(), err)
    try:
        closed = splice(stdin_fd, stdout_fd, sock, initial)
    finally:
        sock.close()
    report_end(ep, err, session_closed=closed)


def report_end(ep: Endpoint, err: TextIO | None = None, *, session_closed: bool = False,
               wait: float = NOTE_WAIT, grace: float = NOTE_GRACE) -> None:
    """After the connection ended: say why, if the job ended (its session left a note).

    ``session_closed``: the session's side closed first (ssh had not hung up), so the job may
    be ending: look for the note a moment before the proxy exits (ssh sees the end only then).
    When ssh hangs up first it also stops the proxy, so nothing waits.
    """
    note = endpoint.ended_note(ep.job_id)
    start = time.monotonic()
    while note is None and session_closed:
        limit = grace if endpoint.still_published(ep) else wait
        if time.monotonic() - start >= limit:
            break
        time.sleep(NOTE_POLL)
        note = endpoint.ended_note(ep.job_id)
    if note:
        stream = err or sys.stderr
        stream.write(f"interactive-slurm: session ended: job {ep.job_id} {note}\n")
        stream.flush()


def time_left_warning(ep: Endpoint, threshold: float, now: float | None = None) -> str | None:
    """The line to show when ``ep``'s job has less than ``threshold`` seconds left (from the
    record's ``ends_at``: no Slurm query); None when it has more, or its end is unknown."""
    if ep.ends_at <= 0:
        return None
    left = ep.ends_at - (time.time() if now is None else now)
    if left >= threshold:
        return None
    at = time.strftime("%H:%M", time.localtime(ep.ends_at))
    amount = "less than a minute" if left < 60 else f"{int(left // 60)} min"
    return (f"interactive-slurm: job {ep.job_id} has {amount} left before its time limit "
            f"(at {at}); save your work, the next connect after that starts a new job")


def warn_time_left(ep: Endpoint, threshold: float, err: TextIO | None = None) -> None:
    line = time_left_warning(ep, threshold)
    if line:
        stream = err or sys.stderr
        stream.write(line + "\n")
        stream.flush()
