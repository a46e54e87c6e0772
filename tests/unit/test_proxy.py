"""proxy.py: choosing a job, reuse-or-submit with a FakeRunner, waiting, progress."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from interactive_slurm.base import folders
from interactive_slurm.base.errors import (
    ConfigError,
    JobEndedError,
    ProxyError,
    SessionUnreachable,
)
from interactive_slurm.connect import endpoint
from interactive_slurm.login import profiles, proxy, slurm, waiting
from interactive_slurm.login.proxy import Progress, Request
from interactive_slurm.login.slurm import Job

from . import keyholes
from .fakes import FakeRunner, fail, ok

DEFAULT_CPU_COMMENT = slurm.build_comment(
    kind="cpu", profile="default", res_hash=profiles.resource_hash(profiles.load("default").cpu)
)


def job(job_id: str, state: str = "PENDING", *, kind: str = "cpu", profile: str = "default",
        container: str = "", reason: str = "Resources", nodes: str = "",
        start: str = "2026-11-23T16:10:00") -> Job:
    comment = slurm.build_comment(kind=kind, profile=profile, res_hash="abc", container=container)
    return Job(job_id, slurm.job_name(kind, profile), state, reason, nodes, "8:00:00", "8:00:00",
               start, comment)


def line(j: Job) -> str:
    return "|".join([j.job_id, j.name, j.state, j.reason, j.nodes, j.time_left, j.time_limit,
                     j.start_time, j.comment])


def squeue(*jobs: Job) -> Any:
    return ok("".join(line(j) + "\n" for j in jobs))


def scontrol(j: Job, partition: str = "debug") -> Any:
    """``scontrol --oneliner show job`` output for ``j`` (the fields the waiter reads)."""
    return ok(
        f"JobId={j.job_id} JobName={j.name} UserId=me(1000) JobState={j.state} Reason={j.reason} "
        f"Dependency=(null) RunTime=00:00:01 TimeLimit={j.time_limit} StartTime={j.start_time} "
        f"Partition={partition} NodeList={j.nodes or '(null)'} WorkDir=/home/me "
        f"Comment={j.comment}  StdOut=/dev/null\n"
    )


GONE = fail("slurm_load_jobs error: Invalid job id specified")
DOWN = fail("slurm_load_jobs error: Unable to contact slurm controller (connect failure)")


# --------------------------------------------------------------------------------- matching


def test_matching_prefers_running_then_oldest_and_excludes_others() -> None:
    jobs = [
        job("3", "PENDING"),
        job("9", "RUNNING", nodes="n9"),
        job("8", "RUNNING", nodes="n8"),
        job("2", "PENDING"),
        job("1", "RUNNING", kind="gpu"),
        job("4", "RUNNING", profile="development"),
        job("10", "RUNNING", container="img.sqsh"),
        job("11", "FAILED"),
        job("12", "COMPLETING"),
    ]
    assert [j.job_id for j in proxy.matching(jobs, Request("cpu", "default"))] == ["8", "9", "2", "3"]
    assert [j.job_id for j in proxy.matching(jobs, Request("cpu", "default", "img.sqsh"))] == ["10"]
    assert [j.job_id for j in proxy.matching(jobs, Request("gpu", "default"))] == ["1"]
    assert proxy.matching(jobs, Request("gpu", "production")) == []


def test_matching_orders_job_ids_numerically() -> None:
    jobs = [job("100"), job("99")]
    assert [j.job_id for j in proxy.matching(jobs, Request("cpu", "default"))] == ["99", "100"]


# --------------------------------------------------------------------------------- progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_pipe_prints_plain_lines_without_repeats() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    for message in ["job 5 PENDING", "job 5 PENDING", "job 5 RUNNING", "job 5 RUNNING"]:
        progress.show(message)
    progress.done()
    assert stream.getvalue() == "interactive-slurm: job 5 PENDING\ninteractive-slurm: job 5 RUNNING\n"


def test_progress_on_a_pipe_repeats_a_long_unchanged_wait_now_and_then() -> None:
    """Issue 20: VS Code or `ssh -T` saw one line that never changed during a long wait."""
    stream, now = io.StringIO(), [0.0]
    progress = Progress(stream, clock=lambda: now[0])
    for second in range(0, 150):
        now[0] = float(second)
        progress.show(f"job 5 PENDING (Priority) [{second}s]", key="job 5 PENDING (Priority)")
    assert stream.getvalue().splitlines() == [
        "interactive-slurm: job 5 PENDING (Priority) [0s]",
        "interactive-slurm: job 5 PENDING (Priority) [60s]",
        "interactive-slurm: job 5 PENDING (Priority) [120s]",
    ]


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    stream = Tty()
    progress = Progress(stream)
    progress.show("a")
    progress.show("a")
    progress.show("b")
    progress.done()
    assert stream.getvalue() == (
        "\r\033[Kinteractive-slurm: a\r\033[Kinteractive-slurm: b\r\033[K"
    )


@pytest.mark.parametrize(
    ("j", "waited", "text"),
    [
        (job("5"), 3.7,
         "job 5 (vscode-remote-cpu) PENDING (Resources), expected start 2026-11-23T16:10:00 [3s]"),
        (job("5", reason="None", start="N/A"), 0, "job 5 (vscode-remote-cpu) PENDING [0s]"),
        (job("5", reason="Priority", start="Unknown"), 61,
         "job 5 (vscode-remote-cpu) PENDING (Priority) [61s]"),
        (job("6", "RUNNING", kind="gpu", profile="development", nodes="node01", reason="None"), 12,
         "job 6 (vscode-remote-gpu-development) RUNNING on node01, starting sshd [12s]"),
        (job("7", "FAILED", reason="NonZeroExitCode"), 1, "job 7 (vscode-remote-cpu) FAILED [1s]"),
    ],
)
def test_describe(j: Job, waited: float, text: str) -> None:
    assert proxy.describe(j, waited) == text


# ---------------------------------------------------------------------------------- acquire


def test_acquire_reuses_a_running_job_without_sbatch() -> None:
    runner = FakeRunner({"squeue": squeue(job("5", "PENDING"), job("6", "RUNNING", nodes="n1"))})
    acquired = proxy.acquire(runner, Request("cpu", "default"))
    assert (acquired.job.job_id, acquired.submitted) == ("6", False)
    assert runner.programs() == ["squeue"]


def test_acquire_reuses_the_job_of_a_profile_that_names_a_container(home: Path) -> None:
    folder = home / "config" / "profiles"
    folder.mkdir(parents=True)
    text = (profiles.SHIPPED_DIR / "default.toml").read_text()
    (folder / "boxed.toml").write_text('container = "/img/box.sqsh"\n' + text)
    runner = FakeRunner({"squeue": squeue(job("6", "RUNNING", profile="boxed",
                                              container="/img/box.sqsh"))})
    acquired = proxy.acquire(runner, Request("cpu", "boxed"))
    assert (acquired.job.job_id, acquired.submitted) == ("6", False)
    assert runner.programs() == ["squeue"]


def test_acquire_reuses_a_pending_job() -> None:
    runner = FakeRunner({"squeue": squeue(job("5", "PENDING"), job("6", "RUNNING", kind="gpu"))})
    acquired = proxy.acquire(runner, Request("cpu", "default"))
    assert (acquired.job.job_id, acquired.submitted) == ("5", False)
    assert runner.programs() == ["squeue"]


def test_acquire_submits_when_there_is_none() -> None:
    runner = FakeRunner({
        "squeue": [squeue(job("5", "RUNNING", kind="gpu")), squeue(job("7"))],
        "sbatch": ok("7\n"),
    })
    acquired = proxy.acquire(runner, Request("cpu", "default"))
    assert (acquired.job.job_id, acquired.submitted) == ("7", True)
    assert runner.programs() == ["squeue", "sbatch", "squeue"]
    (call,) = [c for c in runner.calls if c.argv[0] == "sbatch"]
    assert call.argv == (
        "sbatch", "--parsable", "--job-name=vscode-remote-cpu", f"--comment={DEFAULT_CPU_COMMENT}",
        f"--output={Path(folders.logs_dir()) / 'job-%j.log'}", f"--chdir={Path.home()}",
        "--open-mode=append",
        "--nodes=1", "--ntasks=1", "--time=08:00:00", "--cpus-per-task=4", "--mem=16G",
    )
    assert call.input == slurm.render_batch_script(
        python=sys.executable, kind="cpu", profile="default", valid_for=8 * 3600
    )
    assert Path(folders.logs_dir()).is_dir()


def test_acquire_submits_a_gpu_job_with_its_profile_and_container() -> None:
    runner = FakeRunner({
        "squeue": [ok(""), squeue(job("8", kind="gpu", profile="development", container="img"))],
        "sbatch": ok("8;cluster\n"),
    })
    acquired = proxy.acquire(runner, Request("gpu", "development", "img"))
    assert (acquired.job.job_id, acquired.submitted) == ("8", True)
    (argv,) = runner.argvs("sbatch")
    assert "--job-name=vscode-remote-gpu-development" in argv
    assert "--gres=gpu:1" in argv
    assert any(a.startswith("--comment=") and a.endswith(",container=img") for a in argv)
    (call,) = [c for c in runner.calls if c.argv[0] == "sbatch"]
    assert call.input is not None
    assert call.input.splitlines()[-1].endswith(
        "session --kind gpu --profile development --valid-for 7200 --container img"
    )


def test_acquire_cancels_its_own_job_when_an_older_one_raced_in() -> None:
    runner = FakeRunner({
        "squeue": [ok(""), squeue(job("5"), job("7"))],
        "sbatch": ok("7\n"),
        "scancel": ok(),
    })
    acquired = proxy.acquire(runner, Request("cpu", "default"))
    assert (acquired.job.job_id, acquired.submitted) == ("5", False)
    assert runner.programs() == ["squeue", "sbatch", "squeue", "scancel"]
    assert runner.argvs("scancel") == [("scancel", "7")]


def test_acquire_asks_for_the_new_job_when_squeue_does_not_list_it_yet() -> None:
    runner = FakeRunner({"squeue": [ok(""), ok(""), squeue(job("7"))], "sbatch": ok("7\n")})
    acquired = proxy.acquire(runner, Request("cpu", "default"))
    assert (acquired.job.job_id, acquired.submitted) == ("7", True)
    assert runner.argvs("squeue")[-1] == tuple(slurm.squeue_job_argv("7"))


def test_acquire_fails_when_slurm_forgot_the_new_job() -> None:
    runner = FakeRunner({
        "squeue": [ok(""), ok(""), fail("slurm_load_jobs error: Invalid job id specified")],
        "sbatch": ok("7\n"),
    })
    with pytest.raises(ProxyError, match="job 7 was submitted but Slurm does not know it"):
        proxy.acquire(runner, Request("cpu", "default"))


@pytest.mark.parametrize("profile", ["nope", "broken"])
def test_acquire_with_a_bad_profile_submits_nothing(profile: str) -> None:
    folder = Path(folders.profiles_dir())
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text('[cpu]\ntime = "0"\ncpus = 1\nmem = "1G"\n')
    runner = FakeRunner({"squeue": ok(""), "sbatch": ok("7\n")})
    with pytest.raises(ConfigError):
        proxy.acquire(runner, Request("cpu", profile))
    assert runner.calls == []


# ----------------------------------------------------------------------------------- Waiter


class Clock:
    """A monotonic clock that advances ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def waiter(runner: FakeRunner, *, timeout: float = 60, step: float = 0.0,
           watch_fd: int | None = None, stream: io.StringIO | None = None,
           clock: Callable[[], float] | None = None, known: Job | None = None) -> proxy.Waiter:
    return proxy.Waiter(runner, "5", timeout=timeout, progress=Progress(stream or io.StringIO()),
                        watch_fd=watch_fd, clock=clock or Clock(step), job=known)


