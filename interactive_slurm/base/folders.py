"""Where interactive-slurm keeps its files: every folder and file name, in one place.

Every function returns a plain ``str`` and the module imports neither pathlib nor platformdirs in
the common case, because the proxy's fast path reads these names on every connect (importing both
costs it ~20 ms on the 2-core test machine); callers that want a ``Path`` wrap the result.
``INTERACTIVE_SLURM_HOME`` puts config, state, data and cache under one folder (``config/``,
``state/``, ...); ``INTERACTIVE_SLURM_CONFIG`` names the config file itself. Otherwise, on Linux,
the XDG rule platformdirs itself applies to a user with an absolute ``$HOME`` decides
(``$XDG_STATE_HOME`` or ``~/.local/state``; ``$XDG_CONFIG_HOME`` or ``~/.config``, then
``interactive-slurm``); anything else (another system, root, a relative ``$HOME`` or XDG variable)
asks platformdirs, so both always agree (tests/unit/test_folders.py checks it case by case).

On a cluster the state folder must live on a filesystem shared by login and compute nodes (the
home directory is the usual one). State layout::

    state/
      lock                 per-user lock of the proxy's slow path
      config-cache.json    config.toml's default_profile and warn_time_left for the fast path,
                           valid while config.toml is the same file (see connect/configcache.py)
      hostca/ca, ca.pub    the user's host CA (0600 / 0644)
      jobs/<jobid>/        one folder per job: endpoint.json (0600, with the keyhole secret),
                           ended (why the job ended; kept a while after it),
                           apps/ (the job's web apps: NAME.json with the token, NAME.log)
      logs/job-<jobid>.log the job's own log (sbatch --output), never overwritten
      update/              the updater: next-check (its mtime is when the next automatic check
                           is due), check.lock, check.log, held (versions a rollback left),
                           source.git (a bare clone of the update source)

Container images prepared for sessions are cached per user under platformdirs' user cache dir
(``images/``, see node/imagecache.py). Installs (versioned venvs, see install/installs.py) live
under the install root: the root of the running install when it is one, else :func:`data_dir`.
"""

from __future__ import annotations

import os
import sys

from interactive_slurm.base.fsutil import check_secure, check_secure_if_exists

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from pathlib import Path

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


def apps_dir() -> str:
    """The user's own app recipes (``NAME.toml``, see node/apprecipes.py)."""
    return os.path.join(config_dir(), "apps")


def state_dir() -> str:
    return _folder("state", "XDG_STATE_HOME", ".local/state")


def jobs_dir() -> str:
    return os.path.join(state_dir(), "jobs")


def job_dir(job_id: str) -> str:
    return os.path.join(jobs_dir(), job_id)


def endpoint_file(job_id: str) -> str:
    return os.path.join(job_dir(job_id), "endpoint.json")


def job_apps_dir(job_id: str) -> str:
    """The web apps running in a job: ``NAME.json`` (0600, with the token) and ``NAME.log``."""
    return os.path.join(job_dir(job_id), "apps")


def update_dir() -> str:
    return os.path.join(state_dir(), "update")


def hostca_dir() -> str:
    return os.path.join(state_dir(), "hostca")


def trusted_paths() -> tuple[str, ...]:
    """The files and folders the tool trusts (checked like StrictModes when they exist)."""
    return (config_dir(), config_file(), known_hosts_file(), profiles_dir(), apps_dir(),
            state_dir(), jobs_dir(), hostca_dir())


def check_trusted() -> None:
    """Refuse to go on when one of :func:`trusted_paths` (or a folder above) is unsafe."""
    checked: set[str] = set()  # the folders above them are mostly the same: walk each once
    for path in trusted_paths():
        check_secure_if_exists(path, checked)


def logs_dir() -> str:
    return os.path.join(state_dir(), "logs")


def job_log(job_id: str) -> str:
    return os.path.join(logs_dir(), f"job-{job_id}.log")


def lock_file() -> str:
    """The per-user lock of the proxy's slow path."""
    return os.path.join(state_dir(), "lock")


def data_dir() -> str:
    """The user data dir (``~/.local/share/interactive-slurm``): where installs live by default."""
    base = override()
    if base:
        return os.path.join(base, "data")
    import platformdirs

    return str(platformdirs.user_data_dir(APP))


def image_cache_dir() -> str:
    """The per-user container image cache (see node/imagecache.py)."""
    base = override()
    if base:
        return os.path.join(base, "cache", "images")
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir(APP), "images")


def make_private_dirs(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and any missing parents, each 0700 whatever the umask (no checks)."""
    missing = []
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and probe != os.path.dirname(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)
        except FileExistsError:  # made meanwhile by a concurrent session or proxy
            pass


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents, each 0700 (whatever the umask); returns it.

    An existing folder keeps its mode (it is not silently "fixed"). Then ``path`` and the
    folders above it are checked like StrictModes (:func:`fsutil.check_secure`): the tool
    never writes into a folder others could swap.
    """
    from pathlib import Path

    make_private_dirs(path)
    check_secure(path)
    return Path(path)
