"""When the automatic update check is due, and starting it: read by the entry on every proxy
call, so the due test is one ``stat`` and this module imports nothing heavy.

A proxy run from a versioned install (``<root>/versions/<id>``) starts the check when it is due:
the mtime of ``<state>/update/next-check`` is the due time; then a detached
``python -I -m interactive_slurm update --auto`` runs with its output in
``<state>/update/check.log``. It never writes to the SSH stream and never delays the connection.
"""

from __future__ import annotations

import os
import sys
import time

from interactive_slurm.base import folders

#: How long a started check owns the stamp before another proxy may start one (it sets the
#: real next due time when it ends, succeeded or not).
CLAIM_SECONDS = 3600
LOG_LIMIT = 256 * 1024


def due(now: float) -> bool:
    """Whether this install should start the automatic update check now (two stats).

    Due when the stamp's time has come, or when config.toml changed after the stamp was last
    set (its ctime): adding ``[update] url`` must not wait out the interval of a check that
    found none.
    """
    if os.path.basename(os.path.dirname(os.path.realpath(sys.prefix))) != "versions":
        return False  # not a versioned install: nothing to update
    try:
        stamp = os.stat(os.path.join(folders.update_dir(), "next-check"))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if stamp.st_mtime <= now:
        return True
    try:
        return os.stat(folders.config_file()).st_mtime > stamp.st_ctime
    except OSError:
        return False


def start(now: float) -> None:
    """Claim the stamp and start the detached check, its stdio in the update log."""
    import subprocess

    from interactive_slurm.base import selfcmd

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
            [*selfcmd.module_argv(), "update", "--auto"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", start_new_session=True,
        )
    finally:
        os.close(fd)


def maybe_start() -> None:
    now = time.time()
    if due(now):
        # The check must never stop a connection; a failed start is retried after the claim.
        try:
            start(now)
        except (OSError, ValueError):
            pass
