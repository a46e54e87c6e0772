"""What ``setup`` learns about the login node in one round trip, every answer checked.

:data:`remote_scripts.PROBE_SH` runs there (POSIX sh) and answers, in one go:

- the cluster's Python: ``--python`` if given, else ``python3`` if it is 3.9 or newer, else the
  newest of ``python3.13`` ... ``python3.9`` on the login PATH, else what the login shell's
  ``module load python3`` (then ``python``) puts on it, each with its version; the first 3.9+ one
  is the install's interpreter (its venv is made with it, so everything of the install on the
  cluster runs with it);
- the home directory's free space and free inodes (``statvfs``: where the filesystem reports a
  quota, as many NFS, GPFS and Lustre set-ups do, that is the quota), and, when they are tight,
  the user's scratch folders (``$SCRATCH``, ``$WORK``) for VS Code's server;
- the install root, the home directory, whether the key is authorized and the current install.

The login node may be hostile (SECURITY.md): each value is checked here before it reaches a
file, a command line or the terminal (:func:`check_path`, :func:`printable`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.install import installs
from interactive_slurm.laptop import remote_scripts
from interactive_slurm.laptop.connection import Login

MIN_PYTHON = (3, 9)

#: Below these, the home directory is "tight" for VS Code's server: one server version is about
#: 250 MB and 3-5 thousand files, each VS Code update adds another until the old one is cleaned
#: up, and a few extensions (Python with Pylance, Jupyter, C/C++) add hundreds of MB and tens of
#: thousands of files more. 2 GiB and 100 000 files leave room for two server versions and a
#: usual set of extensions; less, and the home quota fills up (VS Code then fails to start, and
#: so can everything else that writes to home).
TIGHT_BYTES = 2 * 1024**3
TIGHT_INODES = 100_000
#: The environment variables whose folders may take VS Code's server when home is tight.
SCRATCH_VARIABLES = ("SCRATCH", "WORK")


class SetupError(InteractiveSlurmError):
    """Setup could not finish; what was done so far is said, nothing is half-written."""


# --- what a login node may say -------------------------------------------------------------------

#: A path the login node may name (the install root, the home directory, an interpreter, a
#: folder): absolute, and only characters that need no quoting anywhere (ssh options, the
#: shell, VS Code's settings).
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@,/-]{0,1023}\Z", re.ASCII)
_VERSION = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,6})\Z", re.ASCII)  # as PROBE_SH reads it
_MAX_LINES = 32


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on (escapes, controls) shown as a
    Python escape: what a login node sends is never printed raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_path(value: object, what: str, where: str) -> str:
    if not (isinstance(value, str) and _SAFE_PATH.match(value)
            and ".." not in value.split("/") and "//" not in value):
        raise SetupError(f"{where} answered {what} = {printable(repr(value))}: not an absolute "
                         "path of letters, digits and ._+@,/- without '..'; refusing to use it")
    return value


def _is_install_id(text: str) -> bool:
    try:
        installs.check_id(text)
    except installs.InstallError:
        return False
    return True


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


# --- the parts of an answer -----------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One interpreter the probe looked at."""

    how: str   # "explicit" (--python), "path" (on the login PATH) or "module" (module load NAME)
    name: str  # the command (or module) name
    path: str  # "" when not there
    version: tuple[int, int, int] | None  # None when it gave no version

    @property
    def usable(self) -> bool:
        return self.version is not None and self.version[:2] >= MIN_PYTHON

    @property
    def label(self) -> str:
        return f"`module load {self.name}`" if self.how == "module" else self.name

    def describe(self) -> str:
        """``python3 is 3.6.8 at /usr/bin/python3``, or why it is not one."""
        if not self.path:
            return (f"{self.label} gives no python" if self.how == "module"
                    else f"{self.label} not found")
        if self.version is None:
            return f"{self.label} is {self.path}, which did not answer as a Python" + (
                " without the module loaded" if self.how == "module" else "")
        return f"{self.label} is {_dotted(self.version)} at {self.path}"


def _dotted(version: Sequence[int]) -> str:
    return ".".join(str(n) for n in version)


@dataclass(frozen=True)
class Space:
    """What the user may still write to a folder's filesystem (``statvfs``)."""

    free: int                # bytes
    inodes: int | None       # files; None where the filesystem does not count them

    @property
    def tight(self) -> bool:
        return self.free < TIGHT_BYTES or (self.inodes is not None and self.inodes < TIGHT_INODES)

    def describe(self) -> str:
        size = (f"{self.free / 1024**3:.1f} GiB" if self.free >= 1024**3
                else f"{self.free // 1024**2} MiB")
        return size + (f" and {self.inodes:,} files" if self.inodes is not None else "")


