"""Slurm: pure builders and parsers, and submit/list/cancel on top of the runner.

Builders and parsers are pure functions of their inputs (tested with captured real output); the
few functions that take a ``Runner`` are thin and quote Slurm's own words in their errors.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interactive_slurm import __version__
from interactive_slurm.base import selfcmd
from interactive_slurm.base.errors import CommandError, SlurmError, SubmitRefused
from interactive_slurm.base.runner import Runner, check_result

JOB_PREFIX = "vscode-remote-"
COMMENT_PREFIX = "interactive-slurm:"
TEMPLATES = Path(__file__).parents[1] / "templates"  # package data, beside the folders

PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", "SIGNALING"})
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "COMPLETING", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "STOPPED", "TIMEOUT",
    }
)

# squeue fields, "|"-separated; the free-text comment goes last so it may hold anything.
_SQUEUE_FIELDS = ("%i", "%j", "%T", "%r", "%N", "%L", "%l", "%S", "%k")
SQUEUE_FORMAT = "|".join(_SQUEUE_FIELDS)


@dataclass(frozen=True)
class Job:
    """One job as squeue shows it."""

    job_id: str
    name: str
    state: str
    reason: str
    nodes: str
    time_left: str
    time_limit: str
    start_time: str
    comment: str
    partition: str = ""

    @property
    def meta(self) -> dict[str, str]:
        return parse_comment(self.comment)

    @property
    def kind(self) -> str | None:
        return self.meta.get("kind")

    @property
    def profile(self) -> str | None:
        return self.meta.get("profile")

    @property
    def container(self) -> str:
        return self.meta.get("container", "")

    @property
    def is_ours(self) -> bool:
        return self.name.startswith(JOB_PREFIX) and self.comment.startswith(COMMENT_PREFIX)

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


def job_name(kind: str, profile: str) -> str:
    """``vscode-remote-cpu``; a profile other than ``default`` adds a suffix."""
    return f"{JOB_PREFIX}{kind}" if profile == "default" else f"{JOB_PREFIX}{kind}-{profile}"


def build_comment(
    *, kind: str, profile: str, res_hash: str, container: str = "", install: str = "-",
    runtime: str = "",
) -> str:
    """The job's ``--comment``; ``install`` is the versioned install it runs from (``-``: none),
    so the updater never prunes a version a session uses."""
    parts = [f"kind={kind}", f"profile={profile}", f"res={res_hash}", f"version={__version__}",
             f"install={install}"]
    if container:
        parts.append(f"container={container}")
        if runtime:
            parts.append(f"runtime={runtime}")
    return COMMENT_PREFIX + ",".join(parts)


def parse_comment(comment: str) -> dict[str, str]:
    """The key=value pairs of a comment written by :func:`build_comment` ({} for others)."""
    if not comment.startswith(COMMENT_PREFIX):
        return {}
    pairs = (item.partition("=") for item in comment[len(COMMENT_PREFIX):].split(","))
    return {key: value for key, sep, value in pairs if sep}


def render_batch_script(
    *, python: str, kind: str, profile: str, valid_for: int, container: str | None = None,
    runtime: str | None = None, idle_timeout: int = 0, transport: str | None = None,
) -> str:
    """The batch script (templates/session.sbatch) with every value shell-quoted."""
    args = ["session", "--kind", kind, "--profile", profile, "--valid-for", str(valid_for)]
    if idle_timeout:
        args += ["--idle-timeout", str(idle_timeout)]
    if transport:
        args += ["--transport", transport]
    if container:
        args += ["--container", container]
        if runtime:
            args += ["--container-runtime", runtime]
    template = string.Template((TEMPLATES / "session.sbatch").read_text())
    return template.substitute(
        version=__version__,
        kind=kind,
        profile=profile,
        # -I: isolated from the job's cwd ($HOME) and PYTHON* variables, so a ~/socket.py or
        # ~/platformdirs.py cannot change the session.
        command=shlex.join([*selfcmd.module_argv(python), *args]),
    )


def sbatch_argv(
    *, name: str, comment: str, log_path: Path, workdir: Path, resource_args: Sequence[str]
) -> list[str]:
    """The sbatch command; the script itself goes to sbatch's stdin.

    ``workdir`` (the home directory) keeps the job independent of where ssh was started.
    """
    return [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        f"--comment={comment}",
        f"--output={log_path}",
        f"--chdir={workdir}",
        "--open-mode=append",
        *resource_args,
    ]


def parse_sbatch(output: str) -> str:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``)."""
    first = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = first.split(";", 1)[0]
    if not (job_id.isascii() and job_id.isdigit()):
        raise SlurmError(f'Could not make sense of sbatch output "{output.strip()}"')
    return job_id


def parse_squeue(output: str) -> list[Job]:
    """Jobs from squeue output in :data:`SQUEUE_FORMAT` with ``--noheader``."""
    jobs = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", len(_SQUEUE_FIELDS) - 1)
        if len(fields) != len(_SQUEUE_FIELDS) or not fields[0].strip():
            raise SlurmError(f'Could not make sense of squeue output line "{line}"')
        jobs.append(Job(*(f.strip() for f in fields)))
    return jobs


