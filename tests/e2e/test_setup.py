"""`interactive-slurm setup` as a new user runs it on a laptop, against real login nodes.

The "laptop" is a fresh HOME; the login node is a real sshd on 127.0.0.1 (scripts/login-node)
asking for a password, or a password and a TOTP code (PAM, libpam-oath); behind it is the real
local Slurm cluster. Setup runs on a pseudo-terminal and its prompts are answered as a person
would. Afterwards plain `ssh slurm-cpu` (strict host key checking) and a VS Code-style
connection reach a job, and the shared login connection (ControlMaster) spares the second
connect its login: the login sshd's log shows no new authentication.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import TOOL, LoginNode, cancel_all_and_wait, my_jobs
from .test_connect import _free_port

CLUSTER_HOME = Path("/home") / os.environ.get("USER", "isuser")

USER_SSH_CONFIG = """\
# my own settings: setup must keep every byte of this
ServerAliveInterval 60
Include ~/.ssh/config.d/*

Host *
  User somebody-else
  ForwardAgent no

Host work
  HostName work.example.org
"""

SETTINGS_JSONC = """\
{
    // my editor settings
    "editor.fontSize": 14,
    /* keep this */
    "remote.SSH.remotePlatform": {
        "other-host": "linux",
    },
}
"""

BROKEN_JSON = '{\n  "editor.fontSize": 14,,\n'


@dataclass
class Laptop:
    home: Path
    env: dict[str, str]
    install: Path

    @property
    def ssh_config(self) -> Path:
        return self.home / ".ssh" / "config"

    def setup(self, *args: str, answers: list[tuple[str, str]], timeout: float = 180) -> tuple[int, str]:
        return run_on_pty([str(TOOL), "setup", *args], self.env, answers, timeout)

    def ssh(self, *args: str, otp: str | None = None, input: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The real ssh client with this laptop's config; an OTP prompt is answered by askpass."""
        env = dict(self.env)
        if otp is not None:
            answer = self.home / "otp"
            answer.write_text(otp + "\n")
            askpass = self.home / "askpass"
            askpass.write_text(f'#!/bin/sh\necho "$1" >> {self.home}/prompts\nexec cat {answer}\n')
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        return subprocess.run(["ssh", "-F", str(self.ssh_config), *args], env=env, input=input,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def stop_control_masters(self) -> None:
        folder = self.home / ".ssh" / "interactive-slurm-cm"
        for sock in folder.glob("*") if folder.exists() else []:
            subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                           capture_output=True, timeout=30)


def run_on_pty(argv: list[str], env: dict[str, str], answers: list[tuple[str, str]],
               timeout: float) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its controlling terminal; answer each prompt (a
    regex) in order with its text, as a person typing would. Returns (exit status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr and /dev/tty are the pty
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"{argv} still running after {timeout}s; output:\n{output.decode()}")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the pty
                    break
                if not chunk:
                    break
                output += chunk
            text = output.decode(errors="replace")
            while pending and re.search(pending[0][0], text):
                _, reply = pending.pop(0)
                os.write(fd, reply.encode() + b"\r")
                # Later prompts must appear after this point.
                output += b"\n<answered>\n"
                text = output.decode(errors="replace")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    out = output.decode(errors="replace").replace("\r\n", "\n")
    assert not pending, f"prompts never came: {[p for p, _ in pending]}\noutput:\n{out}"
    return code, out


