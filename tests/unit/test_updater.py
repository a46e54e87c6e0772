"""The updater's pure parts: tag choice, the [update] table, the wheel builder, install ids,
which installs sessions use, when the proxy starts a check, and the update verbs' CLI."""

from __future__ import annotations

import os
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from interactive_slurm.base import config, folders
from interactive_slurm.base.config import UpdateConfig
from interactive_slurm.base.errors import ConfigError, UpdateError
from interactive_slurm.cli import main as cli
from interactive_slurm.cli.remote import remote_cli
from interactive_slurm.install import autocheck, installs, updater, wheelbuild
from interactive_slurm.login import slurm
from interactive_slurm.login.slurm import Job

from .fakes import FakeRunner, fail, ok

TAGS = ["v0.1.0", "v0.1.1", "v0.2.0rc1", "v0.2.0b2", "v0.10.0a1", "latest", "v1.2", "0.3.0",
        "v0.3.0-beta", "release-1"]


# --- tags -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("version", "key"),
    [("0.1.0", (0, 1, 0, 3, 0)), ("1.2.3rc4", (1, 2, 3, 2, 4)), ("0.2.0a1", (0, 2, 0, 0, 1)),
     ("0.2.0b2", (0, 2, 0, 1, 2)), ("1.2", None), ("1.2.3.dev1", None), ("1.2.3+local", None)],
)
def test_version_key(version: str, key: tuple[int, ...] | None) -> None:
    assert updater.version_key(version) == key


@pytest.mark.parametrize(
    ("tags", "channel", "chosen"),
    [
        (TAGS, "stable", "v0.1.1"),           # pre-releases and other tags are ignored
        (TAGS, "pre", "v0.10.0a1"),           # numeric, not lexical: 0.10 > 0.2
        (["v0.2.0rc1", "v0.2.0"], "pre", "v0.2.0"),  # the final release beats its candidates
        (["v0.2.0rc1", "v0.2.0b9"], "pre", "v0.2.0rc1"),
        (["v0.2.0rc1", "main", "latest"], "stable", None),
        ([], "pre", None),
    ],
)
def test_pick(tags: list[str], channel: str, chosen: str | None) -> None:
    release = updater.pick(tags, channel)
    assert (release.tag if release else None) == chosen


@pytest.mark.parametrize(
    ("candidate", "installed", "newer"),
    [("0.1.1", "0.1.0", True), ("0.1.0", "0.1.0", False), ("0.1.0", "0.2.0rc1", False),
     ("0.2.0", "0.2.0rc1", True), ("0.1.0", None, True), ("0.1.0", "0.1.0.dev3", True)],
)
def test_is_newer(candidate: str, installed: str | None, newer: bool) -> None:
    assert updater.is_newer(candidate, installed) is newer


class FakeSource(updater.Source):
    def __init__(self, tags: list[str]) -> None:
        super().__init__("/srv/releases.git", Path("/nonexistent"))
        self._tags = tags

    def tags(self) -> list[str]:
        return self._tags

    def resolve(self, ref: str) -> str:
        if ref not in self._tags and ref != "main":
            raise UpdateError(f"{ref!r} is not a tag, branch or commit of {self.url}")
        return "c0ffee" * 6 + "abcd"


@pytest.mark.parametrize(
    ("channel", "installed", "to", "skip", "ref", "reason"),
    [
        ("stable", "0.1.0-aaaaaaaaaa", None, (), "v0.1.1", "v0.1.1 is newer"),
        ("stable", "0.1.1-aaaaaaaaaa", None, (), None,
         "up to date (0.1.1; newest stable release is v0.1.1)"),
        ("stable", "0.2.0rc1-aaaaaaaaaa", None, (), None,  # never downgrade on a channel
         "up to date (0.2.0rc1; newest stable release is v0.1.1)"),
        ("pre", "0.1.1-aaaaaaaaaa", None, (), "v0.10.0a1", "v0.10.0a1 is newer"),
        ("v0.1.0", "0.1.1-aaaaaaaaaa", None, (), "v0.1.0", "pinned to v0.1.0"),  # a pin may go back
        ("main", "0.1.1-aaaaaaaaaa", None, (), "main", "pinned to main"),
        ("stable", "0.1.1-aaaaaaaaaa", "v0.1.0", (), "v0.1.0", "pinned to v0.1.0"),
        ("stable", "0.1.0-aaaaaaaaaa", None, ("0.1.1",), None,
         "v0.1.1 was rolled back; not installing it automatically (`remote update` does)"),
    ],
)
def test_plan(channel: str, installed: str, to: str | None, skip: tuple[str, ...], ref: str | None,
              reason: str) -> None:
    p = updater.plan(FakeSource(TAGS), channel, installed, to=to, skip=skip)
    assert (p.ref, p.reason) == (ref, reason)


