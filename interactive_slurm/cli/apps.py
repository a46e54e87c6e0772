"""The web-app verbs: ``open`` (laptop), ``remote app start|list|stop`` (login node or session)
and the hidden ``app-serve`` (the app's supervisor in the job).

Thin click layer over :mod:`interactive_slurm.laptop.opener`,
:mod:`interactive_slurm.login.remoteapps` and :mod:`interactive_slurm.node.appserve`.
"""

from __future__ import annotations

import json
import sys

import click

from interactive_slurm.cli import base as cli_base


@click.command("open", context_settings={"ignore_unknown_options": True})
@click.argument("app")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]")
@click.option("--host", default="slurm-cpu", show_default=True,
              help="The session host to run the app in (a Host of setup's block).")
@click.option("-F", "--ssh-config", metavar="FILE", help="ssh's config file (ssh -F).")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="The laptop's port for the forward (default: a free one).")
@click.option("--workdir", metavar="DIR",
              help="The folder the app starts in on the node, relative to your home there "
                   "(default: your home; tensorboard reads its logs there).")
@click.option("--keep", is_flag=True, help="Leave the app running in the job after Ctrl-C.")
@click.option("--no-browser", is_flag=True, help="Only print the URL.")
def open_cmd(app: str, args: tuple[str, ...], host: str, ssh_config: str | None, port: int,
             workdir: str | None, keep: bool, no_browser: bool) -> None:
    """Run APP (jupyter, lab, code-server, tensorboard or your own recipe) in the session's job
    and open it here.

    Connects through HOST (starting the session if there is none), starts the app in the job
    (or finds it running), forwards it to 127.0.0.1 on this machine, prints its URL with the
    token and opens the browser where there is one. Ctrl-C ends the forward and stops the app
    (not with --keep). ARGS after -- go to the app's command.

    \b
    Examples:
      interactive-slurm open lab
      interactive-slurm open tensorboard --host slurm-gpu --workdir runs
    """
    from interactive_slurm.laptop import opener

    req = opener.Request(app, host=host, ssh_config=ssh_config, args=args, workdir=workdir,
                         port=port, keep=keep, browser=not no_browser)
    sys.exit(opener.Opener().run(req))


@click.command("app-serve", hidden=True)
@click.argument("spec")
def app_serve_cmd(spec: str) -> None:
    """The supervisor of one app in the job (started by `remote app start`; not for people).

    \b
    Example (what `remote app start` runs, detached):
      python -I -m interactive_slurm app-serve /tmp/interactive-slurm-1234-app_lab_x/spec.json
    """
    from interactive_slurm.node import appserve

    sys.exit(appserve.serve(spec))


@click.group("app")
def app_group() -> None:
    """Web apps in your sessions' jobs: start, list, stop.

    In a session they run here; on the login node start and stop go into the job through its
    session (the newest, or --job).

    \b
    Example:
      remote app start lab --job 1234
    """


@app_group.command("start", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]")
@click.option("--job", "job_id", metavar="JOBID", help="The session's job (default: this one, "
                                                        "or the newest).")
@click.option("--workdir", metavar="DIR",
              help="The folder the app starts in, relative to your home (default: home).")
@click.option("--json", "as_json", is_flag=True, help="Print the app's record as JSON (one line).")
def app_start_cmd(name: str, args: tuple[str, ...], job_id: str | None, workdir: str | None,
                  as_json: bool) -> None:
    """Start the app NAME in a session's job, or find it running; print how to reach it.

    \b
    Example:
      remote app start jupyter -- --ServerApp.max_buffer_size=2000000000
    """
    from interactive_slurm.login import remoteapps

    rec = remoteapps.start(cli_base.runner(), name, job_id=job_id, args=args, workdir=workdir)
    click.echo(json.dumps(rec) if as_json else remoteapps.describe(rec))


@app_group.command("list")
@click.option("--job", "job_id", metavar="JOBID", help="Only this job's apps.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (without the tokens).")
def app_list_cmd(job_id: str | None, as_json: bool) -> None:
    """List the apps of your sessions: job, app, state, node, supervisor pid, socket, log.

    \b
    Example:
      remote app list --json
    """
    from interactive_slurm.login import remoteapps
    from interactive_slurm.node import apps

    rows = remoteapps.records(cli_base.runner(), job_id)
    if as_json:
        click.echo(json.dumps([{**r.public(), "state": apps.state(r)} for r in rows], indent=2))
    else:
        click.echo(apps.format_table(rows))


@app_group.command("stop")
@click.argument("name")
@click.option("--job", "job_id", metavar="JOBID", help="The session's job (default: this one, "
                                                        "or the newest).")
def app_stop_cmd(name: str, job_id: str | None) -> None:
    """Stop the app NAME: its processes end and its socket goes.

    \b
    Example:
      remote app stop tensorboard --job 1234
    """
    from interactive_slurm.login import remoteapps

    job = remoteapps.stop(cli_base.runner(), name, job_id=job_id)
    click.echo(f"stopped {name} in job {job}", err=True)
