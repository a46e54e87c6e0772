"""laptop/setup.py without a network: what setup plans to write, and what uninstall takes out.

The end-to-end tests (tests/e2e/test_setup.py) run the whole thing against real login nodes;
here the planning is checked file by file, including the cases that must change nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from interactive_slurm.cli import main as cli
from interactive_slurm.laptop import changes, clusters, setup

CA = ("@cert-authority *.interactive-slurm ssh-ed25519 "
      "AAAAC3NzaC1lZDI1NTE5AAAAIHk4a6kOgCjA1B6ZCfO3W5lQd4Y4bqNH8yQ3 ca")


@pytest.fixture
def laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "laptop"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("VSCODE_APPDATA", raising=False)
    return home


def request(home: Path, **kw: object) -> setup.Request:
    values: dict[str, object] = dict(login="login.example.org", user="alice",
                                     identity=home / ".ssh" / "id_ed25519",
                                     ssh_config=home / ".ssh" / "config", system="Linux")
    values.update(kw)
    return setup.Request(**values)  # type: ignore[arg-type]


def plan(req: setup.Request) -> tuple[setup.Report, list[changes.Change]]:
    report = setup.Report()
    planned = setup.plan_files(req, clusters.load(), tool="/home/alice/is/current/bin/interactive-slurm",
                               install_root="/home/alice/is", ca_line=CA, report=report)
    return report, planned


def apply(req: setup.Request) -> setup.Report:
    report, planned = plan(req)
    setup.apply_all(planned, report)
    return report


def test_first_setup_writes_block_known_hosts_and_config(laptop: Path) -> None:
    report = apply(request(laptop))
    assert report.hosts == ("slurm-cpu", "slurm-gpu")
    text = (laptop / ".ssh" / "config").read_text()
    assert text.startswith("# BEGIN interactive-slurm slurm ") and "Host slurm-gpu" in text
    assert (laptop / ".ssh" / "config").stat().st_mode & 0o777 == 0o600
    assert setup.known_hosts_file("slurm").read_text() == CA + "\n"
    cluster = clusters.named(clusters.load(), "slurm")
    assert cluster is not None and cluster.hosts == ("slurm-cpu", "slurm-gpu")
    assert cluster.install == "/home/alice/is" and cluster.login == "login.example.org"


def test_second_cluster_gets_its_own_names_and_the_first_keeps_its_own(laptop: Path) -> None:
    apply(request(laptop))
    report = apply(request(laptop, name="other", login="login.other.org"))
    assert report.hosts == ("other-cpu", "other-gpu")
    text = (laptop / ".ssh" / "config").read_text()
    assert text.index("# BEGIN interactive-slurm other") < text.index("# BEGIN interactive-slurm slurm")
    assert [c.name for c in clusters.load()] == ["slurm", "other"]
    # Setting up the first again keeps its names and changes nothing.
    _, planned = plan(request(laptop))
    assert not [c.path for c in planned if c.changed]


def test_a_first_cluster_with_a_name_gets_that_names_hosts(laptop: Path) -> None:
    """Issue 20: `--name lab` for the first cluster gave slurm-cpu; a later `setup LOGIN` then
    found its hosts "defined outside setup's block"."""
    assert apply(request(laptop, name="lab")).hosts == ("lab-cpu", "lab-gpu")
    assert apply(request(laptop, login="login.other.org")).hosts == ("slurm-cpu", "slurm-gpu")
    text = (laptop / ".ssh" / "config").read_text()
    assert "Host lab-cpu" in text and "Host slurm-cpu" in text


def test_a_users_own_host_of_the_same_name_stops_setup_before_any_write(laptop: Path) -> None:
    cfg = laptop / ".ssh" / "config"
    cfg.write_text("Host slurm-cpu\n  HostName mine\n")
    with pytest.raises(setup.SetupError, match="Host slurm-cpu is already defined outside"):
        plan(request(laptop))
    assert cfg.read_text() == "Host slurm-cpu\n  HostName mine\n"
    assert not clusters.load()


def test_vscode_files_are_edited_and_a_broken_one_is_left_with_a_note(laptop: Path) -> None:
    good = laptop / ".config" / "Code" / "User" / "settings.json"
    good.parent.mkdir(parents=True)
    good.write_text('{\n  // mine\n  "editor.fontSize": 14,\n}\n')
    bad = laptop / ".config" / "Cursor" / "User" / "settings.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"a": ')
    report = apply(request(laptop))
    assert "// mine" in good.read_text() and '"slurm-gpu": "linux"' in good.read_text()
    assert bad.read_text() == '{"a": '
    [note] = report.manual
    assert note.startswith(f"Cursor: {bad} could not be edited safely")
    assert '"remote.SSH.connectTimeout": 1800' in note
    cluster = clusters.named(clusters.load(), "slurm")
    assert cluster is not None and cluster.vscode == (str(good),) and cluster.vscode_globals == (str(good),)


def test_uninstall_restores_every_file(laptop: Path) -> None:
    cfg = laptop / ".ssh" / "config"
    cfg.write_text("# mine\nHost *\n  User bob\n")
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{\n  "editor.fontSize": 14, // mine\n}\n')
    apply(request(laptop))
    apply(request(laptop, name="other", login="login.other.org"))
    for name in ("other", "slurm"):
        _, planned = setup.plan_uninstall(name)
        setup.apply_all(planned, setup.Report())
    assert cfg.read_text() == "# mine\nHost *\n  User bob\n"
    assert settings.read_text() == '{\n  "editor.fontSize": 14, // mine\n}\n'
    assert not setup.known_hosts_file("slurm").exists()
    assert not clusters.load()


@pytest.mark.parametrize("order", [("slurm", "other"), ("other", "slurm")])
def test_uninstall_puts_back_the_users_own_vscode_values_and_mode(laptop: Path,
                                                                  order: tuple[str, str]) -> None:
    """Issue 20, item 3: the user's own connectTimeout (shorter than a queued job needs) and
    showLoginTerminal are replaced while set up, and come back byte for byte, with the file's
    mode, whichever cluster goes last."""
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    original = ('{\n  "remote.SSH.connectTimeout": 60, // mine\n'
                '  "remote.SSH.showLoginTerminal": false,\n}\n')
    settings.write_text(original)
    settings.chmod(0o644)
    apply(request(laptop))
    apply(request(laptop, name="other", login="login.other.org"))
    text = settings.read_text()
    assert '"remote.SSH.connectTimeout": 1800' in text and '"remote.SSH.showLoginTerminal": true' in text
    assert settings.stat().st_mode & 0o777 == 0o644
    for name in order:
        _, planned = setup.plan_uninstall(name)
        setup.apply_all(planned, setup.Report())
    assert settings.read_text() == original
    assert settings.stat().st_mode & 0o777 == 0o644


def test_a_value_the_user_changed_since_setup_stays(laptop: Path) -> None:
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"remote.SSH.connectTimeout": 60}\n')
    apply(request(laptop))
    settings.write_text(settings.read_text().replace("1800", "3600"))
    _, planned = setup.plan_uninstall("slurm")
    setup.apply_all(planned, setup.Report())
    assert '"remote.SSH.connectTimeout": 3600' in settings.read_text()


def test_backups_are_few_and_leave_with_the_last_cluster(laptop: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, item 9: one backup per run piled up (13 after an afternoon), and stayed."""
    import itertools

    from interactive_slurm.laptop import changes as changes_module

    stamps = (f"20261128-10{n:04d}" for n in itertools.count())
    monkeypatch.setattr(changes_module.time, "strftime", lambda _fmt: next(stamps))
    cfg = laptop / ".ssh" / "config"
    cfg.write_text("# mine\n")
    for n in range(6):  # each run changes the block (another profile): a backup each
        apply(request(laptop, profile=f"p{n}"))
    assert len(list(cfg.parent.glob("config.bak-*"))) == changes.KEEP_BACKUPS
    from .fakes import FakeRunner, fail

    report = setup.uninstall("slurm", None, FakeRunner({"ssh": fail("no master")}),  # type: ignore[arg-type]
                             remove_install=False, dry_run=False)
    assert not list(cfg.parent.glob("config.bak-*")) and cfg.read_text() == "# mine\n"
    assert any(line.startswith("removed ") and "backup" in line for line in report.lines)
    # A file uninstall took away is said to be removed, not written (issue 20).
    known = setup.known_hosts_file("slurm")
    assert f"removed {known}" in report.lines and f"wrote {known}" not in report.lines