def test_plan_of_an_unknown_pin_says_so() -> None:
    with pytest.raises(UpdateError, match=r"'v9.9.9' is not a tag, branch or commit of /srv/rel"):
        updater.plan(FakeSource(TAGS), "v9.9.9", None)


# --- the [update] table -----------------------------------------------------------------------

def write_config(text: str) -> Path:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_update_defaults_are_on_but_need_a_url() -> None:
    cfg = config.load().update
    assert cfg == UpdateConfig(url="", channel="stable", interval_hours=24.0, enabled=True)
    assert not cfg.automatic
    assert UpdateConfig(url="/srv/r.git").automatic
    assert not UpdateConfig(url="/srv/r.git", enabled=False).automatic


def test_update_table() -> None:
    write_config('[update]\nurl = "/srv/r.git"\nchannel = "v0.1.1"\ninterval_hours = 0.5\n'
                 'enabled = false\n')
    assert config.load().update == UpdateConfig("/srv/r.git", "v0.1.1", 0.5, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("update = 3", "update = 3: expected a table [update]"),
        ('[update]\nbranch = "main"', "[update] branch = 'main': unknown key; valid keys: url, "
                                      "channel, interval_hours, enabled"),
        ('[update]\nurl = "--upload-pack=evil"', "[update] url = '--upload-pack=evil': expected a "
                                                 "git URL or path"),
        ("[update]\nurl = 5", "[update] url = 5: expected a git URL or path"),
        ('[update]\nchannel = "../x"', "[update] channel '../x': expected stable, pre, or a tag, "
                                       "branch or commit to pin to"),
        ('[update]\nchannel = "-x"', "[update] channel '-x': expected stable, pre"),
        ("[update]\nchannel = 1", "[update] channel = 1: expected stable, pre"),
        ("[update]\ninterval_hours = 0", "[update] interval_hours = 0: expected hours > 0"),
        ("[update]\ninterval_hours = true", "[update] interval_hours = True: expected hours > 0"),
        ('[update]\nenabled = "yes"', "[update] enabled = 'yes': expected true or false"),
    ],
)
def test_bad_update_values_name_the_file_key_and_value(text: str, message: str) -> None:
    path = write_config(text + "\n")
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("before", "enabled", "after"),
    [
        ("", False, "[update]\nenabled = false\n"),
        ('# mine\nwait_timeout = 60\n', True, "# mine\nwait_timeout = 60\n\n[update]\nenabled = true\n"),
        ('[update] # src\nurl = "/r"\nenabled = true # was\n[x.y]\n', False,
         '[update] # src\nurl = "/r"\nenabled = false\n[x.y]\n'),
        ('[update]\nurl = "/r"\n', False, '[update]\nenabled = false\nurl = "/r"\n'),
    ],
)
def test_set_update_enabled_keeps_the_rest_of_the_file(before: str, enabled: bool, after: str) -> None:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    if before:
        path.write_text(before)
    if "[x.y]" in before:  # an unknown table stays an error, and the file is left alone
        with pytest.raises(ConfigError, match="x = "):
            config.set_update_enabled(path, enabled)
        assert path.read_text() == before
        return
    cfg = config.set_update_enabled(path, enabled)
    assert path.read_text() == after
    assert cfg.update.enabled is enabled


# --- the wheel builder ------------------------------------------------------------------------

