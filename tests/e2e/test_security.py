"""Issue 4: strict host keys, port takeover, a second user, injection. Real Slurm and OpenSSH.

The second user is ``isother`` (``as_other`` and ``other_user`` in conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import OTHER, REMOTE, TOOL, Harness, as_other, my_jobs, wait_for


def endpoint_of(h: Harness) -> dict[str, object]:
    [path] = (h.home / "state" / "jobs").glob("*/endpoint.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def kill_session_hard(ep: dict[str, object]) -> None:
    """SIGKILL the session (no cleanup): the endpoint record stays behind."""
    os.kill(int(ep["session_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    wait_for(lambda: not my_jobs(), 60, "the killed job to leave the queue")
    # A SIGKILLed session cannot clean up its temp dir: the test does (as a node's tmp reaper).
    for leftover in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"interactive-slurm-{ep['job_id']}-*"):
        shutil.rmtree(leftover)
    # A connection the session closed first keeps its port in TIME_WAIT for up to 60 s (the
    # session binds without SO_REUSEADDR): the tests' attacker takes the port once it is free.
    wait_for(lambda: port_is_free(int(ep["port"])), 90, "the dead session's port to be free")  # type: ignore[call-overload]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_strict_checking_new_job_and_replaced_job_no_prompt(harness: Harness) -> None:
    config = harness.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in config and "HostKeyAlias cpu.interactive-slurm" in config
    known = (harness.home / "config" / "known_hosts").read_text().splitlines()
    assert len(known) == 1 and known[0].startswith("@cert-authority *.interactive-slurm ssh-ed25519 ")
    # Only the managed file is consulted, so the personal known_hosts plays no part.
    opts = ("-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes")
    first = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID", options=opts).stdout.strip()
    subprocess.run(["scancel", first], check=True)
    wait_for(lambda: not my_jobs(), 60, "the first job to end")
    second = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID", options=opts).stdout.strip()
    assert first != second  # a new host key, trusted through the CA, without a prompt


LISTENER = textwrap.dedent("""
    import socket, sys
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(); print("listening", flush=True)
    conn, _ = srv.accept(); conn.settimeout(10)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 impostor\\r\\n")
    got = b""
    try:
        while len(got) < 65536:
            chunk = conn.recv(4096)
            if not chunk: break
            got += chunk
    except OSError:
        pass
    sys.stdout.buffer.write(got)
