"""The keyhole on the real cluster (issues 12, 8, 7): squats, floods, stale and impostor ports,
killed sessions and sshds, cancelled jobs, many connections at once. ``isother`` is the hostile
second user (``scripts/test`` lets the test user act as it through sudo)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from interactive_slurm.node.gate import MAX_PENDING

from .conftest import OTHER, REMOTE, Harness, as_other, my_jobs, wait_for
from .test_security import endpoint_of, kill_session_hard

HOLDER = textwrap.dedent("""
    # isother: hold N idle connections to a port (a pre-auth flood), reopening any that close.
    import socket, sys, time
    host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conns = []
    end = time.monotonic() + seconds
    print("holding", flush=True)
    while time.monotonic() < end:
        conns = [c for c in conns if c.fileno() != -1]
        while len(conns) < n:
            try:
                conns.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                break
        time.sleep(0.2)
        for c in list(conns):
            c.setblocking(False)
            try:
                if c.recv(4096) == b"":
                    c.close()
            except BlockingIOError:
                pass
            except OSError:
                c.close()
""")

CHURN = textwrap.dedent("""
    # isother: hold as many unproven connections as the session's gate holds; then, round after
    # round: open a few more (the gate drops as many of its oldest to admit them, and the next
    # accepts get their fds), send a byte at once on the oldest ones (readiness events that the
    # next select() returns after the listener's, for fds that are new connections' by the time
    # they are handled), then a byte on many young ones (work that keeps the session busy while
    # the next round's events queue up). A byte is never a whole proof, so none is dropped for
    # it. At SIGTERM: how many the session closed before their 3 s deadline, of how many.
    import collections, errno, resource, selectors, signal, socket, sys, time
    host, port = sys.argv[1], int(sys.argv[2])
    hold, burst, busy = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    sel = selectors.DefaultSelector()
    live = collections.OrderedDict()  # connection: [opened at, bytes got, bytes sent]; oldest first
    opened = dropped = 0
    def connect():
        global opened
        conn = socket.socket()
        conn.setblocking(False)
        if conn.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
            conn.close()
            return False
        sel.register(conn, selectors.EVENT_READ)
        live[conn] = [time.monotonic(), 0, 0]
        opened += 1
        return True
    def poke(conns):
        for conn in conns:
            state = live[conn]
            if state[1] and state[2] < 60:  # accepted (the HELLO came); a proof is 64 bytes
                try:
                    conn.send(b"x")
                except OSError:
                    continue
                state[2] += 1
    print("flooding", flush=True)
    while not stopping:
        for key, _ in sel.select(0):
            conn = key.fileobj
            try:
                data = conn.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                live[conn][1] += len(data)
                continue
            dropped += time.monotonic() - live[conn][0] < 2.5
            sel.unregister(conn)
            conn.close()
            del live[conn]
        if sum(1 for state in live.values() if not state[1]) > burst:
            time.sleep(0.0005)  # not accepted yet: never more than a burst in the backlog
            continue
        while len(live) < hold and connect():
            pass
        held = list(live)
        for _ in range(burst):
            connect()
        poke(held[:2 * burst])
        poke(held[-busy:])
    print(f"dropped {dropped} of {opened}", flush=True)
""")

RELAYS = textwrap.dedent("""
    # isother: on each port, listen on 0.0.0.0 and relay every connection to [::1] (same port).
    import selectors, socket, sys, threading
    ports = [int(p) for p in sys.argv[1:]]
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            a.close(); b.close()
    sel = selectors.DefaultSelector()
    for port in ports:
        srv = socket.socket(); srv.bind(("0.0.0.0", port)); srv.listen(); sel.register(srv, 1, port)
    print("relaying", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept()
            try:
                up = socket.create_connection(("::1", key.data), timeout=5)
            except OSError:
                conn.close(); continue
            threading.Thread(target=pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, conn), daemon=True).start()
""")

SILENT = textwrap.dedent("""
    import socket, sys, time
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(); print("listening", flush=True)
    conns = []
    while True:
        conn, _ = srv.accept(); conns.append(conn)  # accept and never say a word
