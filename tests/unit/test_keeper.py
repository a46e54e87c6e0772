"""node/keeper.py: the ``sshd -i`` children, failed starts, the idle timer and the time-limit
warning, on a clock the tests move (sshd itself stands behind the keeper's ``spawn`` seam)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from interactive_slurm.base.errors import SessionError
from interactive_slurm.node import keeper as keeper_mod
from interactive_slurm.node.keeper import Keeper


class FakeClock:
    """Monotonic seconds (call it) and wall seconds (:meth:`wall`), moved only by :meth:`advance`."""

    def __init__(self, now: float = 1000.0, wall_now: float = 1_700_000_000.0) -> None:
        self.now, self.wall_now = now, wall_now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_now += seconds


class FakeSshd:
    """A started ``sshd -i`` as the keeper sees it; the test decides when and how it exits."""

    def __init__(self, pid: int, argv: Sequence[str], fd: int) -> None:
        self.pid, self.argv, self.fd = pid, tuple(argv), fd
        self.returncode: int | None = None
        self.stubborn = False  # ignores SIGTERM
        self.killed = False

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        if not self.stubborn:
            self.returncode = -signal.SIGTERM

    def kill(self) -> None:
        self.killed = True
        self.returncode = -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired("sshd", timeout or 0.0)
        return self.returncode


class FakeSpawn:
    """The keeper's ``spawn`` seam: records each start; raises ``error`` instead when set."""

    def __init__(self, error: OSError | None = None) -> None:
        self.error = error
        self.started: list[FakeSshd] = []

    def __call__(self, argv: Sequence[str], fd: int) -> FakeSshd:
        if self.error is not None:
            raise self.error
        self.started.append(FakeSshd(4000 + len(self.started), argv, fd))
        return self.started[-1]


