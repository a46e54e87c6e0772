"""`interactive-slurm doctor` against the real parts: each check made to fail for a real reason
on the local cluster or the test login node, its message and fix asserted; a healthy set-up
fails nothing.

Login-node side (``harness``): a profile over the short partition's MaxTime or over the node's
CPUs/GPUs, a partition that does not exist, no Slurm on PATH, a stale record, a record whose
port is refused (``--job``), a group-writable state folder, an account and a QOS the user lacks
(the local cluster keeps accounting in slurmdbd and enforces it: ``associations,qos``; isuser's
one account is ``lab``, the account ``other`` and the QOS ``high`` exist but are not hers), also
through a real ``ssh slurm-cpu`` that Slurm refuses at submit. ``--job`` for real: a short job started,
checked from the login node and on its node through an ``srun --overlap`` step, and cancelled
(squeue shows it gone, scontrol shows it CANCELLED); a running session used instead of a new
job; a profile naming a container runtime the node lacks. A real ``ssh slurm-cpu`` whose proxy
fails ends with the hint to run doctor. Laptop side (``laptop``, after a real ``setup``): a
user ``Host *`` above the managed block, a missing key, a known_hosts line of another CA, a VS
Code settings file with a short timeout. Without ``--job`` doctor starts no job.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

from .conftest import BIN, TOOL, Harness, LoginNode, my_jobs, wait_for
from .test_faults import fault, faults  # noqa: F401  (the fixture)
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


def doctor(harness: Harness, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> tuple[int, list[str]]:
    """``interactive-slurm doctor ARGS`` as the harness's user: exit status and stdout's lines."""
    result = subprocess.run([str(TOOL), "doctor", *args], env={**harness.env, **(env or {})},
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert "error:" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def gone_and_cancelled(job_id: str) -> None:
    """Job ``job_id`` left the queue (squeue) and Slurm says it was cancelled (not that it ran
    out or failed): doctor cancelled what it started."""
    wait_for(lambda: job_id not in [j["id"] for j in my_jobs()], 60, f"job {job_id} to leave")
    shown = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True,
                           text=True, check=False).stdout
    assert "JobState=CANCELLED" in shown, shown


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
    assert line(lines, "ok   accounts: ") == ACCOUNTS_OK
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
    code, lines = doctor(harness, "--job", timeout=300)
    assert code == 1
    refused = line(lines, "FAIL session keyhole: job 999999 (cpu) at 127.0.0.1:")
    assert "Connection refused" in refused and "remote cancel 999999" in refused
    # The record is no job of Slurm's: --job started its own and cancelled it.
    started = line(lines, "ok   doctor's job: cancelled job ").split()[-4].rstrip(",")
    gone_and_cancelled(started)


def test_a_running_session_answers_through_its_keyhole(harness: Harness) -> None:
    harness.ssh("slurm-cpu", "true")
    [job] = my_jobs()
    code, lines = doctor(harness, "--job", timeout=300)
    assert code == 0, "\n".join(lines)
    assert line(lines, f"ok   session keyhole: job {job['id']} (cpu) at ")
    assert "proved its secret" in line(lines, "ok   session keyhole")
    # --job checks that session end to end and starts none of its own.
    assert line(lines, f"ok   session: your running session, job {job['id']} (profile default) on vm")
    assert line(lines, "ok   srun step: ")
    assert line(lines, "ok   session sshd: ")
    assert not [x for x in lines if "doctor's job" in x]
    assert [j["id"] for j in my_jobs()] == [job["id"]]


def test_job_on_a_healthy_cluster_checks_a_short_job_and_cancels_it(harness: Harness) -> None:
    code, lines = doctor(harness, "--job", timeout=300)
    assert code == 0, "\n".join(lines)
    assert all(x.startswith(("ok   ", "warn ")) for x in lines), "\n".join(lines)
    # The smallest shipped profile (development: 2 CPUs, 8G), for 10 minutes.
    session = line(lines, "ok   session: job ")
    job_id = session.split()[3]
    assert session.startswith(f"ok   session: job {job_id} (profile development) started on vm; "
                              "its session ran `sshd -t` and published its record in ")
    assert line(lines, "ok   session port: this login node reaches ").endswith(
        "over TCP and the session proved its secret there")
    assert line(lines, "ok   srun step: `srun --overlap` ran doctor's node checks inside job "
                       f"{job_id} on vm")
    sshd = line(lines, "ok   session sshd: `/usr/sbin/sshd -t` accepts ")
    assert f"/interactive-slurm-{job_id}-" in sshd
    assert sshd.endswith("/sshd_config (host key and certificate load)")
    assert line(lines, "ok   terminals: a new terminal belongs to group tty (gid 5)")
    assert line(lines, "ok   containers: no profile names a container")
    # This machine has no route to the internet: a warning with VS Code's setting, in 5 s.
    internet = line(lines, "warn internet: node vm cannot reach update.code.visualstudio.com:443")
    assert '"remote.SSH.localServerDownload": "always"' in internet
    assert line(lines, f"ok   doctor's job: cancelled job {job_id}, which doctor started")
    gone_and_cancelled(job_id)
    assert my_jobs() == []


def test_ctrl_c_cancels_the_job_doctor_started(harness: Harness) -> None:
    proc = subprocess.Popen([str(TOOL), "doctor", "--job"], env=harness.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()  # written once sbatch has answered
        assert first.startswith("interactive-slurm: doctor started job "), first
        job_id = first.split()[4].rstrip(":")
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert out == ""  # no report: it was interrupted
    assert f"interactive-slurm: cancelled job {job_id}, which doctor started" in rest
    gone_and_cancelled(job_id)


def test_a_profile_whose_container_runtime_the_node_lacks(harness: Harness) -> None:
    """Apptainer is not installed here (Charliecloud is): the profile in use fails with the
    runtime to use instead; the session doctor starts has no container, so it still starts."""
    harness.write_profile("apt", 'description = "apptainer"\ncontainer_runtime = "apptainer"\n'
                          'container = "/images/sshd.sif"\n'
                          '[cpu]\ntime = "01:00:00"\ncpus = 1\nmem = "1G"\n'
                          '[gpu]\ntime = "01:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
    code, lines = doctor(harness, "--job", "--profile", "apt", timeout=300)
    assert code == 1
    found = line(lines, "FAIL container runtime apt: ")
    assert found.startswith("FAIL container runtime apt: profile apt [cpu, gpu] names "
                            "container_runtime apptainer, but apptainer/singularity is not on "
                            "node vm's PATH (")
    assert found.endswith("— fix: ask your admins which module loads apptainer on the compute "
                          "nodes (load it in ~/.bashrc), or use a runtime this node has: "
                          "interactive-slurm profiles set apt cpu.container_runtime=charliecloud "
                          "gpu.container_runtime=charliecloud")
    session = line(lines, "ok   session: job ")
    assert "(profile apt)" in session  # the smallest profile, run without its container
    gone_and_cancelled(session.split()[3])


# --- accounts and QOS: Slurm keeps accounting (slurmdbd) and enforces it ------------------------

ACCOUNTS_OK = ("ok   accounts: Slurm keeps accounting here (AccountingStorageType=accounting_storage/"
               "slurmdbd, AccountingStorageEnforce=associations,qos); your accounts: lab")
SMALL = ('[cpu]\ntime = "01:00:00"\ncpus = 1\nmem = "1G"\n'
         '[gpu]\ntime = "01:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
WHERE = "(`sacctmgr show assoc user=isuser` lists yours; your admins add others)"


def slurm_refuses(*args: str) -> str:
    """sbatch's refusal of a job with ``args`` (``--test-only``: it submits nothing)."""
    result = subprocess.run(["sbatch", "--test-only", *args, "--wrap", "true"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result.stderr
    return result.stderr


def test_an_account_the_user_lacks_fails_naming_the_key_and_her_accounts(harness: Harness) -> None:
    harness.write_profile("mylab", f'description = "not my account"\naccount = "other"\n{SMALL}')
    harness.write_profile("typo", f'description = "no such account"\naccount = "nosuch"\n{SMALL}')
    # Slurm itself refuses both: the account other exists but is not isuser's; nosuch does not.
    assert "Invalid account or account/partition combination specified" in slurm_refuses(
        "--account=other")
    assert "Invalid account" in slurm_refuses("--account=nosuch")
    code, lines = doctor(harness, "--profile", "mylab")
    assert code == 1, "\n".join(lines)
    assert line(lines, "ok   accounts: ") == ACCOUNTS_OK
    for kind in ("cpu", "gpu"):
        assert line(lines, f"FAIL accounts mylab [{kind}]: ") == (
            f"FAIL accounts mylab [{kind}]: account other is not one of yours (lab) — fix: "
            f"interactive-slurm profiles set mylab {kind}.account=lab {WHERE}")
    # A profile not in use only warns.
    assert line(lines, "warn accounts typo [cpu]: ") == (
        "warn accounts typo [cpu]: account nosuch is not one of yours (lab) — fix: "
        f"interactive-slurm profiles set typo cpu.account=lab {WHERE}")
    # The fix doctor names is one Slurm takes.
    harness.tool("profiles", "set", "mylab", "cpu.account=lab", "gpu.account=lab")
    code, lines = doctor(harness, "--profile", "mylab")
    assert code == 0, "\n".join(lines)
    assert line(lines, "ok   accounts mylab [cpu]: ") == "ok   accounts mylab [cpu]: account lab: yours"
    assert "Invalid account" not in subprocess.run(
        ["sbatch", "--test-only", "--account=lab", "--wrap", "true"], capture_output=True,
        text=True, timeout=60, check=True).stderr
    assert my_jobs() == []


def test_a_qos_the_user_lacks_fails_naming_the_key_and_her_qos(harness: Harness) -> None:
    harness.write_profile("fast", f'description = "a QOS I lack"\nqos = "high"\n{SMALL}')
    assert "Invalid qos specification" in slurm_refuses("--qos=high")
    code, lines = doctor(harness, "--profile", "fast")
    assert code == 1, "\n".join(lines)
    assert line(lines, "FAIL accounts fast [gpu]: ") == (
        "FAIL accounts fast [gpu]: QOS high is not allowed for your accounts (normal) — fix: "
        f"interactive-slurm profiles set fast gpu.qos=normal {WHERE}")
    # Naming the account too: the QOS that account allows.
    harness.write_profile("fast", f'account = "lab"\nqos = "high"\n{SMALL}')
    code, lines = doctor(harness, "--profile", "fast")
    assert code == 1
    assert line(lines, "FAIL accounts fast [cpu]: ").startswith(
        "FAIL accounts fast [cpu]: QOS high is not allowed for account lab (normal) — fix: "
        "interactive-slurm profiles set fast cpu.qos=normal ")
    assert my_jobs() == []


REFUSED = ("error: Slurm refused a cpu session of profile {profile}: {reason}; change cpu.{key} "
           "(now {value}) in the profile (`interactive-slurm profiles {profile}` shows it, "
           "`interactive-slurm profiles set {profile} cpu.{key}=VALUE` changes it; `sacctmgr show "
           "assoc user=$USER format=account,qos` lists the accounts and QOS you have)")


def test_ssh_with_an_account_the_user_lacks_is_refused_at_submit_naming_the_key(
        harness: Harness) -> None:
    """What `ssh slurm-cpu` does for real with a profile naming an account that is not the
    user's: sbatch refuses it at once (no job, no waiting), in one line naming cpu.account."""
    harness.write_profile("mylab", f'account = "other"\n{SMALL}')
    harness.write_config('default_profile = "mylab"\n')
    result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
    assert result.returncode == 255 and result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [x for x in lines if x.startswith("error: ")]
    assert errors == [REFUSED.format(
        profile="mylab", key="account", value="other",
        reason="Invalid account or account/partition combination specified")], result.stderr
    assert lines[lines.index(errors[0]) + 1] == HINT
    assert "sbatch: error" not in result.stderr
    assert my_jobs() == []
    # The same for a QOS, through the ProxyCommand itself.
    harness.write_profile("fast", f'qos = "high"\n{SMALL}')
    proxy = harness.tool("proxy", "cpu", "--profile", "fast", check=False)
    assert proxy.returncode == 1 and proxy.stdout == ""
    assert [x for x in proxy.stderr.splitlines() if x.startswith("error: ")] == [REFUSED.format(
        profile="fast", key="qos", value="high", reason="Invalid qos specification")]
    assert my_jobs() == []


HINT = ("interactive-slurm: run 'interactive-slurm doctor' on the login node (or "
        "'interactive-slurm doctor --host slurm-cpu' on your laptop) to find what is wrong")


def test_a_failing_ssh_ends_with_the_hint_to_run_doctor(harness: Harness) -> None:
    harness.write_profile("nopart", 'partition = "nosuchpartition"\n[cpu]\ntime = "1:00:00"\n'
                          'cpus = 1\nmem = "1G"\n[gpu]\ntime = "1:00:00"\ngpus = 1\ncpus = 1\n'
                          'mem = "1G"\n')
    harness.write_config('default_profile = "nopart"\n')
    result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
    assert result.returncode == 255 and result.stdout == ""
    lines = result.stderr.splitlines()
    error = next(i for i, x in enumerate(lines) if x.startswith("error: "))
    assert "Invalid partition name specified" in lines[error]
    # The proxy's last line is the hint; after it only ssh's own words about the closed pipe.
    assert lines[error + 1] == HINT
    assert lines.count(HINT) == 1
    assert all(not x.startswith("interactive-slurm:") for x in lines[error + 2:]), lines
    # What the hint says to run names the cause.
    code, found = doctor(harness)
    assert code == 1
    assert "partition nosuchpartition" in line(found, "FAIL profile nopart [cpu]: ")
    # A proxy that works says nothing of doctor.
    harness.write_config("")
    worked = harness.ssh("slurm-cpu", "true", timeout=120)
    assert "doctor" not in worked.stderr


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


def test_a_port_a_firewall_blocks_is_found_and_the_transport_named(
    harness: Harness, faults: None,  # noqa: F811
) -> None:
    """A real firewall (iptables, as in test_transport.py) between the login node and the
    sessions' ports: with transport "tcp" the port check fails and says to set it; with "auto"
    it warns that srun carries the connections."""
    fault("firewall-reject")
    try:
        harness.write_config('transport = "tcp"\n')
        code, lines = doctor(harness, "--job", timeout=300)
        assert code != 0, "\n".join(lines)
        port = line(lines, "FAIL session port: ")
        assert "transport" in port and ("auto" in port or "srun" in port), port
        assert line(lines, "ok   srun step: ")  # Slurm's own traffic passes the firewall
        harness.write_config('transport = "auto"\n')
        code, lines = doctor(harness, "--job", timeout=300)
        assert line(lines, "warn session port: "), "\n".join(lines)
    finally:
        fault("firewall-off")
    assert my_jobs() == []


def test_terminals_on_a_devpts_without_the_tty_group(harness: Harness) -> None:
    """The node's terminal check, made to fail for real: inside the job, a user and mount
    namespace mounts its own devpts without ``gid=`` (as a compute node's can be), and doctor's
    node side (what ``--job`` runs in its srun step) finds a new terminal outside group tty."""
    harness.ssh("slurm-cpu", "true")
    script = ("mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts && "
              "mount --bind /dev/pts/ptmx /dev/ptmx && "
              f"exec {TOOL} doctor --in-job --json --profile default")
    result = harness.ssh("slurm-cpu", f"unshare -Urm sh -c {shlex.quote(script)}", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    terminals = checks["terminals"]
    assert terminals["status"] == "fail", terminals
    assert "not to the tty group" in terminals["saw"] and "(no gid= option)" in terminals["saw"]
    assert "gid=5,mode=620" in terminals["fix"], terminals
