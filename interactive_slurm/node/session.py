"""The compute-node side: this job's keyhole and an ``sshd -i`` per proven connection.

temp dir (0700) -> fresh ed25519 host key + certificate from the user's host CA -> sshd_config
(checked with ``sshd -t``) -> the session binds a random port itself, IPv4 and IPv6 (hard binds:
any failed bind means another port) -> publish the endpoint with a fresh keyhole secret -> one
single-threaded loop that wires two pieces together: the :mod:`~interactive_slurm.node.gate`
(accepted connections get the keyhole HELLO; unproven ones are closed at their deadline and the
oldest is dropped beyond ``gate.MAX_PENDING``) and the :mod:`~interactive_slurm.node.keeper` (a
connection that proves the secret gets its own ``sshd -i``; the idle timer and the time-limit
warning). The record's mtime is renewed every ``endpoint.RENEW_SECONDS`` (its lease). With an
``idle_timeout``, no ``sshd -i`` child for that long makes the session scancel its own job.
``warn_before`` seconds before the time limit, the terminals of the shells under its own
``sshd -i`` children get one line (wall-style). On SIGTERM/SIGINT/SIGHUP: leave an ``ended`` note
with the reason, remove the record, stop the ``sshd -i`` children, remove the temp dir.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import pwd
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import string
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from interactive_slurm import __version__
from interactive_slurm.base import folders, sshhosts
from interactive_slurm.base.errors import CommandError, SessionError
from interactive_slurm.base.runner import Result, Runner, describe
from interactive_slurm.connect import endpoint, keyhole
from interactive_slurm.node import hostca, tmpdirs
from interactive_slurm.node.gate import Gate
from interactive_slurm.node.keeper import Keeper, Spawn, format_duration, spawn_sshd

if TYPE_CHECKING:  # containers and the image cache load only for a session that uses one
    from interactive_slurm.node import containers

TEMPLATES = Path(__file__).parents[1] / "templates"  # package data, beside the folders
#: Environment passed into ssh sessions: the job's view of itself and its devices.
ENV_PREFIXES = ("SLURM_", "INTERACTIVE_SLURM_")
ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "TMPDIR")
_ENV_VALUE_RE = re.compile(r"^[^\"\\\n\r\x00]*\Z", re.ASCII)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
PORT_ATTEMPTS = 20
BACKLOG = 512
#: Seconds before the time limit at which open shells are told the job is about to end.
WARN_BEFORE = 600
#: The session's own environment may shorten that (tests); it is not passed on to shells.
WARN_BEFORE_ENV = "INTERACTIVE_SLURM_WARN_BEFORE"
#: When the batch script started (templates/session.sbatch); not passed on to shells either.
SCRIPT_START_ENV = "INTERACTIVE_SLURM_SCRIPT_START"


def pts_mount_lacks_tty_gid(mounts: str) -> bool:
    """Whether the devpts mount in effect on ``/dev/pts`` (the last one listed in
    ``/proc/self/mounts``: a later mount hides an earlier one) has no ``gid=`` option."""
    found = [fields for fields in (line.split() for line in mounts.splitlines())
             if len(fields) > 3 and fields[1] == "/dev/pts" and fields[2] == "devpts"]
    return bool(found) and "gid=" not in found[-1][3]


@dataclass(frozen=True)
class SessionSpec:
    job_id: str
    kind: str
    profile: str
    valid_for: int
    sshd: str
    container: str = ""
    container_runtime: str = ""  # "": the first runtime installed on the node
    idle_timeout: int = 0  # seconds without an SSH connection before the job ends itself; 0: never
    warn_before: int = WARN_BEFORE
    image_cache: str = ""  # a shared container image cache (config.toml); "": the user's own
    #: The profile's ``transport`` ("": unset, config.toml's applies), kept in the record.
    transport: str = ""
    #: The transport that applies (the profile's, else config.toml's): ``srun`` listens on
    #: loopback only, where the bridge connects, closing the port to other nodes.
    effective_transport: str = "auto"


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables sshd should set in every session (values sshd_config can carry)."""
    return {
        name: value
        for name, value in sorted(env.items())
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES)
        and _ENV_NAME_RE.match(name)
        and _ENV_VALUE_RE.match(value)
    }


