"""laptop/opener.py: `interactive-slurm open` with its processes (ssh), probe, browser and clock
as seams; and the command it sends into the job, run by a real POSIX shell."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from interactive_slurm.base import selfcmd
from interactive_slurm.base.errors import AppError, UsageError
from interactive_slurm.laptop import opener

TOKEN = "b" * 48
RECORD = {
    "name": "lab", "job_id": "77", "host": "node7", "socket": "/tmp/interactive-slurm-77-app_lab_x/http.sock",
    "token": TOKEN, "url": "/lab", "ready_path": "/api/status", "guarded": False, "cookie": "",
    "log": "/home/u/.local/state/interactive-slurm/jobs/77/apps/lab.log", "reused": False,
    "pid": 1234, "listen": "unix",
}


class FakeProc:
    def __init__(self, argv: list[str], *, stdout: bytes = b"", code: int | None = 0,
                 exits_at_once: bool = True) -> None:
        self.argv, self.out, self.code, self.exits = argv, stdout, code, exits_at_once
        self.returncode: int | None = None
        self.terminated = False

    def communicate(self) -> tuple[bytes, None]:
        self.returncode = self.code
        return self.out, None

    def poll(self) -> int | None:
        if self.exits or self.terminated:
            self.returncode = self.code
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.terminated = True
        return self.poll() or 0

    def terminate(self) -> None:
        self.terminated = True

    def kill(self) -> None:
        self.terminated = True


class World:
    """The ssh processes `open` starts, scripted by what they run."""

    def __init__(self, record: dict[str, Any] | None = None, *, start_code: int = 0,
                 forward_in_master: bool = True, forward_code: int = 0) -> None:
        self.record = record or RECORD
        self.start_code, self.in_master, self.forward_code = start_code, forward_in_master, forward_code
        self.procs: list[FakeProc] = []

    def spawn(self, argv: Sequence[str], **_kw: Any) -> FakeProc:
        argv = list(argv)
        command = argv[-1]
        if "app start" in command:
            proc = FakeProc(argv, stdout=(json.dumps(self.record) + "\n").encode(), code=self.start_code)
        elif "-N" in argv:
            proc = FakeProc(argv, code=self.forward_code if self.in_master or self.forward_code else None,
                            exits_at_once=self.in_master or self.forward_code != 0)
        else:
            proc = FakeProc(argv)
        self.procs.append(proc)
        return proc

    def argvs(self) -> list[list[str]]:
        return [p.argv for p in self.procs]


class Sleeper:
    """The clock; the watch's sleep raises KeyboardInterrupt (Ctrl-C) after ``ticks`` sleeps."""

    def __init__(self, ticks: int = 1) -> None:
        self.now, self.ticks = 0.0, ticks

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if seconds == opener.WATCH_GAP:
            self.ticks -= 1
            if self.ticks < 0:
                raise KeyboardInterrupt


def make(world: World, probe: Any = None, *, env: dict[str, str] | None = None,
         platform: str = "linux", sleeper: Sleeper | None = None
         ) -> tuple[opener.Opener, io.StringIO, io.StringIO, list[str]]:
    out, err, opened = io.StringIO(), io.StringIO(), []
    sleeper = sleeper or Sleeper()
    o = opener.Opener(spawn=world.spawn, probe=probe or (lambda *a, **k: 200),  # type: ignore[arg-type]
                      browser=opened.append, env=env or {}, platform=platform, out=out, err=err,
                      sleep=sleeper.sleep, clock=sleeper.clock)
    return o, out, err, opened


def test_open_starts_forwards_prints_and_stops_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opener, "free_port", lambda: 45678)
    world = World()
    probes: list[tuple[Any, str, dict[str, str]]] = []

    def probe(address: Any, path: str, *, headers: dict[str, str], timeout: float) -> int:
        probes.append((address, path, headers))
        return 200

    o, out, err, opened = make(world, probe, env={"DISPLAY": ":0"})
    req = opener.Request("lab", ssh_config="/cfg", args=("--debug",), workdir="~/proj")
    assert o.run(req) == 0
    url = f"http://127.0.0.1:45678/lab?token={TOKEN}"
    assert out.getvalue() == url + "\n" and opened == [url]
    start, forward, cancel, stop = world.argvs()
    assert start[:6] == ["ssh", "-F", "/cfg", "-T", "--", "slurm-cpu"]
    assert start[6] == selfcmd.in_job_command("remote", "app", "start", "lab", "--json",
                                              "--workdir", "~/proj", "--", "--debug")
    assert forward == ["ssh", "-F", "/cfg", "-N", "-T", "-o", "ExitOnForwardFailure=yes", "-L",
                       f"127.0.0.1:45678:{RECORD['socket']}", "--", "slurm-cpu"]
    # The forward went to the host's master (its ssh exited at once): it is taken back there.
    assert cancel == ["ssh", "-F", "/cfg", "-O", "cancel", "-L",
                      f"127.0.0.1:45678:{RECORD['socket']}", "--", "slurm-cpu"]
    assert "remote app stop lab" in " ".join(shlex.split(stop[-1]))
    assert probes[0] == (("127.0.0.1", 45678), "/api/status", {"Authorization": f"token {TOKEN}"})
    said = err.getvalue()
    assert "lab started in job 77 on node7" in said and "forwarded to 127.0.0.1:45678" in said
    assert "Ctrl-C ends the forward and stops the app (--keep leaves it running)" in said


