"""Small file helpers: atomic private writes and ownership/mode checks (like sshd's StrictModes).

Every file or folder the tool trusts (config.toml, profiles, the managed known_hosts, the state
and config folders) must be the user's and not writable by group or others, and so must every
folder above it that the user owns (:func:`check_secure`, after OpenSSH's ``secure_path``).
"""

from __future__ import annotations

import errno
import os
import stat

from interactive_slurm.base.errors import EndpointError, FileSystemError, UnsafePathError

TYPE_CHECKING = False  # not typing's: this module is on the fast path, which does not import typing
if TYPE_CHECKING:  # pathlib costs the fast path ~9 ms: plain strings at run time
    from typing import Union

    StrPath = Union[str, "os.PathLike[str]"]

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def write_private_atomic(path: StrPath, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and rename (no half file).

    The temp file is removed on any failure (a full filesystem included); ``path`` is then as
    it was. ``mode`` is set explicitly, whatever the umask.
    """
    import contextlib  # neither is needed on the proxy's fast path
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
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


def unlink_if_present(path: StrPath) -> None:
    """Remove ``path``; a file already gone is fine (no contextlib: ~3 ms of the fast path)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_private(
    st: os.stat_result, path: StrPath, error: type[Exception] = EndpointError
) -> None:
    """Refuse a file or folder not owned by us or writable by group/others (like StrictModes)."""
    if st.st_uid != os.getuid():
        raise error(f"{path}: refusing: owned by {_owner(st.st_uid)}, not by you "
                    f"({_owner(os.getuid())}); remove it and run again")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise error(f"{path}: refusing: writable by group or others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}); fix: chmod go-w {path}")


if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class _Stat(Protocol):
        @property
        def st_uid(self) -> int: ...

        @property
        def st_mode(self) -> int: ...


def _os_stat(path: str) -> _Stat:
    return os.stat(path)


def check_secure(
    path: StrPath, *, lookup: Callable[[str], _Stat] | None = None, uid: int | None = None,
    checked: set[str] | None = None,
) -> None:
    """StrictModes for ``path`` (a file or folder the tool trusts) and the folders above it.

    ``path`` (symlinks resolved, as sshd does) must be owned by the user (or root) and not
    writable by group or others. Walking up: a folder the user owns must not be writable by
    group or others either; the walk stops at the first folder owned by root, which must not be
    writable by others unless it has the sticky bit (like ``/tmp``); a folder owned by anyone
    else is refused. Raises :class:`UnsafePathError` naming the path and the fix;
    FileNotFoundError if ``path`` does not exist. ``checked``: folders already found safe in
    this round (the walk stops there; the ones found now are added). (``lookup`` and ``uid``
    are for tests: a fake file system of absolute, resolved paths.)
    """
    uid = os.getuid() if uid is None else uid
    real = os.path.realpath(path) if lookup is None else os.fspath(path)
    stat_of = _os_stat if lookup is None else lookup
    st = stat_of(real)
    where = path if real == os.path.abspath(path) else f"{path} (-> {real})"
    if st.st_uid not in (uid, 0):
        raise UnsafePathError(f"{where}: refusing: owned by {_owner(st.st_uid)}, not by you "
                              f"({_owner(uid)}); remove it and run again")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise UnsafePathError(f"{where}: refusing: writable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); fix: chmod go-w {real}")
    probe = real
    while os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
        if checked is not None:
            if probe in checked:
                return
            checked.add(probe)  # a refusal below ends the round anyway
        st = stat_of(probe)
        writable = st.st_mode & _WRITABLE_BY_OTHERS
        if st.st_uid == uid and uid != 0:
            if writable:
                raise UnsafePathError(
                    f"{where}: refusing: the folder {probe} is writable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod go-w {probe}"
                )
            continue
        if st.st_uid == 0:
            if writable and not st.st_mode & stat.S_ISVTX:
                raise UnsafePathError(
                    f"{where}: refusing: the folder {probe} (root's) is writable by group or "
                    f"others without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"ask the admins to fix it, or set INTERACTIVE_SLURM_HOME elsewhere"
                )
            return
        raise UnsafePathError(
            f"{where}: refusing: the folder {probe} is owned by {_owner(st.st_uid)}, not by you "
            "or root; move your files elsewhere (INTERACTIVE_SLURM_HOME)"
        )


def check_secure_if_exists(path: StrPath, checked: set[str] | None = None) -> bool:
    """:func:`check_secure` when ``path`` exists; False when it does not."""
    try:
        check_secure(path, checked=checked)
    except FileNotFoundError:
        return False
    return True


def read_private(path: StrPath) -> str:
    """Read a file after checking it and its folder (no symlinks followed for the file).

    FileNotFoundError passes through (no file is not an unsafe file).
    """
    folder = os.path.dirname(os.fspath(path))
    check_private(os.stat(folder), folder)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise EndpointError(f"{path}: cannot open: {exc.strerror}") from exc
    # UTF-8, as write_private_atomic writes it, whatever the locale says.
    with os.fdopen(fd, encoding="utf-8") as fh:
        check_private(os.fstat(fh.fileno()), path)
        return fh.read()


def describe_os_error(exc: OSError, what: str = "") -> FileSystemError:
    """A one-line :class:`FileSystemError` for ``exc``, naming its path (and ``what`` failed)."""
    name = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    if exc.errno is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (the filesystem is full or over quota: free some space and run again)"
    elif isinstance(exc, PermissionError) and name:
        reason += f" (check the owner and mode of {name} and the folders above it)"
    parts = [p for p in (str(name) if name else "", what, reason) if p]
    return FileSystemError(": ".join(parts))
