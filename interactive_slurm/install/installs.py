"""Versioned installs on the cluster, switched atomically (used by ``setup`` and the updater).

Layout under the install root (default ``~/.local/share/interactive-slurm`` on the login node)::

    <root>/
      current -> versions/<id>      the one symlink the ProxyCommand and new batch scripts go through
      versions/<id>/                one venv per install; ``.complete`` is written last
      wheels/<id>/                  the wheels an install was made from (kept for rollback/repair)
      lock                          serializes installs and switches

``<id>`` is ``<version>-<digest>``: the same wheels give the same id, so installing twice is a
no-op, and different wheels of one version (a development build) get a directory of their own.
Jobs run ``<root>/versions/<id>/bin/python`` (the venv's own path), so a running session keeps the
version it started with while ``current`` moves on.

This module is **standalone**: it imports only the standard library and runs on the cluster's
Python 3.9+ before any of the package is there. ``setup`` sends this file over SSH and runs
``PYTHON - install ROOT WHEELS ...`` with the interpreter its probe found (``python3``, a
``python3.X``, or one from ``module load``; see :mod:`interactive_slurm.laptop.probe`), so the venv
and everything that runs from it use that interpreter; the updater imports it and keeps the venv's
base interpreter. It is the one
place besides :mod:`interactive_slurm.base.runner` that starts processes, because it must work without
the package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

PACKAGE = "interactive-slurm"
COMPLETE = ".complete"
KEEP = 3
_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")


class InstallError(RuntimeError):
    """An install, switch or check failed; the message says what and where."""


def version_id(version: str, wheels: Iterable[Path]) -> str:
    """``<version>-<first 10 hex of a digest over the wheels' names and bytes>``."""
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda p: p.name):
        digest.update(wheel.name.encode() + b"\0")
        digest.update(hashlib.sha256(wheel.read_bytes()).digest())
    vid = f"{version}-{digest.hexdigest()[:10]}"
    check_id(vid)
    return vid


def check_id(vid: str) -> str:
    if not _ID.match(vid) or ".." in vid:
        raise InstallError(f"invalid install id {vid!r}")
    return vid


def versions_dir(root: Path) -> Path:
    return root / "versions"


def version_dir(root: Path, vid: str) -> Path:
    return versions_dir(root) / check_id(vid)


def wheels_dir(root: Path, vid: str) -> Path:
    return root / "wheels" / check_id(vid)


def root_of(prefix: str | os.PathLike[str]) -> Path | None:
    """The install root of a venv at ``prefix`` (``sys.prefix``): ``<root>`` when ``prefix`` is
    ``<root>/versions/<id>`` (also through ``current``), None for any other environment."""
    path = Path(os.path.realpath(prefix))
    if path.parent.name != "versions" or not _ID.match(path.name):
        return None
    return path.parent.parent


def id_of(prefix: str | os.PathLike[str]) -> str | None:
    """The install id of the venv at ``prefix``, or None when it is not a versioned install."""
    return Path(os.path.realpath(prefix)).name if root_of(prefix) is not None else None


def version_of(vid: str) -> str:
    """The package version in an install id (``0.2.0-1a2b3c4d5e`` -> ``0.2.0``)."""
    return vid.rsplit("-", 1)[0]


def tool(root: Path, vid: str | None = None) -> Path:
    """The console script of an install (``current`` when no id is given)."""
    base = root / "current" if vid is None else version_dir(root, vid)
    return base / "bin" / "interactive-slurm"


def _private_dirs(*dirs: Path) -> None:
    for folder in dirs:  # missing parents too are 0700, whatever the umask (runs standalone)
        for parent in [*reversed(folder.parents), folder]:
            if not parent.exists():
                with contextlib.suppress(FileExistsError):
                    parent.mkdir(mode=0o700)
                    os.chmod(parent, 0o700)
        os.chmod(folder, 0o700)


