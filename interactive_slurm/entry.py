"""The ``interactive-slurm`` console script: the proxy's fast path before anything heavy.

``ssh`` starts a proxy for every connection (VS Code opens several at once), so reusing a live
session must be quick: this module answers ``proxy KIND [--profile P] [--container C]`` from the
endpoint records alone, importing neither click nor the Slurm layer. Anything else (no live
session, other options, other verbs, ``--help``) goes to the full CLI in :mod:`cli`, which
validates every value and takes the slow path.

A proxy run from a versioned install (``<root>/versions/<id>``) also starts the automatic update
check when it is due: one ``stat`` of ``<state>/update/next-check`` (its mtime is the due time),
and only then a detached ``python -m interactive_slurm update --auto`` with its output in
``<state>/update/check.log``. It never writes to the SSH stream and never delays the connection.
"""

from __future__ import annotations

import os
import sys
import time

from interactive_slurm.base.errors import InteractiveSlurmError

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path ~3 ms
if TYPE_CHECKING:
    from _socket import socket as Socket

    from interactive_slurm.connect import endpoint

_OPTIONS = ("--profile", "--container", "--timeout")
#: config.DEFAULT_WARN_TIME_LEFT, without importing config (tests/unit/test_entry.py: equal).
DEFAULT_WARN_TIME_LEFT = 1800.0
#: How long a started check owns the stamp before another proxy may start one (it sets the
#: real next due time when it ends, succeeded or not).
CLAIM_SECONDS = 3600
LOG_LIMIT = 256 * 1024


def parse_proxy_args(args: list[str]) -> tuple[str, str | None, str] | None:
    """(kind, profile or None, container) of a plain proxy call; None for anything unusual."""
    if not args or args[0] not in ("cpu", "gpu"):
        return None
    kind, profile, container = args[0], None, ""
    rest = list(args[1:])
    while rest:
        name, eq, value = rest.pop(0).partition("=")
        if name not in _OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if name == "--profile":
            profile = value
        elif name == "--container":
            container = value
        elif not _is_seconds(value):  # --timeout abc: the full CLI says what is wrong
            return None
    return kind, profile, container


def _is_seconds(value: str) -> bool:
    try:
        seconds = float(value)
    except ValueError:
        return False
    return 0 < seconds < float("inf")


def default_profile() -> str:
    from interactive_slurm.base import folders
    from interactive_slurm.connect import configcache

    path = folders.config_file()
    if not os.path.exists(path):
        return "default"
    return configcache.load(path)[0]


def warn_threshold() -> float:
    """``warn_time_left`` from config.toml; reads the file only when there is one."""
    from interactive_slurm.base import folders
    from interactive_slurm.connect import configcache

    path = folders.config_file()
    if not os.path.exists(path):
        return DEFAULT_WARN_TIME_LEFT
    try:
        return configcache.load(path)[1]
    except InteractiveSlurmError:
        return DEFAULT_WARN_TIME_LEFT


def fast_socket(
    kind: str, profile: str | None, container: str
) -> tuple[endpoint.Endpoint, Socket] | None:
    """A keyhole-checked connection to a live session of this kind/profile, from endpoint
    records alone; stale records met on the way are dropped (one line each on stderr)."""
    from interactive_slurm.connect.fastpath import find_and_connect

    return find_and_connect(kind, profile or default_profile(), container)


def update_check_due(now: float) -> bool:
    """Whether this install should start the automatic update check now (one stat)."""
    if os.path.basename(os.path.dirname(os.path.realpath(sys.prefix))) != "versions":
        return False  # not a versioned install: nothing to update
    from interactive_slurm.base import folders

    try:
        return os.stat(os.path.join(folders.update_dir(), "next-check")).st_mtime <= now
    except FileNotFoundError:
        return True
    except OSError:
        return False


def start_update_check(now: float) -> None:
    """Claim the stamp and start the detached check, its stdio in the update log."""
    import subprocess

    from interactive_slurm.base import folders

    folder = folders.ensure_private_dir(folders.update_dir())
    stamp = folder / "next-check"
    stamp.touch(mode=0o600)
    os.utime(stamp, (now + CLAIM_SECONDS, now + CLAIM_SECONDS))
    log_path = folder / "check.log"
    if log_path.exists() and log_path.stat().st_size > LOG_LIMIT:
        os.replace(log_path, folder / "check.log.1")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        subprocess.Popen(
            [sys.executable, "-I", "-m", "interactive_slurm", "update", "--auto"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", start_new_session=True,
        )
    finally:
        os.close(fd)


def maybe_start_update_check() -> None:
    now = time.time()
    if update_check_due(now):
        # The check must never stop a connection; a failed start is retried after the claim.
        try:
            start_update_check(now)
        except (OSError, ValueError):
            pass


def connect_main(args: list[str]) -> None:
    """``interactive-slurm connect JOBID``: the ProxyCommand of ``remote ssh``/``gpuswap``.

    Keyhole + splice for one job's record; no Slurm, no slow path.
    """
    from interactive_slurm.connect import endpoint, fastpath

    try:
        if len(args) != 1:
            raise InteractiveSlurmError("usage: interactive-slurm connect JOBID")
        ep = endpoint.read_job(args[0])
        if ep is None:
            raise InteractiveSlurmError(f"job {args[0]} has no running session")
        try:
            sock = fastpath.open_connection(ep)
        except fastpath.StaleEndpoint as exc:
            fastpath.drop(ep, str(exc))
            raise InteractiveSlurmError(f"job {args[0]}'s session does not answer") from exc
    except InteractiveSlurmError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    from interactive_slurm.connect.splice import splice

    try:
        closed = splice(0, 1, sock)
    finally:
        sock.close()
    fastpath.report_end(ep, session_closed=closed)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["connect"]:
        connect_main(args[1:])
        return
    if args[:1] == ["proxy"]:
        maybe_start_update_check()
    if args[:1] == ["proxy"] and not os.environ.get("INTERACTIVE_SLURM_NO_FAST_PATH"):
        request = parse_proxy_args(args[1:])
        found = None
        if request is not None:
            try:
                found = fast_socket(*request)
            except InteractiveSlurmError:
                found = None  # e.g. a bad config.toml: the full CLI below reports it
            except KeyboardInterrupt:
                sys.exit(130)
        if found is not None:
            from interactive_slurm.connect.fastpath import report_end, warn_time_left
            from interactive_slurm.connect.splice import splice

            ep, sock = found
            if ep.ends_at > 0:
                warn_time_left(ep, warn_threshold())
            try:
                closed = splice(0, 1, sock)
            finally:
                sock.close()
            report_end(ep, session_closed=closed)
            return
    from interactive_slurm.cli.main import main as cli_main

    cli_main()
