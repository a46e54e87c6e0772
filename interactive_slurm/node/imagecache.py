"""The container image cache: an image is prepared (imported, pulled, unpacked) once, then shared
by every job that runs it.

Layout (per user by default: ``<cache dir>/images``)::

    images/
      <key>.lock            flock held while an entry is checked or built
      <key>.tmp-<pid>/      an entry being built (left behind by a killed build: removed)
      <key>/image           the runnable image (a directory or a file)
      <key>/source          what it was made from
      <key>/complete        written last, before the rename: an entry without it is half-made

``key`` is a digest of the runtime and the image's identity: a registry reference as written; a
file by its content (SHA-256, computed once per version of the file and remembered in the user's
own cache), so a changed file is prepared again and nobody can name the entry of a file they
cannot read. Two jobs starting at once take the same lock: one builds under a
temp name and renames it into place, the other waits and then uses it.

**A shared cache** (``image_cache`` in config.toml, e.g. a lab's project folder) is the same
layout in a folder the user does not own alone: a group prepares each image once for all of its
members. Using one means trusting whoever can write there, so the folder must exist (the tool
never makes it), must not be writable by others, and if its group may write it must have the
sticky bit (``chmod 1770``/``3770``: members cannot remove or rename each other's entries).
Entries are made readable by the group (0755 folders) and an entry that its group or others
could change is never used. What the user cannot fix there (another member's half-made entry, an
entry of hers that needs a mount point only she can make, a lock that is not a plain file or is
held longer than :data:`SHARED_LOCK_WAIT`) raises :class:`CacheUnusable`, and the session
prepares the image in the user's own cache. A
shared cache the user may only read (one the admins fill, say) serves its complete entries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
from pathlib import Path
from typing import Callable

from interactive_slurm.base import folders, locks
from interactive_slurm.base.errors import InteractiveSlurmError, LockTimeout, SessionError
from interactive_slurm.base.fsutil import write_private_atomic

COMPLETE = "complete"
#: How long a session waits for another member's lock on a shared entry before it prepares the
#: image in the user's own cache (a member could hold the lock for ever).
SHARED_LOCK_WAIT = 600.0


class CacheUnusable(SessionError):
    """The shared cache cannot serve this image (the message says why); use the user's own."""


def check_shared_root(root: Path) -> None:
    """Refuse a shared cache folder that is missing, not a folder, writable by others, or
    writable by its group without the sticky bit (SessionError naming the path and the fix)."""
    where = f"image_cache {root} (config.toml)"
    try:
        st = os.stat(root)
    except OSError as exc:
        raise SessionError(f"{where}: {exc.strerror}; ask its owner to create it "
                           f"(mkdir -m 3770 {root}) or remove image_cache") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise SessionError(f"{where}: not a folder")
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        raise SessionError(f"{where}: refusing: writable by everyone (mode {mode:04o}), so anyone "
                           f"could plant an image; fix: chmod o-w {root}")
    if mode & stat.S_IWGRP and not mode & stat.S_ISVTX:
        raise SessionError(f"{where}: refusing: group-writable without the sticky bit (mode "
                           f"{mode:04o}), so members could replace each other's images; "
                           f"fix: chmod +t {root}")


def cache_key(runtime: str, image: str) -> str:
    """A stable digest naming the cache entry of ``image`` as prepared by ``runtime``.

    A registry reference is named as written. A file is named by its content (SHA-256), so a
    member of a shared cache cannot work out the entry of an image she cannot read and plant
    her own under that name; the digest is computed once per file version and remembered in
    the user's own cache (see :func:`content_digest`).
    """
    identity = image
    if image.startswith("/"):
        real = os.path.realpath(image)
        try:
            identity = f"sha256:{content_digest(real)}"
        except OSError:
            identity = real
    digest = hashlib.sha256(f"{runtime}\0{identity}".encode()).hexdigest()[:24]
    return f"{runtime}-{digest}"


_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def digests_dir() -> Path:
    """Where the digests of file images are remembered: beside the user's own image cache."""
    return Path(folders.image_cache_dir()).parent / "image-digests"


def content_digest(real: str) -> str:
    """SHA-256 of the file ``real``, remembered in :func:`digests_dir` under the file's
    identity (path, device, inode, size, mtime), so an unchanged file is read once. OSError
    when the file cannot be read."""
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        return hashlib.sha256(real.encode()).hexdigest()  # a folder image: used where it is
    version = f"{real}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
    memo = digests_dir() / hashlib.sha256(version.encode()).hexdigest()
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if _HEX64.match(known):
        return known
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        folders.ensure_private_dir(memo.parent)
        write_private_atomic(memo, digest + "\n")
    except InteractiveSlurmError:
        pass  # not remembered: computed again next time
    return digest