@pytest.fixture
def laptop(cluster: None, login_node: LoginNode) -> Iterator[Laptop]:
    """A fresh laptop HOME (short path: ssh's control sockets have a length limit)."""
    cancel_all_and_wait()
    home = Path(tempfile.mkdtemp(prefix="lap", dir="/tmp"))
    install = Path(tempfile.mkdtemp(prefix="lapinst", dir="/tmp")) / "interactive-slurm"
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(login_node.known_hosts_lines())
    # ssh (unlike Python) finds ~/.ssh through the passwd entry: the ProxyCommand's login hop
    # checks the login node's host key in the test user's real known_hosts.
    real_known = CLUSTER_HOME / ".ssh" / "known_hosts"
    have = real_known.read_text() if real_known.exists() else ""
    missing = [line for line in login_node.known_hosts_lines().splitlines() if line not in have]
    if missing:
        with open(real_known, "a") as fh:
            fh.write("".join(line + "\n" for line in missing))
    authorized = CLUSTER_HOME / ".ssh" / "authorized_keys"
    authorized_before = authorized.read_text()
    env = {
        "HOME": str(home), "USER": os.environ.get("USER", "isuser"),
        "LOGNAME": os.environ.get("USER", "isuser"), "LANG": "C.UTF-8", "TERM": "dumb",
        "PATH": f"{TOOL.parent}:/usr/local/bin:/usr/bin:/bin",
    }
    lap = Laptop(home, env, install)
    yield lap
    lap.stop_control_masters()
    cancel_all_and_wait()
    authorized.write_text(authorized_before)  # the cluster's authorized_keys as it was
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(install.parent, ignore_errors=True)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".bak-" not in p.name and "interactive-slurm-cm" not in str(p)}


def test_setup_with_password_then_plain_ssh_and_vscode_style(laptop: Laptop, login_node: LoginNode) -> None:
    port = str(login_node.pw_port)
    args = ["127.0.0.1", "--port", port, "--user", laptop.env["USER"], "--install-dir", str(laptop.install)]
    before = snapshot(laptop.home)

    # --dry-run: asks for the password, shows the diffs, changes nothing on either side.
    code, out = laptop.setup(*args, "--dry-run", "--yes", answers=[(r"password: ", login_node.password)])
    assert code == 0, out
    assert "would make an ed25519 key" in out and "would install interactive-slurm" in out
    assert f"+++ {laptop.ssh_config}" in out and "+Host slurm-cpu" in out
    assert "dry run: nothing was changed" in out
    assert snapshot(laptop.home) == before and not laptop.install.exists()
    # A dry run checks --profile too (the real run would fail on it).
    code, out = laptop.setup(*args, "--dry-run", "--yes", "--profile", "nope",
                             answers=[(r"password: ", login_node.password)])
    assert code == 1 and "--profile nope: no such profile (shipped: default, development" in out
    assert snapshot(laptop.home) == before

    # A login node whose key differs from the one in known_hosts: refused, nothing asked or sent.
    known_hosts = laptop.home / ".ssh" / "known_hosts"
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4a6kOgCjA1B6ZCfO3W5lQd4Y4bqNH8yQ3eEw6f8Xv"
    known_hosts.write_text(f"[127.0.0.1]:{port} {other_key}\n")
    code, out = laptop.setup(*args, "--yes", answers=[])
    assert code == 1 and "is NOT the one in" in out and "password" not in out.lower()
    assert snapshot(laptop.home) == {**before, ".ssh/known_hosts": known_hosts.read_bytes()}

    # The real thing on a laptop that has never seen the login node: its key is shown and
    # trusted on "y", the password is asked, then a new key is made (empty passphrase), done.
    known_hosts.unlink()
    code, out = laptop.setup(*args, answers=[
        (r"Make a new ed25519 key there\?", "y"),
        (r"key fingerprint is SHA256:.*\n.*Trust it\? \[y/N\]", "y"),
        (r"password: ", login_node.password),
        (r"Passphrase for the new key", ""),
    ])
    assert code == 0, out
    assert known_hosts.read_text() == login_node.known_hosts_lines().splitlines()[0] + "\n"
    assert "made an ed25519 key" in out and "added your key to 127.0.0.1" in out
    assert "done: try `ssh slurm-cpu`" in out
    key = laptop.home / ".ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    pub = (laptop.home / ".ssh" / "id_ed25519.pub").read_text().split()[1]
    authorized = (CLUSTER_HOME / ".ssh" / "authorized_keys").read_text()
    assert authorized.count(pub) == 1
    assert laptop.ssh_config.stat().st_mode & 0o777 == 0o600
    assert (laptop.install / "current" / "bin" / "interactive-slurm").exists()

    # Strict checking from the first connect: the CA line came over the verified connection.
    known = (laptop.home / ".config" / "interactive-slurm" / "known_hosts-slurm").read_text()
    assert known.startswith("@cert-authority *.interactive-slurm ssh-ed25519 ")
    result = laptop.ssh("-o", "BatchMode=yes", "slurm-cpu", "echo JOB=$SLURM_JOB_ID; hostname")
    assert result.returncode == 0, result.stderr
    jobs = my_jobs()
    assert len(jobs) == 1 and f"JOB={jobs[0]['id']}" in result.stdout

    # VS Code's pattern: bash on stdin, a SOCKS forward (-D), no tty.
    script = "echo vscode-ok $SLURM_JOB_ID\nexit 0\n"
    result = laptop.ssh("-o", "BatchMode=yes", "-T", "-D", str(_free_port()), "slurm-cpu", "bash",
                        input=script)
    assert result.returncode == 0, result.stderr
    assert f"vscode-ok {jobs[0]['id']}" in result.stdout and len(my_jobs()) == 1

    # Again: the key is used now (no password prompt), nothing changes, no second key line.
    config_before = laptop.ssh_config.read_bytes()
    backups = sorted(laptop.ssh_config.parent.glob("config.bak-*"))
    code, out = laptop.setup(*args, answers=[])
    assert code == 0, out
    assert "password" not in out.lower() and "already installed" in out
    assert laptop.ssh_config.read_bytes() == config_before
    assert sorted(laptop.ssh_config.parent.glob("config.bak-*")) == backups
    assert (CLUSTER_HOME / ".ssh" / "authorized_keys").read_text().count(pub) == 1

    # clusters lists it.
    listing = subprocess.run([str(TOOL), "clusters"], env=laptop.env, capture_output=True, text=True)
    assert listing.returncode == 0 and listing.stdout.startswith("slurm ")
    assert "slurm-cpu, slurm-gpu" in listing.stdout and f"127.0.0.1:{port}" in listing.stdout