def setenv_line(env: Mapping[str, str]) -> str:
    if not env:
        return ""
    return "SetEnv " + " ".join(f'"{name}={value}"' for name, value in env.items())


def render_sshd_config(
    *, job_id: str, kind: str, user: str, host_key: Path, host_cert: Path,
    env: Mapping[str, str], extra: str = "",
) -> str:
    for value in (user, str(host_key), str(host_cert)):
        if any(c.isspace() or c in "\"'\\#" for c in value):
            raise SessionError(f"cannot put {value!r} in sshd_config: it has spaces or quotes")
    template = string.Template((TEMPLATES / "sshd_config").read_text())
    return template.substitute(
        version=__version__, job_id=job_id, kind=kind, user=user,
        host_key=host_key, host_cert=host_cert,
        setenv=setenv_line(env), extra=extra,
    )


PORTS_ENV = "INTERACTIVE_SLURM_PORTS"


def port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so outgoing connections never hold ours;
    ``INTERACTIVE_SLURM_PORTS=LOW-HIGH`` (in the job's environment) narrows it, e.g. to what a
    firewall lets through."""
    value = os.environ.get(PORTS_ENV, "")
    low_text, _, high_text = value.partition("-")
    if low_text.isdigit() and high_text.isdigit() and 1024 <= int(low_text) <= int(high_text) < 65536:
        return int(low_text), int(high_text)
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (max(1024, min(20000, low - 5000)), max(2048, low - 1))


def pick_port(rng: random.Random) -> int:
    low, high = port_range()
    return rng.randint(low, high)


def bind_listeners(port: int, *, loopback: bool = False) -> list[socket.socket]:
    """Listening sockets on ``0.0.0.0:port`` and ``[::]:port`` (IPv6 only, no dual stack);
    with ``loopback``, on ``127.0.0.1`` and ``[::1]`` only (the ``srun`` transport's bridge
    connects on the node itself: the port is closed to every other machine).

    Hard binds: OSError when either family's bind fails, so a neighbour holding the port on one
    family never leaves us serving the other. IPv6 is skipped only where the node has none.
    """
    socks: list[socket.socket] = []
    try:
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(s4)
        s4.bind(("127.0.0.1" if loopback else "0.0.0.0", port))  # noqa: S104 - the login node
        s4.listen(BACKLOG)
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                return socks
            raise
        socks.append(s6)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s6.bind(("::1" if loopback else "::", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                s6.close()
                socks.remove(s6)
                return socks
            raise
        s6.listen(BACKLOG)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    for sock in socks:
        sock.setblocking(False)
    return socks


#: The session's unix socket in its 0700 temp folder, for the ``srun`` transport's bridge.
SOCKET_NAME = "session.sock"
#: sun_path holds 108 bytes on Linux (with the final NUL): longer paths get no unix socket.
SUN_PATH_MAX = 107


def bind_unix(path: Path) -> socket.socket | None:
    """A listening unix socket at ``path`` (its folder is the session's 0700 one, so no other
    user can connect); None when the path is too long for one (the bridge then uses TCP on
    loopback)."""
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


_STATE_RE = re.compile(r"\bJobState=([A-Z_]+)")
_REASONS = {
    "CANCELLED": "was cancelled",
    "TIMEOUT": "reached its time limit",
    "DEADLINE": "reached its deadline",
    "PREEMPTED": "was preempted",
    "NODE_FAIL": "ended: its node failed",
    "OUT_OF_MEMORY": "ran out of memory",
}


def end_reason(scontrol_output: str, *, now: float, started: float, time_limit: int) -> str:
    """Why the job is ending, from ``scontrol show job -o`` (Slurm sends SIGTERM for both a
    cancel and the time limit); without a state, the time limit decides."""
    match = _STATE_RE.search(scontrol_output)
    if match and match.group(1) in _REASONS:
        return _REASONS[match.group(1)]
    if match and match.group(1) not in ("RUNNING", "COMPLETING", "PENDING"):
        return f"ended ({match.group(1)})"
    if now >= started + time_limit - 60:
        return "reached its time limit"
    return "was cancelled"


def plain_name(text: str) -> str:
    """``text`` when it is a name the record may carry (:func:`endpoint.is_plain_name`), else
    ""."""
    return text if endpoint.is_plain_name(text) else ""


LISTEN, SIGNAL = "listen", "signal"  # what the loop's selector keys of its own carry
#: Connections taken from a listener per readiness event, so a flood cannot keep the loop from
#: anything else.
ACCEPT_BATCH = 64


class Session:
    """One running session; :meth:`run` blocks until the job ends (or sshd cannot start)."""

    def __init__(
        self, runner: Runner, spec: SessionSpec, log: TextIO = sys.stderr, *,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
        spawn: Spawn = spawn_sshd,
    ) -> None:
        self.runner, self.spec, self.log = runner, spec, log
        self.clock, self.wall = clock, wall
        self.tmp: Path | None = None
        self.cfg: Path | None = None
        self.listeners: list[socket.socket] = []
        self.port = 0
        self.socket_path = ""  # the unix listener's path ("": none)
        self.secret = keyhole.new_secret()
        self.record: endpoint.Endpoint | None = None
        self.container: containers.Container | None = None
        #: The unproven connections, once the loop runs (see :meth:`attach`).
        self.gate: Gate | None = None
        #: The ``sshd -i`` children and the timers; the session's start is its start.
        self.keeper = Keeper(
            job_id=spec.job_id, valid_for=spec.valid_for, idle_timeout=spec.idle_timeout,
            warn_before=spec.warn_before, say=self.say, clock=clock, wall=wall, spawn=spawn,
        )
        #: Why the job ends when the session itself ended it (its ``ended`` note says so).
        self.end_reason = ""
        #: The start's steps as they end: (name, clock()), for the ready line.
        self.steps: list[tuple[str, float]] = []
        #: When the batch script started (wall clock), if it said (:func:`script_start`).
        self.script_start: float | None = None

    @property
    def ends_at(self) -> float:
        """When the job reaches its time limit (epoch seconds)."""
        return self.keeper.ends_at

    def say(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} interactive-slurm session {self.spec.job_id}: {message}", file=self.log,
              flush=True)

    def check_ptys(self) -> None:
        """Warn in the job log when ptys are not group tty (``ssh -t`` would then fail)."""
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return
        if pts_mount_lacks_tty_gid(mounts):
            self.say("warning: /dev/pts is not mounted with gid=<tty group>; an "
                     "unprivileged sshd cannot give shells a terminal (ssh -t fails). "
                     "Ask the admins to mount devpts with gid=5,mode=620.")

    def prepare(self) -> tuple[Path, Path]:
        self.check_ptys()
        folders.ensure_private_dir(folders.job_dir(self.spec.job_id))
        with contextlib.suppress(FileNotFoundError):  # a note from an earlier run of this job
            (Path(folders.job_dir(self.spec.job_id)) / endpoint.ENDED_NOTE).unlink()
        self.tmp = tmpdirs.make_session_dir(self.runner, self.spec.job_id, self.say)
        key = self.tmp / "host_ed25519_key"
        self.runner.run([
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key),
            "-C", f"interactive-slurm job {self.spec.job_id}",
        ])
        cert = hostca.sign_host_key(
            self.runner, key.with_suffix(".pub"), job_id=self.spec.job_id,
            kind=self.spec.kind, valid_seconds=self.spec.valid_for,
        )
        return key, cert

    def write_config(self, key: Path, cert: Path, extra: str, name: str = "sshd_config") -> Path:
        assert self.tmp is not None
        cfg = self.tmp / name
        cfg.write_text(render_sshd_config(
            job_id=self.spec.job_id, kind=self.spec.kind, user=getpass.getuser(),
            host_key=key, host_cert=cert, env=forwarded_env(os.environ), extra=extra,
        ))
        os.chmod(cfg, 0o600)
        return cfg

    def sshd_argv(self, *args: str) -> list[str]:
        """sshd with ``args``, inside the job's container when the profile names one."""
        assert self.tmp is not None
        argv = [self.spec.sshd, *args]
        if self.container is not None:
            argv = self.container.wrap(argv)
        return argv

    def start_container(self) -> None:
        """Prepare the profile's container (its image once per cache) before sshd runs in it."""
        assert self.tmp is not None
        from interactive_slurm.node import containers
        from interactive_slurm.node.imagecache import CacheUnusable, ImageCache

        runtime = containers.find_runtime(self.spec.container_runtime)
        self.say(f"starting a {runtime.name} container from {self.spec.container}")
        needs = containers.Needs(
            job_id=self.spec.job_id, sshd=self.spec.sshd, workdir=self.tmp,
            binds=(Path(pwd.getpwuid(os.getuid()).pw_dir), self.tmp, Path(folders.state_dir())),
            gpu=self.spec.kind == "gpu", env=dict(os.environ),
        )
        cache = ImageCache(Path(self.spec.image_cache), shared=True) if self.spec.image_cache \
            else ImageCache()
        try:
            self.container = containers.prepare(
                self.runner, runtime, self.spec.container, needs, cache, log=self.say
            )
        except CacheUnusable as exc:
            self.say(f"{exc}; preparing the image in your own cache instead")
            self.container = containers.prepare(
                self.runner, runtime, self.spec.container, needs, ImageCache(), log=self.say
            )
        containers.record(Path(folders.job_dir(self.spec.job_id)), self.container)

    def configure(self, key: Path, cert: Path) -> None:
        """Write sshd_config and check it with ``sshd -t`` (which also loads the host key and
        certificate): every connection's ``sshd -i`` uses this file.

        ``PerSourcePenalties no`` goes in where sshd knows it (9.8+; one user, many
        connections): the file with it and the file without it are checked side by side, so an
        older sshd costs no second check on the way to the first connection."""
        assert self.tmp is not None
        if self.spec.container:
            self.start_container()
        files = [self.write_config(key, cert, "PerSourcePenalties no"),
                 self.write_config(key, cert, "", name="sshd_config.plain")]
        checks = self.check_configs(files)
        chosen = next((path for path, check in zip(files, checks) if check.returncode == 0), None)
        if chosen is None:
            raise SessionError(f"{describe(self.sshd_argv('-t'))} refuses this job's "
                               f"sshd_config: {checks[-1].stderr.strip()[-500:] or 'no output'}")
        os.replace(chosen, files[0])  # the one in use is always sshd_config
        files[1].unlink(missing_ok=True)
        self.cfg = files[0]

    def check_configs(self, files: list[Path]) -> list[Result]:
        """``sshd -t`` of each file, side by side; in a container one after the other, up to
        the first that passes (each check starts the container)."""
        argvs = [self.sshd_argv("-t", "-f", str(path)) for path in files]
        if self.container is not None:
            results: list[Result] = []
            for argv in argvs:
                results.append(self.runner.run(argv, check=False))
                if results[-1].returncode == 0:
                    break
            return results
        found: list[Result | BaseException | None] = [None] * len(argvs)

        def check(index: int) -> None:
            try:
                found[index] = self.runner.run(argvs[index], check=False)
            except BaseException as exc:  # re-raised below, in the session's own thread
                found[index] = exc

        others = [threading.Thread(target=check, args=(i,)) for i in range(1, len(argvs))]
        for thread in others:
            thread.start()
        check(0)
        for thread in others:
            thread.join()
        for item in found:
            if isinstance(item, BaseException):
                raise item
        return [item for item in found if isinstance(item, Result)]

    def listen(self) -> None:
        rng = random.SystemRandom()
        low, high = port_range()
        tried: set[int] = set()
        errors = []
        while len(tried) < min(PORT_ATTEMPTS, high - low + 1):
            port = pick_port(rng)
            if port in tried:
                continue
            tried.add(port)
            try:
                self.listeners = bind_listeners(
                    port, loopback=self.spec.effective_transport == "srun")
            except OSError as exc:
                errors.append(f"{port}: {exc.strerror or exc}")
                continue
            self.port = port
            break
        else:
            raise SessionError("no free port for the session (tried " + ", ".join(errors) + ")")
        if self.tmp is None:  # (unit tests of the ports alone)
            return
        unix = bind_unix(self.tmp / SOCKET_NAME)
        if unix is not None:
            self.listeners.append(unix)
            self.socket_path = str(self.tmp / SOCKET_NAME)

    def publish(self) -> None:
        if self.record is None:
            self.record = endpoint.Endpoint(
                job_id=self.spec.job_id, kind=self.spec.kind, profile=self.spec.profile,
                host=socket.gethostname(), port=self.port,
                session_pid=os.getpid(), started_at=self.wall(), container=self.spec.container,
                secret=self.secret.hex(), ends_at=self.ends_at,
                node=plain_name(os.environ.get("SLURMD_NODENAME", "")),
                partition=plain_name(os.environ.get("SLURM_JOB_PARTITION", "")),
                cluster=plain_name(os.environ.get("SLURM_CLUSTER_NAME", "")),
                socket=self.socket_path, transport=self.spec.transport,
            )
        path = endpoint.publish(self.record)
        self.say(f"{self.ready_timing()}: session pid {os.getpid()} "
                 f"listening on {self.record.host}:{self.port}; endpoint {path}")

    def step(self, name: str) -> None:
        """One step of the start is done (the ready line gives each one's time)."""
        self.steps.append((name, self.clock()))

    def ready_timing(self) -> str:
        """``ready in 0.120 s after its start at <ISO time with ms> (script 0.050 s, host key
        0.020 s, sshd -t 0.030 s, listen 0.001 s)``: ``script`` is the time from the batch
        script's start (:data:`SCRIPT_START_ENV`; else this process's, from /proc) to the
        session's (bash, the interpreter, the imports, config.toml); what
        benchmarks/slurm_latency.py reads back."""
        now, wall = self.clock(), self.wall()
        parts, last = [], self.keeper.started
        total = now - last
        began = self.script_start
        if began is None:
            age = process_age()
            began = None if age is None else wall - age
        if began is not None and began <= wall - total:
            parts.append(f"script {wall - total - began:.3f} s")
            total = wall - began
        for name, at in self.steps:
            parts.append(f"{name} {at - last:.3f} s")
            last = at
        began = wall - total
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(began)) + \
            f".{int(began * 1000) % 1000:03d}"
        return f"ready in {total:.3f} s after its start at {stamp} ({', '.join(parts)})"

    def renew(self) -> None:
        """Renew the lease (the record's mtime); republish a record a proxy dropped as stale."""
        try:
            os.utime(Path(folders.endpoint_file(self.spec.job_id)))
        except FileNotFoundError:
            self.say("the endpoint record was removed (a proxy found it stale?); publishing it "
                     "again")
            self.publish()

    # -- the loop ---------------------------------------------------------------------------

    def attach(self, sel: selectors.BaseSelector) -> Gate:
        """Open the gate on ``sel`` and watch the listeners there (their events go to
        :meth:`handle`, as do the gate's)."""
        self.gate = Gate(self.secret, self.spec.job_id, sel)
        for listener in self.listeners:
            sel.register(listener, selectors.EVENT_READ, LISTEN)
        return self.gate

    def handle(self, key: selectors.SelectorKey) -> None:
        """One readiness event of a listener or of a connection waiting at the gate."""
        assert self.gate is not None
        if key.data == LISTEN:
            assert isinstance(key.fileobj, socket.socket)
            self.accept(key.fileobj)
            return
        proven = self.gate.readable(key)
        if proven is not None:
            self.hand_to_sshd(proven)

    def accept(self, listener: socket.socket) -> None:
        assert self.gate is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: drop the oldest unproven connection
                self.say(f"accept failed: {exc}")
                self.gate.evict_oldest()
                return
            self.gate.admit(conn, self.clock())

    def hand_to_sshd(self, sock: socket.socket) -> None:
        """``sshd -i`` owns the proven connection from here (the keeper holds our copy of the
        socket until it exits)."""
        assert self.tmp is not None and self.cfg is not None
        log = self.tmp / "sshd.log"
        self.keeper.start(sock, self.sshd_argv("-i", "-f", str(self.cfg), "-E", str(log)), log)

    def end_idle(self) -> bool:
        """The idle timeout ran out: scancel our own job. False when the session should end by
        itself instead (scancel failed)."""
        idle = format_duration(self.spec.idle_timeout)
        self.say(f"no SSH connection for {idle} (idle_timeout of profile {self.spec.profile}); "
                 f"cancelling job {self.spec.job_id}")
        self.end_reason = f"was cancelled after {idle} without an SSH connection (idle_timeout)"
        result = self.runner.run(["scancel", self.spec.job_id], check=False, timeout=30)
        if result.returncode != 0:
            self.say(f"scancel {self.spec.job_id} failed ({result.stderr.strip() or 'no output'});"
                     " ending the session instead")
            self.write_note(self.end_reason)
            return False
        return True


    def serve(self) -> int:
        """The loop; returns the session's exit status once a stop signal arrives."""
        stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        old_wakeup = signal.set_wakeup_fd(wfd)
        for handled in (*stops, signal.SIGCHLD):
            signal.signal(handled, lambda *_: None)
        sel = selectors.DefaultSelector()
        try:
            gate = self.attach(sel)
            sel.register(rfd, selectors.EVENT_READ, SIGNAL)
            self.keeper.restart_idle()  # idle from now, not from the job's start
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            next_renew = self.clock() + endpoint.RENEW_SECONDS
            while True:
                now = self.clock()
                dues = (gate.next_deadline(), self.keeper.next_deadline())
                wake = min([next_renew, *(due for due in dues if due is not None)])
                for key, _events in sel.select(max(0.0, wake - now)):
                    if key.data == SIGNAL:
                        for signum in os.read(rfd, 256):
                            if signum in stops:
                                self.say(f"got {signal.Signals(signum).name}; stopping")
                                self.leave_note(signum)
                                return 0
                    else:
                        self.handle(key)
                self.keeper.reap()
                now = self.clock()
                if self.keeper.idle_over() and not self.end_idle():
                    return 0
                self.keeper.warn_if_due()
                gate.expire(now)
                if now >= next_renew:
                    self.renew()
                    next_renew = now + endpoint.RENEW_SECONDS
        finally:
            signal.set_wakeup_fd(old_wakeup)
            sel.close()
            os.close(rfd)
            os.close(wfd)

    def leave_note(self, signum: int) -> None:
        """Write why the job ends where proxies look (before their connections close).

        The record goes first: no new connect comes here, and a proxy whose connection Slurm's
        signal has already closed sees the session stopping and waits for the note."""
        endpoint.remove(self.spec.job_id)
        if self.end_reason:
            reason = self.end_reason
        elif signum == signal.SIGTERM:
            result = self.runner.run(
                ["scontrol", "show", "job", "-o", self.spec.job_id], check=False, timeout=3
            ) if self.spec.job_id else None
            reason = end_reason(result.stdout if result else "", now=self.wall(),
                                started=self.keeper.wall_start, time_limit=self.spec.valid_for)
        else:
            reason = f"was stopped ({signal.Signals(signum).name})"
        self.write_note(reason)

    def write_note(self, reason: str) -> None:
        from interactive_slurm.base.fsutil import write_private_atomic

        with contextlib.suppress(OSError):
            write_private_atomic(Path(folders.job_dir(self.spec.job_id)) / endpoint.ENDED_NOTE,
                                 reason + "\n")

    def stop_children(self) -> None:
        self.keeper.stop()
        if self.gate is not None:
            self.gate.close()
        for listener in self.listeners:
            listener.close()

    def cleanup(self) -> None:
        endpoint.remove(self.spec.job_id)
        self.stop_children()
        self.stop_persistent_shell()
        if self.container is not None:
            self.container.cleanup(self.runner)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stop_persistent_shell(self) -> None:
        """End the job's tmux server (``ssh slurm-cpu-tmux``): daemonized, it would outlive the
        job where Slurm tracks processes by parentage (proctrack/linuxproc)."""
        if shutil.which("tmux") is None:
            return
        socket_name = sshhosts.TMUX_SOCKET.format(job_id=self.spec.job_id)
        with contextlib.suppress(CommandError):
            self.runner.run(["tmux", "-L", socket_name, "kill-server"], check=False, timeout=10)

    def run(self) -> int:
        # Block stop signals while starting so cleanup always runs; serve() takes them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        raise_fd_limit()
        try:
            key, cert = self.prepare()
            self.step("host key")
            self.configure(key, cert)
            self.step("sshd -t")
            self.listen()
            self.step("listen")
            self.publish()
            return self.serve()
        except SessionError as exc:
            self.say(f"error: {exc}")
            self.write_note(f"stopped: {str(exc).splitlines()[0]} (see {folders.job_log(self.spec.job_id)})")
            raise
        except CommandError as exc:
            raise SessionError(str(exc)) from exc
        finally:
            self.cleanup()