def test_waiter_job_failed_mentions_state_and_log() -> None:
    runner = FakeRunner({"scontrol": scontrol(job("5", "FAILED", reason="NonZeroExitCode"))})
    with pytest.raises(JobEndedError) as info:
        waiter(runner).wait()
    assert str(info.value) == (
        f"job 5 ended FAILED (NonZeroExitCode) before its session was ready; "
        f"see {Path(folders.job_log('5'))}"
    )


def test_waiter_job_gone_from_the_queue() -> None:
    runner = FakeRunner({"scontrol": GONE})
    with pytest.raises(JobEndedError) as info:
        waiter(runner).wait()
    assert str(info.value) == f"job 5 is gone from the queue; see {Path(folders.job_log('5'))}"


@pytest.mark.parametrize(("reason", "key", "answers"), [
    ("PartitionConfig", "cpus, mem or gpus", 4),  # it must last 10 s: answers at 0, 2, 6, 15 s
    ("PartitionTimeLimit", "time", 2),            # two answers in a row: no more waiting
])
def test_a_pending_reason_that_waiting_cannot_resolve_fails_at_once(reason: str, key: str,
                                                                    answers: int) -> None:
    """Issue 20, item 6: a job asking for more than the partition allows waited 30 minutes."""
    runner = FakeRunner({"scontrol": scontrol(job("5", reason=reason))})
    with pytest.raises(ProxyError) as info:
        waiter(runner, step=0.5).wait()
    message = str(info.value)
    assert message.startswith(f"job 5 will not start: Slurm holds it for {reason} (profile ")
    assert f"change {key} in the profile" in message
    assert len(runner.calls) == answers


