"""node/shells.py: the terminals under a session's own ``sshd -i`` children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interactive_slurm.node import shells


@pytest.mark.parametrize(
    ("text", "ppid"),
    [("123 (bash) S 45 123 123 0", 45), ("9 (a) b) (c) R 7 9 9", 7), ("1 (sshd: x [priv]) S 0", 0)],
)
def test_parent_pid(text: str, ppid: int) -> None:
    assert shells.parent_pid(text) == ppid


def test_descendants_stay_under_the_roots() -> None:
    parents = {10: 1, 11: 10, 12: 11, 13: 11, 20: 1, 21: 20}
    assert shells.descendants({10}, parents) == {10, 11, 12, 13}
    assert shells.descendants(set(), parents) == set()


def test_own_ttys_finds_only_pty_slaves_this_user_owns(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        fds = tmp_path / "100" / "fd"
        fds.mkdir(parents=True)
        (fds / "0").symlink_to(name)
        (fds / "1").symlink_to("/dev/null")
        (fds / "2").symlink_to("/dev/pts/999999")  # gone
        (fds / "3").symlink_to(name)  # the same pty again: told once
        (tmp_path / "101").mkdir()  # a process whose fds we may not list
        [link] = shells.own_ttys({100, 101, 102}, proc=tmp_path)
        assert link == fds / "0"
        assert shells.write_to_tty(link, "hello\r\n")
        assert os.read(master, 100).startswith(b"hello\r")
    finally:
        os.close(master)
        os.close(slave)


def test_tell_shells_writes_to_the_terminal_of_a_process_under_the_roots() -> None:
    master, slave = os.openpty()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdin=slave)
    try:
        assert shells.tell_shells({child.pid}, "save your work\r\n") == 1
        assert os.read(master, 100).startswith(b"save your work")
        assert shells.tell_shells(set(), "nobody\r\n") == 0
    finally:
        child.kill()
        child.wait()
        os.close(master)
        os.close(slave)
