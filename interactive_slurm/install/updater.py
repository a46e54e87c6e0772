"""The cluster install's updater: git tags -> a wheel -> a versioned install -> ``current``.

One mechanism with ``setup``: installs are made, checked, switched and pruned by
:mod:`interactive_slurm.install.installs` (``<root>/versions/<id>``, ``<root>/current``). This module adds
where a new version comes from and when::

    fetch (GitPython: tags and branches of [update] url into <state>/update/source.git)
      -> choose: newest vX.Y.Z (stable), or with pre-releases (pre), or the pinned ref
      -> build its wheel from the tag's files (wheelbuild: no setuptools, no network)
      -> wheels/<id>/ = that wheel + the dependency and pip wheels of the current install
         (the package index is asked only for a dependency that is not among them)
      -> installs.install (venv, pip --no-index, self-check) -> installs.switch -> prune

All of it runs under the install root's lock, so two updates (or an update and ``setup``)
serialize. A failure leaves ``current`` as it was and removes what was half made. Versions that
sessions in the queue run from (``install=`` in their job comment) are never pruned.

The automatic check is started by the proxy (``entry.py``) as a detached
``python -m interactive_slurm update --auto`` when ``<state>/update/next-check`` is due (its mtime
is the due time); :func:`auto_check` writes the next due time whatever happens, so an unreachable
remote is asked once per interval, not on every connection.

This module imports GitPython: only the update verbs and the detached check import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git

from interactive_slurm.base import folders, locks
from interactive_slurm.base.config import UpdateConfig
from interactive_slurm.base.errors import CommandError, InteractiveSlurmError, UpdateError
from interactive_slurm.base.runner import Runner
from interactive_slurm.install import installs, wheelbuild
from interactive_slurm.login import slurm

FETCH_TIMEOUT = 300
OWN_WHEEL = "interactive_slurm-"
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:(a|b|rc)(\d+))?$")
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}
_HEX = re.compile(r"^[0-9a-f]{7,40}$")

Say = Callable[[str], None]


# --- versions and tags (pure) ------------------------------------------------------------------

def version_key(version: str) -> tuple[int, ...] | None:
    """Sort key of ``X.Y.Z`` or ``X.Y.Z(a|b|rc)N``; None for anything else (a dev build)."""
    m = _VERSION.match(version)
    if not m:
        return None
    major, minor, patch, pre, num = m.groups()
    rank = _PRE_RANK[pre] if pre else 3
    return (int(major), int(minor), int(patch), rank, int(num or 0))


#: Bounds of a release's source tree (this tool's is well under 1 MiB): a hostile or mistaken
#: update source must not exhaust the memory of the login node.
MAX_FILE_BYTES = 8 << 20
MAX_TREE_BYTES = 64 << 20


@dataclass(frozen=True)
class Release:
    tag: str
    version: str
    key: tuple[int, ...]

    @property
    def prerelease(self) -> bool:
        return self.key[3] != 3


def release_of(tag: str) -> Release | None:
    """The release a tag names (``v1.2.3``, ``v1.2.3rc1``), or None for other tags."""
    if not tag.startswith("v"):
        return None
    key = version_key(tag[1:])
    return Release(tag, tag[1:], key) if key is not None else None


def pick(tags: Iterable[str], channel: str) -> Release | None:
    """The newest release of ``stable`` (``vX.Y.Z`` only) or ``pre`` (pre-releases too)."""
    releases = [r for r in (release_of(t) for t in tags) if r is not None]
    if channel == "stable":
        releases = [r for r in releases if not r.prerelease]
    return max(releases, key=lambda r: r.key, default=None)


def is_newer(candidate: str, installed: str | None) -> bool:
    """Whether ``candidate`` is a newer version than ``installed`` (a dev build is older)."""
    if installed is None:
        return True
    new, old = version_key(candidate), version_key(installed)
    if new is None:
        return False
    return old is None or new > old


# --- the git source -----------------------------------------------------------------------------

def install_root() -> Path:
    """Where versioned installs live: the running install's root, else the user data dir."""
    return installs.root_of(sys.prefix) or Path(folders.data_dir())


def git_reason(stderr: str, status: object) -> str:
    """The line of git's stderr that says what is wrong: its first ``fatal:``/``error:`` line
    (the lines after it are generic advice, such as "...and the repository exists."), else its
    last line, else the exit status."""
    lines = [ln.strip() for ln in stderr.strip().strip("'").splitlines() if ln.strip()]
    # GitPython's str(stderr) is "  stderr: '<git's stderr>'".
    lines = [ln[len("stderr: "):].lstrip().removeprefix("'") if ln.startswith("stderr: ") else ln
             for ln in lines]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else f"git exited {status}"


