"""End-to-end fixtures: the real local Slurm cluster (scripts/local-cluster), the real OpenSSH,
and the test login nodes on 127.0.0.1 (scripts/login-node).

These tests run as an unprivileged user (``scripts/test`` runs them as ``isuser``). In CI, or with
``INTERACTIVE_SLURM_E2E=1``, a cluster that is not usable FAILS the tests; elsewhere they skip.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRED = bool(os.environ.get("CI") or os.environ.get("INTERACTIVE_SLURM_E2E"))
BIN = Path(sys.executable).parent
TOOL = BIN / "interactive-slurm"
REMOTE = BIN / "remote"


def _cluster_problem() -> str | None:
    if os.getuid() == 0:
        return "end-to-end tests must run as an unprivileged user (use scripts/test)"
    if not TOOL.exists():
        return f"{TOOL} is not installed (pip install . into this interpreter's environment)"
    for tool in ("sinfo", "sbatch", "ssh", "scp", "sftp", "rsync"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run scripts/local-cluster start as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no usable node: sinfo said {out.stdout.strip() or out.stderr.strip()!r}"
    if not (Path.home() / ".ssh" / "id_ed25519").exists():
        return "the test user has no ~/.ssh/id_ed25519 (scripts/local-cluster makes it)"
    return None


@pytest.fixture(scope="session")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        if REQUIRED:
            pytest.fail(f"local Slurm cluster not usable: {problem}", pytrace=False)
        pytest.skip(f"local Slurm cluster not usable: {problem}")


def my_jobs(user: str = "") -> list[dict[str, str]]:
    """The test user's jobs (or ``user``'s)."""
    who = ["-u", user] if user else ["--me"]
    out = subprocess.run(
        ["squeue", *who, "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [dict(zip(("id", "name", "state", "reason"), r)) for r in rows]


def cancel_all_and_wait(timeout: float = 60, user: str = "") -> None:
    """Cancel every job of the test user (or of ``user``, acted as through sudo) and wait."""
    # `--user NAME`, not `--me`: scancel has `--me` only from Slurm 21.08 on.
    subprocess.run([*(["sudo", "-n", "-u", user] if user else []), "scancel", "--user",
                    user or getpass.getuser()], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while my_jobs(user):
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not leave the queue: {my_jobs(user)}")
        time.sleep(0.5)


def wait_for(predicate, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Harness:
    home: Path
    env: dict[str, str]
    ssh_config: Path

    def run(self, argv: list[str], *, timeout: float = 120, check: bool = False,
            **kw: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, **kw  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{argv} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def ssh(self, host: str, *command: str, check: bool = True, timeout: float = 120,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return self.run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", *options, host,
                         *command], check=check, timeout=timeout)

    def tool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([str(TOOL), *args], check=check)

    def remote(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([str(REMOTE), *args], check=check)

    def sessions(self) -> list[dict[str, object]]:
        return json.loads(self.remote("list", "--json").stdout)  # type: ignore[no-any-return]

    def proxy(self, kind: str = "cpu", *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(TOOL), "proxy", kind, *args], env={**self.env, **(env or {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def write_file(self, path: Path, text: str) -> None:
        """Write ``path`` (and its folders) as this harness's user."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def read_file(self, path: Path) -> str:
        """Read ``path`` as this harness's user."""
        return path.read_text()

    def write_config(self, text: str) -> None:
        self.write_file(self.home / "config" / "config.toml", text)

    def write_profile(self, name: str, text: str) -> Path:
        path = self.home / "config" / "profiles" / f"{name}.toml"
        self.write_file(path, text)
        return path

    def job_log(self, job: str) -> str:
        """The session log of ``job``."""
        return self.read_file(self.home / "state" / "logs" / f"job-{job}.log")


@pytest.fixture
def harness(cluster: None, tmp_path: Path) -> Iterator[Harness]:
    cancel_all_and_wait()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "INTERACTIVE_SLURM_HOME": str(home),
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    env.pop("SLURM_JOB_ID", None)
    # One connection per ssh (no master): the tests watch each connect's proxy and its stderr;
    # tests/e2e/test_multiplex.py writes the default (shared) entries.
    cfg_text = subprocess.run(
        [str(TOOL), "ssh-config", "--no-multiplex"], env=env, capture_output=True, text=True,
        check=True,
    ).stdout
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(cfg_text)
    h = Harness(home, env, ssh_config)
    yield h
    cancel_all_and_wait()


