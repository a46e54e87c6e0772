"""The command line: click parses, one core function acts, this module prints.

Errors from the core (``InteractiveSlurmError``) are caught once, by :func:`base.toplevel.run
<interactive_slurm.base.toplevel.run>` around the whole command, and shown as ``error: ...`` on
stderr; ``INTERACTIVE_SLURM_DEBUG=1`` shows the traceback too. Ctrl-C exits 130.
A failing ``proxy`` (what ``ssh slurm-cpu`` runs) adds one more line: run ``doctor``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from interactive_slurm import __version__
from interactive_slurm.base import config, folders, selfcmd, sshhosts, toplevel, values
from interactive_slurm.cli import base as cli_base
from interactive_slurm.login import profiles

KIND = click.Choice(["cpu", "gpu"])

#: The commands kept in other modules, imported only when one of them runs (or ``--help`` lists
#: them): the proxy's slow path loads click and the Slurm layer, not setup, doctor or the updater.
LAZY_COMMANDS = {
    "remote": "interactive_slurm.cli.remote:remote_cli",
    "update": "interactive_slurm.cli.update:update_cmd",
    "self-check": "interactive_slurm.cli.update:self_check_cmd",
    "setup": "interactive_slurm.cli.laptop:setup_cmd",
    "clusters": "interactive_slurm.cli.laptop:clusters_cmd",
    "doctor": "interactive_slurm.cli.doctor:doctor_cmd",
    "open": "interactive_slurm.cli.apps:open_cmd",
    "app-serve": "interactive_slurm.cli.apps:app_serve_cmd",
}


class LazyGroup(click.Group):
    """A group whose :data:`LAZY_COMMANDS` are imported when asked for (click's own pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return lazy_command(cmd_name)
        return super().get_command(ctx, cmd_name)


def lazy_command(name: str) -> click.Command:
    """The command :data:`LAZY_COMMANDS` names ``name``, imported now."""
    import importlib

    module, _, attr = LAZY_COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command) and command.name == name, LAZY_COMMANDS[name]
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="interactive-slurm")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """ssh into a shell inside a Slurm job.

    \b
    Example:
      interactive-slurm ssh-config >> ~/.ssh/config && ssh slurm-cpu
    """
    # doctor reports an unsafe folder as one of its checks; proxy checks in proxy.start.
    if ctx.invoked_subcommand not in ("doctor", "proxy"):
        folders.check_trusted()  # StrictModes for config, profiles, known_hosts and state


@cli.command("proxy")
@click.argument("kind", type=KIND)
@click.option("--profile", help="Resource profile (default: default_profile in config.toml).")
@click.option("--container", default="",
              help="Run the session's sshd in this container image (profile key: container).")
@click.option("--timeout", type=float, help="Seconds to wait for the session (config: wait_timeout).")
def proxy_cmd(kind: str, profile: str | None, container: str, timeout: float | None) -> None:
    """ProxyCommand: connect stdin/stdout to your KIND session, starting one if needed.

    stdout carries only the SSH byte stream; progress and errors go to stderr.

    \b
    Example (~/.ssh/config on the login node):
      Host slurm-cpu
        ProxyCommand interactive-slurm proxy cpu
    """
    from interactive_slurm.login import proxy

    proxy.start(cli_base.runner(), kind, profile, container, timeout)


@cli.command("trust")
@click.option("--write", "write", is_flag=True,
              help="Also write the line to the managed known_hosts file.")
def trust_cmd(write: bool) -> None:
    """Print the known_hosts line that trusts your sessions' host certificates.

    \b
    Example:
      interactive-slurm trust --write
    """
    from interactive_slurm.login import remote
    from interactive_slurm.node import hostca

    line = remote.trust_line(cli_base.runner())
    if write:
        hostca.write_known_hosts(Path(folders.known_hosts_file()), line)
        click.echo(f"wrote {Path(folders.known_hosts_file())}", err=True)
    click.echo(line)


def _ssh_config_block(login: str | None, remote_command: str, multiplex: bool = False) -> str:
    """The Host entries slurm-cpu and slurm-gpu (the laptop's managed block is the same renderer)."""
    known = str(Path(folders.known_hosts_file()))
    more: tuple[tuple[str, str], ...] = ()
    if multiplex:
        control_dir = Path.home() / sshhosts.CONTROL_DIR
        folders.make_private_dirs(control_dir)  # ssh makes the socket, not its folder
        more = sshhosts.multiplex_options(str(control_dir))
    head = ["# BEGIN interactive-slurm (generated; edits here are replaced)"]
    if login:
        head.append(f"# Trust: on {login} run `interactive-slurm trust` and put its line in {known}")
    hosts = []
    for kind in ("cpu", "gpu"):
        if login:
            # ConnectTimeout bounds the hop to the login node only: on the outer entry it would
            # also bound the SSH banner wait, which includes the wait in Slurm's queue.
            command = (f"ssh -o ConnectTimeout={sshhosts.LOGIN_CONNECT_TIMEOUT} {shlex.quote(login)} "
                       f"{remote_command} proxy {kind}")
        elif multiplex:  # the proxy's stderr reaches the terminal despite ControlPersist
            command = shlex.join(sshhosts.tty_stderr([*selfcmd.argv(), "proxy", kind]))
        else:
            command = selfcmd.command("proxy", kind)
        hosts.append(sshhosts.Host(f"slurm-{kind}", kind, command, known, more=more))
    return sshhosts.render(head, hosts, ["# END interactive-slurm"])


