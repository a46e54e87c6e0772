"""StrictModes for the tool's own files, explicit modes under any umask, one-line file errors."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from interactive_slurm.base import config, folders, fsutil
from interactive_slurm.base.errors import (
    ConfigError,
    CorruptRecordError,
    UnsafePathError,
)
from interactive_slurm.base.runner import SubprocessRunner
from interactive_slurm.cli import main as cli
from interactive_slurm.connect import endpoint
from interactive_slurm.laptop import changes
from interactive_slurm.login import profile_edit, profiles, proxy, slurm
from interactive_slurm.node import hostca, tmpdirs

from .fakes import FakeRunner, fail, ok
from .modes import writable_by_others
from .test_endpoint import make

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- the walk (check_secure), with a fake file system -------------------------------------------

ME, ROOT, EVE = 1000, 0, 1002


class FakeStat:
    def __init__(self, uid: int, mode: int) -> None:
        self.st_uid, self.st_mode = uid, mode


@pytest.fixture
def fake_fs(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeStat]:
    monkeypatch.setattr(fsutil, "_owner", lambda uid: f"uid {uid}")
    return {}


def check(tree: dict[str, FakeStat], path: str) -> None:
    def lookup(p: Path) -> FakeStat:
        try:
            return tree[str(p)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such file", str(p)) from None

    fsutil.check_secure(Path(path), lookup=lookup, uid=ME)


def home_tree(tree: dict[str, FakeStat], **changes: FakeStat) -> None:
    tree.update({
        "/": FakeStat(ROOT, 0o40755), "/home": FakeStat(ROOT, 0o40755),
        "/home/me": FakeStat(ME, 0o40755), "/home/me/.config": FakeStat(ME, 0o40700),
        "/home/me/.config/is": FakeStat(ME, 0o40700),
        "/home/me/.config/is/config.toml": FakeStat(ME, 0o100600),
        "/tmp": FakeStat(ROOT, 0o41777), "/tmp/me": FakeStat(ME, 0o40700),
        "/tmp/me/config.toml": FakeStat(ME, 0o100644),
        "/srv": FakeStat(ROOT, 0o40775), "/srv/me": FakeStat(ME, 0o40700),
        "/srv/me/config.toml": FakeStat(ME, 0o100600),
        "/home/eve": FakeStat(EVE, 0o40755), "/home/eve/config.toml": FakeStat(ME, 0o100600),
    })
    tree.update(changes)


CONFIG = "/home/me/.config/is/config.toml"


@pytest.mark.parametrize(("changes", "path", "message"), [
    ({}, CONFIG, None),
    ({}, "/tmp/me/config.toml", None),  # /tmp: root's and sticky, so the walk stops there
    ({CONFIG: FakeStat(ROOT, 0o100644)}, CONFIG, None),  # root's own file: trusted
    ({CONFIG: FakeStat(ME, 0o100620)}, CONFIG,
     f"{CONFIG}: refusing: writable by group or others (mode 0620); fix: chmod go-w {CONFIG}"),
    ({CONFIG: FakeStat(EVE, 0o100600)}, CONFIG,
     f"{CONFIG}: refusing: owned by uid {EVE}, not by you (uid {ME}); remove it and run again"),
    ({"/home/me/.config": FakeStat(ME, 0o40775)}, CONFIG,
     f"{CONFIG}: refusing: the folder /home/me/.config is writable by group or others "
     "(mode 0775); fix: chmod go-w /home/me/.config"),
    ({"/home/me": FakeStat(ME, 0o40777)}, CONFIG, "the folder /home/me is writable"),
    ({"/home": FakeStat(ROOT, 0o40777)}, CONFIG,
     "the folder /home (root's) is writable by group or others without the sticky bit"),
    ({"/": FakeStat(ROOT, 0o40777)}, CONFIG, None),  # the walk stopped at /home (root's)
    ({}, "/srv/me/config.toml", "the folder /srv (root's) is writable"),
    ({}, "/home/eve/config.toml",
     f"the folder /home/eve is owned by uid {EVE}, not by you or root"),
])
def test_check_secure_walks_up_like_sshd(
    fake_fs: dict[str, FakeStat], changes: dict[str, FakeStat], path: str, message: str | None
) -> None:
    home_tree(fake_fs, **changes)
    if message is None:
        check(fake_fs, path)
    else:
        with pytest.raises(UnsafePathError, match=re.escape(message)):
            check(fake_fs, path)


def test_check_secure_if_exists(tmp_path: Path) -> None:
    (tmp_path / "there").write_text("")
    assert fsutil.check_secure_if_exists(tmp_path / "there")
    assert not fsutil.check_secure_if_exists(tmp_path / "missing.toml")


# --- the real files: refused with the path and the fix ------------------------------------------

def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli.cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_a_group_writable_config_dir_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path(folders.config_dir())
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('default_profile = "development"\n')
    os.chmod(folder, 0o775)
    with pytest.raises(SystemExit) as info:
        cli.main(["profiles"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err == (f"error: {folder}: refusing: writable by group or others (mode 0775); "
                   f"fix: chmod go-w {folder}\n")
    with pytest.raises(UnsafePathError, match=f"the folder {folder} .*writable by group or others"):
        config.load()


def test_a_group_writable_config_file_and_profile_are_refused() -> None:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True)
    path.write_text("wait_timeout = 60\n")
    os.chmod(path, 0o664)
    with pytest.raises(UnsafePathError, match=f"^{path}: refusing: .*; fix: chmod go-w {path}$"):
        config.load()
    os.chmod(path, 0o644)
    assert config.load().wait_timeout == 60
    prof = Path(folders.profiles_dir()) / "mine.toml"
    prof.parent.mkdir()
    shutil.copy(profiles.SHIPPED_DIR / "default.toml", prof)
    os.chmod(prof, 0o666)
    with pytest.raises(UnsafePathError, match=f"^{prof}: refusing: writable"):
        profiles.load("mine")
    os.chmod(prof, 0o600)
    os.chmod(prof.parent, 0o777)
    with pytest.raises(UnsafePathError, match=f"^{prof.parent}: refusing: writable"):
        profiles.available()


def test_a_group_writable_known_hosts_is_refused() -> None:
    known = Path(folders.known_hosts_file())
    known.parent.mkdir(parents=True)
    known.write_text("")
    os.chmod(known, 0o666)
    with pytest.raises(UnsafePathError, match=f"^{known}: refusing: writable"):
        hostca.write_known_hosts(known, "@cert-authority *.interactive-slurm ssh-ed25519 AAAA")
    with pytest.raises(UnsafePathError, match=f"^{known}: refusing"):
        folders.check_trusted()
    with pytest.raises(UnsafePathError):  # the proxy's fast path reads no record then
        endpoint.find()


def test_a_toml_error_names_the_file_line_and_column() -> None:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True)
    path.write_text('default_profile = "default"\n\nwait_timeout = = 3\n')
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value) == f"{path}: line 3, column 16: not valid TOML: Invalid value"


# --- corrupt endpoint records are stale ---------------------------------------------------------

@pytest.mark.parametrize("text", ["{not json", "", "[]", '{"job_id": "42"}', "\xff\xfe garbage"])
def test_a_corrupt_record_is_stale(text: str) -> None:
    """Corrupt records are reported to the caller as broken (the proxy drops them as stale)."""
    good = endpoint.publish(make("41"))
    path = endpoint.publish(make("42"))
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CorruptRecordError, match=f"^{path}: "):
        endpoint.read(path)
    broken: list[str] = []
    assert [ep.job_id for ep in endpoint.find(broken=broken)] == ["41"]
    assert broken == [str(path)] and good.exists()


def test_a_record_of_an_older_format_is_stale_too() -> None:
    """A version-1 record (before the keyhole) cannot be connected to: broken, like a corrupt one."""
    path = endpoint.publish(make("42"))
    text = path.read_text()
    path.write_text(re.sub(r'"version": \d+', '"version": 1', text))
    with pytest.raises(CorruptRecordError, match="version 1 is not"):
        endpoint.read(path)
    broken: list[str] = []
    assert endpoint.find(broken=broken) == [] and broken == [str(path)]


def test_an_unreadable_jobs_folder_is_an_error_naming_it() -> None:
    if os.getuid() == 0:
        pytest.skip("root reads any folder")
    endpoint.publish(make("42"))
    os.chmod(Path(folders.jobs_dir()), 0o000)
    try:
        with pytest.raises(UnsafePathError, match=f"^{Path(folders.jobs_dir())}: cannot list"):
            endpoint.find()
    finally:
        os.chmod(Path(folders.jobs_dir()), 0o700)


def test_a_permission_error_on_the_state_dir_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if os.getuid() == 0:
        pytest.skip("root writes any folder")
    state = Path(folders.state_dir())
    state.mkdir(parents=True)
    os.chmod(state, 0o500)
    try:
        with pytest.raises(SystemExit) as info:
            cli.main(["profiles", "set", "mine", "--from", "default", "cpu.cpus=2"])
        profile_dir_err = capsys.readouterr().err
        assert info.value.code == 0, profile_dir_err  # profiles live in the config dir
        with pytest.raises(SystemExit) as info:
            cli.main(["trust"])
        err = capsys.readouterr().err
    finally:
        os.chmod(state, 0o700)
    assert info.value.code == 1
    assert err.startswith(f"error: {state}/") and "Permission denied" in err
    assert err.count("\n") == 1 and "Traceback" not in err


# --- a full filesystem: no half-written file ----------------------------------------------------

def test_write_private_atomic_on_a_full_disk_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "endpoint.json"
    target.write_text("old\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", full)
    with pytest.raises(OSError) as info:
        fsutil.write_private_atomic(target, "new\n" * 1000)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["endpoint.json"] and target.read_text() == "old\n"


def test_describe_os_error_is_one_line_naming_the_path() -> None:
    exc = OSError(errno.ENOSPC, "No space left on device", "/x/state/jobs/42/.endpoint.json.abc")
    assert str(fsutil.describe_os_error(exc)) == (
        "/x/state/jobs/42/.endpoint.json.abc: No space left on device (the filesystem is full "
        "or over quota: free some space and run again)"
    )
    exc = PermissionError(errno.EACCES, "Permission denied", "/x/state")
    assert str(fsutil.describe_os_error(exc)) == (
        "/x/state: Permission denied (check the owner and mode of /x/state and the folders above it)"
    )


# --- umask 000: nothing the tool makes is writable by others ------------------------------------

@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@needs_ssh_keygen
def test_under_umask_000_nothing_made_is_writable_by_others(
    home: Path, tmp_path: Path, umask_000: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = SubprocessRunner()
    hostca.ensure_ca(runner)
    hostca.write_known_hosts(Path(folders.known_hosts_file()), hostca.known_hosts_line("ssh-ed25519 AAAA"))
    endpoint.publish(make("42"))
    profile_edit.set_values("mine", ["cpu.cpus=2"], base="default")
    profile_edit.set_values("mine", ["cpu.cpus=3"])  # with a backup
    config.set_update_enabled(Path(folders.config_file()), False)
    with proxy.user_lock():
        pass
    changes.Change(home / "laptop" / "ssh" / "config", None, "Host x\n").apply()
    changes.Change(Path(folders.config_dir()) / "known_hosts-hpc", None, "line\n").apply()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(mode=0o700)
    session_tmp = tmpdirs.make_session_dir(FakeRunner(), "42", lambda _: None)
    assert mode(session_tmp) == 0o700
    assert writable_by_others(home) == []
    assert mode(Path(folders.state_dir())) == 0o700 and mode(Path(folders.config_dir())) == 0o700


# --- $TMPDIR and leftover session temp dirs -----------------------------------------------------

def test_tmpdir_inside_a_folder_others_can_write_is_not_used(tmp_path: Path) -> None:
    """A 0700 TMPDIR of the user's inside a group-writable lab folder without the sticky bit:
    another member could rename it away while the session runs and plant an sshd_config
    (issue 17, item 2). The whole chain above it is checked, as sshd's secure_path does."""
    said: list[str] = []
    lab = tmp_path / "lab"
    lab.mkdir()
    mine = lab / "alice-tmp"
    mine.mkdir(mode=0o700)
    os.chmod(lab, 0o2770)
    assert tmpdirs.base_dir({"TMPDIR": str(mine)}, said.append) == "/tmp"
    assert said == [
        f"TMPDIR={mine} is not safe for the session's host key (the folder {lab} above it is "
        f"writable by group or others without the sticky bit (mode 2770), so they could rename "
        f"{mine} away); using /tmp"
    ]
    os.chmod(lab, 0o3770)  # sticky: members cannot rename what is not theirs
    assert tmpdirs.base_dir({"TMPDIR": str(mine)}, said.append) == str(mine)
    os.chmod(lab, 0o755)
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert tmpdirs.base_dir({"TMPDIR": str(link)}, said.append) == str(mine)  # resolved once


