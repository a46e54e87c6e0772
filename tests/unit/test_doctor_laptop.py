"""doctor on the laptop (laptop/doctor.py): the managed block and ssh's first match, the key,
known_hosts, the shared connection's socket, VS Code's settings, the login hop; literal ``ssh``
output through the runner seam, files in temporary folders."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from interactive_slurm import __version__
from interactive_slurm.base import checks, folders
from interactive_slurm.base.errors import CommandError
from interactive_slurm.cli import base as cli_base
from interactive_slurm.cli import main as cli
from interactive_slurm.laptop import doctor, sshconfig
from interactive_slurm.laptop.clusters import Cluster

from .fakes import FakeRunner, Reply, fail, ok

SSH_V = "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026\n"
TOOL = "/home/alice/.local/share/interactive-slurm/current/bin/interactive-slurm"
CA = "@cert-authority *.interactive-slurm ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxq alice@login"


@pytest.fixture
def laptop(tmp_path: Path) -> Iterator[dict[str, Path]]:
    home = tmp_path / "laptop"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    # The socket folder: short, as ~/.ssh/interactive-slurm-cm is (pytest's tmp_path is too long).
    cm = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    key = home / ".ssh" / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    known = Path(folders.config_dir()) / "known_hosts-slurm"
    folders.make_private_dirs(known.parent)
    known.write_text(CA + "\n")
    yield {"home": home, "key": key, "known": known, "config": home / ".ssh" / "config", "cm": cm}
    shutil.rmtree(cm, ignore_errors=True)


def block(paths: dict[str, Path], name: str = "slurm") -> sshconfig.Block:
    return sshconfig.Block(
        name=name, login="login.example.org", user="alice", port=22, jump=None,
        identity=str(paths["key"]), tool=TOOL, known_hosts=str(paths["known"]),
        control_dir=str(paths["cm"]), hosts=sshconfig.default_hosts(name),
    )


def cluster(paths: dict[str, Path]) -> Cluster:
    return Cluster(name="slurm", login="login.example.org", user="alice",
                   identity=str(paths["key"]), install="/home/alice/.local/share/interactive-slurm",
                   hosts=("slurm-cpu", "slurm-gpu"), ssh_config=str(paths["config"]),
                   known_hosts=str(paths["known"]))


def ssh_g(paths: dict[str, Path], **override: str) -> str:
    """``ssh -G slurm-cpu`` as OpenSSH 9.2 prints it for the block (a few of its lines)."""
    values = {
        "host": "slurm-cpu", "user": "alice", "hostkeyalias": "cpu.interactive-slurm",
        "identityfile": str(paths["key"]), "userknownhostsfile": str(paths["known"]),
        "stricthostkeychecking": "true",
        "proxycommand": sshconfig.proxy_command(block(paths), "cpu").replace("%", "%%"),
    }
    values.update(override)
    return "".join(f"{k} {v}\n" for k, v in values.items() if v)


def write_config(paths: dict[str, Path], before: str = "") -> str:
    text = before + sshconfig.render(block(paths)) + "\nHost github.com\n  User git\n"
    paths["config"].write_text(text)
    return text


# --- reading the config ----------------------------------------------------------------------------

def test_read_block(laptop: dict[str, Path]) -> None:
    text = write_config(laptop, "Host *\n  ServerAliveInterval 10\n\n")
    found = doctor.read_block(text, "slurm")
    assert found is not None and found.start == 3
    assert set(found.hosts) == {"slurm-cpu", "slurm-gpu", "slurm-cpu-tmux", "slurm-gpu-tmux"}
    assert found.hosts["slurm-cpu"]["hostkeyalias"] == "cpu.interactive-slurm"
    assert doctor.read_block(text, "other") is None


@pytest.mark.parametrize(("patterns", "matches"), [
    (["*"], True), (["slurm-*"], True), (["SLURM-CPU"], True), (["slurm-?pu"], True),
    (["*", "!slurm-cpu"], False), (["!slurm-*", "*"], False), (["github.com"], False),
])
def test_host_matches(patterns: list[str], matches: bool) -> None:
    assert doctor.host_matches("slurm-cpu", patterns) is matches


def test_shadowing_names_the_line() -> None:
    text = ("ServerAliveInterval 5\nHost github.com\n  ProxyCommand none\nHost slurm-*\n"
            "  ProxyCommand=nc %h %p\nHost * !slurm-cpu\n  ProxyCommand x\n# BEGIN\n")
    assert doctor.shadowing(text, 7, "slurm-cpu", "proxycommand") == [
        "line 4: Host slurm-*, line 5: ProxyCommand=nc %h %p"]


def test_hop_argv_runs_the_tool_with_batch_mode(laptop: dict[str, Path]) -> None:
    command = sshconfig.proxy_command(block(laptop), "cpu")
    argv = doctor.hop_argv(command, "doctor", "--json")
    assert argv is not None
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert argv[-3:] == ["--", "login.example.org", f"{TOOL} doctor --json"]
    assert f"ControlPath={laptop['cm']}/%C" in argv
    assert doctor.hop_argv("nc %h %p", "--version") is None
    windows = dataclasses.replace(block(laptop), windows=True)
    argv = doctor.hop_argv(sshconfig.proxy_command(windows, "gpu"), "--version")
    assert argv is not None and argv[:3] == [sshconfig.WINDOWS_SSH, "-o", "BatchMode=yes"]
    assert argv[-1] == f"{TOOL} --version"
    assert doctor.control_dir_of(command.replace("%", "%%")) == str(laptop["cm"])


# --- the checks ------------------------------------------------------------------------------------

def test_ssh_client() -> None:
    [good] = doctor.ssh_client(FakeRunner({"ssh": Reply(stderr=SSH_V)}), jump=False)
    assert good == checks.ok("ssh client", SSH_V.strip())
    [old] = doctor.ssh_client(FakeRunner({"ssh": Reply(stderr="OpenSSH_7.2p2, OpenSSL 1.0.2\n")}), jump=True)
    assert old.status == "fail" and "older than OpenSSH 7.3" in old.saw

    def missing(argv: tuple[str, ...], _input: str | None) -> Reply:
        raise CommandError("command not found: ssh (No such file or directory)")

    [none] = doctor.ssh_client(FakeRunner({"ssh": missing}), jump=False)
    assert none.status == "fail" and "openssh-client" in none.fix


def test_missing_block(laptop: dict[str, Path]) -> None:
    [found] = doctor.managed_block(None, str(laptop["config"]), "slurm", "slurm-cpu")
    assert found.status == "fail"
    assert found.saw == f"no managed block `# BEGIN interactive-slurm slurm` in {laptop['config']}"
    assert found.fix.startswith("interactive-slurm setup --name slurm")


def test_first_match_ok(laptop: dict[str, Path]) -> None:
    text = write_config(laptop)
    runner = FakeRunner({"ssh": ok(ssh_g(laptop))})
    [found] = doctor.first_match(runner, text, doctor.read_block(text, "slurm"), None, "slurm-cpu")
    assert found.status == "ok"
    assert runner.argvs("ssh") == [("ssh", "-G", "slurm-cpu")]


def test_a_host_star_above_the_block_is_the_classic_trap(laptop: dict[str, Path]) -> None:
    text = write_config(laptop, "Host *\n  HostKeyAlias mine\n  ProxyCommand nc %h %p\n\n")
    runner = FakeRunner({"ssh": ok(ssh_g(laptop, hostkeyalias="mine", proxycommand="nc %h %p"))})
    [found] = doctor.first_match(runner, text, doctor.read_block(text, "slurm"),
                                 str(laptop["config"]), "slurm-cpu")
    assert found.status == "fail"
    assert found.saw == (
        "ssh takes for slurm-cpu: proxycommand 'nc %h %p' instead of the block's (set first by "
        "line 1: Host *, line 3: ProxyCommand nc %h %p); hostkeyalias 'mine' instead of the "
        "block's (set first by line 1: Host *, line 2: HostKeyAlias mine)")
    assert "move the whole block" in found.fix and "`Host * !slurm-cpu`" in found.fix
    assert runner.argvs("ssh") == [("ssh", "-F", str(laptop["config"]), "-G", "slurm-cpu")]


def test_identity_file(laptop: dict[str, Path]) -> None:
    key = laptop["key"]
    assert doctor.identity_file(str(key), windows=False) == [checks.ok("identity file", str(key))]
    key.chmod(0o644)
    [open_key] = doctor.identity_file(str(key), windows=False)
    assert open_key.status == "fail" and "mode 0644" in open_key.saw and open_key.fix == f"chmod 600 {key}"
    key.unlink()
    [gone] = doctor.identity_file(str(key), windows=False)
    assert gone.status == "fail" and gone.saw == f"{key} does not exist"
    assert f"ssh-keygen -t ed25519 -f {key}" in gone.fix


def test_known_hosts(laptop: dict[str, Path]) -> None:
    known = laptop["known"]
    assert doctor.known_hosts(str(known), "slurm")[0].status == "ok"
    known.write_text("login.example.org ssh-ed25519 AAAA\n")
    [other] = doctor.known_hosts(str(known), "slurm")
    assert other.status == "fail" and "@cert-authority *.interactive-slurm" in other.saw
    known.unlink()
    [gone] = doctor.known_hosts(str(known), "slurm")
    assert gone.status == "fail" and "Host key verification failed" in gone.saw
    assert gone.fix.startswith("interactive-slurm setup --name slurm")


def test_shared_connection(laptop: dict[str, Path], tmp_path: Path) -> None:
    command = sshconfig.proxy_command(block(laptop), "cpu").replace("%", "%%")
    [good] = doctor.shared_connection(command, "Linux")
    assert good.status == "ok" and f"{laptop['cm']}/%C" in good.saw
    assert doctor.shared_connection(command, "Windows")[0].status == "ok"
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    long_command = command.replace(str(laptop["cm"]), str(deep))
    [too_long] = doctor.shared_connection(long_command, "Darwin")
    assert too_long.status == "warn" and "over the 103 Darwin allows" in too_long.saw
    laptop["cm"].rmdir()
    [gone] = doctor.shared_connection(command, "Linux")
    assert gone.status == "warn" and gone.fix == f"mkdir -m 700 {laptop['cm']}"


@pytest.mark.parametrize(("text", "status", "saw"), [
    ('{\n  // mine\n  "remote.SSH.connectTimeout": 1800,\n  "remote.SSH.remotePlatform": '
     '{"slurm-cpu": "linux"},\n}', "ok", "remote.SSH.connectTimeout 1800, slurm-cpu: linux"),
    ('{"remote.SSH.connectTimeout": 60}', "fail", "remote.SSH.connectTimeout is 60: VS Code gives up"),
    ('{"editor.fontSize": 14}', "fail", "no remote.SSH.connectTimeout (VS Code's default: 15 s)"),
    ("", "fail", "no remote.SSH.connectTimeout"),
    ('{"remote.SSH.connectTimeout": 3600}', "warn", "remotePlatform for slurm-cpu is None"),
    ('{"remote.SSH.connectTimeout": 3600', "warn", "not valid JSON with comments"),
])
def test_vscode_settings(tmp_path: Path, text: str, status: str, saw: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(text)
    [found] = doctor.vscode_settings([("Code", path)], "slurm-cpu")
    assert found.name == "vscode Code" and found.status == status and saw in found.saw
    if status == "fail":
        assert found.fix.startswith(f'set "remote.SSH.connectTimeout": 1800 in {path}')


# --- the login hop ---------------------------------------------------------------------------------

REMOTE_REPORT = checks.format_json([checks.ok("slurm version", "Slurm 22.05.8"),
                                    checks.fail("profile default [cpu]", "too long", "shorter")])


def hop(version: str = __version__, trust: str = CA, report: str = REMOTE_REPORT,
        failure: Reply | None = None) -> Any:
    def answer(argv: tuple[str, ...], _input: str | None) -> Reply:
        if failure is not None:
            return failure
        remote = argv[-1]
        if remote.endswith("--version"):
            return ok(f"interactive-slurm, version {version}\n")
        if remote.endswith(" trust"):
            return ok(trust + "\n")
        if " doctor --json" in remote:
            return Reply(stdout=report, returncode=1)
        raise AssertionError(argv)

    return answer


def run_hop(laptop: dict[str, Path], answer: Any) -> tuple[list[checks.Check], FakeRunner]:
    runner = FakeRunner({"ssh": answer})
    command = sshconfig.proxy_command(block(laptop), "cpu").replace("%", "%%")
    return doctor.login_hop(runner, command, cluster(laptop), profile=None, job=False), runner


def test_login_hop_reaches_the_cluster_doctor(laptop: dict[str, Path]) -> None:
    found, runner = run_hop(laptop, hop())
    assert [(c.name, c.status) for c in found] == [
        ("login hop", "ok"), ("session CA", "ok"), ("cluster slurm version", "ok"),
        ("cluster profile default [cpu]", "fail")]
    assert [argv[-1] for argv in runner.argvs("ssh")] == [
        f"{TOOL} --version", f"{TOOL} trust", f"{TOOL} doctor --json"]
    assert all(argv[1:3] == ("-o", "BatchMode=yes") for argv in runner.argvs("ssh"))


def test_login_hop_versions_differ(laptop: dict[str, Path]) -> None:
    found, _ = run_hop(laptop, hop(version="0.0.9"))
    assert found[0].status == "warn" and "it runs interactive-slurm 0.0.9" in found[0].saw


def test_login_hop_ca_changed(laptop: dict[str, Path]) -> None:
    found, _ = run_hop(laptop, hop(trust=CA.replace("AAAAIHxq", "AAAAIOther")))
    ca = next(c for c in found if c.name == "session CA")
    assert ca.status == "fail" and "does not hold the CA line" in ca.saw
    assert ca.fix.startswith("interactive-slurm setup --name slurm")


@pytest.mark.parametrize(("stderr", "status", "saw"), [
    ("alice@login.example.org: Permission denied (publickey,keyboard-interactive).\n", "warn",
     "wants a password or second factor"),
    ("Host key verification failed.\n", "fail", "host key is unknown or changed"),
    ("ssh: Could not resolve hostname login.example.org: Name or service not known\n", "fail",
     "Could not resolve hostname"),
])
def test_login_hop_failures(laptop: dict[str, Path], stderr: str, status: str, saw: str) -> None:
    found, runner = run_hop(laptop, hop(failure=Reply(stderr=stderr, returncode=255)))
    assert [(c.name, c.status) for c in found] == [("login hop", status)]
    assert saw in found[0].saw
    assert len(runner.calls) == 1


def test_login_hop_without_the_install(laptop: dict[str, Path]) -> None:
    gone = Reply(stderr=f"bash: line 1: {TOOL}: No such file or directory\n", returncode=127)
    found, _ = run_hop(laptop, hop(failure=gone))
    assert found[0].status == "fail" and "the install does not run (exit 127)" in found[0].saw


def test_login_hop_with_an_install_without_doctor(laptop: dict[str, Path]) -> None:
    found, _ = run_hop(laptop, hop(report=""))
    assert found[-1].name == "cluster" and found[-1].status == "warn"


# --- all of it, and the command --------------------------------------------------------------------

def test_a_healthy_laptop(laptop: dict[str, Path]) -> None:
    write_config(laptop)
    settings = laptop["home"] / ".config" / "Code" / "User" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"remote.SSH.connectTimeout": 1800, "remote.SSH.remotePlatform": '
                        '{"slurm-cpu": "linux"}}')

    def ssh(argv: tuple[str, ...], input: str | None) -> Reply:
        if argv[1:] == ("-V",):
            return Reply(stderr=SSH_V)
        if "-G" in argv:
            return ok(ssh_g(laptop))
        return hop(report=checks.format_json([checks.ok("slurm version", "Slurm 22.05.8")]))(argv, input)

    found = doctor.run(doctor.Inputs(
        runner=FakeRunner({"ssh": ssh}), cluster=cluster(laptop), alias="slurm-cpu", system="Linux",
        home=laptop["home"], env={}, default_ssh_config=laptop["config"]))
    assert [c for c in found if c.status != "ok"] == []
    assert [c.name for c in found] == [
        "ssh client", "ssh config block", "ssh first match", "identity file", "known hosts",
        "shared login connection", "trusted folders", "vscode Code", "login hop", "session CA",
        "cluster slurm version"]


def test_cli_on_a_laptop(laptop: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(laptop)
    config = Path(folders.config_file())
    config.write_text(
        "[clusters.slurm]\n"
        f'login = "login.example.org"\nuser = "alice"\nidentity = "{laptop["key"]}"\n'
        f'hosts = ["slurm-cpu", "slurm-gpu"]\nssh_config = "{laptop["config"]}"\n'
        f'known_hosts = "{laptop["known"]}"\n')
    os.chmod(config, 0o600)
    monkeypatch.setenv("HOME", str(laptop["home"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(laptop["home"] / ".config"))

    def ssh(argv: tuple[str, ...], input: str | None) -> Reply:
        if argv[1:] == ("-V",):
            return Reply(stderr=SSH_V)
        if "-G" in argv:
            return ok(ssh_g(laptop, hostkeyalias="mine"))
        return fail("alice@login.example.org: Permission denied (publickey).", 255)

    runner = FakeRunner({"ssh": ssh})
    monkeypatch.setattr(cli_base, "runner", lambda: runner)
    result = CliRunner().invoke(cli.cli, ["doctor", "--json"], catch_exceptions=False)
    assert result.exit_code == 1
    data = {item["name"]: item for item in json.loads(result.stdout)}
    assert data["ssh first match"]["status"] == "fail"
    assert data["login hop"]["status"] == "warn"
    assert "vscode Code" not in data  # no VS Code on this laptop
    other = CliRunner().invoke(cli.cli, ["doctor", "--host", "nope"], catch_exceptions=False)
    assert other.exit_code == 2