class Source:
    """The update source: a bare clone (``cache``) of ``url`` with its tags and branches."""

    def __init__(self, url: str, cache: Path) -> None:
        self.url = os.path.expanduser(url) if url.startswith("~") else url
        self.cache = cache

    def _repo(self) -> git.Repo:
        try:
            if (self.cache / "HEAD").exists():
                repo = git.Repo(self.cache)
            else:
                folders.ensure_private_dir(self.cache.parent)
                repo = git.Repo.init(self.cache, bare=True, mkdir=True)
        except (git.GitError, OSError) as exc:
            raise UpdateError(f"cannot use the git cache {self.cache}: {exc}") from exc
        repo.git.update_environment(GIT_TERMINAL_PROMPT="0", GIT_SSH_COMMAND="ssh -o BatchMode=yes")
        return repo

    def fetch(self) -> None:
        """Fetch tags and branches (branches only for pins); stale ones are pruned."""
        repo = self._repo()
        try:
            repo.git.fetch("--quiet", "--force", "--prune", "--no-tags", self.url,
                           "+refs/tags/*:refs/tags/*", "+refs/heads/*:refs/remotes/origin/*",
                           kill_after_timeout=FETCH_TIMEOUT)
        except git.GitCommandError as exc:
            raise UpdateError(f"cannot fetch {self.url}: {git_reason(str(exc.stderr), exc.status)}") \
                from exc
        except git.GitError as exc:
            raise UpdateError(f"cannot fetch {self.url}: {exc}") from exc

    def tags(self) -> list[str]:
        return [tag.name for tag in self._repo().tags]

    def resolve(self, ref: str) -> str:
        """The commit of a tag, a branch (pinned explicitly) or a commit id."""
        repo = self._repo()
        candidates = [f"refs/tags/{ref}", f"refs/remotes/origin/{ref}"]
        if _HEX.match(ref):
            candidates.append(ref)
        for name in candidates:
            try:
                return repo.commit(name).hexsha
            except (git.BadName, ValueError, git.GitError):
                continue
        raise UpdateError(f"{ref!r} is not a tag, branch or commit of {self.url}")

    def files(self, commit: str) -> dict[str, bytes]:
        """The regular files of a commit's tree (path -> bytes); symlinks are left out.

        A release is a small source tree: a file over :data:`MAX_FILE_BYTES` or a tree over
        :data:`MAX_TREE_BYTES` is refused by its size in the tree, before any of it is read.
        """
        tree = self._repo().commit(commit).tree
        blobs = [item for item in tree.traverse()
                 if isinstance(item, git.Blob) and item.mode & 0o170000 == 0o100000]
        total = 0
        for blob in blobs:
            total += blob.size
            if blob.size > MAX_FILE_BYTES or total > MAX_TREE_BYTES:
                raise UpdateError(
                    f"commit {commit[:12]} of {self.url} is not a release of this tool: "
                    + (f"{blob.path} has {blob.size} bytes (at most {MAX_FILE_BYTES})"
                       if blob.size > MAX_FILE_BYTES
                       else f"its files add up to more than {MAX_TREE_BYTES} bytes")
                )
        return {str(blob.path): blob.data_stream.read() for blob in blobs}


# --- state: held versions, the interval stamp ---------------------------------------------------

def held_file() -> Path:
    return Path(folders.update_dir()) / "held"


def held() -> set[str]:
    """Versions a rollback left: automatic checks do not install them again."""
    try:
        data = json.loads(held_file().read_text())
    except (OSError, ValueError):
        return set()
    return {v for v in data if isinstance(v, str)} if isinstance(data, list) else set()


def _write_held(versions: set[str]) -> None:
    from interactive_slurm.base.fsutil import write_private_atomic

    folders.ensure_private_dir(folders.update_dir())
    write_private_atomic(held_file(), json.dumps(sorted(versions)) + "\n")


def stamp_file() -> Path:
    return Path(folders.update_dir()) / "next-check"


def postpone(hours: float, now: float | None = None) -> float:
    """Make the next automatic check due in ``hours``; returns the due time."""
    due = (time.time() if now is None else now) + hours * 3600
    folders.ensure_private_dir(folders.update_dir())
    path = stamp_file()
    path.touch(mode=0o600)
    os.utime(path, (due, due))
    return due


# --- what runs from which install ---------------------------------------------------------------