def script_start(env: MutableMapping[str, str], wall: float) -> float | None:
    """When the batch script started, from :data:`SCRIPT_START_ENV` (bash's $EPOCHREALTIME,
    whose decimal point follows the locale), taken out of ``env`` (it is not the shells'); None
    when missing, unreadable or not within the last 10 minutes."""
    text = env.pop(SCRIPT_START_ENV, "").replace(",", ".")
    try:
        started = float(text)
    except ValueError:
        return None
    return started if wall - 600 < started <= wall else None


def process_age() -> float | None:
    """Seconds since this process started, from ``/proc/self/stat`` (clock ticks after boot,
    so 0.01 s steps); None where there is no /proc."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5)
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def raise_fd_limit() -> None:
    """Room for gate.MAX_PENDING unproven connections next to the served ones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))


def spec_from_env(
    env: Mapping[str, str], *, kind: str, profile: str, valid_for: int, sshd: str, container: str,
    container_runtime: str = "", idle_timeout: int = 0, image_cache: str = "",
    transport: str = "", configured: str = "auto",
) -> SessionSpec:
    job_id = env.get("SLURM_JOB_ID", "")
    if not endpoint.is_job_id(job_id):
        raise SessionError("`interactive-slurm session` runs inside a Slurm job (no SLURM_JOB_ID)")
    if container:
        from interactive_slurm.node import containers

        containers.find_runtime(container_runtime)  # fail fast: no runtime on this node
    elif not os.path.isabs(sshd) or not os.access(sshd, os.X_OK):
        raise SessionError(f"sshd not found at {sshd} on {socket.gethostname()} "
                           "(set `sshd` in config.toml)")
    warn_text = env.get(WARN_BEFORE_ENV, "")
    warn_before = int(warn_text) if warn_text.isascii() and warn_text.isdigit() else WARN_BEFORE
    return SessionSpec(job_id, kind, profile, valid_for, sshd, container, container_runtime,
                       idle_timeout=idle_timeout, warn_before=warn_before, image_cache=image_cache,
                       transport=transport, effective_transport=transport or configured)
