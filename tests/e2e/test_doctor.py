"""`interactive-slurm doctor` against the real parts: each check made to fail for a real reason
on the local cluster or the test login node, its message and fix asserted; a healthy set-up
fails nothing.

Login-node side (``harness``): a profile over the short partition's MaxTime or over the node's
CPUs/GPUs, a partition that does not exist, no Slurm on PATH, a stale record, a record whose
port is refused (``--job``), a group-writable state folder. Laptop side (``laptop``, after a
real ``setup``): a user ``Host *`` above the managed block, a missing key, a known_hosts line of
another CA, a VS Code settings file with a short timeout. doctor itself starts no job.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from .conftest import BIN, TOOL, Harness, LoginNode, my_jobs
from .test_setup import Laptop, laptop  # noqa: F401  (the fixture)

BIG = ('description = "More than the test node has"\n'
       '[cpu]\ntime = "01:00:00"\ncpus = 64\nmem = "1G"\n'
       '[gpu]\ntime = "01:00:00"\ngpus = 8\ncpus = 1\nmem = "1G"\n')
LONGER = ('description = "Longer than the short partition allows"\npartition = "short"\n'
          '[cpu]\ntime = "08:00:00"\ncpus = 1\nmem = "1G"\n'
          '[gpu]\ntime = "00:30:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
TYPO = ('description = "A partition that does not exist"\npartition = "nosuch"\n'
        '[cpu]\ntime = "01:00:00"\ncpus = 1\nmem = "1G"\n'
        '[gpu]\ntime = "01:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')


def doctor(harness: Harness, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """``interactive-slurm doctor ARGS`` as the harness's user: exit status and stdout's lines."""
    result = subprocess.run([str(TOOL), "doctor", *args], env={**harness.env, **(env or {})},
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "error:" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def line(lines: list[str], start: str) -> str:
    found = [x for x in lines if x.startswith(start)]
    assert found, f"no line starting {start!r} in:\n" + "\n".join(lines)
    return found[0]


def test_a_healthy_login_node_fails_nothing_and_starts_no_job(harness: Harness) -> None:
    code, lines = doctor(harness)
    assert code == 0, "\n".join(lines)
    assert all(x.startswith(("ok   ", "warn ")) for x in lines), "\n".join(lines)
    assert line(lines, "ok   slurm version: Slurm 22.05")
    assert line(lines, "ok   slurm controller: answers: partitions debug*, short")
    assert line(lines, "ok   default partition: debug: State=UP")
    assert line(lines, "ok   profile default [cpu]: fits partition debug")
    assert line(lines, "ok   profile default [gpu]: fits partition debug")
    assert line(lines, "ok   home space: ")
    assert my_jobs() == []
    data = json.loads(harness.run([str(TOOL), "doctor", "--json"], check=True).stdout)
    assert [d["status"] for d in data if d["status"] == "fail"] == []
    assert {"name", "status", "saw", "fix"} == set(data[0])


def test_profiles_that_do_not_fit_name_the_key_to_change(harness: Harness) -> None:
    longer = harness.write_profile("longer", LONGER)
    harness.write_profile("big", BIG)
    harness.write_profile("typo", TYPO)
    code, lines = doctor(harness, "--profile", "longer")
    assert code == 1
    assert line(lines, "FAIL profile longer [cpu]: ") == (
        f"FAIL profile longer [cpu]: time 08:00:00 is over MaxTime 01:00:00 (partition short; "
        f"{longer} [cpu]) — fix: interactive-slurm profiles set longer cpu.time=01:00:00 "
        "(writes your own copy of the profile)")
    assert line(lines, "ok   profile longer [gpu]: fits partition short")
    # The profiles not in use only warn: the exit status is about `ssh slurm-cpu`.
    big = line(lines, "warn profile big [cpu]: ")
    assert "cpus 64 is over the 32 a node gives" in big and "profiles set big cpu.cpus=32" in big
    assert "gpus 8 is over the 4 GPUs a node has" in line(lines, "warn profile big [gpu]: ")
    typo = line(lines, "warn profile typo [cpu]: ")
    assert "partition nosuch" in typo and "does not exist; partitions: debug, short" in typo
    assert "profiles set typo cpu.partition=debug" in typo
    code, lines = doctor(harness, "--profile", "typo")
    assert code == 1 and line(lines, "FAIL profile typo [gpu]: partition nosuch")
    assert my_jobs() == []


def test_no_slurm_on_path(harness: Harness) -> None:
    code, lines = doctor(harness, env={"PATH": str(BIN)})
    assert code == 1
    assert line(lines, "FAIL slurm commands: not on PATH: sbatch, squeue, scontrol")
    assert "~/.bashrc" in line(lines, "FAIL slurm commands")
    assert line(lines, "warn profiles: not checked")
    assert lines[-1].startswith(("ok   home space", "warn home space"))  # the rest still ran


def write_record(harness: Harness, job_id: str, port: int, age: float = 0.0) -> Path:
    folder = harness.home / "state" / "jobs" / job_id
    folder.mkdir(parents=True, mode=0o700)
    for parent in (harness.home, harness.home / "state", harness.home / "state" / "jobs"):
        parent.chmod(0o700)
    record = {
        "job_id": job_id, "kind": "cpu", "profile": "default", "host": "127.0.0.1", "port": port,
        "host_key": "", "session_pid": 1, "secret": "ab" * 32, "started_at": time.time(),
        "container": "", "version": 2,
    }
    path = folder / "endpoint.json"
    path.write_text(json.dumps(record))
    path.chmod(0o600)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connecting is refused


def test_a_stale_record_and_a_refused_port(harness: Harness) -> None:
    write_record(harness, "999998", dead_port(), age=600)
    code, lines = doctor(harness)
    assert code == 0
    stale = line(lines, "warn session records: not renewed for over 60 s")
    assert "job 999998 on 127.0.0.1:" in stale and "remote list" in stale
    write_record(harness, "999999", dead_port())
    code, lines = doctor(harness, "--job")
    assert code == 1
    refused = line(lines, "FAIL session keyhole: job 999999 (cpu) at 127.0.0.1:")
    assert "Connection refused" in refused and "remote cancel 999999" in refused
    assert my_jobs() == []


def test_a_running_session_answers_through_its_keyhole(harness: Harness) -> None:
    harness.ssh("slurm-cpu", "true")
    [job] = my_jobs()
    code, lines = doctor(harness, "--job")
    assert code == 0, "\n".join(lines)
    assert line(lines, f"ok   session keyhole: job {job['id']} (cpu) at ")
    assert "proved its secret" in line(lines, "ok   session keyhole")
    assert [j["id"] for j in my_jobs()] == [job["id"]]


def test_a_group_writable_state_folder(harness: Harness) -> None:
    state = harness.home / "state"
    state.mkdir(parents=True, mode=0o700, exist_ok=True)
    state.chmod(0o770)
    code, lines = doctor(harness)
    assert code == 1
    found = line(lines, f"FAIL trusted folders: {state}: refusing: writable by group or others "
                        "(mode 0770)")
    assert found.endswith(f" — fix: chmod go-w {state}")


# --- the laptop ----------------------------------------------------------------------------------

def laptop_doctor(lap: Laptop, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = subprocess.run([str(TOOL), "doctor", "--json", *args], env=lap.env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    data = json.loads(result.stdout)
    return result.returncode, {d["name"]: d for d in data}


def test_laptop_checks_after_a_real_setup(laptop: Laptop, login_node: LoginNode) -> None:  # noqa: F811
    port = str(login_node.pw_port)
    code, out = laptop.setup("127.0.0.1", "--port", port, "--user", laptop.env["USER"],
                             "--install-dir", str(laptop.install), answers=[
                                 (r"Make a new ed25519 key there\?", "y"),
                                 (r"password: ", login_node.password),
                                 (r"Passphrase for the new key", ""),
                             ])
    assert code == 0, out

    # Healthy: the laptop's side, the hop (the key, no prompt) and the cluster's doctor through it.
    code, found = laptop_doctor(laptop)
    assert code == 0, json.dumps(found, indent=1)
    for name in ("ssh client", "ssh config block", "ssh first match", "identity file", "known hosts",
                 "shared login connection", "login hop", "session CA", "cluster slurm controller",
                 "cluster profile default [cpu]"):
        assert found[name]["status"] == "ok", found[name]
    assert my_jobs() == []

    # A VS Code whose settings give up after a minute.
    settings = laptop.home / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{\n  // mine\n  "remote.SSH.connectTimeout": 60,\n}\n')
    code, found = laptop_doctor(laptop)
    assert code == 1
    assert found["vscode Code"]["status"] == "fail"
    assert "remote.SSH.connectTimeout is 60" in found["vscode Code"]["saw"]
    assert found["vscode Code"]["fix"].startswith(f'set "remote.SSH.connectTimeout": 1800 in {settings}')
    settings.unlink()

    # The classic trap: the user's own `Host *` above the block sets HostKeyAlias first.
    original = laptop.ssh_config.read_text()
    laptop.ssh_config.write_text("Host *\n  HostKeyAlias mine\n\n" + original)
    code, found = laptop_doctor(laptop)
    assert code == 1
    trap = found["ssh first match"]
    assert trap["status"] == "fail"
    assert "hostkeyalias 'mine' instead of the block's (set first by line 1: Host *, line 2: " \
        "HostKeyAlias mine)" in trap["saw"]
    assert "`Host * !slurm-cpu`" in trap["fix"]
    laptop.ssh_config.write_text(original)

    # A known_hosts line from another CA: sessions would fail `Host key verification`.
    known = laptop.home / ".config" / "interactive-slurm" / "known_hosts-slurm"
    line_now = known.read_text()
    known.write_text("@cert-authority *.interactive-slurm ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIHk4a6kOgCjA1B6ZCfO3W5lQd4Y4bqNH8yQ3eEw6f8Xv other\n")
    code, found = laptop_doctor(laptop)
    assert code == 1 and found["session CA"]["status"] == "fail"
    assert found["session CA"]["fix"].startswith("interactive-slurm setup --name slurm")
    known.write_text(line_now)

    # The key is gone: the identity check says so, and the hop cannot log in without a prompt.
    laptop.stop_control_masters()
    key = laptop.home / ".ssh" / "id_ed25519"
    key.rename(key.with_suffix(".moved"))
    code, found = laptop_doctor(laptop)
    assert code == 1
    assert found["identity file"]["saw"] == f"{key} does not exist"
    # (The hop itself may still log in here: ssh finds the test user's own keys through the
    # passwd entry, and the "cluster" is the same account.)
    key.with_suffix(".moved").rename(key)
    assert my_jobs() == []
