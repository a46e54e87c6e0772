"""Test doubles injected through the runner seam (never a global patch of :mod:`subprocess`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Union

from interactive_slurm.base.runner import DEFAULT_TIMEOUT, Result, check_result


@dataclass(frozen=True)
class Reply:
    """What a scripted command prints and how it exits."""

    stdout: str = ""
    stderr: str = ""
    returncode: int = 0


def ok(stdout: str = "") -> Reply:
    return Reply(stdout=stdout)


def fail(stderr: str, returncode: int = 1) -> Reply:
    return Reply(stderr=stderr, returncode=returncode)


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    input: str | None
    timeout: float
    check: bool
    env: Mapping[str, str] | None


Scripted = Union[Reply, Callable[[tuple[str, ...], Union[str, None]], Reply]]


class FakeRunner:
    """A ``Runner`` that records calls and answers from a script keyed by ``argv[0]``.

    A script value is one reply (given every time) or a list of replies used in order, the last
    one repeating. A reply may be a callable ``(argv, input) -> Reply``. A command missing from
    the script fails the test: the code ran something the test did not expect.
    """

    def __init__(self, script: Mapping[str, Scripted | Sequence[Scripted]] | None = None) -> None:
        self.script: dict[str, list[Scripted]] = {}
        for name, value in (script or {}).items():
            self.script[name] = list(value) if isinstance(value, (list, tuple)) else [value]  # type: ignore[list-item]
        self.calls: list[Call] = []

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
        self.calls.append(Call(argv, input, timeout, check, env))
        replies = self.script.get(argv[0])
        if not replies:
            raise AssertionError(f"unexpected command: {argv}")
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if callable(reply):
            reply = reply(argv, input)
        result = Result(argv, reply.returncode, reply.stdout, reply.stderr)
        return check_result(result) if check else result

    def argvs(self, program: str) -> list[tuple[str, ...]]:
        """The argv of every call of ``program``, in order."""
        return [call.argv for call in self.calls if call.argv[0] == program]

    def programs(self) -> list[str]:
        return [call.argv[0] for call in self.calls]


class Clock:
    """A clock that moves only when told: ``clock()`` is now, ``clock.sleep(s)`` moves it on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
