"""App recipes: how a web app (Jupyter, TensorBoard, ...) runs inside a session's job.

A recipe is a small TOML file ``NAME.toml``; the first one found wins, in this order:

1. the user's own, in ``<config dir>/apps/`` (``~/.config/interactive-slurm/apps/``);
2. the site's, in :data:`SITE_DIR` (``/etc/interactive-slurm/apps/``, root's);
3. the shipped ones, in the package's ``templates/apps/``.

A recipe names the command that runs, so the user's and the site's folders and files are checked
like sshd's StrictModes (yours or root's, writable by nobody else). Every value is checked here;
an error names the file, the key and the value, and what to write instead::

    description = "JupyterLab"                    # one line for `remote app list` and --help
    package = "jupyterlab (PyPI)"                 # what provides the app
    install = "pip install --user jupyterlab"     # how to get it, for the "not found" message
    requires = ["jupyter-lab"]                    # programs that must be on the PATH (default:
                                                  # the command's first word)
    listen = "unix"                               # "unix": the app serves {socket}; "tcp": the
                                                  # app serves 127.0.0.1:{port} in a private
                                                  # network namespace (see node/appserve.py)
    command = ["jupyter", "lab", "--ServerApp.sock={socket}", "--ServerApp.root_dir={workdir}"]
    token = "env"                                 # "env": the app checks the token, which it
                                                  # gets from [env]; "guard": the app has no
                                                  # login, interactive-slurm's guard checks it
    ready = "/api/status"                         # an HTTP path that answers 2xx/3xx (with the
                                                  # token) once the app serves
    url = "/lab"                                  # the page to open (?token=... is added)
    ready_timeout = 120                           # seconds to wait for `ready`
    setup = "module load jupyter"                 # shell lines run before the app (optional)
    log = "{runtime}/app.log"                     # a log file the app writes itself (optional;
                                                  # its output is always kept in the job's state)
    [env]
    JUPYTER_TOKEN = "{token}"

Placeholders: ``{socket}`` (unix apps), ``{port}`` (tcp apps), ``{workdir}``, ``{runtime}`` (the
app's private folder on the node) in ``command``, ``[env]`` and ``log``; ``{token}`` only in
``[env]``: on the command line every user of the node could read it (``ps``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interactive_slurm.base import folders, tomlio
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.base.fsutil import check_secure, check_secure_if_exists

SHIPPED_DIR = Path(__file__).parents[1] / "templates" / "apps"  # package data
#: The site's recipes (made by the admins: root's, not writable by others).
SITE_DIR = Path("/etc/interactive-slurm/apps")

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z", re.ASCII)
_PROGRAM_RE = re.compile(r"^[A-Za-z0-9_+./-]{1,255}\Z", re.ASCII)
_PATH_RE = re.compile(r"^/[A-Za-z0-9/_.~%@:+-]{0,255}\Z", re.ASCII)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z", re.ASCII)

LISTEN = ("unix", "tcp")
ENV, GUARD = "env", "guard"
TOKEN = (ENV, GUARD)
REQUIRED = ("description", "package", "install", "listen", "command", "token", "ready")
OPTIONAL = ("url", "requires", "env", "setup", "log", "ready_timeout")
KEYS = (*REQUIRED, *OPTIONAL)
DEFAULT_READY_TIMEOUT = 120

#: The placeholders each part of a recipe may use.
_COMMAND_FIELDS = {"unix": ("socket", "workdir", "runtime"), "tcp": ("port", "workdir", "runtime")}
_ENV_FIELDS = ("token", "socket", "port", "workdir", "runtime")
_LOG_FIELDS = ("workdir", "runtime")


@dataclass(frozen=True)
class Recipe:
    """One validated recipe (see the module's docstring for what each field means)."""

    name: str
    source: Path
    description: str
    package: str
    install: str
    listen: str
    command: tuple[str, ...]
    token_via: str        # the key ``token``: "env" or "guard"
    ready: str
    url: str = "/"
    requires: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    setup: str = ""
    log: str = ""
    ready_timeout: int = DEFAULT_READY_TIMEOUT

    @property
    def guarded(self) -> bool:
        """Whether interactive-slurm's guard checks the token (the app has no login)."""
        return self.token_via == GUARD

    def render(self, values: Mapping[str, str]) -> tuple[list[str], dict[str, str], str]:
        """The command, the environment and the log file with ``values`` put in."""
        argv = [part.format_map(values) for part in self.command]
        env = {key: value.format_map(values) for key, value in self.env}
        return argv, env, self.log.format_map(values) if self.log else ""


class _Where:
    def __init__(self, source: Path) -> None:
        self.source = source

    def error(self, key: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key} = {value!r}: {why}")


def _fields(w: _Where, key: str, text: str, allowed: tuple[str, ...]) -> set[str]:
    """The placeholders in ``text``; an error for any other ``{...}`` (or a broken brace)."""
    found = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise w.error(key, text, f"{exc} (write a literal brace as {{{{ or }}}})") from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            shown = ", ".join("{" + a + "}" for a in allowed)
            raise w.error(key, text, f"unknown placeholder {{{name}}}; this key may use {shown}")
        found.add(name)
    return found


def _string(w: _Where, key: str, value: object, *, one_line: bool = True, limit: int = 400) -> str:
    if not isinstance(value, str) or not value.strip():
        raise w.error(key, value, "expected a non-empty string")
    if len(value) > limit or "\x00" in value or (one_line and ("\n" in value or "\r" in value)):
        raise w.error(key, value, f"expected one line of at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise w.error(key, value, "control characters are not allowed")
    return value


def _choice(w: _Where, key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise w.error(key, value, f"expected one of: {', '.join(choices)}")
    return str(value)


def _path(w: _Where, key: str, value: object) -> str:
    if isinstance(value, str) and _PATH_RE.match(value) and "/../" not in value + "/":
        return value
    raise w.error(key, value, "expected an HTTP path such as \"/lab\" (starting with /; letters, "
                              "digits and /_.~%@:+- only)")


def _programs(w: _Where, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise w.error(key, value, "expected a non-empty list of program names such as [\"jupyter\"]")
    for item in value:
        if not _PROGRAM_RE.match(item) or ".." in item.split("/"):
            raise w.error(key, item, "expected a program name or an absolute path "
                                     "(letters, digits and _+./- only)")
    return tuple(value)


def _command(w: _Where, value: object, listen: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise w.error("command", value, "expected a non-empty list of strings such as "
                                        "[\"jupyter\", \"lab\", \"--ServerApp.sock={socket}\"]")
    if len(value) > 64 or any("\x00" in v or "\n" in v for v in value):
        raise w.error("command", value, "expected at most 64 one-line arguments")
    _programs(w, "command", value[:1])
    used: set[str] = set()
    for part in value:
        if "{token}" in part:
            raise w.error("command", part, "the token must not be on the command line (every user "
                                           "of the node can read it with ps): pass it in [env] "
                                           "and set token = \"env\", or use token = \"guard\"")
        used |= _fields(w, "command", part, _COMMAND_FIELDS[listen])
    need = "socket" if listen == "unix" else "port"
    if need not in used:
        raise w.error("command", value, f"a listen = \"{listen}\" app must be told where to listen: "
                                        f"put {{{need}}} in its command")
    return tuple(value)


def _env(w: _Where, value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise w.error("env", value, "expected a table of NAME = \"value\" strings")
    out = []
    for name, text in value.items():
        if not _ENV_NAME_RE.match(name):
            raise w.error("env", name, "expected an environment variable name (letters, digits, _)")
        text = _string(w, f"env.{name}", text)
        _fields(w, f"env.{name}", text, _ENV_FIELDS)
        out.append((name, text))
    return tuple(out)


def _timeout(w: _Where, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
        raise w.error("ready_timeout", value, "expected whole seconds from 1 to 3600")
    return value


def parse(name: str, data: Mapping[str, Any], source: Path) -> Recipe:
    """Validate one recipe's TOML data (``name`` is the file's stem)."""
    w = _Where(source)
    for key, value in data.items():
        if key not in KEYS:
            raise w.error(key, value, f"unknown key; valid keys: {', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in data:
            raise ConfigError(f"{source}: {key} is missing (every recipe needs "
                              f"{', '.join(REQUIRED)})")
    listen = _choice(w, "listen", data["listen"], LISTEN)
    via = _choice(w, "token", data["token"], TOKEN)
    command = _command(w, data["command"], listen)
    env = _env(w, data.get("env", {}))
    token_in_env = any("{token}" in text for _, text in env)
    if via == ENV and not token_in_env:
        raise w.error("token", via, "token = \"env\" needs {token} in an [env] value (such as "
                                      "JUPYTER_TOKEN = \"{token}\"), or use token = \"guard\"")
    if via == GUARD and token_in_env:
        raise w.error("token", via, "with token = \"guard\" the app must not get the token: "
                                      "take {token} out of [env], or use token = \"env\"")
    log = data.get("log", "")
    if log:
        log = _string(w, "log", log)
        _fields(w, "log", log, _LOG_FIELDS)
        if not log.startswith(("/", "{runtime}", "{workdir}")):
            raise w.error("log", log, "expected an absolute path, or one under {runtime} or {workdir}")
    return Recipe(
        name=name,
        source=source,
        description=_string(w, "description", data["description"], limit=120),
        package=_string(w, "package", data["package"], limit=200),
        install=_string(w, "install", data["install"]),
        listen=listen,
        command=command,
        token_via=via,
        ready=_path(w, "ready", data["ready"]),
        url=_path(w, "url", data.get("url", "/")),
        requires=_programs(w, "requires", data["requires"]) if "requires" in data else command[:1],
        env=env,
        setup=_string(w, "setup", data["setup"], one_line=False, limit=4000) if "setup" in data else "",
        log=log,
        ready_timeout=_timeout(w, data.get("ready_timeout", DEFAULT_READY_TIMEOUT)),
    )


def search_path() -> tuple[Path, ...]:
    """The recipe folders, the first one winning: the user's, the site's, the shipped one."""
    return (Path(folders.apps_dir()), SITE_DIR, SHIPPED_DIR)


def available() -> dict[str, Path]:
    """Recipe name -> file (the first folder of :func:`search_path` that has it)."""
    found: dict[str, Path] = {}
    for folder in search_path():
        if folder != SHIPPED_DIR and not check_secure_if_exists(folder):
            continue
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                if NAME_RE.match(path.stem):
                    found.setdefault(path.stem, path)
    return found


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"app name {name!r}: expected lower-case letters, digits and - "
                          "(such as jupyter, lab, tensorboard)")
    return name


def load(name: str) -> Recipe:
    """The recipe called ``name``, validated."""
    check_name(name)
    choices = available()
    if name not in choices:
        raise ConfigError(f"no app recipe {name!r}; available: {', '.join(sorted(choices)) or 'none'} "
                          f"(add your own as {Path(folders.apps_dir()) / (name + '.toml')})")
    path = choices[name]
    if path.parent != SHIPPED_DIR:
        check_secure(path)  # it names a command that runs as you: StrictModes
    return parse(name, tomlio.load(path), path)
