"""The config.toml values the proxy's fast path needs, kept where it reads them cheaply.

Loading config.toml costs a connect ~35 ms (tomllib, dataclasses and the validation around
them), which would undo the fast path for everyone who has one. So after the fast path has
loaded it once, it keeps ``default_profile``, ``warn_time_left`` and ``transport`` in
``<state>/config-cache.json`` (0600, in the state dir the tool already trusts), together with
the identity of the config.toml they came from (device, inode, size, modification time in ns).
They are used only while config.toml is still that very file; any edit, replacement or removal
means config.toml is loaded (and checked) again. Imported by the fast path: lean.
"""

from __future__ import annotations

import os

from interactive_slurm.base import folders
from interactive_slurm.base.errors import EndpointError, InteractiveSlurmError
from interactive_slurm.base.fsutil import read_private
from interactive_slurm.connect.fastjson import loads

VERSION = 2  # 2: transport
NAME = "config-cache.json"


def _identity(config_file: str) -> list[int] | None:
    try:
        st = os.stat(config_file)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def cache_file() -> str:
    return os.path.join(folders.state_dir(), NAME)


def read(config_file: str) -> tuple[str, float, str] | None:
    """(default_profile, warn_time_left, transport) cached for ``config_file`` as it is now;
    else None."""
    identity = _identity(config_file)
    if identity is None:
        return None
    try:
        data = loads(read_private(cache_file()))
    except (OSError, ValueError, EndpointError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION \
            or data.get("config") != config_file or data.get("identity") != identity:
        return None
    profile, warn = data.get("default_profile"), data.get("warn_time_left")
    how = data.get("transport")
    if not isinstance(profile, str) or not isinstance(warn, (int, float)) or isinstance(warn, bool) \
            or how not in ("tcp", "srun", "auto"):
        return None
    return profile, float(warn), str(how)


def load(config_file: str) -> tuple[str, float, str]:
    """(default_profile, warn_time_left, transport): from the cache while it holds, else from
    config.toml (errors in it are raised, as the full CLI raises them), then cached for the
    next connect."""
    cached = read(config_file)
    if cached is not None:
        return cached
    from interactive_slurm.base import config

    identity = _identity(config_file)
    cfg = config.load()
    values = (cfg.default_profile, float(cfg.warn_time_left), cfg.transport)
    if identity is not None and identity == _identity(config_file):
        write(config_file, identity, values)
    return values


def write(config_file: str, identity: list[int], values: tuple[str, float, str]) -> None:
    """Keep ``values`` for the next connect; a cache that cannot be written costs time only."""
    import json

    from interactive_slurm.base import folders
    from interactive_slurm.base.fsutil import write_private_atomic

    text = json.dumps({"version": VERSION, "config": config_file, "identity": identity,
                       "default_profile": values[0], "warn_time_left": values[1],
                       "transport": values[2]})
    try:
        folders.ensure_private_dir(folders.state_dir())
        write_private_atomic(cache_file(), text + "\n")
    except (OSError, InteractiveSlurmError):
        pass
