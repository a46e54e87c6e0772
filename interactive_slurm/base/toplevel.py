"""Where an error ends the program: caught once, shown as one ``error: ...`` line on stderr.

Every way in (the click CLI in cli/main.py, and the routes entry.py takes without click: the
proxy's slow path for a plain ``proxy KIND``, and ``session``) runs its body through
:func:`run`: an :class:`InteractiveSlurmError` exits with its code, an ``OSError`` (our own
files: a full disk, a folder we may not enter) with 1, Ctrl-C with 130, and
``INTERACTIVE_SLURM_DEBUG=1`` shows the traceback too. A failing ``proxy`` (what ``ssh
slurm-cpu`` runs) adds one more line: run ``doctor``.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from interactive_slurm.base.errors import Aborted, InteractiveSlurmError


def proxy_hint(kind: str) -> str:
    """The last stderr line of a proxy that failed (what ``ssh slurm-KIND`` shows last)."""
    return ("interactive-slurm: run 'interactive-slurm doctor' on the login node (or "
            f"'interactive-slurm doctor --host slurm-{kind}' on your laptop) to find what is wrong")


def run(body: Callable[[], object], *, hint: str | None = None) -> NoReturn:
    """Run ``body`` and exit: with its result when that is an int, else 0; on an error, with
    the error's line (and ``hint`` after it, unless the user gave up)."""
    try:
        result = body()
    except KeyboardInterrupt:
        sys.exit(130)
    except InteractiveSlurmError as exc:
        _traceback()
        sys.stderr.write(f"error: {exc}\n")
        # Aborted: the user gave up (Ctrl-C, ssh closed): nothing for doctor to find.
        fail(None if isinstance(exc, Aborted) else hint, exc.exit_code)
    except OSError as exc:
        from interactive_slurm.base.fsutil import describe_os_error

        _traceback()
        sys.stderr.write(f"error: {describe_os_error(exc)}\n")
        fail(hint, 1)
    sys.exit(result if isinstance(result, int) else 0)


def fail(hint: str | None, code: int) -> NoReturn:
    """Exit ``code`` after the error line; ``hint`` (if any) is the last line."""
    if hint:
        sys.stderr.write(hint + "\n")
    sys.stderr.flush()
    sys.exit(code)


def _traceback() -> None:
    if os.environ.get("INTERACTIVE_SLURM_DEBUG"):
        import traceback

        traceback.print_exc()
