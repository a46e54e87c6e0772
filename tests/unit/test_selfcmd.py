"""base/selfcmd.py: how an install runs itself (issue 20: a ProxyCommand written from a
versioned install named versions/<id>, which broke once that version was pruned)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from interactive_slurm.base import selfcmd


def make_script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_versioned_install_is_named_through_current(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "is"
    make_script(root / "versions" / "0.1.0-a" / "bin" / "interactive-slurm")
    (root / "current").symlink_to("versions/0.1.0-a")
    monkeypatch.setattr(sys, "executable", str(root / "versions" / "0.1.0-a" / "bin" / "python"))
    assert selfcmd.argv() == [str(root / "current" / "bin" / "interactive-slurm")]
    assert selfcmd.command("proxy", "cpu") == f"{root}/current/bin/interactive-slurm proxy cpu"


def test_a_plain_venv_names_its_own_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = make_script(tmp_path / "venv" / "bin" / "interactive-slurm")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    assert selfcmd.argv() == [str(script)]


def test_without_a_script_it_is_python_isolated(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "py" / "python3"))
    assert selfcmd.argv() == [str(tmp_path / "py" / "python3"), "-I", "-m", "interactive_slurm"]
    assert selfcmd.module_argv("/opt/p") == ["/opt/p", "-I", "-m", "interactive_slurm"]
