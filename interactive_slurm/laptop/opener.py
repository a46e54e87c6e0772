"""``interactive-slurm open APP``: a web app inside the session's job, in the laptop's browser.

1. ``ssh HOST <install> remote app start APP --json``: the managed host (``slurm-cpu``) reuses the
   session or starts one, as any ``ssh slurm-cpu`` does (the queue's progress shows on the
   terminal); in the job the app starts from its recipe (node/apps.py) and answers with its
   record: its unix socket, its token, its page;
2. ``ssh -N -L 127.0.0.1:PORT:SOCKET HOST``: the laptop's loopback port to the app's socket over
   the same host; with the shared (ControlMaster) hosts ``setup`` writes, the forward is handed
   to the running master and rides its connection (then ``ssh -O cancel`` takes it back);
3. the page is asked through the forward until it answers, then its URL (with the token) is
   printed on stdout and opened in the browser when there is one;
4. until Ctrl-C the app is asked every :data:`WATCH_GAP` seconds (an ended job ends the wait);
   then the forward goes and, unless ``--keep``, the app is stopped in the job.

Everything runs through OpenSSH's own client and the user's ssh config, so the login hop's
shared connection, 2FA and jump hosts are the same as for ``ssh slurm-cpu``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from interactive_slurm.base import httpprobe, selfcmd
from interactive_slurm.base.errors import AppError, UsageError

#: Seconds to wait for the app's page through a new forward.
FORWARD_WAIT = 60.0
#: Seconds between the checks that the app still answers while the forward is kept.
WATCH_GAP = 10.0
#: Failed checks in a row that end the wait.
WATCH_MISSES = 3

_SOCKET_RE = re.compile(r"^/[A-Za-z0-9_./+@-]{1,200}\Z", re.ASCII)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}\Z", re.ASCII)
_PATH_RE = re.compile(r"^/[A-Za-z0-9/_.~%@:+-]{0,255}\Z", re.ASCII)
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{0,128}\Z", re.ASCII)
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z", re.ASCII)
_HOST_RE = re.compile(r"^[A-Za-z0-9_.%+-]{1,255}\Z", re.ASCII)


@dataclass(frozen=True)
class Request:
    """What ``open`` was asked for."""

    app: str
    host: str = "slurm-cpu"
    ssh_config: str | None = None
    args: tuple[str, ...] = ()
    workdir: str | None = None
    port: int = 0
    keep: bool = False
    browser: bool = True

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.app):
            raise UsageError(f"app {self.app!r}: expected a recipe name such as jupyter, lab, "
                             "code-server or tensorboard")
        if not _HOST_RE.match(self.host) or self.host.startswith("-"):
            raise UsageError(f"--host {self.host!r}: expected an ssh host name such as slurm-cpu")


@dataclass(frozen=True)
class Started:
    """The app's record as the job sent it (checked: it becomes ssh arguments and a URL)."""

    name: str
    job_id: str
    host: str
    socket: str
    token: str
    url: str
    ready_path: str
    guarded: bool
    cookie: str
    log: str
    reused: bool

    def probe_headers(self) -> dict[str, str]:
        if self.guarded:
            return {"Cookie": f"{self.cookie}={self.token}"}
        return {"Authorization": f"token {self.token}"}

    def address(self, port: int) -> str:
        return f"http://127.0.0.1:{port}{self.url}?token={self.token}"


def parse_started(text: str) -> Started:
    """The JSON ``remote app start --json`` printed; AppError for anything else."""
    try:
        data: Any = json.loads(text.strip().splitlines()[-1] if text.strip() else "")
    except ValueError:
        data = None
    checks: Mapping[str, Callable[[Any], bool]] = {
        "name": lambda v: isinstance(v, str) and bool(_NAME_RE.match(v)),
        "job_id": lambda v: isinstance(v, str) and v.isascii() and v.isdigit(),
        "host": lambda v: isinstance(v, str) and bool(_HOST_RE.match(v)),
        "socket": lambda v: isinstance(v, str) and bool(_SOCKET_RE.match(v)) and ".." not in v,
        "token": lambda v: isinstance(v, str) and bool(_TOKEN_RE.match(v)),
        "url": lambda v: isinstance(v, str) and bool(_PATH_RE.match(v)),
        "ready_path": lambda v: isinstance(v, str) and bool(_PATH_RE.match(v)),
        "guarded": lambda v: isinstance(v, bool),
        "cookie": lambda v: isinstance(v, str) and bool(_COOKIE_RE.match(v)),
        "log": lambda v: isinstance(v, str) and v.isprintable(),
        "reused": lambda v: isinstance(v, bool),
    }
    if not isinstance(data, dict):
        raise AppError(f"the job did not answer with an app record: {text.strip()[-200:]!r}")
    for key, ok in checks.items():
        if not ok(data.get(key)):
            raise AppError(f"the job's app record has a bad {key}: {data.get(key)!r}")
    return Started(**{key: data[key] for key in checks})


def ssh_base(req: Request) -> list[str]:
    return ["ssh", *(["-F", req.ssh_config] if req.ssh_config else [])]


def start_argv(req: Request) -> list[str]:
    words = ["remote", "app", "start", req.app, "--json"]
    if req.workdir:
        words += ["--workdir", req.workdir]
    if req.args:
        words += ["--", *req.args]
    return [*ssh_base(req), "-T", "--", req.host, selfcmd.in_job_command(*words)]


def stop_argv(req: Request) -> list[str]:
    return [*ssh_base(req), "-T", "--", req.host,
            selfcmd.in_job_command("remote", "app", "stop", req.app)]


