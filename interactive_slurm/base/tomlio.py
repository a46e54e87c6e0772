"""Read TOML (tomllib on 3.11+, tomli before) with errors that name the file, line and column."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from interactive_slurm.base.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise decode_error(path, exc) from exc


def decode_error(path: Path, exc: ValueError) -> ConfigError:
    """``PATH: line L, column C: not valid TOML: WHY`` (the position first, where it is known)."""
    text = str(exc)
    m = _AT.search(text)
    if m:
        return ConfigError(f"{path}: line {m.group(1)}, column {m.group(2)}: not valid TOML: "
                           f"{text[:m.start()].rstrip()}")
    return ConfigError(f"{path}: not valid TOML: {text}")


def loads(text: str, path: Path) -> dict[str, Any]:
    """Parse TOML text that belongs to ``path`` (for errors)."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        raise decode_error(path, exc) from exc
