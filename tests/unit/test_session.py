"""session.py: the environment sessions get, the sshd_config, ports, and the job's spec."""

from __future__ import annotations

import io
import os
import random
import signal
import socket
from pathlib import Path
from typing import Callable

import pytest

from interactive_slurm.base import folders
from interactive_slurm.base.errors import SessionError
from interactive_slurm.connect import endpoint
from interactive_slurm.node import session
from interactive_slurm.node.session import SessionSpec

from .fakes import FakeRunner, fail, ok
from .test_keeper import FakeClock


def test_forwarded_env_keeps_the_jobs_view_and_drops_the_rest() -> None:
    env = {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node[01-02]",
        "SLURM_JOB_NAME": "vscode-remote-gpu",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "INTERACTIVE_SLURM_HOME": "/shared/u/is",
        "TMPDIR": "/tmp/job42",
        "HOME": "/home/u",
        "PATH": "/usr/bin:/bin",
        "LD_PRELOAD": "/evil.so",
        "MY_SLURM_THING": "x",
        "SLURM_QUOTE": 'a"b',
        "SLURM_NEWLINE": "a\nb",
        "SLURM_CR": "a\rb",
        "SLURM_BACKSLASH": "a\\b",
        "SLURM_NUL": "a\x00b",
        "SLURM-DASH": "x",
        "SLURM_EMPTY": "",
        "SLURM_SPACES": "a b  c",
    }
    assert session.forwarded_env(env) == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "INTERACTIVE_SLURM_HOME": "/shared/u/is",
        "SLURM_EMPTY": "",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NAME": "vscode-remote-gpu",
        "SLURM_JOB_NODELIST": "node[01-02]",
        "SLURM_SPACES": "a b  c",
        "TMPDIR": "/tmp/job42",
    }
    assert list(session.forwarded_env(env)) == sorted(session.forwarded_env(env))


def test_forwarded_env_drops_a_value_with_a_trailing_newline() -> None:
    assert session.forwarded_env({"SLURM_X": "abc\n"}) == {}


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({}, ""),
        ({"SLURM_JOB_ID": "42"}, 'SetEnv "SLURM_JOB_ID=42"'),
        (
            {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_X": "a b"},
            'SetEnv "CUDA_VISIBLE_DEVICES=0,1" "SLURM_X=a b"',
        ),
    ],
)
def test_setenv_line(env: dict[str, str], line: str) -> None:
    assert session.setenv_line(env) == line


def sshd_config_args(**changes: object) -> dict[str, object]:
    tmp = Path("/tmp/interactive-slurm-42-abcd1234")
    args: dict[str, object] = {
        "job_id": "42", "kind": "gpu", "user": "alice",
        "host_key": tmp / "host_ed25519_key", "host_cert": tmp / "host_ed25519_key-cert.pub",
        "env": {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42"},
        "extra": "PerSourcePenalties no",
    }
    args.update(changes)
    return args


def test_render_sshd_config_golden(golden: Callable[[str, str], None]) -> None:
    golden("sshd_config", session.render_sshd_config(**sshd_config_args()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"user": "al ice"},
        {"user": "al'ice"},
        {"host_key": Path("/tmp/a b/host_key")},
        {"host_cert": Path('/tmp/a"b/cert.pub')},
        {"host_cert": Path("/tmp/a\\b/cert.pub")},
        {"host_cert": Path("/tmp/a#b/cert.pub")},
        {"host_key": Path("/tmp/a\nb/host_key")},
        {"host_key": Path("/tmp/a\tb/host_key")},
    ],
)
def test_render_sshd_config_refuses_spaces_and_quotes(change: dict[str, object]) -> None:
    (value,) = change.values()
    with pytest.raises(SessionError) as info:
        session.render_sshd_config(**sshd_config_args(**change))  # type: ignore[arg-type]
    assert str(info.value) == (
        f"cannot put {str(value)!r} in sshd_config: it has spaces or quotes"
    )


def ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        return 32768


def test_port_range_is_below_the_ephemeral_range() -> None:
    low, high = session.port_range()
    assert 1024 <= low < high < ephemeral_low()


