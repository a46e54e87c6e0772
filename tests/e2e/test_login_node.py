"""The test login nodes (scripts/login-node) work with the real ssh client: the password node
takes the right password and only that; the 2FA node asks for the password and then a TOTP code
(only the code after an accepted key); each successful login adds exactly one "Accepted" line.

ssh's prompts are answered by an askpass script (SSH_ASKPASS_REQUIRE=force) that reads the
answers from private files, so no secret is on a command line.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import LoginNode

ASKPASS = """#!/bin/sh
printf '%s\\n' "$1" >> "{d}/prompts"
case "$1" in
    *One-time*) exec cat "{d}/otp" ;;
    *assword*) exec cat "{d}/password" ;;
esac
exit 1
"""


@dataclass
class Login:
    result: subprocess.CompletedProcess[str]
    prompts: list[str]
    accepted: int  # how many "Accepted" lines the server's log gained

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0 and self.result.stdout.strip() == "logged-in"

    def __str__(self) -> str:
        return (f"exit {self.result.returncode}, prompts {self.prompts}, accepted {self.accepted}\n"
                f"stdout: {self.result.stdout}\nstderr: {self.result.stderr}")


def login(node: LoginNode, tmp_path: Path, port: int, *, password: str, otp: str = "",
          key: bool = False) -> Login:
    """One real `ssh` login as this user to the login node on ``port``, answering the prompts with
    ``password`` and ``otp``; with ``key``, the user's own key (authorized by local-cluster) too."""
    d = tmp_path / f"login-{len(list(tmp_path.glob('login-*')))}"
    d.mkdir(mode=0o700)
    (d / "password").write_text(password + "\n")
    (d / "otp").write_text(otp + "\n")
    (d / "prompts").touch()
    askpass = d / "askpass"
    askpass.write_text(ASKPASS.format(d=d))
    askpass.chmod(0o700)
    known_hosts = d / "known_hosts"
    known_hosts.write_text(node.known_hosts_lines())

    auth = (["-o", "PubkeyAuthentication=yes", "-o", "IdentitiesOnly=yes",
             "-i", str(Path.home() / ".ssh" / "id_ed25519")] if key
            else ["-o", "PubkeyAuthentication=no"])
    argv = ["ssh", "-F", "none", "-p", str(port),
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=20", *auth,
            f"{os.environ.get('USER') or 'isuser'}@{node.host}", "echo", "logged-in"]
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DISPLAY")}
    env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")

    before = node.accepted_count(port)
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    prompts = (d / "prompts").read_text().splitlines()
    return Login(result, prompts, node.accepted_count(port) - before)


def wrong_otp(node: LoginNode) -> str:
    """A code no time step near now has (so pam_oath's window cannot make it right)."""
    reach = node.totp_window + 2
    near = {node.totp(time.time() + 30 * k) for k in range(-reach, reach + 1)}
    return next(c for c in (f"{i:06d}" for i in range(1_000_000)) if c not in near)


def is_otp_prompt(prompt: str) -> bool:
    return "One-time password" in prompt


def test_password_node_accepts_the_password(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.pw_port, password=login_node.password)
    assert r.ok, r
    assert len(r.prompts) == 1 and "password" in r.prompts[0], r
    assert r.accepted == 1, r


def test_password_node_refuses_a_wrong_password(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.pw_port, password=login_node.password + "x")
    assert not r.ok and r.result.returncode == 255, r
    assert "Permission denied" in r.result.stderr, r
    assert r.accepted == 0, r


def test_password_node_accepts_the_key_without_a_prompt(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.pw_port, password="", key=True)
    assert r.ok, r
    assert r.prompts == [], r
    assert r.accepted == 1, r


def test_2fa_node_asks_for_password_then_otp(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.tfa_port, password=login_node.password,
              otp=login_node.next_totp())
    assert r.ok, r
    assert len(r.prompts) == 2, r
    assert "Password" in r.prompts[0] and not is_otp_prompt(r.prompts[0]), r
    assert is_otp_prompt(r.prompts[1]), r
    assert r.accepted == 1, r


def test_2fa_node_refuses_a_wrong_otp(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.tfa_port, password=login_node.password,
              otp=wrong_otp(login_node))
    assert not r.ok and r.result.returncode == 255, r
    assert [is_otp_prompt(p) for p in r.prompts] == [False, True], r
    assert r.accepted == 0, r


def test_2fa_node_refuses_a_wrong_password_before_the_otp(login_node: LoginNode, tmp_path: Path) -> None:
    r = login(login_node, tmp_path, login_node.tfa_port, password=login_node.password + "x",
              otp="000000")
    assert not r.ok and r.result.returncode == 255, r
    assert len(r.prompts) == 1 and not is_otp_prompt(r.prompts[0]), r
    assert r.accepted == 0, r


def test_2fa_node_wants_the_otp_even_with_a_key(login_node: LoginNode, tmp_path: Path) -> None:
    # With an accepted key only the code is asked, and the key alone is not enough.
    r = login(login_node, tmp_path, login_node.tfa_port, password="", otp=login_node.next_totp(),
              key=True)
    assert r.ok, r
    assert len(r.prompts) == 1 and is_otp_prompt(r.prompts[0]), r
    assert r.accepted == 1, r
    refused = login(login_node, tmp_path, login_node.tfa_port, password="", otp=wrong_otp(login_node),
                    key=True)
    assert not refused.ok and refused.accepted == 0, refused
    assert "Partial publickey" in login_node.log_2fa.read_text()


def test_the_same_otp_is_not_accepted_twice(login_node: LoginNode, tmp_path: Path) -> None:
    # pam_oath's replay check: why tests must take codes from next_totp().
    otp = login_node.next_totp()
    first = login(login_node, tmp_path, login_node.tfa_port, password="", otp=otp, key=True)
    assert first.ok and first.accepted == 1, first
    again = login(login_node, tmp_path, login_node.tfa_port, password="", otp=otp, key=True)
    assert not again.ok and again.accepted == 0, again
