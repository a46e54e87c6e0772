"""Container runtimes that run a session's sshd inside an image (enroot).

A profile's ``container`` key (or ``proxy --container``) names an image: a squashfs file
(``/path/image.sqsh``) or a registry reference enroot can import (``nvcr.io#nvidia/pytorch:24.01-py3``,
``ubuntu:22.04``). The session then creates a container for the job, runs the image's own sshd in
it with the session's temp dir mounted at the same path, and removes the container at the end.
The image must contain OpenSSH's sshd at the configured path (``sshd`` in config.toml).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from interactive_slurm.errors import SessionError
from interactive_slurm.runner import Runner

IMPORT_TIMEOUT = 3600.0


class Enroot:
    """NVIDIA enroot: unprivileged containers from squashfs images."""

    name = "enroot"

    def __init__(self, image: str, job_id: str, binary: str = "enroot") -> None:
        self.image, self.binary = image, binary
        self.container = f"interactive-slurm-{job_id}"

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def import_argv(self, dest: Path) -> list[str]:
        return [self.binary, "import", "--output", str(dest), f"docker://{self.image}"]

    def create_argv(self, squashfs: Path) -> list[str]:
        return [self.binary, "create", "--force", "--name", self.container, str(squashfs)]

    def wrap(self, argv: Sequence[str], mounts: Sequence[Path]) -> list[str]:
        """``argv`` run inside the container, with ``mounts`` at the same paths."""
        options = [f"--mount={m}:{m}" for m in mounts]
        return [self.binary, "start", "--rw", *options, self.container, *argv]

    def remove_argv(self) -> list[str]:
        return [self.binary, "remove", "--force", self.container]

    def prepare(self, runner: Runner, workdir: Path) -> None:
        """Create the job's container (importing a registry image into ``workdir`` first)."""
        if not self.available():
            raise SessionError(
                f"profile asks for container {self.image!r}, but {self.binary} is not installed "
                "on this node"
            )
        squashfs = Path(self.image)
        if not (self.image.endswith(".sqsh") and squashfs.is_absolute()):
            squashfs = workdir / "image.sqsh"
            runner.run(self.import_argv(squashfs), timeout=IMPORT_TIMEOUT)
        elif not squashfs.exists():
            raise SessionError(f"container image {self.image} does not exist")
        runner.run(self.create_argv(squashfs), timeout=IMPORT_TIMEOUT)

    def cleanup(self, runner: Runner) -> None:
        runner.run(self.remove_argv(), check=False)
