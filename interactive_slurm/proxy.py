"""The ProxyCommand: reuse a live session or get one from Slurm, then splice.

fast path: an endpoint of this kind/profile whose session passes the keyhole -> splice. No Slurm
query. A record that fails it is dropped (stale or squatted) and this connect goes on below.
slow path (per-user lock while deciding): reuse a RUNNING/PENDING job of this kind/profile or
submit one, re-check so racing proxies end with one job, then wait for the endpoint (cheap stat
polls; squeue with backoff) showing progress on stderr. Nothing but SSH bytes reaches stdout.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Callable, TextIO

from interactive_slurm import endpoint, installs, paths, profiles, slurm
from interactive_slurm.config import Config
from interactive_slurm.errors import (
    Aborted,
    EndpointError,
    InteractiveSlurmError,
    JobEndedError,
    ProxyError,
    SlurmError,
)
from interactive_slurm.fastpath import StaleEndpoint, find_and_connect, open_connection, report_end
from interactive_slurm.runner import Runner

STAT_INTERVAL = 0.25
UNREACHABLE_GRACE = 30.0  # seconds a new endpoint may fail the keyhole before we give up
BACKOFF = (0.0, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass
class Request:
    kind: str
    profile: str
    container: str = ""


@dataclass
class Acquired:
    job: slurm.Job
    submitted: bool
    note: str = ""


def fast_path(req: Request) -> tuple[endpoint.Endpoint, socket.socket] | None:
    """A keyhole-checked socket to a live session of this kind/profile, from endpoint files
    alone; stale records met on the way are dropped."""
    return find_and_connect(req.kind, req.profile, req.container)


@contextmanager
def user_lock(err: TextIO | None = None) -> Iterator[None]:
    """The per-user lock of the slow path; says so on ``err`` when it has to wait for it."""
    path = paths.lock_file()
    paths.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if err is not None:
                err.write("interactive-slurm: another connection is deciding on a job; waiting\n")
                err.flush()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def matching(jobs: list[slurm.Job], req: Request) -> list[slurm.Job]:
    """Live jobs for this request, best first: running before pending, then oldest."""
    live = [
        j for j in jobs
        if j.kind == req.kind and j.profile == req.profile and j.container == req.container
        and (j.running or j.pending)
    ]
    return sorted(live, key=lambda j: (not j.running, int(j.job_id)))


def submit(runner: Runner, req: Request, res: profiles.Resources) -> str:
    """sbatch a session for ``req`` (its container already resolved) with resources ``res``."""
    container = req.container
    paths.ensure_private_dir(paths.logs_dir())
    comment = slurm.build_comment(
        kind=req.kind, profile=req.profile, res_hash=profiles.resource_hash(res),
        container=container, install=installs.id_of(sys.prefix) or "-",
    )
    argv = slurm.sbatch_argv(
        name=slurm.job_name(req.kind, req.profile),
        comment=comment,
        log_path=paths.logs_dir() / "job-%j.log",
        workdir=Path.home(),
        resource_args=profiles.sbatch_resource_args(res),
    )
    script = slurm.render_batch_script(
        python=sys.executable, kind=req.kind, profile=req.profile,
        valid_for=res.time_seconds, container=container or None,
    )
    return slurm.submit(runner, argv, script)


def acquire(
    runner: Runner, req: Request, on_submit: Callable[[str], None] = lambda _: None,
    err: TextIO | None = None,
) -> Acquired:
    """Reuse or submit, under the per-user lock, so concurrent proxies share one job.

    ``on_submit`` learns the new job's id before any signal can interrupt (they are blocked
    while sbatch runs), so an abort can always cancel what this proxy submitted.
    """
    # Validate the profile before anything else: a bad profile submits nothing.
    res = profiles.load(req.profile).resources(req.kind)
    # A profile's own container is part of what the session is: match and submit with it.
    req = replace(req, container=req.container or res.container or "")
    with user_lock(err):
        jobs = slurm.my_jobs(runner)
        endpoint.prune({job.job_id for job in jobs})
        found = matching(jobs, req)
        if found:
            job = found[0]
            note = ""
            if job.meta.get("res") not in (None, profiles.resource_hash(res)):
                note = (f"job {job.job_id} was submitted before profile {req.profile!r} changed; "
                        f"`remote cancel {job.job_id}` to get the new resources next time")
            return Acquired(job, submitted=False, note=note)
        with signals_blocked():
            job_id = submit(runner, req, res)
            on_submit(job_id)
        found = matching(slurm.my_jobs(runner), req)
        winner = found[0] if found else None
        if winner is not None and winner.job_id != job_id:
            # Another login node submitted too: keep the older job, cancel ours.
            slurm.cancel(runner, [job_id])
            return Acquired(winner, submitted=False)
        mine = winner or slurm.job_info(runner, job_id)
        if mine is None:
            raise ProxyError(f"job {job_id} was submitted but Slurm does not know it")
        return Acquired(mine, submitted=True)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def show(self, message: str) -> None:
        if message == self.last:
            return
        self.last = message
        if self.tty:
            self.stream.write(f"\r\033[Kinteractive-slurm: {message}")
        else:
            self.stream.write(f"interactive-slurm: {message}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def describe(job: slurm.Job, waited: float) -> str:
    text = f"job {job.job_id} ({job.name}) {job.state}"
    if job.pending:
        if job.reason and job.reason != "None":
            text += f" ({job.reason})"
        if job.start_time and job.start_time not in ("N/A", "Unknown"):
            text += f", expected start {job.start_time}"
    elif job.running:
        text += f" on {job.nodes}, starting sshd"
    return f"{text} [{int(waited)}s]"


class Waiter:
    """Waits for a job's endpoint; watches the ssh client (stdin) for going away meanwhile."""

    def __init__(
        self, runner: Runner, job_id: str, *, timeout: float, progress: Progress,
        watch_fd: int | None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner, self.job_id, self.timeout = runner, job_id, timeout
        self.progress, self.watch_fd, self.clock = progress, watch_fd, clock
        self.buffered = b""
        self.last_job: slurm.Job | None = None
        self.failures = 0

    def _watch(self, seconds: float) -> None:
        if self.watch_fd is None:
            time.sleep(seconds)
            return
        ready, _, _ = select.select([self.watch_fd], [], [], seconds)
        if ready:
            data = os.read(self.watch_fd, 65536)
            if not data:
                self.watch_fd = None
                raise Aborted("the ssh client closed the connection while waiting")
            self.buffered += data
            if len(self.buffered) > 1 << 20:
                raise ProxyError("the ssh client sent more than 1 MiB before the session was up")

    def query(self) -> slurm.Job | None:
        """squeue for our job; a passing failure is retried on the next round (3 in a row fail)."""
        try:
            job = slurm.job_info(self.runner, self.job_id)
        except SlurmError:
            self.failures += 1
            if self.failures >= 3:
                raise
            return self.last_job
        self.failures = 0
        return job

    def wait(self) -> tuple[endpoint.Endpoint, socket.socket]:
        start = self.clock()
        next_query, step = start, 0
        unreachable_since: float | None = None
        while True:
            now = self.clock()
            try:
                ep = endpoint.read_job(self.job_id)
            except EndpointError:  # corrupt or unsafe: as good as none
                ep = None
            if ep is not None:
                try:
                    sock = open_connection(ep)
                except StaleEndpoint as exc:
                    if endpoint.expired(ep):  # left by an earlier run: the session republishes
                        endpoint.discard(ep)
                    # A new record whose session does not prove itself: retried for a while.
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > min(UNREACHABLE_GRACE, self.timeout):
                        self.progress.done()
                        raise ProxyError(
                            f"job {self.job_id}'s session at {ep.host}:{ep.port} does not answer "
                            f"through its keyhole: {exc}"
                        ) from exc
                else:
                    self.progress.done()
                    return ep, sock
            if now >= next_query:
                job = self.query()
                if job is None:
                    raise JobEndedError(
                        f"job {self.job_id} is gone from the queue; see {paths.job_log(self.job_id)}"
                    )
                self.last_job = job
                if job.ended:
                    self.progress.done()
                    reason = f" ({job.reason})" if job.reason and job.reason != "None" else ""
                    raise JobEndedError(
                        f"job {self.job_id} ended {job.state}{reason} before its session was "
                        f"ready; see {paths.job_log(self.job_id)}"
                    )
                self.progress.show(describe(job, now - start))
                step = min(step + 1, len(BACKOFF) - 1)
                next_query = now + BACKOFF[step]
            if now - start > self.timeout:
                self.progress.done()
                raise ProxyError(
                    f"gave up after {self.timeout:g} s waiting for job {self.job_id} "
                    "(wait_timeout in config.toml, or --timeout)"
                )
            self._watch(STAT_INTERVAL)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGTERM/SIGHUP/SIGINT until the block ends (they are delivered then)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def abort_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP/SIGINT into :class:`Aborted` while waiting."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Aborted(f"interrupted by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cancel_if_pending(runner: Runner, job_id: str, err: TextIO) -> None:
    """On abort: cancel the job we submitted, but only while it has not started."""
    job = slurm.job_info(runner, job_id)
    if job is not None and job.pending:
        slurm.cancel(runner, [job_id])
        err.write(f"interactive-slurm: cancelled pending job {job_id} that this proxy submitted\n")


def ensure_session(
    runner: Runner, req: Request, *, timeout: float, err: TextIO,
    watch_fd: int | None = None,
) -> tuple[endpoint.Endpoint, socket.socket, bytes]:
    """Reuse or submit, then wait until the session answers (the slow path)."""
    submitted: list[str] = []
    try:
        with abort_on_signals():
            acquired = acquire(runner, req, on_submit=submitted.append, err=err)
            job = acquired.job
            verb = "submitted" if acquired.submitted else "reusing"
            err.write(f"interactive-slurm: {verb} job {job.job_id} ({job.name}, profile "
                      f"{req.profile}); log: {paths.job_log(job.job_id)}\n")
            if acquired.note:
                err.write(f"interactive-slurm: note: {acquired.note}\n")
            err.flush()
            waiter = Waiter(runner, job.job_id, timeout=timeout, progress=Progress(err),
                            watch_fd=watch_fd)
            ep, sock = waiter.wait()
            return ep, sock, waiter.buffered
    except InteractiveSlurmError:
        if submitted:
            with signals_blocked():  # a second Ctrl-C waits for the cancel
                cancel_if_pending(runner, submitted[0], err)
        raise


def run(
    runner: Runner, cfg: Config, req: Request, *, timeout: float | None = None,
    stdin_fd: int = 0, stdout_fd: int = 1, err: TextIO = sys.stderr,
) -> None:
    """The whole ProxyCommand."""
    from interactive_slurm.splice import splice

    found = fast_path(req)
    initial = b""
    if found is None:
        ep, sock, initial = ensure_session(
            runner, req, timeout=timeout or cfg.wait_timeout, err=err, watch_fd=stdin_fd
        )
    else:
        ep, sock = found
    with sock:
        splice(stdin_fd, stdout_fd, sock, initial)
    report_end(ep.job_id, err)