""")


def test_port_takeover_by_a_listener_gets_no_byte(harness: Harness, other_user: None,
                                                  tmp_path: Path) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    kill_session_hard(ep)
    thief = subprocess.Popen(["sudo", "-n", "-u", OTHER, "python3", "-c", LISTENER, str(ep["port"])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert thief.stdout is not None
        assert thief.stdout.readline() == b"listening\n"
        result = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID", timeout=90)
        got, _ = thief.communicate(timeout=30)
    finally:
        thief.kill()
    # The keyhole saw an SSH banner where the session's HELLO belongs: the proxy sent nothing
    # (not even ssh's banner), dropped the record and went on to a new session.
    assert got == b""
    assert f"JOB={my_jobs()[0]['id']}" in result.stdout


def test_other_user_cannot_read_any_session_file(harness: Harness, other_user: None) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    state = harness.home / "state"
    tmp = os.environ.get("TMPDIR", "/tmp")
    [sshd_dir] = Path(tmp).glob(f"interactive-slurm-{ep['job_id']}-*")
    sshd_config = sshd_dir / "sshd_config"
    secret_files = [
        state / "hostca" / "ca",
        state / "jobs" / str(ep["job_id"]) / "endpoint.json",
        state / "logs" / f"job-{ep['job_id']}.log",
        sshd_config,
        sshd_config.parent / "host_ed25519_key",
    ]
    for path in secret_files:
        assert path.exists(), path
        result = as_other("cat", str(path))
        assert result.returncode != 0 and "Permission denied" in result.stderr, path
    for folder in (state, state / "jobs", state / "hostca", state / "logs", sshd_config.parent):
        assert (folder.stat().st_mode & 0o077) == 0, folder
    assert (state / "hostca" / "ca").stat().st_mode & 0o777 == 0o600


def test_forged_endpoint_of_another_user_is_refused(harness: Harness, other_user: None) -> None:
    state = harness.home / "state"
    jobs = state / "jobs"
    jobs.mkdir(parents=True, mode=0o700, exist_ok=True)
    # A careless chmod lets others into the tree; the records they plant must still be refused.
    for folder in (harness.home, state):
        folder.chmod(0o711)
    jobs.chmod(0o777)
    for parent in list(harness.home.parents)[:3]:
        if parent.stat().st_uid == os.getuid():
            parent.chmod(0o711)
    record = {"job_id": "4242", "kind": "cpu", "profile": "default", "host": "127.0.0.1",
              "port": 22, "host_key": "ssh-ed25519 AAAA", "session_pid": 1, "secret": "ab" * 32,
              "started_at": time.time() + 3600, "container": "", "version": 2}
    as_other("sh", "-c", f"umask 077; mkdir {jobs}/4242 && cat > {jobs}/4242/endpoint.json",
             input=json.dumps(record), check=True)
    try:
        # The careless chmod itself is refused (StrictModes), with the fix ...
        refused = harness.remote("ssh", "4242", check=False)
        assert refused.returncode == 1 and f"fix: chmod go-w {jobs}\n" in refused.stderr
        result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
        assert result.returncode == 255 and f"fix: chmod go-w {jobs}\n" in result.stderr
        assert my_jobs() == []
        # ... and once fixed, her record is refused, and the proxy skips it and starts a real
        # session.
        jobs.chmod(0o700)
        refused = harness.remote("ssh", "4242", check=False)
        assert refused.returncode == 1
        assert f"{jobs}/4242: refusing: owned by isother" in refused.stderr
        out = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID").stdout
        assert "JOB=4242" not in out and f"JOB={my_jobs()[0]['id']}" in out
    finally:
        jobs.chmod(0o777)  # let the other user clean up
        as_other("rm", "-rf", f"{jobs}/4242", check=True)
        jobs.chmod(0o700)


def test_the_other_user_never_reaches_the_session_sshd(harness: Harness, other_user: None,
                                                      tmp_path: Path) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    known = tmp_path / "other_known_hosts"
    known.write_text(f"[127.0.0.1]:{ep['port']} {ep['host_key']}\n")
    known.chmod(0o644)
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent.stat().st_uid == os.getuid():
            parent.chmod(parent.stat().st_mode | 0o011)
    for login in (OTHER, "isuser"):  # as itself, and as the owner: no secret, no sshd
        result = as_other("ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", f"UserKnownHostsFile={known}", "-p", str(ep["port"]),
                          f"{login}@127.0.0.1", "echo", "in")
        assert result.returncode == 255, result
        assert "in" not in result.stdout.split()
        assert "Permission denied" not in result.stderr  # it never got as far as sshd
    # The session's port speaks the keyhole, not SSH.
    hello = as_other("python3", "-c", "import socket,sys; s=socket.create_connection(('127.0.0.1',"
                     f" {ep['port']}), timeout=5); sys.stdout.write(s.recv(5).hex())").stdout
    assert bytes.fromhex(hello) == b"ISKH\x01"


@pytest.mark.parametrize("bad", ["x\ny", "a;id", "$(id)", "`id`", "a b", "../x", "--wrap=id"])
def test_injection_from_the_command_line_is_refused(harness: Harness, bad: str) -> None:
    for argv in (["proxy", "cpu", "--profile", bad], ["proxy", "cpu", "--container", bad]):
        result = harness.tool(*argv, check=False)
        assert result.returncode in (1, 2) and result.stderr.startswith("error: "), (argv, result)
        assert result.stdout == ""
    result = harness.run([str(REMOTE), "ssh", bad], check=False)
    assert result.returncode != 0 and "error: " in result.stderr
    assert my_jobs() == []


def test_injection_through_config_is_refused(harness: Harness) -> None:
    harness.write_config('sshd = "/usr/sbin/sshd\\n-oProxyCommand=id"\n')
    result = harness.tool("proxy", "cpu", check=False)
    assert result.returncode == 1 and "sshd = " in result.stderr and "absolute path" in result.stderr
    assert my_jobs() == []


def test_no_host_key_checking_is_ever_turned_off() -> None:
    root = Path(__file__).resolve().parents[2]
    banned = ["StrictHostKeyChecking" + sep + "no" for sep in (" ", "=")]
    banned += ["UserKnownHostsFile" + sep + "/dev/null" for sep in (" ", "=")]
    offenders = []
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.suffix in (
            ".py", ".md", ".toml", ".sh", "", ".sbatch", ".txt", ".cfg"
        ):
            text = path.read_text(errors="replace")
            offenders += [f"{path}: {b}" for b in banned if b in text]
    assert offenders == []


def test_tool_path_is_absolute() -> None:
    assert TOOL.is_absolute()


def test_a_lab_member_cannot_swap_the_sessions_temp_dir(harness: Harness, other_user: None) -> None:
    """Issue 17, item 2: the user's 0700 TMPDIR inside a lab folder another member can write
    (2770, no sticky bit). ``sshd -i`` reads its config from the temp dir on every connection;
    the member renames the user's folder away and plants one whose sshd_config forces her
    command. The session refuses such a TMPDIR (the whole chain above it is checked), so the
    planted file is never read."""
    lab = Path(f"/tmp/islab-{os.getpid()}-{time.monotonic_ns()}")
    assert as_other("mkdir", "-m", "2770", str(lab)).returncode == 0
    assert as_other("chgrp", "islab", str(lab)).returncode == 0
    assert as_other("chmod", "2770", str(lab)).returncode == 0
    mine = lab / "isuser-tmp"
    mine.mkdir(mode=0o700)
    try:
        harness.env["TMPDIR"] = str(mine)  # sbatch passes it on to the job
        harness.ssh("slurm-cpu", "true")
        ep = endpoint_of(harness)
        log = (harness.home / "state" / "logs" / f"job-{ep['job_id']}.log").read_text()
        # Refused for its owner (another user) or its mode (group-writable, no sticky bit).
        assert f"TMPDIR={mine} is not safe for the session's host key (the folder {lab} above " \
               "it is " in log
        assert not list(mine.iterdir())  # nothing of the session's there
        # The attack: she can rename the user's folder and plant her own in its place.
        assert as_other("mv", str(mine), str(lab / "moved")).returncode == 0
        planted = f"mkdir -m 0777 {mine} && printf 'ForceCommand echo pwned\\n' > {mine}/sshd_config"
        assert as_other("sh", "-c", planted).returncode == 0
        out = harness.ssh("slurm-cpu", "echo", "still-mine")
        assert out.stdout.strip() == "still-mine" and "pwned" not in out.stdout
    finally:
        harness.env.pop("TMPDIR", None)
        shutil.rmtree(lab / "moved", ignore_errors=True)
        as_other("rm", "-rf", str(lab))


def test_connect_to_another_users_job_is_one_line(harness: Harness, other_user: None) -> None:
    """Issue 17, item 5: `connect JOBID` on a record the user cannot read printed a traceback."""
    job = harness.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()
    result = as_other("env", f"INTERACTIVE_SLURM_HOME={harness.home}", str(TOOL), "connect", job,
                      stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: job {job}'s record is not yours to read\n", result.stderr
