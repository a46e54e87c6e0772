"""Small file helpers: atomic private writes and ownership/mode checks."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from interactive_slurm.errors import EndpointError


def write_private_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and rename (no half file)."""
    import tempfile  # not needed on the proxy's fast path

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_private(st: os.stat_result, path: Path) -> None:
    """Refuse a file or folder not owned by us or writable by group/others (like StrictModes)."""
    if st.st_uid != os.getuid():
        raise EndpointError(f"{path}: refusing: owned by uid {st.st_uid}, not by you ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EndpointError(
            f"{path}: refusing: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        )


def read_private(path: Path) -> str:
    """Read a file after checking it and its folder (no symlinks followed for the file).

    FileNotFoundError passes through (no file is not an unsafe file).
    """
    check_private(os.stat(path.parent), path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise EndpointError(f"{path}: cannot open: {exc.strerror}") from exc
    with os.fdopen(fd) as fh:
        check_private(os.fstat(fh.fileno()), path)
        return fh.read()
