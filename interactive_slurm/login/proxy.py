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

from interactive_slurm.base import folders, locks, selfcmd
from interactive_slurm.base.config import Config
from interactive_slurm.base.errors import (
    Aborted,
    CommandError,
    EndpointError,
    InteractiveSlurmError,
    JobEndedError,
    ProxyError,
    SessionUnreachable,
    SubmitRefused,
)
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.connect.fastpath import (
    StaleEndpoint,
    find_and_connect,
    open_connection,
)
from interactive_slurm.install import installs
from interactive_slurm.login import profiles, slurm, waiting


@dataclass
class Request:
    kind: str
    profile: str
    container: str = ""
    #: config.toml's ``transport`` (a record's own, from its profile, comes first).
    transport: str = "auto"


@dataclass
class Acquired:
    job: slurm.Job
    submitted: bool
    note: str = ""


def fast_path(req: Request) -> tuple[endpoint.Endpoint, Socket] | None:
    """A keyhole-checked socket to a live session of this kind/profile, from endpoint files
    alone; stale records met on the way are dropped."""
    return find_and_connect(req.kind, req.profile, req.container, req.transport)


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
        runtime=res.container_runtime, idle_timeout=res.idle_timeout, transport=res.transport,
    )
    try:
        return slurm.submit(runner, argv, script)
    except SubmitRefused as exc:
        raise ProxyError(refusal_message(req, res, exc)) from exc


#: Profile keys whose valid values Slurm's accounting decides, and where the user sees them.
_ACCOUNTING_KEYS = ("account", "qos")


def refusal_message(req: Request, res: profiles.Resources, exc: SubmitRefused) -> str:
    """One line for a request sbatch refused: Slurm's reason, the profile key(s) by their
    ``profiles set`` names (``cpu.account``), the value the profile gave, and how to change it."""
    keys = [k for k in exc.key.replace(" or ", ", ").split(", ") if k]
    dotted = [f"{req.kind}.{k}" for k in keys]
    named = dotted[0] if len(dotted) == 1 else f"{', '.join(dotted[:-1])} or {dotted[-1]}"
    value = getattr(res, keys[0], None) if len(keys) == 1 else None
    now = f" (now {value})" if value not in (None, "") else ""
    setting = dotted[0] if len(dotted) == 1 else f"{req.kind}.KEY"
    lists = ("; `sacctmgr show assoc user=$USER format=account,qos` lists the accounts and QOS "
             "you have") if any(k in _ACCOUNTING_KEYS for k in keys) else ""
    return (f"Slurm refused a {req.kind} session of profile {req.profile}: {exc.reason}; change "
            f"{named}{now} in the profile (`interactive-slurm profiles {req.profile}` shows it, "
            f"`interactive-slurm profiles set {req.profile} {setting}=VALUE` changes it{lists})")


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
    when it changes and every :data:`REPEAT` seconds, a terminal gets every change (the elapsed
    time ticks each second).
    """

    #: On a pipe (VS Code, ``ssh -T``) an unchanged status is repeated this often (seconds), so
    #: a long wait shows that it is still waiting.
    REPEAT = 60.0

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.clock = clock
        self.last = ""
        self.last_key = ""
        self.shown_at = float("-inf")

    def show(self, message: str, key: str | None = None) -> None:
        key = message if key is None else key
        if message == self.last or (not self.tty and key == self.last_key
                                    and self.clock() - self.shown_at < self.REPEAT):
            return
        self.last, self.last_key, self.shown_at = message, key, self.clock()
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

    The I/O of the wait: stat polls for the record, Slurm queries in a thread, the ssh client's
    stdin, the status line. When to do each is :mod:`waiting`'s schedule, a pure function of
    what this loop has seen (``self.seen``).
    """

    def __init__(
        self, runner: Runner, job_id: str, *, timeout: float, progress: Progress,
        watch_fd: int | None, clock: Callable[[], float] = time.monotonic,
        job: slurm.Job | None = None, transport: str = "auto",
    ) -> None:
        self.runner, self.job_id, self.timeout = runner, job_id, timeout
        self.transport = transport
        self.progress, self.watch_fd, self.clock = progress, watch_fd, clock
        self.buffered = b""
        self.last_job: slurm.Job | None = job
        self.seen = waiting.Seen(answers=int(job is not None))  # wait() begins it
        self.reasons = slurm.ReasonWatch(job)  # acquire's answer counts
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
        return slurm.job_state(self.runner, self.job_id, timeout=waiting.QUERY_TIMEOUT)

    def _answered(self, q: _Query) -> None:
        """Act on a finished query (``self.seen`` learns how it went)."""
        if q.error is not None:
            if not isinstance(q.error, CommandError):
                raise q.error
            if slurm.unreachable(q.error):
                self.seen = self.seen.no_answer()
                self.status = f"job {self.job_id}: Slurm is not answering (retrying)"
                return
            self.seen = self.seen.fail()  # a passing failure is retried; a few in a row fail
            if self.seen.gives_up:
                raise q.error
            return
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
        previous = self.reasons.last
        key = self.reasons.see(job, self.clock())
        if job.pending:
            if key:
                raise ProxyError(
                    f"job {self.job_id} will not start: Slurm holds it for {job.reason} (profile "
                    f"{job.profile or '?'} asks for more than partition "
                    f"{job.partition or '(default)'} or your account allows); change {key} in "
                    "the profile (`interactive-slurm profiles` shows them)"
                )
            if job.reason != previous and job.reason.startswith(waiting.NODE_REASONS) \
                    and job.partition:
                self._check_nodes(job)
        self.status = describe_state(job)
        self.seen = self.seen.answer(held=job.pending and job.reason in waiting.HELD_REASONS)

    def _check_nodes(self, job: slurm.Job) -> None:
        """A pending job whose partition has no usable node at all will not start: say which
        nodes are in what state instead of waiting without end."""
        try:
            nodes = slurm.partition_nodes(self.runner, job.partition, timeout=waiting.QUERY_TIMEOUT)
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
        pending: _Query | None = None
        unreachable_since: float | None = None
        log_stamp = self._log_stamp()
        self.seen = waiting.Seen.begin(start, known=self.last_job is not None, log=log_stamp is not None)
        while True:
            now = self.clock()
            elapsed = now - start
            ep = self._record()
            if ep is not None:
                try:
                    sock = open_connection(ep, configured=self.transport)
                except StaleEndpoint as exc:
                    if endpoint.expired(ep):  # left by an earlier run: the session republishes
                        endpoint.discard(ep)
                    # A new record whose session does not prove itself: retried for a while.
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since > min(waiting.UNREACHABLE_GRACE, self.timeout):
                        self.progress.done()
                        raise SessionUnreachable(
                            f"job {self.job_id}'s session at {ep.host}:{ep.port} does not answer "
                            f"through its keyhole: {exc}"
                        ) from exc
                else:
                    self.progress.done()
                    return ep, sock
            stamp = self._log_stamp()
            if stamp != log_stamp:
                log_stamp = stamp
                self.seen = self.seen.log_change(now, exists=stamp is not None)
            if pending is None and now >= self.seen.next_query:
                pending, self.seen = _Query(self.query), self.seen.ask(now)
            if pending is not None and pending.finished:
                try:
                    self._answered(pending)
                except InteractiveSlurmError:
                    self.progress.done()
                    raise
                pending = None
            if self.status:
                self.progress.show(f"{self.status} [{int(elapsed)}s]", key=self.status)
            if elapsed > self.timeout:
                self.progress.done()
                raise ProxyError(
                    f"gave up after {self.timeout:g} s waiting for job {self.job_id} "
                    "(wait_timeout in config.toml, or --timeout)"
                )
            self._watch(self.seen.pause(now, tty=self.progress.tty))
            self.seen = self.seen.polled()


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
    job = slurm.job_state(runner, job_id)  # one RPC (squeue would cost three)
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
                            watch_fd=watch_fd, job=job, transport=req.transport)
            ep, sock = waiter.wait()
            return ep, sock, waiter.buffered
    except SessionUnreachable:
        if submitted:  # it runs, but nobody can use it: not left behind to hold the allocation
            with signals_blocked():
                slurm.cancel(runner, [submitted[0]])
            err.write(f"interactive-slurm: cancelled job {submitted[0]} that this proxy "
                      "submitted: its session cannot be reached\n")
        raise
    except InteractiveSlurmError:
        if submitted:
            with signals_blocked():  # a second Ctrl-C waits for the cancel
                cancel_if_pending(runner, submitted[0], err)
        raise