PYPROJECT = b'''[project]
name = "interactive-slurm"
version = "0.3.0rc1"
requires-python = ">=3.9"
dependencies = ["click>=8.0", "tomli>=1.1; python_version < '3.11'"]
[project.optional-dependencies]
laptop = ["asyncssh>=2.14; sys_platform != 'win32'"]
[project.scripts]
interactive-slurm = "interactive_slurm.entry:main"
[tool.setuptools]
packages = ["interactive_slurm"]
[tool.setuptools.package-data]
interactive_slurm = ["profiles/*.toml"]
'''
TREE = {"pyproject.toml": PYPROJECT, "interactive_slurm/__init__.py": b"",
        "interactive_slurm/cli.py": b"x = 1\n", "interactive_slurm/profiles/default.toml": b"",
        "interactive_slurm/profiles/README": b"", "interactive_slurm/sub/skip.py": b"",
        "tests/test_x.py": b""}


def test_wheel_from_a_tree(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = wheelbuild.build(TREE, tmp_path / "a")
    assert first.name == "interactive_slurm-0.3.0rc1-py3-none-any.whl"
    assert first.read_bytes() == wheelbuild.build(TREE, tmp_path / "b").read_bytes()  # same id
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        meta = zf.read("interactive_slurm-0.3.0rc1.dist-info/METADATA").decode()
        entry_points = zf.read("interactive_slurm-0.3.0rc1.dist-info/entry_points.txt").decode()
    assert names[:3] == ["interactive_slurm/__init__.py", "interactive_slurm/cli.py",
                         "interactive_slurm/profiles/default.toml"]
    assert "Requires-Dist: tomli>=1.1; python_version < '3.11'" in meta
    assert ("Requires-Dist: asyncssh>=2.14; (sys_platform != 'win32') and extra == \"laptop\""
            in meta)
    assert entry_points == "[console_scripts]\ninteractive-slurm = interactive_slurm.entry:main\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b'version = "0.3.0rc1"', b""), "version = None: expected a release"),
        ((b'version = "0.3.0rc1"', b'version = "0.3.0rc1"\ndynamic = ["readme"]'),
         "[project] dynamic = ['readme']: not supported"),
        ((b'packages = ["interactive_slurm"]', b'packages = ["nothere"]'),
         "package 'nothere' has no nothere/__init__.py"),
        ((b"[tool.setuptools]\n", b"[tool.setuptools.packages.find]\n"),
         "[tool.setuptools] packages = "),
    ],
)
def test_wheel_builder_refuses_what_it_does_not_know(tmp_path: Path, change: tuple[bytes, bytes],
                                                     message: str) -> None:
    tree = {**TREE, "pyproject.toml": PYPROJECT.replace(*change)}
    with pytest.raises(wheelbuild.BuildError, match=message.replace("[", r"\[").replace("(", r"\(")):
        wheelbuild.build(tree, tmp_path)


# --- install ids and roots ----------------------------------------------------------------------

def test_root_and_id_of_a_versioned_install(tmp_path: Path) -> None:
    prefix = tmp_path / "root" / "versions" / "0.2.0-0123456789"
    prefix.mkdir(parents=True)
    (tmp_path / "root" / "current").symlink_to("versions/0.2.0-0123456789")
    for path in (prefix, tmp_path / "root" / "current"):
        assert installs.root_of(path) == tmp_path / "root"
        assert installs.id_of(path) == "0.2.0-0123456789"
    assert installs.root_of(tmp_path / "venv") is None
    assert installs.id_of(tmp_path / "venv") is None
    assert installs.version_of("0.2.0rc1-0123456789") == "0.2.0rc1"


def test_install_root_outside_a_versioned_install(home: Path) -> None:
    assert updater.install_root() == home / "data"


def fake_install(root: Path, vid: str, mtime: float) -> None:
    folder = installs.version_dir(root, vid)
    folder.mkdir(parents=True)
    (folder / installs.COMPLETE).write_text(vid)
    os.utime(folder / installs.COMPLETE, (mtime, mtime))