def squeue_mine_argv() -> list[str]:
    """The user's jobs: 2 slurmctld RPCs (partitions, the user's jobs); ``--local`` skips the
    federation lookup, a third RPC, and a job submitted here is always known here."""
    return ["squeue", "--local", "--me", "--noheader", f"--format={SQUEUE_FORMAT}"]


def squeue_job_argv(job_id: str) -> list[str]:
    return ["squeue", "--jobs", job_id, "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}"]


def scontrol_job_argv(job_id: str) -> list[str]:
    """One job in one slurmctld RPC (squeue needs 3: federation, partitions, the job)."""
    return ["scontrol", "--local", "--oneliner", "show", "job", job_id]


_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_scontrol_fields(line: str) -> dict[str, str]:
    """``Key=value`` pairs of one ``scontrol --oneliner`` line (a value may hold spaces)."""
    keys = list(_SCONTROL_KEY.finditer(line))
    fields = {}
    for match, following in zip(keys, [*keys[1:], None]):
        end = following.start() if following else len(line)
        fields[match.group(1)] = line[match.end():end].strip()
    return fields


def parse_scontrol_job(output: str) -> Job | None:
    """The job of ``scontrol --oneliner show job J`` output (None when it shows none)."""
    for line in output.splitlines():
        f = parse_scontrol_fields(line)
        if "JobId" not in f:
            continue
        if "JobState" not in f or not f["JobId"].isdigit():
            raise SlurmError(f'Could not make sense of scontrol output "{line.strip()}"')
        nodes = f.get("NodeList", "")
        return Job(
            job_id=f["JobId"], name=f.get("JobName", ""), state=f["JobState"],
            reason=f.get("Reason", ""), nodes="" if nodes == "(null)" else nodes, time_left="",
            time_limit=f.get("TimeLimit", ""), start_time=f.get("StartTime", ""),
            comment=f.get("Comment", ""), partition=f.get("Partition", ""),
        )
    return None


#: What the Slurm commands say when slurmctld does not answer (22.05 and later).
UNREACHABLE_MARKERS = (
    "Unable to contact slurm controller",
    "Socket timed out on send/recv",
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
    "Connection refused",
    "backup controller in standby",
    "did not finish within",
)


def unreachable(error: CommandError) -> bool:
    """Whether ``error`` says that slurmctld did not answer (worth retrying), not "no"."""
    text = f"{error} {error.stderr}"
    return any(marker in text for marker in UNREACHABLE_MARKERS)


#: What sbatch says of a request it will never run (lower case), and the profile key(s) to change.
REFUSALS: tuple[tuple[str, str], ...] = (
    ("invalid partition", "partition"),
    ("invalid account", "account"),
    ("invalid qos", "qos"),
    ("invalid reservation", "reservation"),
    ("invalid feature specification", "constraint"),
    ("invalid generic resource", "gpus or gpu_type"),
    ("requested node configuration is not available", "cpus, mem, gpus or constraint"),
    ("more processors requested than permitted", "cpus"),
    ("memory specification can not be satisfied", "mem"),
    ("requested time limit is invalid", "time"),
    ("job violates accounting/qos policy", "account, qos, time, cpus or mem"),
)
#: Pending reasons that waiting does not resolve (the request exceeds what the partition or the
#: account allows), and the profile key(s) to change.
HOPELESS_REASONS: dict[str, str] = {
    "PartitionTimeLimit": "time",
    "PartitionNodeLimit": "cpus or mem",
    "PartitionConfig": "cpus, mem or gpus",
    "BadConstraints": "constraint",
    "InvalidAccount": "account",
    "InvalidQOS": "qos",
    "AccountNotAllowed": "account or partition",
    "QOSMaxWallDurationPerJobLimit": "time",
    "QOSMaxCpuPerJobLimit": "cpus",
    "QOSMaxMemoryPerJob": "mem",
    "QOSMaxGRESPerJob": "gpus",
}


def submit_refusal(stderr: str) -> tuple[str, str] | None:
    """(Slurm's reason, the profile key) when sbatch's stderr says the request can never run;
    None for anything else. The reason is sbatch's last ``error:`` line without its prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    reasons = [r.split("submission failed:", 1)[-1].strip() for r in reasons]
    for reason in reversed(reasons):
        for marker, key in REFUSALS:
            if marker in reason.lower():
                return reason, key
    return None


def hopeless(reason: str) -> str | None:
    """The profile key(s) to change when a pending job's ``reason`` will not resolve by waiting."""
    return HOPELESS_REASONS.get(reason.split(",")[0].strip())


