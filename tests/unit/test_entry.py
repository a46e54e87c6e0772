"""The lean console entry: which proxy calls take the fast path, and the fallback to click."""

from __future__ import annotations

import ast
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import interactive_slurm
from interactive_slurm import entry
from interactive_slurm.base import folders
from interactive_slurm.connect import endpoint, relay, reuse
from interactive_slurm.login import proxy

from . import keyholes


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cpu"], ("cpu", None, "", None)),
        (["gpu", "--profile", "development"], ("gpu", "development", "", None)),
        (["cpu", "--profile=dev", "--container=img.sqsh"], ("cpu", "dev", "img.sqsh", None)),
        (["cpu", "--timeout", "30"], ("cpu", None, "", 30.0)),
        (["cpu", "--timeout", "abc"], None),  # the full CLI refuses it with a usage error
        (["cpu", "--timeout=-5"], None),
        (["cpu", "--timeout", "inf"], None),
        ([], None),
        (["tpu"], None),
        (["cpu", "--help"], None),
        (["cpu", "--profile"], None),
        (["cpu", "extra"], None),
    ],
)
def test_parse_proxy_args(args: list[str], expected: object) -> None:
    assert reuse.parse_proxy_args(args) == expected


def test_fast_path_imports_neither_click_nor_the_slurm_layer() -> None:
    code = (
        "import sys; from interactive_slurm.connect import reuse;"
        "reuse.fast_socket('cpu', 'default', '');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'git', 'asyncssh')"
        " or m.startswith(('interactive_slurm.login', 'interactive_slurm.cli',"
        " 'interactive_slurm.install.updater', 'tomllib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


#: Every module the reuse path may load beyond a bare ``python -IS``: the interpreter's own
#: C modules and the few small stdlib ones. pathlib, platformdirs, json, socket, signal, hmac,
#: contextlib, typing, dataclasses or click here would cost the connect ~30 ms again.
FAST_PATH_MODULES = {
    "__future__", "_collections_abc", "_json", "_operator", "_sha256", "_sha2", "_socket", "_stat",
    "errno", "fcntl", "genericpath", "os", "os.path", "posixpath", "select", "stat",
    "interactive_slurm", "interactive_slurm.entry",
    "interactive_slurm.base", "interactive_slurm.base.errors", "interactive_slurm.base.folders",
    "interactive_slurm.base.fsutil",
    "interactive_slurm.connect", "interactive_slurm.connect.configcache",
    "interactive_slurm.connect.endpoint", "interactive_slurm.connect.fastjson",
    "interactive_slurm.connect.fastpath", "interactive_slurm.connect.keyhole",
    "interactive_slurm.connect.relay", "interactive_slurm.connect.reuse",
    "interactive_slurm.connect.splice", "interactive_slurm.connect.transport",
    "interactive_slurm.base.defaults",
    "interactive_slurm.install", "interactive_slurm.install.autocheck",
}


def test_fast_path_import_budget(home: Path) -> None:
    """The reuse path, run as the lean console script runs it (``python -IS``): records,
    keyhole, connect and splice load only :data:`FAST_PATH_MODULES`."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        secret = bytes(range(32))
        endpoint.publish(endpoint.Endpoint(
            job_id="5", kind="cpu", profile="default", host="127.0.0.1",
            port=listener.getsockname()[1], session_pid=1,
            started_at=1.0, secret=secret.hex()))
        server = keyholes.serve_once(listener, secret, "5")
        site = os.path.dirname(os.path.dirname(interactive_slurm.__file__))
        code = (
            "import sys; before = set(sys.modules); sys.path.append(sys.argv[1]);"
            "from interactive_slurm import entry; from interactive_slurm.connect import reuse, relay;"
            "from interactive_slurm.install import autocheck;"
            "ep, sock = reuse.fast_socket('cpu', None, ''); relay.splice.__name__;"
            "autocheck.due(0.0); reuse.warn_threshold();"
            "print(ep.job_id, sorted(set(sys.modules) - before))"
        )
        out = subprocess.run([sys.executable, "-IS", "-c", code, site], capture_output=True,
                             text=True, check=True, env={**os.environ})
        server.join(10)
    job_id, _, loaded = out.stdout.partition(" ")
    assert job_id == "5"  # it did connect through the keyhole
    extra = set(ast.literal_eval(loaded)) - FAST_PATH_MODULES
    assert not extra, f"the fast path now imports {sorted(extra)}"


def test_no_live_session_falls_through_to_the_full_cli(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["interactive-slurm", "proxy", "cpu", "--profile", "../x"])
    with pytest.raises(SystemExit) as info:
        entry.main()
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: invalid profile name '../x'")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    stream = TTY()
    progress = proxy.Progress(stream)
    progress.show("job 1 PENDING [0s]")
    progress.show("job 1 PENDING [0s]")
    progress.show("job 1 RUNNING [2s]")
    progress.done()
    assert stream.getvalue() == (
        "\r\x1b[Kinteractive-slurm: job 1 PENDING [0s]"
        "\r\x1b[Kinteractive-slurm: job 1 RUNNING [2s]"
        "\r\x1b[K"
    )


def _leave_note_later(job_id: str, delay: float) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        folder = folders.ensure_private_dir(folders.job_dir(job_id))
        (folder / endpoint.ENDED_NOTE).write_text("was cancelled\n")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _record(job_id: str) -> endpoint.Endpoint:
    endpoint.publish(endpoint.Endpoint(
        job_id=job_id, kind="cpu", profile="default", host="127.0.0.1", port=2,
        session_pid=1, started_at=1.0, secret="ab" * 32))
    ep = endpoint.read_job(job_id)
    assert ep is not None
    return ep


def test_a_stopping_session_that_closed_first_gets_a_moment_to_leave_its_note() -> None:
    ep = _record("41")
    endpoint.remove("41")  # the session withdrew its record: it is stopping
    err = io.StringIO()
    writer = _leave_note_later("41", 0.6)
    relay.report_end(ep, err, session_closed=True, wait=5.0, grace=0.1)
    writer.join()
    assert err.getvalue() == "interactive-slurm: session ended: job 41 was cancelled\n"


def test_a_session_still_published_gets_only_the_grace() -> None:
    ep = _record("44")  # e.g. an sshd that failed: the session goes on
    err = io.StringIO()
    start = time.monotonic()
    relay.report_end(ep, err, session_closed=True, wait=5.0, grace=0.2)
    assert 0.2 <= time.monotonic() - start < 2.0
    assert err.getvalue() == ""


def test_when_ssh_hung_up_first_nothing_waits_for_a_note() -> None:
    ep = _record("42")
    endpoint.remove("42")
    err = io.StringIO()
    writer = _leave_note_later("42", 0.5)
    start = time.monotonic()
    relay.report_end(ep, err, session_closed=False, wait=5.0)
    assert time.monotonic() - start < 0.3
    assert err.getvalue() == ""
    writer.join()


def test_the_wait_for_a_note_is_bounded() -> None:
    ep = _record("43")
    endpoint.remove("43")
    err = io.StringIO()
    start = time.monotonic()
    relay.report_end(ep, err, session_closed=True, wait=0.3, grace=0.0)
    assert 0.3 <= time.monotonic() - start < 2.0
    assert err.getvalue() == ""


def _config_in_a_fresh_process() -> tuple[str, bool]:
    """default_profile() and warn_threshold() as the fast path runs them, and whether that
    loaded the config module (tomllib, dataclasses: ~35 ms)."""
    code = ("import sys; from interactive_slurm.connect import reuse;"
            "print(reuse.default_profile(), reuse.warn_threshold(),"
            " 'interactive_slurm.base.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout.split()
    return f"{out[0]} {out[1]}", out[2] == "True"


def test_the_fast_path_keeps_config_values_while_config_toml_stays_the_same(home: Path) -> None:
    config_file = home / "config" / "config.toml"
    config_file.parent.mkdir(parents=True, mode=0o700)
    config_file.write_text('default_profile = "dev"\nwarn_time_left = "10m"\n')
    assert _config_in_a_fresh_process() == ("dev 600.0", True)  # loaded once, then kept
    assert (home / "state" / "config-cache.json").stat().st_mode & 0o777 == 0o600
    assert _config_in_a_fresh_process() == ("dev 600.0", False)
    config_file.write_text('default_profile = "gpuwork"\n')  # any edit: loaded again
    assert _config_in_a_fresh_process() == ("gpuwork 1800.0", True)
    assert _config_in_a_fresh_process() == ("gpuwork 1800.0", False)
    config_file.write_text('default_profile = "../x"\n')  # and checked again
    code = "from interactive_slurm.connect import reuse; reuse.default_profile()"
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                            env={**os.environ})
    assert result.returncode != 0 and "default_profile" in result.stderr


def test_connect_to_a_record_that_is_not_ours_is_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 17, item 5: `connect JOBID` on another user's job printed a PermissionError
    traceback."""
    def refuse(job_id: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(endpoint, "read_job", refuse)
    with pytest.raises(SystemExit) as info:
        reuse.connect(["77"])
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: job 77's record is not yours to read\n"