def test_tmpdir_is_used_only_when_safe(tmp_path: Path) -> None:
    said: list[str] = []
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert tmpdirs.base_dir({"TMPDIR": str(mine)}, said.append) == str(mine)
    assert tmpdirs.base_dir({}, said.append) == "/tmp"
    assert tmpdirs.base_dir({"TMPDIR": "/tmp"}, said.append) == "/tmp"
    assert said == []
    os.chmod(mine, 0o770)
    assert tmpdirs.base_dir({"TMPDIR": str(mine)}, said.append) == "/tmp"
    assert tmpdirs.base_dir({"TMPDIR": str(tmp_path / "missing")}, said.append) == "/tmp"
    assert tmpdirs.base_dir({"TMPDIR": "relative"}, said.append) == "/tmp"
    assert said == [
        f"TMPDIR={mine} is not safe for the session's host key (writable by group or others); "
        "using /tmp",
        f"TMPDIR={tmp_path / 'missing'} is not safe for the session's host key (No such file or "
        "directory); using /tmp",
        "TMPDIR=relative is not safe for the session's host key (not an absolute path); using /tmp",
    ]


SQUEUE_LINE = "{id}|train|RUNNING|None|node01|1:00:00|2:00:00|2026-11-23T11:00:00|"


def test_a_new_session_sweeps_temp_dirs_of_ended_jobs(tmp_path: Path) -> None:
    base = tmp_path / "tmp"
    base.mkdir(mode=0o700)
    for name in ("interactive-slurm-7-aaaa", "interactive-slurm-7-bbbb", "interactive-slurm-8-cccc",
                 "interactive-slurm-9-dddd", "interactive-slurm-x-eeee", "other-7-ffff"):
        (base / name).mkdir()
        (base / name / "host_ed25519_key").write_text("secret")
    runner = FakeRunner({"squeue": ok(SQUEUE_LINE.format(id=8))})
    said: list[str] = []
    folder = tmpdirs.make_session_dir(runner, "9", said.append, {"TMPDIR": str(base)})
    assert sorted(os.listdir(base)) == sorted([
        "interactive-slurm-8-cccc", "interactive-slurm-9-dddd", "interactive-slurm-x-eeee",
        "other-7-ffff", folder.name,
    ])
    assert folder.name.startswith("interactive-slurm-9-")
    assert runner.argvs("squeue")[0] == tuple(slurm.squeue_mine_argv())
    assert said and said[0].startswith("removed 2 temp dir(s) left by ended sessions: ")


def test_the_sweep_asks_slurm_only_when_there_is_something_and_keeps_all_if_it_cannot(
    tmp_path: Path
) -> None:
    base = tmp_path / "tmp"
    base.mkdir(mode=0o700)
    tmpdirs.make_session_dir(FakeRunner(), "9", print, {"TMPDIR": str(base)})  # no squeue call
    (base / "interactive-slurm-7-aaaa").mkdir()
    said: list[str] = []
    runner = FakeRunner({"squeue": fail("slurm_load_jobs error: Unable to contact slurm controller")})
    assert tmpdirs.sweep(runner, str(base), "9", said.append) == []
    assert (base / "interactive-slurm-7-aaaa").is_dir()
    assert said[0].startswith("could not ask Slurm which jobs are alive")
