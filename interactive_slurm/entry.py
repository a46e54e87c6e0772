"""The ``interactive-slurm`` console script: the proxy's fast path before anything heavy.

``ssh`` starts a proxy for every connection (VS Code opens several at once), so reusing a live
session must be quick: this module answers ``proxy KIND [--profile P] [--container C]`` from the
endpoint records alone, importing neither click nor the Slurm layer. Anything else (no live
session, other options, other verbs, ``--help``) goes to the full CLI in :mod:`cli`, which
validates every value and takes the slow path.
"""

from __future__ import annotations

import os
import socket
import sys

from interactive_slurm.errors import InteractiveSlurmError

_OPTIONS = ("--profile", "--container", "--timeout")


def parse_proxy_args(args: list[str]) -> tuple[str, str | None, str] | None:
    """(kind, profile or None, container) of a plain proxy call; None for anything unusual."""
    if not args or args[0] not in ("cpu", "gpu"):
        return None
    kind, profile, container = args[0], None, ""
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
    return kind, profile, container


def default_profile() -> str:
    from interactive_slurm import paths

    if not paths.config_file().exists():
        return "default"
    from interactive_slurm import config

    return config.load().default_profile


def fast_socket(kind: str, profile: str | None, container: str) -> socket.socket | None:
    """A connection to a live session of this kind/profile, from endpoint records alone."""
    from interactive_slurm import endpoint
    from interactive_slurm.fastpath import connect_first

    return connect_first(endpoint.find(kind, profile or default_profile(), container))


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["proxy"] and not os.environ.get("INTERACTIVE_SLURM_NO_FAST_PATH"):
        request = parse_proxy_args(args[1:])
        sock = None
        if request is not None:
            try:
                sock = fast_socket(*request)
            except InteractiveSlurmError:
                sock = None  # e.g. a bad config.toml: the full CLI below reports it
            except KeyboardInterrupt:
                sys.exit(130)
        if sock is not None:
            from interactive_slurm.splice import splice

            with sock:
                splice(0, 1, sock)
            return
    from interactive_slurm.cli import main as cli_main

    cli_main()
