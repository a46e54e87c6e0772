"""transport.py and fastpath's choice of transport: TCP, srun, auto with a remembered choice.

``srun`` here is a stand-in on PATH that drops its options and runs the task locally (the real
one is in tests/e2e/test_transport.py); everything else is real: the bridge process, the
socketpair, the keyhole over it, a unix socket on the session's side.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interactive_slurm.base import config, folders
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.connect import endpoint, fastpath, transport
from interactive_slurm.connect.endpoint import Endpoint
from interactive_slurm.connect.srunstep import step_argv
from interactive_slurm.login import profiles

from . import keyholes

SECRET = bytes(range(32))


@pytest.fixture
def fake_srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``srun`` that logs its argv and runs the task here (options dropped)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "srun.log"
    script = bindir / "srun"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'while [ "${1#--}" != "$1" ]; do shift; done\n'
        'exec "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unix_session(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "session.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    return listener, path


def record(**changes: object) -> Endpoint:
    values: dict[str, object] = {
        "job_id": "42", "kind": "cpu", "profile": "default", "host": "127.0.0.1",
        "port": closed_port(), "session_pid": 1, "started_at": time.time(),
        "secret": SECRET.hex(), "node": "node01", "partition": "short", "cluster": "lab",
    }
    values.update(changes)
    return Endpoint(**values)  # type: ignore[arg-type]


def read_banner(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(100)
        if not chunk:
            break
        data += chunk
    return data


def test_step_argv_runs_one_overlapping_unbuffered_task_on_the_node() -> None:
    argv = step_argv("42", "node01", ["interactive-slurm", "bridge", "/tmp/s"])
    assert argv[0] == "srun" and argv[-3:] == ["interactive-slurm", "bridge", "/tmp/s"]
    for flag in ("--jobid=42", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=node01",
                 "--unbuffered", "--quiet"):
        assert flag in argv
    assert "--pty" not in argv


def test_auto_falls_back_to_srun_when_tcp_is_refused_and_remembers_it(
    tmp_path: Path, fake_srun: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    listener, path = unix_session(tmp_path)
    ep = record(socket=path)
    thread = keyholes.serve_once(listener, SECRET, "42")
    sock = fastpath.open_connection(ep, configured="auto")
    assert read_banner(sock) == b"SSH-2.0-test\r\n"
    sock.close()
    thread.join(10)
    logged = fake_srun.read_text().splitlines()
    assert len(logged) == 1 and "--jobid=42" in logged[0] and "--nodelist=node01" in logged[0]
    assert logged[0].endswith(f"bridge {path}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"TCP to 127.0.0.1:{ep.port}: Connection refused" in err
    assert "use the srun transport for the next 24 h" in err and "partition short" in err
    assert transport.remembered(ep) == "srun"
    assert stat.S_IMODE(os.stat(transport.choices_file()).st_mode) == 0o600

    # The next connect goes straight to srun (no TCP try) and says nothing.
    tried: list[str] = []
    real_tcp = fastpath.connect_tcp

    def spy(host: str, port: int, timeout: float) -> object:
        tried.append(f"{host}:{port}")
        return real_tcp(host, port, timeout)

    thread = keyholes.serve_once(listener, SECRET, "42")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "connect_tcp", spy)
        sock = fastpath.open_connection(ep, configured="auto")
    assert read_banner(sock) == b"SSH-2.0-test\r\n"
    sock.close()
    thread.join(10)
    listener.close()
    assert tried == []
    assert capsys.readouterr().err == ""
    assert len(fake_srun.read_text().splitlines()) == 2


def test_the_remembered_choice_expires_and_is_per_partition(tmp_path: Path) -> None:
    ep = record()
    now = 1_800_000_000.0
    transport.remember(ep, "srun", now=now)
    assert transport.remembered(ep, now=now + 60) == "srun"
    assert transport.remembered(ep, now=now + transport.REMEMBER_SECONDS + 1) is None
    assert transport.remembered(record(partition="gpu"), now=now + 60) is None
    assert transport.remembered(record(cluster="other"), now=now + 60) is None
    # An expired entry is dropped when another is written.
    transport.remember(record(partition="gpu"), "srun", now=now + transport.REMEMBER_SECONDS + 5)
    assert transport.remembered(ep, now=now + 60) is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 1, "choices": []}',
                                  '{"version": 1, "choices": {"lab/short": {"transport": "x", '
                                  '"until": 9e99}}}',
                                  '{"version": 1, "choices": {"lab/short": {"transport": "srun", '
                                  '"until": true}}}'])
def test_a_broken_choices_file_means_no_choice(text: str) -> None:
    folders.ensure_private_dir(folders.state_dir())
    Path(transport.choices_file()).write_text(text)
    os.chmod(transport.choices_file(), 0o600)
    assert transport.remembered(record()) is None


def test_tcp_forced_names_the_firewall_and_the_setting(fake_srun: Path) -> None:
    ep = record(socket="/nonexistent/session.sock")
    with pytest.raises(fastpath.StaleEndpoint) as info:
        fastpath.open_connection(ep, configured="tcp")
    assert str(info.value) == (
        f"TCP to 127.0.0.1:{ep.port}: Connection refused; if a firewall lets only Slurm's "
        "traffic reach the compute nodes, set transport = \"auto\" or \"srun\" in config.toml")
    assert not fake_srun.exists()


def test_the_records_own_transport_wins_over_config(tmp_path: Path, fake_srun: Path) -> None:
    listener, path = unix_session(tmp_path)
    thread = keyholes.serve_once(listener, SECRET, "42")
    sock = fastpath.open_connection(record(socket=path, transport="srun"), configured="tcp")
    assert read_banner(sock) == b"SSH-2.0-test\r\n"
    sock.close()
    thread.join(10)
    listener.close()
    assert fake_srun.exists()


def test_srun_forced_is_used_even_where_tcp_works(tmp_path: Path, fake_srun: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as tcp:
        listener, path = unix_session(tmp_path)
        thread = keyholes.serve_once(listener, SECRET, "42")
        ep = record(socket=path, port=tcp.getsockname()[1])
        sock = fastpath.open_connection(ep, configured="srun")
        assert read_banner(sock) == b"SSH-2.0-test\r\n"
        sock.close()
        thread.join(10)
        listener.close()
    assert fake_srun.exists()
    assert transport.remembered(ep) is None  # chosen, not found: nothing to remember


def test_auto_with_srun_failing_too_is_stale_and_says_both(fake_srun: Path) -> None:
    ep = record(socket="/nonexistent/session.sock")
    with pytest.raises(fastpath.StaleEndpoint) as info:
        fastpath.open_connection(ep, configured="auto")
    why = str(info.value)
    assert why.startswith(f"TCP to 127.0.0.1:{ep.port}: Connection refused; through srun: ")
    assert transport.remembered(ep) is None


def test_a_record_without_a_node_never_tries_srun(fake_srun: Path) -> None:
    ep = record(node="")
    with pytest.raises(fastpath.StaleEndpoint):
        fastpath.open_connection(ep, configured="auto")
    assert not fake_srun.exists()


def test_the_bridge_carries_all_256_byte_values_both_ways_and_half_closes(tmp_path: Path) -> None:
    listener, path = unix_session(tmp_path)
    payload = bytes(range(256)) * 512
    proc = subprocess.Popen([sys.executable, "-I", "-m", "interactive_slurm", "bridge", path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn, _ = listener.accept()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(payload)
    proc.stdin.close()  # half-close: the session sees EOF, and may still answer
    got = b""
    conn.settimeout(10)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == payload
    conn.sendall(payload[::-1])
    conn.close()
    assert proc.stdout.read() == payload[::-1]
    assert proc.wait(10) == 0
    listener.close()


def test_the_bridge_says_in_one_line_when_the_session_is_not_there(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-m", "interactive_slurm", "bridge", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"interactive-slurm bridge: cannot reach the session at "
                             f"{tmp_path / 'none.sock'}: No such file or directory\n")


@pytest.mark.parametrize(("key", "value"), [
    ("node", "-w evil"), ("node", "a b"), ("partition", "x;y"), ("cluster", "../x"),
    ("socket", "relative.sock"), ("socket", "/" + "x" * 200), ("transport", "ssh"),
])
def test_records_with_unsafe_transport_fields_are_refused(key: str, value: str) -> None:
    ep = record(**{key: value})
    folders.ensure_private_dir(folders.job_dir("42"))
    path = Path(folders.endpoint_file("42"))
    path.write_text(ep.to_json())
    os.chmod(path, 0o600)
    with pytest.raises(endpoint.CorruptRecordError, match=key):
        endpoint.read(path)


def test_config_and_profiles_take_only_the_three_transports(tmp_path: Path) -> None:
    assert config.parse({"transport": "srun"}, tmp_path / "c.toml").transport == "srun"
    assert config.parse({}, tmp_path / "c.toml").transport == "auto"
    with pytest.raises(ConfigError, match=r"c\.toml: transport = 'ssh': expected \"auto\""):
        config.parse({"transport": "ssh"}, tmp_path / "c.toml")
    data = {"cpu": {"time": "1:00:00", "cpus": 1, "mem": "1G", "transport": "srun"},
            "gpu": {"time": "1:00:00", "cpus": 1, "mem": "1G", "gpus": 1}}
    prof = profiles.parse_profile("p", data, tmp_path / "p.toml")
    assert (prof.cpu.transport, prof.gpu.transport) == ("srun", None)
    data["gpu"]["transport"] = "udp"
    with pytest.raises(ConfigError, match=r"p\.toml: \[gpu\] transport = 'udp': expected"):
        profiles.parse_profile("p", data, tmp_path / "p.toml")
