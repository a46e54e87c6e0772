"""Resource profiles: TOML files -> validated frozen dataclasses -> sbatch arguments.

A profile has a ``[cpu]`` and a ``[gpu]`` table. Optional keys at the top level apply to both
tables; a key in a table wins. Shipped profiles live in the package's ``profiles/``; a file of the
same name in the user's profile dir (``Path(folders.profiles_dir())``) replaces a shipped one.

Every value is checked here, before anything reaches Slurm; an error names the file, the table,
the key and the value.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interactive_slurm.base import defaults, folders, tomlio
from interactive_slurm.base.config import TRANSPORT_EXPECTED, TRANSPORTS
from interactive_slurm.base.errors import ConfigError, UsageError
from interactive_slurm.base.fsutil import check_secure, check_secure_if_exists
from interactive_slurm.base.values import (
    PROFILE_NAME_RE,
    SLURM_TIME_RE,
    check_profile_name,
    format_seconds,
    parse_duration,
    time_to_seconds,
)

KINDS = ("cpu", "gpu")
SHIPPED_DIR = Path(__file__).parents[1] / "profiles"  # package data, beside the folders

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z", re.ASCII)
_CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.&|,*:\[\]-]{0,255}\Z", re.ASCII)
_IMAGE_RE = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:#@+-]{0,255}\Z", re.ASCII)
_MEM_RE = re.compile(r"^([1-9][0-9]*)([KMGT]?)\Z", re.IGNORECASE | re.ASCII)
_SHORT_TIME_RE = re.compile(r"^([1-9][0-9]*)([mhd])\Z", re.ASCII)
_EXTRA_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:@+%/=\[\]-]{1,256}\Z", re.ASCII)

#: sbatch options a profile may add through ``extra``; the value flag says whether one is taken.
EXTRA_OPTIONS: Mapping[str, bool] = {
    "--begin": True,
    "--cpus-per-gpu": True,
    "--exclude": True,
    "--exclusive": False,
    "--gres-flags": True,
    "--hint": True,
    "--licenses": True,
    "--mail-type": True,
    "--mail-user": True,
    "--mem-per-gpu": True,
    "--nice": True,
    "--nodelist": True,
    "--tmp": True,
    "--wckey": True,
}

_NAME_KEYS = ("partition", "account", "qos", "reservation")
_SHARED_KEYS = (*_NAME_KEYS, "constraint", "container", "container_runtime", "extra",
                "idle_timeout", "transport")
#: Values of ``container_runtime`` (unset: the first of these installed on the node).
_TABLE_KEYS = {
    "cpu": ("time", "cpus", "mem", *_SHARED_KEYS),
    "gpu": ("time", "cpus", "mem", "gpus", "gpu_type", *_SHARED_KEYS),
}
_TOP_KEYS = ("description", "cpu", "gpu", *_SHARED_KEYS)

#: Keys every ``[cpu]`` / ``[gpu]`` table must have.
REQUIRED_KEYS: Mapping[str, tuple[str, ...]] = {
    "cpu": ("time", "cpus", "mem"),
    "gpu": ("time", "cpus", "mem", "gpus"),
}
#: Keys whose value is a whole number; ``extra`` is a list of strings; every other key a string.
INT_KEYS = ("cpus", "gpus")
LIST_KEYS = ("extra",)


@dataclass(frozen=True)
class Resources:
    """What one session of one kind asks Slurm for."""

    kind: str
    time: str
    cpus: int
    mem: str
    gpus: int = 0
    gpu_type: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    container: str | None = None
    container_runtime: str | None = None
    extra: tuple[str, ...] = ()
    #: Seconds without any SSH connection after which the session cancels its job (0: never).
    idle_timeout: int = 0
    #: How the proxy reaches this session (tcp, srun, auto); None: config.toml's ``transport``.
    transport: str | None = None

    @property
    def time_seconds(self) -> int:
        return time_to_seconds(self.time)


@dataclass(frozen=True)
class Profile:
    name: str
    source: Path
    description: str
    cpu: Resources
    gpu: Resources
    shipped: bool = field(default=False)

    def resources(self, kind: str) -> Resources:
        if kind not in KINDS:
            raise ConfigError(f"unknown session kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return self.cpu if kind == "cpu" else self.gpu


class _Where:
    """Formats error messages that name the file, table, key and value."""

    def __init__(self, source: Path, table: str | None) -> None:
        self.source, self.table = source, table

    def error(self, key: str, value: object, why: str) -> ConfigError:
        where = f"[{self.table}] " if self.table else ""
        return ConfigError(f"{self.source}: {where}{key} = {value!r}: {why}")


def _check_time(w: _Where, value: object) -> str:
    if isinstance(value, str):
        short = _SHORT_TIME_RE.match(value)
        try:
            if short:
                n, unit = int(short.group(1)), short.group(2)
                seconds = n * {"m": 60, "h": 3600, "d": 86400}[unit]
            else:
                seconds = time_to_seconds(value)
        except ValueError:
            seconds = 0
        if seconds > 0 and (short or SLURM_TIME_RE.match(value)):
            return format_seconds(seconds)
    raise w.error(
        "time", value, "expected a Slurm time such as \"08:00:00\", \"1-00:00:00\", \"90\" "
        "(minutes) or \"8h\", greater than zero"
    )


def _check_positive_int(w: _Where, key: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        what = "a whole number >= 0" if allow_zero else "a whole number >= 1"
        raise w.error(key, value, f"expected {what}")
    if value > 100000:
        raise w.error(key, value, "implausibly large")
    return value


def _check_mem(w: _Where, value: object) -> str:
    if isinstance(value, str):
        m = _MEM_RE.match(value)
        if m:
            return m.group(1) + m.group(2).upper()
    raise w.error("mem", value, "expected a size such as \"16G\", \"512M\" or \"1T\"")


def _check_pattern(w: _Where, key: str, value: object, pattern: re.Pattern[str], hint: str) -> str:
    if isinstance(value, str) and pattern.match(value) and ".." not in value:
        return value
    raise w.error(key, value, hint)


def _check_extra(w: _Where, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise w.error("extra", value, "expected a list of strings such as [\"--exclusive\"]")
    out = []
    allowed = ", ".join(sorted(EXTRA_OPTIONS))
    for item in value:
        option, sep, arg = item.partition("=")
        if option not in EXTRA_OPTIONS:
            raise w.error("extra", item, f"option not allowed; allowed options: {allowed}")
        takes_value = EXTRA_OPTIONS[option]
        if takes_value and not (sep and _EXTRA_VALUE_RE.match(arg)):
            raise w.error(
                "extra", item, f"{option} needs a value written as {option}=VALUE "
                "(letters, digits and _.,:@+%/=[]- only)"
            )
        if not takes_value and sep:
            raise w.error("extra", item, f"{option} takes no value")
        out.append(item)
    return tuple(out)


def _check_optional(w: _Where, key: str, value: object) -> Any:
    if key in _NAME_KEYS:
        return _check_pattern(
            w, key, value, _NAME_RE, "expected a Slurm name (letters, digits, _ . -; at most 64)"
        )
    if key == "constraint":
        return _check_pattern(
            w, key, value, _CONSTRAINT_RE, "expected a Slurm constraint such as \"a100&ib\""
        )
    if key == "container":
        return _check_pattern(
            w, key, value, _IMAGE_RE,
            "expected an image name or path (letters, digits and _./:#@+- only, no '..')",
        )
    if key == "container_runtime":
        if value in defaults.CONTAINER_RUNTIMES:
            return value
        raise w.error(key, value, f"expected one of: {', '.join(defaults.CONTAINER_RUNTIMES)}")
    if key == "gpu_type":
        return _check_pattern(w, key, value, _NAME_RE, "expected a GRES type such as \"a100\"")
    if key == "idle_timeout":
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return parse_duration(value)
        raise w.error(key, value, "expected a duration such as \"30m\", \"2h\" or \"01:30:00\"")
    if key == "extra":
        return _check_extra(w, value)
    if key == "transport":
        if value in TRANSPORTS:
            return value
        raise w.error(key, value, TRANSPORT_EXPECTED)
    raise AssertionError(key)  # pragma: no cover


def _check_keys(w: _Where, data: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    for key, value in data.items():
        if key not in valid:
            raise w.error(key, value, f"unknown key; valid keys: {', '.join(valid)}")


def _parse_table(
    source: Path, kind: str, table: object, shared: Mapping[str, Any]
) -> Resources:
    w = _Where(source, kind)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{kind}] table is missing (every profile needs [cpu] and [gpu])")
    _check_keys(w, table, _TABLE_KEYS[kind])
    for required in REQUIRED_KEYS[kind]:
        if required not in table:
            raise ConfigError(f"{source}: [{kind}] {required} is missing")
    values: dict[str, Any] = {
        "kind": kind,
        "time": _check_time(w, table["time"]),
        "cpus": _check_positive_int(w, "cpus", table["cpus"]),
        "mem": _check_mem(w, table["mem"]),
    }
    if kind == "gpu":
        values["gpus"] = _check_positive_int(w, "gpus", table["gpus"])
    merged = {**shared, **{k: v for k, v in table.items() if k in _SHARED_KEYS or k == "gpu_type"}}
    for key, value in merged.items():
        where = w if key in table else _Where(source, None)
        values[key] = _check_optional(where, key, value)
    return Resources(**values)


def parse_profile(name: str, data: Mapping[str, Any], source: Path, *, shipped: bool = False) -> Profile:
    """Validate one profile's TOML data."""
    top = _Where(source, None)
    _check_keys(top, data, _TOP_KEYS)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise top.error("description", description, "expected a string")
    shared = {k: v for k, v in data.items() if k in _SHARED_KEYS}
    return Profile(
        name=name,
        source=source,
        description=description,
        cpu=_parse_table(source, "cpu", data.get("cpu"), shared),
        gpu=_parse_table(source, "gpu", data.get("gpu"), shared),
        shipped=shipped,
    )


