"""Issue 12 (StrictModes, isolation, temp dirs) and issue 8 (corrupt files, a full disk), on the
real local cluster. The hostile second user is ``isother`` (see conftest.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from unit.modes import writable_by_others

from .conftest import REQUIRED, TOOL, Harness, as_other, my_jobs, wait_for
from .test_security import endpoint_of, kill_session_hard

OTHER_USER = pytest.mark.usefixtures("other_user")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_group_writable_config_dir_is_refused_with_the_fix(harness: Harness) -> None:
    folder = harness.home / "config"
    folder.chmod(0o775)
    try:
        result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
        assert result.returncode == 255
        line = one_error_line(result.stderr)
        assert f"{folder}: refusing: writable by group or others" in line
        assert f"fix: chmod go-w {folder}" in line
        assert my_jobs() == []  # nothing submitted
    finally:
        folder.chmod(0o700)
    harness.ssh("slurm-cpu", "true")


@OTHER_USER
def test_a_config_file_planted_by_another_user_is_refused(harness: Harness) -> None:
    folder = harness.home / "config"
    opened = [p for p in [harness.home, *list(harness.home.parents)[:3]]
              if p.stat().st_uid == os.getuid()]
    modes = {p: p.stat().st_mode & 0o777 for p in [*opened, folder]}
    for p in opened:
        p.chmod(modes[p] | 0o011)
    folder.chmod(0o777)  # a careless moment: she plants her config.toml
    try:
        as_other("sh", "-c", f"umask 022; echo 'sshd = \"/tmp/evil-sshd\"' > {folder}/config.toml",
                 check=True)
        folder.chmod(0o700)  # ... and the folder is private again, her file is still there
        result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
        assert result.returncode == 255
        line = one_error_line(result.stderr)
        assert f"{folder}/config.toml: refusing: owned by isother" in line
        assert my_jobs() == []
    finally:
        (folder / "config.toml").unlink(missing_ok=True)
        for p, m in modes.items():
            p.chmod(m)


def test_under_umask_000_nothing_the_tool_makes_is_writable_by_others(
    harness: Harness, tmp_path: Path
) -> None:
    home = tmp_path / "umask-home"
    env = {**harness.env, "INTERACTIVE_SLURM_HOME": str(home)}
    h = Harness(home, env, tmp_path / "umask_ssh_config")

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return h.run(["sh", "-c", f"umask 000; {command}"], check=True)

    h.ssh_config.write_text(sh(f"{TOOL} ssh-config").stdout)
    sh(f"ssh -F {h.ssh_config} -o BatchMode=yes slurm-cpu true")
    sh(f"{TOOL} profiles set mine --from default cpu.cpus=2")
    sh(f"{TOOL} profiles set mine cpu.cpus=3")  # a backup too
    sh(f"{TOOL} trust --write")
    sh(f"{TOOL} update --disable")
    ep = endpoint_of(h)
    [session_tmp] = Path("/tmp").glob(f"interactive-slurm-{ep['job_id']}-*")
    assert stat.S_IMODE(session_tmp.stat().st_mode) == 0o700
    assert writable_by_others(home) == []


def test_modules_in_home_do_not_change_the_session(harness: Harness) -> None:
    planted = [Path.home() / "platformdirs.py", Path.home() / "socket.py"]
    marker = Path.home() / "planted-module-ran"
    for path in planted:
        path.write_text(f"open({str(marker)!r}, 'a').write({path.name!r})\nraise SystemExit(3)\n")
    try:
        out = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID").stdout
        assert f"JOB={my_jobs()[0]['id']}" in out
        assert not marker.exists()
    finally:
        for path in [*planted, marker]:
            path.unlink(missing_ok=True)


def test_unsafe_tmpdir_falls_back_to_tmp_and_leftovers_are_swept(
    harness: Harness, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o775)
    leftover = Path("/tmp") / f"interactive-slurm-999999-{uuid.uuid4().hex[:8]}"
    leftover.mkdir(mode=0o700)
    (leftover / "host_ed25519_key").write_text("old key\n")
    try:
        harness.env["TMPDIR"] = str(shared)  # sbatch passes it on to the job
        harness.ssh("slurm-cpu", "true")
        ep = endpoint_of(harness)
        log = (harness.home / "state" / "logs" / f"job-{ep['job_id']}.log").read_text()
        assert f"TMPDIR={shared} is not safe for the session's host key" in log
        assert "using /tmp" in log
        assert list(Path("/tmp").glob(f"interactive-slurm-{ep['job_id']}-*"))
        assert not list(shared.iterdir())
        assert not leftover.exists() and "removed 1 temp dir(s)" in log
    finally:
        harness.env.pop("TMPDIR", None)
        if leftover.exists():
            for child in leftover.iterdir():
                child.unlink()
            leftover.rmdir()


def test_a_corrupt_record_is_stale_and_the_connect_goes_on(harness: Harness) -> None:
    harness.ssh("slurm-cpu", "true")
    ep = endpoint_of(harness)
    kill_session_hard(ep)  # a node crash: the record stays
    record = harness.home / "state" / "jobs" / str(ep["job_id"]) / "endpoint.json"
    record.write_text('{"job_id": "' + str(ep["job_id"]) + '", "port": ')  # corrupt
    out = harness.ssh("slurm-cpu", "echo JOB=$SLURM_JOB_ID").stdout
    new_job = my_jobs()[0]["id"]
    assert f"JOB={new_job}" in out and new_job != ep["job_id"]
    assert not record.exists()


def test_a_corrupt_config_or_profile_names_the_file_and_line(harness: Harness) -> None:
    harness.write_config('default_profile = "default"\nwait_timeout = = 30\n')
    result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
    path = harness.home / "config" / "config.toml"
    assert f"error: {path}: line 2, column 16: not valid TOML: Invalid value" in result.stderr
    harness.write_config('default_profile = "mine"\n')
    prof = harness.write_profile("mine", "[cpu]\ntime = 8h\n")
    result = harness.ssh("slurm-cpu", "true", check=False, timeout=60)
    assert f"error: {prof}: line 2, column " in result.stderr and "not valid TOML" in result.stderr
    assert my_jobs() == []


FULL_FS = os.environ.get("INTERACTIVE_SLURM_TEST_FULL_FS", "")


def test_a_full_state_filesystem_is_a_clear_error_and_leaves_no_half_file(harness: Harness) -> None:
    if not FULL_FS:
        message = "no test tmpfs: scripts/test mounts one as root (INTERACTIVE_SLURM_TEST_FULL_FS)"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    home = Path(FULL_FS) / f"home-{uuid.uuid4().hex[:8]}"
    filler = Path(FULL_FS) / f"filler-{home.name}"
    env = {**harness.env, "INTERACTIVE_SLURM_HOME": str(home)}
    h = Harness(home, env, harness.ssh_config.with_name("full_ssh_config"))
    try:
        h.ssh_config.write_text(h.tool("ssh-config", "--no-multiplex").stdout)
        with open(filler, "wb") as fh:  # fill the filesystem up
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        result = h.tool("profiles", "set", "mine", "--from", "default", "cpu.cpus=2", check=False)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert "No space left on device" in line and "the filesystem is full" in line
        profiles_dir = home / "config" / "profiles"
        assert not profiles_dir.exists() or list(profiles_dir.iterdir()) == []
        result = h.ssh("slurm-cpu", "true", check=False, timeout=120)
        assert result.returncode == 255 and "Traceback" not in result.stderr
        assert "error: " in result.stderr
        jobs = home / "state" / "jobs"
        assert not list(jobs.glob("*/endpoint.json")) and not list(jobs.glob("*/.endpoint.json.*"))
        wait_for(lambda: not my_jobs(), 60, "the failed job to leave the queue")
    finally:
        filler.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(home)], check=False)
