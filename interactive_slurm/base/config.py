"""The user's ``config.toml`` (platformdirs config dir, or ``$INTERACTIVE_SLURM_CONFIG``).

::

    default_profile = "default"   # the profile `proxy` uses without --profile
    wait_timeout = 1800           # seconds the proxy waits for a session before giving up
    warn_time_left = "30m"        # the proxy warns when the reused job has less than this left
    sshd = "/usr/sbin/sshd"       # the sshd binary on compute nodes (absolute path)
    transport = "auto"            # tcp | srun (through Slurm: firewalled nodes) | auto

    [clusters.slurm]              # on a laptop: what `interactive-slurm setup` set up
    login = "login.example.org"   # (the laptop's own tables: laptop/clusters.py reads them)
    ...

    [update]                      # the cluster install's updater (see updater.py)
    url = "https://git.example.org/interactive-slurm.git"  # git remote; a local path works too
    channel = "stable"            # stable (vX.Y.Z) | pre (pre-releases too) | a tag or commit
    interval_hours = 24           # how often the proxy starts an automatic check
    enabled = true                # automatic checks (only when url is set)

A missing file means all defaults. Unknown keys and bad values are errors naming the file.
The ``clusters`` tables are the laptop's: this parser accepts the key and leaves the tables to
``laptop/clusters.py``, which ``setup`` writes them through (:func:`render_update`, then its own
check) and which reads them back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interactive_slurm.base import defaults, folders, tomlio
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.base.fsutil import check_secure_if_exists
from interactive_slurm.base.values import check_profile_name, parse_duration

CHANNELS = ("stable", "pre")
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")


@dataclass(frozen=True)
class UpdateConfig:
    """The ``[update]`` table: where updates come from and how often the proxy checks."""

    url: str = ""
    channel: str = "stable"
    interval_hours: float = 24.0
    enabled: bool = True

    @property
    def automatic(self) -> bool:
        """Automatic checks run only when enabled and a source is configured."""
        return self.enabled and bool(self.url)


@dataclass(frozen=True)
class Config:
    default_profile: str = "default"
    wait_timeout: float = float(defaults.WAIT_TIMEOUT)
    warn_time_left: int = defaults.WARN_TIME_LEFT
    sshd: str = "/usr/sbin/sshd"
    image_cache: str = ""  # a shared container image cache (absolute); "": the user's own
    #: How the proxy reaches sessions: tcp, srun or auto (see connect/transport.py).
    transport: str = "auto"
    update: UpdateConfig = field(default_factory=UpdateConfig)
    source: Path | None = None


KEYS = ("default_profile", "wait_timeout", "warn_time_left", "sshd", "image_cache", "transport",
        "clusters", "update")
UPDATE_KEYS = ("url", "channel", "interval_hours", "enabled")


def check_channel(value: str) -> str:
    """``stable``, ``pre``, or a pinned tag, branch or commit (a plain git ref name)."""
    if value in CHANNELS:
        return value
    if not _PIN.match(value) or ".." in value or value.endswith((".lock", "/")) or "//" in value:
        raise ConfigError(
            f"channel {value!r}: expected stable, pre, or a tag, branch or commit to pin to"
        )
    return value


def _positive(value: Any, where: str, unit: str) -> float:
    """A finite number > 0 (not a bool), or an error naming ``where`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"{where} = {value!r}: expected {unit} > 0")
    return float(value)


def parse_update(data: Any, source: Path) -> UpdateConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: update = {data!r}: expected a table [update]")
    for key, value in data.items():
        if key not in UPDATE_KEYS:
            raise ConfigError(f"{source}: [update] {key} = {value!r}: unknown key; valid keys: "
                              f"{', '.join(UPDATE_KEYS)}")
    values: dict[str, Any] = {}
    if "url" in data:
        value = data["url"]
        if not isinstance(value, str) or value.startswith("-") or any(c in value for c in "\n\r\0"):
            raise ConfigError(f"{source}: [update] url = {value!r}: expected a git URL or path")
        values["url"] = value
    if "channel" in data:
        value = data["channel"]
        if not isinstance(value, str):
            raise ConfigError(f"{source}: [update] channel = {value!r}: expected stable, pre, "
                              "or a tag, branch or commit to pin to")
        try:
            values["channel"] = check_channel(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: [update] {exc}") from exc
    if "interval_hours" in data:
        values["interval_hours"] = _positive(data["interval_hours"], f"{source}: [update] interval_hours",
                                             "hours")
    if "enabled" in data:
        value = data["enabled"]
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: [update] enabled = {value!r}: expected true or false")
        values["enabled"] = value
    return UpdateConfig(**values)


TRANSPORTS = ("tcp", "srun", "auto")
TRANSPORT_EXPECTED = ("expected \"auto\" (TCP, else srun when a firewall blocks it), \"tcp\" or "
                      "\"srun\" (through Slurm, for firewalled compute nodes)")


def check_transport(value: object, where: str) -> str:
    """A ``transport`` value (config.toml's key, a profile's key): tcp, srun or auto."""
    if value in TRANSPORTS:
        return str(value)
    raise ConfigError(f"{where} = {value!r}: {TRANSPORT_EXPECTED}")


def parse(data: dict[str, Any], source: Path) -> Config:
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{source}: {key} = {value!r}: unknown key; valid keys: {', '.join(KEYS)}")
    values: dict[str, Any] = {"source": source}
    if "update" in data:
        values["update"] = parse_update(data["update"], source)
    if "default_profile" in data:
        value = data["default_profile"]
        if not isinstance(value, str):
            raise ConfigError(f"{source}: default_profile = {value!r}: expected a profile name")
        try:
            values["default_profile"] = check_profile_name(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: default_profile: {exc}") from exc
    if "wait_timeout" in data:
        values["wait_timeout"] = _positive(data["wait_timeout"], f"{source}: wait_timeout", "seconds")
    if "warn_time_left" in data:
        value = data["warn_time_left"]
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            values["warn_time_left"] = parse_duration(value)
        except ValueError:
            raise ConfigError(f"{source}: warn_time_left = {value!r}: expected a duration such as "
                              "\"30m\", \"1h\" or \"00:45:00\"") from None
    if "sshd" in data:
        value = data["sshd"]
        if not isinstance(value, str) or not value.startswith("/") or "\n" in value:
            raise ConfigError(f"{source}: sshd = {value!r}: expected an absolute path")
        values["sshd"] = value
    if "image_cache" in data:
        value = data["image_cache"]
        if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "\n\0"):
            raise ConfigError(f"{source}: image_cache = {value!r}: expected the absolute path of a "
                              "shared folder for container images")
        values["image_cache"] = value
    if "transport" in data:
        values["transport"] = check_transport(data["transport"], f"{source}: transport")
    # "clusters": the laptop's tables, read by laptop/clusters.py
    return Config(**values)


def read() -> tuple[dict[str, Any], Path] | None:
    """The config file's data and path; None when there is none."""
    path = Path(folders.config_file())
    if not check_secure_if_exists(path):
        return None
    return tomlio.load(path), path


def load() -> Config:
    found = read()
    return Config() if found is None else parse(*found)


def render_update(change: Callable[[dict[str, Any]], None]) -> tuple[Path, str | None, str]:
    """The config file's path, its text now (None: no file), and its text after ``change``.

    ``change`` edits the file's data; the result is written with tomli-w and validated by
    :func:`parse` before anything is returned, so nothing invalid is ever written (the
    ``clusters`` tables: ``laptop/clusters.render_update`` checks them on top). The caller
    writes it (atomically, with a backup: tomli-w does not keep comments).
    """
    import tomli_w

    path = Path(folders.config_file())
    before = None
    if check_secure_if_exists(path):
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


_UPDATE_HEADER = re.compile(r"^\s*\[\s*update\s*\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")
_ENABLED_LINE = re.compile(r"^\s*enabled\s*=")


def set_update_enabled(path: Path, enabled: bool) -> Config:
    """Set ``[update] enabled`` in ``path``, keeping the rest of the file (comments too).

    The result is parsed before it replaces the file, so a broken file is never written.
    """
    from interactive_slurm.base.fsutil import write_private_atomic

    value = "true" if enabled else "false"
    lines = path.read_text().splitlines() if check_secure_if_exists(path) else []
    start = next((i for i, line in enumerate(lines) if _UPDATE_HEADER.match(line)), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += ["[update]", f"enabled = {value}"]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])),
                   len(lines))
        found = next((i for i in range(start + 1, end) if _ENABLED_LINE.match(lines[i])), None)
        if found is None:
            lines.insert(start + 1, f"enabled = {value}")
        else:
            lines[found] = f"enabled = {value}"
    text = "\n".join(lines) + "\n"
    cfg = parse(tomlio.loads(text, path), path)
    folders.ensure_private_dir(path.parent)
    mode = path.stat().st_mode & 0o755 if path.exists() else 0o600
    write_private_atomic(path, text, mode=mode)
    return cfg
