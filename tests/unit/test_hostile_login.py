"""A hostile or compromised login node answering setup's probe (issue 17, item 1): nothing it
sends may become an ssh option, a path outside the install, or a terminal escape."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from interactive_slurm.laptop import setup, sshconfig
from interactive_slurm.laptop.sshconfig import Block

GOOD: dict[str, Any] = {"python": [3, 11], "executable": "/usr/bin/python3.11", "home": "/home/alice",
                        "root": "/home/alice/.local/share/interactive-slurm",
                        "authorized": True, "current": None,
                        "space": {"free": 10 * 2**30, "inodes": 900_000}, "folders": []}


def answer(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def test_a_plain_answer_is_taken() -> None:
    found = setup.check_probe(answer(current="0.1.0-0123456789ab"), "login")
    assert found.root == GOOD["root"] and found.python == (3, 11)


@pytest.mark.parametrize(("changes", "named"), [
    ({"root": "-AYKoSendEnv=x"}, "root = '-AYKoSendEnv=x'"),
    ({"root": "relative/path"}, "root = 'relative/path'"),
    ({"root": "/opt/../etc"}, "root = '/opt/../etc'"),
    ({"root": "/opt/x y"}, "root = '/opt/x y'"),
    ({"root": "/opt/x'; touch /tmp/p; '"}, "root = "),
    ({"root": "/opt/\x1b[2J\x1b]0;owned\x07"}, r"root = '/opt/\x1b[2J\x1b]0;owned\x07'"),
    ({"root": ["/opt"]}, "root = ['/opt']"),
    ({"home": "/home/alice\n-oProxyCommand=evil"}, "home = "),
    ({"python": [3]}, "python = [3]"),
    ({"python": "3.11"}, "python = '3.11'"),
    ({"authorized": "yes"}, "authorized = 'yes'"),
    ({"current": "../../x"}, "current = '../../x'"),
    ({"current": 7}, "current = 7"),
])
def test_every_hostile_answer_is_refused_with_its_value_escaped(changes: dict[str, Any],
                                                               named: str) -> None:
    with pytest.raises(setup.SetupError) as info:
        setup.check_probe(answer(**changes), "login.example.org")
    message = str(info.value)
    assert message.startswith("login.example.org answered ") and named in message
    assert message.isprintable()  # no terminal escape reaches the user's terminal


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert setup.printable("ok \x1b[31mred\x07\r\n") == "ok \\x1b[31mred\\x07\\r\\n"


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's ssh client")
@pytest.mark.parametrize("root", ["/opt/interactive-slurm", "/home/a-b/.local/share/x+y@z,1"])
def test_no_accepted_install_root_changes_a_client_option(root: str) -> None:
    """``ssh -G`` on the ProxyCommand's own ssh: the remote command (with the install the login
    node named) gives exactly the options the same ssh gives without it."""
    setup.check_probe(answer(root=root), "login")
    block = Block(name="slurm", login="login.example.org", user="alice", port=22, jump=None,
                  identity="/home/alice/.ssh/id_ed25519", tool=f"{root}/current/bin/interactive-slurm",
                  known_hosts="/k", control_dir="/c", hosts=sshconfig.default_hosts("slurm"))
    argv = sshconfig.proxy_argv(block, "cpu")
    assert argv[-3:-1] == ["--", "login.example.org"]

    def options(args: list[str]) -> str:
        return subprocess.run(["ssh", "-F", "none", "-G", *args], capture_output=True, text=True,
                              check=True).stdout

    assert options(argv[1:]) == options(argv[1:-1])
    hostile = [*argv[1:-3], "login.example.org", "-AYKoSendEnv=x/current/bin/interactive-slurm"]
    assert options(hostile) != options(argv[1:-1])  # what `--` and the check keep out


@pytest.mark.parametrize("line", [
    "@cert-authority *.interactive-slurm ssh-ed25519 AAAA x\x1b]0;owned\x07",
    "@cert-authority * ssh-ed25519 AAAA",
    "@cert-authority *.interactive-slurm ssh-ed25519 AAAA\n@cert-authority * ssh-rsa BBBB",
    "*.interactive-slurm ssh-ed25519 AAAA",
])
def test_a_hostile_ca_line_is_refused_and_shown_escaped(line: str) -> None:
    with pytest.raises(setup.SetupError) as info:
        setup.check_ca_line(line, "login:tool")
    assert str(info.value).isprintable()
