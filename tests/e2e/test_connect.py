"""`ssh slurm-cpu` through the real proxy, Slurm and sshd."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from .conftest import Harness, my_jobs

# Every test here is a core test (pyproject.toml: `pytest -m core`, scripts/chroot-cluster).
pytestmark = pytest.mark.core


def job_of(h: Harness, host: str = "slurm-cpu") -> str:
    out = h.ssh(host, "echo JOB=$SLURM_JOB_ID").stdout
    line = next(x for x in out.splitlines() if x.startswith("JOB="))
    return line[4:]


def test_connect_runs_a_command_inside_the_job(harness: Harness) -> None:
    result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID CPUS=$SLURM_CPUS_PER_TASK; hostname")
    jobs = my_jobs()
    assert len(jobs) == 1
    assert jobs[0]["name"] == "vscode-remote-cpu"
    assert jobs[0]["state"] == "RUNNING"
    assert f"JOB={jobs[0]['id']} CPUS=4" in result.stdout
    assert socket.gethostname() in result.stdout
    assert f"submitted job {jobs[0]['id']}" in result.stderr
    # The job log times the session's start, step by step, from the batch script's start
    # (bash 5's $EPOCHREALTIME), for benchmarks/slurm_latency.py.
    ready = re.search(r"ready in ([\d.]+) s after its start at \S+ \(script ([\d.]+) s, host key "
                      r"([\d.]+) s, sshd -t ([\d.]+) s, listen ([\d.]+) s\)",
                      harness.job_log(jobs[0]["id"]))
    assert ready, harness.job_log(jobs[0]["id"])
    total, *steps = (float(x) for x in ready.groups())
    assert 0 < total < 30 and abs(total - sum(steps)) < 0.01


def test_second_connection_reuses_the_job(harness: Harness) -> None:
    first = job_of(harness)
    second = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    assert f"JOB={first}" in second.stdout
    assert "submitted" not in second.stderr  # fast path: no Slurm talk at all
    assert [j["id"] for j in my_jobs()] == [first]


def test_eight_concurrent_connects_make_one_job(harness: Harness) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: job_of(harness), range(8)))
    assert len(set(ids)) == 1, ids
    assert [j["id"] for j in my_jobs()] == [ids[0]]


def test_scp_sftp_rsync_round_trip(harness: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    cfg = str(harness.ssh_config)
    opts = ["-F", cfg, "-o", "BatchMode=yes"]

    harness.run(["scp", *opts, str(src), f"slurm-cpu:{remote_dir}/via-scp"], check=True)
    back = tmp_path / "back-scp"
    harness.run(["scp", *opts, f"slurm-cpu:{remote_dir}/via-scp", str(back)], check=True)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest

    batch = tmp_path / "sftp-batch"
    batch.write_text(f"put {src} {remote_dir}/via-sftp\nget {remote_dir}/via-sftp {tmp_path}/back-sftp\n")
    harness.run(["sftp", *opts, "-b", str(batch), "slurm-cpu"], check=True)
    assert hashlib.sha256((tmp_path / "back-sftp").read_bytes()).hexdigest() == digest

    rsh = f"ssh -F {cfg} -o BatchMode=yes"
    harness.run(["rsync", "-a", "-e", rsh, str(src), f"slurm-cpu:{remote_dir}/via-rsync"], check=True)
    harness.run(["rsync", "-a", "-e", rsh, f"slurm-cpu:{remote_dir}/via-rsync",
                 str(tmp_path / "back-rsync")], check=True)
    assert hashlib.sha256((tmp_path / "back-rsync").read_bytes()).hexdigest() == digest
    # The remote side really ran in the job: the sha256 computed there matches too.
    remote_sum = harness.ssh("slurm-cpu", f"sha256sum {remote_dir}/via-rsync").stdout.split()[0]
    assert remote_sum == digest
    assert len(my_jobs()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reply_server(prefix: bytes) -> socket.socket:
    """A listening socket on 127.0.0.1 that answers one connection with prefix + what it got."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(prefix + conn.recv(100))

    threading.Thread(target=answer, daemon=True).start()
    return server