def test_previous_is_the_install_made_before_current(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert installs.previous(root) is None
    for n, vid in enumerate(["0.1.0-a", "0.1.1-b", "0.2.0-c"]):
        fake_install(root, vid, 1000 + n)
    installs.switch(root, "0.2.0-c")
    assert installs.previous(root) == "0.1.1-b"
    installs.switch(root, "0.1.0-a")
    assert installs.previous(root) is None


def squeue_line(job_id: str, comment: str) -> str:
    return f"{job_id}|vscode-remote-cpu|RUNNING|None|n1|1:00|8:00:00|N/A|{comment}"


def comment(install: str) -> str:
    return slurm.build_comment(kind="cpu", profile="default", res_hash="0", install=install)


@pytest.mark.parametrize(
    ("lines", "in_use"),
    [
        ([], set()),
        ([squeue_line("5", comment("0.1.0-a")), squeue_line("6", comment("-"))], {"0.1.0-a"}),
        # a job submitted before install ids were recorded: nothing may be pruned
        ([squeue_line("5", comment("0.1.0-a")),
          squeue_line("7", "interactive-slurm:kind=cpu,profile=default,res=0,version=0.1.0")], None),
    ],
)
def test_installs_in_use(lines: list[str], in_use: set[str] | None) -> None:
    runner = FakeRunner({"squeue": ok("\n".join(lines))})
    assert updater.installs_in_use(runner) == in_use


def test_installs_in_use_is_unknown_when_slurm_fails() -> None:
    assert updater.installs_in_use(FakeRunner({"squeue": fail("slurm_load_jobs error")})) is None


def test_prune_keeps_what_sessions_use(tmp_path: Path) -> None:
    root = tmp_path / "root"
    vids = ["0.1.0-a", "0.1.1-b", "0.1.2-c", "0.1.3-d", "0.1.4-e"]
    for n, vid in enumerate(vids):
        fake_install(root, vid, 1000 + n)
    installs.switch(root, "0.1.4-e")
    runner = FakeRunner({"squeue": ok(squeue_line("5", comment("0.1.0-a")))})
    said: list[str] = []
    updater._prune(runner, root, said.append)
    assert installs.installed(root) == ["0.1.0-a", "0.1.2-c", "0.1.3-d", "0.1.4-e"]
    assert said == ["removed old versions: 0.1.1-b"]


def test_job_meta_carries_the_install() -> None:
    job = Job("5", "vscode-remote-cpu", "RUNNING", "None", "", "", "", "", comment("0.1.0-a"))
    assert job.meta["install"] == "0.1.0-a"


# --- when the proxy starts a check --------------------------------------------------------------

def test_no_check_outside_a_versioned_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert not autocheck.due(time.time())


def test_check_due_by_the_stamp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prefix = tmp_path / "root" / "versions" / "0.1.0-a"
    prefix.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    now = time.time()
    assert autocheck.due(now)  # never checked
    due = updater.postpone(24, now=now)
    assert due == now + 24 * 3600
    assert not autocheck.due(now)
    assert autocheck.due(due + 1)


def test_check_due_again_once_config_toml_changes(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, home: Path) -> None:
    """Issue 20: a check without a url set the stamp a day out; adding [update] url to
    config.toml afterwards makes the next proxy start a check."""
    prefix = tmp_path / "root" / "versions" / "0.1.0-a"
    prefix.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    config_file = Path(folders.config_file())
    config_file.parent.mkdir(parents=True, mode=0o700)
    config_file.write_text("")
    os.utime(config_file, (time.time() - 60, time.time() - 60))
    now = time.time()
    updater.postpone(24, now=now)
    assert not autocheck.due(now)
    config_file.write_text('[update]\nurl = "https://example.org/x.git"\n')
    os.utime(config_file, (now + 5, now + 5))
    assert autocheck.due(now)


def test_auto_check_off_without_a_url_writes_the_stamp_and_fetches_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    assert updater.auto_check(FakeRunner(), tmp_path / "root", said.append) == 0
    assert said == ["automatic checks are off (no url in [update])"]
    assert updater.stamp_file().stat().st_mtime > time.time() + 23 * 3600
    assert not (Path(folders.update_dir()) / "source.git").exists()


def test_auto_check_failure_is_logged_and_postponed(tmp_path: Path) -> None:
    write_config(f'[update]\nurl = "{tmp_path}/missing.git"\ninterval_hours = 2\n')
    said: list[str] = []
    assert updater.auto_check(FakeRunner(), tmp_path / "root", said.append) == 1
    assert said[0] == f"fetching {tmp_path}/missing.git"
    assert said[1].startswith(f"error: cannot fetch {tmp_path}/missing.git: ")
    assert time.time() + 1.9 * 3600 < updater.stamp_file().stat().st_mtime < time.time() + 2 * 3600


# --- the CLI ------------------------------------------------------------------------------------

def test_update_enable_and_disable_edit_config_toml() -> None:
    runner = CliRunner()
    result = runner.invoke(remote_cli, ["update", "--disable"], catch_exceptions=False)
    assert result.output == f"automatic checks off in {Path(folders.config_file())}\n"
    assert Path(folders.config_file()).read_text() == "[update]\nenabled = false\n"
    result = runner.invoke(cli.cli, ["update", "--enable"], catch_exceptions=False)
    assert result.output == (f"automatic checks on in {Path(folders.config_file())} "
                             "(they run once [update] url is set)\n")
    assert config.load().update.enabled


def test_update_options_do_not_combine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.remote_main(["update", "--to", "v1.0.0", "--rollback"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: --to and --rollback cannot be combined\n"


def test_check_without_a_source_says_where_to_set_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.remote_main(["check"])
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        f"error: no source to update from: {Path(folders.config_file())} has no url in [update]\n")


def test_self_check_passes_on_this_tree() -> None:
    result = CliRunner().invoke(cli.cli, ["self-check"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == "ok session: sshd_config (dry run)"


# --- what git says, and what a release may weigh ------------------------------------------------

@pytest.mark.parametrize(("stderr", "expected"), [
    ("fatal: '/nope' does not appear to be a git repository\nfatal: Could not read from remote "
     "repository.\n\nPlease make sure you have the correct access rights\nand the repository "
     "exists.\n", "fatal: '/nope' does not appear to be a git repository"),
    ("  stderr: 'fatal: detected dubious ownership in repository at '/srv/x.git'\nTo add an "
     "exception for this directory, call:\n\n\tgit config --global --add safe.directory "
     "/srv/x.git'", "fatal: detected dubious ownership in repository at '/srv/x.git'"),
    ("warning: something\nlast words\n", "last words"),
    ("", "git exited 128"),
])
def test_git_reason_is_the_line_that_names_the_problem(stderr: str, expected: str) -> None:
    assert updater.git_reason(stderr, 128) == expected


def _repo_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    import subprocess

    repo = tmp_path / "src"
    repo.mkdir()
    for name, data in files.items():
        (repo / name).write_bytes(data)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "r"], check=True)
    subprocess.run([*git, "tag", "v9.0.0"], check=True)
    return repo


def test_a_release_with_a_huge_file_is_refused_before_it_is_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(updater, "MAX_FILE_BYTES", 1000)
    repo = _repo_with(tmp_path, {"small.py": b"x = 1\n", "huge.bin": b"\0" * 5000})
    source = updater.Source(str(repo), tmp_path / "cache.git")
    source.fetch()
    commit = source._repo().commit("v9.0.0").hexsha
    with pytest.raises(UpdateError, match=r"huge.bin has 5000 bytes \(at most 1000\)"):
        source.files(commit)
    monkeypatch.setattr(updater, "MAX_FILE_BYTES", 10_000)
    monkeypatch.setattr(updater, "MAX_TREE_BYTES", 4000)
    with pytest.raises(UpdateError, match="add up to more than 4000 bytes"):
        source.files(commit)
    monkeypatch.setattr(updater, "MAX_TREE_BYTES", 10_000)
    assert source.files(commit) == {"small.py": b"x = 1\n", "huge.bin": b"\0" * 5000}