@pytest.mark.parametrize(("passing", "calls"), [
    (1, 3),  # Slurm 20.11: PartitionConfig for a moment, then PartitionTimeLimit
    (2, 4),  # ... with accounting, after a burst of jobs: in the answers at 0 and 2 s
])
def test_a_passing_reason_before_the_scheduler_settles_is_not_acted_on(passing: int,
                                                                       calls: int) -> None:
    """Slurm 20.11 shows a job over the partition's time limit as PartitionConfig until its
    scheduler settles, then PartitionTimeLimit: the key named is time, not cpus/mem/gpus."""
    runner = FakeRunner({"scontrol": [scontrol(job("5", reason="PartitionConfig"))] * passing
                         + [scontrol(job("5", reason="PartitionTimeLimit"))] * 2})
    with pytest.raises(ProxyError) as info:
        waiter(runner, step=0.5).wait()
    assert "Slurm holds it for PartitionTimeLimit" in str(info.value)
    assert "change time in the profile" in str(info.value)
    assert len(runner.calls) == calls


def test_a_reused_job_known_to_be_held_for_good_fails_on_the_first_query() -> None:
    runner = FakeRunner({"scontrol": scontrol(job("5", reason="PartitionTimeLimit"))})
    with pytest.raises(ProxyError, match="change time in the profile"):
        waiter(runner, step=0.5, known=job("5", reason="PartitionTimeLimit")).wait()
    assert len(runner.calls) == 1