def forward_spec(port: int, sock: str) -> str:
    return f"127.0.0.1:{port}:{sock}"


def forward_argv(req: Request, spec: str) -> list[str]:
    """The forward; a running master of the host takes it over and this ssh exits at once."""
    return [*ssh_base(req), "-N", "-T", "-o", "ExitOnForwardFailure=yes", "-L", spec, "--",
            req.host]


def cancel_argv(req: Request, spec: str) -> list[str]:
    return [*ssh_base(req), "-O", "cancel", "-L", spec, "--", req.host]


def wants_browser(env: Mapping[str, str], platform: str) -> bool:
    """A browser can open: macOS and Windows always have one; elsewhere a display or $BROWSER."""
    if platform == "darwin" or platform.startswith("win"):
        return True
    return any(env.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def interrupts_as_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the wait the way Ctrl-C does."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    wanted = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]  # not on Windows
    old = {s: signal.signal(s, interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


Spawn = Callable[..., "subprocess.Popen[bytes]"]


@dataclass
class Opener:
    """``open``'s steps; the parts that touch the world are fields, for tests."""

    spawn: Spawn = subprocess.Popen
    probe: Callable[..., int | None] = httpprobe.status
    browser: Callable[[str], object] = webbrowser.open
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    platform: str = sys.platform
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def say(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    def start(self, req: Request) -> Started:
        """The app running in the job (the session started if need be)."""
        proc = self.spawn(start_argv(req), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        out, _ = proc.communicate()
        if proc.returncode == 127:  # the shell in the job found no interactive-slurm to run
            raise AppError(f"the session behind {req.host} does not know its install (a session "
                           "started by an older version?): end it (`remote cancel` on the login "
                           "node) and open again")
        if proc.returncode != 0:
            raise AppError(f"could not start {req.app} in the job behind {req.host} (ssh exit "
                           f"{proc.returncode}; the reason is above)")
        return parse_started(out.decode("utf-8", "replace"))

    def forward(self, req: Request, started: Started, port: int
                ) -> tuple[subprocess.Popen[bytes], bool]:
        """The forward, once the app answers through it; True when a master holds it."""
        spec = forward_spec(port, started.socket)
        proc = self.spawn(forward_argv(req, spec), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL)
        deadline = self.clock() + FORWARD_WAIT
        in_master = False
        while True:
            code = proc.poll()
            if code is not None and code != 0:
                raise AppError(f"the forward to {started.name} failed (`ssh -L {spec}` exit {code}; "
                               f"is port {port} taken? --port chooses another)")
            in_master = code == 0
            status = self.probe(("127.0.0.1", port), started.ready_path,
                                headers=started.probe_headers(), timeout=10)
            if status is not None and 200 <= status < 400:
                return proc, in_master
            if self.clock() >= deadline:
                self.unforward(req, proc, in_master, spec)
                said = f"HTTP {status}" if status is not None else "no answer"
                raise AppError(f"{started.name} does not answer through the forward on port "
                               f"{port} ({said} within {FORWARD_WAIT:g} s)")
            self.sleep(0.2)

    def unforward(self, req: Request, proc: subprocess.Popen[bytes], in_master: bool,
                  spec: str) -> None:
        if in_master:
            self.spawn(cancel_argv(req, spec), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait(30)
        elif proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def watch(self, started: Started, port: int, proc: subprocess.Popen[bytes], in_master: bool
              ) -> None:
        """Until Ctrl-C (KeyboardInterrupt) or the app stops answering (AppError)."""
        misses = 0
        while True:
            self.sleep(WATCH_GAP)
            if not in_master and proc.poll() is not None:
                raise AppError(f"the forward to {started.name} ended (did job {started.job_id} "
                               "end? see `remote list`)")
            status = self.probe(("127.0.0.1", port), started.ready_path,
                                headers=started.probe_headers(), timeout=20)
            misses = 0 if status is not None and status < 500 else misses + 1
            if misses >= WATCH_MISSES:
                raise AppError(f"{started.name} stopped answering (did job {started.job_id} end? "
                               "see `remote list`)")

    def stop(self, req: Request, started: Started) -> None:
        proc = self.spawn(stop_argv(req), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -1
        if code != 0:  # on success the job said "stopped NAME in job N" itself
            self.say(f"could not stop {started.name} in job {started.job_id} (ssh exit {code}): "
                     f"`remote app stop {started.name}` on the login node does it")

    def run(self, req: Request) -> int:
        started = self.start(req)
        port = req.port or free_port()
        spec = forward_spec(port, started.socket)
        proc, in_master = self.forward(req, started, port)
        url = started.address(port)
        what = "was already running" if started.reused else "started"
        self.say(f"{started.name} {what} in job {started.job_id} on {started.host} (log: "
                 f"{started.log}); forwarded to 127.0.0.1:{port}")
        print(url, file=self.out, flush=True)
        if req.browser and wants_browser(self.env, self.platform):
            with contextlib.suppress(webbrowser.Error, OSError):
                self.browser(url)
        self.say("Ctrl-C ends the forward" + (" (the app keeps running: --keep)" if req.keep
                                              else " and stops the app (--keep leaves it running)"))
        ended: AppError | None = None
        try:
            with interrupts_as_ctrl_c():
                self.watch(started, port, proc, in_master)
        except KeyboardInterrupt:
            pass
        except AppError as exc:
            ended = exc
        finally:
            self.unforward(req, proc, in_master, spec)
        if ended is not None:
            raise ended
        if not req.keep:
            self.stop(req, started)
        return 0
