"""`remote list|cancel|ssh|gpuswap` on real jobs."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import REMOTE, Harness, my_jobs, wait_for

# Every test here is a core test (pyproject.toml: `pytest -m core`, scripts/chroot-cluster).
pytestmark = pytest.mark.core


def test_list_shows_the_session_with_its_endpoint(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    [row] = harness.sessions()
    assert row["job_id"] == job
    assert (row["kind"], row["profile"], row["state"]) == ("cpu", "default", "RUNNING")
    assert str(row["endpoint"]).split(":")[1].isdigit()
    table = harness.remote("list").stdout.splitlines()
    assert table[0].split() == ["JOBID", "KIND", "PROFILE", "STATE", "NODE", "TIME_LEFT", "ENDPOINT"]
    assert table[1].split()[:4] == [job, "cpu", "default", "RUNNING"]


def test_ssh_from_the_login_node_into_a_session(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    result = harness.run([str(REMOTE), "ssh", job, "-o", "BatchMode=yes", "--",
                          "sh", "-c", "echo in $SLURM_JOB_ID"], check=True)
    assert result.stdout.strip() == f"in {job}"


def test_cancel_by_kind_and_refusal_of_foreign_jobs(harness: Harness) -> None:
    harness.ssh("slurm-cpu", "true")
    harness.ssh("slurm-gpu", "true")
    sbatch = ["sbatch", "--parsable", "-t", "5", "--output=/dev/null", "--chdir=/tmp", "--mem=1G"]
    other = subprocess.run([*sbatch, "--wrap", "sleep 300"],
                           capture_output=True, text=True, check=True).stdout.strip()
    refused = harness.remote("cancel", other, "--yes", check=False)
    assert refused.returncode == 2
    assert f"job {other} is not one of your interactive-slurm jobs" in refused.stderr
    harness.remote("cancel", "gpu", "--yes")
    wait_for(lambda: sorted(j["name"] for j in my_jobs()) == ["vscode-remote-cpu", "wrap"], 60,
             "only the gpu session to go")
    harness.remote("cancel", "--all", "--yes")
    wait_for(lambda: [j["name"] for j in my_jobs()] == ["wrap"], 60, "all sessions to go")


def test_gpuswap_from_inside_a_cpu_session(harness: Harness) -> None:
    cpu = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    out = harness.ssh(
        "slurm-cpu", f"{REMOTE} gpuswap -- sh -c 'echo GPU job $SLURM_JOB_ID sees $CUDA_VISIBLE_DEVICES'"
    ).stdout
    gpu_jobs = [j["id"] for j in my_jobs() if j["name"] == "vscode-remote-gpu"]
    assert len(gpu_jobs) == 1
    assert f"GPU job {gpu_jobs[0]} sees 0" in out
    assert cpu in [j["id"] for j in my_jobs()]  # without --replace the CPU job stays


def test_gpuswap_replace_cancels_the_cpu_job_once_the_gpu_one_is_ready(harness: Harness) -> None:
    cpu = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    result = harness.ssh("slurm-cpu", f"{REMOTE} gpuswap --replace", check=False)
    assert "Reconnect with: ssh slurm-gpu" in result.stderr
    wait_for(lambda: [j["name"] for j in my_jobs()] == ["vscode-remote-gpu"], 60,
             "the CPU job to be replaced")
    assert cpu not in [j["id"] for j in my_jobs()]
    assert "GPUS=0" in harness.ssh("slurm-gpu", "echo GPUS=$CUDA_VISIBLE_DEVICES").stdout


def run_on_tty(h: Harness, argv: list[str], answer: bytes) -> tuple[int, bytes]:
    """Run argv on a pseudo-terminal, answer its prompt, return (exit status, screen)."""
    import os
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(argv[0], argv, h.env)
    screen = b""
    answered = False
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        if not answered and b"[y/N]" in screen:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), screen


def test_cancel_asks_on_a_terminal(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    code, screen = run_on_tty(harness, [str(REMOTE), "cancel", "cpu"], b"n\n")
    assert f"cancel {job} (vscode-remote-cpu, RUNNING)? [y/N]".encode() in screen
    assert code == 130 and [j["id"] for j in my_jobs()] == [job]
    code, screen = run_on_tty(harness, [str(REMOTE), "cancel", "cpu"], b"y\n")
    assert code == 0 and f"cancelled {job}".encode() in screen
    wait_for(lambda: not my_jobs(), 60, "the job to be cancelled")