def test_waiter_times_out_with_progress() -> None:
    stream = io.StringIO()
    runner = FakeRunner({"scontrol": scontrol(job("5")), "sinfo": ok("vm|mixed|none\n")})
    with pytest.raises(ProxyError) as info:
        waiter(runner, timeout=10, step=100, stream=stream).wait()
    assert type(info.value) is ProxyError
    assert str(info.value) == (
        "gave up after 10 s waiting for job 5 (wait_timeout in config.toml, or --timeout)"
    )
    assert stream.getvalue() == (
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (Resources), "
        "expected start 2026-11-23T16:10:00 [100s]\n"
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


SECRET = bytes(range(32))


def published(listener: socket.socket) -> endpoint.Endpoint:
    ep = endpoint.Endpoint(
        job_id="5", kind="cpu", profile="default", host="127.0.0.1",
        port=listener.getsockname()[1], session_pid=1, started_at=1.0,
        secret=SECRET.hex(),
    )
    endpoint.publish(ep)
    return ep


def test_waiter_connects_through_the_keyhole_without_asking_slurm(
    listener: socket.socket,
) -> None:
    ep = published(listener)
    thread = keyholes.serve_once(listener, SECRET, "5")
    runner = FakeRunner({})
    found, sock = waiter(runner).wait()
    with contextlib.closing(sock):  # a bare _socket.socket (the fast path never imports socket)
        assert found == ep
        assert sock.getpeername() == listener.getsockname()
        sock.settimeout(10)
        assert sock.recv(100) == b"SSH-2.0-test\r\n"  # the keyhole's bytes are gone
    thread.join(10)
    assert runner.programs() == []  # no squeue, no ssh-keyscan


def test_waiter_gives_up_on_a_new_record_whose_port_fails_the_keyhole(
    listener: socket.socket,
) -> None:
    published(listener)

    def impostor() -> None:  # an sshd banner where the session's HELLO should be
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 impostor\r\n")

    threading.Thread(target=impostor, daemon=True).start()
    runner = FakeRunner({"scontrol": scontrol(job("5", "RUNNING", nodes="n1"))})
    with pytest.raises(ProxyError) as info:
        waiter(runner, step=10.0).wait()
    port = listener.getsockname()[1]
    assert str(info.value) == (
        f"job 5's session at 127.0.0.1:{port} does not answer through its keyhole: "
        f"127.0.0.1:{port}: the port does not answer like an interactive-slurm session"
    )
    assert endpoint.read_job("5") is not None  # a fresh record is not dropped


def test_waiter_buffers_client_bytes_and_aborts_when_the_client_leaves() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"SSH-2.0-OpenSSH_9.2\r\n")
        os.close(write_end)
        w = waiter(FakeRunner({"scontrol": scontrol(job("5", reason="Priority"))}),
                   watch_fd=read_end)
        with pytest.raises(proxy.Aborted, match="the ssh client closed the connection"):
            w.wait()
        assert w.buffered == b"SSH-2.0-OpenSSH_9.2\r\n"
        assert proxy.Aborted.exit_code == 130
    finally:
        os.close(read_end)


