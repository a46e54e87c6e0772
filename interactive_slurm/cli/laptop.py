"""The laptop verbs: ``setup`` and ``clusters`` (click only; the work is in :mod:`laptop.setup`).

:mod:`interactive_slurm.laptop` (and with it asyncssh) is imported only inside these commands,
so the cluster side never loads it.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from interactive_slurm.base.errors import UsageError
from interactive_slurm.cli import base as cli_base


class ClickTerminal:
    """Prompts on the terminal (secrets unechoed); without one, nothing can be asked."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()

    def ask(self, prompt: str, *, secret: bool = False, default: str | None = None) -> str:
        """A line from the terminal; a secret may be empty (a key without passphrase)."""
        if default is None and secret:
            default = ""
        value: str = click.prompt(prompt.rstrip(": ") if default else prompt, hide_input=secret,
                                  default=default, prompt_suffix=": " if default else "",
                                  show_default=bool(default) and not secret, err=True)
        return value

    def confirm(self, question: str, *, default: bool = False) -> bool:
        return click.confirm(question, default=default, err=True)

    def say(self, message: str) -> None:
        click.echo(message, err=True)



@click.command("setup")
@click.argument("login", required=False)
@click.option("--user", help="Your user name on the cluster (default: asked, or your local name).")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True,
              help="The login node's SSH port.")
@click.option("--jump", help="Reach the login node through this host ([user@]host[:port], like ssh -J).")
@click.option("--name", default="slurm", show_default=True,
              help="A name for this cluster; its hosts are NAME-cpu and NAME-gpu.")
@click.option("--hosts", help="Host names to create: CPU[,GPU] (default: NAME-cpu,NAME-gpu).")
@click.option("--profile", help="Resource profile the hosts ask for (default: the cluster's default).")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path),
              help="Your SSH key (default: ~/.ssh/id_ed25519, made if missing).")
@click.option("--install-dir", default="~/.local/share/interactive-slurm", show_default=True,
              help="Where to install on the login node (your home is shared with the nodes).")
@click.option("--python", "python", metavar="CMD",
              help="The cluster's Python 3.9+ on the login node, a command or an absolute path "
                   "(default: found by itself: python3, then python3.13 ... python3.9, then "
                   "`module load python3` or `python` in your login shell).")
@click.option("--ssh-config", type=click.Path(dir_okay=False, path_type=Path),
              help="The ssh config file to write the hosts to (default: ~/.ssh/config).")
@click.option("--no-vscode", is_flag=True, help="Leave VS Code's settings alone.")
@click.option("--vscode-server-dir", metavar="DIR",
              help="An absolute folder of yours on the cluster for VS Code's server and "
                   "extensions (Remote-SSH's serverInstallPath), or '~' for your home (VS "
                   "Code's default). Default: home, unless it has less than 2 GiB or 100,000 "
                   "files free; then $SCRATCH or $WORK if it is yours, else a warning.")
