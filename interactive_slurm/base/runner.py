"""The only place that runs subprocesses.

Commands are argv lists (never a shell string), every call has a timeout, and a failure becomes a
:class:`~interactive_slurm.base.errors.CommandError` that quotes the command's own stderr. Unit tests
inject a fake with the same ``run`` method instead of patching :mod:`subprocess`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from interactive_slurm.base.errors import CommandError

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """What the core modules need from a command runner (the seam for tests)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Result: ...


def describe(argv: Sequence[str]) -> str:
    """A copy-pasteable rendering of argv for error messages."""
    return shlex.join(argv)


def check_result(result: Result, error: type[CommandError] = CommandError) -> Result:
    """Raise ``error`` quoting stderr when ``result`` failed; return it otherwise."""
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or "no output"
        raise error(
            f"{describe(result.argv[:1])} failed (exit {result.returncode}): {detail}",
            returncode=result.returncode,
            stderr=result.stderr,
        )
    return result


class SubprocessRunner:
    """The real runner."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        argv = tuple(argv)
        full_env = None if env is None else {**os.environ, **env}
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise CommandError(f"command not found: {argv[0]} ({exc.strerror})") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(f"{describe(argv)} did not finish within {timeout:g} s") from exc
        except OSError as exc:
            raise CommandError(f"could not run {describe(argv)}: {exc}") from exc
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        return check_result(result) if check else result


def exec_replace(argv: Sequence[str]) -> None:
    """Replace this process with argv (``remote ssh``); only returns by raising."""
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        raise CommandError(f"could not run {describe(argv)}: {exc}") from exc
