"""`setup` against login nodes as some clusters have them: an old `python3` (RHEL 8's 3.6), no
usable Python at all, Python only through `module load`, and a tiny home directory.

The login nodes are real sshds on 127.0.0.1 (scripts/login-node): 2224's `python3` is a stand-in
that answers the version check as Python 3.6.8 does and runs nothing else, next to the real
`python3.11`; 2225 has only that stand-in on its PATH; 2226 too, but its login shell's profile
defines `module` (as Lmod does) and `module load python3` puts python3.11 on PATH; 2227's home
is a 64 MiB tmpfs with 4096 inodes and `$SCRATCH` is a folder of the test user's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import LOGIN_ENV, LOGIN_HOST_KEY, REQUIRED, TOOL, LoginNode, cancel_all_and_wait, my_jobs
from .test_setup import CLUSTER_HOME, SETTINGS_JSONC, Laptop, laptop, run_on_pty  # noqa: F401


@dataclass(frozen=True)
class ProbeNodes:
    oldpy: int
    nopy: int
    module: int
    tiny: int
    old_python: str
    modules: str
    scratch: str


@pytest.fixture(scope="module")
def nodes(login_node: LoginNode) -> ProbeNodes:
    env = dict(line.split("=", 1) for line in LOGIN_ENV.read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    try:
        found = ProbeNodes(int(env["LOGIN_OLDPY_PORT"]), int(env["LOGIN_NOPY_PORT"]),
                           int(env["LOGIN_MODULE_PORT"]), int(env["LOGIN_TINY_PORT"]),
                           env["LOGIN_OLD_PYTHON"], env["LOGIN_MODULES"], env["LOGIN_SCRATCH"])
    except (KeyError, ValueError) as exc:
        problem = f"{LOGIN_ENV} lacks the probe's login nodes ({exc!r}): run scripts/login-node start"
        if REQUIRED:
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return found


def trust_ports(lap: Laptop, *ports: int) -> None:
    """The login nodes' host key for these ports, in the laptop's known_hosts and in the test
    user's real one (which the ProxyCommand's ssh reads)."""
    key = " ".join(LOGIN_HOST_KEY.read_text().split()[:2])
    lines = [f"[127.0.0.1]:{port} {key}" for port in ports]
    for path in (lap.home / ".ssh" / "known_hosts", CLUSTER_HOME / ".ssh" / "known_hosts"):
        have = path.read_text() if path.exists() else ""
        with open(path, "a") as fh:
            fh.write("".join(line + "\n" for line in lines if line not in have))


def setup_on(lap: Laptop, login_node: LoginNode, port: int, *args: str,
             password: bool = True) -> tuple[int, str]:
    """setup with --yes (a new key is made without a passphrase); ``password``: the login
    node asks for it (the laptop's key is not authorized there yet)."""
    return lap.setup("127.0.0.1", "--port", str(port), "--user", lap.env["USER"],
                     "--install-dir", str(lap.install), "--yes", *args,
                     answers=[(r"password: ", login_node.password)] if password else [])


def recorded(lap: Laptop) -> str:
    return (lap.home / ".config" / "interactive-slurm" / "config.toml").read_text()


def venv_cfg(lap: Laptop) -> str:
    return (lap.install / "current" / "pyvenv.cfg").read_text()


@pytest.fixture
def lap(laptop: Laptop, nodes: ProbeNodes) -> Iterator[Laptop]:  # noqa: F811
    trust_ports(laptop, nodes.oldpy, nodes.nopy, nodes.module, nodes.tiny)
    yield laptop


def test_an_old_python3_makes_setup_install_with_python3_11_and_say_so(
        lap: Laptop, login_node: LoginNode, nodes: ProbeNodes) -> None:
    code, out = setup_on(lap, login_node, nodes.oldpy)
    assert code == 0, out
    assert "cluster Python: /usr/bin/python3.11 (Python 3.11." in out
    assert (f"python3.11 on the login PATH); passed over: python3 is 3.6.8 at {nodes.old_python}; "
            "python3.13, python3.12 not found") in out
    # The install is a venv of python3.11, and the cluster table records it.
    cfg = venv_cfg(lap)
    assert "home = /usr/bin\n" in cfg and "version = 3.11." in cfg
    assert 'python = "/usr/bin/python3.11"' in recorded(lap)
    # Everything on the cluster runs with it: through this login node (whose python3 could not
    # run a line of the project) the proxy and a session work.
    result = lap.ssh("-o", "BatchMode=yes", "slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    assert result.returncode == 0, result.stderr
    jobs = my_jobs()
    assert len(jobs) == 1 and f"JOB={jobs[0]['id']}" in result.stdout
    # Removing the install runs with the recorded interpreter too (the stand-in could not).
    cancel_all_and_wait()
    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--remove-install", "--yes"],
                           lap.env, [], 120)
    assert code == 0, out
    assert f"removed 127.0.0.1:{lap.install}" in out and not lap.install.exists()


def test_with_no_usable_python_setup_fails_with_one_line_of_what_it_found(
        lap: Laptop, login_node: LoginNode, nodes: ProbeNodes) -> None:
    code, out = setup_on(lap, login_node, nodes.nopy)
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: no Python 3.9 or newer on 127.0.0.1: python3 is 3.6.8 at {nodes.old_python}; "
        "python3.13, python3.12, python3.11, python3.10, python3.9 not found; no `module` command "
        "in the login shell. Make one reachable in your login (for example `module load "
        "python/3.11` in ~/.bashrc, or your site's Python 3 package), or pass --python "
        "/path/to/python3.9-or-newer"], out
    assert not lap.ssh_config.exists() and not lap.install.exists()
    # --python names one that is not there: said so; an absolute path that works still wins.
    code, out = setup_on(lap, login_node, nodes.nopy, "--python", "python3.11")
    assert code == 1 and "--python python3.11: not found on 127.0.0.1's PATH" in out, out
    code, out = setup_on(lap, login_node, nodes.nopy, "--python", "/usr/bin/python3.11", "--dry-run")
    assert code == 0, out
    assert "cluster Python: /usr/bin/python3.11 (Python 3.11." in out
    assert "from --python /usr/bin/python3.11)" in out and "would install" in out