def test_setup_with_2fa_keeps_user_files_and_shares_the_login(laptop: Laptop, login_node: LoginNode) -> None:
    port = login_node.tfa_port
    laptop.ssh_config.write_text(USER_SSH_CONFIG)
    code_dir = laptop.home / ".config" / "Code" / "User"
    code_dir.mkdir(parents=True)
    (code_dir / "settings.json").write_text(SETTINGS_JSONC)
    codium_dir = laptop.home / ".config" / "VSCodium" / "User"
    codium_dir.mkdir(parents=True)
    (codium_dir / "settings.json").write_text(BROKEN_JSON)
    args = ["127.0.0.1", "--port", str(port), "--user", laptop.env["USER"],
            "--install-dir", str(laptop.install), "--yes"]

    code, out = laptop.setup(*args, answers=[
        (r"\) Password: ", login_node.password),
        (r"One-time password", login_node.next_totp()),
    ])
    assert code == 0, out
    config = laptop.ssh_config.read_text()
    assert config.startswith("# BEGIN interactive-slurm slurm ")
    assert config.endswith("# END interactive-slurm slurm\n" + USER_SSH_CONFIG)
    assert "ControlMaster=auto" in config and "StrictHostKeyChecking yes" in config
    backups = list(laptop.ssh_config.parent.glob("config.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == USER_SSH_CONFIG
    settings = (code_dir / "settings.json").read_text()
    for kept in ("// my editor settings", "/* keep this */", '"other-host": "linux",'):
        assert kept in settings
    assert '"slurm-cpu": "linux"' in settings and '"remote.SSH.connectTimeout": 1800' in settings
    assert (codium_dir / "settings.json").read_text() == BROKEN_JSON
    assert "VSCodium" in out and "could not be edited safely" in out

    # As a terminal user's block (this ssh has no terminal): the session's master persists too.
    laptop.ssh_config.write_text(laptop.ssh_config.read_text().replace(' exec "test -t 2"', ""))
    # First connect: the login hop asks for the OTP once and becomes the shared connection.
    accepted = login_node.accepted_count(port)
    first = laptop.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID", otp=login_node.next_totp())
    assert first.returncode == 0, first.stderr
    assert login_node.accepted_count(port) == accepted + 1
    # Second connect (BatchMode: nothing could be asked): no new login to the login node.
    second = laptop.ssh("-o", "BatchMode=yes", "slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout and len(my_jobs()) == 1
    assert login_node.accepted_count(port) == accepted + 1
    # The whole path is shared: the laptop's master of slurm-cpu, over the login hop's master.
    check = laptop.ssh("-O", "check", "slurm-cpu")
    assert check.returncode == 0 and "Master running" in check.stderr

    # Uninstall: every file as it was, byte for byte.
    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--yes"], laptop.env, [], 60)
    assert code == 0, out
    assert f"closed the shared login connection to {laptop.env['USER']}@127.0.0.1 port {port}" in out
    assert not list((laptop.home / ".ssh" / "interactive-slurm-cm").iterdir())
    assert laptop.ssh_config.read_text() == USER_SSH_CONFIG
    assert (code_dir / "settings.json").read_text() == SETTINGS_JSONC
    assert (codium_dir / "settings.json").read_text() == BROKEN_JSON
    assert not (laptop.home / ".config" / "interactive-slurm" / "known_hosts-slurm").exists()
    assert not (laptop.home / ".config" / "interactive-slurm" / "config.toml").exists()


def test_a_hostile_login_node_cannot_change_the_laptops_ssh_options(laptop: Laptop,
                                                                    login_node: LoginNode) -> None:
    """Issue 17, item 1: the login node answers setup's probe with an install root that would
    be read as ssh options (agent and X11 forwarding to the login node) and a terminal escape.
    Setup refuses with one line that shows the value escaped, and writes no ssh config."""
    hostile = CLUSTER_HOME / f"hostile-python-{os.getpid()}"
    answer = ('{"python": [3, 11], "home": "/home/x", "root": "-AYKoSendEnv=x\\u001b]0;owned\\u0007",'
              ' "authorized": true, "current": null}')
    # It answers the probe's version check as a Python 3.11 would, and the probe with that.
    hostile.write_text(f"#!/bin/sh\ncase $1 in -c) echo 3.11.2; exit ;; esac\n"
                       f"cat <<'EOF'\n{answer}\nEOF\n")
    hostile.chmod(0o755)
    try:
        code, out = laptop.setup(
            "127.0.0.1", "--port", str(login_node.pw_port), "--user", laptop.env["USER"],
            "--install-dir", str(laptop.install), "--python", str(hostile), "--yes",
            answers=[(r"password: ", login_node.password)])  # --yes: a new key, no questions
    finally:
        hostile.unlink()
    assert code == 1, out
    assert r"answered root = '-AYKoSendEnv=x\x1b]0;owned\x07': not an absolute path" in out
    assert "\x1b]0;owned" not in out  # never printed raw
    assert not laptop.ssh_config.exists() and not laptop.install.exists()


def test_uninstalling_one_cluster_keeps_the_others_open_shell(laptop: Laptop,
                                                              login_node: LoginNode) -> None:
    """Issue 20, item 2: two clusters behind the same login host share one login connection;
    `setup --uninstall --name lab` must not close it under the other cluster's open shell."""
    port = str(login_node.pw_port)
    args = ["127.0.0.1", "--port", port, "--user", laptop.env["USER"], "--install-dir",
            str(laptop.install), "--yes", "--no-vscode"]
    code, out = laptop.setup(*args, answers=[(r"password: ", login_node.password)])
    assert code == 0, out
    code, out = laptop.setup(*args, "--name", "lab", answers=[])
    assert code == 0, out
    assert "Host lab-cpu" in laptop.ssh_config.read_text()
    shell = subprocess.Popen(
        ["ssh", "-F", str(laptop.ssh_config), "-o", "BatchMode=yes", "slurm-cpu",
         "echo started; sleep 20; echo still-alive"],
        env=laptop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert shell.stdout is not None and shell.stdout.readline().strip() == "started"
    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--name", "lab", "--yes"],
                           laptop.env, [], 60)
    assert code == 0, out
    assert (f"kept the shared login connection to {laptop.env['USER']}@127.0.0.1 port {port}: "
            "cluster slurm uses it too") in out
    rest, err = shell.communicate(timeout=60)
    assert shell.returncode == 0 and rest.strip() == "still-alive", err
    assert "Host lab-cpu" not in laptop.ssh_config.read_text()
    assert "Host slurm-cpu" in laptop.ssh_config.read_text()
