"""The proxy's contract: only SSH bytes on stdout, honest waiting, no orphaned or stolen jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Harness, delayed_profile, my_jobs, wait_for

LATER = delayed_profile("now+3600", "Starts in an hour: stays PENDING (BeginTime) for the test.")


def read_banner(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return proc.stdout.readline()


@pytest.mark.core
def test_stdout_carries_only_ssh_bytes_on_slow_and_fast_path(harness: Harness) -> None:
    for _ in ("slow", "fast"):
        proc = harness.proxy("cpu")
        try:
            banner = read_banner(proc)
            assert banner.startswith(b"SSH-2.0-OpenSSH"), banner
        finally:
            assert proc.stdin is not None and proc.stderr is not None
            proc.stdin.close()  # half-close: sshd ends the connection, the proxy exits
            proc.wait(timeout=30)
            err = proc.stderr.read()
        assert proc.returncode == 0, err
    assert len(my_jobs()) == 1


def held_proxy(harness: Harness, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    harness.write_profile("later", LATER)
    proc = harness.proxy("cpu", "--profile", "later", *args)
    job = wait_for(
        lambda: [j for j in my_jobs() if (j["state"], j["reason"]) == ("PENDING", "BeginTime")],
        60, "a held pending job",
    )
    return proc, job[0]["id"]


@pytest.mark.core
def test_job_cancelled_while_waiting_fails_with_the_reason(harness: Harness) -> None:
    proc, job_id = held_proxy(harness)
    time.sleep(1.5)  # let the proxy show its progress line
    subprocess.run(["scancel", job_id], check=True)
    proc.wait(timeout=60)  # stdin stays open: the ssh client is still there
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 1, err
    assert out == b""
    text = err.decode()
    assert f"job {job_id} (vscode-remote-cpu-later) PENDING (BeginTime), expected start" in text
    assert f"error: job {job_id} ended CANCELLED" in text
    assert f"job-{job_id}.log" in text


@pytest.mark.core
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", "stdin-closed"])
def test_abort_while_pending_cancels_the_submitted_job(harness: Harness, how: str) -> None:
    proc, job_id = held_proxy(harness)
    if how == "stdin-closed":
        out, err = proc.communicate(timeout=60)  # closes stdin: what the proxy sees when ssh goes
    else:
        proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == b""
    assert f"cancelled pending job {job_id}" in err.decode()
    wait_for(lambda: not my_jobs(), 30, "the pending job to leave the queue")


@pytest.mark.core
def test_abort_never_cancels_a_job_it_did_not_submit(harness: Harness) -> None:
    first, job_id = held_proxy(harness)
    second = harness.proxy("cpu", "--profile", "later")  # reuses the pending job
    time.sleep(2)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130
    assert f"reusing job {job_id}" in err.decode()
    assert [j["id"] for j in my_jobs()] == [job_id]
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)


def test_stale_endpoint_falls_back_to_a_new_session(harness: Harness) -> None:
    stale = harness.home / "state" / "jobs" / "999999"
    stale.mkdir(parents=True, mode=0o700)
    with socket_port() as dead_port:
        pass  # the port is closed again: connecting to it is refused
    record = {
        "job_id": "999999", "kind": "cpu", "profile": "default", "host": "127.0.0.1",
        "port": dead_port, "host_key": "ssh-ed25519 AAAA", "session_pid": 1,
        "secret": "ab" * 32, "started_at": time.time() + 3600, "container": "", "version": 2,
    }
    (stale / "endpoint.json").write_text(json.dumps(record))
    os.chmod(stale / "endpoint.json", 0o600)
    result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    jobs = my_jobs()
    assert len(jobs) == 1 and f"JOB={jobs[0]['id']}" in result.stdout
    assert result.stderr.count("dropped the stale record of job 999999") == 1


def test_session_whose_job_was_killed_is_replaced(harness: Harness) -> None:
    first = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    subprocess.run(["scancel", first], check=True)
    wait_for(lambda: not my_jobs(), 60, "the first job to end")
    second = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    assert second != first
    # The session cleaned up: only its note of why it ended stays (a while) for the proxies.
    assert [p.name for p in (harness.home / "state" / "jobs" / first).iterdir()] == ["ended"]
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    assert not list(tmp.glob(f"interactive-slurm-{first}-*"))  # host key and sshd_config too


def test_bad_profile_is_a_clear_error_and_submits_nothing(harness: Harness) -> None:
    path = harness.write_profile("broken", '[cpu]\ntime = "1:00:00"\ncpus = 0\nmem = "4G"\n'
                                 '[gpu]\ntime = "1:00:00"\ngpus = 1\ncpus = 2\nmem = "4G"\n')
    harness.write_config('default_profile = "broken"\n')
    result = harness.ssh("slurm-cpu", "true", check=False)
    assert result.returncode == 255
    assert f"error: {path}: [cpu] cpus = 0: expected a whole number >= 1" in result.stderr
    assert my_jobs() == []


@pytest.mark.core
def test_a_partition_that_does_not_exist_is_one_line_naming_the_key(harness: Harness) -> None:
    """Issue 20, item 5: two raw `sbatch: error` lines, then ssh's kex_exchange_identification."""
    harness.write_profile("nopart", 'partition = "nosuchpartition"\n[cpu]\ntime = "1:00:00"\n'
                          'cpus = 1\nmem = "1G"\n[gpu]\ntime = "1:00:00"\ngpus = 1\ncpus = 1\n'
                          'mem = "1G"\n')
    result = harness.tool("proxy", "cpu", "--profile", "nopart", check=False)
    assert result.returncode == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: Slurm refused a cpu session of profile nopart: Invalid partition name "
                      "specified; change cpu.partition (now nosuchpartition) in the profile "
                      "(`interactive-slurm profiles nopart` shows it, `interactive-slurm profiles "
                      "set nopart cpu.partition=VALUE` changes it)"]
    assert "sbatch: error" not in result.stderr
    assert my_jobs() == []