def installs_in_use(runner: Runner) -> set[str] | None:
    """Install ids of the queued and running sessions; None when that cannot be known."""
    try:
        jobs = slurm.my_jobs(runner)
    except CommandError:
        return None
    ids = set()
    for job in jobs:
        vid = job.meta.get("install")
        if vid is None:
            return None  # submitted by a version that did not record it
        if vid != "-":
            ids.add(vid)
    return ids


# --- the update itself --------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a check found: the ref to install (None: nothing to do) and why."""

    installed: str | None
    ref: str | None
    commit: str | None
    reason: str


def plan(source: Source, channel: str, installed: str | None, *, to: str | None = None,
         skip: Iterable[str] = ()) -> Plan:
    """Choose what to install: ``to`` or a pinned channel as given; a release only if newer."""
    if to is None and channel not in ("stable", "pre"):
        to = channel
    if to is not None:
        return Plan(installed, to, source.resolve(to), f"pinned to {to}")
    release = pick(source.tags(), channel)
    current_version = installs.version_of(installed) if installed else None
    if release is None:
        return Plan(installed, None, None, f"no {channel} release tag in {source.url}")
    if not is_newer(release.version, current_version):
        return Plan(installed, None, None, f"up to date ({current_version}; newest {channel} "
                                            f"release is {release.tag})")
    if release.version in set(skip):
        return Plan(installed, None, None, f"{release.tag} was rolled back; not installing it "
                                            "automatically (`remote update` does)")
    return Plan(installed, release.tag, source.resolve(release.tag), f"{release.tag} is newer")


def _pip_download(runner: Runner, wheels: Path, wheel: Path, *, index: bool) -> str | None:
    """Make sure ``wheels`` holds every dependency of ``wheel``; the error text, or None."""
    pips = sorted(wheels.glob("pip-*.whl"))
    if not pips:
        return f"no pip wheel in {wheels}"
    argv = [sys.executable, f"{pips[-1]}/pip", "download", "--disable-pip-version-check",
            "--no-cache-dir", "-q", "--only-binary=:all:", "--dest", str(wheels),
            "--find-links", str(wheels), *([] if index else ["--no-index"]), str(wheel)]
    try:
        result = runner.run(argv, timeout=600, check=False)
    except CommandError as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
    return lines[-1]


