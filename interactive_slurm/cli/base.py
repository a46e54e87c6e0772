"""The one thing every click module shares: the runner they hand to the core.

Unit tests swap :func:`runner` here (``monkeypatch.setattr(cli_base, "runner", ...)``); the
commands look it up at call time. Keeping it in its own module means the verb modules
(``cli_remote``, ``cli_laptop``, ``cli_update``) never import :mod:`cli`, which imports them.
"""

from __future__ import annotations

from interactive_slurm.base.runner import Runner, SubprocessRunner


def runner() -> Runner:
    """The runner every command uses."""
    return SubprocessRunner()
