"""doctor --job and the account check: the login node's side of a session check
(login/jobcheck.py) with Slurm scripted through the runner seam and a real keyhole server on a
loopback port; the node's side (node/nodecheck.py) fed with literal mount tables, pty groups and
PATHs; the account/QOS check (login/accounts.py) with literal scontrol and sacctmgr output."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from interactive_slurm.base import checks, folders, selfcmd
from interactive_slurm.base.errors import Aborted, CommandError
from interactive_slurm.cli import base as cli_base
from interactive_slurm.cli import main as cli
from interactive_slurm.connect import endpoint, keyhole, srunstep
from interactive_slurm.connect.endpoint import Endpoint
from interactive_slurm.login import accounts, jobcheck, profiles, slurm
from interactive_slurm.node import containers, nodecheck

from .clirunner import cli_runner
from .fakes import Clock, FakeRunner, Reply, fail, ok
from .keyholes import serve_once
from .test_doctor import statuses, write_profile

SECRET_HEX = "5e" * 32


SMALL = ('description = "small"\n[cpu]\ntime = "02:00:00"\ncpus = 1\nmem = "1G"\n'
         'extra = ["--begin=now+60", "--exclusive", "--mail-type=END"]\n'
         '[gpu]\ntime = "01:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')


# --- accounts ------------------------------------------------------------------------------------

# `scontrol show config` lines of a site that keeps accounting in slurmdbd and enforces it.
DBD_CONFIG = (
    "Configuration data as of 2026-11-28T13:22:33\n"
    "AccountingStorageEnforce = associations,limits,qos,safe\n"
    "AccountingStorageHost   = dbd01\n"
    "AccountingStorageType   = accounting_storage/slurmdbd\n"
    "AccountingStorageUser   = N/A\n"
)
NO_DBD_CONFIG = (
    "Configuration data as of 2026-11-28T13:22:33\n"
    "AccountingStorageEnforce = none\n"
    "AccountingStorageType   = accounting_storage/none\n"
)
# `sacctmgr -nP show assoc user=alice format=account,qos`: two accounts, one with a partition
# association of its own (a second row).
ASSOCS = "lab1|normal,high\nlab1|normal\nlab2|normal\n"


def test_parse_config_and_associations() -> None:
    dbd = accounts.parse_config(DBD_CONFIG)
    assert dbd == accounts.Accounting("accounting_storage/slurmdbd",
                                      ("associations", "limits", "qos", "safe"))
    assert dbd.kept and dbd.enforced
    none = accounts.parse_config(NO_DBD_CONFIG)
    assert not none.kept and not none.enforced and none.enforce == ()
    assert not accounts.parse_config("").kept
    assert accounts.Accounting("accounting_storage/slurmdbd", ()).enforced is False
    assert accounts.parse_associations(ASSOCS) == [
        accounts.Association("lab1", ("normal", "high")), accounts.Association("lab1", ("normal",)),
        accounts.Association("lab2", ("normal",))]
    assert accounts.parse_associations("\nlab3|\n") == [accounts.Association("lab3", ())]


def named(profile: str = "mine", kind: str = "cpu", account: str | None = None,
          qos: str | None = None) -> accounts.Named:
    return accounts.Named(profile, kind, account, qos)


def test_judge_accounts_and_qos() -> None:
    acct = accounts.parse_config(DBD_CONFIG)
    assocs = accounts.parse_associations(ASSOCS)
    found = accounts.judge(acct, assocs, [
        named(account="lab1", qos="high"),           # fine
        named(kind="gpu", account="lab2", qos="high"),  # lab2 has no QOS high
        named("other", account="nosuch"),            # not the profile in use: a warning
        named("mine", "cpu", qos="urgent"),          # no account named: any association's QOS
    ], "mine", "alice")
    assert statuses(found) == [("accounts", "ok"), ("accounts mine [cpu]", "ok"),
                               ("accounts mine [gpu]", "fail"), ("accounts other [cpu]", "warn"),
                               ("accounts mine [cpu]", "fail")]
    assert "your accounts: lab1, lab2" in found[0].saw
    assert found[1].saw == "account lab1, QOS high: yours"
    assert found[2].saw == "QOS high is not allowed for account lab2 (normal)"
    assert found[2].fix.startswith("interactive-slurm profiles set mine gpu.qos=normal ")
    assert "`sacctmgr show assoc user=alice` lists yours" in found[2].fix
    assert found[3].saw == "account nosuch is not one of yours (lab1, lab2)"
    assert found[3].fix.startswith("interactive-slurm profiles set other cpu.account=<one of lab1, lab2>")
    assert found[4].saw == "QOS urgent is not allowed for your accounts (high, normal)"


def test_judge_without_associations_and_without_enforcement() -> None:
    enforced = accounts.parse_config(DBD_CONFIG)
    [none] = accounts.judge(enforced, [], [], "default", "alice")
    assert none.status == "fail" and "alice has no association" in none.saw
    assert "sacctmgr add user alice account=THEIRS" in none.fix
    lax = accounts.Accounting("accounting_storage/slurmdbd", ())
    found = accounts.judge(lax, accounts.parse_associations("lab1|normal\n"),
                           [named("default", account="lab9")], "default", "alice")
    # Slurm does not refuse an unknown account here: a warning, with the one account to use.
    assert statuses(found) == [("accounts", "ok"), ("accounts default [cpu]", "warn")]
    assert found[1].fix.startswith("interactive-slurm profiles set default cpu.account=lab1 ")


def test_check_without_accounting_is_one_line_and_asks_no_sacctmgr() -> None:
    write_profile("mylab", 'account = "mylab"\n' + SMALL)
    runner = FakeRunner({"scontrol": ok(NO_DBD_CONFIG)})
    [line] = accounts.check(runner, "default", "alice")
    assert line.status == "ok"
    assert line.saw == ("Slurm keeps no accounting here (AccountingStorageType="
                        "accounting_storage/none), so it checks no account or QOS: passed on "
                        "unchecked: profile mylab [cpu] account=mylab; profile mylab [gpu] "
                        "account=mylab")
    assert runner.programs() == ["scontrol"]


def test_check_with_accounting_asks_sacctmgr_for_the_user() -> None:
    write_profile("mylab", 'account = "lab3"\n' + SMALL)
    runner = FakeRunner({"scontrol": ok(DBD_CONFIG), "sacctmgr": ok(ASSOCS)})
    found = accounts.check(runner, "mylab", "alice")
    assert runner.argvs("sacctmgr") == [
        ("sacctmgr", "-nP", "show", "assoc", "user=alice", "format=account,qos")]
    assert statuses(found) == [("accounts", "ok"), ("accounts mylab [cpu]", "fail"),
                               ("accounts mylab [gpu]", "fail")]
    assert "account lab3 is not one of yours (lab1, lab2)" in found[1].saw


def test_check_when_slurmdbd_does_not_answer() -> None:
    runner = FakeRunner({"scontrol": ok(DBD_CONFIG), "sacctmgr": fail(
        "sacctmgr: error: Problem talking to the database: Connection refused")})
    [line] = accounts.check(runner, "default", "alice")
    assert line.status == "warn" and "sacctmgr did not answer" in line.saw
    assert "Problem talking to the database" in line.saw


# --- the node's side -----------------------------------------------------------------------------

GOOD_MOUNTS = "devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0\n"
BAD_MOUNTS = "devpts /dev/pts devpts rw,nosuid,noexec,relatime,mode=600,ptmxmode=666 0 0\n"


def test_terminals() -> None:
    [good] = nodecheck.terminals(lambda: 5, 5, GOOD_MOUNTS)
    assert good.status == "ok" and good.saw.startswith("a new terminal belongs to group tty (gid 5)")
    [bad] = nodecheck.terminals(lambda: 1000, 5, BAD_MOUNTS)
    assert bad.status == "fail"
    assert bad.saw.startswith("a new terminal belongs to gid 1000, not to the tty group (gid 5): "
                              "/dev/pts is mounted rw,nosuid,noexec,relatime,mode=600,ptmxmode=666 "
                              "(no gid= option); ")
    assert "a plain `ssh slurm-cpu` closes at once" in bad.saw
    assert bad.fix.startswith("ask your admins to mount devpts with gid=5,mode=620")

    def no_pty() -> int:
        raise OSError(2, "No such file or directory")

    [broken] = nodecheck.terminals(no_pty, 5, None)
    assert broken.status == "fail" and "cannot open a pseudo-terminal: No such file" in broken.saw
    [nogroup] = nodecheck.terminals(lambda: 1000, None, GOOD_MOUNTS)
    assert nogroup.status == "ok" and "no tty group here" in nogroup.saw


def test_a_real_pty_on_this_machine() -> None:
    gid = nodecheck.new_pty_gid()
    [found] = nodecheck.terminals(lambda: gid, nodecheck.tty_group(), None)
    assert found.status in ("ok", "fail")  # whatever this machine's devpts says; it ran


RUNTIME = ('description = "with a container"\ncontainer_runtime = "apptainer"\n'
           'container = "/images/sshd.sif"\n'
           '[cpu]\ntime = "01:00:00"\ncpus = 1\nmem = "1G"\n'
           '[gpu]\ntime = "01:00:00"\ngpus = 1\ncpus = 1\nmem = "1G"\n')


def which_only(*present: str) -> Any:
    return lambda binary: f"/usr/bin/{binary}" if binary in present else None


def test_container_runtimes() -> None:
    write_profile("apt", RUNTIME)
    prof = profiles.load("apt")
    [missing] = nodecheck.container_runtimes([prof], "apt", "vm", which_only("ch-run"), "/usr/bin")
    assert missing.name == "container runtime apt" and missing.status == "fail"
    assert missing.saw == ("profile apt [cpu, gpu] names container_runtime apptainer, but "
                           "apptainer/singularity is not on node vm's PATH (/usr/bin)")
    assert missing.fix == (
        "ask your admins which module loads apptainer on the compute nodes (load it in "
        "~/.bashrc), or use a runtime this node has: interactive-slurm profiles set apt "
        "cpu.container_runtime=charliecloud gpu.container_runtime=charliecloud")
    [other] = nodecheck.container_runtimes([prof], "default", "vm", which_only("ch-run"), "")
    assert other.status == "warn"  # not the profile in use
    [none] = nodecheck.container_runtimes([prof], "apt", "vm", which_only(), "")
    assert none.fix.endswith("or run without a container: interactive-slurm profiles set apt "
                             "container= cpu.container= gpu.container=")
    [there] = nodecheck.container_runtimes([prof], "apt", "vm", which_only("apptainer"), "")
    assert there.status == "ok" and "apptainer is on node vm (/usr/bin/apptainer)" in there.saw
    write_profile("auto", RUNTIME.replace('container_runtime = "apptainer"\n', ''))
    auto = profiles.load("auto")
    [found] = nodecheck.container_runtimes([auto], "auto", "vm", which_only("ch-run"), "")
    assert found.status == "ok" and "node vm has charliecloud (/usr/bin/ch-run)" in found.saw
    plain = profiles.load("default")
    assert nodecheck.container_runtimes([plain], "default", "vm", which_only(), "") == [
        checks.ok("containers", "no profile names a container")]


def test_internet() -> None:
    def reached(host: str, port: int, timeout: float) -> None:
        assert (host, port) == nodecheck.DOWNLOAD_HOST

    [good] = nodecheck.internet("vm", {}, reached)
    assert good.status == "ok" and "reaches update.code.visualstudio.com:443" in good.saw

    def refused(host: str, port: int, timeout: float) -> None:
        raise OSError(101, "Network is unreachable")

    [bad] = nodecheck.internet("vm", {}, refused)
    assert bad.status == "warn"
    assert bad.saw == ("node vm cannot reach update.code.visualstudio.com:443: [Errno 101] "
                       "Network is unreachable; VS Code cannot download its server on the node")
    assert '"remote.SSH.localServerDownload": "always"' in bad.fix

    def hangs(host: str, port: int, timeout: float) -> None:
        time.sleep(5)

    start = time.monotonic()
    [slow] = nodecheck.internet("vm", {}, hangs, timeout=0.2)
    assert time.monotonic() - start < 2 and "no answer within 0.2 s" in slow.saw
    seen = []
    nodecheck.internet("vm", {"https_proxy": "http://proxy.site:3128"},
                       lambda h, p, t: seen.append((h, p)))
    assert seen == [("proxy.site", 3128)]
    assert nodecheck.proxy_of({"HTTPS_PROXY": "proxy.site"}) == ("proxy.site", 80)


def session_dir(base: Path, job_id: str) -> Path:
    folder = base / f"interactive-slurm-{job_id}-abc123"
    folder.mkdir(mode=0o700)
    (folder / "sshd_config").write_text("HostKey x\n")
    return folder


def test_session_sshd(tmp_path: Path) -> None:
    cfg = session_dir(tmp_path, "77") / "sshd_config"
    runner = FakeRunner({"/usr/sbin/sshd": ok("")})
    [good] = nodecheck.session_sshd(runner, "77", "/usr/sbin/sshd", [str(tmp_path)])
    assert good.status == "ok" and good.saw == (
        f"`/usr/sbin/sshd -t` accepts {cfg} (host key and certificate load)")
    assert runner.argvs("/usr/sbin/sshd") == [("/usr/sbin/sshd", "-t", "-f", str(cfg))]
    refused = FakeRunner({"/usr/sbin/sshd": fail(f"{cfg} line 3: Bad configuration option: X\n", 255)})
    [bad] = nodecheck.session_sshd(refused, "77", "/usr/sbin/sshd", [str(tmp_path)])
    assert bad.status == "fail" and "Bad configuration option: X" in bad.saw
    [none] = nodecheck.session_sshd(runner, "78", "/usr/sbin/sshd", [str(tmp_path)])
    assert none.status == "fail" and folders.job_log("78") in none.fix
    # In a container, the session ran sshd -t there; doctor does not run it outside.
    job_dir = Path(folders.job_dir("77"))
    folders.make_private_dirs(job_dir)
    (job_dir / containers.RECORD).write_text("charliecloud /images/sshd\n")
    quiet = FakeRunner()
    [inside] = nodecheck.session_sshd(quiet, "77", "/usr/sbin/sshd", [str(tmp_path)])
    assert inside.status == "ok" and "in its charliecloud container (/images/sshd)" in inside.saw
    assert quiet.calls == []


def test_node_checks_outside_a_job() -> None:
    [found] = nodecheck.run(nodecheck.Inputs(runner=FakeRunner(), sshd="/usr/sbin/sshd",
                                             used="default", env={}))
    assert (found.name, found.status) == ("node", "fail")


def test_node_checks_in_order(tmp_path: Path) -> None:
    session_dir(tmp_path, "77")
    found = nodecheck.run(nodecheck.Inputs(
        runner=FakeRunner({"/usr/sbin/sshd": ok("")}), sshd="/usr/sbin/sshd", used="default",
        env={"SLURM_JOB_ID": "77", "TMPDIR": str(tmp_path)}, node="vm",
        mounts=lambda: GOOD_MOUNTS, pty_gid=lambda: 5, tty_gid=lambda: 5,
        which=which_only(), connect=lambda h, p, t: None))
    assert statuses(found) == [("session sshd", "ok"), ("terminals", "ok"), ("containers", "ok"),
                               ("internet", "ok")]


def test_in_job_is_hidden_and_prints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    runner = cli_runner()
    assert "--in-job" not in runner.invoke(cli.cli, ["doctor", "--help"]).stdout
    result = runner.invoke(cli.cli, ["doctor", "--in-job", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["name"] == "node"


# --- the login node's side -----------------------------------------------------------------------

def test_short_resources() -> None:
    write_profile("small", SMALL)
    res = jobcheck.short_resources(profiles.load("small"))
    assert (res.time, res.idle_timeout, res.extra) == ("00:10:00", 300, ("--exclusive",))
    assert res.container is None and res.container_runtime is None
    brief = replace(profiles.load("small"), cpu=replace(res, time="00:05:00"))
    assert jobcheck.short_resources(brief).time == "00:05:00"  # a shorter time is kept


def job_line(job_id: str, state: str, *, reason: str = "None", nodes: str = "vm",
             profile: str = jobcheck.LABEL, kind: str = "cpu") -> str:
    comment = slurm.build_comment(kind=kind, profile=profile, res_hash="abc")
    return (f"JobId={job_id} JobName={slurm.job_name(kind, profile)} UserId=me(1000) "
            f"JobState={state} Reason={reason} Dependency=(null) RunTime=00:00:01 "
            f"TimeLimit=00:10:00 StartTime=2026-11-28T13:00:00 Partition=debug "
            f"NodeList={nodes if state == 'RUNNING' else '(null)'} WorkDir=/home/me "
            f"Comment={comment}  StdOut=/dev/null\n")


def squeue_line(job_id: str, state: str, *, profile: str = "default", kind: str = "cpu",
                nodes: str = "vm") -> str:
    comment = slurm.build_comment(kind=kind, profile=profile, res_hash="abc")
    return "|".join([job_id, slurm.job_name(kind, profile), state, "None", nodes, "7:00:00",
                     "8:00:00", "2026-11-28T13:00:00", comment]) + "\n"


def record(job_id: str, port: int, **changes: Any) -> Endpoint:
    values: dict[str, Any] = {
        "job_id": job_id, "kind": "cpu", "profile": jobcheck.LABEL, "host": "127.0.0.1",
        "port": port, "session_pid": 4321, "started_at": time.time(), "secret": SECRET_HEX,
    }
    return Endpoint(**{**values, **changes})


def test_wait_for_record_returns_once_published() -> None:
    clock = Clock()
    published = []

    def state(argv: tuple[str, ...], _input: str | None) -> Reply:
        if not published:  # the session publishes after Slurm's first answer
            endpoint.publish(record("77", 1))
            published.append(1)
        return ok(job_line("77", "RUNNING"))

    err = io.StringIO()
    waited = jobcheck.wait_for_record(FakeRunner({"scontrol": state}), "77", 60, err,
                                      clock=clock, sleep=clock.sleep)
    assert waited.ep is not None and waited.ep.port == 1 and waited.job is not None
    assert waited.job.nodes == "vm"


@pytest.mark.parametrize(("line", "why", "hopeless"), [
    (job_line("77", "FAILED", reason="NonZeroExitCode"),
     "job 77 ended FAILED before its session was ready", False),
    (job_line("77", "PENDING", reason="PartitionTimeLimit"),
     "Slurm holds job 77 for PartitionTimeLimit: change time in the profile", True),
    (job_line("77", "PENDING", reason="Resources"), "no session record after 60 s", False),
])
def test_wait_for_record_without_a_record(line: str, why: str, hopeless: bool) -> None:
    clock = Clock()
    runner = FakeRunner({"scontrol": ok(line)})
    waited = jobcheck.wait_for_record(runner, "77", 60, io.StringIO(), clock=clock,
                                      sleep=clock.sleep)
    assert waited.ep is None and waited.why == why and waited.hopeless is hopeless
    if "Resources" in line:  # asked every QUERY_GAP seconds, not on every poll
        assert len(runner.calls) == pytest.approx(60 / jobcheck.QUERY_GAP + 1, abs=1)


def test_wait_for_record_does_not_act_on_a_passing_reason() -> None:
    """As the proxy's wait: Slurm 20.11's passing PartitionConfig, then PartitionTimeLimit."""
    clock = Clock()
    runner = FakeRunner({"scontrol": [ok(job_line("77", "PENDING", reason="PartitionConfig")),
                                      ok(job_line("77", "PENDING", reason="PartitionTimeLimit"))]})
    waited = jobcheck.wait_for_record(runner, "77", 60, io.StringIO(), clock=clock,
                                      sleep=clock.sleep)
    assert waited.why == "Slurm holds job 77 for PartitionTimeLimit: change time in the profile"
    assert len(runner.calls) == 3


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def test_tcp_probe_for_real(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    serve_once(listener, bytes.fromhex(SECRET_HEX), "77")
    jobcheck.tcp_probe(record("77", port))
    serve_once(listener, bytes.fromhex("ab" * 32), "77")  # another session's secret
    with pytest.raises(keyhole.KeyholeError):
        jobcheck.tcp_probe(record("77", port))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        jobcheck.tcp_probe(record("77", refused))


NODE_JSON = checks.format_json([
    checks.ok("session sshd", "`/usr/sbin/sshd -t` accepts it"),
    checks.ok("terminals", "a new terminal belongs to group tty (gid 5)"),
    checks.fail("container runtime apt", "apptainer is not on node vm's PATH", "install it"),
    checks.warn("internet", "node vm cannot reach update.code.visualstudio.com:443", "settings"),
])


def slurm_for_a_new_job(srun: Any = None, scancel: Any = None) -> FakeRunner:
    return FakeRunner({
        "squeue": ok(""), "sbatch": ok("77\n"), "scontrol": ok(job_line("77", "RUNNING")),
        "srun": srun or ok(NODE_JSON), "scancel": scancel or ok(""),
    })


def job_inputs(runner: FakeRunner, **changes: Any) -> jobcheck.JobInputs:
    write_profile("small", SMALL)
    values: dict[str, Any] = {
        "runner": runner, "used": "default", "smallest": profiles.load("small"),
        "err": io.StringIO(), "transport": "auto",
        "wait": lambda r, job_id, timeout, err: jobcheck.Waited(
            record(job_id, 23456), slurm.parse_scontrol_job(job_line(job_id, "RUNNING"))),
        "probe": lambda ep: None, "step_command": ["/venv/bin/python", "-I", "-m",
                                                   "interactive_slurm"],
    }
    return jobcheck.JobInputs(**{**values, **changes})


def test_a_new_short_job_checked_and_cancelled() -> None:
    runner = slurm_for_a_new_job()
    inputs = job_inputs(runner)
    found = jobcheck.run(inputs)
    assert statuses(found) == [
        ("session", "ok"), ("session port", "ok"), ("srun step", "ok"), ("session sshd", "ok"),
        ("terminals", "ok"), ("container runtime apt", "fail"), ("internet", "warn"),
        ("doctor's job", "ok")]
    assert found[0].saw.startswith("job 77 (profile small) started on vm; its session ran "
                                   "`sshd -t` and published its record in ")
    assert found[1].saw == ("this login node reaches 127.0.0.1:23456 over TCP and the session "
                            "proved its secret there")
    assert found[-1].saw == "cancelled job 77, which doctor started"
    [sbatch] = runner.argvs("sbatch")
    assert "--job-name=vscode-remote-cpu-doctor.check" in sbatch
    assert "--time=00:10:00" in sbatch and "--exclusive" in sbatch
    assert not any(a.startswith(("--begin", "--mail")) for a in sbatch)
    [script] = [c.input for c in runner.calls if c.argv[0] == "sbatch"]
    assert script is not None and "--idle-timeout 300" in script
    assert runner.argvs("srun") == [tuple(srunstep.step_argv("77", "vm", [
        "/venv/bin/python", "-I", "-m", "interactive_slurm", "doctor", "--in-job", "--json",
        "--profile", "default"]))]
    assert runner.argvs("scancel") == [("scancel", "77")]
    assert runner.programs()[-1] == "scancel"
    assert "doctor started job 77" in inputs.err.getvalue()  # type: ignore[attr-defined]


def test_the_users_running_session_is_used_and_left_alone(listener: socket.socket) -> None:
    endpoint.publish(record("42", 23456, profile="default"))
    runner = FakeRunner({"squeue": ok(squeue_line("42", "RUNNING", nodes="node07")),
                         "srun": ok(NODE_JSON)})
    found = jobcheck.run(job_inputs(runner))
    assert found[0] == checks.ok("session", "your running session, job 42 (profile default) on "
                                            "node07: doctor starts no job")
    assert runner.programs() == ["squeue", "srun"]  # no sbatch, no scancel
    assert runner.argvs("srun")[0][:6] == ("srun", "--jobid=42", "--overlap", "--nodes=1",
                                           "--ntasks=1", "--nodelist=node07")


def test_another_doctors_job_is_not_used() -> None:
    endpoint.publish(record("41", 23456))
    runner = slurm_for_a_new_job()
    runner.script["squeue"] = [ok(squeue_line("41", "RUNNING", profile=jobcheck.LABEL))]
    jobcheck.run(job_inputs(runner))
    assert runner.argvs("scancel") == [("scancel", "77")]


@pytest.mark.parametrize(("transport", "status", "says"), [
    ("tcp", "fail", 'set transport = "auto" (or "srun") in '),
    ("auto", "warn", 'set transport = "srun" in '),
])
def test_a_port_tcp_cannot_reach(transport: str, status: str, says: str) -> None:
    def blocked(ep: Endpoint) -> None:
        raise TimeoutError("timed out")

    found = jobcheck.run(job_inputs(slurm_for_a_new_job(), transport=transport, probe=blocked))
    port = next(c for c in found if c.name == "session port")
    assert port.status == status
    assert port.saw.startswith("this login node cannot reach 127.0.0.1:23456 over TCP (no answer "
                               "within 3 s): a firewall between login and compute nodes? An srun "
                               "step into the job works, so the `srun` transport can carry "
                               "connections")
    assert says in port.fix
    assert ("doctor's job", "ok") in statuses(found)


def test_a_profile_transport_wins_over_the_configured_one() -> None:
    def blocked(ep: Endpoint) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    tcp_only = job_inputs(slurm_for_a_new_job(), transport="auto", probe=blocked,
                          wait=lambda r, j, t, e: jobcheck.Waited(
                              record(j, 23456, transport="tcp"),
                              slurm.parse_scontrol_job(job_line(j, "RUNNING"))))
    port = next(c for c in jobcheck.run(tcp_only) if c.name == "session port")
    assert port.status == "fail"
    assert "transport = tcp (profile doctor.check's transport key) uses TCP only" in port.saw


def test_transport_srun_is_not_tried_over_tcp() -> None:
    tried: list[Endpoint] = []
    found = jobcheck.run(job_inputs(slurm_for_a_new_job(), transport="srun", probe=tried.append))
    port = next(c for c in found if c.name == "session port")
    assert tried == [] and port.status == "ok"
    assert port.saw.startswith("not tried: transport = srun (")
    broken = jobcheck.run(job_inputs(slurm_for_a_new_job(srun=fail("srun: error: no")),
                                     transport="srun", probe=tried.append))
    assert statuses(broken)[1:3] == [("session port", "fail"), ("srun step", "fail")]


def test_neither_tcp_nor_srun() -> None:
    def refused(ep: Endpoint) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    runner = slurm_for_a_new_job(srun=fail("srun: error: Unable to create step for job 77: "
                                           "Invalid generic resource (gres) specification"))
    found = jobcheck.run(job_inputs(runner, probe=refused))
    assert statuses(found) == [("session", "ok"), ("session port", "fail"), ("srun step", "fail"),
                               ("doctor's job", "ok")]
    assert "(Connection refused)" in found[1].saw and "No srun step" in found[1].saw
    assert found[2].saw.endswith("did not run doctor's node checks: exit 1: srun: error: Unable "
                                 "to create step for job 77: Invalid generic resource (gres) "
                                 "specification")


def test_only_srun_failing_is_a_warning() -> None:
    found = jobcheck.run(job_inputs(slurm_for_a_new_job(srun=fail("srun: error: --overlap"))))
    assert statuses(found) == [("session", "ok"), ("session port", "ok"), ("srun step", "warn"),
                               ("doctor's job", "ok")]


def test_a_session_that_does_not_start_is_still_cancelled() -> None:
    runner = slurm_for_a_new_job()
    ended = jobcheck.run(job_inputs(runner, wait=lambda r, j, t, e: jobcheck.Waited(
        None, slurm.parse_scontrol_job(job_line(j, "FAILED")),
        f"job {j} ended FAILED before its session was ready: sshd_config refused")))
    assert statuses(ended) == [("session", "fail"), ("doctor's job", "ok")]
    assert "sshd_config refused" in ended[0].saw and folders.job_log("77") in ended[0].fix
    assert runner.argvs("scancel") == [("scancel", "77")]
    queued = jobcheck.run(job_inputs(slurm_for_a_new_job(), wait=lambda r, j, t, e: jobcheck.Waited(
        None, slurm.parse_scontrol_job(job_line(j, "PENDING", reason="Priority")),
        "no session record after 300 s")))
    assert statuses(queued) == [("session", "warn"), ("doctor's job", "ok")]
    assert "still waits in the queue (Priority) after 300 s" in queued[0].saw


def test_ctrl_c_cancels_the_job_and_goes_on_up() -> None:
    def interrupted(argv: tuple[str, ...], _input: str | None) -> Reply:
        raise Aborted("interrupted by SIGINT")

    runner = slurm_for_a_new_job(srun=interrupted)
    with pytest.raises(Aborted):
        jobcheck.run(job_inputs(runner))
    assert runner.argvs("scancel") == [("scancel", "77")]


def test_a_cancel_that_fails_says_how() -> None:
    runner = slurm_for_a_new_job(scancel=fail("scancel: error: Unable to contact slurm controller"))
    found = jobcheck.run(job_inputs(runner))
    assert found[-1].status == "fail" and found[-1].fix == "scancel 77"


def test_a_refused_submission_names_the_profile_and_key() -> None:
    runner = slurm_for_a_new_job()
    runner.script["sbatch"] = [fail("sbatch: error: Batch job submission failed: Invalid account "
                                    "or account/partition combination specified")]
    found = jobcheck.run(job_inputs(runner))
    assert statuses(found) == [("session", "fail")]
    assert "Slurm refused a 00:10:00 job of profile small" in found[0].saw
    assert found[0].fix.startswith("change account in profile small")
    assert "scancel" not in runner.programs()


def test_no_profile_fits() -> None:
    runner = FakeRunner({"squeue": ok("")})
    found = jobcheck.run(job_inputs(runner, smallest=None))
    assert statuses(found) == [("session", "fail")] and runner.programs() == ["squeue"]


def test_squeue_failing_starts_nothing() -> None:
    runner = FakeRunner({"squeue": fail("squeue: error: Unable to contact slurm controller")})
    found = jobcheck.run(job_inputs(runner))
    assert statuses(found) == [("session", "fail")]


def test_the_smallest_fitting_profile() -> None:
    from interactive_slurm.login import doctor

    from .test_doctor import view

    write_profile("small", SMALL)
    write_profile("huge", SMALL.replace("cpus = 1", "cpus = 64", 1))
    assert doctor.smallest_profile(view(), "default").name == "small"  # type: ignore[union-attr]
    write_profile("tiny", SMALL.replace('mem = "1G"', 'mem = "512M"', 1))
    assert doctor.smallest_profile(view(), "default").name == "tiny"  # type: ignore[union-attr]
    write_profile("tied", SMALL.replace('mem = "1G"', 'mem = "512M"', 1))
    assert doctor.smallest_profile(view(), "tied").name == "tied"  # type: ignore[union-attr]


def test_cli_job_end_to_end_through_the_seam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             listener: socket.socket) -> None:
    """doctor --job as the command runs it: sbatch's job publishes a record whose port is a real
    keyhole server on loopback; srun answers with the node's JSON; the job is cancelled."""
    from .test_doctor import scontrol

    port = listener.getsockname()[1]
    serve_once(listener, bytes.fromhex(SECRET_HEX), "77")

    def submitted(argv: tuple[str, ...], _input: str | None) -> Reply:
        endpoint.publish(record("77", port))
        return ok("77\n")

    cluster_answers = scontrol()

    def answers(argv: tuple[str, ...], _input: str | None) -> Reply:
        if argv[-2:] == ("job", "77"):
            return ok(job_line("77", "RUNNING"))
        return cluster_answers(argv, _input)

    runner = FakeRunner({"scontrol": answers, "squeue": ok(""), "sbatch": submitted,
                         "srun": ok(NODE_JSON), "scancel": ok("")})
    monkeypatch.setattr(cli_base, "runner", lambda: runner)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("sbatch", "squeue", "scontrol"):
        (bin_dir / cmd).write_text("#!/bin/sh\nexit 99\n")
        (bin_dir / cmd).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = cli_runner().invoke(cli.cli, ["doctor", "--job", "--json"], catch_exceptions=False)
    data = {d["name"]: d for d in json.loads(result.stdout)}
    assert result.exit_code == 1  # the scripted node JSON has a failing container runtime
    assert data["session"]["status"] == "ok" and data["session port"]["status"] == "ok"
    assert data["srun step"]["status"] == "ok" and data["doctor's job"]["status"] == "ok"
    assert data["accounts"]["status"] == "ok"
    assert runner.argvs("scancel") == [("scancel", "77")]
    [srun] = runner.argvs("srun")
    assert list(srun[-7:]) == [*selfcmd.module_argv()[-2:], "doctor", "--in-job", "--json",
                               "--profile", "default"]


def test_command_error_of_slurm_while_waiting() -> None:
    def down(r: Any, j: str, t: float, e: Any) -> jobcheck.Waited:
        raise CommandError("scontrol failed (exit 1): Unable to contact slurm controller")

    found = jobcheck.run(job_inputs(slurm_for_a_new_job(), wait=down))
    assert statuses(found) == [("session", "fail"), ("doctor's job", "ok")]


def test_wait_for_record_retries_a_slurm_that_does_not_answer() -> None:
    clock = Clock()
    down = fail("slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    runner = FakeRunner({"scontrol": [down, down, ok(job_line("77", "FAILED"))]})
    waited = jobcheck.wait_for_record(runner, "77", 60, io.StringIO(), clock=clock,
                                      sleep=clock.sleep)
    assert waited.why.startswith("job 77 ended FAILED") and len(runner.calls) == 3
    refused = FakeRunner({"scontrol": fail("scontrol: error: Access/permission denied")})
    with pytest.raises(CommandError):
        jobcheck.wait_for_record(refused, "77", 60, io.StringIO(), clock=clock, sleep=clock.sleep)
