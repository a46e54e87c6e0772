"""The clusters set up from this laptop: the ``[clusters.NAME]`` tables of ``config.toml``.

::

    [clusters.slurm]
    login = "login.example.org"   # the login node, its port, the user there, an optional jump
    user = "alice"
    port = 22
    jump = ""
    identity = "/home/alice/.ssh/id_ed25519"
    install = "/home/alice/.local/share/interactive-slurm"   # on the login node
    python = "/usr/bin/python3.11"   # the install's interpreter there (setup's probe found it)
    hosts = ["slurm-cpu", "slurm-gpu"]
    vscode_server = "/scratch/alice"   # only if setup wrote Remote-SSH's serverInstallPath
    ...

``setup`` writes them and ``uninstall`` and ``clusters`` read them. The file is the one
:mod:`interactive_slurm.base.config` reads (which accepts the ``clusters`` key and leaves the tables
to this module); nothing is written that :func:`parse` refuses. The rules for what may go into an
ssh command line or config (:func:`check_login` and its parts) are the same here, for setup's
options (``setup.Request``) and for the managed block (``sshconfig.Block``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interactive_slurm.base import config, tomlio
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.base.values import check_profile_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_JUMP = re.compile(r"^[A-Za-z0-9_@.:,\[\]-]+$")


# --- the rules: nothing a login node or a typo gives us becomes an ssh option -------------------

def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"cluster name {name!r}: use letters, digits, - and _ (up to 31)")
    return name


def check_host(host: str, what: str = "login host") -> str:
    if not _HOST.match(host) or len(host) > 253:
        raise ConfigError(f"{what} {host!r}: expected a host name or address")
    return host


def check_user(user: str) -> str:
    if not _USER.match(user) or len(user) > 64:
        raise ConfigError(f"user {user!r}: expected a login name")
    return user


def check_jump(jump: str) -> str:
    if not _JUMP.match(jump):
        raise ConfigError(f"jump host {jump!r}: expected [user@]host[:port][,...]")
    return jump


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"port {port!r}: expected 1-65535")
    return port


def check_login(name: str, login: str, user: str, port: int, jump: str | None) -> None:
    """A cluster's name and how to log in to it (``jump`` may be empty)."""
    check_name(name)
    check_host(login)
    check_user(user)
    check_port(port)
    if jump:
        check_jump(jump)


def check_aliases(aliases: Iterable[str]) -> None:
    for alias in aliases:
        check_host(alias, "host alias")


# --- the tables -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """One cluster set up from this laptop (a ``[clusters.NAME]`` table)."""

    name: str
    login: str
    user: str
    port: int = 22
    jump: str = ""
    identity: str = ""           # the key ssh uses, on this laptop
    install: str = ""            # the install root on the login node (absolute)
    python: str = ""             # the install's interpreter there ("" before this was recorded)
    hosts: tuple[str, ...] = ()  # the ssh host aliases: cpu first, then gpu
    profile: str = ""            # passed as --profile by the ProxyCommand ("" = the cluster's default)
    ssh_config: str = ""         # the ssh config file holding the block
    vscode_server: str = ""      # the serverInstallPath setup wrote for the hosts ("" none)
    known_hosts: str = ""        # the managed known_hosts with the cluster's @cert-authority line
    vscode: tuple[str, ...] = ()          # VS Code settings files setup changed
    vscode_globals: tuple[str, ...] = ()  # ... of which setup added the global keys
    #: settings file -> {setting: the user's own value that setup replaced}: put back by uninstall
    vscode_before: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_STR = ("login", "user", "jump", "identity", "install", "python", "profile", "ssh_config",
        "known_hosts", "vscode_server")
_LIST = ("hosts", "vscode", "vscode_globals")


def parse_table(name: str, table: Any, source: Path) -> Cluster:
    """One ``[clusters.NAME]`` table; errors name the file, the table, the key and the value."""
    where = f"{source}: [clusters.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    values: dict[str, Any] = {"name": name}
    for key, value in table.items():
        if key in _STR:
            if not isinstance(value, str) or "\n" in value:
                raise ConfigError(f"{where}: {key} = {value!r}: expected a string")
        elif key in _LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} = {value!r}: expected a list of strings")
            value = tuple(value)
        elif key == "vscode_before":
            value = _parse_before(value, f"{where}: vscode_before")
        elif key != "port":
            valid = ", ".join((*_STR, "port", *_LIST, "vscode_before"))
            raise ConfigError(f"{where}: {key} = {value!r}: unknown key; valid keys: {valid}")
        values[key] = value
    for key in ("login", "user"):
        if key not in values:
            raise ConfigError(f"{where}: {key} is missing")
    try:
        check_login(name, values["login"], values["user"], values.get("port", 22), values.get("jump"))
        check_aliases(values.get("hosts", ()))
        if values.get("profile"):
            check_profile_name(values["profile"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return Cluster(**values)


def _parse_before(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """``vscode_before``: a table of settings files, each a table of JSON scalars."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} = {value!r}: expected a table of settings files")
    out: dict[str, dict[str, Any]] = {}
    for path, settings in value.items():
        if not isinstance(settings, dict) or not all(
                isinstance(k, str) and isinstance(v, (bool, int, float, str))
                for k, v in settings.items()):
            raise ConfigError(f"{where}.{path!r} = {settings!r}: expected a table of values")
        out[path] = dict(settings)
    return out


def parse(data: Mapping[str, Any], source: Path) -> tuple[Cluster, ...]:
    """The clusters of a config file's data (none without a ``clusters`` key)."""
    tables = data.get("clusters", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: clusters: expected tables [clusters.NAME]")
    return tuple(parse_table(n, t, source) for n, t in tables.items())


def load() -> tuple[Cluster, ...]:
    """The clusters in config.toml; the rest of the file is checked too, as every command does."""
    found = config.read()
    if found is None:
        return ()
    data, path = found
    config.parse(data, path)
    return parse(data, path)


def named(clusters: Iterable[Cluster], name: str) -> Cluster | None:
    return next((c for c in clusters if c.name == name), None)


def render_update(change: Callable[[dict[str, Any]], None]) -> tuple[Path, str | None, str]:
    """:func:`interactive_slurm.base.config.render_update`, its result's clusters checked too."""
    path, before, after = config.render_update(change)
    parse(tomlio.loads(after, path), path)
    return path, before, after
