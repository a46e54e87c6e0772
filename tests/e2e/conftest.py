"""End-to-end fixtures: the real local Slurm cluster (scripts/local-cluster), the real OpenSSH.

These tests run as an unprivileged user (``scripts/test`` runs them as ``isuser``). In CI, or with
``INTERACTIVE_SLURM_E2E=1``, a cluster that is not usable FAILS the tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import shutil
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


def my_jobs() -> list[dict[str, str]]:
    out = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%i|%j|%T|%r"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [dict(zip(("id", "name", "state", "reason"), r)) for r in rows]


def cancel_all_and_wait(timeout: float = 60) -> None:
    subprocess.run(["scancel", "--me"], check=False)
    deadline = time.monotonic() + timeout
    while my_jobs():
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not leave the queue: {my_jobs()}")
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

    def write_config(self, text: str) -> None:
        path = self.home / "config" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def write_profile(self, name: str, text: str) -> Path:
        path = self.home / "config" / "profiles" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


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
    cfg_text = subprocess.run(
        [str(TOOL), "ssh-config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(cfg_text)
    h = Harness(home, env, ssh_config)
    yield h
    cancel_all_and_wait()
