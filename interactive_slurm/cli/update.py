"""The update verbs: ``remote check``, ``remote update`` (also ``interactive-slurm update``) and
the hidden ``interactive-slurm self-check`` a new install must pass.

Thin click layer over :mod:`interactive_slurm.install.updater` (imported inside the commands: GitPython
is loaded only when an update verb runs). Errors are reported by ``cli.main``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from interactive_slurm.base import config, folders
from interactive_slurm.base.errors import UsageError
from interactive_slurm.cli import base as cli_base
from interactive_slurm.install import installs


def _say(message: str) -> None:
    click.echo(f"update: {message}", err=True)


def _log(message: str) -> None:
    click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", err=True)


@click.command("check")
def check_cmd() -> None:
    """Show the installed version and the newest one on your update channel.

    Fetches the tags of [update] url in config.toml; installs nothing.

    \b
    Example:
      remote check
    """
    from interactive_slurm.install import updater

    cfg = config.load()
    status = updater.check(updater.install_root(), cfg.update, _say)
    click.echo(f"install root: {status.root}")
    click.echo(f"installed:    {status.current or 'none'}"
               + (f" (also: {', '.join(v for v in status.installed if v != status.current)})"
                  if len(status.installed) > 1 else ""))
    click.echo(f"channel:      {status.channel}")
    click.echo(f"available:    {status.available or '-'} ({status.reason})")
    click.echo(f"automatic:    {'on' if cfg.update.automatic else 'off'}, every "
               f"{cfg.update.interval_hours:g} h")


@click.command("update")
@click.option("--to", "to", metavar="REF", help="Install this tag (or branch, or commit) now.")
@click.option("--rollback", is_flag=True, help="Switch back to the version installed before.")
@click.option("--enable", "enable", flag_value="on", default=None,
              help="Turn automatic checks on ([update] enabled in config.toml).")
@click.option("--disable", "enable", flag_value="off", help="Turn automatic checks off.")
@click.option("--auto", is_flag=True, hidden=True, help="The proxy's detached automatic check.")
def update_cmd(to: str | None, rollback: bool, enable: str | None, auto: bool) -> None:
    """Update the cluster install to the newest release of your channel, and switch to it.

    The new version is installed next to the current one and checked; `current` is switched only
    if the check passes, so a failed update changes nothing. Running sessions keep their version.

    \b
    Examples:
      remote update
      remote update --to v0.2.0
      remote update --rollback
      remote update --disable
    """
    # git and pip make files with the umask: never writable by others here (this process submits
    # no job, so the sessions' umask is not changed by it).
    os.umask(os.umask(0o022) | 0o022)
    chosen = [name for name, on in (("--to", to is not None), ("--rollback", rollback),
                                    ("--enable/--disable", enable is not None), ("--auto", auto))
              if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined")
    if enable is not None:
        cfg = config.set_update_enabled(Path(folders.config_file()), enable == "on")
        state = "on" if enable == "on" else "off"
        note = "" if cfg.update.url or enable == "off" else " (they run once [update] url is set)"
        click.echo(f"automatic checks {state} in {Path(folders.config_file())}{note}")
        if enable == "on":
            from interactive_slurm.install import updater

            updater.stamp_file().unlink(missing_ok=True)  # due at the next connection
        return
    from interactive_slurm.install import updater

    root = updater.install_root()
    if auto:
        sys.exit(updater.auto_check(cli_base.runner(), root, _log))
    vid: str | None
    if rollback:
        vid = updater.rollback(root, _say)
    else:
        if to is not None:
            config.check_channel(to)
        vid = updater.update(cli_base.runner(), root, config.load().update, _say, to=to)
    click.echo(installs.current(root) if vid else f"unchanged: {installs.current(root) or 'none'}")


@click.command("self-check", hidden=True)
def self_check_cmd() -> None:
    """Dry-run the proxy's and the session's code paths (run on a new install before switching).

    \b
    Example:
      ~/.local/share/interactive-slurm/versions/ID/bin/interactive-slurm self-check
    """
    from interactive_slurm.install import selfcheck

    for line in selfcheck.run():
        click.echo(f"ok {line}")