# ------------------------------------------------------------------------ cancel on give-up


@pytest.mark.parametrize(
    ("reply", "cancelled"),
    [
        (scontrol(job("7", "PENDING")), True),
        (scontrol(job("7", "RUNNING", nodes="n1")), False),
        (scontrol(job("7", "FAILED")), False),
        (fail("slurm_load_jobs error: Invalid job id specified"), False),
    ],
)
def test_cancel_if_pending(reply: Any, cancelled: bool) -> None:
    """One RPC to check (scontrol --local), one to cancel: an abort costs two (issue 20)."""
    runner = FakeRunner({"scontrol": reply, "scancel": ok()})
    err = io.StringIO()
    proxy.cancel_if_pending(runner, "7", err)
    assert runner.argvs("scancel") == ([("scancel", "7")] if cancelled else [])
    assert err.getvalue() == (
        "interactive-slurm: cancelled pending job 7 that this proxy submitted\n" if cancelled else ""
    )


def test_ensure_session_giving_up_cancels_the_pending_job_it_submitted() -> None:
    runner = FakeRunner({
        "squeue": [ok(""), squeue(job("7"))],
        "scontrol": scontrol(job("7")),
        "sbatch": ok("7\n"),
        "scancel": ok(),
    })
    err = io.StringIO()
    with pytest.raises(ProxyError, match="gave up after -1 s waiting for job 7"):
        proxy.ensure_session(runner, Request("cpu", "default"), timeout=-1, err=err)
    assert runner.argvs("scancel") == [("scancel", "7")]
    assert err.getvalue().splitlines() == [
        f"interactive-slurm: submitted job 7 (vscode-remote-cpu, profile default); "
        f"log: {Path(folders.job_log('7'))}",
        "interactive-slurm: job 7 (vscode-remote-cpu) PENDING (Resources), "
        "expected start 2026-11-23T16:10:00 [0s]",
        "interactive-slurm: cancelled pending job 7 that this proxy submitted",
    ]


def test_ensure_session_giving_up_keeps_a_reused_job() -> None:
    runner = FakeRunner({"squeue": squeue(job("5")), "scontrol": scontrol(job("5")),
                         "scancel": ok()})
    with pytest.raises(ProxyError, match="gave up"):
        proxy.ensure_session(runner, Request("cpu", "default"), timeout=-1,
                             err=io.StringIO())
    assert runner.argvs("scancel") == []


