"""The user's ``config.toml`` (platformdirs config dir, or ``$INTERACTIVE_SLURM_CONFIG``).

::

    default_profile = "default"   # the profile `proxy` uses without --profile
    wait_timeout = 1800           # seconds the proxy waits for a session before giving up
    sshd = "/usr/sbin/sshd"       # the sshd binary on compute nodes (absolute path)

    [clusters.slurm]              # on a laptop: what `interactive-slurm setup` set up
    login = "login.example.org"
    user = "alice"
    ...

A missing file means all defaults. Unknown keys and bad values are errors naming the file.
The ``clusters`` tables are written by ``setup`` (:func:`render_update`), validated by this same
parser before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interactive_slurm import paths, tomlio
from interactive_slurm.errors import ConfigError
from interactive_slurm.profiles import check_profile_name


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
    hosts: tuple[str, ...] = ()  # the ssh host aliases: cpu first, then gpu
    profile: str = ""            # passed as --profile by the ProxyCommand ("" = the cluster's default)
    ssh_config: str = ""         # the ssh config file holding the block
    known_hosts: str = ""        # the managed known_hosts with the cluster's @cert-authority line
    vscode: tuple[str, ...] = ()          # VS Code settings files setup changed
    vscode_globals: tuple[str, ...] = ()  # ... of which setup added the global keys


@dataclass(frozen=True)
class Config:
    default_profile: str = "default"
    wait_timeout: float = 1800.0
    sshd: str = "/usr/sbin/sshd"
    clusters: tuple[Cluster, ...] = field(default=())
    source: Path | None = None

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)


KEYS = ("default_profile", "wait_timeout", "sshd", "clusters")
_CLUSTER_STR = ("login", "user", "jump", "identity", "install", "profile", "ssh_config", "known_hosts")
_CLUSTER_LIST = ("hosts", "vscode", "vscode_globals")


def _parse_cluster(name: str, table: Any, source: Path) -> Cluster:
    where = f"{source}: [clusters.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    from interactive_slurm.laptop import sshconfig  # the name/host/user rules live there

    values: dict[str, Any] = {"name": name}
    for key, value in table.items():
        if key in _CLUSTER_STR:
            if not isinstance(value, str) or "\n" in value:
                raise ConfigError(f"{where}: {key} = {value!r}: expected a string")
        elif key in _CLUSTER_LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} = {value!r}: expected a list of strings")
            value = tuple(value)
        elif key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ConfigError(f"{where}: port = {value!r}: expected 1-65535")
        else:
            valid = ", ".join((*_CLUSTER_STR, "port", *_CLUSTER_LIST))
            raise ConfigError(f"{where}: {key} = {value!r}: unknown key; valid keys: {valid}")
        values[key] = value
    for key in ("login", "user"):
        if key not in values:
            raise ConfigError(f"{where}: {key} is missing")
    try:
        sshconfig.check_name(name)
        sshconfig.check_host(values["login"])
        sshconfig.check_user(values["user"])
        for alias in values.get("hosts", ()):
            sshconfig.check_host(alias, "host alias")
        if values.get("jump"):
            sshconfig.check_jump(values["jump"])
        if values.get("profile"):
            check_profile_name(values["profile"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return Cluster(**values)


def parse(data: dict[str, Any], source: Path) -> Config:
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{source}: {key} = {value!r}: unknown key; valid keys: {', '.join(KEYS)}")
    values: dict[str, Any] = {"source": source}
    if "default_profile" in data:
        value = data["default_profile"]
        if not isinstance(value, str):
            raise ConfigError(f"{source}: default_profile = {value!r}: expected a profile name")
        try:
            values["default_profile"] = check_profile_name(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: default_profile: {exc}") from exc
    if "wait_timeout" in data:
        value = data["wait_timeout"]
        if (
            isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0
        ):
            raise ConfigError(f"{source}: wait_timeout = {value!r}: expected seconds > 0")
        values["wait_timeout"] = float(value)
    if "sshd" in data:
        value = data["sshd"]
        if not isinstance(value, str) or not value.startswith("/") or "\n" in value:
            raise ConfigError(f"{source}: sshd = {value!r}: expected an absolute path")
        values["sshd"] = value
    if "clusters" in data:
        tables = data["clusters"]
        if not isinstance(tables, dict):
            raise ConfigError(f"{source}: clusters: expected tables [clusters.NAME]")
        values["clusters"] = tuple(_parse_cluster(n, t, source) for n, t in tables.items())
    return Config(**values)


def load() -> Config:
    path = paths.config_file()
    if not path.exists():
        return Config()
    return parse(tomlio.load(path), path)


def render_update(change: Callable[[dict[str, Any]], None]) -> tuple[Path, str | None, str]:
    """The config file's path, its text now (None: no file), and its text after ``change``.

    ``change`` edits the file's data; the result is written with tomli-w and validated by
    :func:`parse` before anything is returned, so nothing invalid is ever written. The caller
    writes it (atomically, with a backup: tomli-w does not keep comments).
    """
    import tomli_w

    path = paths.config_file()
    before = None
    if path.exists():
        with open(path, encoding="utf-8", newline="") as fh:
            before = fh.read()
    original = tomlio.loads(before, path) if before is not None else {}
    data = tomlio.loads(before, path) if before is not None else {}
    change(data)
    if before is not None and data == original:
        return path, before, before  # same data: the user's file stays as it is, comments and all
    after = tomli_w.dumps(data)
    parse(tomlio.loads(after, path), path)
    return path, before, after
