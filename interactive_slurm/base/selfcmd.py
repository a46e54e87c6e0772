"""How this install runs itself: the one place that knows "the console script, else
``python -I -m interactive_slurm``" (``-I``: neither the cwd's modules nor ``PYTHON*``
variables can change what runs)."""

from __future__ import annotations

import os
import sys

#: The interpreter arguments that run the package as a module, isolated.
MODULE_ARGS = ("-I", "-m", "interactive_slurm")


def module_argv(python: str | None = None) -> list[str]:
    """``python -I -m interactive_slurm`` with ``python`` (this interpreter by default)."""
    return [python or sys.executable, *MODULE_ARGS]


def argv() -> list[str]:
    """This install's console script when it has one, else :func:`module_argv`.

    A versioned install (``<root>/versions/<id>``) is named through ``<root>/current``, so a
    command written into a file (a ProxyCommand) keeps working after that version is pruned.
    """
    bindir = os.path.dirname(sys.executable)
    script = os.path.join(bindir, "interactive-slurm")
    if not os.path.exists(script):
        return module_argv()
    venv = os.path.dirname(bindir)
    versions = os.path.dirname(venv)
    if os.path.basename(versions) == "versions":
        current = os.path.join(os.path.dirname(versions), "current", "bin", "interactive-slurm")
        if os.path.exists(current):
            return [current]
    return [script]


def command(*args: str) -> str:
    """:func:`argv` plus ``args`` as one shell-quoted command line."""
    import shlex

    return shlex.join([*argv(), *args])


#: Set by the session for every shell in the job: this install's console script, so a command
#: sent into the job (``interactive-slurm open``) runs the session's own install, which may not
#: be on the node's PATH.
TOOL_ENV = "INTERACTIVE_SLURM_TOOL"


def tool_for_shells() -> str | None:
    """What :data:`TOOL_ENV` says: the console script, when this install has one."""
    found = argv()
    return found[0] if len(found) == 1 else None


def in_job_command(*args: str) -> str:
    """A command line for the user's login shell in a session: the session's install (or, from
    a session older than :data:`TOOL_ENV`, ``interactive-slurm`` on the PATH) with ``args``.
    POSIX ``sh`` expands the variable; the login shell only passes the words on."""
    import shlex

    script = f'exec "${{{TOOL_ENV}:-interactive-slurm}}" "$@"'
    return f"exec sh -c {shlex.quote(script)} sh {shlex.join(args)}"