def test_ensure_session_cancels_the_running_job_it_submitted_when_its_session_is_unreachable(
    home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A firewall with transport = "tcp": the job runs, nobody can use it; it is not left."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def sbatch(argv: tuple[str, ...], stdin: str | None) -> Any:
        endpoint.publish(endpoint.Endpoint(  # the session's record, once the job runs
            job_id="7", kind="cpu", profile="default", host="127.0.0.1", port=port,
            session_pid=1, started_at=1.0, secret=SECRET.hex(),
        ))
        return ok("7\n")

    monkeypatch.setattr(waiting, "UNREACHABLE_GRACE", 0.0)
    runner = FakeRunner({
        "squeue": [ok(""), squeue(job("7"))],
        "scontrol": scontrol(job("7", "RUNNING", nodes="n1")),
        "sbatch": sbatch,
        "scancel": ok(),
    })
    err = io.StringIO()
    with pytest.raises(SessionUnreachable, match="set transport = "):
        proxy.ensure_session(runner, Request("cpu", "default", transport="tcp"), timeout=60,
                             err=err)
    assert runner.argvs("scancel") == [("scancel", "7")]
    assert err.getvalue().splitlines()[-1] == (
        "interactive-slurm: cancelled job 7 that this proxy submitted: its session cannot be "
        "reached")


def test_waiter_gives_up_on_a_published_endpoint_it_cannot_reach(home: Path) -> None:
    with socket.socket() as s:  # a port that refuses connections
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint.publish(endpoint.Endpoint(
        job_id="5", kind="cpu", profile="default", host="127.0.0.1", port=port,
        session_pid=1, started_at=1.0, secret=SECRET.hex(),
    ))
    runner = FakeRunner({"scontrol": scontrol(job("5", "RUNNING"))})
    with pytest.raises(ProxyError) as info:
        waiter(runner, step=10.0).wait()
    assert str(info.value) == (
        f"job 5's session at 127.0.0.1:{port} does not answer through its keyhole: "
        f"TCP to 127.0.0.1:{port}: Connection refused"
    )


def test_fast_path_drops_stale_records_and_keeps_the_live_one(
    listener: socket.socket, capsys: pytest.CaptureFixture[str],
) -> None:
    live = published(listener)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = endpoint.publish(live.replace(job_id="6", port=dead_port, started_at=9.0))
    expired = endpoint.publish(live.replace(job_id="7", started_at=8.0))
    old = time.time() - endpoint.LEASE_SECONDS - 5
    os.utime(expired, (old, old))
    thread = keyholes.serve_once(listener, SECRET, "5")
    found = proxy.fast_path(Request("cpu", "default"))
    assert found is not None
    ep, sock = found
    sock.close()
    thread.join(10)
    assert ep == live
    assert not dead.exists() and not expired.exists()
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"interactive-slurm: dropped the stale record of job 6 (TCP to 127.0.0.1:{dead_port}: "
        "Connection refused)",
        "interactive-slurm: dropped the stale record of job 7 (its lease ran out (the session "
        "stopped renewing it))",
    ]


# ------------------------------------------------------------------- fewer RPCs, faults


def test_scontrol_reply_parses_like_the_real_one() -> None:
    j = job("5", reason="BeginTime")
    parsed = slurm.parse_scontrol_job(scontrol(j).stdout)
    assert parsed == Job(j.job_id, j.name, j.state, j.reason, "", "", j.time_limit, j.start_time,
                         j.comment, partition="debug")


class WallClock:
    """A clock the test moves: each reading advances ``tick`` (the loop's sleeps are real but
    tiny in these tests)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_pending_job_is_asked_about_on_the_backoff_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the job known from acquire, the first minute holds 4 one-RPC queries (2, 6, 15, 35 s)."""
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)
    monkeypatch.setattr(waiting, "POLL_MIN", 0.0)
    clock = WallClock(0.25)
    asked: list[float] = []

    def reply(argv: tuple[str, ...], _input: str | None) -> Any:
        asked.append(clock.now)
        return scontrol(job("5", reason="BeginTime"))

    with pytest.raises(ProxyError, match="gave up after 60 s"):
        waiter(FakeRunner({"scontrol": reply}), timeout=60, clock=clock,
               known=job("5", reason="BeginTime")).wait()
    assert len(asked) == 4, asked
    assert [round(t) for t in asked] == [2, 6, 15, 35]


def test_the_elapsed_time_ticks_every_second_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Tty()
    clock = WallClock(0.25)
    monkeypatch.setattr(waiting, "POLL_MIN", 0.0)
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)
    with pytest.raises(ProxyError, match="gave up"):
        proxy.Waiter(FakeRunner({"scontrol": scontrol(job("5", reason="BeginTime"))}), "5",
                     timeout=5, progress=Progress(stream), watch_fd=None, clock=clock,
                     job=job("5", reason="BeginTime")).wait()
    shown = [int(part.rsplit("[", 1)[1].rstrip("s]")) for part in stream.getvalue().split("\r\033[K")
             if "[" in part]
    assert shown == [0, 1, 2, 3, 4, 5]


def test_a_pipe_gets_a_line_only_when_the_state_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    clock = WallClock(0.25)
    monkeypatch.setattr(waiting, "POLL_MIN", 0.0)
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)
    replies = [scontrol(job("5", reason="Priority", start="Unknown"))]
    with pytest.raises(ProxyError, match="gave up"):
        waiter(FakeRunner({"scontrol": replies}), timeout=8, clock=clock,
               stream=stream, known=job("5", reason="BeginTime", start="Unknown")).wait()
    assert stream.getvalue() == (
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (BeginTime) [0s]\n"
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (Priority) [2s]\n"
    )


