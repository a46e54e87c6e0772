"""Where interactive-slurm keeps its files (platformdirs), with one override for tests.

``INTERACTIVE_SLURM_HOME`` puts config and state under one directory (``config/``, ``state/``);
``INTERACTIVE_SLURM_CONFIG`` names the config file itself. On a cluster the state directory must
live on a filesystem shared by login and compute nodes (the home directory is the usual one).

State layout::

    state/
      lock                 per-user lock of the proxy's slow path
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

import platformdirs

APP = "interactive-slurm"
HOME_ENV = "INTERACTIVE_SLURM_HOME"
CONFIG_ENV = "INTERACTIVE_SLURM_CONFIG"


def _override() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser().absolute() if value else None


def config_dir() -> Path:
    base = _override()
    return base / "config" if base else Path(platformdirs.user_config_dir(APP))


def config_file() -> Path:
    value = os.environ.get(CONFIG_ENV)
    return Path(value).expanduser().absolute() if value else config_dir() / "config.toml"


def user_profiles_dir() -> Path:
    return config_dir() / "profiles"


def state_dir() -> Path:
    base = _override()
    return base / "state" if base else Path(platformdirs.user_state_dir(APP))


def jobs_dir() -> Path:
    return state_dir() / "jobs"


def job_dir(job_id: str) -> Path:
    return jobs_dir() / job_id


def endpoint_file(job_id: str) -> Path:
    return job_dir(job_id) / "endpoint.json"


def logs_dir() -> Path:
    return state_dir() / "logs"


def job_log(job_id: str) -> Path:
    return logs_dir() / f"job-{job_id}.log"


def lock_file() -> Path:
    return state_dir() / "lock"


def hostca_dir() -> Path:
    return state_dir() / "hostca"


def update_dir() -> Path:
    return state_dir() / "update"


def install_root() -> Path:
    """Where versioned installs live: the running install's root, else the user data dir."""
    from interactive_slurm import installs

    root = installs.root_of(sys.prefix)
    if root is not None:
        return root
    base = _override()
    return base / "data" if base else Path(platformdirs.user_data_dir(APP))


def image_cache_dir() -> Path:
    """The per-user container image cache (see :mod:`imagecache`)."""
    base = _override()
    return base / "cache" / "images" if base else Path(platformdirs.user_cache_dir(APP)) / "images"


def known_hosts_file() -> Path:
    """The known_hosts file the tool manages (one ``@cert-authority`` line)."""
    return config_dir() / "known_hosts"


def trusted_paths() -> tuple[Path, ...]:
    """The files and folders the tool trusts (checked like StrictModes when they exist)."""
    return (config_dir(), config_file(), known_hosts_file(), user_profiles_dir(), state_dir(),
            jobs_dir(), hostca_dir())


def check_trusted() -> None:
    """Refuse to go on when one of :func:`trusted_paths` (or a folder above) is unsafe."""
    from interactive_slurm.fsutil import check_secure_if_exists

    checked: set[Path] = set()  # the folders above them are mostly the same: walk each once
    for path in trusted_paths():
        check_secure_if_exists(path, checked)


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
