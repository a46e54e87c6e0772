"""The ProxyCommand: reuse a live session or get one from Slurm, then splice.

fast path: an endpoint of this kind/profile whose session passes the keyhole -> splice. No Slurm
query. A record that fails it is dropped (stale or squatted) and this connect goes on below.
slow path (per-user lock while deciding): reuse a RUNNING/PENDING job of this kind/profile or
submit one, re-check so racing proxies end with one job, then wait for the endpoint (cheap stat
polls; one-RPC Slurm queries with backoff) showing progress on stderr. Nothing but SSH bytes reaches stdout.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from _socket import socket as Socket  # what the keyhole connects (socket.socket is one)
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Callable, TextIO

from interactive_slurm.base import folders, locks
from interactive_slurm.base.config import Config
from interactive_slurm.base.errors import (
    Aborted,
    CommandError,
    EndpointError,
    InteractiveSlurmError,
    JobEndedError,
    ProxyError,
)
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.connect.fastpath import (
    StaleEndpoint,
    find_and_connect,
    open_connection,
)
from interactive_slurm.install import installs
from interactive_slurm.login import profiles, slurm

UNREACHABLE_GRACE = 30.0  # seconds a new endpoint may fail the keyhole before we give up


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


def fast_path(req: Request) -> tuple[endpoint.Endpoint, Socket] | None:
    """A keyhole-checked socket to a live session of this kind/profile, from endpoint files
    alone; stale records met on the way are dropped."""
    return find_and_connect(req.kind, req.profile, req.container)


@contextmanager
def user_lock(err: TextIO | None = None) -> Iterator[None]:
    """The per-user lock of the slow path; says so on ``err`` when it has to wait for it."""
    folders.ensure_private_dir(folders.state_dir())

    def say_waiting() -> None:
        if err is not None:
            err.write("interactive-slurm: another connection is deciding on a job; waiting\n")
            err.flush()

    with locks.held(folders.lock_file(), on_wait=say_waiting):
        yield


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
    folders.ensure_private_dir(folders.logs_dir())
    comment = slurm.build_comment(
        kind=req.kind, profile=req.profile, res_hash=profiles.resource_hash(res),
        container=container, install=installs.id_of(sys.prefix) or "-",
        runtime=res.container_runtime or "",
    )
    argv = slurm.sbatch_argv(
        name=slurm.job_name(req.kind, req.profile),
        comment=comment,
        log_path=Path(folders.logs_dir()) / "job-%j.log",
        workdir=Path.home(),
        resource_args=profiles.sbatch_resource_args(res),
    )
    script = slurm.render_batch_script(
        python=sys.executable, kind=req.kind, profile=req.profile,
        valid_for=res.time_seconds, container=container or None,
        runtime=res.container_runtime, idle_timeout=res.idle_timeout,
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
    """One status line on stderr: rewritten in place on a terminal, plain lines otherwise.

    ``key`` is what the line says apart from the ticking elapsed time: a pipe gets a new line
    only when it changes, a terminal gets every change (the elapsed time ticks each second).
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self.last_key = ""

    def show(self, message: str, key: str | None = None) -> None:
        key = message if key is None else key
        if message == self.last or (not self.tty and key == self.last_key):
            return
        self.last, self.last_key = message, key
        if self.tty:
            self.stream.write(f"\r\033[Kinteractive-slurm: {message}")
        else:
            self.stream.write(f"interactive-slurm: {message}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def describe_state(job: slurm.Job) -> str:
    text = f"job {job.job_id} ({job.name}) {job.state}"
    if job.pending:
        if job.reason and job.reason != "None":
            text += f" ({job.reason})"
        if job.start_time and job.start_time not in ("N/A", "Unknown"):
            text += f", expected start {job.start_time}"
    elif job.running:
        text += f" on {job.nodes}, starting sshd"
    return text


def describe(job: slurm.Job, waited: float) -> str:
    return f"{describe_state(job)} [{int(waited)}s]"


#: Gaps between the waiting loop's Slurm queries (then the last one, repeated). The state,
#: reason and expected start change only when the scheduler runs. One query is one RPC
#: (``scontrol --local show job``); with the duplicate check, the submit and the second check
#: (2 + 1 + 2 RPCs), a job that stays pending costs 9 RPCs in its first minute (at 2, 6, 15, 35 s).
QUERY_GAPS = (2.0, 4.0, 9.0, 20.0, 30.0)
#: Gaps between retries while slurmctld does not answer (each try can itself take ~9 s).
UNREACHABLE_GAPS = (2.0, 4.0, 8.0, 15.0)
#: After the job log changes (the job started, the session logs a step or fails), ask this soon.
LOG_CHANGE_QUERY = 1.0
#: Record polls (one stat each): POLL_MIN right after the job log appears or changes, then
#: growing by POLL_GROWTH up to POLL_MAX (no log yet: the job has not started).
POLL_MIN, POLL_GROWTH, POLL_MAX, POLL_MAX_PENDING = 0.005, 1.25, 0.1, 0.2
QUERY_TIMEOUT = 30.0
#: Reasons a pending job gives when nodes it could use are down or drained (then the partition's
#: nodes are looked at once per reason: 2 RPCs). Not "Resources": a busy cluster says that all
#: day, and the check would push a pending job's first minute past 10 RPCs.
NODE_REASONS = ("ReqNodeNotAvail", "Nodes required for job are DOWN", "NodeDown",
                "Nodes_required_for_job_are_DOWN")


class _Query:
    """One Slurm query in a thread, so a slurmctld that takes seconds to (not) answer never
    stops the status line from ticking or the ssh client from being watched."""

    def __init__(self, fn: Callable[[], slurm.Job | None]) -> None:
        import threading

        self.job: slurm.Job | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()
        self.thread.join(0.05)  # most answers take a few ms: no extra loop round for them

    def _run(self, fn: Callable[[], slurm.Job | None]) -> None:
        try:
            self.job = fn()
        except BaseException as exc:  # handed to the waiting thread, which raises or retries
            self.error = exc

    @property
    def finished(self) -> bool:
        return not self.thread.is_alive()


class Waiter:
    """Waits for a job's endpoint; watches the ssh client (stdin) for going away meanwhile.

    The record is found by stat polls (a few ms apart once the job log shows that the job has
    started, slower before); Slurm is asked on the QUERY_GAPS schedule, sooner after the job log
    changes; a slurmctld that does not answer is retried with backoff while the line says so.
    """

    def __init__(
        self, runner: Runner, job_id: str, *, timeout: float, progress: Progress,
        watch_fd: int | None, clock: Callable[[], float] = time.monotonic,
        job: slurm.Job | None = None,
    ) -> None:
        self.runner, self.job_id, self.timeout = runner, job_id, timeout
        self.progress, self.watch_fd, self.clock = progress, watch_fd, clock
        self.buffered = b""
        self.last_job: slurm.Job | None = job
        self.failures = self.unreachable_tries = 0
        self.queries = 0 if job is None else 1  # a known job: its first query waits QUERY_GAPS[0]
        self.checked_reason = ""
        self.status = describe_state(job) if job is not None else ""

    def _watch(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
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
        """The job's state now (one RPC); None when Slurm does not know it (any more)."""
        return slurm.job_state(self.runner, self.job_id, timeout=QUERY_TIMEOUT)

    def _answered(self, q: _Query) -> float:
        """Act on a finished query; returns the gap until the next one."""
        if q.error is not None:
            if not isinstance(q.error, CommandError):
                raise q.error
            if slurm.unreachable(q.error):
                self.failures = 0
                self.unreachable_tries += 1
                self.status = f"job {self.job_id}: Slurm is not answering (retrying)"
                return UNREACHABLE_GAPS[min(self.unreachable_tries - 1, len(UNREACHABLE_GAPS) - 1)]
            self.failures += 1  # a passing failure is retried; 3 in a row fail
            if self.failures >= 3:
                raise q.error
            return UNREACHABLE_GAPS[0]
        self.failures = self.unreachable_tries = 0
        job = q.job
        if job is None:
            raise JobEndedError(
                f"job {self.job_id} is gone from the queue{failure(self.job_id)}; see "
                f"{Path(folders.job_log(self.job_id))}"
            )
        self.last_job = job
        if job.ended:
            reason = f" ({job.reason})" if job.reason and job.reason != "None" else ""
            raise JobEndedError(
                f"job {self.job_id} ended {job.state}{reason} before its session was "
                f"ready{failure(self.job_id)}; see {Path(folders.job_log(self.job_id))}"
            )
        if job.pending and job.reason != self.checked_reason:
            self.checked_reason = job.reason
            if job.reason.startswith(NODE_REASONS) and job.partition:
                self._check_nodes(job)
        self.status = describe_state(job)
        self.queries += 1
        return QUERY_GAPS[min(self.queries - 1, len(QUERY_GAPS) - 1)]  # queries >= 1 here

    def _check_nodes(self, job: slurm.Job) -> None:
        """A pending job whose partition has no usable node at all will not start: say which
        nodes are in what state instead of waiting without end."""
        try:
            nodes = slurm.partition_nodes(self.runner, job.partition, timeout=QUERY_TIMEOUT)
        except CommandError:
            return  # the next query shows the reason; this check is a courtesy
        if nodes and not any(node.usable for node in nodes):
            listed = ", ".join(
                f"{n.name} is {n.state.upper()}" + (f" ({n.reason})" if n.reason else "")
                for n in nodes[:5]
            ) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
            raise ProxyError(
                f"job {self.job_id} cannot start: no node of partition {job.partition} takes "
                f"jobs now ({listed}); try again when the node is back"
            )

    def _record(self) -> endpoint.Endpoint | None:
        """The job's record once it exists (a stat first: cheap); corrupt or unsafe is none."""
        try:
            os.stat(Path(folders.endpoint_file(self.job_id)))
        except OSError:
            return None
        try:
            return endpoint.read_job(self.job_id)
        except EndpointError:
            return None

    def _log_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(Path(folders.job_log(self.job_id)))
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def wait(self) -> tuple[endpoint.Endpoint, Socket]:
        start = self.clock()
        next_query = start + QUERY_GAPS[0] if self.last_job is not None else start
        pending: _Query | None = None
        asked_at = start
        unreachable_since: float | None = None
        log_stamp = self._log_stamp()
        interval = POLL_MIN if log_stamp else POLL_MAX_PENDING
        while True:
            now = self.clock()
            ep = self._record()
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
            stamp = self._log_stamp()
            if stamp != log_stamp:
                log_stamp, interval = stamp, POLL_MIN
                next_query = min(next_query, now + LOG_CHANGE_QUERY)
            if pending is None and now >= next_query:
                pending, asked_at = _Query(self.query), now
            if pending is not None and pending.finished:
                try:
                    gap = self._answered(pending)
                except InteractiveSlurmError:
                    self.progress.done()
                    raise
                pending = None
                next_query = asked_at + gap
            if self.status:
                self.progress.show(f"{self.status} [{int(now - start)}s]", key=self.status)
            if now - start > self.timeout:
                self.progress.done()
                raise ProxyError(
                    f"gave up after {self.timeout:g} s waiting for job {self.job_id} "
                    "(wait_timeout in config.toml, or --timeout)"
                )
            next_tick = start + int(now - start) + 1 if self.progress.tty else now + 3600
            self._watch(min(interval, next_tick - now, max(next_query - now, POLL_MIN)))
            interval = min(interval * POLL_GROWTH, POLL_MAX if log_stamp else POLL_MAX_PENDING)


def failure(job_id: str, tail: int = 16384) -> str:
    """``: <reason>`` from the last ``error: ...`` line of the job's log ("" if none)."""
    try:
        with open(Path(folders.job_log(job_id)), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - tail))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    errors = [line[len("error: "):].strip() for line in text.splitlines() if line.startswith("error: ")]
    return f": {errors[-1][:1000]}" if errors else ""


#: Signals that abort the wait. SIGPIPE too: Python ignores it, so a ``kill -PIPE`` (or a write
#: to the gone ssh client's stderr) would otherwise leave the proxy waiting.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE)


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGTERM/SIGHUP/SIGINT/SIGPIPE until the block ends (they are delivered then)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def abort_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP/SIGINT/SIGPIPE into :class:`Aborted` while waiting."""

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
) -> tuple[endpoint.Endpoint, Socket, bytes]:
    """Reuse or submit, then wait until the session answers (the slow path)."""
    submitted: list[str] = []
    try:
        with abort_on_signals():
            acquired = acquire(runner, req, on_submit=submitted.append, err=err)
            job = acquired.job
            verb = "submitted" if acquired.submitted else "reusing"
            err.write(f"interactive-slurm: {verb} job {job.job_id} ({job.name}, profile "
                      f"{req.profile}); log: {Path(folders.job_log(job.job_id))}\n")
            if acquired.note:
                err.write(f"interactive-slurm: note: {acquired.note}\n")
            err.flush()
            waiter = Waiter(runner, job.job_id, timeout=timeout, progress=Progress(err),
                            watch_fd=watch_fd, job=job)
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
    from interactive_slurm.connect.relay import relay

    found = fast_path(req)
    initial = b""
    if found is None:
        ep, sock, initial = ensure_session(
            runner, req, timeout=timeout or cfg.wait_timeout, err=err, watch_fd=stdin_fd
        )
    else:
        ep, sock = found
    relay(ep, sock, threshold=lambda: float(cfg.warn_time_left), stdin_fd=stdin_fd,
          stdout_fd=stdout_fd, initial=initial, err=err)
