"""cli.py: exact output of the commands, error reporting, and help texts with examples."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from interactive_slurm import __version__, entry
from interactive_slurm.base import sshhosts
from interactive_slurm.cli import base as cli_base
from interactive_slurm.cli import main as cli
from interactive_slurm.cli.remote import remote_cli
from interactive_slurm.login import profiles
from interactive_slurm.node import hostca

from .clirunner import cli_runner
from .fakes import FakeRunner, fail, ok

SHIPPED = profiles.SHIPPED_DIR


def invoke(group: click.Group, args: list[str]) -> click.testing.Result:
    return cli_runner().invoke(group, args, catch_exceptions=False)


def run_main(capsys: pytest.CaptureFixture[str], main: object, argv: list[str]) -> tuple[int, str, str]:
    """Run a console-script entry point the way the shell does: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)  # type: ignore[operator]
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    """The runner the commands get (through cli's one seam), scripted by each test."""
    runner = FakeRunner()
    monkeypatch.setattr(cli_base, "runner", lambda: runner)
    return runner


# --------------------------------------------------------------------------------- version


@pytest.mark.parametrize(
    ("group", "text"),
    [(cli.cli, "interactive-slurm, version"), (remote_cli, "remote, version")],
)
def test_version(group: click.Group, text: str) -> None:
    result = invoke(group, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"{text} {__version__}\n"


def test_version_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, cli.main, ["--version"]) == (
        0, f"interactive-slurm, version {__version__}\n", ""
    )


# -------------------------------------------------------------------------------- profiles


def test_profiles_lists_shipped_profiles_and_marks_the_default(home: Path) -> None:
    result = invoke(cli.cli, ["profiles"])
    assert result.exit_code == 0
    assert result.stdout == (
        f"* default          {SHIPPED / 'default.toml'}\n"
        f"  development      {SHIPPED / 'development.toml'}\n"
        f"  gpu-intensive    {SHIPPED / 'gpu-intensive.toml'}\n"
        f"  production       {SHIPPED / 'production.toml'}\n"
    )
    assert result.stderr == f"user profiles go in {home / 'config' / 'profiles'}\n"


def test_profiles_shows_user_profiles_and_the_configured_default(home: Path) -> None:
    (home / "config" / "profiles").mkdir(parents=True)
    mine = home / "config" / "profiles" / "development.toml"
    mine.write_text((SHIPPED / "development.toml").read_text())
    (home / "config" / "config.toml").write_text('default_profile = "development"\n')
    result = invoke(cli.cli, ["profiles"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[:2] == [
        f"  default          {SHIPPED / 'default.toml'}",
        f"* development      {mine}",
    ]


def test_profiles_default() -> None:
    result = invoke(cli.cli, ["profiles", "default"])
    assert result.exit_code == 0
    assert result.stdout == (
        f"default: Everyday work: a comfortable CPU node or one GPU. ({SHIPPED / 'default.toml'})\n"
        "  cpu: --nodes=1 --ntasks=1 --time=08:00:00 --cpus-per-task=4 --mem=16G\n"
        "  gpu: --nodes=1 --ntasks=1 --time=04:00:00 --cpus-per-task=12 --mem=32G --gres=gpu:1\n"
    )
    assert result.stderr == ""


def test_profiles_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, cli.main, ["profiles", "nope"]) == (
        1, "",
        "error: unknown profile 'nope'; available profiles: default, development, gpu-intensive, "
        "production\n",
    )


# ----------------------------------------------------------------------------------- proxy

#: The last line a failing proxy writes (what `ssh slurm-cpu` shows last).
HINT = ("interactive-slurm: run 'interactive-slurm doctor' on the login node (or "
        "'interactive-slurm doctor --host slurm-cpu' on your laptop) to find what is wrong\n")


def entry_main(argv: list[str]) -> None:
    """The console script as ssh runs it: a plain ``proxy KIND`` takes the route without click."""
    import sys as _sys

    old = _sys.argv
    _sys.argv = ["interactive-slurm", *argv]
    try:
        entry.main()
    finally:
        _sys.argv = old


#: Both ways to the proxy's slow path: click's, and entry.py's for a plain call.
MAINS = pytest.mark.parametrize("main", [cli.main, entry_main], ids=["click", "plain"])


@MAINS
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "../x"], "error: invalid profile name '../x': use lower-case letters, digits, "
                                "_ and - (at most 32)\n"),
        (["--profile", "A B"], "error: invalid profile name 'A B': use lower-case letters, digits, "
                               "_ and - (at most 32)\n"),
    ],
)
def test_proxy_with_a_bad_profile_fails_before_anything_runs(
    capsys: pytest.CaptureFixture[str], fake: FakeRunner, args: list[str], message: str,
    main: object,
) -> None:
    assert run_main(capsys, main, ["proxy", "cpu", *args]) == (1, "", message + HINT)
    assert fake.calls == []


