"""enroot argv builders and the prepare/cleanup sequence (fake runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from interactive_slurm.containers import Enroot
from interactive_slurm.errors import SessionError

from .fakes import FakeRunner, ok


def test_wrap_runs_the_command_in_the_jobs_container_with_mounts() -> None:
    rt = Enroot("/img/pytorch.sqsh", "42")
    assert rt.wrap(["/usr/sbin/sshd", "-D"], [Path("/tmp/s")]) == [
        "enroot", "start", "--rw", "--mount=/tmp/s:/tmp/s", "interactive-slurm-42",
        "/usr/sbin/sshd", "-D",
    ]
    assert rt.remove_argv() == ["enroot", "remove", "--force", "interactive-slurm-42"]


def test_prepare_a_squashfs_file_creates_the_container(tmp_path: Path) -> None:
    image = tmp_path / "img.sqsh"
    image.write_bytes(b"hsqs")
    rt = Enroot(str(image), "7", binary="true")  # `true` exists on PATH: enroot "is installed"
    runner = FakeRunner({"true": ok()})
    rt.prepare(runner, tmp_path)
    assert runner.argvs("true") == [("true", "create", "--force", "--name", "interactive-slurm-7",
                                     str(image))]


def test_prepare_a_registry_image_imports_it_first(tmp_path: Path) -> None:
    rt = Enroot("nvcr.io#nvidia/pytorch:24.01-py3", "7", binary="true")
    runner = FakeRunner({"true": ok()})
    rt.prepare(runner, tmp_path)
    assert runner.argvs("true") == [
        ("true", "import", "--output", str(tmp_path / "image.sqsh"),
         "docker://nvcr.io#nvidia/pytorch:24.01-py3"),
        ("true", "create", "--force", "--name", "interactive-slurm-7", str(tmp_path / "image.sqsh")),
    ]


def test_prepare_fails_clearly_without_enroot_or_image(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="enroot-missing is not installed on this node"):
        Enroot("x.sqsh", "7", binary="enroot-missing").prepare(FakeRunner(), tmp_path)
    with pytest.raises(SessionError, match="does not exist"):
        Enroot(str(tmp_path / "gone.sqsh"), "7", binary="true").prepare(FakeRunner(), tmp_path)