def test_slurm_not_answering_is_retried_with_backoff_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    clock = WallClock(0.25)
    monkeypatch.setattr(waiting, "POLL_MIN", 0.0)
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)
    asked: list[float] = []
    answers = [DOWN, DOWN, DOWN, DOWN, scontrol(job("5", "FAILED", reason="NonZeroExitCode"))]

    def reply(argv: tuple[str, ...], _input: str | None) -> Any:
        asked.append(clock.now)
        return answers.pop(0)

    with pytest.raises(JobEndedError, match="job 5 ended FAILED"):
        waiter(FakeRunner({"scontrol": reply}), timeout=300, clock=clock, stream=stream,
               known=job("5", reason="BeginTime", start="Unknown")).wait()
    gaps = [round(b - a) for a, b in zip(asked, asked[1:])]
    assert gaps == [2, 4, 8, 15]
    assert stream.getvalue().splitlines() == [
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (BeginTime) [0s]",
        "interactive-slurm: job 5: Slurm is not answering (retrying) [2s]",
    ]


class Loop:
    """The waiting loop's clock: ``step`` seconds a reading, from 0; ``last`` is the loop's ``now``
    (what a query sees). ``events`` run once the clock reaches their time."""

    def __init__(self, step: float, events: dict[float, Callable[[], None]] | None = None) -> None:
        self.now, self.step, self.last = 0.0, step, 0.0
        self.events = dict(events or {})

    def __call__(self) -> float:
        self.last, self.now = self.now, self.now + self.step
        for at in sorted(t for t in self.events if t <= self.last):
            self.events.pop(at)()
        return self.last


