"""Faults of the Slurm side while a proxy waits (issue 8): slurmctld stopped, node DOWN.

They stop and start the cluster's daemons through the root-owned helper that ``scripts/test``
installs (``sudo -n interactive-slurm-test-fault VERB``), and skip without it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .conftest import REQUIRED, Harness, delayed_profile, my_jobs, wait_for

FAULT = "/usr/local/sbin/interactive-slurm-test-fault"

# Starts 25 s after submission: pending (BeginTime) while slurmctld is away, then runs.
SOON = delayed_profile("now+25", "Starts 25 s after it is submitted.")


def fault(verb: str) -> None:
    subprocess.run(["sudo", "-n", FAULT, verb], check=True, timeout=60)


@pytest.fixture
def faults() -> None:
    if shutil.which("sudo") is None or subprocess.run(
        ["sudo", "-n", "-l", FAULT, "node-resume"], capture_output=True
    ).returncode != 0:
        message = f"{FAULT} is not allowed through sudo (scripts/test installs it)"
        if REQUIRED:  # in CI a fault test that cannot run fails
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@contextmanager
def slurmctld_stopped() -> Iterator[None]:
    fault("slurmctld-stop")
    try:
        yield
    finally:
        fault("slurmctld-start")


def test_slurmctld_stopped_while_waiting_is_retried_and_the_wait_goes_on(
    harness: Harness, faults: None
) -> None:
    harness.write_profile("soon", SOON)
    proc = harness.proxy("cpu", "--profile", "soon")
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    try:
        [job] = wait_for(lambda: my_jobs(), 60, "the submitted job")
        with slurmctld_stopped():
            time.sleep(30)
            assert proc.poll() is None, proc.stderr.read()
        banner = proc.stdout.readline()  # the job starts once slurmctld is back and begin passed
        assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert f"job {job['id']}: Slurm is not answering (retrying)" in err
    assert "Traceback" not in err
    assert [j["id"] for j in my_jobs()] == [job["id"]]  # no second job


@contextmanager
def node_down(slurmd: bool) -> Iterator[None]:
    if slurmd:
        fault("slurmd-stop")
    fault("node-down")
    try:
        yield
    finally:
        if slurmd:
            fault("slurmd-start")
        fault("node-resume")
        wait_for(lambda: subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                        text=True).stdout.split() == ["idle"], 90, "the node")


@pytest.mark.parametrize("slurmd", [False, True], ids=["node-down", "slurmd-killed"])
def test_node_down_is_a_clear_error_and_works_again_when_back(
    harness: Harness, faults: None, slurmd: bool
) -> None:
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    with node_down(slurmd):
        started = time.monotonic()
        result = harness.ssh("slurm-cpu", "true", check=False, timeout=90)
        assert time.monotonic() - started < 30, result.stderr
        assert result.returncode == 255
        assert f"cannot start: no node of partition debug takes jobs now ({node} is DOWN" \
            in result.stderr, result.stderr
        wait_for(lambda: not my_jobs(), 30, "the pending job it submitted to be cancelled")
    out = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID").stdout
    assert "JOB=" in out


def rpcs_by_me() -> int:
    """This user's slurmctld RPC count so far (sdiag; its own call shows in the next one)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    section = out.split("statistics by user", 1)[1]
    match = re.search(rf"^\s*{re.escape(user)}\s+\(\s*\d+\)\s+count:(\d+)", section, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_a_job_in_a_down_partition_costs_at_most_ten_rpcs_in_its_first_minute(
    harness: Harness, faults: None,
) -> None:
    """Issue 20, item 6: 13 slurmctld RPCs in the first minute of a job queued in a DOWN
    partition, the abort included (a partition that is down may come back: it waits)."""
    harness.write_profile("shortq", 'partition = "short"\n[cpu]\ntime = "0:30:00"\ncpus = 1\n'
                          'mem = "1G"\n[gpu]\ntime = "0:30:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
    fault("partition-down")
    try:
        before = rpcs_by_me()
        proxy = harness.proxy("cpu", "--profile", "shortq")
        time.sleep(60)
        assert proxy.poll() is None  # still waiting: the partition may come back
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(60)
        assert proxy.stderr is not None
        err = proxy.stderr.read().decode()
        assert "PartitionDown" in err and "cancelled pending job" in err
        used = rpcs_by_me() - before - 1  # the first sdiag's own RPC
        assert used <= 10, f"{used} slurmctld RPCs"
    finally:
        fault("partition-up")
    wait_for(lambda: not my_jobs(), 60, "the cancelled job to go")
