"""Read TOML (tomllib on 3.11+, tomli before) with errors that name the file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from interactive_slurm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


def load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def loads(text: str, path: Path) -> dict[str, Any]:
    """Parse TOML text that belongs to ``path`` (for errors)."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
