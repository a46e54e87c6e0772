"""Web apps inside a session's job: start one from its recipe, list them, stop one.

This runs in the job, on its node: `interactive-slurm open` (laptop) and `remote app start` (login
node) reach it through the session's own sshd (``ssh slurm-cpu ... remote app start NAME``), so
the command is one of the job's processes, with the job's environment, like a shell of the user's.

Starting an app:

1. the recipe (:mod:`~interactive_slurm.node.apprecipes`) is loaded and its programs are looked
   up in the user's login shell (``~/.profile``, modules, conda's init): a missing one is one
   line, the recipe's ``install`` hint;
2. a private folder (0700) on the node's temp space holds the app's socket and runtime files;
   a fresh token (:mod:`secrets`) is made;
3. the supervisor (``interactive-slurm app-serve``, :mod:`~interactive_slurm.node.appserve`)
   starts in a session of its own, runs the app and, when the recipe says so, the guard; it
   stops the app when asked, when the app's session (and so the job) ends, or when the app exits;
4. the app's record (name, socket, token, supervisor pid, log) goes in the job's state folder,
   ``jobs/<id>/apps/NAME.json`` (0600); its output goes to ``NAME.log`` beside it;
5. the readiness probe (an HTTP GET of the recipe's ``ready`` path, with the token) is asked
   until it answers, within the recipe's ``ready_timeout``; otherwise the app is stopped and the
   error shows the end of its log.

One app of each recipe runs per job: starting it again returns the running one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from interactive_slurm.base import folders, httpprobe, locks, selfcmd
from interactive_slurm.base.errors import AppError, CommandError, EndpointError
from interactive_slurm.base.fsutil import read_private, unlink_if_present, write_private_atomic
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.node import apprecipes, tmpdirs

RECORD_VERSION = 1
#: The public socket (what the laptop forwards to) and, behind a guard, the app's own.
PUBLIC_SOCKET = "http.sock"
APP_SOCKET = "app.sock"
SPEC_FILE = "spec.json"
APP_PID_FILE = "app.pid"
#: A unix socket's path must fit in sun_path (108 bytes with its NUL on Linux).
SOCKET_PATH_MAX = 100
#: Seconds ``stop`` waits for the supervisor to stop the app and clean up.
STOP_WAIT = 30.0
PROBE_GAP = 0.25
#: The supervisor's verb (hidden: not for people).
SERVE_VERB = "app-serve"
#: Login shells that take ``-l -c SCRIPT NAME ARGS`` (anything else: /bin/sh).
POSIX_SHELLS = ("bash", "zsh", "ksh", "ksh93", "mksh", "dash", "sh", "ash")
_MISSING = 3  # the exit status of the lookup script when a program is missing
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class AppRecord:
    """One running app, as ``jobs/<id>/apps/NAME.json`` holds it (0600: it has the token)."""

    name: str
    job_id: str
    host: str
    pid: int              # the supervisor's
    pid_start: int        # its start time (/proc, clock ticks): a reused pid is not it
    socket: str           # the public socket (what to forward to)
    token: str
    url: str              # the page to open (the token is added as ?token=)
    ready_path: str
    guarded: bool
    cookie: str           # the guard's cookie name ("" without a guard)
    log: str              # the app's output (and the supervisor's)
    app_log: str          # a log file the app writes itself ("" if none)
    runtime: str          # the app's private folder on the node
    listen: str
    port: int             # tcp apps: the port in their private network (0 for unix apps)
    workdir: str
    recipe: str           # the recipe file
    started_at: float
    args: tuple[str, ...] = ()
    ready: bool = False
    version: int = RECORD_VERSION

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["args"] = list(self.args)
        return data

    def public(self) -> dict[str, object]:
        """What ``list`` shows: everything but the token."""
        return {k: v for k, v in self.as_dict().items() if k != "token"}

    def probe_headers(self) -> dict[str, str]:
        """How a probe shows the token: the guard's cookie, or the app's own header."""
        if self.guarded:
            return {"Cookie": f"{self.cookie}={self.token}"}
        return {"Authorization": f"token {self.token}"}


def record_path(job_id: str, name: str) -> Path:
    return Path(folders.job_apps_dir(job_id)) / f"{name}.json"


def log_path(job_id: str, name: str) -> Path:
    return Path(folders.job_apps_dir(job_id)) / f"{name}.log"


def write_record(rec: AppRecord) -> None:
    write_private_atomic(record_path(rec.job_id, rec.name), json.dumps(rec.as_dict(), indent=1) + "\n")


def parse_record(text: str) -> AppRecord | None:
    """A record from its JSON; None for anything that is not one of this version."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            return None
        data["args"] = tuple(data.get("args", ()))
        rec = AppRecord(**data)
    except (ValueError, TypeError):
        return None
    ints = (rec.pid, rec.pid_start, rec.port)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        return None
    return rec


