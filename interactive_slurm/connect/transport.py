"""How the proxy's bytes reach a session: TCP to its port, or an ``srun`` step (the bridge).

``tcp``: the login node opens a TCP connection to the session's port on the compute node.
``srun``: for sites whose firewall lets only Slurm's traffic between login and compute nodes,
the proxy runs an overlapping step of the session's job (:mod:`srunstep`) whose one task, the
bridge (``interactive-slurm bridge``), connects to the session's unix socket on the node and
carries bytes between it and the step's stdio; Slurm's I/O forwarding carries them to the proxy.
The keyhole, the idle timer, the time-limit note and the host certificate stay exactly as they
are: one mechanism, another pipe. The proxy's end is one side of a socketpair whose other side
is srun's stdin and stdout, so the keyhole and the splice see a socket either way.
``auto`` (the default): TCP first with a short bound; when it is refused, unanswered or reset
while the record's lease is fresh, ``srun``, and a working ``srun`` is remembered per cluster and
partition in ``<state>/transport.json`` for :data:`REMEMBER_SECONDS`, so the next connects (VS
Code opens several) go straight to it. Imported by the fast path: lean.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from interactive_slurm.base import folders
from interactive_slurm.base.errors import EndpointError
from interactive_slurm.base.fsutil import read_private
from interactive_slurm.connect.fastjson import loads

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from _socket import socket as Socket

    from interactive_slurm.connect.endpoint import Endpoint

TRANSPORTS = ("tcp", "srun", "auto")
#: ``auto``'s bound on the TCP try: a compute node's kernel answers a SYN in milliseconds, so
#: no answer by then means a firewall that drops.
AUTO_TCP_TIMEOUT = 1.5
#: srun asks slurmctld for a step and slurmd starts it: up to seconds on a busy controller.
SRUN_DEADLINE = 20.0
#: How long ``auto`` goes straight to a transport that worked where TCP did not.
REMEMBER_SECONDS = 24 * 3600.0
CHOICES_NAME = "transport.json"
CHOICES_VERSION = 1


def choices_file() -> str:
    return os.path.join(folders.state_dir(), CHOICES_NAME)


def choice_key(ep: Endpoint) -> str:
    return f"{ep.cluster or '-'}/{ep.partition or '-'}"


def _read_choices() -> dict[str, object]:
    try:
        data = loads(read_private(choices_file()))
    except (OSError, ValueError, EndpointError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CHOICES_VERSION:
        return {}
    choices = data.get("choices")
    return choices if isinstance(choices, dict) else {}


def remembered(ep: Endpoint, now: float | None = None) -> str | None:
    """The transport ``auto`` found for ``ep``'s cluster and partition, while it holds."""
    entry = _read_choices().get(choice_key(ep))
    if not isinstance(entry, dict):
        return None
    how, until = entry.get("transport"), entry.get("until")
    if how not in TRANSPORTS or not isinstance(until, (int, float)) or isinstance(until, bool):
        return None
    return str(how) if (time.time() if now is None else now) < until else None


def remember(ep: Endpoint, how: str, now: float | None = None) -> None:
    """Keep ``how`` for ``ep``'s cluster and partition (expired entries are dropped); a file that
    cannot be written costs the next connect its TCP try, nothing else."""
    import json

    from interactive_slurm.base.errors import InteractiveSlurmError
    from interactive_slurm.base.fsutil import write_private_atomic

    now = time.time() if now is None else now
    kept = {key: entry for key, entry in _read_choices().items()
            if isinstance(entry, dict) and isinstance(entry.get("until"), (int, float))
            and entry["until"] > now}
    kept[choice_key(ep)] = {"transport": how, "until": now + REMEMBER_SECONDS,
                            "job": ep.job_id, "node": ep.node}
    try:
        folders.ensure_private_dir(folders.state_dir())
        write_private_atomic(choices_file(), json.dumps(
            {"version": CHOICES_VERSION, "choices": kept}, indent=2, sort_keys=True) + "\n")
    except (OSError, InteractiveSlurmError):
        pass


def open_srun(ep: Endpoint) -> Socket:
    """A socket whose bytes an ``srun`` step carries to the session's bridge on its node.

    srun is this process's child until both end (the connection's end ends the step); it is
    not waited for: the proxy exits right after the connection, and init reaps it then."""
    from interactive_slurm.base import selfcmd
    from interactive_slurm.connect import srunstep

    target = ep.socket or str(ep.port)
    argv = srunstep.step_argv(ep.job_id, ep.node or ep.host, [*selfcmd.argv(), "bridge", target])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        # srun's stdin and stdout are one end of the pair; its stderr stays ours (srun's own
        # messages reach the user's terminal through ssh, never the byte stream).
        os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, theirs.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, theirs.fileno(), 1),
        ])
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours


def say_chosen(ep: Endpoint, why: str) -> None:
    where = f"partition {ep.partition}" if ep.partition else "this cluster"
    hours = int(REMEMBER_SECONDS // 3600)
    sys.stderr.write(
        f"interactive-slurm: {why}; job {ep.job_id}'s session answers through srun, so "
        f"connections to {where} use the srun transport for the next {hours} h (set transport "
        f"= \"tcp\" or \"srun\" in config.toml to choose)\n")
    sys.stderr.flush()


def bridge(args: list[str]) -> None:
    """``interactive-slurm bridge SOCKET|PORT`` (the srun transport's task on the node, not
    for people): connect to the session and carry bytes between it and stdin/stdout."""
    from interactive_slurm.connect.splice import splice

    if len(args) != 1 or not (args[0].startswith("/") or args[0].isdigit()):
        sys.stderr.write("error: usage: interactive-slurm bridge SOCKET|PORT\n")
        sys.exit(2)
    try:
        if args[0].startswith("/"):
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.connect(args[0])
        else:
            from interactive_slurm.connect.fastpath import connect_tcp

            sock = connect_tcp("localhost", int(args[0]), 5.0)
            sock.settimeout(None)
    except OSError as exc:
        sys.stderr.write(f"interactive-slurm bridge: cannot reach the session at {args[0]}: "
                         f"{exc.strerror or exc}\n")
        sys.exit(1)
    try:
        splice(0, 1, sock)
    finally:
        sock.close()
