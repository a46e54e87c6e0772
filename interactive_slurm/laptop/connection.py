"""The one SSH connection ``setup`` makes to the login node (asyncssh; laptop side only).

It authenticates as ssh would: the user's key first, then password and keyboard-interactive
prompts (a second factor, an OTP) answered on the terminal. The login node's host key is checked
against ``~/.ssh/known_hosts``; an unknown one is shown by fingerprint and added only when the
user says yes on a terminal, the same file the ProxyCommand's ``ssh`` reads later. Over this
verified connection setup runs its commands and uploads the wheels (SFTP).
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from interactive_slurm.base import folders
from interactive_slurm.base.errors import InteractiveSlurmError


class LoginError(InteractiveSlurmError):
    """The login node could not be reached, verified or logged into."""


class Terminal(Protocol):
    """How setup talks to the person at the keyboard (tests give their own)."""

    interactive: bool

    def ask(self, prompt: str, *, secret: bool = False, default: str | None = None) -> str: ...

    def confirm(self, question: str, *, default: bool = False) -> bool: ...

    def say(self, message: str) -> None: ...


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    identity: Path
    jump: str | None = None


def known_hosts_path() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _parse_jump(spec: str, default_user: str) -> list[tuple[str, int, str]]:
    hops = []
    for hop in spec.split(","):
        user, _, rest = hop.rpartition("@")
        host, port = rest, 22
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = int(tail[1:]) if tail.startswith(":") else 22
        elif rest.count(":") == 1:
            host, _, p = rest.partition(":")
            port = int(p)
        hops.append((host, port, user or default_user))
    return hops


class _Client(asyncssh.SSHClient):
    def __init__(self, term: Terminal, label: str) -> None:
        self._term = term
        self._label = label
        self._passwords = 0

    def password_auth_requested(self) -> str | None:
        if not self._term.interactive or self._passwords >= 3:
            return None
        self._passwords += 1
        return self._term.ask(f"{self._label}'s password: ", secret=True)

    def kbdint_auth_requested(self) -> str | None:
        return "" if self._term.interactive else None

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> Sequence[str] | None:
        if not prompts:
            return []
        if not self._term.interactive:
            return None
        for text in (name, instructions):
            if text.strip():
                self._term.say(text.strip())
        label = f"({self._label}) "
        return [self._term.ask(label + prompt, secret=not echo) for prompt, echo in prompts]


def reason(exc: BaseException) -> str:
    """What went wrong, in words, for any exception of the login (asyncssh, the OS, asyncio):
    never empty, never a bare colon. The one place these are turned into text."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(getattr(exc, "reason", "") or "").strip()
    if not text and isinstance(exc, OSError):
        text = (exc.strerror or "").strip()
    text = text or str(exc).strip()
    if not text and exc.__cause__ is not None:
        return reason(exc.__cause__)
    return text or f"{type(exc).__name__} (no detail)"


def _load_key(identity: Path, term: Terminal) -> asyncssh.SSHKey | None:
    if not identity.exists():
        return None
    try:
        return asyncssh.read_private_key(identity)
    except asyncssh.KeyImportError as exc:
        if "passphrase" not in str(exc).lower() or not term.interactive:
            raise LoginError(f"{identity}: {reason(exc)}") from exc
    for _ in range(3):
        passphrase = term.ask(f"Passphrase for {identity}: ", secret=True)
        try:
            return asyncssh.read_private_key(identity, passphrase)
        except asyncssh.KeyEncryptionError as exc:
            if "bcrypt" in str(exc):  # the passphrase may be right: the library cannot check it
                raise LoginError(f"{identity}: {exc}; install it with "
                                 "pip install 'asyncssh[bcrypt]'") from exc
            term.say("wrong passphrase")
    raise LoginError(f"{identity}: wrong passphrase (3 tries)")


async def _agent_keys(identity: Path) -> tuple[Any, list[asyncssh.SSHKeyPair]]:
    """The ssh-agent (``$SSH_AUTH_SOCK``) and its keys that are ``identity``'s, as OpenSSH
    would offer them for ``IdentityFile identity``: no passphrase is asked for a key the agent
    holds. (None, []) when there is no agent, no ``.pub`` file or no such key in it."""
    sock = os.environ.get("SSH_AUTH_SOCK", "")
    pub = identity.with_name(identity.name + ".pub")
    if not sock or not pub.exists():
        return None, []
    try:
        wanted = asyncssh.read_public_key(pub).public_data
        agent = await asyncssh.connect_agent(sock)
    except (OSError, ValueError, asyncssh.Error):
        return None, []
    if agent is None:
        return None, []
    try:
        keys = [k for k in await agent.get_keys() if k.public_data == wanted]
    except (OSError, ValueError, asyncssh.Error):
        keys = []
    if not keys:
        agent.close()
        return None, []
    return agent, keys