@dataclass(frozen=True)
class Folder:
    """A folder the probe looked at for VS Code's server (``$SCRATCH``, ``--vscode-server-dir``)."""

    name: str
    path: str
    exists: bool
    is_dir: bool = False
    mine: bool = False
    shared: bool = False   # group or others may write to it
    space: Space | None = None
    safe: bool = True      # a path setup may write into the settings (else: shown escaped)

    def unfit(self) -> str | None:
        """Why VS Code's server should not go there, or None."""
        if not self.safe:
            return "has characters setup does not write into VS Code's settings"
        if not self.exists:
            return "does not exist"
        if not self.is_dir:
            return "is not a folder"
        if not self.mine:
            return "is not yours"
        if self.shared:
            return ("can be written by others (group or world), who could then run code as you "
                    "through VS Code's server")
        return None


@dataclass(frozen=True)
class Probe:
    python: tuple[int, int]
    home: str
    root: str
    authorized: bool
    current: str | None
    executable: str = ""            # the interpreter for the install (absolute)
    space: Space | None = None      # the home directory's
    folders: tuple[Folder, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    module: str = ""                # "found", "none", "noshell", or "" (not tried)


# --- checking the answer --------------------------------------------------------------------------

def _space(value: object, what: str, where: str) -> Space | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and set(value) == {"free", "inodes"} and _count(value["free"])
            and (value["inodes"] is None or _count(value["inodes"]))):
        raise SetupError(f"{where} answered {what} = {printable(repr(value))[:200]}: expected "
                         "free bytes and inodes")
    return Space(value["free"], value["inodes"])


_FOLDER_NAMES = ("--vscode-server-dir", *(f"${n}" for n in SCRATCH_VARIABLES))


def _folder(value: object, where: str) -> Folder:
    if not isinstance(value, dict) or value.get("name") not in _FOLDER_NAMES:
        raise SetupError(f"{where} answered folder {printable(repr(value))[:200]}: not one it "
                         "was asked about")
    name = value["name"]
    try:
        path, safe = check_path(value.get("path"), name, where), True
    except SetupError:
        if name == "--vscode-server-dir":  # checked here before it was sent: not the same one
            raise
        path, safe = printable(repr(value.get("path")))[:200], False  # only shown, never used
    flags = {key: value.get(key, False) for key in ("exists", "dir", "mine", "shared")}
    if not all(isinstance(v, bool) for v in flags.values()) or not set(value) <= {
            "name", "path", "exists", "dir", "mine", "shared", "space"}:
        raise SetupError(f"{where} answered folder {name} = {printable(repr(value))[:200]}: "
                         "expected exists, dir, mine, shared (true or false) and space")
    return Folder(name, path, flags["exists"], flags["dir"], flags["mine"], flags["shared"],
                  _space(value.get("space"), f"{name}'s space", where), safe)


def check_probe(data: dict[str, Any], where: str) -> Probe:
    """The login node's answers to :data:`remote_scripts.PROBE`, each checked before it goes
    anywhere (a hostile login node must not be able to put an ssh option, a path outside the
    install or a terminal escape into the laptop's files or terminal)."""
    py = data.get("python")
    if not (isinstance(py, list) and len(py) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1000 for n in py)):
        raise SetupError(f"{where} answered python = {printable(repr(py))}: expected [major, minor]")
    authorized, current = data.get("authorized"), data.get("current")
    if not isinstance(authorized, bool):
        raise SetupError(f"{where} answered authorized = {printable(repr(authorized))}: "
                         "expected true or false")
    if current is not None and not (isinstance(current, str) and _is_install_id(current)):
        raise SetupError(f"{where} answered current = {printable(repr(current))}: "
                         "expected an install id")
    folders = data.get("folders", [])
    if not isinstance(folders, list) or len(folders) > len(_FOLDER_NAMES):
        raise SetupError(f"{where} answered folders = {printable(repr(folders))[:200]}: "
                         "expected a short list")
    return Probe((py[0], py[1]), check_path(data.get("home"), "home", where),
                 check_path(data.get("root"), "root", where), authorized, current,
                 executable=check_path(data.get("executable"), "executable", where),
                 space=_space(data.get("space"), "space", where),
                 folders=tuple(_folder(f, where) for f in folders))