""")


def start_as_other(script: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sudo", "-n", "-u", OTHER, "python3", "-c", script, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), proc.stderr.read() if proc.stderr else b""
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    # sudo forwards the signal to the child it started (ours to end: we started both).
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_other_family_squat_never_publishes_behind_a_relay(harness: Harness,
                                                           other_user: None) -> None:
    low = 21000 + os.getpid() % 500 * 2 * 8
    squatted = [str(p) for p in range(low, low + 7)]
    free = low + 7
    relay = start_as_other(RELAYS, *squatted)
    try:
        harness.env["INTERACTIVE_SLURM_PORTS"] = f"{low}-{free}"
        out = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID").stdout
        assert f"JOB={my_jobs()[0]['id']}" in out
        ep = endpoint_of(harness)
        assert ep["port"] == free  # every port held on one family was given up
        log = (harness.home / "state" / "logs" / f"job-{ep['job_id']}.log").read_text()
        assert f"listening on {ep['host']}:{free}" in log
    finally:
        stop(relay)


def test_idle_flood_leaves_the_owner_connecting(harness: Harness,
                                                other_user: None) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    ep = endpoint_of(harness)
    flood = start_as_other(HOLDER, "127.0.0.1", str(ep["port"]), "300", "40")
    try:
        time.sleep(2)
        for _ in range(3):
            start = time.monotonic()
            assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID", timeout=30).stdout.strip() == job
            assert time.monotonic() - start < 10
    finally:
        stop(flood)


def test_flood_past_the_gate_limit_never_closes_an_honest_connection(
    harness: Harness, other_user: None
) -> None:
    """Issue 17, item 4: beyond MAX_PENDING unproven connections the gate drops the oldest,
    and the next accept may get its fd; a readiness event of the dropped connection from the
    same select() batch used to read the new socket, get EAGAIN and close it: the owner's proxy
    took its session for stale. isother keeps the gate over its limit and stirs the connections
    it is about to drop (CHURN); each of the owner's connections gets through at once, to the
    same job."""
    honest = 40
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    ep = endpoint_of(harness)
    flood = start_as_other(CHURN, "127.0.0.1", str(ep["port"]), str(MAX_PENDING), "8", "200")
    results: list[tuple[int, str, bool, bool]] = []
    stderr: list[str] = []
    try:
        time.sleep(3)  # the gate is full and dropping
        for _ in range(honest):
            start = time.monotonic()
            result = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID", check=False, timeout=60)
            # A closed connection shows as a stale record, dropped; the slow path then waits
            # for the session to publish it again.
            results.append((result.returncode, result.stdout.strip(),
                            "dropped the stale record" in result.stderr,
                            time.monotonic() - start < 10))
            stderr.append(result.stderr)
    finally:
        stop(flood)
    assert flood.stdout is not None
    report = flood.stdout.read().decode()
    assert results == [(0, job, False, True)] * honest, (report, stderr)
    # Closed before the deadline, never having sent a whole proof: dropped for room.
    assert int(report.split()[1]) > 2 * MAX_PENDING, report
    assert [j["id"] for j in my_jobs()] == [job]


def test_silent_listener_on_a_stale_port_recovers_in_the_same_connect(
    harness: Harness, other_user: None
) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    kill_session_hard(ep)
    silent = start_as_other(SILENT, str(ep["port"]))
    try:
        start = time.monotonic()
        result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID", timeout=90)
        assert f"JOB={my_jobs()[0]['id']}" in result.stdout
        assert f"dropped the stale record of job {ep['job_id']}" in result.stderr
        assert time.monotonic() - start < 60
    finally:
        stop(silent)


def test_impostor_sshd_on_a_stale_port_gets_nothing_and_the_connect_recovers(
    harness: Harness, other_user: None
) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    kill_session_hard(ep)
    work = Path(as_other("mktemp", "-d", check=True).stdout.strip())
    key, cfg, log = work / "key", work / "sshd_config", work / "sshd.log"
    as_other("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), check=True)
    as_other("sh", "-c", f"cat > {cfg}", input=(
        f"Port {ep['port']}\nHostKey {key}\nPidFile {work}/pid\nUsePAM no\nLogLevel DEBUG3\n"
    ), check=True)
    thief = subprocess.Popen(["sudo", "-n", "-u", OTHER, "/usr/sbin/sshd", "-D", "-f", str(cfg),
                              "-E", str(log)])
    try:
        wait_for(lambda: as_other("ssh-keyscan", "-t", "ed25519", "-p", str(ep["port"]),
                                  "127.0.0.1").stdout, 30, "the impostor sshd")
        as_other("sh", "-c", f": > {log}", check=True)
        result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID", timeout=90)
        assert f"JOB={my_jobs()[0]['id']}" in result.stdout
        assert "Are you sure you want to continue connecting" not in result.stderr
        assert "Host key verification failed" not in result.stderr
        time.sleep(1)
        sshd_log = as_other("cat", str(log)).stdout
        assert "Connection from" in sshd_log  # the proxy did knock...
        # ...but sent not a byte: no client banner, no key exchange, no credentials.
        assert "userauth" not in sshd_log and "Remote protocol version" not in sshd_log
        assert "kex" not in sshd_log.lower().replace("kex_exchange_identification", "")
    finally:
        as_other("pkill", "-f", str(cfg))
        thief.wait(10)
        as_other("rm", "-rf", str(work))


def test_sigkilled_session_with_its_record_left_is_replaced_in_the_same_connect(
    harness: Harness,
) -> None:
    first = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    ep = endpoint_of(harness)
    kill_session_hard(ep)
    assert (harness.home / "state" / "jobs" / first / "endpoint.json").exists()
    result = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    assert result.stdout.strip() not in ("", first)
    assert f"dropped the stale record of job {first}" in result.stderr


def sshd_children(session_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(session_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def descendants(pid: int) -> list[int]:
    found = []
    for child in sshd_children(pid):
        found += [child, *descendants(child)]
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def test_killed_sshd_loses_only_its_connection(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    ep = endpoint_of(harness)
    shell = subprocess.Popen(["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes",
                              "slurm-cpu", "sleep 60"], env=harness.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    [child] = wait_for(lambda: sshd_children(int(ep["session_pid"])), 30, "the sshd -i")  # type: ignore[call-overload]
    # Kill only once the shell runs: a process forked after the snapshot would outlive the kill.
    wait_for(lambda: any(cmdline(pid).startswith(b"sleep\0") for pid in descendants(child)),
             30, "the shell's sleep")
    for pid in [child, *descendants(child)]:  # sshd -i and what it started (it crashed)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shell.communicate(timeout=30)
    assert shell.returncode != 0
    assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip() == job  # same job


def test_cancel_with_a_shell_open_ends_it_with_the_reason(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    shell = subprocess.Popen(["ssh", "-F", str(harness.ssh_config), "-o", "BatchMode=yes",
                              "slurm-cpu", "echo started; sleep 120"], env=harness.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert shell.stdout is not None and shell.stdout.readline() == b"started\n"
    subprocess.run(["scancel", job], check=True)
    start = time.monotonic()
    _, err = shell.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert f"session ended: job {job} was cancelled" in err.decode()
    wait_for(lambda: not my_jobs(), 60, "the job to leave the queue")
    assert harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip() not in ("", job)


def test_fifty_concurrent_connections_one_job(harness: Harness) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()

    def one(_: int) -> str:
        return harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID", timeout=120).stdout.strip()

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert results == [job] * 50
    assert [j["id"] for j in my_jobs()] == [job]


def test_old_records_without_a_secret_are_stale(harness: Harness) -> None:
    old = harness.home / "state" / "jobs" / "999998"
    old.mkdir(parents=True, mode=0o700)
    record = {"job_id": "999998", "kind": "cpu", "profile": "default", "host": "127.0.0.1",
              "port": 22, "host_key": "ssh-ed25519 AAAA", "sshd_pid": 1,
              "started_at": time.time() + 3600, "container": "", "version": 1}
    (old / "endpoint.json").write_text(json.dumps(record))
    os.chmod(old / "endpoint.json", 0o600)
    result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID")
    assert f"JOB={my_jobs()[0]['id']}" in result.stdout
    assert "dropped the stale record of job 999998" in result.stderr


def test_remote_gpuswap_quotes_the_command(harness: Harness) -> None:
    harness.ssh("slurm-cpu", "true")
    out = harness.ssh(
        "slurm-cpu", f"{REMOTE} gpuswap -- sh -c \"echo one two\"; "
        f"{REMOTE} ssh $SLURM_JOB_ID -- printf '<%s>' \"it's\" '\"q\"' '$HOME' 'a  b'"
    ).stdout
    assert out.splitlines()[0] == "one two"
    assert "<it's><\"q\"><$HOME><a  b>" in out


@pytest.mark.parametrize("verb", ["ssh"])
def test_remote_ssh_goes_through_the_keyhole(harness: Harness, verb: str) -> None:
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    result = harness.run([str(REMOTE), verb, job, "-o", "BatchMode=yes", "-v", "--",
                          "sh", "-c", "echo in $SLURM_JOB_ID"], check=True)
    assert result.stdout.strip() == f"in {job}"
    assert f"connect {job}" in result.stderr  # ssh -v shows the ProxyCommand it ran