class Told:
    """The keeper's ``tell`` seam: what would have been written to which children's shells."""

    def __init__(self, shells: int = 1) -> None:
        self.shells = shells
        self.calls: list[tuple[set[int], str]] = []

    def __call__(self, roots: set[int], line: str) -> int:
        self.calls.append((set(roots), line))
        return self.shells * len(roots)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of TCP sockets on 127.0.0.1: (the session's end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with server, client:
        yield server, client


def make_keeper(clock: FakeClock, spawn: FakeSpawn | None = None, *, idle: int = 0,
                valid_for: int = 3600, warn_before: int = 0, tell: Told | None = None,
                said: list[str] | None = None) -> Keeper:
    log = said if said is not None else []
    return Keeper(job_id="4711", valid_for=valid_for, idle_timeout=idle, warn_before=warn_before,
                  say=log.append, clock=clock, wall=clock.wall, spawn=spawn or FakeSpawn(),
                  tell=tell or Told())


def peer_gone(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# ----------------------------------------------------------------------------- children


def test_start_hands_the_connection_to_sshd_and_keeps_it_until_sshd_exits(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path,
) -> None:
    server, client = pair
    server.setblocking(False)
    clock, spawn = FakeClock(), FakeSpawn()
    keeper = make_keeper(clock, spawn)
    argv = ["/usr/sbin/sshd", "-i", "-f", "cfg"]
    keeper.start(server, argv, tmp_path / "sshd.log")
    [sshd] = spawn.started
    assert (sshd.argv, sshd.fd) == (tuple(argv), server.fileno())
    assert server.getblocking()  # sshd reads and writes it as its stdin and stdout
    assert keeper.children[sshd.pid].sock is server
    keeper.reap()
    assert server.fileno() != -1  # still ours while sshd runs
    clock.advance(60)
    sshd.returncode = 0
    keeper.reap()
    assert keeper.children == {} and server.fileno() == -1
    assert peer_gone(client)
    assert keeper.failed_starts == 0


def test_a_sigtermed_sshd_leaves_its_connection_open_a_moment(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path,
) -> None:
    server, _client = pair
    clock, spawn = FakeClock(), FakeSpawn()
    keeper = make_keeper(clock, spawn)
    keeper.start(server, ["sshd", "-i"], tmp_path / "sshd.log")
    clock.advance(60)
    spawn.started[0].returncode = -signal.SIGTERM  # Slurm signalled the whole job
    keeper.reap()
    assert server.fileno() != -1
    assert keeper.next_deadline() == clock.now + keeper_mod.LINGER_SECONDS
    clock.advance(keeper_mod.LINGER_SECONDS - 0.1)
    keeper.reap()
    assert server.fileno() != -1
    clock.advance(0.1)
    keeper.reap()
    assert server.fileno() == -1 and keeper.lingering == []


def test_stop_terminates_children_and_kills_the_stubborn_ones(tmp_path: Path) -> None:
    clock, spawn = FakeClock(), FakeSpawn()
    keeper = make_keeper(clock, spawn)
    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        keeper.start(sock, ["sshd", "-i"], tmp_path / "sshd.log")
    polite, stubborn = spawn.started
    stubborn.stubborn = True
    keeper.stop()
    assert (polite.returncode, polite.killed) == (-signal.SIGTERM, False)
    assert (stubborn.returncode, stubborn.killed) == (-signal.SIGKILL, True)
    assert keeper.children == {} and all(sock.fileno() == -1 for sock in socks)


# -------------------------------------------------------------------------- failed starts


def test_sshd_that_cannot_start_is_reported_and_five_in_a_row_end_the_session(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    keeper = make_keeper(FakeClock(), FakeSpawn(OSError(8, "Exec format error")), said=said)
    log = tmp_path / "sshd.log"
    log.write_text("sshd: line one\nsshd: fatal: the last line\n")
    socks = [socket.socket() for _ in range(keeper_mod.MAX_FAILED_STARTS)]
    for sock in socks[:-1]:
        keeper.start(sock, ["/x/sshd", "-i", "-f", "/t/my cfg"], log)
    assert said == ["could not start /x/sshd -i -f '/t/my cfg': [Errno 8] Exec format error"] * 4
    assert keeper.failed_starts == 4 and keeper.children == {}
    assert all(sock.fileno() == -1 for sock in socks[:-1])
    with pytest.raises(SessionError) as info:
        keeper.start(socks[-1], ["/x/sshd", "-i"], log)
    assert str(info.value) == (
        "sshd -i failed at startup 5 times in a row; giving up. Its last log lines:\n"
        "sshd: line one\nsshd: fatal: the last line"
    )


def test_giving_up_says_so_when_sshd_wrote_no_log(tmp_path: Path) -> None:
    keeper = make_keeper(FakeClock(), FakeSpawn(OSError(2, "No such file or directory")))
    keeper.failed_starts = keeper_mod.MAX_FAILED_STARTS - 1
    with pytest.raises(SessionError, match=r"Its last log lines:\n\(sshd wrote no log\)$"):
        keeper.start(socket.socket(), ["sshd"], tmp_path / "missing.log")


def test_short_non_zero_lives_count_only_when_sshd_never_saw_its_client(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path,
) -> None:
    server, client = pair
    clock, spawn = FakeClock(), FakeSpawn()
    keeper = make_keeper(clock, spawn)
    log = tmp_path / "sshd.log"
    log.write_text("")

    def one(code: int, lives: float, sock: socket.socket) -> None:
        keeper.start(sock, ["sshd", "-i"], log)
        clock.advance(lives)
        spawn.started[-1].returncode = code
        keeper.reap()

    one(255, 0.5, socket.socket())  # no peer, nothing in the log: a failed start
    one(255, 0.5, socket.socket())
    assert keeper.failed_starts == 2
    one(0, 0.5, socket.socket())  # a clean exit is never a failed start
    assert keeper.failed_starts == 0
    one(255, 0.5, socket.socket())
    one(255, keeper_mod.STARTUP_SECONDS, socket.socket())  # it lived: the client went away
    assert keeper.failed_starts == 0
    one(255, 0.5, socket.socket())
    host, port = server.getpeername()[:2]
    log.write_text(f"Connection from {host} port {port} on 127.0.0.1\n")
    one(255, 0.5, server)  # `ssh slurm-cpu true`: sshd spoke with this client
    assert keeper.failed_starts == 0
    assert peer_gone(client)


# --------------------------------------------------------------------------------- idle


def test_idle_timer_stops_the_session_once_after_idle_timeout_without_a_child() -> None:
    clock = FakeClock()
    keeper = make_keeper(clock, idle=30)
    clock.advance(100)  # setting up took a while: the loop's start counts
    keeper.restart_idle()
    assert keeper.next_deadline() == clock.now + 30
    clock.advance(29.9)
    keeper.reap()
    assert not keeper.idle_over()
    clock.advance(0.1)
    keeper.reap()
    assert keeper.idle_over()
    assert not keeper.idle_over()  # once
    assert keeper.idle_deadline() is None


def test_idle_timer_does_not_run_while_a_connection_is_served(tmp_path: Path) -> None:
    clock, spawn = FakeClock(), FakeSpawn()
    keeper = make_keeper(clock, spawn, idle=30)
    keeper.restart_idle()
    clock.advance(20)
    keeper.start(socket.socket(), ["sshd", "-i"], tmp_path / "sshd.log")
    keeper.reap()
    assert keeper.idle_deadline() is None
    for _ in range(10):
        clock.advance(30)
        keeper.reap()
        assert not keeper.idle_over()
    spawn.started[0].returncode = 0  # the last connection closed: idle from now
    keeper.reap()
    closed = clock.now
    assert keeper.idle_deadline() == closed + 30
    clock.advance(29)
    keeper.reap()
    assert not keeper.idle_over()
    clock.advance(1)
    keeper.reap()
    assert keeper.idle_over()


def test_without_an_idle_timeout_the_session_never_stops_by_itself() -> None:
    clock = FakeClock()
    keeper = make_keeper(clock, idle=0)
    clock.advance(10**6)
    keeper.reap()
    assert not keeper.idle_over() and keeper.next_deadline() is None


# ---------------------------------------------------------------------- the time limit


def test_open_shells_are_told_once_warn_before_seconds_before_the_time_limit(
    tmp_path: Path,
) -> None:
    clock, spawn, told = FakeClock(), FakeSpawn(), Told()
    said: list[str] = []
    keeper = make_keeper(clock, spawn, valid_for=3600, warn_before=600, tell=told, said=said)
    assert keeper.ends_at == clock.wall_now + 3600
    assert keeper.next_deadline() == clock.now + 3000
    keeper.start(socket.socket(), ["sshd", "-i"], tmp_path / "sshd.log")
    keeper.start(socket.socket(), ["sshd", "-i"], tmp_path / "sshd.log")
    clock.advance(2999)
    keeper.warn_if_due()
    assert told.calls == [] and said == []
    clock.advance(1)
    keeper.warn_if_due()
    at = time.strftime("%H:%M", time.localtime(keeper.ends_at))
    assert told.calls == [({4000, 4001}, "\r\ninteractive-slurm: job 4711 reaches its time limit "
                                         f"in 10 min (at {at}); save your work\r\n")]
    assert said == [f"the time limit is at {at}; told 2 open shell(s)"]
    clock.advance(60)
    keeper.warn_if_due()
    assert len(told.calls) == 1 and keeper.warn_deadline() is None  # once


def test_the_warning_says_what_the_wall_clock_leaves() -> None:
    clock, told = FakeClock(), Told()
    keeper = make_keeper(clock, valid_for=120, warn_before=100, tell=told)
    clock.advance(20)
    clock.wall_now += 55  # the wall clock moved on its own: 45 s left by it
    keeper.warn_if_due()
    [(roots, line)] = told.calls
    assert roots == set() and "reaches its time limit in 45 s (at " in line


def test_no_warning_when_warn_before_is_zero() -> None:
    clock, told = FakeClock(), Told()
    keeper = make_keeper(clock, valid_for=60, warn_before=0, tell=told)
    clock.advance(59)
    keeper.warn_if_due()
    assert told.calls == [] and keeper.next_deadline() is None


@pytest.mark.parametrize(("seconds", "text"), [(8, "8 s"), (1800, "30 min"), (7200, "2 h"),
                                               (90, "90 s")])
def test_format_duration(seconds: int, text: str) -> None:
    assert keeper_mod.format_duration(seconds) == text