def no_poll_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round of the loop is one reading of the clock, with no real sleep."""
    monkeypatch.setattr(waiting, "POLL_MIN", 0.0)
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)


@pytest.mark.parametrize(
    ("known", "asked"),
    [(True, [2, 6, 15, 35]),  # the job from acquire is the first answer, at the start
     (False, [0.25, 2.25, 6.25, 15.25, 35.25])],  # asked at the loop's first round (one tick)
)
def test_a_pending_job_costs_as_many_queries_in_its_first_minute_as_before(
    monkeypatch: pytest.MonkeyPatch, known: bool, asked: list[float],
) -> None:
    no_poll_waits(monkeypatch)
    clock = Loop(0.25)
    seen: list[float] = []

    def reply(argv: tuple[str, ...], _input: str | None) -> Any:
        seen.append(clock.last)
        return scontrol(job("5", reason="BeginTime"))

    with pytest.raises(ProxyError, match="gave up after 60 s"):
        waiter(FakeRunner({"scontrol": reply}), timeout=60, clock=clock,
               known=job("5", reason="BeginTime") if known else None).wait()
    assert seen == asked


def test_the_job_log_changing_brings_the_next_query_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    no_poll_waits(monkeypatch)

    def job_starts() -> None:
        folders.ensure_private_dir(folders.logs_dir())
        Path(folders.job_log("5")).write_text("session starting\n")

    clock = Loop(0.25, {10.0: job_starts})
    asked: list[float] = []

    def reply(argv: tuple[str, ...], _input: str | None) -> Any:
        asked.append(clock.last)
        return scontrol(job("5", reason="BeginTime"))

    with pytest.raises(ProxyError, match="gave up after 40 s"):
        waiter(FakeRunner({"scontrol": reply}), timeout=40, clock=clock,
               known=job("5", reason="BeginTime")).wait()
    assert asked == [2, 6, 11, 31]  # 15 s without the log; then 20 s after that query


def test_an_unreachable_slurm_backs_off_and_the_schedule_goes_on_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_poll_waits(monkeypatch)
    stream = io.StringIO()
    clock = Loop(0.25)
    asked: list[float] = []
    answers = [DOWN] * 5 + [scontrol(job("5", reason="BeginTime", start="Unknown"))]

    def reply(argv: tuple[str, ...], _input: str | None) -> Any:
        asked.append(clock.last)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    with pytest.raises(ProxyError, match="gave up after 60 s"):
        waiter(FakeRunner({"scontrol": reply}), timeout=60, clock=clock, stream=stream,
               known=job("5", reason="BeginTime", start="Unknown")).wait()
    # +2, +4, +8, +15, +15 while silent; then the second answer's gap (+4), +9, ...
    assert asked == [2, 4, 8, 16, 31, 46, 50, 59]
    assert stream.getvalue().splitlines() == [
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (BeginTime) [0s]",
        "interactive-slurm: job 5: Slurm is not answering (retrying) [2s]",
        "interactive-slurm: job 5 (vscode-remote-cpu) PENDING (BeginTime) [46s]",
    ]


def test_other_slurm_failures_give_up_after_three_in_a_row() -> None:
    runner = FakeRunner({"scontrol": fail("scontrol: error: something else")})
    with pytest.raises(slurm.SlurmError, match="something else"):
        waiter(runner, step=1.0).wait()
    assert len(runner.argvs("scontrol")) == 3


def node_reason(j: Job) -> Job:
    return Job(j.job_id, j.name, j.state, "ReqNodeNotAvail, UnavailableNodes:vm", j.nodes,
               j.time_left, j.time_limit, "Unknown", j.comment)


def test_a_pending_job_whose_nodes_are_all_down_is_a_clear_error() -> None:
    runner = FakeRunner({
        "scontrol": scontrol(node_reason(job("5"))),
        "sinfo": ok("vm|down*|Not responding\nvm|down*|Not responding\nvm2|drained|disk\n"),
    })
    with pytest.raises(ProxyError) as info:
        waiter(runner, step=0.5).wait()
    assert str(info.value) == (
        "job 5 cannot start: no node of partition debug takes jobs now (vm is DOWN* (Not "
        "responding), vm2 is DRAINED (disk)); try again when the node is back"
    )
    assert runner.argvs("sinfo") == [tuple(slurm.sinfo_nodes_argv("debug"))]


def test_a_pending_job_with_one_usable_node_keeps_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "POLL_MAX_PENDING", 0.0)
    runner = FakeRunner({
        "scontrol": scontrol(node_reason(job("5"))),
        "sinfo": ok("vm|down*|Not responding\nvm2|allocated|none\n"),
    })
    with pytest.raises(ProxyError, match="gave up"):
        waiter(runner, step=5.0, timeout=300).wait()
    assert len(runner.argvs("scontrol")) > 2
    assert len(runner.argvs("sinfo")) == 1  # once per reason, not per query


@pytest.mark.parametrize(
    ("state", "usable"),
    [("idle", True), ("mixed", True), ("allocated", True), ("completing", True),
     ("idle*", False), ("down*", False), ("down", False), ("drained", False), ("draining", False),
     ("fail", False), ("maint", False), ("powered_down", False)],
)
def test_node_usable(state: str, usable: bool) -> None:
    assert slurm.Node("vm", state, "").usable is usable


def test_the_record_is_seen_within_milliseconds_once_the_job_log_appears(
    listener: socket.socket,
) -> None:
    """No 250 ms steps: the loop polls a few ms apart once the job has started."""
    import threading

    runner = FakeRunner({"scontrol": scontrol(job("5", "RUNNING", nodes="vm"))})
    server = keyholes.serve_once(listener, SECRET, "5")
    folders.ensure_private_dir(folders.logs_dir())
    Path(folders.job_log("5")).write_text("session starting\n")
    published_at: list[float] = []

    def publish_later() -> None:
        import time

        time.sleep(0.5)
        published(listener)
        published_at.append(time.monotonic())

    thread = threading.Thread(target=publish_later)
    thread.start()
    import time

    _, sock = waiter(runner, clock=time.monotonic, known=job("5", "RUNNING", nodes="vm")).wait()
    seen = time.monotonic()
    thread.join()
    sock.close()
    server.join(10)
    assert seen - published_at[0] < 0.1


def test_time_left_warning_from_the_record_alone() -> None:
    from interactive_slurm.connect.relay import time_left_warning

    ep = endpoint.Endpoint(job_id="7", kind="cpu", profile="default", host="n", port=2,
                           session_pid=1, started_at=0.0, secret="0" * 64,
                           ends_at=10_000.0)
    assert time_left_warning(ep, 1800, now=10_000.0 - 1801) is None
    line = time_left_warning(ep, 1800, now=10_000.0 - 1799)
    assert line is not None and line.startswith(
        "interactive-slurm: job 7 has 29 min left before its time limit (at ")
    assert "has less than a minute left" in (time_left_warning(ep, 1800, now=9_950.0) or "")
    assert time_left_warning(ep.replace(ends_at=0.0), 1800, now=0.0) is None