def read_record(job_id: str, name: str) -> AppRecord | None:
    try:
        return parse_record(read_private(record_path(job_id, name)))
    except (OSError, EndpointError, UnicodeDecodeError):
        return None


def read_records(job_id: str) -> list[AppRecord]:
    """The apps recorded for ``job_id`` (unreadable or unsafe records are left out)."""
    folder = Path(folders.job_apps_dir(job_id))
    try:
        names = sorted(p.stem for p in folder.glob("*.json"))
    except OSError:
        return []
    found = (read_record(job_id, name) for name in names if apprecipes.NAME_RE.match(name))
    return [rec for rec in found if rec is not None]


def remove_record(rec: AppRecord) -> None:
    """Remove ``rec``'s file if it is still this record (not a newer start's)."""
    current = read_record(rec.job_id, rec.name)
    if current is not None and (current.pid, current.pid_start) == (rec.pid, rec.pid_start):
        unlink_if_present(record_path(rec.job_id, rec.name))


# --- processes -----------------------------------------------------------------------------------

def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat); None if it has
    ended (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2:].split()
    if fields[:1] in ([b"Z"], [b"X"]):  # a zombie has ended: only its parent has not reaped it
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int, start: int) -> bool:
    return pid > 0 and process_start(pid) == start


@dataclass(frozen=True)
class Here:
    """The job this command runs in, and its session (whose end ends the apps)."""

    job_id: str
    host: str
    session_pid: int
    session_start: int


def here(env: Mapping[str, str] = os.environ) -> Here:
    """The session of the job this command runs in, on this node; AppError elsewhere."""
    job_id = env.get("SLURM_JOB_ID", "")
    if not endpoint.is_job_id(job_id):
        raise AppError("not inside a Slurm job: run this in your session (ssh slurm-cpu ...), or "
                       "use `remote app start` on the login node")
    ep = endpoint.read_job(job_id)
    if ep is None:
        raise AppError(f"job {job_id} has no running interactive-slurm session (see `remote list`)")
    host = socket.gethostname()
    if ep.host != host:
        raise AppError(f"job {job_id}'s session runs on {ep.host}, not on {host}: run this in "
                       "the session (ssh slurm-cpu ...)")
    start = process_start(ep.session_pid)
    if start is None:
        raise AppError(f"job {job_id}'s session (pid {ep.session_pid}) is not running on {host}")
    return Here(job_id, host, ep.session_pid, start)


def login_shell() -> str:
    """The user's login shell when it is a POSIX one, else /bin/sh."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    if os.path.basename(shell) in POSIX_SHELLS and os.access(shell, os.X_OK):
        return shell
    return "/bin/sh"


def shell_argv(shell: str, setup: str, script: str, name: str, args: Sequence[str]) -> list[str]:
    """``args`` run by ``script`` in a login shell (``$0`` is ``name``), after the recipe's
    ``setup`` lines: the environment the user's own terminal would have."""
    body = f"{setup}\n{script}" if setup else script
    return [shell, "-l", "-c", body, name, *args]


LOOKUP_SCRIPT = ('for p in "$@"; do command -v "$p" >/dev/null 2>&1 || '
                 f'{{ printf "%s\\n" "$p"; exit {_MISSING}; }}; done')


