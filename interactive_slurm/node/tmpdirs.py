"""The session's temp dir: a safe base folder, and leftovers of killed sessions swept away.

``$TMPDIR`` is used only when it is a folder that is the user's and not writable by others, or a
sticky world-writable folder of root's such as ``/tmp``, and every folder above it is the
user's or root's and writable by nobody else unless sticky (sshd's ``secure_path``: ``sshd -i``
reads its config and host key from the temp dir on every connection, so a member of a
group-writable lab folder above it must not be able to rename the user's folder away and plant
her own); otherwise the session falls back to ``/tmp`` and says so in the job log.

A SIGKILLed session (a node crash, ``scancel -s KILL``) cannot remove its temp dir, which holds
the job's host key: each new session removes this user's ``interactive-slurm-<job>-*`` folders
in that base whose job has left the queue.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from interactive_slurm.base.errors import InteractiveSlurmError, SlurmError
from interactive_slurm.base.runner import Runner, check_result
from interactive_slurm.login import slurm

PREFIX = "interactive-slurm-"
FALLBACK = "/tmp"
_LEFTOVER_RE = re.compile(r"^interactive-slurm-([0-9]{1,20})-[A-Za-z0-9_]+\Z", re.ASCII)


def unsafe_reason(folder: str) -> str | None:
    """Why ``folder`` is no safe base for the session's temp dir (None: it is safe)."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if st.st_uid == 0 and writable_by_others and st.st_mode & stat.S_ISVTX:
        return None  # like /tmp: others may write, but not remove or rename what is ours
    if st.st_uid == os.getuid():
        return "writable by group or others" if writable_by_others else None
    if st.st_uid == 0 and not writable_by_others:
        return None if os.access(folder, os.W_OK | os.X_OK) else "not writable by you"
    return f"owned by uid {st.st_uid}, not by you, and not a sticky folder like /tmp"


def unsafe_ancestor(folder: str) -> str | None:
    """Why a folder above ``folder`` (a resolved path) lets someone else swap it; None: none."""
    probe, uid = folder, os.getuid()
    while os.path.dirname(probe) != probe:
        below, probe = probe, os.path.dirname(probe)
        try:
            st = os.stat(probe)
        except OSError as exc:
            return f"the folder {probe} above it: {exc.strerror or exc}"
        if st.st_uid not in (0, uid):
            return (f"the folder {probe} above it is owned by uid {st.st_uid}, who could "
                    f"rename {below} away")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return (f"the folder {probe} above it is writable by group or others without the "
                    f"sticky bit (mode {stat.S_IMODE(st.st_mode):04o}), so they could rename "
                    f"{below} away")
    return None


def base_dir(env: Mapping[str, str], say: Callable[[str], None]) -> str:
    """``$TMPDIR`` (resolved) when it and every folder above it are safe, else ``/tmp`` (with a
    line in the job log)."""
    tmp = env.get("TMPDIR", "")
    if not tmp:
        return FALLBACK
    real = os.path.realpath(tmp)
    if not os.path.isabs(tmp):
        reason: str | None = "not an absolute path"
    else:
        reason = unsafe_reason(real) or unsafe_ancestor(real)
    if reason is None:
        return real
    say(f"TMPDIR={tmp} is not safe for the session's host key ({reason}); using {FALLBACK}")
    return FALLBACK


def leftovers(base: str, own_job: str) -> dict[str, list[Path]]:
    """This user's session temp dirs in ``base`` by job id (not ``own_job``'s)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    uid = os.getuid()
    for entry in entries:
        m = _LEFTOVER_RE.match(entry.name)
        if not m or m.group(1) == own_job:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            found.setdefault(m.group(1), []).append(Path(entry.path))
    return found


def sweep(runner: Runner, base: str, own_job: str, say: Callable[[str], None]) -> list[Path]:
    """Remove the temp dirs of this user's sessions whose job has left the queue.

    Slurm is asked (one ``squeue --me``) only when there is something to sweep; if it cannot
    answer, nothing is removed.
    """
    found = leftovers(base, own_job)
    if not found:
        return []
    try:
        result = check_result(runner.run(slurm.squeue_mine_argv(), check=False, timeout=30),
                              SlurmError)
        live = {job.job_id for job in slurm.parse_squeue(result.stdout)}
    except InteractiveSlurmError as exc:
        say(f"could not ask Slurm which jobs are alive, so no old temp dirs removed: {exc}")
        return []
    removed = []
    for job_id, folders in sorted(found.items()):
        if job_id in live:
            continue
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        say(f"removed {len(removed)} temp dir(s) left by ended sessions: "
            + ", ".join(str(p) for p in removed))
    return removed


def make_session_dir(
    runner: Runner, job_id: str, say: Callable[[str], None], env: Mapping[str, str] = os.environ
) -> Path:
    """The session's own temp dir (0700), in a safe base, after sweeping old ones there."""
    base = base_dir(env, say)
    sweep(runner, base, job_id, say)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{job_id}-", dir=base))
    os.chmod(folder, 0o700)
    return folder
