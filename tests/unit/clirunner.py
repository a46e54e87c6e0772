"""One CliRunner for the unit tests, with stderr kept apart on every click the project supports."""

from __future__ import annotations

import inspect

from click.testing import CliRunner


def cli_runner() -> CliRunner:
    """A CliRunner whose result has ``stdout`` and ``stderr`` apart: the default from click 8.2,
    asked for before (click 8.1 is the newest for Python 3.9, and it mixes them by default)."""
    if "mix_stderr" in inspect.signature(CliRunner).parameters:  # click < 8.2
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]
    return CliRunner()
