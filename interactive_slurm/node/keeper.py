"""The keeper of a session's ``sshd -i`` children and of its timers.

Each proven connection gets its own ``sshd -i`` (the socket is its stdin and stdout); the keeper
holds its copy of the socket until that sshd exits, so the proxy sees the connection close only
after an ``ended`` note is written (a SIGTERMed sshd's connection lingers
:data:`LINGER_SECONDS`). A non-zero exit within :data:`STARTUP_SECONDS` of the start whose client
sshd's log never names is a failed start; :data:`MAX_FAILED_STARTS` in a row end the session with
:class:`SessionError` quoting that log.

Timers, on the injected ``clock`` (monotonic seconds): the idle timeout runs only while no
``sshd -i`` child is alive (unproven connections never count), and says "stop" once; the
time-limit warning is told, once, ``warn_before`` seconds before the job's time limit to the
terminals under the children (see :mod:`~interactive_slurm.node.shells`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Protocol

from interactive_slurm.base.errors import SessionError
from interactive_slurm.base.runner import describe
from interactive_slurm.node.shells import tell_shells

LINGER_SECONDS = 5.0  # a SIGTERMed sshd's connection waits this long for our note
#: ``sshd -i`` exiting non-zero within this many seconds of its start counts as a failed start;
#: this many failed starts in a row end the session (a broken sshd or config).
STARTUP_SECONDS = 2.0
MAX_FAILED_STARTS = 5
STOP_SECONDS = 3.0  # how long stopped children get to exit before they are killed


class Process(Protocol):
    """What the keeper needs of a started ``sshd -i`` (a :class:`subprocess.Popen` has it)."""

    pid: int

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        ...


#: Starts ``argv`` on a connection's file descriptor; OSError when it cannot (the tests' seam).
Spawn = Callable[[Sequence[str], int], Process]
#: Writes a line to the terminals under these pids; returns how many were told.
Tell = Callable[[set[int], str], int]


def spawn_sshd(argv: Sequence[str], fd: int) -> subprocess.Popen[bytes]:
    """``sshd -i`` (or any ``argv``) with the connection ``fd`` as its stdin and stdout."""
    return subprocess.Popen(list(argv), stdin=fd, stdout=fd, stderr=subprocess.DEVNULL)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


class Child:
    """One ``sshd -i``, the connection it serves, and where it logs."""

    __slots__ = ("log", "peer", "proc", "sock", "started")

    def __init__(self, proc: Process, sock: socket.socket, started: float, log: Path) -> None:
        self.proc, self.sock, self.started, self.log = proc, sock, started, log
        if sock.family == socket.AF_UNIX:  # the srun transport's bridge: sshd names no address
            self.peer = "UNKNOWN port 65535"  # as sshd writes it in its log
            return
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host} port {port}"  # as sshd writes it in its log
        except OSError:
            self.peer = ""


class Keeper:
    """The children and the timers of one session; time comes from ``clock`` (monotonic) and,
    for what shells are told, ``wall`` (epoch seconds)."""

    def __init__(
        self, *, job_id: str, valid_for: int, idle_timeout: int = 0, warn_before: int = 0,
        say: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time, spawn: Spawn = spawn_sshd, tell: Tell = tell_shells,
    ) -> None:
        self.job_id, self.valid_for = job_id, valid_for
        self.idle_timeout, self.warn_before = idle_timeout, warn_before
        self.say, self.clock, self.wall, self.spawn, self.tell = say, clock, wall, spawn, tell
        self.started = clock()
        self.wall_start = wall()
        self.children: dict[int, Child] = {}
        self.lingering: list[tuple[float, socket.socket]] = []  # (close at, connection)
        self.failed_starts = 0
        #: When no ``sshd -i`` child is alive: since when (monotonic); None while one is.
        self.idle_since: float | None = self.started
        self.idle_ended = False
        self.warned = False

    @property
    def ends_at(self) -> float:
        """When the job reaches its time limit (epoch seconds)."""
        return self.wall_start + self.valid_for

    # -- children ---------------------------------------------------------------------------

    def start(self, sock: socket.socket, argv: Sequence[str], log: Path) -> None:
        """``argv`` (an ``sshd -i`` logging to ``log``) owns the proven connection ``sock`` from
        here; a start that fails at once counts as a failed start."""
        sock.setblocking(True)
        try:
            proc = self.spawn(argv, sock.fileno())
        except OSError as exc:
            self.say(f"could not start {describe(argv)}: {exc}")
            sock.close()
            self.failed_start(log)
            return
        self.children[proc.pid] = Child(proc, sock, self.clock(), log)

    def failed_start(self, log: Path) -> None:
        self.failed_starts += 1
        if self.failed_starts >= MAX_FAILED_STARTS:
            try:
                text = log.read_text(errors="replace").strip()
            except OSError:
                text = "(sshd wrote no log)"
            raise SessionError(
                f"sshd -i failed at startup {self.failed_starts} times in a row; giving up. "
                f"Its last log lines:\n{text[-2000:]}"
            )

    def sshd_saw(self, child: Child) -> bool:
        """Whether this child's sshd got as far as its client (its log names the client).

        sshd -i exits 255 whenever a client goes away, so a short non-zero life is no failure
        by itself: `ssh slurm-cpu true` is one. A start failed only if sshd never spoke of it.
        """
        try:
            with open(child.log, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 262144))
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return bool(child.peer) and child.peer in text

    def reap(self) -> None:
        """Collect exited children (and count failed starts), close lingering connections whose
        time has come, and run the idle timer while no child is alive."""
        for pid, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self.children[pid]
            if code == -signal.SIGTERM:
                # Slurm signals every process of an ending job at once, so this sshd may be
                # gone before our own SIGTERM arrives: keep its connection open a moment, so
                # the proxy finds the ended note we are about to write, not a bare close.
                self.lingering.append((self.clock() + LINGER_SECONDS, child.sock))
            else:
                child.sock.close()
            if (code != 0 and self.clock() - child.started < STARTUP_SECONDS
                    and not self.sshd_saw(child)):
                self.failed_start(child.log)
            else:
                self.failed_starts = 0
        now = self.clock()
        while self.lingering and self.lingering[0][0] <= now:
            self.lingering.pop(0)[1].close()
        if self.children:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

    def stop(self) -> None:
        """Close lingering connections; stop every child (killed when it takes too long)."""
        for _, sock in self.lingering:
            sock.close()
        self.lingering.clear()
        for child in self.children.values():
            with contextlib.suppress(OSError):
                child.proc.terminate()
        deadline = self.clock() + STOP_SECONDS
        for child in self.children.values():
            try:
                child.proc.wait(timeout=max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            child.sock.close()
        self.children.clear()

    # -- timers -----------------------------------------------------------------------------

    def restart_idle(self) -> None:
        """Idle from now (the loop starts: not from the job's start)."""
        self.idle_since = self.clock()

    def idle_deadline(self) -> float | None:
        """When the idle timeout runs out (monotonic), if it is due to."""
        if not self.idle_timeout or self.idle_since is None or self.idle_ended:
            return None
        return self.idle_since + self.idle_timeout

    def idle_over(self) -> bool:
        """True once, when no child has been alive for ``idle_timeout``: the session stops."""
        due = self.idle_deadline()
        if due is None or self.clock() < due:
            return False
        self.idle_ended = True
        return True

    def warn_deadline(self) -> float | None:
        """When open shells are told the job is about to end (monotonic), if not yet done."""
        if self.warned or self.warn_before <= 0:
            return None
        return self.started + (self.ends_at - self.warn_before - self.wall_start)

    def warn_if_due(self) -> None:
        due = self.warn_deadline()
        if due is not None and self.clock() >= due:
            self.warn_shells()

    def warn_shells(self) -> None:
        """Tell the terminals of the shells under our own ``sshd -i`` children that the job is
        about to reach its time limit (one line each; never a pty of another user or process)."""
        self.warned = True
        left = max(0.0, self.ends_at - self.wall())
        at = time.strftime("%H:%M", time.localtime(self.ends_at))
        line = (f"\r\ninteractive-slurm: job {self.job_id} reaches its time limit in "
                f"{format_duration(round(left / 60) * 60 if left >= 60 else left)} (at {at}); "
                "save your work\r\n")
        told = self.tell(set(self.children), line)
        self.say(f"the time limit is at {at}; told {told} open shell(s)")

    def next_deadline(self) -> float | None:
        """The earliest moment the keeper has something to do (monotonic), if any."""
        dues = [self.lingering[0][0] if self.lingering else None, self.idle_deadline(),
                self.warn_deadline()]
        return min((due for due in dues if due is not None), default=None)
