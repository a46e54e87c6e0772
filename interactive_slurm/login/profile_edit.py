"""Create or edit a user profile from ``KEY=VALUE`` settings (``interactive-slurm profiles set``).

The starting point is the user's own ``NAME.toml``, else the shipped profile of that name (or the
one ``base`` names), else nothing. The settings are applied, the result is written with tomli-w,
read back through the TOML parser and validated by :func:`profiles.parse_profile`; only then is the
file replaced, atomically and 0600. tomli-w keeps no comments, so an existing file is first copied
to ``NAME.toml.bak-YYYYmmdd-HHMMSS``. On any error nothing is written.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from interactive_slurm.base import folders, tomlio, values
from interactive_slurm.base.errors import ConfigError, UsageError
from interactive_slurm.base.fsutil import check_secure_if_exists, write_private_atomic
from interactive_slurm.login import profiles

_INT_RE = re.compile(r"^[+-]?[0-9]+\Z", re.ASCII)
_EXTRA_SPLIT_RE = re.compile(r",(?=--)")  # "--mail-type=END,FAIL,--exclusive" -> 2 options


@dataclass(frozen=True)
class Setting:
    """One ``KEY=VALUE`` from the command line; ``value`` None removes the key."""

    table: str | None  # None: top level (both kinds); else "cpu" or "gpu"
    key: str
    value: Any

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.key}" if self.table else self.key


@dataclass(frozen=True)
class Result:
    profile: profiles.Profile
    path: Path
    created: bool  # there was no user file before
    changed: bool  # the file's text changed (False: nothing written)
    backup: Path | None  # the copy of the previous user file


def _all_keys() -> list[str]:
    keys = list(profiles.settable_keys(None))
    for kind in profiles.KINDS:
        keys += [f"{kind}.{k}" for k in profiles.settable_keys(kind)]
    return keys


def parse_setting(text: str) -> Setting:
    """``KEY=VALUE`` -> a Setting; KEY is ``key`` or ``cpu.key``/``gpu.key``; ``KEY=`` removes."""
    dotted, eq, raw = text.partition("=")
    if not eq:
        raise UsageError(f"{text!r}: expected KEY=VALUE such as gpu.gpus=8 (KEY= removes a key)")
    table, dot, key = dotted.partition(".")
    if not dot:
        table, key = "", dotted
    if (dot and table not in profiles.KINDS) or key not in profiles.settable_keys(table or None):
        valid = (
            [f"{table}.{k}" for k in profiles.settable_keys(table)]
            if table in profiles.KINDS else _all_keys()
        )
        raise UsageError(f"unknown key {dotted!r} in {text!r}; valid keys: {', '.join(valid)}")
    value: Any = None
    if raw:
        if key in profiles.INT_KEYS and _INT_RE.match(raw):
            value = int(raw)
        elif key in profiles.LIST_KEYS:
            value = _EXTRA_SPLIT_RE.split(raw)
        else:
            value = raw
    return Setting(table or None, key, value)


def apply(data: dict[str, Any], settings: Sequence[Setting], source: Path) -> dict[str, Any]:
    """A copy of profile ``data`` with ``settings`` applied in order (not yet validated)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for s in settings:
        target = out
        if s.table:
            table = out.setdefault(s.table, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: {s.table} = {table!r}: expected a [{s.table}] table")
            target = table
        if s.value is None:
            target.pop(s.key, None)
        else:
            target[s.key] = s.value
    return out


def _missing(data: dict[str, Any]) -> list[str]:
    missing = []
    for kind in profiles.KINDS:
        table = data.get(kind)
        have = table if isinstance(table, dict) else {}
        missing += [f"{kind}.{k}" for k in profiles.REQUIRED_KEYS[kind] if k not in have]
    return missing


def _backup_path(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():  # a second edit within the same second keeps both copies
        n += 1
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return candidate


def set_values(
    name: str, settings: Sequence[str], *, base: str | None = None, now: float | None = None
) -> Result:
    """Apply ``KEY=VALUE`` ``settings`` to the user profile ``name`` and write it (see module)."""
    values.check_profile_name(name)
    parsed = [parse_setting(text) for text in settings]
    if not parsed:
        raise UsageError("nothing to set: give at least one KEY=VALUE such as gpu.gpus=8")
    path = Path(folders.profiles_dir()) / f"{name}.toml"
    existed = check_secure_if_exists(path) and path.is_file()
    old_text = path.read_text() if existed else None
    if base is not None:
        values.check_profile_name(base)
        if existed:
            raise UsageError(f"--from {base}: profile {name!r} already exists ({path}); "
                             "--from only starts a new one")
        profiles.load(base)  # an unknown or invalid profile fails here
        start: Path | None = profiles.available()[base]
    else:
        shipped = profiles.SHIPPED_DIR / f"{name}.toml"
        start = path if existed else shipped if shipped.is_file() else None
    data = tomlio.load(start) if start is not None else {}
    new = apply(data, parsed, path)
    missing = _missing(new)
    if missing:
        hint = "" if start is not None else " (or start from a profile: --from default)"
        raise ConfigError(
            f"profile {name!r} would lack {', '.join(missing)}: set them too{hint}; nothing written"
        )
    text = tomli_w.dumps(new)
    try:
        prof = profiles.parse_profile(name, tomlio.loads(text, path), path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; nothing written") from exc
    if text == old_text:
        return Result(prof, path, created=False, changed=False, backup=None)
    folders.ensure_private_dir(path.parent)
    backup = None
    if old_text is not None:
        backup = _backup_path(path, time.time() if now is None else now)
        write_private_atomic(backup, old_text)
    write_private_atomic(path, text)
    return Result(prof, path, created=not existed, changed=True, backup=backup)
