"""TUTORIAL.md walked as a new laptop user would (issue 20): a key with a passphrase held by
ssh-agent, setup against the password + TOTP login node (no passphrase asked), `ssh slurm-cpu`,
VS Code's settings, a second cluster set up without the agent (the passphrase asked once), the
second cluster uninstalled while the first one's shell stays open, then everything uninstalled
and every file of the laptop compared byte for byte (and mode for mode) with before."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TOOL, LoginNode, my_jobs
from .test_setup import Laptop, laptop, run_on_pty  # noqa: F401  (the fixture)

PASSPHRASE = "correct horse battery staple"
MY_SSH_CONFIG = "Host *\n  ConnectTimeout 5\n  ServerAliveInterval 60\n"
MY_SETTINGS = '{\n    "remote.SSH.connectTimeout": 60, // mine\n    "editor.fontSize": 13\n}\n'


#: What the test itself leaves in the laptop's home (the OTP answered through SSH_ASKPASS).
TEST_FILES = ("askpass", "otp", "prompts")


def files_of(home: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``home`` (sockets, the agent's folder and the test's own files aside):
    content and mode."""
    found = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.is_symlink() and "agent" not in path.parts \
                and str(path.relative_to(home)) not in TEST_FILES:
            found[str(path.relative_to(home))] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture
def agent(laptop: Laptop) -> Iterator[str]:  # noqa: F811
    folder = laptop.home / "agent"
    folder.mkdir(mode=0o700)
    sock = folder / "sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_tutorial_as_a_new_laptop_user(laptop: Laptop, login_node: LoginNode,  # noqa: F811
                                           agent: str) -> None:
    if shutil.which("ssh-add") is None:
        pytest.fail("OpenSSH's ssh-add is missing")
    # The laptop as the user has it: a key with a passphrase, an ssh config and VS Code's
    # settings of their own (a short connectTimeout, a 0644 file).
    key = laptop.home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "me@laptop",
                    "-f", str(key)], check=True)
    laptop.ssh_config.write_text(MY_SSH_CONFIG)
    settings = laptop.home / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(MY_SETTINGS)
    settings.chmod(0o644)
    before = files_of(laptop.home)
    askpass = laptop.home / "agent" / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
    askpass.chmod(0o700)
    with_agent = {**laptop.env, "SSH_AUTH_SOCK": agent}
    subprocess.run(["ssh-add", "-q", str(key)], check=True, stdin=subprocess.DEVNULL,
                   env={**with_agent, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
                        "DISPLAY": ":0"})

    # 2. setup against the password + TOTP login node: the agent's key, so no passphrase.
    plain_env = laptop.env
    laptop.env = with_agent
    code, out = laptop.setup("127.0.0.1", "--port", str(login_node.tfa_port), "--user",
                             laptop.env["USER"], "--install-dir", str(laptop.install), answers=[
                                 (r"\) Password: ", login_node.password),
                                 (r"One-time password", login_node.next_totp())])
    assert code == 0, out
    assert "Passphrase for" not in out and "done: try `ssh slurm-cpu`" in out
    assert '"remote.SSH.connectTimeout": 1800' in settings.read_text()

    # 3. ssh slurm-cpu: a shell in a job, despite the user's own `ConnectTimeout 5`.
    first = laptop.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID", otp=login_node.next_totp())
    assert first.returncode == 0, first.stderr
    job = first.stdout.strip().removeprefix("JOB=")
    assert [j["id"] for j in my_jobs()] == [job]

    # 5. A second cluster, set up without the agent: the passphrase is asked, once.
    laptop.env = plain_env
    code, out = laptop.setup("127.0.0.1", "--port", str(login_node.pw_port), "--user",
                             laptop.env["USER"], "--install-dir", str(laptop.install), "--name",
                             "lab", answers=[(rf"Passphrase for {key}", PASSPHRASE)])
    assert code == 0, out
    assert out.count("Passphrase for") == 1 and "password:" not in out.lower()
    laptop.env = with_agent
    assert laptop.ssh("-o", "BatchMode=yes", "lab-cpu", "true").returncode == 0

    # A shell of the first cluster stays open while the second is uninstalled.
    shell = subprocess.Popen(["ssh", "-F", str(laptop.ssh_config), "-o", "BatchMode=yes",
                              "slurm-cpu", "echo started; sleep 15; echo still-here"],
                             env=laptop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert shell.stdout is not None and shell.stdout.readline().strip() == "started"
    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--name", "lab", "--yes"],
                           laptop.env, [], 60)
    assert code == 0, out
    rest, err = shell.communicate(timeout=60)
    assert shell.returncode == 0 and rest.strip() == "still-here", err

    # 9. Uninstall all: every file of the laptop as it was, byte for byte, mode for mode.
    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--yes"], laptop.env, [], 60)
    assert code == 0, out
    after = files_of(laptop.home)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not [p for p in (laptop.home / ".ssh" / "interactive-slurm-cm").glob("*")]
