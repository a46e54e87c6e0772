"""File-mode checks shared by the unit and end-to-end tests (``from unit.modes import ...``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def writable_by_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included, symlinks not) that group or others may write."""
    bad = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            path = Path(folder, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
                bad.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    return bad