@click.option("--yes", "-y", is_flag=True, help="Ask nothing that has a safe default (scripts).")
@click.option("--dry-run", is_flag=True, help="Connect and look; change nothing; print the diffs.")
@click.option("--uninstall", is_flag=True, help="Remove what setup added for --name.")
@click.option("--remove-install", is_flag=True, help="With --uninstall: also remove the cluster install.")
def setup_cmd(login: str | None, user: str | None, port: int, jump: str | None, name: str,
              hosts: str | None, profile: str | None, identity: Path | None, install_dir: str,
              python: str | None, ssh_config: Path | None, no_vscode: bool,
              vscode_server_dir: str | None, yes: bool, dry_run: bool, uninstall: bool,
              remove_install: bool) -> None:
    """Set up this laptop for `ssh slurm-cpu` and VS Code (run on the laptop).

    Connects to LOGIN (asking for your password and a second factor if the cluster wants them),
    adds your key there, installs interactive-slurm on the login node from this laptop (no
    internet needed there), trusts the cluster's session host CA, and writes a managed block
    to ~/.ssh/config and VS Code's Remote-SSH settings. Run it again to upgrade; every file it
    changes is backed up first.

    \b
    Examples:
      interactive-slurm setup login.cluster.example.org --user alice
      interactive-slurm setup login2.other.example.org --name other   # other-cpu, other-gpu
      interactive-slurm setup login.cluster.example.org --vscode-server-dir /scratch/alice
      interactive-slurm setup --uninstall --name other
    """
    from interactive_slurm.laptop import clusters, setup, sshconfig

    term = ClickTerminal()
    if uninstall:
        if not yes and not dry_run and term.interactive and not term.confirm(
                f"Remove what setup added for cluster {name!r}?", default=True):
            raise click.Abort()
        _show(setup.uninstall(name, term, cli_base.runner(), remove_install=remove_install, dry_run=dry_run),
              dry_run)
        return
    if remove_install:
        raise UsageError("--remove-install goes with --uninstall")
    existing = clusters.named(clusters.load(), name)
    if not login:
        default = existing.login if existing else None
        if not term.interactive and not default:
            raise UsageError("give the login node: interactive-slurm setup LOGIN")
        login = default if (default and (yes or not term.interactive)) else term.ask(
            "Login node (host name)", default=default)
    if not user:
        default = existing.user if existing else getpass.getuser()
        user = default if (yes or not term.interactive) else term.ask("User name on the cluster",
                                                                      default=default)
    if identity is None:
        identity = Path(existing.identity) if existing and existing.identity else (
            Path.home() / ".ssh" / "id_ed25519")
    if not identity.exists() and not yes and not dry_run and term.interactive and not term.confirm(
            f"There is no key {identity}. Make a new ed25519 key there?", default=True):
        raise click.Abort()
    if ssh_config is None:
        ssh_config = Path(existing.ssh_config) if existing and existing.ssh_config else (
            Path.home() / ".ssh" / "config")
    req = setup.Request(
        login=login, user=user, identity=identity.expanduser().absolute(), port=port, jump=jump,
        name=name, hosts=sshconfig.parse_hosts(hosts) if hosts else None,
        profile=profile or (existing.profile if existing and existing.profile else None),
        install_dir=install_dir, python=python, ssh_config=ssh_config.expanduser().absolute(),
        vscode=not no_vscode, vscode_server_dir=vscode_server_dir, dry_run=dry_run,
        ask_passphrase=not yes,
    )
    report = setup.run(req, term, cli_base.runner())
    _show(report, dry_run)
    if not dry_run:
        first = report.hosts[0] if report.hosts else "slurm-cpu"
        click.echo(f"done: try `ssh {first}`, or open VS Code's Remote-SSH on {first}", err=True)


def _show(report: object, dry_run: bool) -> None:
    from interactive_slurm.laptop.setup import Report

    assert isinstance(report, Report)
    for line in report.lines:
        click.echo(line, err=True)
    for text in report.manual:
        click.echo(f"warning: {text}", err=True)
    if dry_run:
        for diff in report.diffs:
            click.echo(diff, nl=False)
        click.echo("dry run: nothing was changed", err=True)


@click.command("clusters")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def clusters_cmd(as_json: bool) -> None:
    """List the clusters `setup` has set up on this laptop.

    \b
    Example:
      interactive-slurm clusters
    """
    from interactive_slurm.laptop import clusters
    from interactive_slurm.laptop.setup import describe

    rows = [describe(c) for c in clusters.load()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no clusters set up yet: interactive-slurm setup LOGIN", err=True)
        return
    for r in rows:
        via = f" via {r['jump']}" if r["jump"] else ""
        click.echo(f"{r['name']:<10} {', '.join(r['hosts']):<24} {r['user']}@{r['login']}:{r['port']}{via}"
                   f"  install {r['install']}  profile {r['profile'] or '(default)'}")