def test_pick_port_stays_in_range() -> None:
    low, high = session.port_range()
    rng = random.Random(1)
    ports = {session.pick_port(rng) for _ in range(200)}
    assert all(low <= p <= high for p in ports)
    assert len(ports) > 100  # random, not one fixed port


def fake_sshd(tmp_path: Path) -> str:
    path = tmp_path / "sshd"
    path.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o755)
    return str(path)


def test_spec_from_env(tmp_path: Path) -> None:
    sshd = fake_sshd(tmp_path)
    spec = session.spec_from_env(
        {"SLURM_JOB_ID": "42"}, kind="gpu", profile="development", valid_for=7200, sshd=sshd,
        container="",
    )
    assert spec == SessionSpec("42", "gpu", "development", 7200, sshd, "")


def test_spec_from_env_with_a_container_needs_a_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SessionError) as info:
        session.spec_from_env({"SLURM_JOB_ID": "42"}, kind="gpu", profile="default",
                              valid_for=60, sshd="/usr/sbin/sshd", container="img.sqsh")
    assert str(info.value) == (
        "profile asks for a container, but no container runtime (enroot, apptainer, singularity, "
        f"ch-run) is installed on {socket.gethostname()}"
    )
    with pytest.raises(SessionError, match="container runtime enroot, but enroot is not installed"):
        session.spec_from_env({"SLURM_JOB_ID": "42"}, kind="gpu", profile="default", valid_for=60,
                              sshd="/usr/sbin/sshd", container="img.sqsh", container_runtime="enroot")
    enroot = tmp_path / "enroot"
    enroot.write_text("#!/bin/sh\n")
    enroot.chmod(0o755)
    spec = session.spec_from_env({"SLURM_JOB_ID": "42"}, kind="gpu", profile="default",
                                 valid_for=60, sshd="/usr/sbin/sshd", container="img.sqsh",
                                 container_runtime="enroot")
    assert (spec.container, spec.container_runtime) == ("img.sqsh", "enroot")


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": ""}, {"SLURM_JOB_ID": "12a"}])
def test_spec_from_env_outside_a_job(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(SessionError) as info:
        session.spec_from_env(
            env, kind="cpu", profile="default", valid_for=60, sshd=fake_sshd(tmp_path),
            container="",
        )
    assert str(info.value) == "`interactive-slurm session` runs inside a Slurm job (no SLURM_JOB_ID)"


@pytest.mark.parametrize("name", ["missing-sshd", "not-executable", "relative"])
def test_spec_from_env_without_sshd(tmp_path: Path, name: str) -> None:
    sshd = str(tmp_path / name)
    if name == "not-executable":
        Path(sshd).write_text("")
        os.chmod(sshd, 0o644)
        if os.access(sshd, os.X_OK):  # root may execute anything
            pytest.skip("running as root: every file is executable")
    if name == "relative":
        sshd = "sbin/sshd"
    with pytest.raises(SessionError) as info:
        session.spec_from_env(
            {"SLURM_JOB_ID": "42"}, kind="cpu", profile="default", valid_for=60, sshd=sshd,
            container="",
        )
    assert str(info.value) == (
        f"sshd not found at {sshd} on {socket.gethostname()} (set `sshd` in config.toml)"
    )


def free_port() -> int:
    """A port free on both families (as the session would pick)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port: int = probe.getsockname()[1]
        try:
            for sock in session.bind_listeners(port):
                sock.close()
            return port
        except OSError:
            continue


def test_bind_listeners_holds_both_families() -> None:
    port = free_port()
    socks = session.bind_listeners(port)
    try:
        families = {s.family for s in socks}
        assert socket.AF_INET in families
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            if family in families:  # nobody else can listen on our port, on either family
                with socket.socket(family) as other, pytest.raises(OSError):
                    other.bind((addr, port))
                    other.listen()
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_neighbour_on_either_family_makes_the_port_unusable(family: int) -> None:
    port = free_port()
    addr = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        squatter = socket.socket(family)
        squatter.bind((addr, port))
    except OSError:
        pytest.skip("no IPv6 here")
    with squatter:
        squatter.listen()
        with pytest.raises(OSError):
            session.bind_listeners(port)


def test_listen_moves_to_another_port_when_one_family_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken, free = free_port(), free_port()
    squatter = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    squatter.bind(("::1" if socket.has_ipv6 else "127.0.0.1", taken))
    squatter.listen()
    ports = iter([taken, free])
    monkeypatch.setattr(session, "pick_port", lambda rng: next(ports))
    s = session.Session(FakeRunner({}), SessionSpec("4711", "cpu", "default", 600, "/x"),
                        log=io.StringIO())
    try:
        s.listen()
        assert s.port == free
    finally:
        squatter.close()
        for sock in s.listeners:
            sock.close()


@pytest.mark.parametrize(("transport", "v4", "v6"), [("auto", "0.0.0.0", "::"),
                                                    ("srun", "127.0.0.1", "::1")])
def test_listen_adds_a_private_unix_socket_and_srun_keeps_tcp_on_loopback(
    tmp_path: Path, transport: str, v4: str, v6: str,
) -> None:
    s = session.Session(FakeRunner({}), SessionSpec("4711", "cpu", "default", 600, "/x",
                                                    effective_transport=transport),
                        log=io.StringIO())
    s.tmp = tmp_path
    try:
        s.listen()
        by_family = {sock.family: sock.getsockname() for sock in s.listeners}
        assert by_family[socket.AF_UNIX] == str(tmp_path / "session.sock") == s.socket_path
        assert by_family[socket.AF_INET] == (v4, s.port)
        if socket.AF_INET6 in by_family:
            assert by_family[socket.AF_INET6][:2] == (v6, s.port)
    finally:
        for sock in s.listeners:
            sock.close()


def test_a_temp_folder_too_deep_for_a_unix_socket_leaves_only_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    assert session.bind_unix(deep / "session.sock") is None


@pytest.mark.parametrize(
    ("output", "now", "reason"),
    [
        ("JobId=7 JobName=x JobState=CANCELLED Reason=None", 100.0, "was cancelled"),
        ("JobId=7 JobName=x JobState=TIMEOUT Reason=TimeLimit", 100.0, "reached its time limit"),
        ("JobId=7 JobState=PREEMPTED Reason=None", 100.0, "was preempted"),
        ("JobId=7 JobState=FAILED Reason=None", 100.0, "ended (FAILED)"),
        ("", 100.0, "was cancelled"),  # no answer from Slurm: well before the limit
        ("JobId=7 JobState=RUNNING", 3590.0, "reached its time limit"),  # ...or at it
    ],
)
def test_end_reason(output: str, now: float, reason: str) -> None:
    assert session.end_reason(output, now=now, started=0.0, time_limit=3600) == reason




# ------------------------------------------------------------------------ lifetime


def test_spec_from_env_takes_the_idle_timeout_and_the_sessions_own_warning_lead(
    tmp_path: Path,
) -> None:
    sshd = fake_sshd(tmp_path)
    spec = session.spec_from_env(
        {"SLURM_JOB_ID": "42", session.WARN_BEFORE_ENV: "45"}, kind="cpu", profile="idle",
        valid_for=600, sshd=sshd, container="", idle_timeout=30,
    )
    assert (spec.idle_timeout, spec.warn_before) == (30, 45)
    default = session.spec_from_env({"SLURM_JOB_ID": "42"}, kind="cpu", profile="p",
                                    valid_for=600, sshd=sshd, container="")
    assert (default.idle_timeout, default.warn_before) == (0, session.WARN_BEFORE)


def idle_session(runner: FakeRunner, idle: int = 5,
                 clock: FakeClock | None = None) -> session.Session:
    spec = SessionSpec("4711", "cpu", "idle", 600, "/x", idle_timeout=idle)
    clock = clock or FakeClock()
    return session.Session(runner, spec, log=io.StringIO(), clock=clock, wall=clock.wall)


def test_the_sessions_keeper_takes_the_idle_timeout_from_the_spec() -> None:
    s = idle_session(FakeRunner({}))
    assert s.keeper.idle_deadline() == s.keeper.started + 5
    s.keeper.idle_since = None  # an sshd -i is serving a connection
    assert s.keeper.idle_deadline() is None
    off = session.Session(FakeRunner({}), SessionSpec("1", "cpu", "p", 600, "/x"),
                          log=io.StringIO())
    assert off.keeper.idle_deadline() is None


def test_end_idle_cancels_its_own_job_and_says_why() -> None:
    runner, clock = FakeRunner({"scancel": ok()}), FakeClock()
    s = idle_session(runner, clock=clock)
    clock.advance(5)
    assert s.keeper.idle_over()  # what makes serve() call end_idle
    assert s.end_idle()
    assert runner.argvs("scancel") == [("scancel", "4711")]
    assert "no SSH connection for 5 s (idle_timeout of profile idle); cancelling job 4711" in (
        s.log.getvalue())  # type: ignore[attr-defined]
    assert s.end_reason == "was cancelled after 5 s without an SSH connection (idle_timeout)"
    clock.advance(600)
    assert not s.keeper.idle_over()  # once


def test_end_idle_ends_the_session_when_scancel_fails() -> None:
    s = idle_session(FakeRunner({"scancel": fail("slurm_kill_job error")}))
    folders.ensure_private_dir(folders.job_dir("4711"))
    assert not s.end_idle()
    assert "scancel 4711 failed (slurm_kill_job error)" in s.log.getvalue()  # type: ignore[attr-defined]
    assert endpoint.ended_note("4711") == (
        "was cancelled after 5 s without an SSH connection (idle_timeout)")


def test_warn_deadline_is_the_lead_before_the_time_limit() -> None:
    s = session.Session(FakeRunner({}), SessionSpec("1", "cpu", "p", 3600, "/x", warn_before=600),
                        log=io.StringIO())
    assert s.keeper.warn_deadline() == pytest.approx(s.keeper.started + 3000)
    assert s.ends_at == pytest.approx(s.keeper.wall_start + 3600)
    s.keeper.warn_shells()  # no children: no shells to tell
    assert s.keeper.warn_deadline() is None
    assert "told 0 open shell(s)" in s.log.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("lived", "note"), [(3600 - 61, "was cancelled"),
                                             (3600 - 60, "reached its time limit")])
def test_the_ended_note_on_sigterm_tells_the_time_limit_from_a_cancel(
    lived: int, note: str,
) -> None:
    clock = FakeClock()
    runner = FakeRunner({"scontrol": ok("JobId=4711 JobState=RUNNING Reason=None")})
    s = session.Session(runner, SessionSpec("4711", "cpu", "p", 3600, "/x"), log=io.StringIO(),
                        clock=clock, wall=clock.wall)
    folders.ensure_private_dir(folders.job_dir("4711"))
    clock.advance(lived)
    s.leave_note(signal.SIGTERM)
    assert runner.argvs("scontrol") == [("scontrol", "show", "job", "-o", "4711")]
    assert endpoint.ended_note("4711") == note


def test_the_ended_note_after_the_idle_timeout_says_so_without_asking_slurm() -> None:
    runner = FakeRunner({"scancel": ok()})
    s = idle_session(runner)
    folders.ensure_private_dir(folders.job_dir("4711"))
    s.end_idle()
    s.leave_note(signal.SIGTERM)
    assert runner.programs() == ["scancel"]
    assert endpoint.ended_note("4711") == (
        "was cancelled after 5 s without an SSH connection (idle_timeout)")


@pytest.mark.parametrize(("mounts", "lacks"), [
    ("devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620 0 0\n", False),
    ("devpts /dev/pts devpts rw,nosuid,noexec,relatime,mode=600 0 0\n", True),
    # Issue 20: mounted twice, the one in effect (the last) is fine: no warning.
    ("devpts /dev/pts devpts rw,mode=600 0 0\ndevpts /dev/pts devpts rw,gid=5,mode=620 0 0\n", False),
    ("devpts /dev/pts devpts rw,gid=5,mode=620 0 0\ndevpts /dev/pts devpts rw,mode=600 0 0\n", True),
    ("proc /proc proc rw 0 0\n", False),
])
def test_the_devpts_mount_in_effect_decides_the_tty_warning(mounts: str, lacks: bool) -> None:
    from interactive_slurm.node.session import pts_mount_lacks_tty_gid

    assert pts_mount_lacks_tty_gid(mounts) is lacks


@pytest.mark.parametrize(("knows_penalties", "in_use"), [(True, "PerSourcePenalties no"),
                                                         (False, None)])
def test_configure_checks_both_files_side_by_side_and_keeps_the_one_sshd_takes(
    tmp_path: Path, knows_penalties: bool, in_use: str | None,
) -> None:
    """sshd 9.8+ takes ``PerSourcePenalties``; an older one refuses it and gets the file
    without: both ``sshd -t`` run at once (no second check after a refusal)."""
    import threading

    both_running = threading.Barrier(2, timeout=5)

    def sshd(argv: tuple[str, ...], _input: str | None) -> object:
        both_running.wait()  # each check waits for the other: they run side by side
        text = Path(argv[argv.index("-f") + 1]).read_text()
        if "PerSourcePenalties" in text and not knows_penalties:
            return fail("sshd_config line 31: Bad configuration option: PerSourcePenalties")
        return ok("")

    s = session.Session(FakeRunner({"/usr/sbin/sshd": sshd}),
                        SessionSpec("4711", "cpu", "default", 600, "/usr/sbin/sshd"),
                        log=io.StringIO())
    s.tmp = tmp_path
    s.configure(tmp_path / "key", tmp_path / "key-cert.pub")
    assert s.cfg == tmp_path / "sshd_config"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sshd_config"]
    text = s.cfg.read_text()
    assert ("PerSourcePenalties no" in text) == (in_use is not None)
    assert oct(s.cfg.stat().st_mode & 0o777) == "0o600"


def test_configure_names_what_sshd_refuses(tmp_path: Path) -> None:
    runner = FakeRunner({"/usr/sbin/sshd": fail("Unsupported option X11UseLocalhost")})
    s = session.Session(runner, SessionSpec("4711", "cpu", "default", 600, "/usr/sbin/sshd"),
                        log=io.StringIO())
    s.tmp = tmp_path
    with pytest.raises(SessionError, match=r"^/usr/sbin/sshd -t refuses this job's sshd_config: "
                                           r"Unsupported option X11UseLocalhost$"):
        s.configure(tmp_path / "key", tmp_path / "key-cert.pub")
    assert len(runner.calls) == 2


@pytest.mark.parametrize("script_said", [True, False])
def test_the_ready_line_times_each_step_from_the_script_start(
    monkeypatch: pytest.MonkeyPatch, script_said: bool,
) -> None:
    """What benchmarks/slurm_latency.py reads: the start's steps and when the script began
    (what the batch script said, else the process's start from /proc)."""
    import re
    import time

    clock = FakeClock()
    s = session.Session(FakeRunner({}), SessionSpec("1", "cpu", "p", 600, "/x"),
                        log=io.StringIO(), clock=clock, wall=clock.wall)
    if script_said:
        s.script_start = clock.wall_now - 0.05  # 0.05 s before the session's
        monkeypatch.setattr(session, "process_age", lambda: 99.0)  # not asked
    else:
        monkeypatch.setattr(session, "process_age", lambda: 0.05 + 0.057)
    for name, took in (("host key", 0.031), ("sshd -t", 0.024), ("listen", 0.002)):
        clock.advance(took)
        s.step(name)
    line = s.ready_timing()
    match = re.fullmatch(r"ready in 0\.107 s after its start at (\S+)\.(\d{3}) \(script 0\.050 s, "
                         r"host key 0\.031 s, sshd -t 0\.024 s, listen 0\.002 s\)", line)
    assert match, line
    began = clock.wall_now - 0.107
    stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")) + int(match.group(2)) / 1000
    assert abs(stamp - began) < 0.002


@pytest.mark.parametrize(("said", "found"), [
    ("1700000000.123456", 1700000000.123456),
    ("1700000000,123456", 1700000000.123456),  # bash in a locale with a decimal comma
    ("", None),  # bash before 5.0 has no $EPOCHREALTIME
    ("1699999000.0", None),  # not this job's start
    ("1700000100.0", None),  # in the future
    ("now", None),
])
def test_script_start_reads_bashs_clock_and_takes_it_out(said: str, found: float | None) -> None:
    env = {session.SCRIPT_START_ENV: said, "HOME": "/h"}
    assert session.script_start(env, 1_700_000_001.0) == found
    assert env == {"HOME": "/h"}  # the shells do not get it


def test_process_age_is_this_process_s() -> None:
    age = session.process_age()
    if not Path("/proc/self/stat").exists():
        assert age is None
        return
    assert age is not None and 0 < age < 24 * 3600
