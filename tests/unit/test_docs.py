"""Every `interactive-slurm ...` and `remote ...` command shown in TUTORIAL.md and README.md is
one the CLI accepts: the verb exists and its options and arguments parse (what they do is tested
end to end elsewhere; this keeps the documents from drifting away from the code)."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from interactive_slurm.cli import main as cli
from interactive_slurm.cli.remote import remote_cli

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {"interactive-slurm": cli.cli, "remote": remote_cli}


def documented_commands(name: str) -> list[str]:
    text = (ROOT / name).read_text()
    commands = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            line = re.split(r"\s+#\s", line)[0].split(" >> ")[0].strip()
            if line.split(" ", 1)[0] in PROGRAMS:
                commands.append(line)
    return commands


def _rest(ctx: click.Context) -> list[str]:
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 8.0/8.1 need it
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def parse(command: str) -> None:
    words = shlex.split(command)
    group: click.Command = PROGRAMS[words[0]]
    args = words[1:]
    ctx = group.make_context(words[0], list(args), resilient_parsing=False)
    while isinstance(group, click.Group) and _rest(ctx):
        rest = _rest(ctx)
        name, sub, rest = group.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"{command}: no verb {rest[0]!r}"
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        group = sub


@pytest.mark.parametrize("doc", ["TUTORIAL.md", "README.md"])
def test_documented_commands_parse(doc: str) -> None:
    commands = documented_commands(doc)
    assert commands, f"no commands found in {doc}"
    for command in commands:
        try:
            parse(command)
        except click.exceptions.Exit:  # --version, --help: parsed and answered
            continue
        except click.UsageError as exc:
            raise AssertionError(f"{doc}: `{command}`: {exc.format_message()}") from exc


def test_the_tutorial_walks_through_setup_vscode_and_the_gpu_host() -> None:
    commands = documented_commands("TUTORIAL.md")
    assert any(c.startswith("interactive-slurm setup ") for c in commands)
    assert "interactive-slurm clusters" in commands
    assert any("--uninstall" in c for c in commands)
    text = (ROOT / "TUTORIAL.md").read_text()
    for needed in ("slurm-gpu", "Windows", "macOS", "VS Code", "remote.SSH.connectTimeout"):
        assert needed in text