@contextlib.contextmanager
def locked(root: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the install root's lock (one install or switch at a time, across processes).

    ``on_wait`` is called once if another process holds the lock (before waiting for it).
    """
    _private_dirs(root)
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_complete(root: Path, vid: str) -> bool:
    return (version_dir(root, vid) / COMPLETE).is_file()


def current(root: Path) -> str | None:
    """The id ``current`` points to, or None."""
    link = root / "current"
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def installed(root: Path) -> list[str]:
    """Complete installs, oldest first (by the time they were completed)."""
    folder = versions_dir(root)
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if (p / COMPLETE).is_file()]
    return [p.name for p in sorted(done, key=lambda p: (p / COMPLETE).stat().st_mtime)]


def previous(root: Path) -> str | None:
    """The complete install made just before ``current``'s (what a rollback returns to)."""
    done = installed(root)
    cur = current(root)
    if cur not in done:
        return done[-1] if done else None
    index = done.index(cur)
    return done[index - 1] if index > 0 else None


def _run(argv: Sequence[str], what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise InstallError(f"{what} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def self_check(root: Path, vid: str) -> str:
    """Run the new install's own checks; return its ``--version`` line.

    ``--version``, then the install's ``self-check`` command (the proxy's and the session's code
    paths in a dry run, every profile, config.toml). A version from before that command existed
    is checked with ``profiles`` instead.
    """
    script = tool(root, vid)
    out = _run([str(script), "--version"], f"self-check of {vid} ({script} --version)", timeout=60)
    try:
        _run([str(script), "self-check"], f"self-check of {vid} (self-check)", timeout=120)
    except InstallError as exc:
        if "No such command" not in str(exc):
            raise
        _run([str(script), "profiles"], f"self-check of {vid} (profiles)", timeout=60)
    return out.strip()


#: The kernel reads this much of a ``#!`` line (older kernels; newer read 256).
SHEBANG_LIMIT = 127
LAUNCHER_HEADER = "# interactive-slurm: lean console script (installs.write_launcher)"


def write_launcher(venv: Path) -> Path:
    """Replace pip's console script ``<venv>/bin/interactive-slurm`` with a lean one.

    ssh starts the script for every connection, and pip's wrapper costs it ~6 ms before any of
    our code runs (``site`` with every ``.pth`` file, then ``import re``). This one runs the
    venv's python with ``-I`` (nothing from the cwd, ``PYTHON*`` or the user's site: an install
    is never changed by a stray ``~/socket.py``) and ``-S``, and does itself what ``site`` does
    for a venv: ``sys.prefix`` is the venv, its site-packages are on ``sys.path``. A venv that
    also sees the system's packages (``include-system-site-packages``) keeps ``site`` (``-I``
    only), and one whose path makes the ``#!`` line too long for the kernel (or holds a space)
    keeps pip's script.
    """
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   f"asking {python} where its packages are", timeout=60).strip()
    try:
        cfg = (venv / "pyvenv.cfg").read_text()
    except OSError as exc:
        raise InstallError(f"{venv} is not a venv (no pyvenv.cfg): {exc}") from exc
    system_site = re.search(r"^include-system-site-packages\s*=\s*true\s*$", cfg, re.M | re.I)
    shebang = f"#!{python} -I{'' if system_site else 'S'}"
    script = venv / "bin" / "interactive-slurm"
    if len(shebang) > SHEBANG_LIMIT or any(c.isspace() for c in str(python)):
        return script  # the kernel would cut the #! line there
    lines = [shebang, LAUNCHER_HEADER, "import sys"]
    if not system_site:  # what site.venv() would do
        lines += [f"sys.prefix = sys.exec_prefix = {str(venv)!r}",
                  f"sys.path.append({purelib!r})"]
    lines += ["from interactive_slurm.entry import main", "sys.exit(main())"]
    tmp = script.with_name(f".{script.name}.{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, os.stat(script).st_mode & 0o7777)  # the mode pip gave its script
    os.replace(tmp, script)
    return script


def install(root: Path, wheels: Path, vid: str, *, python: str = sys.executable,
            requirement: str = PACKAGE) -> Path:
    """Install ``requirement`` from the wheels in ``wheels`` (only those) as ``versions/<vid>``.

    Idempotent: a complete install of the same id is kept. A half-made one (no ``.complete``)
    is removed and made again. On any failure the new directory is removed and ``current`` is
    left as it was. The caller holds :func:`locked`.
    """
    target = version_dir(root, vid)
    if is_complete(root, vid):
        return target
    if target.exists():
        shutil.rmtree(target)
    _private_dirs(versions_dir(root))
    pips = sorted(wheels.glob("pip-*.whl"))
    if not pips:
        raise InstallError(f"no pip wheel in {wheels}: cannot install without the index")
    try:
        _run([python, "-m", "venv", "--without-pip", str(target)], f"making the venv {target}")
        _run([str(target / "bin" / "python"), f"{pips[-1]}/pip", "install", "--no-index",
              "--find-links", str(wheels), "--no-cache-dir", "--disable-pip-version-check",
              "--no-warn-script-location", "-q", requirement],
             f"installing {requirement} into {target}")
        write_launcher(target)
        self_check(root, vid)
        (target / COMPLETE).write_text(f"{vid}\n")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def switch(root: Path, vid: str) -> None:
    """Point ``current`` at ``versions/<vid>`` with one atomic rename of a new symlink."""
    if not is_complete(root, vid):
        raise InstallError(f"{version_dir(root, vid)} is not a complete install")
    tmp = root / f".current-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.join("versions", vid), tmp)
    os.replace(tmp, root / "current")


def prune(root: Path, *, keep: int = KEEP, protect: Iterable[str] = ()) -> list[str]:
    """Remove all but the newest ``keep`` installs, never ``current`` nor ``protect``ed ones."""
    keepers = set(protect)
    cur = current(root)
    if cur:
        keepers.add(cur)
    done = installed(root)
    keepers.update(done[-keep:])
    removed = []
    for vid in done:
        if vid not in keepers:
            shutil.rmtree(version_dir(root, vid), ignore_errors=True)
            shutil.rmtree(wheels_dir(root, vid), ignore_errors=True)
            removed.append(vid)
    # Half-made installs left by a crash: no .complete, and not being made now (we hold the lock).
    folder = versions_dir(root)
    if folder.is_dir():
        for path in folder.iterdir():
            if not (path / COMPLETE).exists():
                shutil.rmtree(path, ignore_errors=True)
    return removed


def install_and_switch(root: Path, wheels: Path, vid: str, *, python: str = sys.executable,
                       protect: Iterable[str] = ()) -> dict[str, object]:
    """The whole step under the lock: install, check, switch, prune. Returns a summary."""
    with locked(root):
        previous = current(root)
        install(root, wheels, vid, python=python)
        switch(root, vid)
        removed = prune(root, protect=protect)
    return {"root": str(root), "id": vid, "previous": previous, "tool": str(tool(root)),
            "removed": removed}


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 - install ROOT WHEELS ID`` | ``status ROOT`` | ``launcher VENV``; prints one
    JSON line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 4 and args[0] == "install":
            root = Path(os.path.expanduser(args[1])).absolute()
            result = install_and_switch(root, Path(os.path.expanduser(args[2])), args[3])
        elif len(args) == 2 and args[0] == "status":
            root = Path(os.path.expanduser(args[1])).absolute()
            result = {"root": str(root), "current": current(root), "installed": installed(root)}
        elif len(args) == 2 and args[0] == "launcher":
            result = {"launcher": str(write_launcher(Path(os.path.expanduser(args[1])).absolute()))}
        else:
            raise InstallError("usage: installs.py install ROOT WHEELS ID | status ROOT | "
                               f"launcher VENV (got {args})")
    except (InstallError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
