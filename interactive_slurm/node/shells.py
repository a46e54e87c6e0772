"""The terminals of the shells a session serves: found under its own ``sshd -i`` children.

Used to tell open shells that the job is about to reach its time limit (one line each, wall-style),
never a pty of another user or of a process outside the session's own children.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path


def parent_pid(stat_text: str) -> int:
    """The parent pid in a ``/proc/PID/stat`` line (the command name may hold spaces and ``)``)."""
    return int(stat_text.rpartition(")")[2].split()[1])


def descendants(roots: set[int], parents: Mapping[int, int]) -> set[int]:
    """``roots`` and every process below them, given each process's parent."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def process_parents(proc: Path = Path("/proc")) -> dict[int, int]:
    parents = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = parent_pid((entry / "stat").read_text())
    return parents


def own_ttys(pids: set[int], proc: Path = Path("/proc")) -> list[Path]:
    """One ``/proc/PID/fd/N`` link for each pty slave (``/dev/pts/N``) that these processes hold
    open and this user owns. The link itself is what gets opened: the very device the process
    holds, even when its ``/dev/pts`` is another one (a container's)."""
    found: dict[int, Path] = {}
    for pid in sorted(pids):
        try:
            fds = sorted((proc / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
                st = os.stat(fd)
            except OSError:
                continue
            if not (target.startswith("/dev/pts/") and target[len("/dev/pts/"):].isdigit()):
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_uid == os.getuid():
                found.setdefault(st.st_rdev, fd)
    return list(found.values())


def write_to_tty(path: Path | str, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def tell_shells(roots: set[int], line: str) -> int:
    """Write ``line`` to each terminal held under the processes ``roots``; how many were told."""
    ttys = own_ttys(descendants(roots, process_parents()))
    return sum(write_to_tty(tty, line) for tty in ttys)
