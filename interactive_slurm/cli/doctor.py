"""The ``doctor`` verb: click only; the checks are in :mod:`login.doctor` and :mod:`laptop.doctor`.

Where it runs decides what it checks: on a laptop (``config.toml`` has a ``[clusters]`` table
with the host) the laptop's side, the login hop and, through it, the cluster's own doctor; anywhere
else the login node's side. ``--in-job`` (hidden) is the node's side of ``--job``: the login
node's doctor runs it inside the job through an ``srun`` step and reads its JSON.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import click

from interactive_slurm.base import checks
from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.cli import base as cli_base

if TYPE_CHECKING:
    from interactive_slurm.laptop.clusters import Cluster


def _ssh_user_config() -> Path:
    """The file ssh reads without ``-F``: ``~/.ssh/config`` of the account's home (passwd's, not
    ``$HOME``, as ssh itself does)."""
    try:
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "config"
    except (ImportError, KeyError):  # Windows; a uid passwd does not know
        return Path.home() / ".ssh" / "config"


def _laptop_cluster(host: str) -> Cluster | None:
    """The cluster setup made on this laptop whose hosts include ``host`` (None: not a laptop)."""
    from interactive_slurm.laptop import clusters

    try:
        set_up = clusters.load()
    except InteractiveSlurmError:
        return None  # the cluster-side checks report config.toml's error
    for cluster in set_up:
        if host in cluster.hosts:
            return cluster
    if set_up:
        hosts = ", ".join(h for c in set_up for h in c.hosts)
        raise click.BadParameter(f"{host} is not a host setup made on this laptop ({hosts})",
                                 param_hint="--host")
    return None


@click.command("doctor")
@click.option("--host", default="slurm-cpu", show_default=True,
              help="On a laptop: the ssh host to check (one that setup made).")
@click.option("--profile",
              help="The profile your connections use (default: default_profile); a misfit of "
                   "another profile only warns.")
@click.option("--job", is_flag=True,
              help="Also check a real session: your running cpu session, or a short job of the "
                   "smallest profile that doctor starts and cancels when it ends. Checks its "
                   "sshd, this login node's TCP reach to its port, an srun step into it, "
                   "terminals, container runtimes and the internet on its node.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of checks) instead of text.")
@click.option("--in-job", is_flag=True, hidden=True,
              help="The node's checks, run inside the job by `doctor --job` (through srun).")
@click.pass_context
def doctor_cmd(ctx: click.Context, host: str, profile: str | None, job: bool, as_json: bool,
               in_job: bool) -> None:
    """Check every part of the path a connection takes, and say how to fix what is wrong.

    On a laptop: ssh and its config, the key, known_hosts, the shared login connection, VS
    Code's settings, the login hop, then the cluster's checks through it. On the login node: the
    install, config and folders, session records, Slurm and its partitions against every
    profile, the accounts and QOS the profiles name, the home directory's free space. With
    --job, a session end to end, on its compute node too (a job doctor starts is cancelled when
    it ends, also on Ctrl-C). One line per check (ok, warn or FAIL, with the fix); the exit
    status is 0 only if nothing failed.

    \b
    Examples:
      interactive-slurm doctor
      interactive-slurm doctor --job
      interactive-slurm doctor --host slurm-gpu --json
    """
    runner = cli_base.runner()
    found: list[checks.Check]
    if in_job:
        from interactive_slurm.base import config
        from interactive_slurm.node import nodecheck

        try:
            sshd = config.load().sshd
        except InteractiveSlurmError:
            sshd = config.Config().sshd  # the login node's doctor reports config.toml's error
        found = nodecheck.run(nodecheck.Inputs(runner=runner, sshd=sshd,
                                               used=profile or "default"))
    elif (cluster := _laptop_cluster(host)) is not None:
        from interactive_slurm.laptop import doctor as laptop_doctor

        found = laptop_doctor.run(laptop_doctor.Inputs(
            runner=runner, cluster=cluster, alias=host, system=platform.system(),
            home=Path.home(), env=dict(os.environ), job=job, profile=profile,
            default_ssh_config=_ssh_user_config(),
        ))
    else:
        from interactive_slurm.login import doctor as login_doctor

        found = login_doctor.run(login_doctor.Inputs(runner=runner, profile=profile, job=job))
    click.echo(checks.format_json(found) if as_json else checks.format_text(found), nl=False)
    ctx.exit(checks.exit_status(found))
