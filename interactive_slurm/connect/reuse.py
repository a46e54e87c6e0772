"""The proxy's reuse path: answer a plain ``proxy KIND`` from the endpoint records alone.

``ssh`` starts a proxy for every connection (VS Code opens several at once), so reusing a live
session must be quick: nothing here imports click, the Slurm layer or config.toml's parser, and
a test keeps the whole path to the splice within a short list of modules
(tests/unit/test_entry.py). Anything unusual (other options, ``--help``, no live session) is
left to the full CLI, which validates every value and takes the slow path.
"""

from __future__ import annotations

import os
import sys

from interactive_slurm.base import defaults, folders
from interactive_slurm.base.errors import InteractiveSlurmError

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path ~3 ms
if TYPE_CHECKING:
    from _socket import socket as Socket

    from interactive_slurm.connect.endpoint import Endpoint

_OPTIONS = ("--profile", "--container", "--timeout")


def parse_proxy_args(args: list[str]) -> tuple[str, str | None, str, float | None] | None:
    """(kind, profile or None, container, timeout or None) of a plain proxy call; None for
    anything unusual (``--help``, a wrong value: click says what is wrong)."""
    if not args or args[0] not in ("cpu", "gpu"):
        return None
    kind, profile, container, timeout = args[0], None, "", None
    rest = list(args[1:])
    while rest:
        name, eq, value = rest.pop(0).partition("=")
        if name not in _OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if name == "--profile":
            profile = value
        elif name == "--container":
            container = value
        elif not _is_seconds(value):  # --timeout abc: the full CLI says what is wrong
            return None
        else:
            timeout = float(value)
    return kind, profile, container, timeout


def _is_seconds(value: str) -> bool:
    try:
        seconds = float(value)
    except ValueError:
        return False
    return 0 < seconds < float("inf")


_settings: list[tuple[str, float, str]] = []  # config.toml's, read once per process


def settings() -> tuple[str, float, str]:
    """(default_profile, warn_time_left, transport) of config.toml, read once (and through the
    config cache): the defaults when there is none; InteractiveSlurmError when it is invalid."""
    if not _settings:
        path = folders.config_file()
        if not os.path.exists(path):
            _settings.append(("default", float(defaults.WARN_TIME_LEFT), "auto"))
        else:
            from interactive_slurm.connect import configcache

            _settings.append(configcache.load(path))
    return _settings[0]


def default_profile() -> str:
    return settings()[0]


def warn_threshold() -> float:
    """``warn_time_left`` from config.toml (its default when the file is invalid)."""
    try:
        return settings()[1]
    except InteractiveSlurmError:
        return float(defaults.WARN_TIME_LEFT)


def configured_transport() -> str:
    """``transport`` from config.toml (``auto`` when the file is invalid: the error is the full
    CLI's to report, where it matters)."""
    try:
        return settings()[2]
    except InteractiveSlurmError:
        return "auto"


def fast_socket(kind: str, profile: str | None, container: str) -> tuple[Endpoint, Socket] | None:
    """A keyhole-checked connection to a live session of this kind/profile, from endpoint
    records alone; stale records met on the way are dropped (one line each on stderr)."""
    from interactive_slurm.connect.fastpath import find_and_connect

    return find_and_connect(kind, profile or default_profile(), container, settings()[2])


def proxy(kind: str, profile: str | None, container: str) -> bool:
    """Serve a plain ``proxy KIND`` (:func:`parse_proxy_args`) from a live session; False when
    the slow path must take over."""
    try:
        found = fast_socket(kind, profile, container)
    except InteractiveSlurmError:
        return False  # e.g. a bad config.toml: the full CLI reports it
    except KeyboardInterrupt:
        sys.exit(130)
    if found is None:
        return False
    from interactive_slurm.connect.relay import relay

    relay(*found, threshold=warn_threshold)
    return True


def connect(args: list[str]) -> None:
    """``interactive-slurm connect JOBID``: the ProxyCommand of ``remote ssh``/``gpuswap``.

    Keyhole + relay for one job's record; no Slurm, no slow path.
    """
    from interactive_slurm.connect import endpoint, fastpath

    try:
        if len(args) != 1:
            raise InteractiveSlurmError("usage: interactive-slurm connect JOBID")
        try:
            ep = endpoint.read_job(args[0])
        except PermissionError as exc:
            raise InteractiveSlurmError(f"job {args[0]}'s record is not yours to read") from exc
        except OSError as exc:
            raise InteractiveSlurmError(f"job {args[0]}'s record: {exc.strerror or exc}") from exc
        if ep is None:
            raise InteractiveSlurmError(f"job {args[0]} has no running session")
        try:
            sock = fastpath.open_connection(ep, configured=configured_transport())
        except fastpath.StaleEndpoint as exc:
            fastpath.drop(ep, str(exc))
            raise InteractiveSlurmError(f"job {args[0]}'s session does not answer") from exc
    except InteractiveSlurmError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    from interactive_slurm.connect.relay import relay

    relay(ep, sock, threshold=warn_threshold)


def relay_fd(args: list[str]) -> None:
    """``interactive-slurm relay-fd FD JOBID``: the proxy's slow path, once connected, hands its
    keyhole-checked socket to this lean process (see login/proxy.hand_off) and ends."""
    import _socket

    from interactive_slurm.connect import endpoint
    from interactive_slurm.connect.relay import relay

    if len(args) != 2 or not args[0].isdigit():
        sys.stderr.write("error: usage: interactive-slurm relay-fd FD JOBID\n")
        sys.exit(2)
    sock = _socket.socket(fileno=int(args[0]))
    try:
        ep = endpoint.read_job(args[1])
    except (InteractiveSlurmError, OSError):
        ep = None
    if ep is None:  # withdrawn meanwhile: the session is ending; carry the bytes anyway
        from interactive_slurm.connect.splice import splice

        try:
            splice(0, 1, sock)
        finally:
            sock.close()
        return
    relay(ep, sock, threshold=warn_threshold)