def test_proxy_with_a_bad_container(capsys: pytest.CaptureFixture[str], fake: FakeRunner) -> None:
    code, out, err = run_main(capsys, cli.main, ["proxy", "cpu", "--container", "img;id"])
    assert (code, out) == (2, "")
    assert err.startswith("error: --container 'img;id': expected an image name or path")
    assert err.count("\n") == 2 and err.endswith(HINT)
    assert fake.calls == []


def test_proxy_with_a_bad_kind(capsys: pytest.CaptureFixture[str], fake: FakeRunner) -> None:
    code, out, err = run_main(capsys, cli.main, ["proxy", "tpu"])
    assert (code, out) == (2, "")
    assert "Invalid value for '{cpu|gpu}': 'tpu' is not one of 'cpu', 'gpu'." in err
    assert err.endswith(HINT)
    assert fake.calls == []


@MAINS
def test_proxy_with_a_broken_config(
    capsys: pytest.CaptureFixture[str], fake: FakeRunner, home: Path, main: object,
) -> None:
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text("wait_timeout = 0\n")
    assert run_main(capsys, main, ["proxy", "cpu"]) == (
        1, "",
        f"error: {home / 'config' / 'config.toml'}: wait_timeout = 0: expected seconds > 0\n" + HINT
    )


@MAINS
def test_the_doctor_hint_names_the_kind_and_only_follows_a_failing_proxy(
    capsys: pytest.CaptureFixture[str], fake: FakeRunner, home: Path,
    monkeypatch: pytest.MonkeyPatch, main: object,
) -> None:
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text("wait_timeout = 0\n")
    code, out, err = run_main(capsys, main, ["proxy", "gpu"])
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == HINT.replace("slurm-cpu", "slurm-gpu").rstrip("\n")
    # Another verb that fails: its error only.
    code, out, err = run_main(capsys, cli.main, ["profiles", "show", "nope"])
    assert code == 1 and err.count("\n") == 1 and "doctor" not in err
    # The user gave up (Ctrl-C, ssh closed stdin): nothing for doctor to find.
    from interactive_slurm.base.errors import Aborted
    from interactive_slurm.login import proxy

    def gave_up(*_args: object, **_kw: object) -> None:
        raise Aborted("interrupted by SIGINT")

    (home / "config" / "config.toml").write_text("")
    monkeypatch.setattr(proxy, "run", gave_up)
    assert run_main(capsys, main, ["proxy", "cpu"]) == (130, "", "error: interrupted by SIGINT\n")


def test_a_plain_proxy_waits_without_click(tmp_path: Path) -> None:
    """``proxy cpu`` with no session: the slow path starts without importing click or the other
    commands (here it stops at its first Slurm call: no squeue on the PATH)."""
    import subprocess

    code = ("import sys, atexit; from interactive_slurm import entry; "
            "atexit.register(lambda: print(sorted(m for m in sys.modules if m == 'click' or "
            "m.startswith('interactive_slurm.cli.')), file=sys.stderr)); "
            "sys.argv = ['interactive-slurm', 'proxy', 'cpu', '--timeout', '5']; entry.main()")
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path),
           "INTERACTIVE_SLURM_HOME": str(tmp_path / "is")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    assert "error: " in done.stderr and "squeue" in done.stderr
    assert done.stderr.splitlines()[-1] == "['interactive_slurm.cli.base']"


# ---------------------------------------------------------------------------------- remote

LINES = (
    "5|vscode-remote-cpu|PENDING|Resources||8:00:00|8:00:00|N/A|"
    "interactive-slurm:kind=cpu,profile=default,res=abc,version=0.1.0\n"
    "6|vscode-remote-gpu|RUNNING|None|node01|3:59:10|4:00:00|2026-11-23T12:00:00|"
    "interactive-slurm:kind=gpu,profile=default,res=abc,version=0.1.0\n"
    "7|train|RUNNING|None|node02|1:00:00|2:00:00|2026-11-23T11:00:00|\n"
)


def test_remote_list(fake: FakeRunner) -> None:
    fake.script["squeue"] = [ok(LINES)]
    result = invoke(remote_cli, ["list"])
    assert result.exit_code == 0
    assert result.stdout == (
        "JOBID  KIND  PROFILE  STATE               NODE    TIME_LEFT  ENDPOINT\n"
        "5      cpu   default  PENDING(Resources)  -       8:00:00    -\n"
        "6      gpu   default  RUNNING             node01  3:59:10    -\n"
    )


