"""The managed block in ``~/.ssh/config``: render it, put it in, take it out (pure functions).

One block per cluster, between ``# BEGIN interactive-slurm NAME`` and ``# END interactive-slurm
NAME``. A new block goes at the top of the file, because ssh takes the *first* value it finds for
an option: a user's ``Host *`` further down cannot override the block's ``User``, ``ProxyCommand``
or host key settings, yet still adds whatever the block leaves unset. The block ends with a
``Host *`` line, so lines that followed it at the top level still apply to every host, as before.
Everything outside the block is kept byte for byte; taking the block out restores the file.

The login hop is written as options on the ProxyCommand's own ``ssh`` (not as a ``Host`` entry), so
it works whatever ``-F`` or ``Include`` layout the user has, and the user's own settings for the
login node (ProxyJump, GSSAPI, ...) still apply to what the block leaves unset. On Linux and macOS
that hop is a shared connection (``ControlMaster auto``): a second factor is asked once and
reconnects skip the login handshake. The session hosts themselves are shared connections too:
the first ``ssh slurm-cpu`` opens a master, later ones (VS Code's, scp, ``-L``) run over it in
milliseconds. OpenSSH for Windows has no ControlMaster.

The ``Host`` entries themselves are :func:`interactive_slurm.base.sshhosts.render`'s, the same as
``interactive-slurm ssh-config`` prints on a login node; what is the laptop's is the inputs (the
login hop, ``User``, ``IdentityFile``, Windows paths) and the block's place in the file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from interactive_slurm.base import sshhosts
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.laptop.clusters import check_aliases, check_host, check_login

KINDS = ("cpu", "gpu")
CONTROL_PERSIST = "30m"
WINDOWS_SSH = "C:/Windows/System32/OpenSSH/ssh.exe"


@dataclass(frozen=True)
class Block:
    """What one cluster's block says (all paths absolute, as the laptop sees them)."""

    name: str
    login: str
    user: str
    port: int
    jump: str | None
    identity: str
    tool: str  # the console script on the login node, absolute
    known_hosts: str
    control_dir: str
    hosts: tuple[tuple[str, str], ...]  # (host alias, kind)
    profile: str | None = None
    windows: bool = False

    def __post_init__(self) -> None:
        check_login(self.name, self.login, self.user, self.port, self.jump)
        check_aliases(alias for alias, _ in self.hosts)
        for alias, kind in self.hosts:
            if kind not in KINDS:
                raise ConfigError(f"host {alias}: kind {kind!r} is not cpu or gpu")


def begin_marker(name: str) -> str:
    return f"# BEGIN interactive-slurm {name}"


def end_marker(name: str) -> str:
    return f"# END interactive-slurm {name}"


def default_hosts(name: str) -> tuple[tuple[str, str], ...]:
    """``NAME-cpu``/``NAME-gpu``: ``slurm-cpu``/``slurm-gpu`` for the cluster of the default name
    (``slurm``); ``--name lab`` gives ``lab-cpu``/``lab-gpu``, first cluster or not."""
    return tuple((f"{name}-{kind}", kind) for kind in KINDS)


def parse_hosts(value: str) -> tuple[tuple[str, str], ...]:
    """``--hosts cpu-alias[,gpu-alias]``: the first is the CPU host, the second the GPU host."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names):
        raise ConfigError(f"--hosts {value!r}: give one or two different names (cpu[,gpu])")
    return tuple((check_host(n, "host alias"), kind) for n, kind in zip(names, KINDS))


def _windows_quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in ' \t"') else arg


def proxy_argv(block: Block, kind: str) -> list[str]:
    """The ProxyCommand as argv: ssh to the login node, running the proxy there."""
    remote = [block.tool, "proxy", kind]
    if block.profile:
        remote += ["--profile", block.profile]
    ssh = WINDOWS_SSH if block.windows else "ssh"
    argv = [ssh]
    if not block.windows:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={block.control_dir}/%C",
                 "-o", f"ControlPersist={CONTROL_PERSIST}"]
    argv += [*sshhosts.option_args([sshhosts.KEEPALIVE]),
             "-o", f"ConnectTimeout={sshhosts.LOGIN_CONNECT_TIMEOUT}",
             "-i", block.identity, "-p", str(block.port), "-l", block.user]
    if block.jump:
        argv += ["-J", block.jump]
    # The remote command is one argument: the login node's shell splits it again, so each of
    # its words is quoted for that (POSIX) shell. ``--``: OpenSSH reads options after the host
    # too; whatever the login node named as the install, it can never turn on a client option.
    argv += ["-T", "--", block.login, shlex.join(remote)]
    return argv


def proxy_command(block: Block, kind: str) -> str:
    """The ProxyCommand as the local shell runs it (the renderer escapes ssh's ``%``)."""
    argv = proxy_argv(block, kind)
    if block.windows:
        return " ".join(_windows_quote(a.replace("\\", "/")) for a in argv)
    return shlex.join(sshhosts.tty_stderr(argv))


def _local_path(path: str, windows: bool) -> str:
    return path.replace("\\", "/") if windows else path


def render(block: Block) -> str:
    """The block's text, markers included, ending with a newline."""
    head = [f"{begin_marker(block.name)} (written by `interactive-slurm setup`; changes here are replaced)"]
    login = (("User", block.user), ("IdentityFile", _local_path(block.identity, block.windows)))
    known = _local_path(block.known_hosts, block.windows)
    # OpenSSH for Windows has no ControlMaster: its hosts make a new connection each time.
    more = () if block.windows else sshhosts.multiplex_options(block.control_dir)
    hosts = [sshhosts.Host(alias, kind, proxy_command(block, kind), known, login, more)
             for alias, kind in block.hosts]
    tail = ["# (the line below ends these hosts: what follows applies to every host, as before)",
            "Host *", end_marker(block.name)]
    return sshhosts.render(head, hosts, tail)


def _span(text: str, name: str) -> tuple[int, int] | None:
    """Start and end (after the end marker's newline) of NAME's block in ``text``."""
    begin = re.search(rf"^{re.escape(begin_marker(name))}(?: .*)?$", text, re.M)
    if not begin:
        return None
    end = re.compile(rf"^{re.escape(end_marker(name))}[ \t]*(?:\r?\n|$)", re.M).search(text, begin.end())
    if not end:
        raise ConfigError(
            f"the interactive-slurm block {name!r} has a BEGIN line but no "
            f"`{end_marker(name)}` line; fix the file by hand, nothing was changed"
        )
    return begin.start(), end.end()


def put(text: str, block_text: str, name: str) -> str:
    """``text`` with NAME's block replaced in place, or inserted at the top."""
    span = _span(text, name)
    if span:
        return text[: span[0]] + block_text + text[span[1]:]
    return block_text + text


def remove(text: str, name: str) -> str:
    """``text`` without NAME's block (unchanged if there is none)."""
    span = _span(text, name)
    return text if span is None else text[: span[0]] + text[span[1]:]


def host_names(text: str) -> list[str]:
    """Every pattern named on a ``Host`` line of ``text`` (for clash checks: see :func:`clashes`)."""
    names: list[str] = []
    for line in text.splitlines():
        words = line.strip().split()
        if len(words) > 1 and words[0].lower() == "host":
            names += words[1:]
    return names


def clashes(text: str, name: str, aliases: Sequence[str]) -> list[str]:
    """Aliases that a ``Host`` line outside NAME's own block already names."""
    others = set(host_names(remove(text, name)))
    return [a for a in aliases if a in others]