def test_the_login_shells_module_command_is_used_when_no_python3_x_is_on_path(
        lap: Laptop, login_node: LoginNode, nodes: ProbeNodes) -> None:
    code, out = setup_on(lap, login_node, nodes.module)
    assert code == 0, out
    python = f"{nodes.modules}/python3/bin/python3"
    assert f"cluster Python: {python} (Python 3.11." in out
    assert ("from `module load python3`, runs without the module loaded); passed over: python3 is "
            f"3.6.8 at {nodes.old_python}; python3.13, python3.12, python3.11, python3.10, python3.9 "
            "not found") in out
    assert f"home = {nodes.modules}/python3/bin\n" in venv_cfg(lap)
    assert f'python = "{python}"' in recorded(lap)


def test_a_tiny_home_puts_vscodes_server_in_scratch_and_uninstall_restores_the_settings(
        lap: Laptop, login_node: LoginNode, nodes: ProbeNodes) -> None:
    settings = lap.home / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(SETTINGS_JSONC)
    code, out = setup_on(lap, login_node, nodes.tiny)
    assert code == 0, out
    assert "your home on 127.0.0.1 has 6" in out and " MiB and 4," in out  # 64 MiB, 4096 inodes
    assert f"it goes to $SCRATCH = {nodes.scratch} (remote.SSH.serverInstallPath)" in out
    text = settings.read_text()
    for host in ("slurm-cpu", "slurm-gpu"):
        assert f'"{host}": "{nodes.scratch}"' in text
    assert '"remote.SSH.serverInstallPath": {' in text and "/* keep this */" in text
    assert f'vscode_server = "{nodes.scratch}"' in recorded(lap)

    # A folder of the user's own, asked for: it replaces setup's earlier one.
    own = Path(tempfile.mkdtemp(prefix="vscs", dir="/tmp"))
    try:
        code, out = setup_on(lap, login_node, nodes.tiny, "--vscode-server-dir", str(own),
                             password=False)
        assert code == 0, out
        assert f"VS Code's server on 127.0.0.1: {own}/.vscode-server" in out
        assert f'"slurm-cpu": "{own}"' in settings.read_text()
        assert nodes.scratch not in settings.read_text()
        # One that is not the user's is refused, and nothing changes.
        before = settings.read_bytes()
        code, out = setup_on(lap, login_node, nodes.tiny, "--vscode-server-dir", "/srv",
                             password=False)
        assert code == 1 and "--vscode-server-dir /srv is not yours on 127.0.0.1" in out, out
        assert settings.read_bytes() == before
    finally:
        os.rmdir(own)

    code, out = run_on_pty([str(TOOL), "setup", "--uninstall", "--yes"], lap.env, [], 60)
    assert code == 0, out
    assert settings.read_text() == SETTINGS_JSONC


def test_the_test_login_nodes_are_what_they_claim(lap: Laptop, nodes: ProbeNodes) -> None:
    """The set-up itself: each node's `python3` answers as 3.6, python3.11 is hidden where it
    should be, and the tiny home is small (read through a login with the test user's key)."""
    key = str(Path.home() / ".ssh" / "id_ed25519")

    def on(port: int, command: str) -> str:
        result = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key, "-o",
             f"UserKnownHostsFile={lap.home / '.ssh' / 'known_hosts'}", "-p", str(port),
             "127.0.0.1", command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    for port in (nodes.oldpy, nodes.nopy, nodes.module):
        assert on(port, "python3 -V; command -v python3") == f"Python 3.6.8\n{nodes.old_python}\n"
    assert on(nodes.oldpy, "command -v python3.11") == "/usr/bin/python3.11\n"
    assert on(nodes.nopy, "command -v python3.11 || echo none") == "none\n"
    assert on(nodes.module, "bash -lc 'module load python3 && python3 -V'").startswith("Python 3.11.")