def test_remote_list_json(fake: FakeRunner) -> None:
    fake.script["squeue"] = [ok(LINES)]
    result = invoke(remote_cli, ["list", "--json"])
    assert result.exit_code == 0
    assert '"job_id": "5"' in result.stdout and '"job_id": "7"' not in result.stdout


def test_remote_list_when_slurm_fails(capsys: pytest.CaptureFixture[str], fake: FakeRunner) -> None:
    fake.script["squeue"] = [fail("squeue: error: Unable to contact slurm controller\n")]
    assert run_main(capsys, cli.remote_main, ["list"]) == (
        1, "", "error: squeue failed (exit 1): squeue: error: Unable to contact slurm controller\n"
    )


def test_remote_cancel_by_kind(fake: FakeRunner) -> None:
    fake.script.update(squeue=[ok(LINES)], scancel=[ok()])
    result = invoke(remote_cli, ["cancel", "gpu", "--yes"])
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("", "cancelled 6 (vscode-remote-gpu, RUNNING)\n")
    assert fake.argvs("scancel") == [("scancel", "6")]


def test_remote_cancel_never_touches_other_jobs(
    capsys: pytest.CaptureFixture[str], fake: FakeRunner
) -> None:
    fake.script.update(squeue=[ok(LINES)], scancel=[ok()])
    assert run_main(capsys, cli.remote_main, ["cancel", "7", "--yes"]) == (
        2, "", "error: job 7 is not one of your interactive-slurm jobs (5, 6)\n"
    )
    assert fake.argvs("scancel") == []


