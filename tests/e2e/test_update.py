"""The updater end to end: a local bare git repository of releases made from this tree, a first
install in the layout `setup` makes, `ssh slurm-cpu` through `<root>/current`, the real cluster."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interactive_slurm.install import installs

from .conftest import TOOL, Harness, cancel_all_and_wait, wait_for
from .releases import ReleaseRepo, build_wheels, first_install, git


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.path.dirname(build_wheels(tmp_path_factory.mktemp("wheels") / "w")[0]))


@dataclass
class Install:
    h: Harness
    root: Path
    repo: ReleaseRepo
    ssh_config: Path
    base: str

    @property
    def tool(self) -> Path:
        return self.root / "current" / "bin" / "interactive-slurm"

    def cmd(self, *args: str, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        return self.h.run([str(self.tool), *args], check=check, timeout=timeout)

    def current(self) -> str | None:
        return installs.current(self.root)

    def version(self) -> str:
        return self.cmd("--version").stdout.split()[-1]

    def ssh(self, command: str = "echo JOB=$SLURM_JOB_ID") -> str:
        out = self.h.run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", "slurm-cpu",
                          command], check=True, timeout=180)
        return out.stdout.strip()

    def configure(self, **update: object) -> None:
        lines = ["[update]"]
        for key, value in update.items():
            lines.append(f"{key} = " + (str(value).lower() if isinstance(value, bool)
                                        else f'"{value}"' if isinstance(value, str) else str(value)))
        self.h.write_config("\n".join(lines) + "\n")

    @property
    def update_dir(self) -> Path:
        return self.h.home / "state" / "update"

    def log(self) -> str:
        path = self.update_dir / "check.log"
        return path.read_text() if path.exists() else ""


def job_comments() -> dict[str, str]:
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i|%k"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


@pytest.fixture
def inst(harness: Harness, tmp_path: Path, wheel_dir: Path) -> Iterator[Install]:
    repo = ReleaseRepo(tmp_path / "releases")
    repo.release("v0.1.1")
    repo.release("v0.2.0rc1")
    root = tmp_path / "root"
    base = first_install(root, wheel_dir)
    ssh_config = tmp_path / "ssh_config_current"
    text = harness.ssh_config.read_text()
    assert f"ProxyCommand {TOOL} proxy cpu" in text
    ssh_config.write_text(text.replace(str(TOOL), str(root / "current" / "bin" / "interactive-slurm")))
    i = Install(harness, root, repo, ssh_config, base)
    i.configure(url=str(repo.bare))
    # Tests start checks themselves: the proxy's automatic check is not due in this one.
    for folder in (harness.home, harness.home / "state", i.update_dir):
        folder.mkdir(mode=0o700, exist_ok=True)
    (i.update_dir / "next-check").touch()
    os.utime(i.update_dir / "next-check", (time.time() + 86400, time.time() + 86400))
    yield i
    cancel_all_and_wait()


def test_update_to_the_newest_stable_release_not_a_pre_release(inst: Install) -> None:
    assert inst.version() == "0.1.0"
    check = inst.cmd("remote", "check").stdout
    assert f"installed:    {inst.base}" in check
    assert "available:    v0.1.1 (v0.1.1 is newer)" in check
    out = inst.cmd("remote", "update")
    assert inst.current() == out.stdout.strip()
    assert inst.current().startswith("0.1.1-")  # type: ignore[union-attr]
    assert inst.version() == "0.1.1"
    assert f"(was {inst.base})" in out.stderr
    assert "up to date (0.1.1; newest stable release is v0.1.1)" in inst.cmd("remote", "check").stdout
    # A connection through `current` runs the new version, in its own venv.
    job = inst.ssh().removeprefix("JOB=")
    assert f"version=0.1.1,install={inst.current()}" in job_comments()[job]
    # The pre channel takes the release candidate.
    inst.configure(url=str(inst.repo.bare), channel="pre")
    inst.cmd("update")  # the login-node spelling
    assert inst.version() == "0.2.0rc1"


def test_a_pinned_tag_is_respected(inst: Install) -> None:
    inst.repo.release("v0.2.0")
    inst.configure(url=str(inst.repo.bare), channel="v0.1.1")
    inst.cmd("remote", "update")
    assert inst.version() == "0.1.1"
    assert "unchanged" in inst.cmd("remote", "update").stdout  # the pin holds: no v0.2.0
    inst.cmd("remote", "update", "--to", "v0.2.0")
    assert inst.version() == "0.2.0"
    inst.cmd("remote", "update")  # back to the pin, from its existing install
    assert inst.version() == "0.1.1"


def test_a_broken_release_is_not_switched_to(inst: Install) -> None:
    inst.cmd("remote", "update")
    good = inst.current()
    inst.repo.release("v0.1.2", broken=True)
    out = inst.cmd("remote", "update", check=False)
    assert out.returncode == 1
    assert f"error: v0.1.2 was not installed, {good} stays current: self-check of 0.1.2-" in out.stderr
    assert "this release is broken on purpose" in out.stderr
    assert inst.current() == good
    assert not [p for p in (inst.root / "versions").iterdir() if p.name.startswith("0.1.2")]
    assert not [p for p in (inst.root / "wheels").iterdir() if p.name.startswith(("0.1.2", "."))]
    job = inst.ssh().removeprefix("JOB=")  # ssh slurm-cpu still works, on the old version
    assert f"version=0.1.1,install={good}" in job_comments()[job]


def test_rollback(inst: Install) -> None:
    inst.cmd("remote", "update")
    new = inst.current()
    out = inst.cmd("remote", "update", "--rollback")
    assert out.stdout.strip() == inst.base == inst.current()
    assert "automatic checks will not install 0.1.1 again" in out.stderr
    assert inst.version() == "0.1.0"
    auto = inst.cmd("update", "--auto")  # what the proxy starts: leaves the rollback alone
    assert "v0.1.1 was rolled back; not installing it automatically" in auto.stderr
    assert inst.current() == inst.base
    inst.cmd("remote", "update")  # asked for: it installs it again (already there: a switch)
    assert inst.current() == new
    rollback_again = inst.cmd("remote", "update", "--rollback")
    assert rollback_again.stdout.strip() == inst.base


def test_concurrent_updates_serialize(inst: Install) -> None:
    procs = [subprocess.Popen([str(inst.tool), "remote", "update"], env=inst.h.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    errs = "".join(err for _, err in outs)
    assert errs.count("switched ") == 1
    assert "another update is running; waiting for it" in errs
    assert "up to date (0.1.1;" in errs
    assert len([p for p in (inst.root / "versions").iterdir() if p.name.startswith("0.1.1")]) == 1
    assert inst.version() == "0.1.1"


def test_interval_stamp_is_respected_and_written_on_failure(inst: Install, tmp_path: Path) -> None:
    stamp = inst.update_dir / "next-check"
    inst.configure(url=str(tmp_path / "unreachable.git"), interval_hours=1)
    stamp.unlink()  # due
    inst.ssh()
    wait_for(lambda: "error: cannot fetch" in inst.log(), 60, "the failed check in the log")
    wait_for(lambda: stamp.stat().st_mtime > time.time() + 3000, 10, "the stamp of a failed check")
    assert time.time() + 3000 < stamp.stat().st_mtime <= time.time() + 3600
    before = inst.log()
    for _ in range(3):  # not due: no check, however many connections
        inst.ssh()
    time.sleep(2)
    assert inst.log() == before
    os.utime(stamp, (time.time() - 1, time.time() - 1))  # due again
    inst.ssh()
    wait_for(lambda: inst.log().count("error: cannot fetch") == 2, 60, "the second check")
    assert inst.current() == inst.base


def proxy_to_banner(inst: Install) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([str(inst.tool), "proxy", "cpu"], env=inst.h.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        elapsed = time.monotonic() - start
        assert banner.startswith(b"SSH-2.0-"), banner
        return elapsed
    finally:
        proc.kill()
        proc.communicate()


def test_the_fast_path_is_not_slowed_by_a_due_check(inst: Install, tmp_path: Path) -> None:
    inst.configure(url=str(tmp_path / "unreachable.git"))
    inst.ssh()  # a live session: the fast path answers from its endpoint record
    stamp = inst.update_dir / "next-check"
    due_times, quiet_times = [], []
    for _ in range(7):
        os.utime(stamp, (time.time() - 1, time.time() - 1))
        due_times.append(proxy_to_banner(inst))
        os.utime(stamp, (time.time() + 86400, time.time() + 86400))
        quiet_times.append(proxy_to_banner(inst))
    wait_for(lambda: "error: cannot fetch" in inst.log(), 60, "the checks the proxy started")
    due, quiet = statistics.median(due_times), statistics.median(quiet_times)
    print(f"fast path to banner: due check {due * 1000:.0f} ms, none {quiet * 1000:.0f} ms")
    assert due < quiet + 0.05, (due_times, quiet_times)


def test_a_running_session_survives_updates_and_keeps_its_version(inst: Install) -> None:
    job = inst.ssh().removeprefix("JOB=")
    assert f"install={inst.base}" in job_comments()[job]
    inst.repo.release("v0.1.3")
    inst.repo.release("v0.2.0")
    for ref in ("v0.1.1", "v0.1.3", "v0.2.0"):  # four installs: more than the three kept
        inst.cmd("remote", "update", "--to", ref)
    assert inst.version() == "0.2.0"
    assert installs.is_complete(inst.root, inst.base)  # the session's version is not pruned
    assert inst.ssh() == f"JOB={job}"  # the same session, reached through the new proxy
    assert f"install={inst.base}" in job_comments()[job]
    inst.cmd("remote", "cancel", job, "--yes")
    cancel_all_and_wait()
    new_job = inst.ssh().removeprefix("JOB=")  # a new session starts from the new version
    assert new_job != job
    assert f"version=0.2.0,install={inst.current()}" in job_comments()[new_job]


def test_disabled_means_no_fetch_and_enabled_updates_in_the_background(inst: Install) -> None:
    inst.configure(url=str(inst.repo.bare), enabled=False)
    stamp = inst.update_dir / "next-check"
    stamp.unlink()
    inst.ssh()
    wait_for(lambda: "automatic checks are off ([update] enabled = false)" in inst.log(), 60,
             "the check to notice it is off")
    assert not (inst.update_dir / "source.git").exists()
    wait_for(lambda: stamp.exists() and stamp.stat().st_mtime > time.time() + 80000, 10, "stamp")
    assert inst.current() == inst.base
    out = inst.cmd("remote", "update", "--enable")
    assert "automatic checks on in" in out.stdout
    assert not stamp.exists()  # due at the next connection
    inst.ssh()
    wait_for(lambda: inst.current() != inst.base, 120, "the automatic update")
    assert inst.version() == "0.1.1"
    assert "switched" in inst.log()


def test_a_release_with_a_huge_file_is_refused_before_it_is_read(inst: Install) -> None:
    """Issue 17, item 5: the updater read every blob of a release into memory."""
    inst.cmd("remote", "update")
    good = inst.current()
    blob = inst.repo.work / "interactive_slurm" / "blob.bin"
    blob.write_bytes(os.urandom(9 << 20))
    git(inst.repo.work, "add", str(blob))
    inst.repo.release("v0.1.2")
    out = inst.cmd("remote", "update", check=False)
    assert out.returncode == 1
    assert "interactive_slurm/blob.bin has 9437184 bytes (at most 8388608)" in out.stderr
    assert inst.current() == good
