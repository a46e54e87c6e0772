"""doctor: the check model (base/checks.py), the login node's checks (login/doctor.py) fed with
literal scontrol output through the runner seam, and the command's text, JSON and exit status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest

from interactive_slurm import __version__
from interactive_slurm.base import checks, folders
from interactive_slurm.base.checks import Check
from interactive_slurm.base.errors import CommandError, ConfigError
from interactive_slurm.cli import base as cli_base
from interactive_slurm.cli import main as cli
from interactive_slurm.connect import endpoint, fastpath
from interactive_slurm.connect.endpoint import Endpoint
from interactive_slurm.login import doctor, profiles

from .clirunner import cli_runner
from .fakes import FakeRunner, Reply, fail, ok

# Captured from the local test cluster (Slurm 22.05.8, scripts/local-cluster).
VERSION = "slurm-wlm 22.05.8\n"
PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES "
    "QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO "
    "MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm "
    "PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE "
    "PreemptMode=OFF State=UP TotalCPUs=32 TotalNodes=1 SelectTypeParameters=NONE "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=32,mem=128G,node=1,billing=32\n"
    "PartitionName=short AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO "
    "QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO "
    "MaxNodes=UNLIMITED MaxTime=01:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm "
    "PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE "
    "PreemptMode=OFF State=UP TotalCPUs=32 TotalNodes=1 SelectTypeParameters=NONE "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=32,mem=128G,node=1,billing=32\n"
)
NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=1 CPUEfctv=32 CPUTot=32 CPULoad=0.77 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:4 NodeAddr=127.0.0.1 NodeHostName=vm "
    "Version=22.05.8 OS=Linux 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=131072 "
    "AllocMem=1024 FreeMem=23608 Sockets=32 Boards=1 State=MIXED ThreadsPerCore=1 TmpDisk=0 "
    "Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,short  BootTime=2026-11-28T10:30:35 "
    "SlurmdStartTime=2026-11-28T11:09:34 LastBusyTime=2026-11-28T11:10:45 "
    "CfgTRES=cpu=32,mem=128G,billing=32 AllocTRES=cpu=1,mem=1G CapWatts=n/a CurrentWatts=0 "
    "AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n"
)
# A site with typed GPUs in their own partition, a drained node and a partition that is DOWN.
SITE_PARTITIONS = (
    "PartitionName=cpu Default=YES MaxTime=2-00:00:00 MaxCPUsPerNode=UNLIMITED Nodes=c[01-02] "
    "State=UP MaxMemPerNode=UNLIMITED TRES=cpu=128,mem=500G,node=2\n"
    "PartitionName=gpu Default=NO MaxTime=12:00:00 MaxCPUsPerNode=16 Nodes=g01 State=UP "
    "MaxMemPerNode=96000 TRES=cpu=64,mem=250G,node=1,gres/gpu=2\n"
    "PartitionName=old Default=NO MaxTime=UNLIMITED MaxCPUsPerNode=UNLIMITED Nodes=o01 State=DOWN "
    "MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=16G,node=1\n"
)
SITE_NODES = (
    "NodeName=c01 CPUTot=64 RealMemory=256000 Gres=(null) State=IDLE Partitions=cpu\n"
    "NodeName=c02 CPUTot=64 RealMemory=256000 Gres=(null) State=IDLE+DRAIN Partitions=cpu\n"
    "NodeName=g01 CPUTot=64 CPUEfctv=60 RealMemory=256000 Gres=gpu:a100:2(S:0-1) State=MIXED "
    "Partitions=gpu\n"
    "NodeName=o01 CPUTot=8 RealMemory=16000 Gres=(null) State=DOWN* Partitions=old\n"
)
UNREACHABLE = ("slurm_load_partitions: Unable to contact slurm controller (connect failure)\n")
# `scontrol show config` of the test cluster (no slurmdbd), its accounting lines.
CONFIG = (
    "Configuration data as of 2026-11-28T13:22:33\n"
    "AccountingStorageBackupHost = (null)\n"
    "AccountingStorageEnforce = none\n"
    "AccountingStorageHost   = localhost\n"
    "AccountingStoragePort   = 0\n"
    "AccountingStorageTRES   = cpu,mem,energy,node,billing,fs/disk,vmem,pages\n"
    "AccountingStorageType   = accounting_storage/none\n"
    "AccountingStorageUser   = root\n"
)


def scontrol(version: str = VERSION, partitions: str = PARTITIONS, nodes: str = NODES) -> Any:
    def answer(argv: tuple[str, ...], _input: str | None) -> Reply:
        if argv[1:] == ("--version",):
            return ok(version)
        if argv[-1] == "partition":
            return ok(partitions)
        if argv[-1] == "node":
            return ok(nodes)
        if argv[1:] == ("show", "config"):
            return ok(CONFIG)
        raise AssertionError(argv)

    return answer


def view(partitions: str = PARTITIONS, nodes: str = NODES) -> doctor.SlurmView:
    return doctor.SlurmView("22.05.8", doctor.parse_partitions(partitions), doctor.parse_nodes(nodes))


def statuses(found: list[Check]) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in found]


def write_profile(name: str, text: str) -> Path:
    folder = Path(folders.profiles_dir())
    folders.make_private_dirs(folder)
    path = folder / f"{name}.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def profile(cpu: str = 'time = "08:00:00"\ncpus = 4\nmem = "16G"',
            gpu: str = 'time = "04:00:00"\ngpus = 1\ncpus = 12\nmem = "32G"', top: str = "") -> str:
    return f"{top}\n[cpu]\n{cpu}\n\n[gpu]\n{gpu}\n"


# --- the model ---------------------------------------------------------------------------------

def test_one_line_per_check_with_the_fix_unless_ok() -> None:
    found = [checks.ok("a", "fine"), checks.warn("b", "so-so", "do x"), checks.fail("c", "bad\nline", "do y")]
    assert checks.format_text(found) == (
        "ok   a: fine\n"
        "warn b: so-so — fix: do x\n"
        "FAIL c: bad line — fix: do y\n"
    )
    assert checks.exit_status(found) == 1
    assert checks.exit_status(found[:2]) == 0


def test_json_round_trip_and_refusal() -> None:
    found = [checks.ok("a", "fine"), checks.fail("c", "bad", "do y")]
    text = checks.format_json(found)
    assert json.loads(text) == [{"name": "a", "status": "ok", "saw": "fine", "fix": ""},
                                {"name": "c", "status": "fail", "saw": "bad", "fix": "do y"}]
    assert checks.from_json(text) == found
    for bad in ('{"a": 1}', '[{"name": "x"}]', "Usage: interactive-slurm [OPTIONS]"):
        with pytest.raises(ValueError):
            checks.from_json(bad)
    with pytest.raises(ValueError, match="status"):
        Check("x", "fine", "y")


def test_a_check_that_raises_becomes_one_failure() -> None:
    def broken() -> list[Check]:
        raise ConfigError("config.toml: sshd = 'x': expected an absolute path")

    [found] = checks.guarded("config", broken)
    assert found.failed and "expected an absolute path" in found.saw


def test_trusted_folders_names_the_path_and_the_chmod(home: Path) -> None:
    state = Path(folders.state_dir())
    folders.make_private_dirs(state)
    [good] = checks.trusted_folders()
    assert good.status == "ok" and str(state) in good.saw
    os.chmod(state, 0o770)
    [bad] = checks.trusted_folders()
    assert bad.status == "fail"
    assert f"{state}: refusing: writable by group or others (mode 0770)" in bad.saw
    assert bad.fix == f"chmod go-w {state}"


# --- parsers -----------------------------------------------------------------------------------

def test_partitions_and_nodes_of_the_test_cluster() -> None:
    debug, short = doctor.parse_partitions(PARTITIONS)
    assert (debug.name, debug.default, debug.state, debug.max_time) == ("debug", True, "UP", None)
    assert (short.name, short.default, short.max_time) == ("short", False, 3600)
    assert debug.tres["mem"] == "128G" and debug.max_cpus_per_node is None
    [vm] = doctor.parse_nodes(NODES)
    assert (vm.name, vm.cpus, vm.memory, vm.gpus, vm.partitions, vm.usable) == (
        "vm", 32, 131072, {"": 4}, ("debug", "short"), True)


@pytest.mark.parametrize(("gres", "gpus"), [
    ("gpu:4", {"": 4}),
    ("gpu:a100:2(S:0-1)", {"a100": 2}),
    ("gpu:a100:2,gpu:v100:2,mps:200", {"a100": 2, "v100": 2}),
    ("gpu:a100:4(S:0,2)", {"a100": 4}),
    ("(null)", {}),
    ("", {}),
])
def test_gres(gres: str, gpus: dict[str, int]) -> None:
    assert doctor.parse_gres(gres) == gpus


@pytest.mark.parametrize(("state", "usable"), [
    ("IDLE", True), ("MIXED", True), ("ALLOCATED", True), ("IDLE+DRAIN", False),
    ("DOWN*", False), ("IDLE*", False), ("DRAINED", False), ("MIXED+DRAIN", False),
])
def test_node_usable(state: str, usable: bool) -> None:
    node = doctor.NodeInfo("n", 1, 1, {}, (), state)
    assert node.usable is usable


@pytest.mark.parametrize(("mem", "mb"), [("16G", 16384), ("512M", 512), ("1T", 1048576),
                                         ("2048", 2048), ("2048K", 2)])
def test_mem_megabytes(mem: str, mb: int) -> None:
    assert doctor.mem_megabytes(mem) == mb


# --- Slurm ---------------------------------------------------------------------------------------

def test_slurm_commands_missing_from_path() -> None:
    [found] = doctor.slurm_commands(lambda cmd: None if cmd == "sbatch" else f"/usr/bin/{cmd}")
    assert found.status == "fail"
    assert found.saw.startswith("not on PATH: sbatch (PATH=")
    assert "~/.bashrc" in found.fix
    [good] = doctor.slurm_commands(lambda cmd: f"/usr/bin/{cmd}")
    assert good == checks.ok("slurm commands", "/usr/bin/sbatch, /usr/bin/squeue, /usr/bin/scontrol")


def test_slurm_controller_answers() -> None:
    found, seen = doctor.slurm_controller(FakeRunner({"scontrol": scontrol()}))
    assert found == [checks.ok("slurm version", "Slurm 22.05.8"),
                     checks.ok("slurm controller", "answers: partitions debug*, short; 1 node(s)")]
    assert seen is not None and seen.default is not None and seen.default.name == "debug"


def test_slurm_controller_not_answering() -> None:
    runner = FakeRunner({"scontrol": [ok(VERSION), fail(UNREACHABLE)]})
    found, seen = doctor.slurm_controller(runner)
    assert seen is None
    assert statuses(found) == [("slurm version", "ok"), ("slurm controller", "fail")]
    assert "slurmctld does not answer" in found[1].saw and "Unable to contact" in found[1].saw
    assert "tell your admins" in found[1].fix


def test_default_partition() -> None:
    assert statuses(doctor.default_partition(view())) == [("default partition", "ok")]
    [none] = doctor.default_partition(view(PARTITIONS.replace("Default=YES", "Default=NO")))
    assert none.status == "warn" and "Default=YES" in none.saw
    [down] = doctor.default_partition(view(PARTITIONS.replace("State=UP", "State=DOWN", 1)))
    assert down.status == "fail" and "debug: State=DOWN" in down.saw
    [drained] = doctor.default_partition(view(nodes=NODES.replace("State=MIXED", "State=IDLE+DRAIN")))
    assert drained.status == "warn" and "0 of 1 node(s) take jobs" in drained.saw


def test_a_profile_over_the_partitions_time_limit_names_the_key() -> None:
    path = write_profile("longer", profile(top='partition = "short"'))
    prof = profiles.load("longer")
    found = doctor.profile_fit(prof, "cpu", view(), used=True)
    assert found.status == "fail"
    assert found.saw == (f"time 08:00:00 is over MaxTime 01:00:00 (partition short; {path} [cpu])")
    assert found.fix == ("interactive-slurm profiles set longer cpu.time=01:00:00 "
                         "(writes your own copy of the profile)")
    assert doctor.profile_fit(prof, "cpu", view(), used=False).status == "warn"


def test_a_partition_that_does_not_exist() -> None:
    write_profile("typo", profile(top='partition = "debgu"'))
    found = doctor.profile_fit(profiles.load("typo"), "gpu", view(), used=True)
    assert found.status == "fail"
    assert "partition debgu" in found.saw and "does not exist; partitions: debug, short" in found.saw
    assert found.fix == "interactive-slurm profiles set typo gpu.partition=debug"


@pytest.mark.parametrize(("cpu", "gpu", "kind", "saw", "fix"), [
    ('time = "1h"\ncpus = 64\nmem = "8G"', None, "cpu", "cpus 64 is over the 32 a node gives",
     "cpu.cpus=32"),
    ('time = "1h"\ncpus = 2\nmem = "256G"', None, "cpu", "mem 256G is over the 128G a node gives",
     "cpu.mem=128G"),
    (None, 'time = "1h"\ngpus = 8\ncpus = 2\nmem = "8G"', "gpu", "gpus 8 is over the 4 GPUs a node has",
     "gpu.gpus=4"),
    (None, 'time = "1h"\ngpus = 1\ngpu_type = "v100"\ncpus = 2\nmem = "8G"', "gpu",
     "gpus 1: no node of debug has v100 GPUs", "gpu.partition="),
])
def test_a_profile_asking_more_than_a_node_has(cpu: str | None, gpu: str | None, kind: str, saw: str,
                                               fix: str) -> None:
    kwargs = {k: v for k, v in (("cpu", cpu), ("gpu", gpu)) if v is not None}
    write_profile("big", profile(**kwargs))
    found = doctor.profile_fit(profiles.load("big"), kind, view(), used=True)
    assert found.status == "fail"
    assert found.saw.startswith(saw)
    assert f"interactive-slurm profiles set big {fix}" in found.fix


def test_site_limits_per_partition() -> None:
    site = view(SITE_PARTITIONS, SITE_NODES)
    write_profile("gpuwork", profile(
        gpu='time = "1-00:00:00"\ngpus = 2\ngpu_type = "a100"\ncpus = 32\nmem = "200G"',
        top='partition = "gpu"'))
    found = doctor.profile_fit(profiles.load("gpuwork"), "gpu", site, used=True)
    assert found.status == "fail"
    assert found.saw.startswith("time 1-00:00:00 is over MaxTime 12:00:00; cpus 32 is over the 16 a "
                                "node gives; mem 200G is over the 96000M a node gives")
    write_profile("gpuok", profile(
        gpu='time = "12:00:00"\ngpus = 2\ngpu_type = "a100"\ncpus = 16\nmem = "64G"',
        top='partition = "gpu"'))
    assert doctor.profile_fit(profiles.load("gpuok"), "gpu", site, used=True).status == "ok"
    write_profile("oldie", profile(top='partition = "old"'))
    down = doctor.profile_fit(profiles.load("oldie"), "cpu", site, used=True)
    assert down.status == "fail" and down.saw.startswith("partition old is DOWN")


def test_profile_checks_fail_only_for_the_profile_in_use() -> None:
    write_profile("longer", profile(top='partition = "short"'))
    found = doctor.profile_checks(view(), used="default")
    assert found[0].name == "profile default [cpu]"
    assert ("profile longer [cpu]", "warn") in statuses(found)
    assert not any(c.failed for c in found)
    failing = doctor.profile_checks(view(), used="longer")
    assert ("profile longer [cpu]", "fail") in statuses(failing)
    missing = doctor.profile_checks(view(), used="nosuch")
    assert missing[0].name == "profile nosuch" and missing[0].failed


def test_a_profile_that_does_not_load() -> None:
    path = write_profile("broken", profile(cpu='time = "08:00:00"\ncpus = 0\nmem = "16G"'))
    found = doctor.profile_checks(view(), used="broken")
    bad = [c for c in found if c.name == "profile broken"]
    assert bad and bad[0].failed and str(path) in bad[0].saw and "cpus = 0" in bad[0].saw


# --- files and folders --------------------------------------------------------------------------

MOUNTS = (
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "/dev/sda1 / ext4 rw,relatime 0 0\n"
    "nfs01:/export/home /home nfs4 rw,relatime,vers=4.2,rsize=1048576 0 0\n"
    "tmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n"
    "/dev/sdb1 /srv/my\\040data xfs rw 0 0\n"
)


@pytest.mark.parametrize(("state", "status", "saw"), [
    ("/home/alice/.local/state/interactive-slurm", "ok", "is on nfs4 (/home), shared"),
    ("/tmp/x/state", "warn", "is on a local tmpfs filesystem (/tmp)"),
    ("/var/lib/x", "warn", "is on a local ext4 filesystem (/)"),
    ("/srv/my data/state", "warn", "is on a local xfs filesystem (/srv/my data)"),
])
def test_state_filesystem(state: str, status: str, saw: str) -> None:
    [found] = doctor.state_filesystem(state, MOUNTS)
    assert found.status == status and saw in found.saw
    if status == "warn":
        assert "INTERACTIVE_SLURM_HOME" in found.fix


def record(job_id: str = "42", **changes: Any) -> Endpoint:
    values: dict[str, Any] = {
        "job_id": job_id, "kind": "cpu", "profile": "default", "host": "node01", "port": 23456,
        "session_pid": 4321, "started_at": 1700000000.5, "secret": "5e" * 32,
    }
    return Endpoint(**{**values, **changes})


def test_session_records_live_stale_and_broken(home: Path) -> None:
    [none] = doctor.session_records(time.time())
    assert none.status == "ok" and "none (no running session)" in none.saw
    path = endpoint.publish(record())
    [live] = doctor.session_records(time.time())
    assert live.status == "ok" and "job 42 (cpu, default) on node01:23456" in live.saw
    later = os.stat(path).st_mtime + 600
    [stale] = doctor.session_records(later)
    assert stale.status == "warn" and "job 42 on node01:23456 (600 s)" in stale.saw
    assert "remote list" in stale.fix
    path.write_text("{not json")
    [broken] = doctor.session_records(time.time())
    assert broken.status == "warn" and str(path) in broken.saw and broken.fix.startswith(f"rm {path}")


@pytest.mark.skipif(os.getuid() != 0, reason="making a file of another user needs root")
def test_session_records_of_another_user(home: Path) -> None:
    path = endpoint.publish(record("43"))
    os.chown(path.parent, 12345, -1)
    found = doctor.session_records(time.time())
    foreign = [c for c in found if c.failed]
    assert foreign and f"{path.parent} (uid 12345)" in foreign[0].saw


def test_home_space() -> None:
    def fs(free_gib: float, inodes: int, files: int = 10**6) -> Any:
        return lambda _path: SimpleNamespace(f_bavail=int(free_gib * 256), f_frsize=4 << 20,
                                             f_favail=inodes, f_files=files)

    [good] = doctor.home_space("/home/alice", fs(20, 10**6))
    assert good == checks.ok("home space", "/home/alice: 20.0 GiB free, 1000000 inodes free")
    [full] = doctor.home_space("/home/alice", fs(0.5, 10**6))
    assert full.status == "warn" and "0.5 GiB free" in full.saw
    assert "~/.vscode-server" in full.fix and "remote.SSH.serverInstallPath" in full.fix
    assert doctor.home_space("/h", fs(20, 1000))[0].status == "warn"
    assert doctor.home_space("/h", fs(20, 0, files=0))[0].status == "ok"  # no inode figures


def test_install(tmp_path: Path) -> None:
    [plain] = doctor.this_install(prefix=str(tmp_path), executable="/usr/bin/python3")
    assert plain.status == "ok" and f"interactive-slurm {__version__} (not a versioned install" in plain.saw
    root = tmp_path / "root"
    for vid in ("0.1.0-aaaaaaaaaa", "0.1.0-bbbbbbbbbb"):
        (root / "versions" / vid).mkdir(parents=True)
    (root / "current").symlink_to("versions/0.1.0-bbbbbbbbbb")
    [same] = doctor.this_install(prefix=str(root / "versions" / "0.1.0-bbbbbbbbbb"))
    assert same.status == "ok" and "install 0.1.0-bbbbbbbbbb" in same.saw
    [other] = doctor.this_install(prefix=str(root / "versions" / "0.1.0-aaaaaaaaaa"))
    assert other.status == "warn" and "current is 0.1.0-bbbbbbbbbb" in other.saw


def test_config_file_error_names_the_key(home: Path) -> None:
    path = Path(folders.config_file())
    folders.make_private_dirs(path.parent)
    path.write_text('sshd = "sshd"\n')
    os.chmod(path, 0o600)
    [found] = doctor.config_file()
    assert found.status == "fail" and "sshd = 'sshd': expected an absolute path" in found.saw
    assert found.fix.startswith(f"edit {path}")


def test_job_keyhole(home: Path) -> None:
    assert doctor.live_sessions(lambda ep: None, time.time()) == []  # --job starts one below
    endpoint.publish(record("42"))
    endpoint.publish(record("43", port=23457))

    class Sock:
        def close(self) -> None:
            pass

    def connect(ep: Endpoint) -> Sock:
        if ep.job_id == "43":
            raise fastpath.StaleEndpoint("node01:23457: [Errno 111] Connection refused")
        return Sock()

    found = sorted(doctor.live_sessions(connect, time.time()), key=lambda c: c.saw)
    assert statuses(found) == [("session keyhole", "ok"), ("session keyhole", "fail")]
    assert found[0].saw.startswith("job 42 (cpu) at node01:23456 proved its secret")
    assert found[1].saw == "job 43 (cpu) at node01:23457: node01:23457: [Errno 111] Connection refused"
    assert "remote cancel 43" in found[1].fix and "firewall" in found[1].fix


# --- all of it ----------------------------------------------------------------------------------

def healthy_inputs(runner: FakeRunner, **changes: Any) -> doctor.Inputs:
    values: dict[str, Any] = {
        "runner": runner, "home": "/home/alice", "which": lambda cmd: f"/usr/bin/{cmd}",
        "statvfs": lambda _p: SimpleNamespace(f_bavail=10**7, f_frsize=4096, f_favail=10**6,
                                              f_files=10**7),
        "mounts": lambda: "nfs01:/export /  nfs4 rw 0 0\n",
    }
    return doctor.Inputs(**{**values, **changes})


def test_a_healthy_login_node_in_the_order_of_a_connection() -> None:
    found = doctor.run(healthy_inputs(FakeRunner({"scontrol": scontrol()})))
    names = [c.name for c in found]
    assert names[:9] == ["install", "config", "trusted folders", "state filesystem", "session records",
                         "slurm commands", "slurm version", "slurm controller", "default partition"]
    assert names[9] == "profile default [cpu]" and names[-2:] == ["accounts", "home space"]
    assert [c for c in found if c.status != "ok"] == []
    assert checks.exit_status(found) == 0


def test_no_slurm_on_path_fails_and_the_rest_still_runs() -> None:
    runner = FakeRunner()  # nothing may run: scontrol is not there
    found = doctor.run(healthy_inputs(runner, which=lambda cmd: None))
    assert ("slurm commands", "fail") in statuses(found)
    assert ("profiles", "warn") in statuses(found)
    assert found[-1].name == "home space"
    assert runner.calls == []


def test_scontrol_that_cannot_run_is_one_failure() -> None:
    def missing(argv: tuple[str, ...], _input: str | None) -> Reply:
        raise CommandError("command not found: scontrol (No such file or directory)")

    found = doctor.run(healthy_inputs(FakeRunner({"scontrol": missing})))
    assert ("slurm version", "fail") in statuses(found)
    assert found[-1].name == "home space"


# --- the command --------------------------------------------------------------------------------

@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRunner:
    """The commands' runner answers as the test cluster; sbatch/squeue/scontrol are on PATH
    (never run: the runner is fake)."""
    runner = FakeRunner({"scontrol": scontrol()})
    monkeypatch.setattr(cli_base, "runner", lambda: runner)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in doctor.SLURM_COMMANDS:
        (bin_dir / cmd).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / cmd).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return runner


def invoke(args: list[str]) -> click.testing.Result:
    return cli_runner().invoke(cli.cli, args, catch_exceptions=False)


def test_cli_text_and_exit_status(fake: FakeRunner) -> None:
    result = invoke(["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok   install: interactive-slurm {__version__}")
    assert "ok   slurm version: Slurm 22.05.8" in lines
    assert "ok   profile default [cpu]: fits partition debug: --time=08:00:00 --cpus-per-task=4 --mem=16G" \
        in lines
    assert all(line.startswith(("ok   ", "warn ")) for line in lines)
    write_profile("longer", profile(top='partition = "short"'))
    failing = invoke(["doctor", "--profile", "longer"])
    assert failing.exit_code == 1
    assert ("FAIL profile longer [cpu]: time 08:00:00 is over MaxTime 01:00:00 (partition short; "
            in failing.stdout)
    assert "— fix: interactive-slurm profiles set longer cpu.time=01:00:00" in failing.stdout


def test_cli_json(fake: FakeRunner) -> None:
    result = invoke(["doctor", "--json", "--profile", "nosuch"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert all(set(item) == {"name", "status", "saw", "fix"} for item in data)
    failed = [item for item in data if item["status"] == "fail"]
    assert [item["name"] for item in failed] == ["profile nosuch"]


def test_cli_job_with_no_session_starts_one(fake: FakeRunner) -> None:
    """The whole of --job through the seam is in test_doctor_job.py; here: it asks Slurm for
    the user's sessions and, finding none and no sbatch, says the session did not start."""
    fake.script["squeue"] = [ok("")]
    fake.script["sbatch"] = [fail("sbatch: error: Batch job submission failed: Invalid partition "
                                  "name specified")]
    result = invoke(["doctor", "--job"])
    assert result.exit_code == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith("FAIL session: Slurm refused a 00:10:00 job of profile development")
    assert "change partition in profile development" in last
    assert "scancel" not in fake.programs()