#: Seconds a pending reason must have lasted before it counts as hopeless (others: none).
#: Slurm 20.11 shows a job over the partition's time limit as PartitionConfig until its
#: scheduler passes over the job, then PartitionTimeLimit: usually a moment, but seconds when it
#: defers batch jobs after a burst of submissions (or while accounting records the new job).
SETTLE_SECONDS: dict[str, float] = {"PartitionConfig": 10.0}


def hopeless_settled(reason: str, previous: str, lasted: float = 0.0) -> str | None:
    """:func:`hopeless` once two answers in a row gave ``reason`` (``previous``: the reason of
    the answer before) and it has lasted ``lasted`` >= its :data:`SETTLE_SECONDS`. Slurm may
    name a passing reason before its scheduler settles; acting on it would name the wrong
    profile key."""
    if reason != previous or lasted < SETTLE_SECONDS.get(reason, 0.0):
        return None
    return hopeless(reason)


class ReasonWatch:
    """One job's pending reason over successive answers: what :func:`hopeless_settled` needs
    (the reason before, and since when it lasts). Every wait for a job uses one (the proxy's,
    ``doctor --job``'s), so a passing reason is never acted on."""

    def __init__(self, known: Job | None = None) -> None:
        #: The pending reason of the last answer ("": none); a known job's counts as one.
        self.last = known.reason if known is not None and known.pending else ""
        self.since: float | None = None  # when an answer first gave ``last``

    def see(self, job: Job, now: float) -> str | None:
        """The profile key to change once ``job``'s reason has settled into a hopeless one."""
        previous, self.last = self.last, job.reason if job.pending else ""
        if self.last != previous or self.since is None:
            self.since = now
        return hopeless_settled(job.reason, previous, now - self.since) if job.pending else None


def submit(runner: Runner, argv: Sequence[str], script: str) -> str:
    """sbatch ``script``; the job id. :class:`SubmitRefused` (one line: Slurm's reason and the
    key) for a request Slurm will never run; SlurmError quoting sbatch for anything else."""
    result = runner.run(argv, input=script, check=False)
    if result.returncode != 0:
        refusal = submit_refusal(result.stderr)
        if refusal is not None:
            raise SubmitRefused(*refusal, stderr=result.stderr)
    check_result(result, SlurmError)
    return parse_sbatch(result.stdout)


def my_jobs(runner: Runner) -> list[Job]:
    """The user's jobs that interactive-slurm submitted."""
    result = check_result(runner.run(squeue_mine_argv(), check=False), SlurmError)
    return [job for job in parse_squeue(result.stdout) if job.is_ours]


def job_info(runner: Runner, job_id: str) -> Job | None:
    """One job, also after it ended (while slurmctld remembers it); None when unknown."""
    result = runner.run(squeue_job_argv(job_id), check=False)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return None
        check_result(result, SlurmError)
    jobs = [job for job in parse_squeue(result.stdout) if job.job_id == job_id]
    return jobs[0] if jobs else None


def job_state(runner: Runner, job_id: str, timeout: float = 30.0) -> Job | None:
    """One job in one RPC, also after it ended (while slurmctld remembers it); None when unknown.

    The waiting loop's query: ``time_left`` stays empty (it shows state, reason, nodes, start).
    """
    result = runner.run(scontrol_job_argv(job_id), check=False, timeout=timeout)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return None
        check_result(result, SlurmError)
    job = parse_scontrol_job(result.stdout)
    return job if job is not None and job.job_id == job_id else None


#: Node states (sinfo %T, without a trailing ``*`` = not responding) that take no new job.
UNUSABLE_NODE_STATES = ("down", "drain", "fail", "inval", "future", "maint", "power_down",
                        "powered_down", "powering_down", "unknown", "reboot")


def sinfo_nodes_argv(partition: str) -> list[str]:
    return ["sinfo", "--local", "--noheader", "--Node", f"--partition={partition}",
            "--format=%N|%T|%E"]


@dataclass(frozen=True)
class Node:
    name: str
    state: str  # sinfo's long state; a trailing "*" means slurmd is not responding
    reason: str

    @property
    def usable(self) -> bool:
        return not self.state.endswith("*") and not self.state.startswith(UNUSABLE_NODE_STATES)


def parse_sinfo_nodes(output: str) -> list[Node]:
    nodes = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|", 2)
        if len(fields) != 3:
            raise SlurmError(f'Could not make sense of sinfo output line "{line}"')
        name, state, reason = (x.strip() for x in fields)
        nodes[name] = Node(name, state, "" if reason == "none" else reason)
    return list(nodes.values())


def partition_nodes(runner: Runner, partition: str, timeout: float = 30.0) -> list[Node]:
    """The nodes of ``partition`` with their state (2 RPCs: partitions, nodes)."""
    result = check_result(runner.run(sinfo_nodes_argv(partition), check=False, timeout=timeout),
                          SlurmError)
    return parse_sinfo_nodes(result.stdout)


def cancel(runner: Runner, job_ids: Sequence[str]) -> None:
    if job_ids:
        check_result(runner.run(["scancel", *job_ids], check=False), SlurmError)
