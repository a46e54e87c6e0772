"""The one lock helper: take a file lock, else say so and wait (or give up after a bound).

Lock files are opened without following a link and without blocking (a FIFO planted as the lock
cannot stall the open), and only a regular file is used. ``install/installs.py`` keeps its own
copy: it runs standalone, without this package.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from interactive_slurm.base.errors import InteractiveSlurmError, LockTimeout

POLL = 0.1


def open_lock(path: str | os.PathLike[str], *, mode: int = 0o600, readonly: bool = False) -> int:
    """An fd of the lock file ``path`` (made with ``mode`` if missing): read-only is enough for
    flock and lets every member of a group lock a shared file. OSError passes through."""
    flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InteractiveSlurmError(f"{os.fspath(path)} is not a regular file; remove it")
    return fd


@contextmanager
def hold(fd: int, *, on_wait: Callable[[], None] | None = None, wait: bool = True,
         timeout: float | None = None) -> Iterator[bool]:
    """Hold an exclusive flock on ``fd`` (closed at the end); yields whether it was taken.

    When another process holds it: ``on_wait`` is called once, then without ``wait`` the body
    runs with False; with ``timeout`` the wait ends in :class:`LockTimeout` after that long.
    """
    try:
        taken = _try(fd)
        if not taken:
            if on_wait is not None:
                on_wait()
            if wait:
                _wait(fd, timeout)
                taken = True
        yield taken
    finally:
        os.close(fd)


@contextmanager
def held(path: str | os.PathLike[str], *, on_wait: Callable[[], None] | None = None,
         wait: bool = True, timeout: float | None = None, mode: int = 0o600) -> Iterator[bool]:
    """:func:`open_lock` then :func:`hold`."""
    with hold(open_lock(path, mode=mode), on_wait=on_wait, wait=wait, timeout=timeout) as taken:
        yield taken


def _wait(fd: int, timeout: float | None) -> None:
    """Block until the lock is ours; :class:`LockTimeout` after ``timeout`` seconds if given."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while not _try(fd):
        if time.monotonic() >= deadline:
            raise LockTimeout(f"the lock was held for more than {timeout:g} s")
        time.sleep(POLL)


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
