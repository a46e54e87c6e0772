"""Session management on the login node or inside a session: list, cancel, ssh, gpuswap."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from interactive_slurm.base import folders, selfcmd, sshhosts
from interactive_slurm.base.errors import EndpointError, UsageError
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.login import proxy, slurm
from interactive_slurm.node import apps, containers, hostca


@dataclass(frozen=True)
class Row:
    job: slurm.Job
    endpoint: endpoint.Endpoint | None
    apps: tuple[str, ...] = ()  # the web apps recorded in the job (remote app list)

    def as_dict(self) -> dict[str, object]:
        ep = self.endpoint
        return {
            "job_id": self.job.job_id,
            "name": self.job.name,
            "kind": self.job.kind,
            "profile": self.job.profile,
            "state": self.job.state,
            "reason": self.job.reason,
            "node": self.job.nodes,
            "time_left": self.job.time_left,
            "endpoint": f"{ep.host}:{ep.port}" if ep else None,
            "log": str(Path(folders.job_log(self.job.job_id))),
            "apps": list(self.apps),
            **self.container(),
        }

    def container(self) -> dict[str, object]:
        """The job's container image and runtime: what the session uses, once it runs; before
        that, what the job asked for (runtime ``auto``: the first one found on the node)."""
        image = self.job.container
        if not image:
            return {}
        used = containers.read_record(Path(folders.job_dir(self.job.job_id)))
        runtime = used[0] if used else self.job.meta.get("runtime") or "auto"
        return {"container": image, "container_runtime": runtime}


def sessions(runner: Runner) -> list[Row]:
    rows = []
    jobs = slurm.my_jobs(runner)
    endpoint.prune({job.job_id for job in jobs})
    for job in jobs:
        try:
            ep = endpoint.read_job(job.job_id)
        except (EndpointError, OSError):  # an unreadable or unsafe record shows as none
            ep = None
        names = tuple(rec.name for rec in apps.read_records(job.job_id)) if ep else ()
        rows.append(Row(job, ep, names))
    return sorted(rows, key=lambda r: int(r.job.job_id))


def format_table(rows: Sequence[Row]) -> str:
    header: tuple[str, ...] = ("JOBID", "KIND", "PROFILE", "STATE", "NODE", "TIME_LEFT", "ENDPOINT")
    with_container = any(row.job.container for row in rows)
    if with_container:
        header += ("CONTAINER",)
    with_apps = any(row.apps for row in rows)
    if with_apps:
        header += ("APPS",)
    body = []
    for row in rows:
        d = row.as_dict()
        state = d["state"] if not row.job.pending else f"{d['state']}({d['reason']})"
        cells = [d["job_id"], d["kind"], d["profile"], state, d["node"] or "-", d["time_left"],
                 d["endpoint"] or "-"]
        if with_container:
            cells.append(f"{d['container_runtime']}:{d['container']}" if "container" in d else "-")
        if with_apps:
            cells.append(",".join(row.apps) or "-")
        body.append(tuple(str(x) for x in cells))
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in (header, *body)
    )


def format_json(rows: Sequence[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2)


def select_for_cancel(rows: Sequence[Row], target: str | None, all_: bool) -> list[slurm.Job]:
    jobs = [r.job for r in rows]
    if all_:
        if target:
            raise UsageError("give a job id or kind, or --all, not both")
        return jobs
    if target in ("cpu", "gpu"):
        return [j for j in jobs if j.kind == target]
    if target:
        chosen = [j for j in jobs if j.job_id == target]
        if not chosen:
            ids = ", ".join(j.job_id for j in jobs) or "none"
            raise UsageError(f"job {target} is not one of your interactive-slurm jobs ({ids})")
        return chosen
    if len(jobs) == 1:
        return jobs
    if not jobs:
        return []
    raise UsageError(
        "you have several sessions (" + ", ".join(j.job_id for j in jobs)
        + "): name a JOBID, cpu, gpu or --all"
    )


def cancel(runner: Runner, jobs: Sequence[slurm.Job]) -> None:
    slurm.cancel(runner, [j.job_id for j in jobs])


def trust_line(runner: Runner) -> str:
    return hostca.known_hosts_line(hostca.ca_public_key(runner))


def ensure_known_hosts(runner: Runner) -> str:
    path = Path(folders.known_hosts_file())
    hostca.write_known_hosts(path, trust_line(runner))
    return str(path)


def connect_command(job_id: str) -> str:
    """The ProxyCommand that reaches ``job_id``'s session through its keyhole (this install)."""
    endpoint.check_job_id(job_id)
    return selfcmd.command("connect", job_id).replace("%", "%%")  # ssh expands %-tokens in a ProxyCommand


#: ssh options that take a value (``ssh(1)``); the others are flags.
_SSH_VALUE_OPTIONS = set("BbcDEeFIiJLlmOoPpQRSWw")


def split_ssh_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Leading ssh options (``-o BatchMode=yes -t``) and the command after them."""
    args = list(args)
    options: list[str] = []
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        options.append(arg)
        if len(arg) == 2 and arg[1] in _SSH_VALUE_OPTIONS and args:
            options.append(args.pop(0))
    return options, args


def ssh_argv(
    ep: endpoint.Endpoint, known_hosts: str, command: Sequence[str] = (),
    options: Sequence[str] = (),
) -> list[str]:
    """ssh into a session through its keyhole, its certificate checked strictly (no prompt).

    ``command`` (after ``--``) is quoted for the remote shell, argument by argument: ssh itself
    would join the arguments with spaces and let the remote shell split them again.
    """
    argv = [
        "ssh",
        "-o", f"ProxyCommand={connect_command(ep.job_id)}",
        *sshhosts.option_args(sshhosts.trust_options(sshhosts.job_alias(ep.job_id), known_hosts)),
        *options,
        "--",
        ep.host,
    ]
    if command:
        argv.append(shlex.join(command))
    return argv


def pick_endpoint(job_id: str | None) -> endpoint.Endpoint:
    if job_id:
        ep = endpoint.read_job(job_id)
        if ep is None:
            raise UsageError(f"job {job_id} has no running session (see `remote list`)")
        return ep
    found = endpoint.find()
    if not found:
        raise UsageError("no running session (start one with `ssh slurm-cpu` or `remote gpuswap`)")
    return found[0]


def gpuswap(
    runner: Runner, *, profile: str, replace: bool, timeout: float, err: TextIO,
    transport: str = "auto",
) -> tuple[endpoint.Endpoint, str | None]:
    """Get a GPU session ready; with ``replace``, the CPU job to cancel (this one)."""
    here = os.environ.get("SLURM_JOB_ID")
    cpu_job: str | None = None
    if replace:
        mine = {j.job_id: j for j in slurm.my_jobs(runner)}
        if not here or here not in mine or mine[here].kind != "cpu":
            raise UsageError("--replace works inside a CPU session (no interactive-slurm CPU job here)")
        cpu_job = here
    req = proxy.Request("gpu", profile, transport=transport)
    ep, sock, _ = proxy.ensure_session(runner, req, timeout=timeout, err=err)
    sock.close()
    return ep, cpu_job