def forward_round_trip(harness: Harness, prefix: bytes) -> bytes:
    """``ssh -N -L`` to slurm-cpu for a reply server in this test: what one connection through
    the forward got back for ``ping`` (the server answers ``prefix + ping``)."""
    server = reply_server(prefix)
    target = server.getsockname()[1]
    local = _free_port()
    fwd = subprocess.Popen(
        ["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
         "-N", "-L", f"{local}:127.0.0.1:{target}", "slurm-cpu"],
        env=harness.env, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", local), timeout=5)
                break
            except OSError:
                assert fwd.poll() is None, fwd.stderr.read() if fwd.stderr else ""
                assert time.monotonic() < deadline, "forward never opened"
                time.sleep(0.2)
        with conn:
            conn.sendall(b"ping")
            data = b""
            while len(data) < len(prefix + b"ping"):
                chunk = conn.recv(100)
                if not chunk:
                    break
                data += chunk
        return data
    finally:
        fwd.terminate()
        fwd.wait(10)
        server.close()


def test_local_port_forward(harness: Harness) -> None:
    job_of(harness)  # the session exists, so the forward connects at once
    assert forward_round_trip(harness, b"hello through the tunnel ") == \
        b"hello through the tunnel ping"


def test_gpu_session_sees_its_gpus(harness: Harness) -> None:
    out = harness.ssh("slurm-gpu", "echo GPUS=$CUDA_VISIBLE_DEVICES JOB=$SLURM_JOB_ID").stdout
    jobs = my_jobs()
    assert [j["name"] for j in jobs] == ["vscode-remote-gpu"]
    assert f"GPUS=0 JOB={jobs[0]['id']}" in out


def test_gpu_intensive_profile_gets_four_gpus(harness: Harness) -> None:
    harness.write_config('default_profile = "gpu-intensive"\n')
    out = harness.ssh("slurm-gpu", "echo GPUS=$CUDA_VISIBLE_DEVICES").stdout
    assert "GPUS=0,1,2,3" in out
    assert [j["name"] for j in my_jobs()] == ["vscode-remote-gpu-gpu-intensive"]


def socks5_get(proxy_port: int, target_port: int, payload: bytes) -> bytes:
    """Minimal SOCKS5 CONNECT to 127.0.0.1:target_port through ssh -D, then one exchange."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + target_port.to_bytes(2, "big"))
        reply = s.recv(10)
        assert reply[:2] == b"\x05\x00", reply
        s.sendall(payload)
        return s.recv(100)


def test_vscode_style_connection_bash_on_stdin_and_dynamic_forward(harness: Harness) -> None:
    """What VS Code Remote-SSH does: `ssh -T -D PORT host bash`, a script on stdin, SOCKS."""
    server = reply_server(b"server says ")
    target = server.getsockname()[1]
    socks = _free_port()
    proc = subprocess.Popen(
        ["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes", "-T", "-D", str(socks),
         "-o", "ExitOnForwardFailure=yes", "slurm-cpu", "bash"],
        env=harness.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'echo "ready: job $SLURM_JOB_ID"\n')
        proc.stdin.flush()
        line = proc.stdout.readline().decode()
        assert line.startswith("ready: job ") and line.split()[-1] == my_jobs()[0]["id"]
        assert socks5_get(socks, target, b"hi") == b"server says hi"
        proc.stdin.write(b"exit 0\n")
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        server.close()


def test_interactive_shell_gets_a_terminal(harness: Harness) -> None:
    result = harness.run(["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes", "-tt",
                          "slurm-cpu", "tty; echo JOB=$SLURM_JOB_ID"], stdin=subprocess.DEVNULL,
                         check=True)
    assert result.stdout.splitlines()[0].startswith("/dev/pts/")
    assert f"JOB={my_jobs()[0]['id']}" in result.stdout


def test_agent_forwarding_reaches_the_session(harness: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True, check=True)
    pid = next(part.split("=")[1] for part in agent.stdout.replace(";", "\n").split()
               if part.startswith("SSH_AGENT_PID="))
    env = {**harness.env, "SSH_AUTH_SOCK": str(sock)}
    try:
        subprocess.run(["ssh-add", os.path.expanduser("~/.ssh/id_ed25519")], env=env, check=True,
                       capture_output=True)
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
        result = subprocess.run(["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes", "-A",
                                 "slurm-cpu", "ssh-add -l"], env=env, capture_output=True,
                                text=True, timeout=120, check=True)
        assert result.stdout.split()[1] == listed.split()[1]  # the same key fingerprint
    finally:
        subprocess.run(["kill", pid], check=False)
