"""laptop/connection.py against a real SSH server (asyncssh on port 0) and a real ssh-agent:
keys with a passphrase, the agent used as OpenSSH would use it, errors that say what happened."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from interactive_slurm.laptop import connection
from interactive_slurm.laptop.connection import Login, LoginError, Target


class Term:
    """A terminal whose answers are scripted; records what was asked and said."""

    interactive = True

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []
        self.said: list[str] = []

    def ask(self, prompt: str, *, secret: bool = False, default: str | None = None) -> str:
        self.asked.append(prompt)
        return self.answers.pop(0)

    def confirm(self, question: str, *, default: bool = False) -> bool:
        self.asked.append(question)
        return True

    def say(self, message: str) -> None:
        self.said.append(message)


@pytest.fixture
def laptop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "laptop"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def make_key(path: Path, passphrase: str | None) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key("openssh", passphrase))
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key


async def serve(authorized: asyncssh.SSHKey) -> tuple[asyncssh.SSHAcceptor, int, str]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
        process.stdout.write("hello\n")
        process.exit(0)

    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], process_factory=handle,
        authorized_client_keys=asyncssh.import_authorized_keys(
            authorized.export_public_key("openssh").decode()))
    port = server.sockets[0].getsockname()[1]
    return server, port, host_key.export_public_key("openssh").decode().strip()


def login(home: Path, identity: Path, term: Term, key: asyncssh.SSHKey) -> tuple[str, Term]:
    async def go() -> str:
        server, port, host_pub = await serve(key)
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        try:
            session = await Login.open(Target("127.0.0.1", port, "alice", identity), term)
            try:
                result = await session.run(["true"])
                return str(result.stdout)
            finally:
                await session.close()
        finally:
            server.close()

    return asyncio.run(go()), term


def test_a_key_with_a_passphrase_is_asked_for_once(laptop_home: Path) -> None:
    identity = laptop_home / ".ssh" / "id_ed25519"
    key = make_key(identity, "right horse")
    out, term = login(laptop_home, identity, Term("wrong", "right horse"), key)
    assert out == "hello\n"
    assert term.asked == [f"Passphrase for {identity}: "] * 2 and term.said == ["wrong passphrase"]


@pytest.fixture
def agent(laptop_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if shutil.which("ssh-agent") is None:
        pytest.skip("needs OpenSSH's ssh-agent")
    sock = str(laptop_home / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(sock):
            break
        asyncio.run(asyncio.sleep(0.02))
    monkeypatch.setenv("SSH_AUTH_SOCK", sock)
    yield sock
    proc.terminate()
    proc.wait(10)


def test_a_key_in_the_agent_is_used_without_asking_its_passphrase(laptop_home: Path,
                                                                  agent: str) -> None:
    identity = laptop_home / ".ssh" / "id_ed25519"
    key = make_key(identity, "secret")
    # The agent holds it as `ssh-add` would put it there: unlocked once.
    plain = laptop_home / "plain"
    plain.write_bytes(key.export_private_key("openssh"))
    plain.chmod(0o600)
    subprocess.run(["ssh-add", "-q", str(plain)], check=True, env={**os.environ})
    other = laptop_home / "other"
    make_key(other, None)
    subprocess.run(["ssh-add", "-q", str(other)], check=True, env={**os.environ})
    out, term = login(laptop_home, identity, Term(), key)
    assert out == "hello\n" and term.asked == []


def test_an_agent_without_that_key_still_asks(laptop_home: Path, agent: str) -> None:
    identity = laptop_home / ".ssh" / "id_ed25519"
    key = make_key(identity, "pw")
    out, term = login(laptop_home, identity, Term("pw"), key)
    assert out == "hello\n" and term.asked == [f"Passphrase for {identity}: "]


@pytest.mark.parametrize(("exc", "expected"), [
    (asyncio.TimeoutError(), "timed out"),
    (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
    (asyncssh.DisconnectError(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                              "Too many authentication failures"), "Too many authentication failures"),
    (asyncssh.PermissionDenied(""), "PermissionDenied (no detail)"),
    (OSError(), "OSError (no detail)"),
])
def test_every_login_failure_says_what_happened(exc: BaseException, expected: str) -> None:
    assert connection.reason(exc) == expected


def test_an_empty_error_falls_back_to_its_cause() -> None:
    outer = RuntimeError()
    outer.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert connection.reason(outer) == "Connection reset by peer"


def test_a_port_that_never_answers_is_one_line_with_the_cause(
    laptop_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    saved = asyncssh.connect
    monkeypatch.setattr(asyncssh, "connect",
                        lambda *a, **kw: saved(*a, **{**kw, "connect_timeout": 0.5}))
    identity = laptop_home / ".ssh" / "id_ed25519"
    make_key(identity, None)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)  # accepts into the backlog, never speaks SSH
        port = silent.getsockname()[1]
        with pytest.raises(LoginError) as info:
            asyncio.run(Login.open(Target("127.0.0.1", port, "alice", identity), Term()))
    assert str(info.value) == f"cannot connect to alice@127.0.0.1 port {port}: timed out"


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_unknown_login_node_trusted_in_a_dry_run_is_not_written(laptop_home: Path,
                                                                   dry_run: bool) -> None:
    """Issue 20, item 9: ``--dry-run`` must change nothing, known_hosts included."""
    identity = laptop_home / ".ssh" / "id_ed25519"
    key = make_key(identity, None)
    known = laptop_home / ".ssh" / "known_hosts"
    term = Term()

    async def go() -> str:
        server, port, _ = await serve(key)
        try:
            session = await Login.open(Target("127.0.0.1", port, "alice", identity), term,
                                       dry_run=dry_run)
            try:
                return str((await session.run(["true"])).stdout)
            finally:
                await session.close()
        finally:
            server.close()

    assert asyncio.run(go()) == "hello\n"
    assert len(term.asked) == 1 and "Trust it?" in term.asked[0]
    assert known.exists() is not dry_run
    assert ("for this run only" in term.said[0]) is dry_run