def test_keep_leaves_the_app_and_an_own_forward_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opener, "free_port", lambda: 45679)
    world = World({**RECORD, "guarded": True, "cookie": "interactive-slurm-77-lab", "reused": True},
                  forward_in_master=False)
    o, _out, err, opened = make(world)  # no display: no browser
    assert o.run(opener.Request("lab", keep=True)) == 0
    assert opened == []
    assert len(world.argvs()) == 2  # start, forward: no cancel (not in a master), no stop (--keep)
    assert world.procs[1].terminated
    assert "lab was already running in job 77" in err.getvalue()


def test_the_watch_ends_when_the_app_stops_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opener, "free_port", lambda: 45680)
    answers = iter([200] + [None] * 10)
    o, _out, _err, _opened = make(World(), lambda *a, **k: next(answers), sleeper=Sleeper(ticks=99))
    with pytest.raises(AppError, match="lab stopped answering \\(did job 77 end\\? see `remote list`\\)"):
        o.run(opener.Request("lab"))


def test_a_failed_start_or_forward_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opener, "free_port", lambda: 45681)
    o, *_ = make(World(start_code=255))
    with pytest.raises(AppError, match="could not start lab in the job behind slurm-cpu "
                                       "\\(ssh exit 255; the reason is above\\)"):
        o.run(opener.Request("lab"))
    o, *_ = make(World(start_code=127))
    with pytest.raises(AppError, match=r"does not know its install \(.*\): end it \(`remote cancel`"):
        o.run(opener.Request("lab"))
    o, *_ = make(World(forward_code=255))
    with pytest.raises(AppError, match=r"`ssh -L 127\.0\.0\.1:45681:.*` exit 255; is port 45681 taken"):
        o.run(opener.Request("lab"))


@pytest.mark.parametrize(("key", "value"), [
    ("socket", "/tmp/a:b/http.sock"), ("socket", "relative.sock"), ("socket", "/tmp/../etc/x"),
    ("token", "short"), ("token", "x" * 40 + "&y=1"), ("url", "lab"), ("url", "/lab?x=1"),
    ("guarded", "yes"), ("job_id", "77; rm"), ("host", "-oProxyCommand=x"), ("name", "Lab"),
])
def test_a_bad_record_from_the_job_is_refused(key: str, value: object) -> None:
    with pytest.raises(AppError, match=f"the job's app record has a bad {key}"):
        opener.parse_started(json.dumps({**RECORD, key: value}))


def test_what_is_not_a_record_is_refused() -> None:
    with pytest.raises(AppError, match="the job did not answer with an app record: 'oops'"):
        opener.parse_started("oops")
    assert opener.parse_started("motd\n" + json.dumps(RECORD)).socket == RECORD["socket"]


@pytest.mark.parametrize(("env", "platform", "wanted"), [
    ({}, "linux", False), ({"DISPLAY": ":0"}, "linux", True), ({"WAYLAND_DISPLAY": "w"}, "linux", True),
    ({"BROWSER": "lynx"}, "linux", True), ({}, "darwin", True), ({}, "win32", True),
])
def test_wants_browser(env: dict[str, str], platform: str, wanted: bool) -> None:
    assert opener.wants_browser(env, platform) is wanted


def test_bad_requests_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="app 'Lab'"):
        opener.Request("Lab")
    with pytest.raises(UsageError, match="--host '-oProxyCommand=x'"):
        opener.Request("lab", host="-oProxyCommand=x")


def test_the_command_sent_into_the_job_keeps_every_argument(tmp_path: Any) -> None:
    """What the login shell in the job runs: the session's install (INTERACTIVE_SLURM_TOOL) or
    interactive-slurm on the PATH, each argument as it was."""
    args = ["remote", "app", "start", "lab", "--", "--x=$HOME", "a b", "it's", "*"]
    command = selfcmd.in_job_command(*args)
    tool = tmp_path / "tool"
    tool.write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\n')
    tool.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", selfcmd.TOOL_ENV: str(tool)}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout
    assert out.splitlines() == [f"<{a}>" for a in args]
    (tmp_path / "interactive-slurm").symlink_to(tool)
    del env[selfcmd.TOOL_ENV]
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.splitlines()[0] == "<remote>"
