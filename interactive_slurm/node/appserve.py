"""The supervisor of one web app in a job (``interactive-slurm app-serve SPEC``, started by
:mod:`~interactive_slurm.node.apps`, never by people).

It runs detached from the ssh command that started it, writes to the app's log, and:

- for a ``tcp`` app, first moves into a private network namespace (:mod:`netns`), so the app's
  ``127.0.0.1:PORT`` is nobody else's;
- is a child subreaper, so whatever the app starts (Jupyter's kernels start sessions of their
  own) stays below it and is stopped with it;
- starts the app in the user's login shell (the recipe's ``setup`` lines first), in a process
  group of its own;
- for a guarded app, serves :mod:`~interactive_slurm.node.appguard` on the public socket;
- once a second, checks the app and the job's session: when the session's process is gone (the
  job ends, is cancelled, or its session was killed) or the app exits, or on SIGTERM (``remote
  app stop``), it stops the app (SIGTERM to its group, then SIGKILL to everything left below it
  after :data:`GRACE` seconds), removes the socket, the app's folder and its record, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from interactive_slurm.base.errors import AppError
from interactive_slurm.base.fsutil import read_private, write_private_atomic
from interactive_slurm.node import appguard, apps, netns

#: Seconds between checks of the app and the session.
POLL = 1.0
#: Seconds the app has to stop after SIGTERM before everything left is killed.
GRACE = 10.0
PR_SET_CHILD_SUBREAPER = 36


def say(name: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} interactive-slurm app {name}: {message}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    """Orphans below this process come to it, not to init (Linux 3.4+; else nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                text = fh.read()
            ppid = int(text[text.rfind(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def start_app(spec: apps.Spec) -> subprocess.Popen[bytes]:
    argv = apps.shell_argv(spec.shell, spec.setup, 'exec "$@"', f"interactive-slurm-{spec.name}",
                           spec.argv)
    env = {**os.environ, **spec.env}
    return subprocess.Popen(argv, cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


async def watch(spec: apps.Spec, proc: subprocess.Popen[bytes]) -> str:
    """Serve the guard (if any) until the app or the session ends or a signal comes; why."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    why: list[str] = []

    def on_signal(signum: int) -> None:
        why.append(f"got {signal.Signals(signum).name}")
        stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)
    server = None
    if spec.guarded:
        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if spec.listen == "tcp":
                return await asyncio.open_connection("127.0.0.1", spec.port)
            return await asyncio.open_unix_connection(spec.app_socket)

        guard = appguard.Guard(spec.token, spec.cookie, connect)
        server = await appguard.start(spec.socket, guard)
        os.chmod(spec.socket, 0o600)
    try:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopped.wait(), POLL)
            if why:
                return why[0]
            code = proc.poll()
            if code is not None:
                return f"the app exited (status {code})"
            if not apps.same_process(spec.session_pid, spec.session_start):
                return f"the session of job {spec.job_id} ended"
    finally:
        if server is not None:
            server.close()


def stop_app(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the app's group, up to :data:`GRACE` s, then SIGKILL to the group and to
    everything else below this process (what left the group came here: we are its subreaper)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GRACE)
    for _ in range(5):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        rest = [pid for pid in descendants(os.getpid()) if pid != proc.pid]
        if not rest:
            break
        for pid in rest:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in rest:  # our children; the others come to us once their parent is gone
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def cleanup(spec: apps.Spec) -> None:
    """The sockets, the app's folder and its record (if the record is still ours)."""
    for path in (spec.socket, spec.app_socket):
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    shutil.rmtree(spec.runtime, ignore_errors=True)
    rec = apps.read_record(spec.job_id, spec.name)
    if rec is not None and rec.pid == os.getpid():
        apps.remove_record(rec)


def serve(spec_path: str) -> int:
    """The supervisor's whole life; its exit status."""
    spec = apps.Spec.from_json(read_private(spec_path))
    say(spec.name, f"supervisor pid {os.getpid()} for job {spec.job_id}: {' '.join(spec.argv)}")
    become_subreaper()
    proc = None
    try:
        if spec.listen == "tcp":
            netns.enter_private_network()
            say(spec.name, f"private network: the app listens on 127.0.0.1:{spec.port} there")
        proc = start_app(spec)
        write_private_atomic(Path(spec.runtime) / apps.APP_PID_FILE,
                             f"{proc.pid} {apps.process_start(proc.pid) or 0}\n")
        say(spec.name, f"app pid {proc.pid}; serving {spec.socket}")
        reason = asyncio.run(watch(spec, proc))
        say(spec.name, f"stopping: {reason}")
        return 0
    except AppError as exc:
        say(spec.name, f"error: {exc}")
        return 1
    except OSError as exc:
        say(spec.name, f"error: {exc}")
        return 1
    finally:
        if proc is not None:
            stop_app(proc)
        cleanup(spec)
        say(spec.name, "stopped")
