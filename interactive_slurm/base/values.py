"""Values more than one folder validates: Slurm times and durations, profile names.

Pure functions of text (config.toml, profiles and the command line all use them).
"""

from __future__ import annotations

import re

from interactive_slurm.base.errors import ConfigError

PROFILE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z", re.ASCII)
_DURATION_RE = re.compile(r"^([1-9][0-9]*)([smhd])\Z", re.ASCII)
SLURM_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?\Z", re.ASCII)


def time_to_seconds(value: str) -> int:
    """Seconds in a Slurm time string (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``)."""
    m = SLURM_TIME_RE.match(value)
    if not m:
        raise ValueError(f"not a Slurm time: {value!r}")
    days, first, second, third = m.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = int(first), int(second or 0), int(third or 0)
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if third is not None:  # H:M:S
        return int(first) * 3600 + int(second) * 60 + int(third)
    if second is not None:  # M:S
        return int(first) * 60 + int(second)
    return int(first) * 60  # M


def parse_duration(value: str) -> int:
    """Seconds in a duration: ``"30m"``, ``"2h"``, ``"1d"``, ``"45s"`` or a Slurm time
    (``"90"`` is minutes, ``"01:30:00"``); ValueError for anything else or zero."""
    short = _DURATION_RE.match(value)
    if short:
        return int(short.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[short.group(2)]
    seconds = time_to_seconds(value)
    if seconds <= 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def format_seconds(seconds: int) -> str:
    """Canonical Slurm time, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h:02d}:{m:02d}:{s:02d}"


def check_profile_name(name: str) -> str:
    if not PROFILE_NAME_RE.match(name):
        raise ConfigError(
            f"invalid profile name {name!r}: use lower-case letters, digits, _ and - (at most 32)"
        )
    return name