# ----------------------------------------------------------------------------------------------
# The second, hostile user: ``isother``, in the lab group ``islab`` with the test user;
# scripts/test lets the test user act as her through sudo.

OTHER = "isother"


def as_other(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sudo", "-n", "-u", OTHER, *argv], capture_output=True, text=True,
                          **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def other_user() -> None:
    if as_other("true").returncode != 0:
        pytest.fail("cannot act as the second user isother (scripts/test sets up sudo for it)")


@dataclass
class OtherHarness(Harness):
    """The second user's own set-up: her tool home (a 0700 folder of hers), ssh config and
    host CA, her ``~/.ssh`` key; every command runs as her (sudo) with only ``env``."""

    def run(self, argv: list[str], *, timeout: float = 120, check: bool = False,
            **kw: object) -> subprocess.CompletedProcess[str]:
        as_her = ["sudo", "-n", "-u", OTHER, "env", "-i", *(f"{k}={v}" for k, v in self.env.items())]
        return super().run([*as_her, *argv], timeout=timeout, check=check, **kw)

    def write_file(self, path: Path, text: str) -> None:
        self.run(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', "sh", str(path)],
                 input=text, check=True)

    def read_file(self, path: Path) -> str:
        return self.run(["cat", "--", str(path)], check=True).stdout


@pytest.fixture
def other_harness(cluster: None, other_user: None) -> Iterator[OtherHarness]:
    """The second user with an interactive-slurm set-up of her own, to run her own sessions;
    her jobs are cancelled before and after, and her tool home removed."""
    cancel_all_and_wait(user=OTHER)
    home = Path(as_other("mktemp", "-d", check=True).stdout.strip())
    env = {"HOME": os.path.expanduser(f"~{OTHER}"), "USER": OTHER, "LOGNAME": OTHER,
           "LANG": "C.UTF-8", "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
           "INTERACTIVE_SLURM_HOME": str(home)}
    her = OtherHarness(home, env, home / "ssh_config")
    try:
        her.write_file(her.ssh_config, her.tool("ssh-config", "--no-multiplex").stdout)
        yield her
    finally:
        cancel_all_and_wait(user=OTHER)
        as_other("chmod", "-R", "u+w", str(home))  # unpacked images have read-only folders
        as_other("rm", "-rf", str(home))


# ----------------------------------------------------------------------------------------------
# The test login nodes (scripts/login-node): two sshds on 127.0.0.1 for the laptop-side tests.

LOGIN_ENV = Path("/etc/interactive-slurm-tests/login.env")
LOGIN_HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key.pub")
# The highest TOTP time step handed out by LoginNode.next_totp (shared by all test runs of this user).
TOTP_STATE = Path.home() / ".cache" / "interactive-slurm-tests" / "totp-step"
TOTP_PERIOD = 30
_ACCEPTED = re.compile(r"^Accepted \S+ for ", re.MULTILINE)


def totp_code(secret_hex: str, at: float, digits: int = 6, period: int = TOTP_PERIOD) -> str:
    """RFC 6238 TOTP with HMAC-SHA1 (RFC 4226 dynamic truncation) for the time ``at``."""
    counter = int(at) // period
    mac = hmac.new(bytes.fromhex(secret_hex), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


@dataclass(frozen=True)
class LoginNode:
    """The test login nodes: ``pw_port`` takes a public key or the password; ``tfa_port`` asks,
    by keyboard-interactive, for the password and then a TOTP code, or only the code after an
    accepted public key. Both serve only the host key in /etc/ssh/ssh_host_ed25519_key.pub."""

    host: str
    pw_port: int
    tfa_port: int
    password: str
    totp_hex: str
    log_pw: Path
    log_2fa: Path
    totp_window: int = 1

    def totp(self, at: float | None = None) -> str:
        """The TOTP code for the time ``at`` (default: now). For logins use ``next_totp``."""
        return totp_code(self.totp_hex, time.time() if at is None else at)

    def next_totp(self) -> str:
        """A code that pam_oath will accept once: it refuses a code whose time step is not later
        than the last one it accepted, so every call (in any test run of this user) gets a later
        step: now, or up to totp_window - 1 steps ahead, else it waits for the clock. Use it for
        every login to ``tfa_port``; a code from ``totp()`` may be refused as a replay."""
        TOTP_STATE.parent.mkdir(parents=True, exist_ok=True)
        with open(TOTP_STATE, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read().strip()
            last = int(text) if text.isdigit() else -1
            step = max(int(time.time()) // TOTP_PERIOD, last + 1)
            while step > int(time.time()) // TOTP_PERIOD + self.totp_window - 1:
                time.sleep(TOTP_PERIOD - time.time() % TOTP_PERIOD + 0.1)
            f.seek(0)
            f.truncate()
            f.write(f"{step}\n")
            f.flush()
        return self.totp(at=step * TOTP_PERIOD)

    def log(self, port: int) -> Path:
        if port == self.pw_port:
            return self.log_pw
        if port == self.tfa_port:
            return self.log_2fa
        raise ValueError(f"no test login node on port {port}")

    def accepted_count(self, port: int) -> int:
        """How many logins that port's sshd accepted so far: its "Accepted METHOD for USER" lines
        (not the "Accepted key ... found at" lines LogLevel VERBOSE adds for each key check)."""
        return len(_ACCEPTED.findall(self.log(port).read_text(errors="replace")))

    def known_hosts_lines(self) -> str:
        """known_hosts lines for both ports, from the host key file (no ssh-keyscan)."""
        key = " ".join(LOGIN_HOST_KEY.read_text().split()[:2])
        return "".join(f"[{self.host}]:{port} {key}\n" for port in (self.pw_port, self.tfa_port))


def _ssh_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.settimeout(10)
            return sock.recv(8).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _login_node() -> tuple[LoginNode | None, str]:
    if os.getuid() == 0:
        return None, "end-to-end tests must run as an unprivileged user (use scripts/test)"
    try:
        text = LOGIN_ENV.read_text()
    except OSError as e:
        return None, f"cannot read {LOGIN_ENV} ({e.strerror}): run scripts/login-node start as root"
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    try:
        pw_port, tfa_port = int(env["LOGIN_PW_PORT"]), int(env["LOGIN_2FA_PORT"])
        node = LoginNode(
            host="127.0.0.1", pw_port=pw_port, tfa_port=tfa_port,
            password=env["LOGIN_PASSWORD"], totp_hex=env["LOGIN_TOTP_HEX"],
            log_pw=Path(f"/var/log/interactive-slurm-login-{pw_port}.log"),
            log_2fa=Path(f"/var/log/interactive-slurm-login-{tfa_port}.log"),
            totp_window=int(env.get("LOGIN_TOTP_WINDOW", "1")),
        )
    except (KeyError, ValueError) as e:
        return None, f"{LOGIN_ENV} is incomplete ({e!r}): run scripts/login-node start as root"
    for path in (node.log_pw, node.log_2fa, LOGIN_HOST_KEY):
        if not os.access(path, os.R_OK):
            return None, f"cannot read {path}: run scripts/login-node start as root"
    for port in (node.pw_port, node.tfa_port):
        if not _ssh_answers(node.host, port):
            return None, f"no sshd answers on {node.host}:{port}: run scripts/login-node start as root"
    return node, ""


@pytest.fixture(scope="session")
def login_node() -> LoginNode:
    node, problem = _login_node()
    if node is None:
        if REQUIRED:
            pytest.fail(f"test login nodes not usable: {problem}", pytrace=False)
        pytest.skip(f"test login nodes not usable: {problem}")
    return node


def delayed_profile(begin: str, description: str) -> str:
    """A small profile whose jobs may start only at ``begin`` (sbatch --begin), e.g. now+25."""
    return (f'description = "{description}"\nextra = ["--begin={begin}"]\n'
            '[cpu]\ntime = "00:10:00"\ncpus = 1\nmem = "1G"\n'
            '[gpu]\ntime = "00:10:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