def start(runner: Runner, kind: str, profile: str | None, container: str,
          timeout: float | None) -> None:
    """``proxy KIND [--profile P] [--container C] [--timeout T]`` from its values, whether
    click read them (cli/main.py) or entry.py did (a plain call, without click): the trusted
    folders, config.toml and the names checked, then :func:`run`."""
    from interactive_slurm.base import config, values

    folders.check_trusted()  # StrictModes for config, profiles, known_hosts and state
    cfg = config.load()
    if container:
        profiles.check_container_option(container)
    name = values.check_profile_name(profile or cfg.default_profile)
    run(runner, cfg, Request(kind, name, container, cfg.transport), timeout=timeout)


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
        if (stdin_fd, stdout_fd, err) == (0, 1, sys.stderr):
            initial = hand_off(ep, sock, initial)  # returns only if it could not
    else:
        ep, sock = found
    relay(ep, sock, threshold=lambda: float(cfg.warn_time_left), stdin_fd=stdin_fd,
          stdout_fd=stdout_fd, initial=initial, err=err)


def hand_off(ep: endpoint.Endpoint, sock: Socket, initial: bytes) -> bytes:
    """Replace this process by the lean relay (``interactive-slurm relay-fd FD JOB``) with the
    connected socket: what the wait needed (click, the Slurm layer, threads: ~20 MB) goes, and
    the connection costs what a reused one does. Returns only when the exec failed (this
    process then relays itself): the ssh client's bytes not yet sent on."""
    try:
        if initial:
            sock.sendall(initial)  # the ssh client's first bytes, read while waiting
            initial = b""
        os.set_inheritable(sock.fileno(), True)
        sys.stderr.flush()
        argv = [*selfcmd.argv(), "relay-fd", str(sock.fileno()), ep.job_id]
        os.execv(argv[0], argv)
    except OSError:
        pass
    return initial
