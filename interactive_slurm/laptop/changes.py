"""Changes to the user's own files, planned first, shown as diffs, written safely.

Every file ``setup`` touches on the laptop (``~/.ssh/config``, VS Code's settings, ``config.toml``,
the managed known_hosts) goes through :class:`Change`: ``--dry-run`` prints :meth:`Change.diff`;
otherwise :meth:`Change.apply` keeps a timestamped backup of a file it changes, writes the new
text atomically (a temp file in the same folder, then rename) with the file's own mode (0600 for a
new one) whatever the umask,
and follows a symlinked file to its target (dotfile managers keep their link).
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from interactive_slurm.base import folders, fsutil


@dataclass(frozen=True)
class Change:
    path: Path
    before: str | None  # None: the file does not exist
    after: str | None   # None: remove the file
    backup: bool = True

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        if not self.changed:
            return ""
        a = (self.before or "").splitlines(keepends=True)
        b = (self.after or "").splitlines(keepends=True)
        old = str(self.path) if self.before is not None else "/dev/null"
        new = str(self.path) if self.after is not None else "/dev/null"
        lines = list(difflib.unified_diff(a, b, old, new))
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in lines)

    def apply(self) -> Path | None:
        """Write the change; return the backup's path if one was made."""
        if not self.changed:
            return None
        target = self.path.resolve() if self.path.is_symlink() else self.path
        backup = None
        if self.before is not None and self.backup:
            backup = target.with_name(f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
            fsutil.write_private_atomic(backup, self.before)
            prune_backups(target)
        if self.after is None:
            target.unlink(missing_ok=True)
        else:
            if not target.parent.exists():
                folders.ensure_private_dir(target.parent)
            try:  # an existing file keeps its mode (a settings.json of 0644 stays 0644)
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except FileNotFoundError:
                mode = 0o600
            fsutil.write_private_atomic(target, self.after, mode=mode)
        return backup


#: Backups kept per file: the newest few (one per run would pile up over an afternoon).
KEEP_BACKUPS = 3
_BACKUP = re.compile(r"\.bak-\d{8}-\d{6}\Z")


def prune_backups(target: Path, keep: int = KEEP_BACKUPS) -> list[Path]:
    """Remove all but the newest ``keep`` of setup's backups of ``target``; returns the removed."""
    made = sorted(p for p in target.parent.glob(f"{glob.escape(target.name)}.bak-*")
                  if _BACKUP.search(p.name[len(target.name):]))
    old = made[:-keep] if keep else made
    for path in old:
        path.unlink(missing_ok=True)
    return old


def read(path: Path) -> str | None:
    """A file's text, or None if it does not exist (newlines kept as they are)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) 0700; an existing folder keeps its mode."""
    if not path.exists():
        folders.ensure_private_dir(path)
    return path
