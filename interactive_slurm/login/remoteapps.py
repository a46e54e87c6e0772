"""``remote app start|list|stop``: the web apps of your sessions, from the login node or from
inside a session.

Inside the job (the session's shell, or what ``interactive-slurm open`` sends through it) the
work is :mod:`interactive_slurm.node.apps`'. Elsewhere (the login node) ``start`` and ``stop``
go into the job through its session's sshd, as ``remote ssh`` does, and run there; ``list`` reads
the records in the shared state folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from interactive_slurm.base import selfcmd
from interactive_slurm.base.errors import AppError, CommandError, EndpointError
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.login import remote, slurm
from interactive_slurm.node import apps

#: Seconds a start through the session may take (the longest ready_timeout, and a margin).
START_TIMEOUT = 3700.0


def in_job(job_id: str | None, env: Mapping[str, str] = os.environ) -> bool:
    """Whether this runs in the session of ``job_id`` (or, without one, of any job), here."""
    here_job = env.get("SLURM_JOB_ID", "")
    if not here_job or (job_id and job_id != here_job):
        return False
    try:
        apps.here(env)
    except (AppError, EndpointError):
        return False
    return True


def _through_session(runner: Runner, job_id: str | None, words: Sequence[str],
                     timeout: float) -> str:
    """Run ``interactive-slurm WORDS`` in the job's session; its stdout."""
    ep = remote.pick_endpoint(job_id)
    known = remote.ensure_known_hosts(runner)
    argv = remote.ssh_argv(ep, known, [*selfcmd.argv(), *words], ["-T", "-o", "BatchMode=yes"])
    try:
        result = runner.run(argv, timeout=timeout, check=False)
    except CommandError as exc:
        raise AppError(f"could not reach job {ep.job_id}'s session: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"ssh exit {result.returncode}"
        raise AppError(f"in job {ep.job_id}: {apps.clean(last.removeprefix('error: '))}")
    return result.stdout


def start(runner: Runner, name: str, *, job_id: str | None, args: Sequence[str] = (),
          workdir: str | None = None) -> dict[str, object]:
    """Start (or find running) the app ``name`` in the job; its record and ``reused``."""
    if in_job(job_id):
        rec, reused = apps.Starter(runner).start(name, args=args, workdir=workdir)
        return {**rec.as_dict(), "reused": reused}
    words = ["remote", "app", "start", name, "--json"]
    if workdir:
        words += ["--workdir", workdir]
    if args:
        words += ["--", *args]
    out = _through_session(runner, job_id, words, START_TIMEOUT)
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise AppError(f"the session did not answer with an app record: {out.strip()[-200:]!r}") from exc
    if not isinstance(data, dict):
        raise AppError(f"the session did not answer with an app record: {out.strip()[-200:]!r}")
    return data


def stop(runner: Runner, name: str, *, job_id: str | None) -> str:
    """Stop the app ``name`` in the job; the job's id."""
    if in_job(job_id):
        return apps.stop(name).job_id
    ep = remote.pick_endpoint(job_id)
    _through_session(runner, ep.job_id, ["remote", "app", "stop", name], 120.0)
    return ep.job_id


def records(runner: Runner, job_id: str | None) -> list[apps.AppRecord]:
    """The apps of ``job_id``, or of all your sessions' jobs."""
    if job_id:
        endpoint.check_job_id(job_id)
        return apps.read_records(job_id)
    return [rec for job in slurm.my_jobs(runner) for rec in apps.read_records(job.job_id)]


def describe(rec: Mapping[str, object], host_alias: str = "slurm-cpu") -> str:
    """How to reach a started app by hand (``remote app start`` without --json)."""
    url = f"http://127.0.0.1:8888{rec['url']}?token={rec['token']}"
    return "\n".join([
        f"{rec['name']} {'was already running' if rec.get('reused') else 'started'} in job "
        f"{rec['job_id']} on {rec['host']} (supervisor pid {rec['pid']})",
        f"  socket: {rec['socket']}",
        f"  log:    {rec['log']}",
        f"  from your laptop: interactive-slurm open {rec['name']} (or forward it yourself: "
        f"ssh -N -L 8888:{rec['socket']} {host_alias}, then open {url})",
    ])