def check_programs(runner: Runner, recipe: apprecipes.Recipe, shell: str, host: str) -> None:
    """The recipe's programs are on the login shell's PATH; else the recipe's install hint."""
    argv = shell_argv(shell, recipe.setup, LOOKUP_SCRIPT, "interactive-slurm-app", recipe.requires)
    try:
        result = runner.run(argv, check=False, timeout=120)
    except CommandError as exc:
        raise AppError(f"could not look for {recipe.requires[0]} with your login shell: {exc}") from exc
    if result.returncode == _MISSING:
        lines = result.stdout.strip().splitlines()
        missing = lines[-1] if lines and lines[-1] in recipe.requires else recipe.requires[0]
        raise AppError(f"{missing} not found on the compute node ({host}): {recipe.install} "
                       f"[app {recipe.name}: {recipe.package}; recipe {recipe.source}]")
    if result.returncode != 0:
        detail = clean(result.stderr.strip() or result.stdout.strip() or "no output")[-300:]
        raise AppError(f"your login shell ({shell} -l) failed on {host} while looking for "
                       f"{', '.join(recipe.requires)} (exit {result.returncode}): {detail}")


def clean(text: str) -> str:
    """Text from a log or another program, without terminal control characters."""
    return _CONTROL_RE.sub("?", text)


def log_tail(*paths: str, lines: int = 15) -> str:
    out = []
    for path in paths:
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        tail = [clean(line) for line in text.splitlines()[-lines:]]
        if tail:
            out.append(f"--- the end of {path}:\n" + "\n".join(tail))
    return "\n".join(out) or "(the log is empty)"


# --- start ---------------------------------------------------------------------------------------

class Launched(Protocol):
    """The started supervisor (a :class:`subprocess.Popen`)."""

    pid: int

    def poll(self) -> int | None: ...


Launch = Callable[[Sequence[str], Path], Launched]


def launch_supervisor(argv: Sequence[str], log: Path) -> Launched:
    """The supervisor in a session of its own (the ssh command that started it may end), its
    output to ``log`` (0600, a fresh one), no terminal and none of the ssh channel's pipes."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(fd)


def supervisor_argv(spec: Path) -> list[str]:
    """This very install's interpreter and version runs the supervisor."""
    return [*selfcmd.module_argv(), SERVE_VERB, str(spec)]


@dataclass(frozen=True)
class Spec:
    """What the supervisor needs (``spec.json`` in the app's private folder, 0600)."""

    name: str
    job_id: str
    session_pid: int
    session_start: int
    shell: str
    setup: str
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    runtime: str
    socket: str
    app_socket: str
    port: int
    listen: str
    guarded: bool
    token: str
    cookie: str

    def to_json(self) -> str:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Spec:
        data = json.loads(text)
        data["argv"] = tuple(data["argv"])
        return cls(**data)


def runtime_dir(job_id: str, name: str, env: Mapping[str, str]) -> Path:
    """The app's private folder (0700) in the node's temp space: the temp dir sweep of a later
    session removes it if the job ends without its supervisor cleaning up."""
    prefix = f"{tmpdirs.PREFIX}{job_id}-app_{name.replace('-', '_')}_"
    for base in (tmpdirs.base_dir(env, lambda _msg: None), tmpdirs.FALLBACK):
        if len(os.path.join(base, prefix + "12345678", PUBLIC_SOCKET)) <= SOCKET_PATH_MAX:
            folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
            os.chmod(folder, 0o700)
            return folder
    raise AppError(f"no temp folder with a path short enough for a unix socket (TMPDIR="
                   f"{env.get('TMPDIR', '')!r} and {tmpdirs.FALLBACK})")


def resolve_workdir(workdir: str | None, env: Mapping[str, str]) -> str:
    """``workdir`` as an absolute path on the node: relative to the home there (as a path
    typed on the laptop, where ``~`` would be the laptop's home); home when not given."""
    home = env.get("HOME") or os.path.expanduser("~")
    text = workdir or "~"
    if text == "~" or text.startswith("~/"):
        text = home + text[1:]
    path = os.path.normpath(os.path.join(home, text))
    if not os.path.isdir(path):
        raise AppError(f"--workdir {workdir}: no such folder on {socket.gethostname()}")
    return path


