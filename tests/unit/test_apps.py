"""node/apps.py: starting an app in the job (the lookup in the login shell, the private folder,
the token, the supervisor, the readiness wait, the record), reusing it, stopping it. The runner,
the supervisor's launch, the probe and the clock are the seams; a `sleep` process stands in for
the supervisor (it is what gets signalled)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from interactive_slurm.base import folders
from interactive_slurm.base.errors import AppError
from interactive_slurm.connect import endpoint
from interactive_slurm.node import apps

from .fakes import Clock, FakeRunner, Reply, fail, ok

JOB = "4242"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A published session of job 4242 on this host (this process stands in for it), and the
    job's environment with a private TMPDIR."""
    folders.ensure_private_dir(folders.job_dir(JOB))
    endpoint.publish(endpoint.Endpoint(
        job_id=JOB, kind="cpu", profile="default", host=socket.gethostname(), port=2222,
        session_pid=os.getpid(), started_at=time.time(), secret="00" * 32))
    tmp = tempfile.mkdtemp(prefix="isu-")  # short: the socket's path must fit in sun_path
    try:
        yield {"SLURM_JOB_ID": JOB, "TMPDIR": tmp, "HOME": str(tmp_path)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Stand:
    """The supervisor's stand-in: a real `sleep`, so stop and terminate have a process to end."""

    def __init__(self) -> None:
        self.launched: list[tuple[list[str], Path]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exit_code: int | None = None

    def __call__(self, argv: Sequence[str], log: Path) -> Any:
        self.launched.append((list(argv), log))
        log.write_text("jupyter: starting\nTraceback: something broke\n")
        proc = subprocess.Popen(["sleep", "60"])
        self.procs.append(proc)
        stand = self

        class Launched:
            pid = proc.pid

            def poll(self) -> int | None:
                return stand.exit_code if stand.exit_code is not None else proc.poll()

        return Launched()

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def stand() -> Iterator[Stand]:
    s = Stand()
    yield s
    s.cleanup()


def lookup_ok() -> FakeRunner:
    """The login shell finds the programs (any shell: the runner is keyed by argv[0])."""
    return FakeRunner({apps.login_shell(): ok("")})


class Probe:
    def __init__(self, *answers: int | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[object, str, dict[str, str]]] = []

    def __call__(self, address: object, path: str, *, headers: dict[str, str], timeout: float
                 ) -> int | None:
        self.calls.append((address, path, headers))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def starter(session: dict[str, str], stand: Stand, probe: Probe, runner: FakeRunner | None = None
            ) -> apps.Starter:
    clock = Clock()
    return apps.Starter(runner or lookup_ok(), env=session, launch=stand, probe=probe, clock=clock,
                        sleep=clock.sleep)


def test_start_makes_a_private_app_and_records_it_once_it_answers(
    session: dict[str, str], stand: Stand
) -> None:
    probe = Probe(None, 502, 200)
    rec, reused = starter(session, stand, probe).start("lab", args=["--debug"])
    assert not reused and rec.ready and rec.name == "lab" and rec.job_id == JOB
    # The supervisor: this install's interpreter, the spec's path only (no token on argv).
    [(argv, log)] = stand.launched
    assert argv[:4] == [sys.executable, "-I", "-m", "interactive_slurm"]
    assert argv[4] == "app-serve" and argv[5] == str(Path(rec.runtime) / "spec.json")
    assert rec.token not in " ".join(argv) and len(rec.token) == 48
    assert log == Path(folders.job_apps_dir(JOB)) / "lab.log" == Path(rec.log)
    # The private folder on the node's temp space, swept by later sessions if left behind.
    runtime = Path(rec.runtime)
    assert runtime.parent == Path(session["TMPDIR"]) and stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert runtime.name.startswith(f"interactive-slurm-{JOB}-app_lab_")
    assert rec.socket == str(runtime / "http.sock")
    spec = apps.Spec.from_json((runtime / "spec.json").read_text())
    assert stat.S_IMODE((runtime / "spec.json").stat().st_mode) == 0o600
    assert spec.argv[:2] == ("jupyter", "lab") and spec.argv[-1] == "--debug"
    assert f"--ServerApp.sock={rec.socket}" in spec.argv and rec.token not in " ".join(spec.argv)
    assert spec.env["JUPYTER_TOKEN"] == rec.token and spec.guarded is False
    assert spec.session_pid == os.getpid() and spec.session_start == apps.process_start(os.getpid())
    # The probe asked the socket with the token, until it answered.
    assert [c[:2] for c in probe.calls] == [(rec.socket, "/api/status")] * 3
    assert probe.calls[0][2] == {"Authorization": f"token {rec.token}"}
    # The record: 0600 in a 0700 folder, with the supervisor's pid and start.
    path = apps.record_path(JOB, "lab")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert apps.read_record(JOB, "lab") == rec
    assert rec.pid == stand.procs[0].pid and apps.alive(rec)
    assert json.loads(path.read_text())["token"] == rec.token
    assert "token" not in rec.public()


def test_a_tcp_app_gets_a_port_and_the_guard(session: dict[str, str], stand: Stand) -> None:
    rec, _ = starter(session, stand, Probe(200)).start("tensorboard")
    spec = apps.Spec.from_json((Path(rec.runtime) / "spec.json").read_text())
    assert spec.listen == "tcp" and 20000 <= spec.port <= 60000 and spec.guarded
    assert spec.argv[:5] == ("tensorboard", "--host", "127.0.0.1", "--port", str(spec.port))
    assert spec.argv[-2:] == ("--logdir", session["HOME"])  # --workdir: home by default
    assert spec.cookie == f"interactive-slurm-{JOB}-tensorboard" and spec.env == {}
    assert rec.probe_headers() == {"Cookie": f"{spec.cookie}={rec.token}"}


def test_a_running_app_is_reused(session: dict[str, str], stand: Stand) -> None:
    first, _ = starter(session, stand, Probe(200)).start("lab")
    again, reused = starter(session, stand, Probe(200)).start("lab")
    assert reused and again == first and len(stand.launched) == 1
    with pytest.raises(AppError, match="lab already runs in job 4242 with other arguments"):
        starter(session, stand, Probe(200)).start("lab", args=["--other"])


def test_a_gone_app_is_started_again(session: dict[str, str], stand: Stand) -> None:
    first, _ = starter(session, stand, Probe(200)).start("lab")
    stand.procs[0].kill()
    stand.procs[0].wait()
    second, reused = starter(session, stand, Probe(200)).start("lab")
    assert not reused and second.pid != first.pid and not Path(first.runtime).exists()


@pytest.mark.parametrize(("answers", "exit_code", "why"), [
    ((403,), None, "it refused its own token (HTTP 403 for /api/status): the recipe's token "
                   "setting does not reach it"),
    ((None,), None, "it did not answer /api/status within 120 s (no answer; the recipe's "
                    "ready_timeout sets the wait)"),
    ((None, 404), None, "within 120 s (HTTP 404;"),
    ((None,), 1, "it exited (status 1) before it answered"),
])
def test_an_app_that_does_not_come_up_is_stopped_with_its_log(
    session: dict[str, str], stand: Stand, answers: tuple[int | None, ...], exit_code: int | None,
    why: str,
) -> None:
    stand.exit_code = exit_code
    with pytest.raises(AppError) as info:
        starter(session, stand, Probe(*answers)).start("lab")
    message = str(info.value)
    assert message.startswith(f"lab did not start in job {JOB} on {socket.gethostname()}: ")
    assert why in message
    assert f"--- the end of {folders.job_apps_dir(JOB)}/lab.log:" in message
    assert "Traceback: something broke" in message
    assert apps.read_record(JOB, "lab") is None
    stand.procs[0].wait(10)  # the stand-in was stopped (SIGTERM)
    assert not any(Path(session["TMPDIR"]).iterdir())  # the private folder is gone


def test_a_missing_program_is_one_line_with_the_recipes_hint(
    session: dict[str, str], stand: Stand
) -> None:
    shell = apps.login_shell()
    runner = FakeRunner({shell: Reply(stdout="motd noise\njupyter-notebook\n", returncode=3)})
    with pytest.raises(AppError) as info:
        starter(session, stand, Probe(200), runner).start("jupyter")
    assert str(info.value).startswith(
        f"jupyter-notebook not found on the compute node ({socket.gethostname()}): "
        "pip install --user notebook, or module load <your site's Jupyter module> "
        "[app jupyter: notebook (Jupyter Notebook 7, PyPI); recipe ")
    [call] = runner.calls
    assert call.argv[:3] == (shell, "-l", "-c") and call.argv[-1] == "jupyter-notebook"
    assert not stand.launched and not any(Path(session["TMPDIR"]).iterdir())


def test_a_failing_login_shell_is_reported(session: dict[str, str], stand: Stand) -> None:
    runner = FakeRunner({apps.login_shell(): fail("bash: /etc/profile: line 3: syntax error", 2)})
    with pytest.raises(AppError, match=r"your login shell \(.* -l\) failed on .* while looking "
                                       r"for jupyter-lab \(exit 2\): bash: /etc/profile"):
        starter(session, stand, Probe(200), runner).start("lab")


def test_the_lookup_script_runs_in_a_real_shell(tmp_path: Path) -> None:
    argv = apps.shell_argv("/bin/sh", "PATH=/nowhere:$PATH", apps.LOOKUP_SCRIPT, "x",
                           ["sh", "no-such-program-xyz"])
    result = subprocess.run(argv, capture_output=True, text=True, env={"HOME": str(tmp_path),
                                                                      "PATH": "/usr/bin:/bin"})
    assert result.returncode == 3 and result.stdout.strip().splitlines()[-1] == "no-such-program-xyz"
    argv = apps.shell_argv("/bin/sh", "", apps.LOOKUP_SCRIPT, "x", ["sh"])
    assert subprocess.run(argv, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}).returncode == 0


def test_outside_a_session_it_says_where_to_run(session: dict[str, str]) -> None:
    with pytest.raises(AppError, match="not inside a Slurm job: run this in your session"):
        apps.here({})
    with pytest.raises(AppError, match="job 7 has no running interactive-slurm session"):
        apps.here({"SLURM_JOB_ID": "7"})
    ep = endpoint.read_job(JOB)
    assert ep is not None
    endpoint.publish(ep.replace(host="node99"))
    with pytest.raises(AppError, match=f"job {JOB}'s session runs on node99, not on "):
        apps.here(session)


def test_stop_ends_the_supervisor_and_removes_the_record(session: dict[str, str],
                                                          stand: Stand) -> None:
    rec, _ = starter(session, stand, Probe(200)).start("lab")
    assert apps.stop("lab", session) == rec
    assert stand.procs[0].wait(10) == -15  # SIGTERM
    assert apps.read_record(JOB, "lab") is None and not Path(rec.runtime).exists()
    with pytest.raises(AppError, match=f"no app lab in job {JOB} \\(running: none\\)"):
        apps.stop("lab", session)


def test_records_list_and_states(session: dict[str, str], stand: Stand) -> None:
    rec, _ = starter(session, stand, Probe(200)).start("lab")
    apps.write_record(apps.AppRecord(**{**rec.as_dict(), "name": "jupyter", "args": (),
                                        "host": "node99"}))
    (Path(folders.job_apps_dir(JOB)) / "broken.json").write_text("{")
    rows = apps.read_records(JOB)
    assert [r.name for r in rows] == ["jupyter", "lab"]
    assert [apps.state(r) for r in rows] == ["running", "running"]
    stand.procs[0].kill()
    stand.procs[0].wait()
    assert apps.state(apps.read_records(JOB)[1]) == "gone"
    table = apps.format_table(rows).splitlines()
    assert table[0].split() == ["JOBID", "APP", "STATE", "NODE", "PID", "SOCKET", "LOG"]
    assert table[1].split()[:4] == [JOB, "jupyter", "running", "node99"]


def test_a_long_tmpdir_falls_back_to_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir(mode=0o700)
    folder = apps.runtime_dir(JOB, "lab", {"TMPDIR": str(deep)})
    try:
        assert folder.parent == Path("/tmp")
        assert len(str(folder / apps.PUBLIC_SOCKET)) <= apps.SOCKET_PATH_MAX
    finally:
        folder.rmdir()


def test_log_tail_takes_the_end_and_no_terminal_escapes(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "\x1b[2Jcleared\n")
    tail = apps.log_tail(str(log), "", str(tmp_path / "missing.log"), lines=3)
    assert tail == f"--- the end of {log}:\nline 98\nline 99\n?[2Jcleared"


def test_from_the_login_node_start_and_stop_go_through_the_session(
    session: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from interactive_slurm.login import remote, remoteapps

    monkeypatch.setattr(remote, "ensure_known_hosts", lambda runner: "/kh")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not remoteapps.in_job(JOB) and not remoteapps.in_job(None)
    answer = json.dumps({"name": "lab", "job_id": JOB, "reused": False})
    runner = FakeRunner({"ssh": [ok("motd\n" + answer + "\n"), ok(""),
                                 fail("error: no app lab in job 4242 (running: none)")]})
    assert remoteapps.start(runner, "lab", job_id=JOB, args=["--x"], workdir="/w") == json.loads(answer)
    call = runner.calls[0]
    assert call.argv[0] == "ssh" and "BatchMode=yes" in call.argv and call.timeout == 3700
    assert call.argv[-2] == socket.gethostname()
    words = call.argv[-1].split()
    assert words[-9:] == ["remote", "app", "start", "lab", "--json", "--workdir", "/w", "--", "--x"]
    assert remoteapps.stop(runner, "lab", job_id=JOB) == JOB
    assert runner.calls[1].argv[-1].split()[-4:] == ["remote", "app", "stop", "lab"]
    with pytest.raises(AppError, match=f"^in job {JOB}: no app lab in job 4242"):
        remoteapps.stop(runner, "lab", job_id=JOB)
    assert remoteapps.in_job(JOB, session) and not remoteapps.in_job("99", session)


def test_workdir_is_relative_to_the_home_on_the_node(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    env = {"HOME": str(tmp_path)}
    assert apps.resolve_workdir(None, env) == str(tmp_path)
    assert apps.resolve_workdir("runs", env) == str(tmp_path / "runs")
    assert apps.resolve_workdir("~/runs", env) == str(tmp_path / "runs")
    assert apps.resolve_workdir(str(tmp_path / "runs"), env) == str(tmp_path / "runs")
    with pytest.raises(AppError, match="--workdir nowhere: no such folder on "):
        apps.resolve_workdir("nowhere", env)
