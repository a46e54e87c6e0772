"""profile_edit.py and `profiles set`: create, edit, remove, refuse, back up; nothing half-written."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import click
import pytest

from interactive_slurm.base.errors import ConfigError, UsageError
from interactive_slurm.cli import main as cli
from interactive_slurm.login import profile_edit, profiles
from interactive_slurm.login.profile_edit import Setting
from interactive_slurm.login.profiles import Resources

from .clirunner import cli_runner

SHIPPED = profiles.SHIPPED_DIR
DEFAULT_CPU = "  cpu: --nodes=1 --ntasks=1 --time=08:00:00 --cpus-per-task=4 --mem=16G\n"
DEFAULT_DESCRIPTION = "Everyday work: a comfortable CPU node or one GPU."

HAND_WRITTEN = """\
# my lab's profile: hand-written, with comments
account = "mylab"
[cpu]
time = "1-00:00:00"   # a day
cpus = 8
mem = "32G"
partition = "cpu"
[gpu]
time = "8h"
gpus = 2
cpus = 16
mem = "64G"
"""


def invoke(args: list[str]) -> click.testing.Result:
    return cli_runner().invoke(cli.cli, args, catch_exceptions=False)


def run_main(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def user_file(home: Path, name: str) -> Path:
    return home / "config" / "profiles" / f"{name}.toml"


def write_user(home: Path, name: str, text: str) -> Path:
    path = user_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.bak-*"))


# ------------------------------------------------------------------------ KEY=VALUE parsing


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("gpu.gpus=8", Setting("gpu", "gpus", 8)),
        ("cpu.cpus=+4", Setting("cpu", "cpus", 4)),
        ("cpu.cpus=four", Setting("cpu", "cpus", "four")),  # the validator names it later
        ("cpu.time=90", Setting("cpu", "time", "90")),  # a string where the schema wants one
        ("account=123", Setting(None, "account", "123")),
        ("gpu.time=12h", Setting("gpu", "time", "12h")),
        ("description=big = fast", Setting(None, "description", "big = fast")),
        ("extra=--exclusive", Setting(None, "extra", ["--exclusive"])),
        ("gpu.extra=--mail-type=END,FAIL,--exclusive,--nodelist=n1,n2",
         Setting("gpu", "extra", ["--mail-type=END,FAIL", "--exclusive", "--nodelist=n1,n2"])),
        ("account=", Setting(None, "account", None)),
        ("gpu.gpus=", Setting("gpu", "gpus", None)),
    ],
)
def test_parse_setting(text: str, setting: Setting) -> None:
    assert profile_edit.parse_setting(text) == setting


ALL_KEYS = (
    "description, partition, account, qos, reservation, constraint, container, container_runtime, "
    "extra, idle_timeout, transport, "
    "cpu.time, cpu.cpus, cpu.mem, cpu.partition, cpu.account, cpu.qos, cpu.reservation, "
    "cpu.constraint, cpu.container, cpu.container_runtime, cpu.extra, "
    "cpu.idle_timeout, cpu.transport, "
    "gpu.time, gpu.cpus, gpu.mem, gpu.gpus, gpu.gpu_type, gpu.partition, gpu.account, gpu.qos, "
    "gpu.reservation, gpu.constraint, gpu.container, gpu.container_runtime, gpu.extra, "
    "gpu.idle_timeout, gpu.transport"
)
GPU_KEYS = (
    "gpu.time, gpu.cpus, gpu.mem, gpu.gpus, gpu.gpu_type, gpu.partition, gpu.account, gpu.qos, "
    "gpu.reservation, gpu.constraint, gpu.container, gpu.container_runtime, gpu.extra, "
    "gpu.idle_timeout, gpu.transport"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpus=8", f"unknown key 'gpus' in 'gpus=8'; valid keys: {ALL_KEYS}"),
        ("cpu=3", f"unknown key 'cpu' in 'cpu=3'; valid keys: {ALL_KEYS}"),
        ("tpu.cpus=3", f"unknown key 'tpu.cpus' in 'tpu.cpus=3'; valid keys: {ALL_KEYS}"),
        (".cpus=3", f"unknown key '.cpus' in '.cpus=3'; valid keys: {ALL_KEYS}"),
        ("=3", f"unknown key '' in '=3'; valid keys: {ALL_KEYS}"),
        ("gpu.cores=8", f"unknown key 'gpu.cores' in 'gpu.cores=8'; valid keys: {GPU_KEYS}"),
        ("cpu.gpus=1", "unknown key 'cpu.gpus' in 'cpu.gpus=1'; valid keys: cpu.time, cpu.cpus, "
                       "cpu.mem, cpu.partition, cpu.account, cpu.qos, cpu.reservation, "
                       "cpu.constraint, cpu.container, cpu.container_runtime, cpu.extra, "
                       "cpu.idle_timeout, cpu.transport"),
        ("gpu.gpus.x=1", f"unknown key 'gpu.gpus.x' in 'gpu.gpus.x=1'; valid keys: {GPU_KEYS}"),
        ("gpu.gpus", "'gpu.gpus': expected KEY=VALUE such as gpu.gpus=8 (KEY= removes a key)"),
    ],
)
def test_parse_setting_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        profile_edit.parse_setting(text)
    assert str(info.value) == message


# ------------------------------------------------------------------------------ the command


def test_set_starts_from_the_shipped_profile_and_keeps_its_values(home: Path) -> None:
    result = invoke(["profiles", "set", "default", "gpu.gpus=2"])
    path = user_file(home, "default")
    assert result.exit_code == 0
    assert result.stderr == f"created {path}\n"
    assert result.stdout == (
        f"default: {DEFAULT_DESCRIPTION} ({path})\n"
        + DEFAULT_CPU
        + "  gpu: --nodes=1 --ntasks=1 --time=04:00:00 --cpus-per-task=12 --mem=32G --gres=gpu:2\n"
    )
    prof = profiles.load("default")
    assert (prof.source, prof.shipped, prof.description) == (path, False, DEFAULT_DESCRIPTION)
    assert prof.cpu == Resources(kind="cpu", time="08:00:00", cpus=4, mem="16G")
    assert prof.gpu == Resources(kind="gpu", time="04:00:00", cpus=12, mem="32G", gpus=2)
    assert backups(path) == []  # there was no file of the user's to keep


def test_set_makes_the_folder_and_file_private(home: Path) -> None:
    invoke(["profiles", "set", "default", "gpu.gpus=2"])
    path = user_file(home, "default")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["default.toml"]  # no temp file left


def test_set_creates_a_new_profile_from_nothing(home: Path) -> None:
    result = invoke([
        "profiles", "set", "big", "description=eight GPUs", "account=mylab",
        "cpu.time=1h", "cpu.cpus=2", "cpu.mem=4G",
        "gpu.time=12h", "gpu.gpus=8", "gpu.cpus=32", "gpu.mem=256G", "gpu.gpu_type=a100",
        "gpu.extra=--exclusive,--mail-type=END,FAIL",
    ])
    path = user_file(home, "big")
    assert result.exit_code == 0
    assert result.stderr == f"created {path}\n"
    assert result.stdout == (
        f"big: eight GPUs ({path})\n"
        "  cpu: --nodes=1 --ntasks=1 --time=01:00:00 --cpus-per-task=2 --mem=4G --account=mylab\n"
        "  gpu: --nodes=1 --ntasks=1 --time=12:00:00 --cpus-per-task=32 --mem=256G "
        "--gres=gpu:a100:8 --account=mylab --exclusive --mail-type=END,FAIL\n"
    )
    assert path.read_text() == (
        'description = "eight GPUs"\n'
        'account = "mylab"\n'
        "\n"
        "[cpu]\n"
        'time = "1h"\n'
        "cpus = 2\n"
        'mem = "4G"\n'
        "\n"
        "[gpu]\n"
        'time = "12h"\n'
        "gpus = 8\n"
        "cpus = 32\n"
        'mem = "256G"\n'
        'gpu_type = "a100"\n'
        "extra = [\n"
        '    "--exclusive",\n'
        '    "--mail-type=END,FAIL",\n'
        "]\n"
    )
    assert profiles.load("big").gpu.gpus == 8
    assert "big" in invoke(["profiles"]).stdout


def test_a_new_profile_must_be_complete(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert run_main(capsys, ["profiles", "set", "big", "gpu.gpus=8", "cpu.time=1h"]) == (
        1, "",
        "error: profile 'big' would lack cpu.cpus, cpu.mem, gpu.time, gpu.cpus, gpu.mem: set them "
        "too (or start from a profile: --from default); nothing written\n",
    )
    assert not (home / "config").exists()


def test_from_starts_a_new_profile_from_another(home: Path) -> None:
    result = invoke(["profiles", "set", "big", "--from", "gpu-intensive", "gpu.gpus=8"])
    path = user_file(home, "big")
    assert result.exit_code == 0
    assert result.stdout == (
        f"big: {profiles.load('gpu-intensive').description} ({path})\n"
        + DEFAULT_CPU
        + "  gpu: --nodes=1 --ntasks=1 --time=06:00:00 --cpus-per-task=16 --mem=64G --gres=gpu:8\n"
    )


def test_from_refuses_to_replace_an_existing_profile(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    assert run_main(capsys, ["profiles", "set", "mylab", "--from", "default", "cpu.cpus=1"]) == (
        2, "",
        f"error: --from default: profile 'mylab' already exists ({path}); --from only starts a new "
        "one\n",
    )
    assert path.read_text() == HAND_WRITTEN


def test_from_an_unknown_profile(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert run_main(capsys, ["profiles", "set", "big", "--from", "nope", "gpu.gpus=8"]) == (
        1, "",
        "error: unknown profile 'nope'; available profiles: default, development, gpu-intensive, "
        "production\n",
    )
    assert not (home / "config").exists()


def test_set_edits_a_user_file_keeps_its_values_and_backs_it_up(home: Path) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    result = invoke(["profiles", "set", "mylab", "gpu.gpus=8", "gpu.partition=gpu"])
    assert result.exit_code == 0
    [backup] = backups(path)
    assert re.fullmatch(r"mylab\.toml\.bak-\d{8}-\d{6}", backup.name), backup.name
    assert backup.read_text() == HAND_WRITTEN
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert result.stderr == (
        f"previous file kept as {backup} (comments are not carried over)\n"
        f"wrote {path}\n"
    )
    assert result.stdout == (
        f"mylab:  ({path})\n"
        "  cpu: --nodes=1 --ntasks=1 --time=1-00:00:00 --cpus-per-task=8 --mem=32G "
        "--partition=cpu --account=mylab\n"
        "  gpu: --nodes=1 --ntasks=1 --time=08:00:00 --cpus-per-task=16 --mem=64G --gres=gpu:8 "
        "--partition=gpu --account=mylab\n"
    )
    prof = profiles.load("mylab")
    assert prof.source == path
    assert (prof.cpu.time, prof.cpu.cpus, prof.cpu.partition, prof.gpu.gpus) == (
        "1-00:00:00", 8, "cpu", 8
    )
    assert "#" not in path.read_text()  # tomli-w keeps no comments: hence the backup


def test_two_edits_in_one_second_keep_both_backups(home: Path) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    profile_edit.set_values("mylab", ["gpu.gpus=3"], now=1_800_000_000.0)
    second_old = path.read_text()
    profile_edit.set_values("mylab", ["gpu.gpus=4"], now=1_800_000_000.0)
    first, second = backups(path)
    assert second.name == first.name + "-2"
    assert (first.read_text(), second.read_text()) == (HAND_WRITTEN, second_old)


def test_set_removes_a_key(home: Path) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    result = invoke(["profiles", "set", "mylab", "account=", "cpu.partition="])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1:] == [
        "  cpu: --nodes=1 --ntasks=1 --time=1-00:00:00 --cpus-per-task=8 --mem=32G",
        "  gpu: --nodes=1 --ntasks=1 --time=08:00:00 --cpus-per-task=16 --mem=64G --gres=gpu:2",
    ]
    text = path.read_text()
    assert "account" not in text and "partition" not in text
    prof = profiles.load("mylab")
    assert (prof.cpu.account, prof.cpu.partition, prof.gpu.account) == (None, None, None)


def test_removing_a_required_key_is_refused(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    assert run_main(capsys, ["profiles", "set", "mylab", "gpu.gpus="]) == (
        1, "", "error: profile 'mylab' would lack gpu.gpus: set them too; nothing written\n"
    )
    assert path.read_text() == HAND_WRITTEN
    assert backups(path) == []


def test_setting_the_same_values_again_writes_nothing(home: Path) -> None:
    invoke(["profiles", "set", "default", "gpu.gpus=2"])
    path = user_file(home, "default")
    before = path.stat().st_mtime_ns
    result = invoke(["profiles", "set", "default", "gpu.gpus=2"])
    assert result.exit_code == 0
    assert result.stderr == f"{path} unchanged\n"
    assert path.stat().st_mtime_ns == before
    assert backups(path) == []


REFUSED = [
    # (argv after NAME, exit status, message without "error: ", {path} standing for the file)
    (["gpus=8"], 2, f"unknown key 'gpus' in 'gpus=8'; valid keys: {ALL_KEYS}"),
    (["gpu.gpus=8", "gpu.cores=8"], 2,
     f"unknown key 'gpu.cores' in 'gpu.cores=8'; valid keys: {GPU_KEYS}"),
    (["gpu.gpus=many"], 1,
     "{path}: [gpu] gpus = 'many': expected a whole number >= 1; nothing written"),
    (["cpu.cpus=0"], 1, "{path}: [cpu] cpus = 0: expected a whole number >= 1; nothing written"),
    (["gpu.mem=16GB"], 1,
     "{path}: [gpu] mem = '16GB': expected a size such as \"16G\", \"512M\" or \"1T\"; "
     "nothing written"),
    (["partition=a;b"], 1,
     "{path}: partition = 'a;b': expected a Slurm name (letters, digits, _ . -; at most 64); "
     "nothing written"),
    (["cpu.extra=--wrap=id"], 1,
     "{path}: [cpu] extra = '--wrap=id': option not allowed; allowed options: --begin, "
     "--cpus-per-gpu, --exclude, --exclusive, --gres-flags, --hint, --licenses, --mail-type, "
     "--mail-user, --mem-per-gpu, --nice, --nodelist, --tmp, --wckey; nothing written"),
    (["gpu.gpus"], 2, "'gpu.gpus': expected KEY=VALUE such as gpu.gpus=8 (KEY= removes a key)"),
]


@pytest.mark.parametrize(("args", "code", "message"), REFUSED)
def test_a_refused_setting_leaves_the_user_file_untouched(
    capsys: pytest.CaptureFixture[str], home: Path, args: list[str], code: int, message: str
) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN)
    before = path.read_bytes()
    assert run_main(capsys, ["profiles", "set", "mylab", *args]) == (
        code, "", "error: " + message.replace("{path}", str(path)) + "\n"
    )
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["mylab.toml"]  # no backup, no temp file


@pytest.mark.parametrize(("args", "code", "message"), REFUSED)
def test_a_refused_setting_creates_no_file(
    capsys: pytest.CaptureFixture[str], home: Path, args: list[str], code: int, message: str
) -> None:
    path = user_file(home, "default")
    got = run_main(capsys, ["profiles", "set", "default", *args])
    assert got == (code, "", "error: " + message.replace("{path}", str(path)) + "\n")
    assert not (home / "config").exists()


def test_a_bad_profile_name(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert run_main(capsys, ["profiles", "set", "../x", "gpu.gpus=8"]) == (
        1, "", "error: invalid profile name '../x': use lower-case letters, digits, _ and - "
               "(at most 32)\n",
    )
    assert not (home / "config").exists()


def test_set_needs_a_setting(home: Path) -> None:
    result = cli_runner().invoke(cli.cli, ["profiles", "set", "big"])
    assert result.exit_code == 2
    assert "Missing argument 'KEY=VALUE...'" in result.stderr
    with pytest.raises(UsageError, match="nothing to set"):
        profile_edit.set_values("big", [])


def test_a_user_file_whose_table_is_not_a_table(home: Path) -> None:
    path = write_user(home, "odd", 'cpu = 3\n[gpu]\ntime = "1h"\ngpus = 1\ncpus = 1\nmem = "1G"\n')
    with pytest.raises(ConfigError) as info:
        profile_edit.set_values("odd", ["cpu.cpus=2"])
    assert str(info.value) == f"{path}: cpu = 3: expected a [cpu] table"


def test_set_can_fix_a_broken_value_in_a_user_file(home: Path) -> None:
    path = write_user(home, "mylab", HAND_WRITTEN.replace("cpus = 8", "cpus = 0"))
    with pytest.raises(ConfigError):
        profiles.load("mylab")
    result = profile_edit.set_values("mylab", ["cpu.cpus=8"])
    assert result.changed and result.backup is not None
    assert profiles.load("mylab").cpu.cpus == 8 == result.profile.cpu.cpus
    assert result.path == path


# ------------------------------------------------------------- `profiles` keeps its old forms


def test_profiles_show_is_profiles_name() -> None:
    assert invoke(["profiles", "show", "default"]).stdout == invoke(["profiles", "default"]).stdout


def test_profiles_help_names_the_forms() -> None:
    result = invoke(["profiles", "--help"])
    assert " profiles [OPTIONS] [NAME | set NAME KEY=VALUE...]" in (
        result.stdout
    )
    assert "interactive-slurm profiles set default gpu.gpus=2" in result.stdout


def test_set_idle_timeout_and_show_it() -> None:
    result = invoke(["profiles", "set", "lazy", "--from", "default",
                     "idle_timeout=30m", "gpu.idle_timeout=20m"])
    assert result.exit_code == 0, result.output
    shown = invoke(["profiles", "show", "lazy"]).output
    assert "--mem=16G  (idle_timeout: 00:30:00)\n" in shown
    assert "--gres=gpu:1  (idle_timeout: 00:20:00)\n" in shown