def settable_keys(table: str | None) -> tuple[str, ...]:
    """The keys a profile may hold at the top level (``table=None``) or in ``[cpu]``/``[gpu]``."""
    if table is None:
        return tuple(k for k in _TOP_KEYS if k not in KINDS)
    return _TABLE_KEYS[table]


def check_container_option(value: str) -> str:
    """A ``--container`` value from the command line (same rule as the profile key)."""
    if not (_IMAGE_RE.match(value) and ".." not in value):
        raise UsageError(
            f"--container {value!r}: expected an image name or path "
            "(letters, digits and _./:#@+- only, no '..')"
        )
    return value


def available() -> dict[str, Path]:
    """Profile name -> file, user profiles overriding shipped ones."""
    found: dict[str, Path] = {}
    for folder in (SHIPPED_DIR, Path(folders.profiles_dir())):
        if folder != SHIPPED_DIR and not check_secure_if_exists(folder):
            continue
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                if PROFILE_NAME_RE.match(path.stem):
                    found[path.stem] = path
    return found


def load(name: str) -> Profile:
    """Load and validate the profile called ``name``."""
    check_profile_name(name)
    choices = available()
    if name not in choices:
        raise ConfigError(
            f"unknown profile {name!r}; available profiles: {', '.join(sorted(choices)) or 'none'}"
        )
    path = choices[name]
    shipped = path.parent == SHIPPED_DIR
    if not shipped:
        check_secure(path)  # the user's own file: StrictModes
    return parse_profile(name, tomlio.load(path), path, shipped=shipped)


def sbatch_resource_args(res: Resources) -> list[str]:
    """The sbatch options for ``res`` (a pure function; values are already validated)."""
    args = [
        "--nodes=1",
        "--ntasks=1",
        f"--time={res.time}",
        f"--cpus-per-task={res.cpus}",
        f"--mem={res.mem}",
    ]
    if res.gpus:
        gres = f"gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type else f"gpu:{res.gpus}"
        args.append(f"--gres={gres}")
    for key in (*_NAME_KEYS, "constraint"):
        value = getattr(res, key)
        if value:
            args.append(f"--{key}={value}")
    args.extend(res.extra)
    return args


def resource_hash(res: Resources) -> str:
    """A short, stable fingerprint of what a job was submitted with."""
    parts = [*sbatch_resource_args(res), res.container or ""]
    if res.container_runtime:  # appended only when set: hashes of older jobs stay valid
        parts.append(res.container_runtime)
    text = "\0".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:10]