def test_dry_run_diffs_name_the_files(laptop: Path) -> None:
    _, planned = plan(request(laptop))
    diffs = "".join(c.diff() for c in planned)
    assert f"+++ {laptop / '.ssh' / 'config'}" in diffs and "--- /dev/null" in diffs
    assert not (laptop / ".ssh" / "config").exists()


def test_windows_block_and_settings_paths(laptop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    appdata = laptop / "AppData" / "Roaming"
    (appdata / "Code" / "User").mkdir(parents=True)
    monkeypatch.setenv("APPDATA", str(appdata))
    apply(request(laptop, system="Windows"))
    text = (laptop / ".ssh" / "config").read_text()
    assert "ProxyCommand C:/Windows/System32/OpenSSH/ssh.exe " in text and "ControlMaster" not in text
    assert '"slurm-cpu": "linux"' in (appdata / "Code" / "User" / "settings.json").read_text()


@pytest.mark.parametrize(("kw", "message"), [
    ({"login": "-oProxyCommand=evil"}, "login host"),
    ({"install_dir": "relative/path"}, "--install-dir"),
    ({"python": "python3; rm -rf ~"}, "--python"),
    ({"port": 70000}, "port 70000: expected 1-65535"),
])
def test_request_validates_what_reaches_a_command_line(laptop: Path, kw: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(Exception, match=message):
        request(laptop, **kw)


def test_ca_line_must_be_a_ca_line() -> None:
    assert setup.check_ca_line(CA + "\n", "x") == CA
    with pytest.raises(setup.SetupError, match="not a CA line"):
        setup.check_ca_line("ssh-ed25519 AAAA host", "login:tool")


def test_cli_setup_needs_a_login_without_a_terminal(laptop: Path) -> None:
    result = CliRunner().invoke(cli.cli, ["setup", "--yes"])
    assert result.exit_code != 0 and "give the login node: interactive-slurm setup LOGIN" in str(
        result.exception)
    result = CliRunner().invoke(cli.cli, ["setup", "host", "--remove-install"])
    assert "--remove-install goes with --uninstall" in str(result.exception)


def test_cli_clusters_lists_what_was_set_up(laptop: Path) -> None:
    empty = CliRunner().invoke(cli.cli, ["clusters"])
    assert empty.exit_code == 0 and empty.output == "no clusters set up yet: interactive-slurm setup LOGIN\n"
    apply(request(laptop))
    listed = CliRunner().invoke(cli.cli, ["clusters"])
    assert listed.exit_code == 0
    assert listed.output.startswith("slurm      slurm-cpu, slurm-gpu")
    assert "alice@login.example.org:22" in listed.output