@pytest.mark.core
def test_a_job_the_partition_will_never_start_fails_at_once_and_is_cancelled(harness: Harness) -> None:
    """Issue 20, item 6: a profile asking for more time than its partition allows waited until
    wait_timeout (30 min) with one unchanging line."""
    harness.write_profile("toolong", 'partition = "short"\n[cpu]\ntime = "2:00:00"\ncpus = 1\n'
                          'mem = "1G"\n[gpu]\ntime = "1:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
    start = time.monotonic()
    proxy = harness.proxy("cpu", "--profile", "toolong")  # stdin stays open, as ssh keeps it
    assert proxy.stdout is not None and proxy.stderr is not None
    try:
        proxy.wait(timeout=30)
    finally:
        proxy.kill()
    out, err = proxy.stdout.read(), proxy.stderr.read()
    assert time.monotonic() - start < 30
    assert proxy.returncode == 1 and out == b""
    assert b"will not start: Slurm holds it for PartitionTimeLimit" in err
    assert b"change time in the profile" in err
    wait_for(lambda: my_jobs() == [], 30, "the submitted job to be cancelled")


def test_injection_in_a_profile_is_refused_before_sbatch(harness: Harness) -> None:
    for bad in ['"x;touch /tmp/pwned"', '"$(id)"', '"--wrap=id"', '"a\\nb"', '"../x"', '"a b"']:
        harness.write_profile("evil", f'partition = {bad}\n[cpu]\ntime = "1:00:00"\ncpus = 1\n'
                              'mem = "1G"\n[gpu]\ntime = "1:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
        result = harness.tool("proxy", "cpu", "--profile", "evil", check=False)
        assert result.returncode == 1
        assert "partition = " in result.stderr and "expected a Slurm name" in result.stderr
        assert result.stdout == ""
    assert my_jobs() == []


def test_cluster_side_needs_no_asyncssh_or_gitpython(harness: Harness) -> None:
    code = ("import sys, interactive_slurm.cli.main, interactive_slurm.login.proxy,"
            " interactive_slurm.node.session;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncssh', 'git')))")
    out = harness.run([str(Path(harness.env["PATH"].split(":")[0]) / "python"), "-c", code],
                      check=True).stdout
    assert out.strip() == "[]"


class socket_port:
    """A port number that was free a moment ago."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def slurm_spy(harness: Harness, tmp_path: Path) -> Path:
    """Put logging wrappers for the Slurm commands first on PATH; returns the log file."""
    spy, log = tmp_path / "spy", tmp_path / "slurm-calls.log"
    spy.mkdir()
    for tool in ("squeue", "sbatch", "scancel", "scontrol", "sacct", "sinfo"):
        wrapper = spy / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec /usr/bin/{tool} "$@"\n')
        wrapper.chmod(0o755)
    harness.env["PATH"] = f"{spy}:{harness.env['PATH']}"
    log.touch()
    return log


def test_reusing_a_session_asks_slurm_nothing(harness: Harness, tmp_path: Path) -> None:
    log = slurm_spy(harness, tmp_path)
    harness.ssh("slurm-cpu", "true")
    assert "sbatch" in log.read_text()  # the spy sees the slow path
    log.write_text("")
    for _ in range(3):
        harness.ssh("slurm-cpu", "true")
    assert log.read_text() == ""


def test_sshd_failing_at_startup_ends_the_job_with_a_log_message(harness: Harness,
                                                                  tmp_path: Path) -> None:
    # An sshd that passes `sshd -t` but dies at once on every connection (a broken install).
    broken = tmp_path / "sshd"
    broken.write_text('#!/bin/sh\nfor a; do [ "$a" = -t ] && exec /usr/sbin/sshd "$@"; done\n'
                      "exit 255\n")
    broken.chmod(0o755)
    harness.write_config(f'sshd = "{broken}"\n')
    for _ in range(5):
        assert harness.ssh("slurm-cpu", "true", check=False, timeout=60).returncode == 255
    wait_for(lambda: not my_jobs(), 60, "the job to end")
    [log_file] = (harness.home / "state" / "logs").glob("job-*.log")  # the job may be gone already
    log = log_file.read_text()
    assert "sshd -i failed at startup 5 times in a row; giving up" in log
    assert "Traceback" not in log


def test_overall_timeout_gives_up_and_cancels_its_pending_job(harness: Harness) -> None:
    harness.write_profile("later", LATER)
    proc = harness.proxy("cpu", "--profile", "later", "--timeout", "3")
    proc.wait(timeout=60)  # stdin stays open: the ssh client is still there
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read().decode()
    assert proc.returncode == 1 and out == b""
    assert "error: gave up after 3 s waiting for job" in err
    assert "cancelled pending job" in err
    wait_for(lambda: not my_jobs(), 30, "the pending job to be cancelled")


def test_many_short_connections_in_a_row_keep_the_session(harness: Harness) -> None:
    """sshd -i exits 255 whenever its client leaves: quick `ssh true`s are not failed starts."""
    harness.ssh("slurm-cpu", "true")
    [job] = my_jobs()
    for _ in range(8):
        assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip() == job["id"]
    assert [j["id"] for j in my_jobs()] == [job["id"]]
    log = (harness.home / "state" / "logs" / f"job-{job['id']}.log").read_text()
    assert "giving up" not in log
