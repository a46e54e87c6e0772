"""Where interactive-slurm keeps its files (platformdirs), with one override for tests.

``INTERACTIVE_SLURM_HOME`` puts config and state under one directory (``config/``, ``state/``);
``INTERACTIVE_SLURM_CONFIG`` names the config file itself. On a cluster the state directory must
live on a filesystem shared by login and compute nodes (the home directory is the usual one).

State layout::

    state/
      lock                 per-user lock of the proxy's slow path
      config-cache.json    config.toml's default_profile and warn_time_left for the fast path,
                           valid while config.toml is the same file (see :mod:`configcache`)
      hostca/ca, ca.pub    the user's host CA (0600 / 0644)
      jobs/<jobid>/        one folder per job: endpoint.json (0600, with the keyhole secret),
                           ended (why the job ended; kept a while after it)
      logs/job-<jobid>.log the job's own log (sbatch --output), never overwritten
      update/              the updater: next-check (its mtime is when the next automatic check
                           is due), check.lock, check.log, held (versions a rollback left),
                           source.git (a bare clone of the update source)

Container images prepared for sessions are cached per user under platformdirs' user cache dir
(``images/``, see :mod:`imagecache`).

Installs (versioned venvs, see :mod:`installs`) live under the install root: the root of the
running install when it is one, else platformdirs' user data dir
(``~/.local/share/interactive-slurm``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from interactive_slurm import dirs
from interactive_slurm.dirs import APP


def _override() -> Path | None:
    value = dirs.override()
    return Path(value) if value else None


def config_dir() -> Path:
    return Path(dirs.config_dir())


def config_file() -> Path:
    return Path(dirs.config_file())


def user_profiles_dir() -> Path:
    return Path(dirs.profiles_dir())


def state_dir() -> Path:
    return Path(dirs.state_dir())


def jobs_dir() -> Path:
    return Path(dirs.jobs_dir())


def job_dir(job_id: str) -> Path:
    return Path(dirs.job_dir(job_id))


def endpoint_file(job_id: str) -> Path:
    return Path(dirs.endpoint_file(job_id))


def logs_dir() -> Path:
    return state_dir() / "logs"


def job_log(job_id: str) -> Path:
    return logs_dir() / f"job-{job_id}.log"


def lock_file() -> Path:
    return state_dir() / "lock"


def hostca_dir() -> Path:
    return Path(dirs.hostca_dir())


def update_dir() -> Path:
    return Path(dirs.update_dir())


def install_root() -> Path:
    """Where versioned installs live: the running install's root, else the user data dir."""
    from interactive_slurm import installs

    root = installs.root_of(sys.prefix)
    if root is not None:
        return root
    base = _override()
    if base:
        return base / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP))


def image_cache_dir() -> Path:
    """The per-user container image cache (see :mod:`imagecache`)."""
    base = _override()
    if base:
        return base / "cache" / "images"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP)) / "images"


def known_hosts_file() -> Path:
    """The known_hosts file the tool manages (one ``@cert-authority`` line)."""
    return Path(dirs.known_hosts_file())


def trusted_paths() -> tuple[Path, ...]:
    """The files and folders the tool trusts (checked like StrictModes when they exist)."""
    return tuple(Path(path) for path in dirs.trusted_paths())


check_trusted = dirs.check_trusted


def make_private_dirs(path: Path) -> Path:
    """Create ``path`` and any missing parents, each 0700 whatever the umask (no checks)."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)
        except FileExistsError:  # made meanwhile by a concurrent session or proxy
            pass
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents, each 0700 (whatever the umask).

    An existing folder keeps its mode (it is not silently "fixed"). Then ``path`` and the
    folders above it are checked like StrictModes (:func:`fsutil.check_secure`): the tool
    never writes into a folder others could swap.
    """
    make_private_dirs(path)
    from interactive_slurm.fsutil import check_secure

    check_secure(path)
    return path
