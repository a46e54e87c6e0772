"""The srun transport behind a real firewall (issue 22): only Slurm's traffic reaches the node.

The firewall is iptables/ip6tables rules (``interactive-slurm-test-fault firewall-reject`` or
``firewall-drop``, through sudo as the fault tests do) that refuse (RST) or drop every new TCP
connection to the sessions' port range, while Slurm's own ports and connections already open
pass: what a site that lets only Slurm's traffic between login and compute nodes looks like.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REMOTE, Harness, my_jobs
from .test_connect import forward_round_trip, job_of
from .test_containers import MARKER, SSHD_IMAGE, profile
from .test_faults import fault, faults  # noqa: F401 - the fixture

# Every test here is a core test (pyproject.toml: `pytest -m core`, scripts/chroot-cluster).
pytestmark = pytest.mark.core

CHOSEN = "use the srun transport for the next 24 h"


@pytest.fixture(params=["reject", "drop"])
def firewall(request: pytest.FixtureRequest, faults: None) -> Iterator[str]:  # noqa: F811
    fault(f"firewall-{request.param}")
    try:
        yield request.param
    finally:
        fault("firewall-off")


def choices(h: Harness) -> dict[str, dict[str, object]]:
    data = json.loads((h.home / "state" / "transport.json").read_text())
    return data["choices"]  # type: ignore[no-any-return]


def timed_ssh(h: Harness, *command: str) -> tuple[float, str, str]:
    start = time.monotonic()
    result = h.ssh("slurm-cpu", *command)
    return time.monotonic() - start, result.stdout, result.stderr


def test_auto_finds_srun_behind_the_firewall_and_remembers_it(
    harness: Harness, firewall: str,
) -> None:
    first = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    [job] = my_jobs()
    assert f"JOB={job['id']}" in first.stdout
    assert first.stderr.count(CHOSEN) == 1, first.stderr
    why = "Connection refused" if firewall == "reject" else "no answer (filtered?)"
    assert "TCP to " in first.stderr and why in first.stderr
    record = json.loads((harness.home / "state" / "jobs" / job["id"] / "endpoint.json").read_text())
    [(key, entry)] = choices(harness).items()
    assert key == f"{record['cluster']}/{record['partition']}" and record["partition"], key
    assert f"partition {record['partition']}" in first.stderr
    assert entry["transport"] == "srun" and entry["job"] == job["id"]

    # The next connect goes straight to srun: no TCP try (for DROP, no 1.5 s wait), no line.
    took, out, err = timed_ssh(harness, "echo JOB=$SLURM_JOB_ID")
    assert f"JOB={job['id']}" in out and "TCP to" not in err and CHOSEN not in err, err
    if firewall == "drop":
        (harness.home / "state" / "transport.json").unlink()  # forgotten: the TCP try again
        took_again, _, err_again = timed_ssh(harness, "true")
        assert CHOSEN in err_again
        assert took_again - took > 1.0, (took, took_again)
    assert len(my_jobs()) == 1


def test_scp_forward_and_eight_connects_through_srun(
    harness: Harness, tmp_path: Path, faults: None,  # noqa: F811
) -> None:
    fault("firewall-reject")
    try:
        job = job_of(harness)
        payload = bytes(range(256)) * 4096 + bytes(range(255, -1, -1))
        src = tmp_path / "all-bytes.bin"
        src.write_bytes(payload)
        opts = ["-F", str(harness.ssh_config), "-o", "BatchMode=yes"]
        remote = tmp_path / "remote.bin"
        harness.run(["scp", *opts, str(src), f"slurm-cpu:{remote}"], check=True)
        back = tmp_path / "back.bin"
        harness.run(["scp", *opts, f"slurm-cpu:{remote}", str(back)], check=True)
        assert back.read_bytes() == payload
        assert forward_round_trip(harness, b"through srun ") == b"through srun ping"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: job_of(harness), range(8)))
        assert set(ids) == {job}
        assert [j["id"] for j in my_jobs()] == [job]
    finally:
        fault("firewall-off")


def test_tcp_forced_behind_the_firewall_names_it_and_leaves_no_job(
    harness: Harness, faults: None,  # noqa: F811
) -> None:
    harness.write_config('transport = "tcp"\n')
    fault("firewall-reject")
    try:
        result = harness.ssh("slurm-cpu", "true", check=False, timeout=180)
    finally:
        fault("firewall-off")
    assert result.returncode == 255
    assert "Connection refused; if a firewall lets only Slurm's traffic reach the compute " \
        "nodes, set transport = \"auto\" or \"srun\" in config.toml" in result.stderr
    assert "that this proxy submitted: its session cannot be reached" in result.stderr
    assert my_jobs() == [] or all(j["state"] in ("COMPLETING", "CANCELLED") for j in my_jobs())


def test_a_profile_with_transport_srun_listens_on_loopback_only(harness: Harness) -> None:
    harness.write_profile("default", 'transport = "srun"\n[cpu]\ntime = "1:00:00"\ncpus = 1\n'
                          'mem = "1G"\n[gpu]\ntime = "1:00:00"\ncpus = 1\nmem = "1G"\ngpus = 1\n')
    result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    [job] = my_jobs()
    assert f"JOB={job['id']}" in result.stdout
    record = json.loads((harness.home / "state" / "jobs" / job["id"] / "endpoint.json").read_text())
    assert record["transport"] == "srun" and record["socket"].endswith("/session.sock")
    assert record["node"] and record["partition"]
    log = harness.job_log(job["id"])
    assert "listening on" in log
    # Only loopback: the node's other addresses refuse the port.
    listening = harness.ssh("slurm-cpu", f"ss -Hltn sport = :{record['port']}").stdout
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addresses <= {"127.0.0.1", "[::1]"}, listening


def test_a_container_session_behind_the_firewall(harness: Harness, faults: None) -> None:  # noqa: F811
    if not SSHD_IMAGE.exists():
        pytest.fail("the test images are missing: run scripts/test-image as root", pytrace=False)
    harness.write_profile("default", profile(SSHD_IMAGE))
    fault("firewall-reject")
    try:
        out = harness.ssh("slurm-cpu", MARKER, timeout=300)
    finally:
        fault("firewall-off")
    assert "inside-test-image" in out.stdout and CHOSEN in out.stderr


def test_gpuswap_behind_the_firewall(harness: Harness, faults: None) -> None:  # noqa: F811
    """From inside the CPU session, `remote gpuswap` reaches the new GPU job's session through
    srun as well (the node's own `connect` takes the same transport decision)."""
    fault("firewall-reject")
    try:
        job = job_of(harness)
        swap = harness.ssh(
            "slurm-cpu", f"{REMOTE} gpuswap -- sh -c 'echo GPU job $SLURM_JOB_ID'", timeout=300)
    finally:
        fault("firewall-off")
    gpu = [j["id"] for j in my_jobs() if j["id"] != job]
    assert len(gpu) == 1 and f"GPU job {gpu[0]}" in swap.stdout, swap.stderr