def _candidate(fields: list[str], where: str, explicit: str | None) -> Candidate:
    how, name, path, version = fields
    names = {"explicit": (explicit,), "path": remote_scripts.PATH_CANDIDATES,
             "module": remote_scripts.MODULE_CANDIDATES}.get(how, ())
    if name not in names:
        raise SetupError(f"{where} answered python {printable(repr(how))} "
                         f"{printable(repr(name))}: not an interpreter it was asked about")
    if path:
        check_path(path, f"the path of {name}", where)
    found = _VERSION.match(version)
    if version and not found:
        raise SetupError(f"{where} answered {name} = Python {printable(repr(version))}: "
                         "expected MAJOR.MINOR.MICRO")
    numbers = (int(found[1]), int(found[2]), int(found[3])) if found and path else None
    return Candidate(how, name, path, numbers)


def read(stdout: str, where: str, explicit: str | None) -> tuple[tuple[Candidate, ...], str,
                                                                 dict[str, Any] | None]:
    """The probe's lines: the interpreters it looked at, the module command's state, and the
    JSON answer of :data:`remote_scripts.PROBE` (None when no usable interpreter ran it)."""
    candidates: list[Candidate] = []
    module = ""
    lines = stdout.splitlines()
    for line in lines:
        fields = line.split("\t")
        if fields[0] != remote_scripts.MARK:
            continue
        if len(candidates) >= _MAX_LINES:
            raise SetupError(f"{where} answered more than {_MAX_LINES} interpreters; refusing")
        if len(fields) == 6 and fields[1] == "python":
            candidates.append(_candidate(fields[2:], where, explicit))
        elif len(fields) == 6 and fields[1] == "module" and fields[2] in ("found", "none", "noshell"):
            module = fields[2]
        else:
            raise SetupError(f"{where} answered {printable(repr(line))[:200]}: not a line of "
                             "setup's probe")
    last = next((line for line in reversed(lines) if line.strip()), "")
    if not last.startswith("{"):
        return tuple(candidates), module, None
    try:
        data = json.loads(last)
    except ValueError as exc:
        raise SetupError(f"{where} answered {printable(last[:120])!r}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SetupError(f"{where} answered {printable(last[:120])!r}: expected an object")
    return tuple(candidates), module, data


# --- what it means ----------------------------------------------------------------------------------

def _why_not(candidates: Sequence[Candidate], how: str) -> str:
    """The candidates of one kind that are not usable, in a few words."""
    parts, missing = [], []
    for c in candidates:
        if c.how != how or c.usable:
            continue
        if not c.path:
            missing.append(c.name)
        else:
            parts.append(c.describe())
    if missing and how == "module":
        parts.append(", ".join(f"`module load {n}`" for n in missing) + " gives no python")
    elif missing:
        parts.append(", ".join(missing) + " not found")
    return "; ".join(parts)


def interpret(stdout: str, where: str, explicit: str | None, *, exit_status: int = 0,
              stderr: str = "") -> Probe:
    """The checked :class:`Probe`, or SetupError saying in one line what was found (each
    candidate and its version) and what to load or pass."""
    candidates, module, data = read(stdout, where, explicit)
    if data is None:
        if exit_status != 0 or not candidates or any(c.usable for c in candidates):
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise SetupError(f"on {where}: setup's probe failed (exit {exit_status}): "
                             f"{printable(last)[:300]}")
        raise no_python(candidates, module, where, explicit)
    found = check_probe(data, where)
    picked = next((c for c in candidates if c.usable), None)
    if picked is None or picked.path != found.executable or picked.version is None \
            or picked.version[:2] != found.python:
        raise SetupError(
            f"{where} answered that Python {_dotted(found.python)} at {found.executable} ran the "
            "probe, which is not the 3.9+ interpreter it reported finding; refusing to use it")
    return Probe(found.python, found.home, found.root, found.authorized, found.current,
                 executable=found.executable, space=found.space, folders=found.folders,
                 candidates=candidates, module=module)


def no_python(candidates: Sequence[Candidate], module: str, where: str,
              explicit: str | None) -> SetupError:
    if explicit is not None:
        c = candidates[0] if candidates else Candidate("explicit", explicit, "", None)
        if not c.path:
            return SetupError(f"--python {explicit}: not found on {where}'s PATH; give a command "
                              "on that PATH or an absolute path, or leave --python out and setup "
                              "looks for a Python 3.9+ itself")
        return SetupError(f"--python {explicit}: {c.describe()} on {where}; interactive-slurm "
                          "needs Python 3.9 or newer on the cluster: pass another --python, or "
                          "leave it out and setup looks for one itself")
    said = [_why_not(candidates, "path")]
    if module == "found":
        said.append(_why_not(candidates, "module") or "`module load` gives no python")
    elif module == "none":
        said.append("no `module` command in the login shell")
    elif module == "noshell":
        said.append("no sh-like login shell to try `module load` in")
    return SetupError(
        f"no Python 3.9 or newer on {where}: {'; '.join(s for s in said if s)}. Make one "
        "reachable in your login (for example `module load python/3.11` in ~/.bashrc, or your "
        "site's Python 3 package), or pass --python /path/to/python3.9-or-newer"
    )


def choice(found: Probe) -> str:
    """Which interpreter the install uses, and why that one (one line for the report)."""
    picked = next((c for c in found.candidates if c.usable), None)
    if picked is None or picked.version is None:
        return f"cluster Python: {found.executable} (Python {_dotted(found.python)})"
    head = f"cluster Python: {picked.path} (Python {_dotted(picked.version)}"
    if picked.how == "explicit":
        return head + f", from --python {picked.name})"
    if picked.how == "path" and picked.name == "python3":
        return head + ")"
    passed = _why_not(found.candidates, "path")
    if picked.how == "path":
        return head + f", {picked.name} on the login PATH); passed over: {passed}"
    return (head + f", from `module load {picked.name}`, runs without the module loaded); "
            f"passed over: {passed}")


# --- VS Code's server -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerDir:
    """Where VS Code's server goes on the cluster: ``path`` for Remote-SSH's
    ``serverInstallPath`` (None: VS Code's default, the home directory), what to say, and what
    to warn about."""

    path: str | None
    said: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def server_dir(found: Probe, asked: str | None, previous: str, where: str) -> ServerDir:
    """``asked``: ``--vscode-server-dir`` (``~`` for home); ``previous``: what an earlier setup
    of this cluster wrote (kept unless asked otherwise)."""
    if asked == "~":
        return ServerDir(None, (f"VS Code's server on {where}: in your home (VS Code's default)",)
                         if previous else ())
    if asked:
        folder = next((f for f in found.folders if f.name == "--vscode-server-dir"), None)
        if folder is None or folder.path != asked:
            raise SetupError(f"{where} did not answer about --vscode-server-dir {asked}")
        problem = folder.unfit()
        if problem and problem != "does not exist":
            raise SetupError(f"--vscode-server-dir {asked} {problem} on {where}; VS Code's server "
                             "runs as you from there: pick a folder of your own")
        made = "; VS Code makes the folder" if not folder.exists else ""
        return ServerDir(asked, (f"VS Code's server on {where}: {asked}/.vscode-server "
                                 f"(remote.SSH.serverInstallPath){made}",))
    if previous:
        return ServerDir(previous)
    if found.space is None or not found.space.tight:
        return ServerDir(None)
    home = (f"your home on {where} has {found.space.describe()} free, too little for VS Code's "
            "server and extensions (hundreds of MB, tens of thousands of files)")
    unfit = []
    for folder in found.folders:
        if folder.name == "--vscode-server-dir":
            continue
        problem = folder.unfit() or (f"has only {folder.space.describe()} free"
                                     if folder.space is not None and folder.space.tight else None)
        if problem is None:
            return ServerDir(folder.path, (
                f"{home}: it goes to {folder.name} = {folder.path} "
                "(remote.SSH.serverInstallPath); --vscode-server-dir DIR picks another folder, "
                "--vscode-server-dir '~' keeps it in your home",))
        unfit.append(f"{folder.name} = {folder.path} {problem}")
    looked = ("; " + "; ".join(unfit)) if unfit else (
        f"; ${' and $'.join(SCRATCH_VARIABLES)} are not set there")
    return ServerDir(None, warnings=(
        f"{home}: pass --vscode-server-dir DIR, a folder of yours on a larger filesystem "
        f"(scratch or project space){looked}",))


# --- the round trip -------------------------------------------------------------------------------

def argv(install_dir: str, pub: str, python: str | None, vscode_dir: str | None) -> list[str]:
    return ["/bin/sh", "-s", "--", install_dir, pub, python or "", vscode_dir or "",
            str(TIGHT_BYTES), str(TIGHT_INODES)]


async def run(login: Login, *, where: str, install_dir: str, pub: str, python: str | None,
              vscode_dir: str | None) -> Probe:
    """Ask the login node everything setup needs to know, in one round trip."""
    result = await login.run(argv(install_dir, pub, python, vscode_dir),
                             input=remote_scripts.PROBE_SH, check=False)
    status = result.exit_status if isinstance(result.exit_status, int) else -1
    return interpret(str(result.stdout or ""), where, python, exit_status=status,
                     stderr=str(result.stderr or ""))