class ImageCache:
    """The per-user cache (``root`` None: the user's cache dir), or a shared one (``shared``)."""

    def __init__(self, root: Path | None = None, *, shared: bool = False) -> None:
        self.root = root or Path(folders.image_cache_dir())
        self.shared = shared

    def entry(
        self, key: str, build: Callable[[Path], None], source: str,
        log: Callable[[str], None] = lambda _: None,
    ) -> Path:
        """The runnable image of entry ``key``, built by ``build(dest)`` if it is not there."""
        if self.shared:
            check_shared_root(self.root)
        else:
            folders.ensure_private_dir(self.root)
        final = self.root / key
        # Read-only is enough for flock, and lets every member lock a shared entry.
        try:
            fd = locks.open_lock(self.root / f"{key}.lock", readonly=True,
                                 mode=0o644 if self.shared else 0o600)
        except (OSError, InteractiveSlurmError) as exc:
            if not self.shared:
                raise
            if not isinstance(exc, PermissionError):  # a link, a FIFO, ...: planted by someone
                raise CacheUnusable(f"shared cache {self.root}: the lock of {source} is not a "
                                    f"plain file ({exc}); not using it") from exc
            # A shared cache this user may only read (an admins' one, say): a complete entry
            # is used as it is (entries never change once renamed into place).
            if (final / COMPLETE).is_file():
                self._check_entry(final)
                return final / "image"
            raise CacheUnusable(f"shared cache {self.root} has no {source} yet and is not "
                                "writable by you") from None
        waiting = f"waiting for another job that is preparing {source}"
        try:
            with locks.hold(fd, on_wait=lambda: log(waiting),
                            timeout=SHARED_LOCK_WAIT if self.shared else None):
                return self._under_lock(key, final, build, source, log)
        except LockTimeout as exc:
            raise CacheUnusable(f"shared cache {self.root}: another member has been preparing "
                                f"{source} for more than {SHARED_LOCK_WAIT:g} s") from exc

    def _under_lock(self, key: str, final: Path, build: Callable[[Path], None], source: str,
                    log: Callable[[str], None]) -> Path:
        """The entry once this process holds its lock: complete, else (re)built."""
        if (final / COMPLETE).is_file():
            self._check_entry(final)
            return final / "image"
        if os.path.lexists(final):
            log(f"cache entry {final} is half-made; rebuilding it")
            self._remove(final)
        for stale in self.root.glob(f"{key}.tmp-*"):
            if not self.shared or os.lstat(stale).st_uid == os.getuid():
                remove(stale)  # another member's stale build is theirs to clear
        tmp = self.root / f"{key}.tmp-{socket.gethostname()}-{os.getpid()}"
        tmp.mkdir(mode=0o700)
        try:
            build(tmp / "image")
            (tmp / "source").write_text(source + "\n")
            (tmp / COMPLETE).write_text("")
            if self.shared:
                share_with_group(tmp)
            os.rename(tmp, final)
        except BaseException:
            remove(tmp)
            raise
        return final / "image"

    def _check_entry(self, final: Path) -> None:
        """A shared entry is used only if nobody but its maker (or root) can change it."""
        if not self.shared:
            return
        st = os.lstat(final)
        if stat.S_ISLNK(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheUnusable(f"shared cache entry {final} could be changed by others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}); not using it")

    def _remove(self, final: Path) -> None:
        try:
            remove(final)
        except PermissionError as exc:
            raise CacheUnusable(f"shared cache entry {final} is half-made and not yours to "
                                "remove (its maker's build stopped)") from exc


def share_with_group(path: Path) -> None:
    """Let the group read (and enter, and run what its owner may run) everything under
    ``path``; nothing becomes writable by anyone but its owner."""
    def grant(item: str, is_dir: bool) -> None:
        st = os.lstat(item)
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH)
        mode |= stat.S_IRGRP
        if is_dir or mode & stat.S_IXUSR:
            mode |= stat.S_IXGRP
        os.chmod(item, mode)

    for folder, _dirs, files in os.walk(path):  # symlinks to folders are not followed
        grant(folder, True)
        for name in files:
            grant(os.path.join(folder, name), False)


def remove(path: Path) -> None:
    """Remove a file or a directory tree, including read-only dirs that unpacked images have."""
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, _files in os.walk(path):
            for name in dirs:
                sub = os.path.join(folder, name)
                if not os.path.islink(sub):
                    os.chmod(sub, 0o700)
        os.chmod(path, 0o700)
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
