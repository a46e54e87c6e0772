"""How a client's ssh reaches a session, named once: the host key names, the options that check a
session's certificate, and the one renderer of ``Host`` entries for an ssh config.

A session's host key is certified (:mod:`interactive_slurm.node.hostca`) for the principals
``<kind>.interactive-slurm`` and ``job<id>.interactive-slurm``; a client trusts
``@cert-authority *.interactive-slurm <CA key>`` and checks with :data:`STRICT_OPTIONS`. Two
commands write ``Host`` entries with these: ``interactive-slurm ssh-config`` on a login node and
``setup``'s managed block on a laptop (``laptop/sshconfig.py``); both are :func:`render` with
their own inputs. Pure, and imports only base's defaults (the laptop, the login node and the CLI all use it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from interactive_slurm.base import defaults

DOMAIN = "interactive-slurm"
#: The host pattern of the CA line: every session's aliases match it, nothing else does.
CA_PATTERN = f"*.{DOMAIN}"
CA_MARKER = "@cert-authority"

#: ssh checks a session's host certificate against the CA line alone: no prompt, no address check.
STRICT_OPTIONS = (("StrictHostKeyChecking", "yes"), ("CheckHostIP", "no"))
#: Keepalives on the connection to the session and on the ProxyCommand's hop to the login node.
KEEPALIVE = ("ServerAliveInterval", "30")
#: Seconds the hop to the login node may take to connect (never the wait in Slurm's queue: that
#: is the outer connection's banner wait, so ConnectTimeout goes on the hop's own ssh only).
LOGIN_CONNECT_TIMEOUT = 30
#: Seconds a session host's connection may take up to the SSH banner, which includes the wait in
#: Slurm's queue: the proxy's ``wait_timeout`` and a minute for the rest. Written in each host's
#: own entry (ssh takes the first value), so a user's ``Host *`` with ``ConnectTimeout 5`` does
#: not cut a queued connect.
SESSION_CONNECT_TIMEOUT = defaults.WAIT_TIMEOUT + 60


#: How long a session host's master connection (ControlMaster) stays open after its last client.
#: The master is one proven connection of the session, so it keeps the job's idle timer from
#: running: an unused job ends ``idle_timeout`` + this much after its last use.
SESSION_PERSIST = "10m"
#: The private folder (0700) of the control sockets, relative to the home directory: short, for
#: macOS's 104-byte socket paths.
CONTROL_DIR = ".ssh/interactive-slurm-cm"
#: A master persists (ControlPersist) only when ssh runs on a terminal. OpenSSH gives a
#: persisting master's ProxyCommand /dev/null as stderr: on a terminal :data:`TTY_STDERR` sends
#: the proxy's progress and errors there instead, but elsewhere (VS Code, scripts) they would be
#: lost, so there the first ssh is the master for as long as it runs (VS Code's window), and its
#: stderr stays. (``Match exec`` runs with ssh's own stderr.)
PERSIST_CONDITION = 'exec "test -t 2"'

#: The session hosts' masters persist (ControlPersist), and OpenSSH then gives the ProxyCommand
#: /dev/null as its stderr: the proxy's queue progress and its errors would be lost. When that
#: is so and there is a terminal, they go to the terminal instead (``sh`` runs the proxy).
TTY_STDERR = ('if [ /dev/stderr -ef /dev/null ] && (: >/dev/tty) 2>/dev/null; '
              'then exec "$@" 2>/dev/tty; fi; exec "$@"')


def tty_stderr(argv: Sequence[str]) -> list[str]:
    """``argv`` run through :data:`TTY_STDERR` (a POSIX ``sh`` on Linux and macOS)."""
    return ["sh", "-c", TTY_STDERR, "sh", *argv]


def multiplex_options(control_dir: str) -> tuple[tuple[str, str], ...]:
    """A session host's shared connection: the first ``ssh`` opens a master, every later one
    (VS Code's several, scp, ``-L``) runs over it without a new handshake or proxy. Its
    ControlPersist is :func:`persist_lines`'."""
    return (("ControlMaster", "auto"), ("ControlPath", f"{control_dir}/%C"))


def persist_lines(aliases: Sequence[str]) -> list[str]:
    """The ``Match`` that lets the masters of ``aliases`` persist when ssh runs on a terminal."""
    return [f"Match originalhost {','.join(aliases)} {PERSIST_CONDITION}",
            f"  ControlPersist {SESSION_PERSIST}"]


#: The ``-tmux`` twin of each host: a shell in the job that survives the connection (a dropped
#: network, a sleeping laptop): attach to the job's one tmux session (or screen's), or start it.
#: Run by the user's login shell on the node, so it starts ``sh`` for the POSIX parts.
#: The tmux server is the job's own (``-L interactive-slurm-JOBID``): a second job on the same
#: node gets its own shell, and the session stops the server when the job ends.
PERSISTENT_SUFFIX = "-tmux"
PERSISTENT_SESSION = "interactive-slurm"
TMUX_SOCKET = "interactive-slurm-{job_id}"
PERSISTENT_COMMAND = (
    "exec sh -c 'command -v tmux >/dev/null && exec tmux -L "
    f"{TMUX_SOCKET.format(job_id='$SLURM_JOB_ID')} new-session -A -s {PERSISTENT_SESSION}; "
    f"command -v screen >/dev/null && exec screen -xRR {PERSISTENT_SESSION}-$SLURM_JOB_ID; "
    "echo interactive-slurm: neither tmux nor screen is installed in the job, install one or "
    "load its module >&2; exit 127'"
)
#: Options whose value is the rest of the line as it is (ssh reads a command there, not words).
_RAW_OPTIONS = ("RemoteCommand",)


def kind_alias(kind: str) -> str:
    """The ``HostKeyAlias`` of a ``cpu`` or ``gpu`` host."""
    return f"{kind}.{DOMAIN}"


def job_alias(job_id: str) -> str:
    """The ``HostKeyAlias`` of one job's session (``remote ssh``)."""
    return f"job{job_id}.{DOMAIN}"


def trust_options(alias: str, known_hosts: str) -> list[tuple[str, str]]:
    """The options that make ssh accept only a session certified for ``alias`` by the CA line in
    ``known_hosts``."""
    return [("HostKeyAlias", alias), ("UserKnownHostsFile", known_hosts), *STRICT_OPTIONS]


def option_args(options: Iterable[tuple[str, str]]) -> list[str]:
    """``-o KEY=VALUE`` arguments for the ssh command line."""
    return [arg for key, value in options for arg in ("-o", f"{key}={value}")]


@dataclass(frozen=True)
class Host:
    """One ``Host`` entry: its alias, its kind, and how ssh gets there."""

    alias: str
    kind: str
    proxy_command: str  # a shell command line, as ``sh -c`` runs it (``%`` is escaped on writing)
    known_hosts: str    # the file with the CA line
    login: tuple[tuple[str, str], ...] = ()  # more options, right after ProxyCommand (User, ...)
    more: tuple[tuple[str, str], ...] = ()   # options after the trust options (multiplexing)


def persistent(host: Host) -> Host:
    """``host``'s ``-tmux`` twin: the same connection, with :data:`PERSISTENT_COMMAND`."""
    return Host(f"{host.alias}{PERSISTENT_SUFFIX}", host.kind, host.proxy_command,
                host.known_hosts, host.login,
                (*host.more, ("RequestTTY", "force"), ("RemoteCommand", PERSISTENT_COMMAND)))


def config_value(value: str) -> str:
    """A value as ssh_config reads it: in double quotes when it has a space."""
    return f'"{value}"' if " " in value else value


def host_lines(host: Host) -> list[str]:
    """The ``Host`` line and its options, indented."""
    # ssh expands %-tokens in a ProxyCommand: a literal % is written %%.
    lines = [f"Host {host.alias}", f"  ProxyCommand {host.proxy_command.replace('%', '%%')}"]
    options = [*host.login, *trust_options(kind_alias(host.kind), host.known_hosts), KEEPALIVE,
               ("ConnectTimeout", str(SESSION_CONNECT_TIMEOUT)), *host.more]
    return lines + [f"  {key} {value.replace('%', '%%') if key in _RAW_OPTIONS else config_value(value)}"
                    for key, value in options]


def render(head: Sequence[str], hosts: Iterable[Host], tail: Sequence[str]) -> str:
    """``head`` lines, each host's entry and its :func:`persistent` twin, ``tail`` lines; ends
    with a newline."""
    hosts = [*hosts]
    every = [*hosts, *map(persistent, hosts)]
    shared = [h.alias for h in every if ("ControlMaster", "auto") in h.more]
    lines = [*head, *(line for host in every for line in host_lines(host)),
             *(persist_lines(shared) if shared else []), *tail]
    return "\n".join(lines) + "\n"
