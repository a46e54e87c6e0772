"""profiles.py: shipped profiles, validation messages, user overrides, sbatch arguments."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from interactive_slurm.base import folders, values
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.login import profiles
from interactive_slurm.login.profiles import Resources

SHIPPED = {
    # name: (cpu time, cpus, mem), (gpu time, gpus, cpus, mem)
    "default": (("08:00:00", 4, "16G"), ("04:00:00", 1, 12, "32G")),
    "development": (("04:00:00", 2, "8G"), ("02:00:00", 1, 6, "16G")),
    "production": (("12:00:00", 8, "32G"), ("08:00:00", 2, 12, "64G")),
    "gpu-intensive": (("08:00:00", 4, "16G"), ("06:00:00", 4, 16, "64G")),
}


def valid_data(**top: Any) -> dict[str, Any]:
    return {
        **top,
        "cpu": {"time": "01:00:00", "cpus": 1, "mem": "1G"},
        "gpu": {"time": "01:00:00", "gpus": 1, "cpus": 2, "mem": "2G"},
    }


def write_profile(name: str, data: dict[str, Any]) -> Path:
    folder = Path(folders.profiles_dir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


# ------------------------------------------------------------------------ shipped profiles


def test_available_lists_exactly_the_shipped_profiles() -> None:
    assert sorted(profiles.available()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_values(name: str) -> None:
    (cpu_time, cpu_cpus, cpu_mem), (gpu_time, gpu_gpus, gpu_cpus, gpu_mem) = SHIPPED[name]
    prof = profiles.load(name)
    assert prof.shipped
    assert prof.source == profiles.SHIPPED_DIR / f"{name}.toml"
    assert prof.description
    assert prof.cpu == Resources(kind="cpu", time=cpu_time, cpus=cpu_cpus, mem=cpu_mem)
    assert prof.gpu == Resources(
        kind="gpu", time=gpu_time, cpus=gpu_cpus, mem=gpu_mem, gpus=gpu_gpus
    )


def test_resources_rejects_an_unknown_kind() -> None:
    with pytest.raises(ConfigError, match=r"unknown session kind 'tpu'; valid kinds: cpu, gpu"):
        profiles.load("default").resources("tpu")


# ----------------------------------------------------------------------------- time values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90 * 60),  # MM
        ("5", 5 * 60),
        ("90:30", 90 * 60 + 30),  # MM:SS
        ("1:30:00", 5400),  # HH:MM:SS
        ("08:00:00", 8 * 3600),
        ("2-3", 2 * 86400 + 3 * 3600),  # D-HH
        ("2-03:04", 2 * 86400 + 3 * 3600 + 4 * 60),  # D-HH:MM
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),  # D-HH:MM:SS
        ("0-00:00:01", 1),
    ],
)
def test_time_to_seconds(text: str, seconds: int) -> None:
    assert values.time_to_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "8h", "1-", "-1", "1:2:3-4"])
def test_time_to_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm time"):
        values.time_to_seconds(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00:00"),
        (59, "00:00:59"),
        (5400, "01:30:00"),
        (86399, "23:59:59"),
        (86400, "1-00:00:00"),
        (2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2-03:04:05"),
    ],
)
def test_format_seconds(seconds: int, text: str) -> None:
    assert values.format_seconds(seconds) == text
    assert values.time_to_seconds(text) == seconds


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("8h", "08:00:00"),
        ("30m", "00:30:00"),
        ("2d", "2-00:00:00"),
        ("36h", "1-12:00:00"),
        ("90", "01:30:00"),
        ("90:30", "01:30:30"),
        ("1:30:00", "01:30:00"),
        ("1-12", "1-12:00:00"),
        ("1-12:30", "1-12:30:00"),
        ("1-12:30:15", "1-12:30:15"),
    ],
)
def test_profile_time_is_normalised(value: str, canonical: str) -> None:
    data = valid_data()
    data["cpu"]["time"] = value
    prof = profiles.parse_profile("t", data, Path("/p/t.toml"))
    assert prof.cpu.time == canonical
    assert prof.cpu.time_seconds == values.time_to_seconds(canonical)


# ----------------------------------------------------------------------------- bad values

BAD_VALUES = [
    # (table, key, value, the value as the message quotes it)
    ("cpu", "time", "0", "0"),
    ("cpu", "time", "abc", "abc"),
    ("cpu", "time", "1:2:3:4", "1:2:3:4"),
    ("gpu", "time", "0h", "0h"),
    ("cpu", "cpus", 0, 0),
    ("cpu", "cpus", -1, -1),
    ("cpu", "cpus", "4", "4"),
    ("cpu", "cpus", True, True),
    ("gpu", "gpus", 0, 0),
    ("cpu", "mem", "16GB", "16GB"),
    ("cpu", "mem", "0G", "0G"),
    ("cpu", "mem", "lots", "lots"),
    ("gpu", "mem", 16, 16),
    ("gpu", "partition", "a b", "a b"),
    ("gpu", "partition", "x;rm -rf", "x;rm -rf"),
    ("gpu", "partition", "$(id)", "$(id)"),
    ("gpu", "partition", "`id`", "`id`"),
    ("gpu", "partition", "a\nb", "a\nb"),
    ("gpu", "partition", "../etc", "../etc"),
    ("gpu", "partition", "--wrap=id", "--wrap=id"),
    ("cpu", "account", "a'b", "a'b"),
    ("cpu", "constraint", "a100 ib", "a100 ib"),
    ("cpu", "container", "img;id", "img;id"),
    ("cpu", "container", "../../img", "../../img"),
    ("gpu", "gpu_type", "a100 x", "a100 x"),
    ("cpu", "extra", ["--wrap=id"], "--wrap=id"),
    ("cpu", "extra", ["--exclusive=1"], "--exclusive=1"),
    ("cpu", "extra", ["--begin"], "--begin"),
    ("cpu", "extra", ["--nodelist=a b"], "--nodelist=a b"),
    ("cpu", "extra", "--exclusive", "--exclusive"),
]


@pytest.mark.parametrize(("table", "key", "value", "shown"), BAD_VALUES)
def test_bad_value_names_file_table_key_and_value(
    table: str, key: str, value: object, shown: object
) -> None:
    data = valid_data()
    data[table][key] = value
    path = write_profile("bad", data)
    with pytest.raises(ConfigError) as info:
        profiles.load("bad")
    message = str(info.value)
    assert message.startswith(f"{path}: [{table}] {key} = {shown!r}: "), message


def test_extra_error_lists_the_allowed_options() -> None:
    data = valid_data()
    data["cpu"]["extra"] = ["--wrap=id"]
    write_profile("bad", data)
    with pytest.raises(ConfigError, match=r"allowed options: --begin, --cpus-per-gpu, .*--wckey$"):
        profiles.load("bad")


def test_unknown_key_in_a_table_lists_the_valid_keys() -> None:
    data = valid_data()
    data["cpu"]["cores"] = 4
    path = write_profile("bad", data)
    with pytest.raises(ConfigError) as info:
        profiles.load("bad")
    assert str(info.value) == (
        f"{path}: [cpu] cores = 4: unknown key; valid keys: time, cpus, mem, partition, account, "
        "qos, reservation, constraint, container, container_runtime, extra, idle_timeout, transport"
    )


def test_unknown_top_level_key_lists_the_valid_keys() -> None:
    path = write_profile("bad", valid_data(gpus=2))
    with pytest.raises(ConfigError) as info:
        profiles.load("bad")
    assert str(info.value) == (
        f"{path}: gpus = 2: unknown key; valid keys: description, cpu, gpu, partition, account, "
        "qos, reservation, constraint, container, container_runtime, extra, idle_timeout, transport"
    )


def test_missing_gpu_table() -> None:
    data = valid_data()
    del data["gpu"]
    path = write_profile("bad", data)
    with pytest.raises(ConfigError) as info:
        profiles.load("bad")
    assert str(info.value) == f"{path}: [gpu] table is missing (every profile needs [cpu] and [gpu])"


@pytest.mark.parametrize(("table", "key"), [("cpu", "time"), ("cpu", "mem"), ("gpu", "gpus")])
def test_missing_required_key(table: str, key: str) -> None:
    data = valid_data()
    del data[table][key]
    path = write_profile("bad", data)
    with pytest.raises(ConfigError) as info:
        profiles.load("bad")
    assert str(info.value) == f"{path}: [{table}] {key} is missing"


def test_invalid_toml_names_the_file() -> None:
    folder = Path(folders.profiles_dir())
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text("[cpu\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: line 1, column 5: not valid TOML: Expected"):
        profiles.load("broken")


@pytest.mark.parametrize(
    ("key", "value"),
    [("partition", "gpu\n"), ("constraint", "a100\n"), ("container", "img\n"),
     ("extra", ["--nodelist=node1\n"])],
)
def test_trailing_newline_is_rejected(key: str, value: object) -> None:
    data = valid_data()
    data["cpu"][key] = value
    with pytest.raises(ConfigError):
        profiles.parse_profile("t", data, Path("/p/t.toml"))


# ------------------------------------------------------------------ names and user profiles


def test_user_profile_overrides_the_shipped_one() -> None:
    data = valid_data(description="mine")
    data["cpu"]["cpus"] = 2
    path = write_profile("default", data)
    assert profiles.available()["default"] == path
    prof = profiles.load("default")
    assert (prof.source, prof.shipped, prof.description, prof.cpu.cpus) == (path, False, "mine", 2)


def test_user_profile_adds_a_name() -> None:
    path = write_profile("mine", valid_data())
    assert profiles.available()["mine"] == path
    assert profiles.load("mine").name == "mine"


def test_unknown_profile_lists_the_available_ones() -> None:
    write_profile("mine", valid_data())
    with pytest.raises(ConfigError) as info:
        profiles.load("nope")
    assert str(info.value) == (
        "unknown profile 'nope'; available profiles: default, development, gpu-intensive, mine, "
        "production"
    )


@pytest.mark.parametrize("name", ["../x", "A B", "Default", "", "-x", "a/b", "x" * 33])
def test_invalid_profile_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid profile name"):
        values.check_profile_name(name)
    with pytest.raises(ConfigError, match="invalid profile name"):
        profiles.load(name)


def test_profile_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid profile name"):
        values.check_profile_name("default\n")


# --------------------------------------------------------------------------- sbatch options


FULL = {
    "description": "everything",
    "account": "proj1",
    "qos": "normal",
    "cpu": {"time": "2h", "cpus": 4, "mem": "16g", "partition": "batch"},
    "gpu": {
        "time": "06:00:00", "gpus": 4, "gpu_type": "a100", "cpus": 16, "mem": "64G",
        "partition": "gpu", "qos": "high", "reservation": "maint", "constraint": "a100&ib",
        "extra": ["--exclusive", "--mail-type=END"],
    },
}


def test_sbatch_resource_args_cpu() -> None:
    prof = profiles.parse_profile("full", FULL, Path("/p/full.toml"))
    assert profiles.sbatch_resource_args(prof.cpu) == [
        "--nodes=1", "--ntasks=1", "--time=02:00:00", "--cpus-per-task=4", "--mem=16G",
        "--partition=batch", "--account=proj1", "--qos=normal",
    ]


def test_sbatch_resource_args_gpu_with_everything() -> None:
    prof = profiles.parse_profile("full", FULL, Path("/p/full.toml"))
    assert profiles.sbatch_resource_args(prof.gpu) == [
        "--nodes=1", "--ntasks=1", "--time=06:00:00", "--cpus-per-task=16", "--mem=64G",
        "--gres=gpu:a100:4", "--partition=gpu", "--account=proj1", "--qos=high",
        "--reservation=maint", "--constraint=a100&ib", "--exclusive", "--mail-type=END",
    ]


def test_sbatch_resource_args_gpu_without_type() -> None:
    assert profiles.sbatch_resource_args(profiles.load("default").gpu) == [
        "--nodes=1", "--ntasks=1", "--time=04:00:00", "--cpus-per-task=12", "--mem=32G",
        "--gres=gpu:1",
    ]


def test_top_level_keys_apply_to_both_tables_and_table_keys_win() -> None:
    data = valid_data(partition="batch", account="proj", container="img.sqsh",
                      extra=["--exclusive"])
    data["gpu"]["partition"] = "gpu"
    data["gpu"]["extra"] = ["--hint=nomultithread"]
    prof = profiles.parse_profile("t", data, Path("/p/t.toml"))
    assert (prof.cpu.partition, prof.cpu.account, prof.cpu.container, prof.cpu.extra) == (
        "batch", "proj", "img.sqsh", ("--exclusive",)
    )
    assert (prof.gpu.partition, prof.gpu.account, prof.gpu.container, prof.gpu.extra) == (
        "gpu", "proj", "img.sqsh", ("--hint=nomultithread",)
    )


def test_bad_top_level_optional_value_names_the_file_key_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        profiles.parse_profile("t", valid_data(partition="a b"), Path("/p/t.toml"))
    assert str(info.value).startswith("/p/t.toml: partition = 'a b': expected a Slurm name")


# ------------------------------------------------------------------------------ the hash


def test_resource_hash_is_stable() -> None:
    a = profiles.load("default").gpu
    b = Resources(kind="gpu", time="04:00:00", cpus=12, mem="32G", gpus=1)
    assert profiles.resource_hash(a) == profiles.resource_hash(b)
    assert len(profiles.resource_hash(a)) == 10
    assert set(profiles.resource_hash(a)) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    "change",
    [
        {"time": "05:00:00"}, {"cpus": 13}, {"mem": "33G"}, {"gpus": 2}, {"gpu_type": "a100"},
        {"partition": "gpu"}, {"account": "x"}, {"qos": "x"}, {"reservation": "x"},
        {"constraint": "x"}, {"container": "img.sqsh"}, {"extra": ("--exclusive",)},
    ],
)
def test_resource_hash_changes_with_every_resource(change: dict[str, Any]) -> None:
    base = profiles.load("default").gpu
    assert profiles.resource_hash(dataclasses.replace(base, **change)) != profiles.resource_hash(base)


# ------------------------------------------------------------------------ idle_timeout


def test_idle_timeout_is_off_by_default() -> None:
    write_profile("plain", valid_data())
    prof = profiles.load("plain")
    assert (prof.cpu.idle_timeout, prof.gpu.idle_timeout) == (0, 0)


@pytest.mark.parametrize(("value", "seconds"), [("30m", 1800), ("2h", 7200), ("8s", 8),
                                                ("01:30:00", 5400), ("90", 5400)])
def test_idle_timeout_top_level_applies_to_both_tables(value: str, seconds: int) -> None:
    write_profile("idle", valid_data(idle_timeout=value))
    prof = profiles.load("idle")
    assert (prof.cpu.idle_timeout, prof.gpu.idle_timeout) == (seconds, seconds)


def test_idle_timeout_in_a_table_wins() -> None:
    data = valid_data(idle_timeout="2h")
    data["gpu"]["idle_timeout"] = "20m"
    write_profile("idle", data)
    prof = profiles.load("idle")
    assert (prof.cpu.idle_timeout, prof.gpu.idle_timeout) == (7200, 1200)


@pytest.mark.parametrize("value", ["soon", "0m", 30, "-1h", ""])
def test_bad_idle_timeout_names_file_and_value(value: object) -> None:
    path = write_profile("idle", valid_data(idle_timeout=value))
    with pytest.raises(ConfigError) as info:
        profiles.load("idle")
    assert str(info.value) == (f"{path}: idle_timeout = {value!r}: expected a duration such as "
                               "\"30m\", \"2h\" or \"01:30:00\"")


def test_idle_timeout_is_not_a_resource() -> None:
    """It goes to the session, not to sbatch: a running job's resource hash stays the same."""
    write_profile("plain", valid_data())
    write_profile("idle", valid_data(idle_timeout="30m"))
    plain, idle = profiles.load("plain").cpu, profiles.load("idle").cpu
    assert profiles.sbatch_resource_args(idle) == profiles.sbatch_resource_args(plain)
    assert profiles.resource_hash(idle) == profiles.resource_hash(plain)
