"""slurm.py: parsers tested with literal squeue/sbatch output, builders, runner-based calls."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from interactive_slurm import __version__
from interactive_slurm.base.errors import SlurmError
from interactive_slurm.login import slurm
from interactive_slurm.login.slurm import Job

from .fakes import FakeRunner, fail, ok

OURS = f"interactive-slurm:kind=cpu,profile=default,res=abc,version={__version__}"

# Literal lines in SQUEUE_FORMAT (%i|%j|%T|%r|%N|%L|%l|%S|%k).
PENDING_LINE = (
    "5|vscode-remote-cpu|PENDING|Resources||8:00:00|8:00:00|2026-11-23T16:10:00|"
    "interactive-slurm:kind=cpu,profile=default,res=abc,version=0.1.0"
)
RUNNING_LINE = (
    "6|vscode-remote-gpu-development|RUNNING|None|node01|3:59:10|4:00:00|2026-11-23T12:00:00|"
    "interactive-slurm:kind=gpu,profile=development,res=0123456789,version=0.1.0,note=a|b"
)
FOREIGN_LINE = "7|train|RUNNING|None|node02|1:00:00|2:00:00|2026-11-23T11:00:00|lr=0.1|bs=32"
NO_COMMENT_LINE = "8|vscode-remote-cpu|RUNNING|None|node03|1:00:00|8:00:00|2026-11-23T11:00:00|"


def test_squeue_format() -> None:
    assert slurm.SQUEUE_FORMAT == "%i|%j|%T|%r|%N|%L|%l|%S|%k"
    assert slurm.squeue_mine_argv() == [
        "squeue", "--local", "--me", "--noheader", "--format=%i|%j|%T|%r|%N|%L|%l|%S|%k"
    ]
    assert slurm.scontrol_job_argv("42") == ["scontrol", "--local", "--oneliner", "show", "job", "42"]
    assert slurm.squeue_job_argv("42") == [
        "squeue", "--jobs", "42", "--states=all", "--noheader",
        "--format=%i|%j|%T|%r|%N|%L|%l|%S|%k",
    ]


# ---------------------------------------------------------------------------------- sbatch


@pytest.mark.parametrize(
    ("output", "job_id"),
    [
        ("123\n", "123"),
        ("123", "123"),
        ("123;cluster\n", "123"),
        ("sbatch: warning: something\n456\n", "456"),
    ],
)
def test_parse_sbatch(output: str, job_id: str) -> None:
    assert slurm.parse_sbatch(output) == job_id


@pytest.mark.parametrize(
    "output",
    ["", "\n", "Submitted batch job 123\n", "abc;cluster\n", "-1\n", "12a\n"],
)
def test_parse_sbatch_rejects_garbage_quoting_it(output: str) -> None:
    with pytest.raises(SlurmError) as info:
        slurm.parse_sbatch(output)
    assert str(info.value) == f'Could not make sense of sbatch output "{output.strip()}"'


# ---------------------------------------------------------------------------------- squeue


@pytest.mark.parametrize(
    ("output", "jobs"),
    [
        ("", []),
        ("\n  \n", []),
        (
            PENDING_LINE + "\n",
            [Job("5", "vscode-remote-cpu", "PENDING", "Resources", "", "8:00:00", "8:00:00",
                 "2026-11-23T16:10:00",
                 "interactive-slurm:kind=cpu,profile=default,res=abc,version=0.1.0")],
        ),
        (
            RUNNING_LINE + "\n" + FOREIGN_LINE + "\n",
            [
                Job("6", "vscode-remote-gpu-development", "RUNNING", "None", "node01", "3:59:10",
                    "4:00:00", "2026-11-23T12:00:00",
                    "interactive-slurm:kind=gpu,profile=development,res=0123456789,"
                    "version=0.1.0,note=a|b"),
                Job("7", "train", "RUNNING", "None", "node02", "1:00:00", "2:00:00",
                    "2026-11-23T11:00:00", "lr=0.1|bs=32"),
            ],
        ),
        (
            "  9|vscode-remote-cpu|COMPLETED|None|node01|0:00|8:00:00|2026-11-23T10:00:00|x  \n",
            [Job("9", "vscode-remote-cpu", "COMPLETED", "None", "node01", "0:00", "8:00:00",
                 "2026-11-23T10:00:00", "x")],
        ),
    ],
)
def test_parse_squeue(output: str, jobs: list[Job]) -> None:
    assert slurm.parse_squeue(output) == jobs


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "5|vscode-remote-cpu|PENDING",
        "5|vscode-remote-cpu|PENDING|Resources||8:00:00|8:00:00|2026-11-23T16:10:00",
        "|vscode-remote-cpu|PENDING|Resources||8:00:00|8:00:00|2026-11-23T16:10:00|c",
    ],
)
def test_parse_squeue_rejects_a_malformed_line_quoting_it(line: str) -> None:
    with pytest.raises(SlurmError) as info:
        slurm.parse_squeue(PENDING_LINE + "\n" + line + "\n")
    assert str(info.value) == f'Could not make sense of squeue output line "{line}"'


def test_job_metadata_from_the_comment() -> None:
    pending, running = slurm.parse_squeue(PENDING_LINE + "\n" + RUNNING_LINE)
    assert (pending.kind, pending.profile, pending.container) == ("cpu", "default", "")
    assert pending.meta == {"kind": "cpu", "profile": "default", "res": "abc", "version": "0.1.0"}
    assert (running.kind, running.profile, running.meta["note"]) == ("gpu", "development", "a|b")


@pytest.mark.parametrize(
    ("line", "ours"),
    [(PENDING_LINE, True), (RUNNING_LINE, True), (FOREIGN_LINE, False), (NO_COMMENT_LINE, False),
     ("10|train|RUNNING|None|n|1:00|2:00|2026-11-23T11:00:00|" + OURS, False)],
)
def test_job_is_ours(line: str, ours: bool) -> None:
    (job,) = slurm.parse_squeue(line)
    assert job.is_ours is ours


def test_foreign_job_has_no_metadata() -> None:
    (job,) = slurm.parse_squeue(FOREIGN_LINE)
    assert (job.meta, job.kind, job.profile, job.container) == ({}, None, None, "")


@pytest.mark.parametrize(
    ("state", "pending", "running", "ended"),
    [
        ("PENDING", True, False, False),
        ("REQUEUED", True, False, False),
        ("RUNNING", False, True, False),
        ("CONFIGURING", False, True, False),
        ("SUSPENDED", False, True, False),
        ("COMPLETING", False, False, True),
        ("COMPLETED", False, False, True),
        ("FAILED", False, False, True),
        ("CANCELLED", False, False, True),
        ("TIMEOUT", False, False, True),
        ("OUT_OF_MEMORY", False, False, True),
        ("NODE_FAIL", False, False, True),
    ],
)
def test_job_state_properties(state: str, pending: bool, running: bool, ended: bool) -> None:
    job = Job("5", "vscode-remote-cpu", state, "None", "", "", "", "", OURS)
    assert (job.pending, job.running, job.ended) == (pending, running, ended)


# -------------------------------------------------------------------------------- builders


@pytest.mark.parametrize(
    ("kwargs", "comment"),
    [
        (
            {"kind": "cpu", "profile": "default", "res_hash": "0123456789"},
            f"interactive-slurm:kind=cpu,profile=default,res=0123456789,version={__version__},"
            "install=-",
        ),
        (
            {"kind": "cpu", "profile": "default", "res_hash": "0", "install": "0.2.0-0123456789"},
            f"interactive-slurm:kind=cpu,profile=default,res=0,version={__version__},"
            "install=0.2.0-0123456789",
        ),
        (
            {"kind": "gpu", "profile": "gpu-intensive", "res_hash": "abc", "container": "nv/py:24"},
            f"interactive-slurm:kind=gpu,profile=gpu-intensive,res=abc,version={__version__},"
            "install=-,container=nv/py:24",
        ),
    ],
)
def test_build_and_parse_comment_round_trip(kwargs: dict[str, str], comment: str) -> None:
    assert slurm.build_comment(**kwargs) == comment
    meta = slurm.parse_comment(comment)
    assert meta == {
        "kind": kwargs["kind"], "profile": kwargs["profile"], "res": kwargs["res_hash"],
        "version": __version__, "install": kwargs.get("install", "-"),
        **({"container": kwargs["container"]} if "container" in kwargs else {}),
    }


@pytest.mark.parametrize("comment", ["", "lr=0.1", "kind=cpu,profile=default"])
def test_parse_comment_of_other_jobs_is_empty(comment: str) -> None:
    assert slurm.parse_comment(comment) == {}


@pytest.mark.parametrize(
    ("kind", "profile", "name"),
    [
        ("cpu", "default", "vscode-remote-cpu"),
        ("gpu", "default", "vscode-remote-gpu"),
        ("gpu", "development", "vscode-remote-gpu-development"),
    ],
)
def test_job_name(kind: str, profile: str, name: str) -> None:
    assert slurm.job_name(kind, profile) == name


def test_sbatch_argv() -> None:
    assert slurm.sbatch_argv(
        name="vscode-remote-cpu",
        comment=OURS,
        log_path=Path("/home/u/.local/state/interactive-slurm/logs/job-%j.log"),
        workdir=Path("/home/u"),
        resource_args=["--nodes=1", "--time=08:00:00"],
    ) == [
        "sbatch",
        "--parsable",
        "--job-name=vscode-remote-cpu",
        f"--comment={OURS}",
        "--output=/home/u/.local/state/interactive-slurm/logs/job-%j.log",
        "--chdir=/home/u",
        "--open-mode=append",
        "--nodes=1",
        "--time=08:00:00",
    ]


def test_render_batch_script_golden(golden: Callable[[str, str], None]) -> None:
    script = slurm.render_batch_script(
        python="/opt/interactive-slurm/venv/bin/python3", kind="gpu", profile="development",
        valid_for=7200, container="nvcr.io/nvidia/pytorch:24.01-py3",
    )
    golden("session.sbatch", script)


def test_render_batch_script_passes_the_idle_timeout_to_the_session() -> None:
    script = slurm.render_batch_script(
        python="/p/python", kind="cpu", profile="idle", valid_for=600, idle_timeout=1800
    )
    assert script.splitlines()[-1] == (
        "exec /p/python -I -m interactive_slurm session --kind cpu --profile idle "
        "--valid-for 600 --idle-timeout 1800"
    )


def test_render_batch_script_quotes_a_python_path_with_a_space() -> None:
    script = slurm.render_batch_script(
        python="/home/a user/venv/bin/python", kind="cpu", profile="default", valid_for=28800
    )
    assert script.startswith("#!/bin/bash\n")
    assert script.splitlines()[-1] == (
        "exec '/home/a user/venv/bin/python' -I -m interactive_slurm session --kind cpu "
        "--profile default --valid-for 28800"
    )


# -------------------------------------------------------------------- calls through runner


def test_submit_passes_the_script_on_stdin() -> None:
    runner = FakeRunner({"sbatch": ok("77;cluster\n")})
    argv = ["sbatch", "--parsable", "--job-name=vscode-remote-cpu"]
    assert slurm.submit(runner, argv, "#!/bin/bash\nexec true\n") == "77"
    (call,) = runner.calls
    assert (call.argv, call.input) == (tuple(argv), "#!/bin/bash\nexec true\n")


def test_submit_failure_quotes_sbatch_stderr() -> None:
    stderr = "sbatch: error: Batch job submission failed: Socket timed out on send/recv\n"
    runner = FakeRunner({"sbatch": fail(stderr)})
    with pytest.raises(SlurmError) as info:
        slurm.submit(runner, ["sbatch", "--parsable"], "#!/bin/bash\n")
    assert str(info.value) == (
        "sbatch failed (exit 1): sbatch: error: Batch job submission failed: "
        "Socket timed out on send/recv"
    )
    assert info.value.returncode == 1
    assert info.value.stderr == stderr


def test_submit_with_nonsense_output() -> None:
    runner = FakeRunner({"sbatch": ok("Submitted batch job 5\n")})
    with pytest.raises(SlurmError, match='sbatch output "Submitted batch job 5"'):
        slurm.submit(runner, ["sbatch"], "")


def test_my_jobs_keeps_only_this_tools_jobs() -> None:
    output = "\n".join([PENDING_LINE, FOREIGN_LINE, RUNNING_LINE, NO_COMMENT_LINE]) + "\n"
    runner = FakeRunner({"squeue": ok(output)})
    assert [job.job_id for job in slurm.my_jobs(runner)] == ["5", "6"]
    assert runner.argvs("squeue") == [tuple(slurm.squeue_mine_argv())]


def test_my_jobs_failure_is_a_slurm_error() -> None:
    runner = FakeRunner({"squeue": fail("squeue: error: Unable to contact slurm controller\n")})
    with pytest.raises(SlurmError, match=r"squeue failed .*Unable to contact slurm controller"):
        slurm.my_jobs(runner)


def test_job_info_finds_the_job() -> None:
    runner = FakeRunner({"squeue": ok(PENDING_LINE + "\n")})
    job = slurm.job_info(runner, "5")
    assert job is not None and (job.job_id, job.state) == ("5", "PENDING")
    assert runner.argvs("squeue") == [tuple(slurm.squeue_job_argv("5"))]


def test_job_info_of_an_unknown_job_is_none() -> None:
    runner = FakeRunner({"squeue": fail("slurm_load_jobs error: Invalid job id specified\n")})
    assert slurm.job_info(runner, "999") is None


def test_job_info_without_a_matching_line_is_none() -> None:
    runner = FakeRunner({"squeue": ok(PENDING_LINE + "\n")})
    assert slurm.job_info(runner, "6") is None


def test_job_info_other_failure_is_a_slurm_error() -> None:
    runner = FakeRunner({"squeue": fail("slurm_load_jobs error: Socket timed out\n")})
    with pytest.raises(SlurmError, match="Socket timed out"):
        slurm.job_info(runner, "5")


def test_cancel() -> None:
    runner = FakeRunner({"scancel": ok()})
    slurm.cancel(runner, [])
    assert runner.calls == []
    slurm.cancel(runner, ["5", "6"])
    assert runner.argvs("scancel") == [("scancel", "5", "6")]


def test_cancel_failure_quotes_scancel() -> None:
    runner = FakeRunner({"scancel": fail("scancel: error: Kill job error on job id 5: Access denied\n")})
    with pytest.raises(SlurmError, match="Access denied"):
        slurm.cancel(runner, ["5"])


# ------------------------------------------------------------------------- scontrol, sinfo

# Captured from Slurm 22.05 (the local cluster): a job held by --begin, and a running one.
SCONTROL_PENDING = (
    "JobId=265 JobName=vscode-remote-cpu UserId=isuser(1001) GroupId=isuser(1001) MCS_label=N/A "
    "Priority=4294901515 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=BeginTime "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 "
    "TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-11-27T03:57:35 "
    "EligibleTime=2026-11-27T04:57:35 AccrueTime=Unknown StartTime=2026-11-27T04:57:35 "
    "EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 "
    "LastSchedEval=2026-11-27T03:57:35 Scheduler=Main Partition=debug AllocNode:Sid=localhost:12865 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=1G,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* "
    "CoreSpec=* MinCPUsNode=1 MinMemoryCPU=1G MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 "
    "OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp "
    "Comment=interactive-slurm:kind=cpu,profile=x  StdErr=/dev/null StdIn=/dev/null "
    "StdOut=/dev/null Power= \n"
)


def test_parse_scontrol_job_pending() -> None:
    job = slurm.parse_scontrol_job(SCONTROL_PENDING)
    assert job == slurm.Job(
        job_id="265", name="vscode-remote-cpu", state="PENDING", reason="BeginTime", nodes="",
        time_left="", time_limit="UNLIMITED", start_time="2026-11-27T04:57:35",
        comment="interactive-slurm:kind=cpu,profile=x", partition="debug",
    )
    assert job.pending and job.meta == {"kind": "cpu", "profile": "x"}


def test_parse_scontrol_job_running_with_spaces_in_values() -> None:
    line = SCONTROL_PENDING.replace("JobState=PENDING Reason=BeginTime", "JobState=RUNNING Reason=None")
    line = line.replace("NodeList= ", "NodeList=vm ").replace("WorkDir=/tmp", "WorkDir=/home/a b")
    job = slurm.parse_scontrol_job(line)
    assert job is not None
    assert (job.state, job.nodes, job.running) == ("RUNNING", "vm", True)


@pytest.mark.parametrize("text", ["", "\n", "No jobs in the system\n"])
def test_parse_scontrol_job_none(text: str) -> None:
    assert slurm.parse_scontrol_job(text) is None


def test_parse_scontrol_job_nonsense() -> None:
    with pytest.raises(SlurmError, match='Could not make sense of scontrol output "JobId=x"'):
        slurm.parse_scontrol_job("JobId=x\n")


@pytest.mark.parametrize(
    ("stderr", "unreachable"),
    [
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", True),
        ("slurm_load_jobs error: Socket timed out on send/recv operation", True),
        ("slurm_load_jobs error: Invalid job id specified", False),
        ("squeue: error: Invalid user: nobody", False),
    ],
)
def test_unreachable(stderr: str, unreachable: bool) -> None:
    error = SlurmError(f"scontrol failed (exit 1): {stderr}", returncode=1, stderr=stderr)
    assert slurm.unreachable(error) is unreachable


def test_parse_sinfo_nodes_one_row_per_node() -> None:
    out = "vm|down*|Not responding\nvm|down*|Not responding\nn2|idle|none\n"
    assert slurm.parse_sinfo_nodes(out) == [
        slurm.Node("vm", "down*", "Not responding"), slurm.Node("n2", "idle", ""),
    ]


@pytest.mark.parametrize(("stderr", "expected"), [
    ("sbatch: error: invalid partition specified: nope\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
     ("Invalid partition name specified", "partition")),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
     "specified\n", ("Invalid account or account/partition combination specified", "account")),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
     ("Requested node configuration is not available", "cpus, mem, gpus or constraint")),
    ("sbatch: error: Batch job submission failed: Invalid qos specification\n",
     ("Invalid qos specification", "qos")),
    ("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit "
     "limit, user's size and/or time limits)\n",
     ("Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
      "account, qos, time, cpus or mem")),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect "
     "failure)\n", None),
    ("", None),
])
def test_submit_refusal_reads_sbatch_in_one_place(stderr: str, expected: object) -> None:
    assert slurm.submit_refusal(stderr) == expected


def test_a_refused_submit_is_one_line_naming_the_profile_key() -> None:
    from interactive_slurm.base.errors import ProxyError
    from interactive_slurm.login import profiles, proxy

    from .fakes import FakeRunner, fail

    runner = FakeRunner({"sbatch": fail(
        "sbatch: error: invalid partition specified: nope\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n")})
    req = proxy.Request(kind="cpu", profile="default")
    res = profiles.load("default").resources("cpu")
    with pytest.raises(ProxyError) as info:
        proxy.submit(runner, req, res)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Slurm refused a cpu session of profile default: Invalid partition "
                              "name specified; change cpu.partition in the profile")
    assert message.endswith("`interactive-slurm profiles set default cpu.partition=VALUE` "
                            "changes it)")


@pytest.mark.parametrize(("stderr", "key", "value", "lists"), [
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
     "combination specified\n", "gpu.account", "other", True),
    ("sbatch: error: Batch job submission failed: Invalid qos specification\n", "gpu.qos", "high",
     True),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not "
     "available\n", "gpu.cpus, gpu.mem, gpu.gpus or gpu.constraint", None, False),
])
def test_a_refusal_names_the_dotted_key_its_value_and_where_valid_values_are_listed(
        stderr: str, key: str, value: str | None, lists: bool) -> None:
    """What the proxy says when sbatch refuses the account or QOS a profile names (Slurm with
    AccountingStorageEnforce=associations,qos): the key as `profiles set` spells it, the value
    the profile gave, and where the user's own accounts and QOS are listed."""
    from dataclasses import replace

    from interactive_slurm.base.errors import ProxyError
    from interactive_slurm.login import profiles, proxy

    from .fakes import FakeRunner, fail

    req = proxy.Request(kind="gpu", profile="mylab")
    res = replace(profiles.load("default").resources("gpu"), account="other", qos="high")
    with pytest.raises(ProxyError) as info:
        proxy.submit(FakeRunner({"sbatch": fail(stderr)}), req, res)
    message = str(info.value)
    assert "\n" not in message
    assert f"; change {key}{f' (now {value})' if value else ''} in the profile" in message
    setting = key if value else "gpu.KEY"
    assert f"`interactive-slurm profiles set mylab {setting}=VALUE` changes it" in message
    assert ("`sacctmgr show assoc user=$USER format=account,qos` lists the accounts and QOS you "
            "have" in message) is lists


@pytest.mark.parametrize(("reason", "key"), [
    ("PartitionConfig", "cpus, mem or gpus"), ("PartitionTimeLimit", "time"),
    ("InvalidAccount", "account"), ("Priority", None), ("Resources", None),
    ("QOSMaxCpuPerUserLimit", None),  # a per-user limit: frees up when other jobs end
])
def test_hopeless_pending_reasons(reason: str, key: str | None) -> None:
    assert slurm.hopeless(reason) == key


def test_a_hopeless_reason_counts_when_two_answers_in_a_row_give_it() -> None:
    assert slurm.hopeless_settled("PartitionConfig", "") is None  # 20.11's passing first reason
    assert slurm.hopeless_settled("PartitionTimeLimit", "PartitionConfig") is None
    assert slurm.hopeless_settled("PartitionTimeLimit", "PartitionTimeLimit") == "time"
    assert slurm.hopeless_settled("Resources", "Resources") is None
    # PartitionConfig (20.11's passing reason for a job over the time limit) must last 10 s.
    assert slurm.hopeless_settled("PartitionConfig", "PartitionConfig", 2.0) is None
    assert slurm.hopeless_settled("PartitionConfig", "PartitionConfig", 10.0) == "cpus, mem or gpus"