@cli.command("ssh-config")
@click.option("--login", help="Login node to hop through (for a laptop's ~/.ssh/config).")
@click.option("--remote-command", default="interactive-slurm", show_default=True,
              help="With --login: how to run interactive-slurm on the login node.")
@click.option("--multiplex/--no-multiplex", default=True, show_default=True,
              help="Share one connection per host (ControlMaster; not with --login: setup "
                   "writes that for a laptop).")
def ssh_config_cmd(login: str | None, remote_command: str, multiplex: bool) -> None:
    """Print Host entries slurm-cpu and slurm-gpu for ~/.ssh/config.

    On the login node it also writes the managed known_hosts file that trusts your host CA,
    and the hosts share one connection each (the first ssh opens a master that later ones
    use); with --login (on a laptop) it prints where to put the line from `interactive-slurm
    trust`.

    \b
    Example:
      interactive-slurm ssh-config >> ~/.ssh/config
    """
    if not login:
        from interactive_slurm.login import remote

        remote.ensure_known_hosts(cli_base.runner())
    click.echo(_ssh_config_block(login, remote_command, multiplex and not login), nl=False)


class _ProfilesGroup(click.Group):
    """`profiles` lists, `profiles NAME` shows (as `profiles show NAME`), `profiles set` edits."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands:
            args = ["show", *args]
        return super().resolve_command(ctx, args)


@cli.group("profiles", cls=_ProfilesGroup, invoke_without_command=True,
           subcommand_metavar="[NAME | set NAME KEY=VALUE...]")
@click.pass_context
def profiles_cmd(ctx: click.Context) -> None:
    """List the resource profiles, show one (NAME) as sbatch options, or set values in one.

    \b
    Examples:
      interactive-slurm profiles development
      interactive-slurm profiles set default gpu.gpus=2
    """
    if ctx.invoked_subcommand:
        return
    cfg = config.load()
    for pname, path in sorted(profiles.available().items()):
        mark = "*" if pname == cfg.default_profile else " "
        click.echo(f"{mark} {pname:<16} {path}")
    click.echo(f"user profiles go in {Path(folders.profiles_dir())}", err=True)


def _echo_profile(prof: profiles.Profile) -> None:
    click.echo(f"{prof.name}: {prof.description} ({prof.source})")
    for kind in profiles.KINDS:
        res = prof.resources(kind)
        args = " ".join(profiles.sbatch_resource_args(res))
        if res.idle_timeout:
            args += f"  (idle_timeout: {values.format_seconds(res.idle_timeout)})"
        click.echo(f"  {kind}: {args}")


@profiles_cmd.command("show")
@click.argument("name")
def profiles_show_cmd(name: str) -> None:
    """Show one profile's sbatch options (`profiles NAME` does the same).

    \b
    Example:
      interactive-slurm profiles show development
    """
    _echo_profile(profiles.load(name))


@profiles_cmd.command("set")
@click.argument("name")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--from", "base", metavar="PROFILE",
              help="Start a new profile from this one (default: the shipped NAME, else empty).")
def profiles_set_cmd(name: str, settings: tuple[str, ...], base: str | None) -> None:
    """Create or edit your profile NAME: set KEY=VALUE, or remove a key with KEY=.

    KEY is a top-level key (both kinds: description, partition, account, qos, reservation,
    constraint, container, container_runtime, extra) or cpu.KEY / gpu.KEY (time, cpus, mem,
    gpus, gpu_type and the same optional keys). extra takes a comma-separated list of sbatch
    options. An existing file of yours keeps its other values and is backed up first
    (NAME.toml.bak-...: comments are not kept); otherwise the shipped profile NAME is the
    start. Nothing is written on any error.

    \b
    Example:
      interactive-slurm profiles set big --from default gpu.gpus=8 gpu.time=12h account=mylab
    """
    from interactive_slurm.login import profile_edit

    result = profile_edit.set_values(name, settings, base=base)
    if result.backup:
        click.echo(f"previous file kept as {result.backup} (comments are not carried over)", err=True)
    if not result.changed:
        click.echo(f"{result.path} unchanged", err=True)
    else:
        click.echo(f"{'created' if result.created else 'wrote'} {result.path}", err=True)
    _echo_profile(result.profile)


def doctor_hint(args: list[str]) -> str | None:
    """The hint after a failing proxy; None when ``args`` is not the proxy's."""
    if args[:1] != ["proxy"]:
        return None
    return toplevel.proxy_hint(args[1] if len(args) > 1 and args[1] in KIND.choices else "cpu")


def _run(group: click.Command, argv: list[str] | None, prog: str) -> None:
    hint = doctor_hint(sys.argv[1:] if argv is None else list(argv)) if group is cli else None

    def body() -> Any:
        try:
            return group.main(args=argv, prog_name=prog, standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            toplevel.fail(hint, exc.exit_code)

    toplevel.run(body, hint=hint)


def main(argv: list[str] | None = None) -> None:
    """Console script ``interactive-slurm``."""
    _run(cli, argv, "interactive-slurm")


def remote_main(argv: list[str] | None = None) -> None:
    """Console script ``remote``."""
    _run(lazy_command("remote"), argv, "remote")