def alive(rec: AppRecord) -> bool:
    return rec.host == socket.gethostname() and same_process(rec.pid, rec.pid_start)


@dataclass
class Starter:
    """Starts apps in this job; the parts that touch the world are fields, for tests."""

    runner: Runner
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    launch: Launch = launch_supervisor
    probe: Callable[..., int | None] = httpprobe.status
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time

    def start(self, name: str, *, args: Sequence[str] = (), workdir: str | None = None
              ) -> tuple[AppRecord, bool]:
        """The app ``name`` running and answering in this job; True when it already was."""
        ctx = here(self.env)
        recipe = apprecipes.load(name)
        apps = folders.ensure_private_dir(folders.job_apps_dir(ctx.job_id))
        with locks.held(apps / f"{name}.lock"):
            old = read_record(ctx.job_id, name)
            if old is not None:
                if alive(old) and self.answers(old):
                    if args and tuple(args) != old.args:
                        raise AppError(f"{name} already runs in job {ctx.job_id} with other "
                                       f"arguments ({' '.join(old.args) or 'none'}): stop it "
                                       f"first (remote app stop {name})")
                    return old, True
                terminate(old)
            return self.fresh(ctx, recipe, tuple(args), resolve_workdir(workdir, self.env)), False

    def answers(self, rec: AppRecord) -> bool:
        status = self.probe(rec.socket, rec.ready_path, headers=rec.probe_headers(), timeout=10)
        return status is not None and 200 <= status < 400

    def fresh(self, ctx: Here, recipe: apprecipes.Recipe, args: tuple[str, ...], workdir: str
              ) -> AppRecord:
        shell = login_shell()
        check_programs(self.runner, recipe, shell, ctx.host)
        runtime = runtime_dir(ctx.job_id, recipe.name, self.env)
        public = str(runtime / PUBLIC_SOCKET)
        app_socket = str(runtime / APP_SOCKET) if recipe.guarded else public
        port = random.SystemRandom().randint(20000, 60000) if recipe.listen == "tcp" else 0
        token = secrets.token_hex(24)
        values = {"socket": app_socket, "port": str(port), "workdir": workdir,
                  "runtime": str(runtime), "token": token}
        argv, app_env, app_log = recipe.render(values)
        spec = Spec(
            name=recipe.name, job_id=ctx.job_id, session_pid=ctx.session_pid,
            session_start=ctx.session_start, shell=shell, setup=recipe.setup,
            argv=(*argv, *args), env=app_env, workdir=workdir, runtime=str(runtime),
            socket=public, app_socket=app_socket if recipe.guarded else "", port=port,
            listen=recipe.listen, guarded=recipe.guarded, token=token,
            cookie=f"interactive-slurm-{ctx.job_id}-{recipe.name}" if recipe.guarded else "",
        )
        spec_path = runtime / SPEC_FILE
        log = log_path(ctx.job_id, recipe.name)
        try:
            write_private_atomic(spec_path, spec.to_json())
            proc = self.launch(supervisor_argv(spec_path), log)
        except OSError as exc:
            shutil.rmtree(runtime, ignore_errors=True)
            raise AppError(f"could not start {recipe.name}'s supervisor: {exc}") from exc
        start = process_start(proc.pid) or 0
        rec = AppRecord(
            name=recipe.name, job_id=ctx.job_id, host=ctx.host, pid=proc.pid, pid_start=start,
            socket=public, token=token, url=recipe.url, ready_path=recipe.ready,
            guarded=recipe.guarded, cookie=spec.cookie, log=str(log), app_log=app_log,
            runtime=str(runtime), listen=recipe.listen, port=port, workdir=workdir,
            recipe=str(recipe.source), started_at=self.wall(), args=args,
        )
        write_record(rec)
        try:
            self.wait_ready(rec, recipe, proc)
        except AppError:
            terminate(rec, proc)
            raise
        ready = AppRecord(**{**asdict(rec), "ready": True})
        if proc.poll() is None:
            write_record(ready)
        return ready

    def wait_ready(self, rec: AppRecord, recipe: apprecipes.Recipe, proc: Launched) -> None:
        """Until the app answers its ready path with the token (AppError, with the end of its
        log, when it exits, refuses the token or stays silent past ``ready_timeout``)."""
        deadline = self.clock() + recipe.ready_timeout
        last: int | None = None
        while True:
            code = proc.poll()
            if code is not None:
                self.fail(rec, f"it exited (status {code}) before it answered")
            status = self.probe(rec.socket, rec.ready_path, headers=rec.probe_headers(), timeout=5)
            if status is not None and 200 <= status < 400:
                return
            if status in (401, 403):
                self.fail(rec, f"it refused its own token (HTTP {status} for {rec.ready_path}): "
                               f"the recipe's token setting does not reach it ({recipe.source})")
            last = status if status is not None else last
            if self.clock() >= deadline:
                said = f"HTTP {last}" if last is not None else "no answer"
                self.fail(rec, f"it did not answer {rec.ready_path} within {recipe.ready_timeout} s "
                               f"({said}; the recipe's ready_timeout sets the wait)")
            self.sleep(PROBE_GAP)

    @staticmethod
    def fail(rec: AppRecord, why: str) -> None:
        raise AppError(f"{rec.name} did not start in job {rec.job_id} on {rec.host}: {why}\n"
                       + log_tail(rec.log, rec.app_log))


