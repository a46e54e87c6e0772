"""What ``interactive-slurm doctor`` reports: one :class:`Check` per part of the connection's path.

A check is ``ok``, ``warn`` or ``fail``, says what it saw and, unless it is ok, the exact fix (a
command, a key, a file). The checks themselves live with the machine they look at
(``login/doctor.py``, ``laptop/doctor.py``); this module holds what both share: the model, the
two renderings (one text line per check, or JSON for scripts and support tickets), the exit
status, the guard that keeps one broken check from stopping the others, and the StrictModes check
of the tool's own files (the same on a laptop and on a login node). Pure, base-level.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from interactive_slurm.base import folders
from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.base.fsutil import check_secure

OK = "ok"
WARN = "warn"
FAIL = "fail"
STATUSES = (OK, WARN, FAIL)
#: How each status starts its text line (the same width, so the names line up).
_LABELS = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


@dataclass(frozen=True)
class Check:
    """The verdict on one part of the path: ``saw`` what was found, ``fix`` what to do."""

    name: str
    status: str
    saw: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def ok(name: str, saw: str) -> Check:
    return Check(name, OK, saw)


def warn(name: str, saw: str, fix: str) -> Check:
    return Check(name, WARN, saw, fix)


def fail(name: str, saw: str, fix: str) -> Check:
    return Check(name, FAIL, saw, fix)


def format_line(check: Check) -> str:
    """``ok   name: saw`` or ``FAIL name: saw — fix: ...`` (one line: newlines become spaces)."""
    line = f"{_LABELS[check.status]} {check.name}: {check.saw}"
    if check.status != OK and check.fix:
        line += f" — fix: {check.fix}"
    return " ".join(line.split("\n"))


def format_text(checks: Iterable[Check]) -> str:
    return "".join(format_line(c) + "\n" for c in checks)


def format_json(checks: Iterable[Check]) -> str:
    return json.dumps([c.as_dict() for c in checks], indent=2) + "\n"


def from_json(text: str) -> list[Check]:
    """The checks of :func:`format_json` output (another install's ``doctor --json``);
    ValueError for anything else."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of checks")
    out = []
    for item in data:
        if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) for k in ("name", "status", "saw", "fix")):
            raise ValueError(f"not a check: {str(item)[:120]}")
        out.append(Check(item["name"], item["status"], item["saw"], item["fix"]))
    return out


def exit_status(checks: Sequence[Check]) -> int:
    """0 only if nothing failed (warnings do not count)."""
    return 1 if any(c.failed for c in checks) else 0


def guarded(name: str, run: Callable[[], Iterable[Check]]) -> list[Check]:
    """The checks ``run`` returns; an error of ours or of the OS it raises becomes one failed
    check named ``name`` (the others still run)."""
    try:
        return list(run())
    except (InteractiveSlurmError, OSError) as exc:
        return [fail(name, f"could not check: {exc}",
                     "run again with INTERACTIVE_SLURM_DEBUG=1 and report the error")]


def split_fix(message: str) -> tuple[str, str]:
    """An error message ``"...; fix: CMD"`` (fsutil's) as (what, fix); no fix: (message, "")."""
    what, sep, fix = message.partition("; fix: ")
    return (what, fix) if sep else (message, "")


def trusted_folders(paths: Sequence[str] | None = None) -> list[Check]:
    """StrictModes for the files and folders the tool trusts (:func:`folders.trusted_paths`):
    each must be the user's (or root's) and not writable by group or others, nor any folder
    above it. The proxy refuses to run otherwise, so a failure here fails every connection."""
    name = "trusted folders"
    paths = folders.trusted_paths() if paths is None else paths
    problems: list[tuple[str, str]] = []
    present = []
    for path in paths:
        try:
            check_secure(path)
        except FileNotFoundError:
            continue
        except InteractiveSlurmError as exc:
            what, fix = split_fix(str(exc))
            problems.append((what, fix or "remove it, or set INTERACTIVE_SLURM_HOME elsewhere"))
            continue
        present.append(path)
    if problems:
        return [fail(name, "; ".join(w for w, _ in problems),
                     "; ".join(dict.fromkeys(f for _, f in problems)))]
    where = f"config {folders.config_dir()}, state {folders.state_dir()}"
    if not present:
        return [ok(name, f"none made yet ({where})")]
    return [ok(name, f"{len(present)} of {len(paths)} exist and are yours alone ({where})")]
