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