# --- stop ----------------------------------------------------------------------------------------

def _wait_gone(pid: int, start: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while same_process(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(rec: AppRecord, proc: Launched | None = None, *, wait: float = STOP_WAIT) -> None:
    """Stop ``rec``'s supervisor (it stops the app and removes the socket and its folder); if it
    does not go in time, kill it, the app's process group and the folder ourselves."""
    here_too = rec.host == socket.gethostname()
    if here_too and same_process(rec.pid, rec.pid_start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        if not _wait_gone(rec.pid, rec.pid_start, wait):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(ChildProcessError, OSError):
            proc.poll()
    if here_too:
        _kill_app(rec)
        shutil.rmtree(rec.runtime, ignore_errors=True)
    remove_record(rec)


def _kill_app(rec: AppRecord) -> None:
    """The app's process group, when its supervisor could not stop it (its pid file)."""
    try:
        text = Path(rec.runtime, APP_PID_FILE).read_text().split()
        pid, start = int(text[0]), int(text[1])
    except (OSError, ValueError, IndexError):
        return
    if same_process(pid, start):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def stop(name: str, env: Mapping[str, str] = os.environ) -> AppRecord:
    """Stop the app ``name`` of the job this runs in."""
    ctx = here(env)
    apprecipes.check_name(name)
    rec = read_record(ctx.job_id, name)
    if rec is None:
        running = ", ".join(r.name for r in read_records(ctx.job_id)) or "none"
        raise AppError(f"no app {name} in job {ctx.job_id} (running: {running})")
    with locks.held(Path(folders.job_apps_dir(ctx.job_id)) / f"{name}.lock", timeout=STOP_WAIT):
        terminate(rec)
    return rec


# --- list ----------------------------------------------------------------------------------------

def state(rec: AppRecord) -> str:
    """``running``/``starting``, ``gone`` (its supervisor is not running), or ``?`` when the app
    runs on another node than this one (its process cannot be looked at from here)."""
    if rec.host != socket.gethostname():
        return "running" if rec.ready else "starting"
    if not same_process(rec.pid, rec.pid_start):
        return "gone"
    return "running" if rec.ready else "starting"


def format_table(rows: Sequence[AppRecord]) -> str:
    header = ("JOBID", "APP", "STATE", "NODE", "PID", "SOCKET", "LOG")
    body = [(r.job_id, r.name, state(r), r.host, str(r.pid), r.socket, r.log) for r in rows]
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in (header, *body))
