"""The ``remote`` verbs: list, cancel, ssh, gpuswap, app, check and update (also
``interactive-slurm remote ...``).

Thin click layer over :mod:`interactive_slurm.login.remote`; errors are reported by ``cli.main``.
"""

from __future__ import annotations

import sys

import click

from interactive_slurm import __version__
from interactive_slurm.base import config, values
from interactive_slurm.base.errors import UsageError
from interactive_slurm.base.runner import exec_replace
from interactive_slurm.cli import base as cli_base
from interactive_slurm.cli.apps import app_group
from interactive_slurm.cli.update import check_cmd, update_cmd
from interactive_slurm.login import remote, slurm


@click.group("remote", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remote")
def remote_cli() -> None:
    """Manage your interactive-slurm sessions (login node or inside a session).

    \b
    Example:
      remote list
    """
    from interactive_slurm.base import folders

    folders.check_trusted()  # StrictModes for config, profiles, known_hosts and state


@remote_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """List your sessions: job, kind, profile, state, node, time left, endpoint.

    \b
    Example:
      remote list --json
    """
    rows = remote.sessions(cli_base.runner())
    click.echo(remote.format_json(rows) if as_json else remote.format_table(rows))


@remote_cli.command("cancel")
@click.argument("target", required=False)
@click.option("--all", "all_", is_flag=True, help="Cancel all your interactive-slurm jobs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cancel_cmd(target: str | None, all_: bool, yes: bool) -> None:
    """Cancel sessions: TARGET is a job id, `cpu` or `gpu` (only this tool's jobs).

    \b
    Example:
      remote cancel gpu --yes
    """
    runner = cli_base.runner()
    jobs = remote.select_for_cancel(remote.sessions(runner), target, all_)
    if not jobs:
        click.echo("nothing to cancel", err=True)
        return
    ids = ", ".join(f"{j.job_id} ({j.name}, {j.state})" for j in jobs)
    if not yes and sys.stdin.isatty() and not click.confirm(f"cancel {ids}?", err=True):
        raise click.Abort()
    remote.cancel(runner, jobs)
    click.echo(f"cancelled {ids}", err=True)


@remote_cli.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("job_id", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(job_id: str | None, command: tuple[str, ...]) -> None:
    """ssh from the login node into a running session (the newest, or JOB_ID).

    \b
    Example:
      remote ssh 1234 -- nvidia-smi
    """
    runner = cli_base.runner()
    ep = remote.pick_endpoint(job_id)
    known = remote.ensure_known_hosts(runner)
    options, argv = remote.split_ssh_options(command)
    exec_replace(remote.ssh_argv(ep, known, argv, options))


@remote_cli.command("gpuswap", context_settings={"ignore_unknown_options": True})
@click.option("--profile", help="GPU resource profile (default: default_profile).")
@click.option("--replace", is_flag=True,
              help="Cancel this CPU session once the GPU session is ready.")
@click.option("--timeout", type=float, help="Seconds to wait for the GPU session.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def gpuswap_cmd(
    profile: str | None, replace: bool, timeout: float | None, command: tuple[str, ...]
) -> None:
    """From a CPU session: get a GPU session and open a shell (or run COMMAND) there.

    With --replace the CPU job is cancelled once the GPU session is ready (this shell ends);
    reconnect with `ssh slurm-gpu`.

    \b
    Example:
      remote gpuswap --profile development -- nvidia-smi
    """
    if replace and command:
        raise UsageError("--replace opens no shell; run COMMAND after `ssh slurm-gpu`")
    runner = cli_base.runner()
    cfg = config.load()
    name = values.check_profile_name(profile or cfg.default_profile)
    ep, cpu_job = remote.gpuswap(
        runner, profile=name, replace=replace, timeout=timeout or cfg.wait_timeout,
        err=sys.stderr, transport=cfg.transport,
    )
    if cpu_job:
        click.echo(f"GPU session ready in job {ep.job_id} on {ep.host}; cancelling this CPU "
                   f"job {cpu_job}. Reconnect with: ssh slurm-gpu", err=True)
        slurm.cancel(runner, [cpu_job])
        return
    known = remote.ensure_known_hosts(runner)
    options, argv = remote.split_ssh_options(command)
    exec_replace(remote.ssh_argv(ep, known, argv, options))


remote_cli.add_command(app_group)
remote_cli.add_command(check_cmd)
remote_cli.add_command(update_cmd)
