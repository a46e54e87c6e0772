"""session.py: the environment sessions get, the sshd_config, ports, and the job's spec."""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import threading
from pathlib import Path
from typing import Callable

import pytest

from interactive_slurm import session
from interactive_slurm.errors import SessionError
from interactive_slurm.session import SessionSpec


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
        "job_id": "42", "kind": "gpu", "user": "alice", "port": 23456,
        "host_key": tmp / "host_ed25519_key", "host_cert": tmp / "host_ed25519_key-cert.pub",
        "pid_file": tmp / "sshd.pid",
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
        {"pid_file": Path("/tmp/a\\b/sshd.pid")},
        {"pid_file": Path("/tmp/a#b/sshd.pid")},
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


def test_read_banner() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                conn.recv(1)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        banner = session.read_banner("127.0.0.1", server.getsockname()[1], timeout=10)
        thread.join(10)
    assert banner == b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


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


@pytest.mark.skipif(not (os.access("/usr/sbin/sshd", os.X_OK) and shutil.which("ssh-keygen")),
                    reason="needs OpenSSH's sshd and ssh-keygen")
def test_a_taken_port_makes_the_session_try_another(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real sshd, no Slurm: the first port is taken, the session retries and serves the second."""
    from interactive_slurm.runner import SubprocessRunner

    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    with socket.socket() as probe:
        probe.bind(("", 0))
        free = probe.getsockname()[1]
    ports = iter([taken.getsockname()[1], free])
    monkeypatch.setattr(session, "pick_port", lambda rng: next(ports))
    spec = SessionSpec("4711", "cpu", "default", 600, "/usr/sbin/sshd")
    s = session.Session(SubprocessRunner(), spec, log=io.StringIO())
    try:
        key, cert = s.prepare()
        s.start_sshd(key, cert)
        assert s.port == free
        assert session.read_banner("127.0.0.1", free).startswith(b"SSH-2.0-OpenSSH")
    finally:
        s.cleanup()
        taken.close()
    assert s.tmp is not None and not s.tmp.exists()
