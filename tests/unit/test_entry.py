"""The lean console entry: which proxy calls take the fast path, and the fallback to click."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import pytest

from interactive_slurm import endpoint, entry, fastpath, paths, proxy


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cpu"], ("cpu", None, "")),
        (["gpu", "--profile", "development"], ("gpu", "development", "")),
        (["cpu", "--profile=dev", "--container=img.sqsh"], ("cpu", "dev", "img.sqsh")),
        (["cpu", "--timeout", "30"], ("cpu", None, "")),
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
    assert entry.parse_proxy_args(args) == expected


def test_fast_path_imports_neither_click_nor_the_slurm_layer() -> None:
    code = (
        "import sys; from interactive_slurm import entry;"
        "entry.fast_socket('cpu', 'default', '');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'git', 'asyncssh')"
        " or m in ('interactive_slurm.slurm', 'interactive_slurm.proxy', 'interactive_slurm.cli',"
        " 'interactive_slurm.profiles', 'interactive_slurm.updater', 'tomllib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fast_path_import_budget() -> None:
    """The reuse path (records, keyhole, splice) imports none of the heavy modules."""
    code = (
        "import sys; from interactive_slurm import entry, splice;"
        "entry.fast_socket('cpu', 'default', '');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'dataclasses',"
        " 'typing', 'inspect', 'asyncio', 'git', 'asyncssh')))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


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
        folder = paths.ensure_private_dir(paths.job_dir(job_id))
        (folder / endpoint.ENDED_NOTE).write_text("was cancelled\n")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_session_that_closed_first_gets_a_moment_to_leave_its_note() -> None:
    err = io.StringIO()
    writer = _leave_note_later("41", 0.3)
    fastpath.report_end("41", err, session_closed=True, wait=5.0)
    writer.join()
    assert err.getvalue() == "interactive-slurm: session ended: job 41 was cancelled\n"


def test_when_ssh_hung_up_first_nothing_waits_for_a_note() -> None:
    err = io.StringIO()
    writer = _leave_note_later("42", 0.5)
    start = time.monotonic()
    fastpath.report_end("42", err, session_closed=False, wait=5.0)
    assert time.monotonic() - start < 0.3
    assert err.getvalue() == ""
    writer.join()


def test_the_wait_for_a_note_is_bounded() -> None:
    err = io.StringIO()
    start = time.monotonic()
    fastpath.report_end("43", err, session_closed=True, wait=0.2)
    assert 0.2 <= time.monotonic() - start < 2.0
    assert err.getvalue() == ""
