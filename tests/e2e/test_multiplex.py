"""Issue 21: session hosts that share one connection (ControlMaster, ControlPersist), as
`interactive-slurm ssh-config` and setup's block write them, on the local cluster.

The first `ssh slurm-cpu` opens a master in the background; later ones (a command, scp, -L,
eight at once) run over it with no new proxy and no new `sshd -i` in the session. When the job
ends the master ends with it, and the next connect opens a new master to a new session without a
word about stale sockets. The idle timer still ends an unused job (idle_timeout + persist time).
A proxy that had to wait for a new job hands its connection to the lean relay.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TOOL, Harness, my_jobs, wait_for
from .test_connect import forward_round_trip

MUX_WORDS = ("ControlSocket", "Control socket", "mux_client", "master", "stale")


@pytest.fixture
def mux(harness: Harness, tmp_path: Path) -> Iterator[Harness]:
    """The harness with the default (shared) Host entries; masters closed afterwards."""
    text = subprocess.run([str(TOOL), "ssh-config"], env=harness.env, capture_output=True,
                          text=True, check=True).stdout
    assert "ControlMaster auto" in text and "ControlPersist 10m" in text
    # The tests' ssh has no terminal: let its masters persist as a terminal user's do.
    assert ' exec "test -t 2"' in text
    harness.ssh_config = tmp_path / "ssh_config_mux"
    harness.ssh_config.write_text(text.replace(' exec "test -t 2"', ""))
    yield harness
    for host in ("slurm-cpu", "slurm-gpu"):
        subprocess.run(["ssh", "-F", str(harness.ssh_config), "-O", "exit", host],
                       capture_output=True, env=harness.env, timeout=30)


def master_alive(h: Harness) -> bool:
    """Whether slurm-cpu's master runs: its control socket exists (ssh removes it when the
    master ends). Not `ssh -O check`: each check is a client, which restarts ControlPersist."""
    out = subprocess.run(["ssh", "-F", str(h.ssh_config), "-G", "slurm-cpu"], capture_output=True,
                         text=True, env=h.env, check=True).stdout
    path = next(line.split(" ", 1)[1] for line in out.splitlines()
                if line.startswith("controlpath "))
    return Path(path).exists()


def record(h: Harness) -> dict[str, object]:
    [path] = (h.home / "state" / "jobs").glob("*/endpoint.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def sshd_children(session_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(session_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_later_connections_run_over_the_master(mux: Harness, tmp_path: Path) -> None:
    h = mux
    first = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    job = first.stdout.strip()
    assert job and master_alive(h)
    session = int(record(h)["session_pid"])  # type: ignore[call-overload]
    assert len(sshd_children(session)) == 1  # the master's own connection

    start = time.monotonic()
    again = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    assert again.stdout.strip() == job and time.monotonic() - start < 2
    assert len(sshd_children(session)) == 1  # no new proxy, no new sshd -i

    # scp both ways, all 256 byte values, over the master.
    data = bytes(range(256)) * 4096
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    opts = ["-F", str(h.ssh_config), "-o", "BatchMode=yes"]
    h.run(["scp", *opts, str(src), f"slurm-cpu:{tmp_path}/remote.bin"], check=True)
    h.run(["scp", *opts, f"slurm-cpu:{tmp_path}/remote.bin", str(tmp_path / "back.bin")], check=True)
    assert (tmp_path / "back.bin").read_bytes() == data

    # Eight at once, as a VS Code window opens them.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: h.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip(),
                             range(8)))
    assert outs == [job] * 8 and [j["id"] for j in my_jobs()] == [job]
    assert len(sshd_children(session)) == 1


def test_a_port_forward_over_the_master(mux: Harness) -> None:
    mux.ssh("slurm-cpu", "true")
    assert master_alive(mux)
    assert forward_round_trip(mux, b"over the master ") == b"over the master ping"


def test_a_cancelled_job_takes_its_master_and_the_next_connect_is_clean(mux: Harness) -> None:
    h = mux
    job = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    assert master_alive(h)
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: not master_alive(h), 60, "the master to end with its job")
    wait_for(lambda: not my_jobs(), 60, "the job to leave the queue")
    after = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    assert after.stdout.strip() not in ("", job)
    assert not [w for w in MUX_WORDS if w.lower() in after.stderr.lower()], after.stderr


def test_the_idle_timer_still_ends_an_unused_job(mux: Harness) -> None:
    """An unused job ends idle_timeout + the master's persist time after its last use."""
    h = mux
    h.ssh_config.write_text(h.ssh_config.read_text().replace("ControlPersist 10m",
                                                             "ControlPersist 4s"))
    h.write_profile("idle", 'idle_timeout = "8s"\n[cpu]\ntime = "00:10:00"\ncpus = 1\n'
                    'mem = "1G"\n[gpu]\ntime = "00:10:00"\ncpus = 1\nmem = "1G"\ngpus = 1\n')
    h.write_config('default_profile = "idle"\n')
    job = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    start = time.monotonic()
    assert master_alive(h)
    wait_for(lambda: not master_alive(h), 30, "the master to end after its persist time")
    wait_for(lambda: job not in [j["id"] for j in my_jobs()], 60, "the idle job to end")
    assert time.monotonic() - start < 4 + 8 + 30
    log = (h.home / "state" / "logs" / f"job-{job}.log").read_text(errors="replace")
    assert "no SSH connection for 8 s (idle_timeout of profile idle)" in log


def test_a_proxy_that_waited_relays_as_lean_as_a_reused_one(harness: Harness) -> None:
    """The proxy that submitted a job and waited for it replaces itself by the lean relay
    (`relay-fd`) once bytes flow: its resident memory is the reuse path's."""
    h = harness  # one connection per ssh: the proxy stays in the foreground
    shell = subprocess.Popen(["ssh", "-F", str(h.ssh_config), "-o", "BatchMode=yes", "slurm-cpu",
                              "echo ready; sleep 30"], env=h.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert shell.stdout is not None and shell.stdout.readline().strip() == "ready"
        relays = [pid for pid in _my_pids() if b"relay-fd" in _cmdline(pid)]
        assert len(relays) == 1, [(_cmdline(p)) for p in _my_pids() if b"interactive" in _cmdline(p)]
        rss_kib = _rss_kib(relays[0])
        assert rss_kib < 12 * 1024, f"the relay keeps {rss_kib} KiB"
        assert not [p for p in _my_pids() if b" proxy cpu" in _cmdline(p)]  # nothing else waits
    finally:
        shell.terminate()
        shell.wait(30)


def _my_pids() -> list[int]:
    uid = os.getuid()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
