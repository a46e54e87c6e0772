"""The tool's config and state folders as plain strings, for the proxy's fast path.

:mod:`paths` (``Path`` objects, every other folder) builds on these two. They import neither
pathlib nor platformdirs in the common case (importing both costs the fast path ~20 ms on the
2-core test machine): ``INTERACTIVE_SLURM_HOME`` decides, else on Linux the XDG rule platformdirs
itself applies to a user with an absolute ``$HOME`` (``$XDG_STATE_HOME`` or ``~/.local/state``;
``$XDG_CONFIG_HOME`` or ``~/.config``, then ``interactive-slurm``). Anything else (another
system, root, a relative ``$HOME`` or XDG variable) asks platformdirs, so both always agree
(tests/unit/test_paths.py checks it case by case).
"""

from __future__ import annotations

import os
import sys

APP = "interactive-slurm"
HOME_ENV = "INTERACTIVE_SLURM_HOME"
CONFIG_ENV = "INTERACTIVE_SLURM_CONFIG"


def override() -> str | None:
    """``INTERACTIVE_SLURM_HOME`` as an absolute path, when it is set."""
    value = os.environ.get(HOME_ENV)
    return os.path.abspath(os.path.expanduser(value)) if value else None


def _xdg(variable: str, default: str) -> str | None:
    """The XDG folder platformdirs would give, when the simple rule surely applies; else None."""
    if sys.platform != "linux" or os.getuid() == 0:
        return None
    home = os.environ.get("HOME", "")
    if not home.startswith("/"):
        return None
    value = os.environ.get(variable, "")
    if value.startswith("/"):
        return os.path.join(value, APP)
    if value.strip():
        return None  # relative: platformdirs' rules for it changed over versions
    return os.path.join(home, default, APP)


def _folder(kind: str, variable: str, default: str) -> str:
    """The ``kind`` folder (``config`` or ``state``): the override, the simple XDG rule, or
    platformdirs' ``user_<kind>_dir``."""
    base = override()
    if base:
        return os.path.join(base, kind)
    found = _xdg(variable, default)
    if found:
        return found
    import platformdirs

    return str(getattr(platformdirs, f"user_{kind}_dir")(APP))


def config_dir() -> str:
    return _folder("config", "XDG_CONFIG_HOME", ".config")


def config_file() -> str:
    value = os.environ.get(CONFIG_ENV)
    if value:
        return os.path.abspath(os.path.expanduser(value))
    return os.path.join(config_dir(), "config.toml")


def known_hosts_file() -> str:
    """The known_hosts file the tool manages (one ``@cert-authority`` line)."""
    return os.path.join(config_dir(), "known_hosts")


def profiles_dir() -> str:
    return os.path.join(config_dir(), "profiles")


def state_dir() -> str:
    return _folder("state", "XDG_STATE_HOME", ".local/state")


def jobs_dir() -> str:
    return os.path.join(state_dir(), "jobs")


def job_dir(job_id: str) -> str:
    return os.path.join(jobs_dir(), job_id)


def endpoint_file(job_id: str) -> str:
    return os.path.join(job_dir(job_id), "endpoint.json")


def update_dir() -> str:
    return os.path.join(state_dir(), "update")


def hostca_dir() -> str:
    return os.path.join(state_dir(), "hostca")


def trusted_paths() -> tuple[str, ...]:
    """The files and folders the tool trusts (checked like StrictModes when they exist)."""
    return (config_dir(), config_file(), known_hosts_file(), profiles_dir(), state_dir(),
            jobs_dir(), hostca_dir())


def check_trusted() -> None:
    """Refuse to go on when one of :func:`trusted_paths` (or a folder above) is unsafe."""
    from interactive_slurm.fsutil import check_secure_if_exists

    checked: set[str] = set()  # the folders above them are mostly the same: walk each once
    for path in trusted_paths():
        check_secure_if_exists(path, checked)
