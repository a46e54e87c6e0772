"""The user's ``config.toml`` (platformdirs config dir, or ``$INTERACTIVE_SLURM_CONFIG``).

::

    default_profile = "default"   # the profile `proxy` uses without --profile
    wait_timeout = 1800           # seconds the proxy waits for a session before giving up
    sshd = "/usr/sbin/sshd"       # the sshd binary on compute nodes (absolute path)

A missing file means all defaults. Unknown keys and bad values are errors naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interactive_slurm import paths, tomlio
from interactive_slurm.errors import ConfigError
from interactive_slurm.profiles import check_profile_name


@dataclass(frozen=True)
class Config:
    default_profile: str = "default"
    wait_timeout: float = 1800.0
    sshd: str = "/usr/sbin/sshd"
    source: Path | None = None


KEYS = ("default_profile", "wait_timeout", "sshd")


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
    return Config(**values)


def load() -> Config:
    path = paths.config_file()
    if not path.exists():
        return Config()
    return parse(tomlio.load(path), path)