def prepare_wheels(runner: Runner, root: Path, installed: str | None, files: dict[str, bytes],
                   ref: str, say: Say) -> tuple[str, Path]:
    """Build ``ref``'s wheel and gather its wheels into ``wheels/<id>``; returns (id, folder)."""
    if installed is None or not installs.wheels_dir(root, installed).is_dir():
        raise UpdateError(f"no install with its wheels under {root} to update from; run "
                          "`interactive-slurm setup` on your laptop first")
    base = installs.wheels_dir(root, installed)
    (root / "wheels").mkdir(mode=0o700, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=root / "wheels"))
    try:
        try:
            wheel = wheelbuild.build(files, tmp)
        except InteractiveSlurmError as exc:
            raise UpdateError(f"cannot build {ref}: {exc}") from exc
        for dep in base.glob("*.whl"):
            if not dep.name.startswith(OWN_WHEEL):
                shutil.copy2(dep, tmp / dep.name)
        version = wheel.name.split("-")[1]
        vid = installs.version_id(version, tmp.glob("*.whl"))
        if installs.is_complete(root, vid):
            return vid, installs.wheels_dir(root, vid)
        offline = _pip_download(runner, tmp, wheel, index=False)
        if offline is not None:
            say(f"{ref} needs wheels the current install does not have ({offline}); "
                "asking the package index")
            online = _pip_download(runner, tmp, wheel, index=True)
            if online is not None:
                raise UpdateError(f"cannot get the dependencies of {ref}: offline: {offline}; "
                                  f"package index: {online}")
            vid = installs.version_id(version, tmp.glob("*.whl"))
        final = installs.wheels_dir(root, vid)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return vid, final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def base_python() -> str:
    """The interpreter new venvs are made from (the base of this venv, not the venv itself)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def install_ref(runner: Runner, root: Path, p: Plan, files: dict[str, bytes], say: Say) -> str:
    """Build, install and self-check ``p.ref``; returns its id (``current`` not yet switched)."""
    assert p.ref is not None and p.commit is not None
    say(f"building {p.ref} ({p.commit[:12]})")
    vid, wheels = prepare_wheels(runner, root, p.installed, files, p.ref, say)
    if installs.is_complete(root, vid):
        return vid
    say(f"installing {vid} into {installs.version_dir(root, vid)}")
    try:
        installs.install(root, wheels, vid, python=base_python())
    except installs.InstallError as exc:
        shutil.rmtree(wheels, ignore_errors=True)
        raise UpdateError(f"{p.ref} was not installed, {p.installed or 'nothing'} stays current: "
                          f"{exc}") from exc
    return vid


def _prune(runner: Runner, root: Path, say: Say) -> None:
    in_use = installs_in_use(runner)
    if in_use is None:
        say("not removing old versions: cannot tell which ones running sessions use")
        return
    removed = installs.prune(root, protect=in_use)
    if removed:
        say(f"removed old versions: {', '.join(removed)}")


def _no_source() -> UpdateError:
    return UpdateError(f"no source to update from: {Path(folders.config_file())} has no url in [update]")


def update(runner: Runner, root: Path, cfg: UpdateConfig, say: Say, *, to: str | None = None,
           auto: bool = False) -> str | None:
    """Fetch, choose, install, check, switch. Returns the new current id, or None (no change)."""
    if not cfg.url:
        raise _no_source()
    source = Source(cfg.url, Path(folders.update_dir()) / "source.git")
    with installs.locked(root, on_wait=lambda: say("another update is running; waiting for it")):
        installed = installs.current(root)
        say(f"fetching {source.url}")
        with _fetch_lock():
            source.fetch()
            p = plan(source, cfg.channel, installed, to=to, skip=held() if auto else ())
            files = source.files(p.commit) if p.commit else {}
        if p.ref is None:
            say(p.reason)
            return None
        vid = install_ref(runner, root, p, files, say)
        if vid == installed:
            say(f"{p.ref} is installed already ({vid})")
            return None
        installs.switch(root, vid)
        say(f"switched {root / 'current'} to {vid} (was {installed or 'nothing'})")
        if not auto:
            _write_held(held() - {installs.version_of(vid)})
        _prune(runner, root, say)
    return vid


def rollback(root: Path, say: Say) -> str:
    """Switch ``current`` back to the install made before it; automatic checks skip the other."""
    with installs.locked(root, on_wait=lambda: say("another update is running; waiting for it")):
        cur = installs.current(root)
        prev = installs.previous(root)
        if prev is None:
            raise UpdateError(f"nothing to roll back to under {root} (installed: "
                              f"{', '.join(installs.installed(root)) or 'none'})")
        installs.switch(root, prev)
        if cur:
            _write_held(held() | {installs.version_of(cur)})
    say(f"switched {root / 'current'} to {prev} (was {cur or 'nothing'})")
    if cur:
        say(f"automatic checks will not install {installs.version_of(cur)} again; "
            "`remote update` does")
    return prev


@dataclass(frozen=True)
class Status:
    root: Path
    current: str | None
    installed: list[str]
    channel: str
    available: str | None
    reason: str


def check(root: Path, cfg: UpdateConfig, say: Say) -> Status:
    """Fetch and compare: what is installed, what the channel offers."""
    if not cfg.url:
        raise _no_source()
    source = Source(cfg.url, Path(folders.update_dir()) / "source.git")
    say(f"fetching {source.url}")
    with _fetch_lock():
        source.fetch()
    cur = installs.current(root)
    p = plan(source, cfg.channel, cur)
    return Status(root, cur, installs.installed(root), cfg.channel, p.ref, p.reason)


@contextlib.contextmanager
def _fetch_lock() -> Iterator[None]:
    """Serializes use of the git cache by a check that runs without the install lock."""
    folders.ensure_private_dir(folders.update_dir())
    with locks.held(Path(folders.update_dir()) / "fetch.lock"):
        yield


def auto_check(runner: Runner, root: Path, say: Say) -> int:
    """The detached check: at most one at a time; the next one is due an interval later."""
    from interactive_slurm.base import config

    folders.ensure_private_dir(folders.update_dir())
    with locks.held(Path(folders.update_dir()) / "check.lock", wait=False) as taken:
        if not taken:
            say("another automatic check is running")
            return 0
        hours = config.UpdateConfig().interval_hours
        try:
            cfg = config.load().update
            hours = cfg.interval_hours
            if not cfg.automatic:
                say("automatic checks are off (" + ("no url in [update]" if cfg.enabled
                                                    else "[update] enabled = false") + ")")
                return 0
            update(runner, root, cfg, say, auto=True)
            return 0
        except InteractiveSlurmError as exc:
            say(f"error: {exc}")
            return 1
        finally:
            postpone(hours)
