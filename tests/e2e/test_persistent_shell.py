"""Issue 19 (its shell part): `ssh slurm-cpu-tmux`, a shell in the job that outlives the
connection. A dropped connection (the ssh client killed, as a sleeping laptop's is) leaves the
shell, its running command and its output in the job; the next `ssh slurm-cpu-tmux` reattaches.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from .conftest import Harness, my_jobs, wait_for

SESSION = "interactive-slurm"


def in_job(h: Harness, *command: str) -> subprocess.CompletedProcess[str]:
    return h.ssh("slurm-cpu", *command, check=False)


def tmux(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """tmux of the job's own server (the -tmux host's: ``-L interactive-slurm-JOBID``)."""
    return in_job(h, "tmux", "-L", "interactive-slurm-$SLURM_JOB_ID", *args)


def attach(h: Harness) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ssh", "-F", str(h.ssh_config), "-o", "BatchMode=yes",
                             "slurm-cpu-tmux"], env={**h.env, "TERM": "xterm"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def clients(h: Harness) -> int:
    out = tmux(h, "list-clients", "-t", SESSION).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_a_dropped_connection_leaves_the_shell_and_its_work_in_the_job(harness: Harness) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing on the node (scripts/local-cluster installs it)")
    h = harness
    first = attach(h)
    try:
        wait_for(lambda: tmux(h, "has-session", "-t", SESSION).returncode == 0, 60,
                 "the job's tmux session")
        job = my_jobs()[0]["id"]
        tmux(h, "send-keys", "-t", SESSION, "'echo marker-$((6*7)) in $SLURM_JOB_ID; sleep 600'",
             "Enter")
        wait_for(lambda: "marker-42" in tmux(h, "capture-pane", "-p", "-t", SESSION).stdout,
                 30, "the command's output")
        first.send_signal(signal.SIGKILL)  # the connection drops, as a sleeping laptop's does
        first.wait(30)
        wait_for(lambda: clients(h) == 0, 30, "the dropped client to go")
        # The shell, its command and its output are still in the job.
        pane = tmux(h, "capture-pane", "-p", "-t", SESSION).stdout
        assert f"marker-42 in {job}" in pane
        assert in_job(h, "pgrep -f '[s]leep 600'").returncode == 0
        second = attach(h)  # reattaches to the same shell
        try:
            wait_for(lambda: clients(h) == 1, 30, "the second client to attach")
            assert [j["id"] for j in my_jobs()] == [job]
        finally:
            second.kill()
            second.wait(30)
        # The job's end ends its shell too (the session stops the job's tmux server).
        subprocess.run(["scancel", job], check=True)
        wait_for(lambda: not my_jobs(), 60, "the job to end")
        assert subprocess.run(["tmux", "-L", f"interactive-slurm-{job}", "has-session"],
                              capture_output=True).returncode != 0
    finally:
        first.kill()