class Login:
    """An authenticated connection to the login node (``async with Login.open(...)``)."""

    def __init__(self, conn: asyncssh.SSHClientConnection, hops: list[asyncssh.SSHClientConnection],
                 target: Target) -> None:
        self.conn = conn
        self._hops = hops
        self.target = target
        self._agent: Any = None  # the ssh-agent whose key signs, kept open while logged in

    @classmethod
    async def open(cls, target: Target, term: Terminal, *, dry_run: bool = False) -> Login:
        """Log in (through the jump hosts); ``dry_run``: a login node's key the user trusts is
        trusted for this run only, not written to known_hosts."""
        agent, agent_keys = await _agent_keys(target.identity)
        keys: list[Any] = list(agent_keys)
        if not keys:
            key = _load_key(target.identity, term)
            keys = [key] if key else []
        hops: list[asyncssh.SSHClientConnection] = []
        try:
            tunnel: Any = ()
            chain = _parse_jump(target.jump, target.user) if target.jump else []
            for host, port, user in [*chain, (target.host, target.port, target.user)]:
                conn = await _connect(host, port, user, keys, term, tunnel, dry_run=dry_run)
                hops.append(conn)
                tunnel = conn
        except BaseException:
            for hop in reversed(hops):
                hop.close()
            if agent is not None:
                agent.close()
            raise
        login = cls(hops[-1], hops[:-1], target)
        login._agent = agent
        return login

    async def close(self) -> None:
        for conn in [self.conn, *reversed(self._hops)]:
            conn.close()
            await conn.wait_closed()
        if self._agent is not None:
            self._agent.close()

    async def run(self, argv: Sequence[str], *, input: str | None = None,
                  check: bool = True, timeout: float = 600) -> asyncssh.SSHCompletedProcess:
        """Run argv on the login node (quoted for its shell); raise LoginError on failure."""
        command = shlex.join(argv)
        try:
            result = await asyncio.wait_for(self.conn.run(command, input=input, check=False), timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise LoginError(f"on {self.target.host}: {command[:80]}: {reason(exc)}") from exc
        if check and result.exit_status != 0:
            err = str(result.stderr or result.stdout or "no output").strip().splitlines()
            raise LoginError(
                f"on {self.target.host}: `{shlex.join(argv[:3])} ...` failed "
                f"(exit {result.exit_status}): {err[-1] if err else 'no output'}"
            )
        return result

    async def upload(self, files: Sequence[Path], remote_dir: str) -> None:
        """Copy ``files`` into ``remote_dir`` (made 0700 if missing) over SFTP."""
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.makedirs(remote_dir, exist_ok=True)
                await sftp.chmod(remote_dir, 0o700)
                await sftp.put([str(f) for f in files], remote_dir)
        except (OSError, asyncssh.Error) as exc:
            raise LoginError(f"uploading to {self.target.host}:{remote_dir} failed: {reason(exc)}") from exc


async def _connect(host: str, port: int, user: str, keys: list[Any], term: Terminal,
                   tunnel: Any, *, dry_run: bool = False) -> asyncssh.SSHClientConnection:
    label = f"{user}@{host}"
    known = known_hosts_path()

    def attempt(trusted: Any = None) -> Any:
        return asyncssh.connect(
            host, port, tunnel=tunnel, username=user,
            client_factory=lambda: _Client(term, label),
            client_keys=keys or None, agent_path=None,
            known_hosts=trusted or (str(known) if known.exists() else ()), config=(),
            connect_timeout=30, preferred_auth="publickey,keyboard-interactive,password",
        )

    conn: asyncssh.SSHClientConnection
    try:
        try:
            conn = await attempt()
        except asyncssh.HostKeyNotVerifiable:
            key = await _trust_new_host_key(host, port, term, tunnel, known, write=not dry_run)
            conn = await attempt(([key], [], []) if dry_run else None)
    except asyncssh.PermissionDenied as exc:
        raise LoginError(f"{label} port {port}: permission denied ({reason(exc)})") from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        raise LoginError(
            f"{host} port {port}: host key does not match {known} ({exc.reason}); "
            "if the host key really changed, remove the old line there"
        ) from exc
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise LoginError(f"cannot connect to {label} port {port}: {reason(exc)}") from exc
    return conn


async def _trust_new_host_key(host: str, port: int, term: Terminal, tunnel: Any, known: Path, *,
                              write: bool = True) -> asyncssh.SSHKey:
    """Show an unknown login node's key and, if the user trusts it, add it to known_hosts
    (without ``write``: trusted for this run only); returns the key."""
    key = await asyncssh.get_server_host_key(host, port, tunnel=tunnel)
    if key is None:
        raise LoginError(f"{host} port {port} offered no host key")
    fingerprint = key.get_fingerprint("sha256")
    pattern = _host_pattern(host, port)
    if known.exists() and asyncssh.match_known_hosts(str(known), host, "", port)[0]:
        raise LoginError(
            f"{pattern}: its host key ({fingerprint}) is NOT the one in {known}. Someone may be "
            "intercepting the connection, or the host key changed; ask your cluster's admins"
        )
    question = (f"The authenticity of host {pattern} can't be established.\n"
                f"{key.get_algorithm()} key fingerprint is {fingerprint}.\n"
                "Compare it with what your cluster's documentation says. Trust it?")
    if not term.interactive:
        raise LoginError(
            f"{pattern} is not in {known} ({fingerprint}); run `ssh -p {port} {host}` once "
            "to check and accept its host key, then setup again"
        )
    if not term.confirm(question, default=False):
        raise LoginError(f"{pattern}: host key not trusted; nothing was changed")
    if not write:
        term.say(f"dry run: trusting {pattern} for this run only; {known} is not changed")
        return key
    folders.make_private_dirs(known.parent)
    line = f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"
    fd = os.open(known, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # 0600 whatever the umask
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(line)
    term.say(f"added {pattern} to {known}")
    return key
