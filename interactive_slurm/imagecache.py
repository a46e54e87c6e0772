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
file by its real path, size and modification time, so a changed file is prepared again without
reading gigabytes to hash them. Two jobs starting at once take the same lock: one builds under a
temp name and renames it into place, the other waits and then uses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

from interactive_slurm import paths

COMPLETE = "complete"


def cache_key(runtime: str, image: str) -> str:
    """A stable digest naming the cache entry of ``image`` as prepared by ``runtime``."""
    identity = image
    if image.startswith("/"):
        real = os.path.realpath(image)
        try:
            st = os.stat(real)
            identity = f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
        except OSError:
            identity = real
    digest = hashlib.sha256(f"{runtime}\0{identity}".encode()).hexdigest()[:24]
    return f"{runtime}-{digest}"


class ImageCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.image_cache_dir()

    def entry(
        self, key: str, build: Callable[[Path], None], source: str,
        log: Callable[[str], None] = lambda _: None,
    ) -> Path:
        """The runnable image of entry ``key``, built by ``build(dest)`` if it is not there."""
        paths.ensure_private_dir(self.root)
        final = self.root / key
        fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another job that is preparing {source}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            if (final / COMPLETE).is_file():
                return final / "image"
            if os.path.lexists(final):
                log(f"cache entry {final} is half-made; rebuilding it")
                remove(final)
            for stale in self.root.glob(f"{key}.tmp-*"):
                remove(stale)
            tmp = self.root / f"{key}.tmp-{os.getpid()}"
            tmp.mkdir(mode=0o700)
            try:
                build(tmp / "image")
                (tmp / "source").write_text(source + "\n")
                (tmp / COMPLETE).write_text("")
                os.rename(tmp, final)
            except BaseException:
                remove(tmp)
                raise
            return final / "image"
        finally:
            os.close(fd)


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
