"""A session's lifetime on the real cluster (issue 8): idle auto-cancel, walltime warnings, the
time limit with a shell open, and signals to the proxy mid-transfer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import Harness, my_jobs, wait_for


def profile(time_limit: str, extra: str = "") -> str:
    return (f"{extra}[cpu]\ntime = \"{time_limit}\"\ncpus = 1\nmem = \"1G\"\n"
            f"[gpu]\ntime = \"{time_limit}\"\ncpus = 1\nmem = \"1G\"\ngpus = 1\n")


def use_profile(harness: Harness, name: str, text: str) -> None:
    harness.write_profile(name, text)
    harness.write_config(f'default_profile = "{name}"\n')


def job_log(harness: Harness, job: str) -> str:
    return (harness.home / "state" / "logs" / f"job-{job}.log").read_text(errors="replace")


def state_of(job: str) -> str:
    return next((j["state"] for j in my_jobs() if j["id"] == job), "")


def shell(harness: Harness, command: str, *, tty: bool = False,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes", *(["-tt"] if tty else []),
         "slurm-cpu", command],
        env={**harness.env, **(env or {})}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_idle_session_cancels_its_own_job_and_an_open_connection_keeps_it(
    harness: Harness,
) -> None:
    use_profile(harness, "idle", profile("00:10:00", 'idle_timeout = "8s"\n'))
    held = shell(harness, "echo $SLURM_JOB_ID; sleep 16")
    assert held.stdout is not None
    job = held.stdout.readline().decode().strip()
    time.sleep(12)  # longer than idle_timeout, with a connection open all along
    assert state_of(job) == "RUNNING"
    held.communicate(timeout=30)
    closed = time.monotonic()
    wait_for(lambda: state_of(job) != "RUNNING", 40, "the idle job to end")
    assert time.monotonic() - closed < 20
    log = job_log(harness, job)
    assert "no SSH connection for 8 s (idle_timeout of profile idle); cancelling job" in log
    wait_for(lambda: not my_jobs(), 60, "the job to leave the queue")
    assert (harness.home / "state" / "jobs" / job / "ended").read_text().startswith(
        "was cancelled after 8 s without an SSH connection")


def test_short_job_warns_the_proxy_and_open_shells(harness: Harness) -> None:
    use_profile(harness, "short", profile("1"))
    # The session's own lead time: 45 s before the end instead of 10 min (not seen by shells).
    env = {"INTERACTIVE_SLURM_WARN_BEFORE": "45"}
    first = shell(harness, "echo $SLURM_JOB_ID; env | grep -c WARN_BEFORE; sleep 40", tty=True,
                  env=env)
    assert first.stdout is not None
    job = first.stdout.readline().decode().strip()
    assert first.stdout.readline().decode().strip() == "0"
    again = harness.ssh("slurm-cpu", "true")  # the fast path: from the record, no Slurm query
    assert f"job {job} has less than a minute left before its time limit" in again.stderr
    out, err = first.communicate(timeout=120)
    assert f"job {job} has less than a minute left before its time limit" in err.decode()
    assert f"interactive-slurm: job {job} reaches its time limit in" in out.decode()
    assert "told 1 open shell(s)" in job_log(harness, job)


def test_open_shell_ends_with_the_reason_when_the_job_reaches_its_time_limit(
    harness: Harness,
) -> None:
    use_profile(harness, "short", profile("1"))
    held = shell(harness, "echo $SLURM_JOB_ID; sleep 300")
    assert held.stdout is not None
    job = held.stdout.readline().decode().strip()
    ended_at: list[float] = []

    def watch() -> None:  # when Slurm stops calling the job RUNNING
        while held.poll() is None and not ended_at:
            if state_of(job) != "RUNNING":
                ended_at.append(time.monotonic())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = held.communicate(timeout=180)
    done = time.monotonic()
    watcher.join(5)
    assert f"session ended: job {job} reached its time limit" in err.decode()
    if not ended_at:  # the shell ended before the watcher saw the job leave RUNNING
        wait_for(lambda: state_of(job) != "RUNNING", 60, "the job to leave RUNNING")
        ended_at.append(time.monotonic())
    # The shell ended within seconds of the job's end (or before Slurm's state showed it).
    assert done - ended_at[0] < 10
    wait_for(lambda: not my_jobs(), 60, "the job to leave the queue")
    assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip() not in ("", job)


def proxy_of(ssh_pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(ssh_pid)], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        with contextlib.suppress(OSError):
            # The proxy, or the lean relay a proxy that waited for the job became (same pid).
            if any(word in Path(f"/proc/{pid}/cmdline").read_bytes() for word in (b"proxy",
                                                                               b"relay-fd")):
                return pid
    return 0


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM],
                         ids=["SIGHUP", "SIGPIPE", "SIGTERM"])
def test_signal_to_the_proxy_mid_transfer_exits_promptly_and_keeps_the_running_job(
    harness: Harness, signum: int,
) -> None:
    pump = shell(harness, "echo $SLURM_JOB_ID; cat /dev/zero")
    assert pump.stdout is not None
    job = pump.stdout.readline().decode().strip()
    moved = [0]

    def drain() -> None:
        assert pump.stdout is not None
        while chunk := pump.stdout.read1(1 << 20):  # type: ignore[attr-defined]
            moved[0] += len(chunk)

    threading.Thread(target=drain, daemon=True).start()
    wait_for(lambda: moved[0] > 10 << 20, 30, "data to flow")
    proxy = wait_for(lambda: proxy_of(pump.pid), 10, "the proxy process")
    try:
        os.kill(proxy, signum)
        start = time.monotonic()
        wait_for(lambda: gone(proxy), 10, "the proxy to exit")
        assert time.monotonic() - start < 2
        pump.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            pump.kill()
    time.sleep(1)
    assert state_of(job) == "RUNNING"  # this proxy submitted it, but it was running: kept
    assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip() == job