def test_remote_cancel_with_nothing_to_cancel(fake: FakeRunner) -> None:
    fake.script["squeue"] = [ok("")]
    result = invoke(remote_cli, ["cancel", "--yes"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "nothing to cancel\n")


def test_remote_is_also_a_subcommand() -> None:
    assert cli.cli.get_command(click.Context(cli.cli), "remote") is remote_cli


def test_the_proxy_does_not_load_the_other_commands() -> None:
    """The lazy group: `proxy`'s slow path does not pay for setup, doctor or the updater."""
    import subprocess

    code = ("import sys; import interactive_slurm.cli.main as m; "
            "m.cli.get_command(None, 'proxy'); "
            "print(sorted(n for n in sys.modules if n.startswith('interactive_slurm.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['interactive_slurm.cli.base', 'interactive_slurm.cli.main']"


# ------------------------------------------------------------------------------------ help


def walk(group: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    if isinstance(group, click.Group):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            yield from walk(command, (*path, name))


COMMANDS = [*walk(cli.cli, ("interactive-slurm",)), *walk(remote_cli, ("remote",))]


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {
        "interactive-slurm", "interactive-slurm proxy",
        "interactive-slurm trust", "interactive-slurm ssh-config", "interactive-slurm profiles",
        "interactive-slurm remote", "interactive-slurm remote list",
        "interactive-slurm remote cancel", "interactive-slurm remote ssh",
        "interactive-slurm remote gpuswap", "remote", "remote list", "remote cancel",
    } <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_ending_with_an_example(
    path: tuple[str, ...], command: click.Command
) -> None:
    assert command.help, f"{' '.join(path)} has no help text"
    last_paragraph = command.help.strip().split("\n\n")[-1]
    assert "Example" in last_paragraph, f"{' '.join(path)}: help does not end with an example"
    example_lines = [line.strip() for line in last_paragraph.splitlines()[1:] if line.strip()]
    assert example_lines, f"{' '.join(path)}: the example is empty"
    result = cli_runner().invoke(cli.cli if path[0] == "interactive-slurm" else remote_cli,
                                [*path[1:], "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help(path: tuple[str, ...], command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"


def test_session_command_is_hidden() -> None:
    result = invoke(cli.cli, ["--help"])
    assert "  session" not in result.stdout
    assert "  proxy" in result.stdout


def test_session_outside_a_job(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch script's command goes through the console script, without click."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(sys, "argv",
                        ["interactive-slurm", "session", "--kind", "cpu", "--profile", "default",
                         "--valid-for", "60"])
    assert run_main(capsys, lambda argv: entry.main(), []) == (
        1, "", "error: `interactive-slurm session` runs inside a Slurm job (no SLURM_JOB_ID)\n")


# ------------------------------------------------------------------------ ssh-config, trust

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def block(command: str, known_hosts: Path, login: str = "", control_dir: Path | None = None) -> str:
    lines = ["# BEGIN interactive-slurm (generated; edits here are replaced)"]
    if login:
        lines.append(f"# Trust: on {login} run `interactive-slurm trust` and put its line in "
                     f"{known_hosts}")
    for kind in ("cpu", "gpu"):
        lines += [
            f"Host slurm-{kind}",
            f"  ProxyCommand {command} proxy {kind}",
            f"  HostKeyAlias {kind}.interactive-slurm",
            f"  UserKnownHostsFile {known_hosts}",
            "  StrictHostKeyChecking yes",
            "  CheckHostIP no",
            "  ServerAliveInterval 30",
            "  ConnectTimeout 1860",
        ]
        if control_dir:
            lines += ["  ControlMaster auto", f"  ControlPath {control_dir}/%C"]
    plain = list(lines)
    for kind in ("cpu", "gpu"):  # the -tmux twins: the same, with a shell that survives
        start = plain.index(f"Host slurm-{kind}")
        end = plain.index("Host slurm-gpu") if kind == "cpu" else len(plain)
        lines += [f"Host slurm-{kind}-tmux", *plain[start + 1:end], "  RequestTTY force",
                  f"  RemoteCommand {sshhosts.PERSISTENT_COMMAND}"]
    if control_dir:
        lines += ['Match originalhost slurm-cpu,slurm-gpu,slurm-cpu-tmux,slurm-gpu-tmux '
                  'exec "test -t 2"', "  ControlPersist 10m"]
    return "\n".join([*lines, "# END interactive-slurm"]) + "\n"


@needs_ssh_keygen
def test_ssh_config_prints_host_entries_and_writes_the_trust_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    result = invoke(cli.cli, ["ssh-config"])
    assert result.exit_code == 0
    known = home / "config" / "known_hosts"
    script = Path(sys.executable).parent / "interactive-slurm"
    command = str(script) if script.exists() else f"{sys.executable} -I -m interactive_slurm"
    control_dir = tmp_path / "user" / ".ssh" / "interactive-slurm-cm"
    wrapped = shlex.join(sshhosts.tty_stderr([*shlex.split(command)])) if control_dir else command
    assert result.stdout == block(wrapped, known, control_dir=control_dir)
    assert control_dir.stat().st_mode & 0o777 == 0o700  # ssh makes sockets, not folders
    plain = invoke(cli.cli, ["ssh-config", "--no-multiplex"])
    assert plain.stdout == block(command, known)
    ca_pub = (home / "state" / "hostca" / "ca.pub").read_text().strip()
    assert known.read_text() == hostca.known_hosts_line(ca_pub) + "\n"


def test_ssh_config_for_a_laptop_hops_through_the_login_node(home: Path) -> None:
    result = invoke(cli.cli, ["ssh-config", "--login", "login01"])
    assert result.exit_code == 0
    known = home / "config" / "known_hosts"
    assert result.stdout == block("ssh -o ConnectTimeout=30 login01 interactive-slurm", known,
                                  login="login01")
    assert not known.exists()  # the laptop makes no CA of its own: it trusts the cluster's
    assert not (home / "state" / "hostca").exists()


def test_ssh_config_writes_a_percent_as_ssh_config_needs_it(home: Path) -> None:
    """ssh expands %-tokens in a ProxyCommand: a literal % is %% (as in setup's block)."""
    result = invoke(cli.cli, ["ssh-config", "--login", "login01", "--remote-command", "/opt/100%/bin/is"])
    assert result.exit_code == 0
    assert "  ProxyCommand ssh -o ConnectTimeout=30 login01 /opt/100%%/bin/is proxy cpu\n" in result.stdout


@needs_ssh_keygen
def test_ssh_config_under_python_m_names_a_runnable_command(monkeypatch: pytest.MonkeyPatch) -> None:
    main_py = str(Path(cli.__file__).with_name("__main__.py"))
    monkeypatch.setattr(sys, "argv", [main_py, "ssh-config"])
    result = invoke(cli.cli, ["ssh-config"])
    assert result.exit_code == 0
    proxy_line = next(line for line in result.stdout.splitlines() if "ProxyCommand" in line)
    program = proxy_line.split()[1]
    assert os.access(program, os.X_OK) or shutil.which(program), proxy_line


@needs_ssh_keygen
def test_trust_prints_the_ca_line_and_writes_it(home: Path) -> None:
    result = invoke(cli.cli, ["trust", "--write"])
    assert result.exit_code == 0
    ca_pub = (home / "state" / "hostca" / "ca.pub").read_text().strip()
    assert result.stdout == f"@cert-authority *.interactive-slurm {ca_pub}\n"
    assert result.stderr == f"wrote {home / 'config' / 'known_hosts'}\n"
    assert (home / "config" / "known_hosts").read_text() == result.stdout
