"""``interactive-slurm session``'s own argument reader (node/launch.py): what the batch script
writes is read back exactly, and anything else is one error naming the flag or value."""

from __future__ import annotations

import pytest

from interactive_slurm.base.errors import SessionError
from interactive_slurm.login import slurm
from interactive_slurm.node import launch


def command_args(script: str) -> list[str]:
    import shlex

    [line] = [line for line in script.splitlines() if line.startswith("exec ")]
    words = shlex.split(line)
    return words[words.index("session") + 1:]


@pytest.mark.parametrize("extra", [
    {},
    {"idle_timeout": 900, "transport": "srun"},
    {"container": "docker://ubuntu:24.04", "runtime": "apptainer"},
    {"container": "/images/with space.sqsh"},
])
def test_reads_back_what_the_batch_script_writes(extra: dict[str, object]) -> None:
    script = slurm.render_batch_script(python="/venv/bin/python", kind="gpu", profile="big",
                                       valid_for=3600, **extra)  # type: ignore[arg-type]
    flags = launch.parse(command_args(script))
    assert flags["--kind"] == "gpu" and flags["--profile"] == "big"
    assert flags["--valid-for"] == "3600"
    assert flags.get("--idle-timeout", "0") == str(extra.get("idle_timeout", 0))
    assert flags.get("--transport", "") == extra.get("transport", "")
    assert flags.get("--container", "") == extra.get("container", "")
    assert flags.get("--container-runtime", "") == extra.get("runtime", "")


def test_equals_form() -> None:
    assert launch.parse(["--kind=cpu", "--profile=default", "--valid-for=60"]) == {
        "--kind": "cpu", "--profile": "default", "--valid-for": "60"}


@pytest.mark.parametrize(("args", "says"), [
    (["--kind", "cpu", "--profile", "p"], "missing --valid-for"),
    (["--kind", "tpu", "--profile", "p", "--valid-for", "6"], "--kind must be cpu or gpu, not 'tpu'"),
    (["--kind", "cpu", "--profile", "p", "--valid-for", "6h"],
     "--valid-for must be a whole number of seconds, not '6h'"),
    (["--kind", "cpu", "--profile", "p", "--valid-for", "6", "--idle-timeout", "-1"],
     "--idle-timeout must be a whole number of seconds, not '-1'"),
    (["--kind", "cpu", "--profile", "p", "--valid-for", "6", "--shell", "x"],
     "unknown argument '--shell'"),
    (["--kind", "cpu", "--profile", "p", "--valid-for"], "--valid-for needs a value"),
    (["--kind", "cpu", "--kind", "gpu", "--profile", "p", "--valid-for", "6"],
     "--kind given twice"),
    (["--kind", "cpu", "--profile", "p", "--valid-for", "6", "--container-runtime", "enroot"],
     "--container-runtime needs --container"),
])
def test_wrong_arguments_name_the_flag(args: list[str], says: str) -> None:
    with pytest.raises(SessionError, match="^" + says.replace("(", r"\(")):
        launch.parse(args)


def test_an_unknown_transport_is_refused(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        launch.main(["--kind", "cpu", "--profile", "p", "--valid-for", "6", "--transport", "udp"])
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        "error: --transport must be one of tcp, srun, auto, not 'udp'\n")
