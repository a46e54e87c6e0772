"""Releases of this package for the updater tests: a local bare git repository with tagged
versions made from this tree, and a first install in the layout ``setup`` makes (installs.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from interactive_slurm.base.runner import SubprocessRunner
from interactive_slurm.install import installs
from interactive_slurm.laptop import wheels

TREE = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
                                 ".pytest_cache", "build", "dist", "tests", "benchmarks")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1"}
#: The marker a broken release carries: its session module fails on import, which the proxy's
#: fast path never notices but the self-check's session dry run does.
BROKEN = 'raise RuntimeError("this release is broken on purpose")\n'


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout


class ReleaseRepo:
    """A work tree copied from this checkout and the bare repository it pushes tags to."""

    def __init__(self, base: Path) -> None:
        self.work = base / "work"
        self.bare = base / "releases.git"
        shutil.copytree(TREE, self.work, ignore=_IGNORE, symlinks=True)
        git(base, "init", "-q", "--bare", str(self.bare))
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", "this tree")
        git(self.work, "push", "-q", str(self.bare), "main")

    def release(self, tag: str, *, broken: bool = False, push: bool = True) -> str:
        """Commit this tree as version ``tag[1:]`` (broken: its self-check fails) and tag it."""
        version = tag[1:]
        init = self.work / "interactive_slurm" / "__init__.py"
        init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"',
                               init.read_text()))
        pyproject = self.work / "pyproject.toml"
        pyproject.write_text(re.sub(r'(?m)^version = "[^"]*"', f'version = "{version}"',
                                    pyproject.read_text()))
        session = self.work / "interactive_slurm" / "node" / "session.py"
        text = session.read_text().replace(BROKEN, "")
        session.write_text(text + BROKEN if broken else text)
        git(self.work, "commit", "-q", "-am", f"release {tag}")
        git(self.work, "tag", tag)
        if push:
            git(self.work, "push", "-q", str(self.bare), "main", tag)
        return git(self.work, "rev-parse", "HEAD").strip()


def build_wheels(dest: Path) -> list[Path]:
    """The wheels `setup` uploads, rebuilt from this test environment (no index needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    py = (sys.version_info[0], sys.version_info[1])
    return [b.path for b in wheels.build_all(SubprocessRunner(), dest, py)]


def first_install(root: Path, wheel_dir: Path) -> str:
    """Install the wheels as ``setup`` does (installs.py standalone, the system python3)."""
    staged = root.parent / "upload"
    shutil.copytree(wheel_dir, staged)
    version = next(staged.glob("interactive_slurm-*.whl")).name.split("-")[1]
    vid = installs.version_id(version, staged.glob("*.whl"))
    target = installs.wheels_dir(root, vid)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    script = Path(installs.__file__)
    out = subprocess.run(["/usr/bin/python3", "-", "install", str(root), str(target), vid],
                         stdin=script.open(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"first install failed: {out.stdout} {out.stderr}"
    return vid
