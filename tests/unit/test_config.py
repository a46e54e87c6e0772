"""config.py: defaults, a valid file, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from interactive_slurm.base import config, folders
from interactive_slurm.base.config import Config
from interactive_slurm.base.errors import ConfigError


def write_config(text: str) -> Path:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_file_lives_in_the_config_dir(home: Path) -> None:
    assert Path(folders.config_file()) == home / "config" / "config.toml"


def test_defaults_when_the_file_is_missing() -> None:
    cfg = config.load()
    assert cfg == Config(default_profile="default", wait_timeout=1800.0, sshd="/usr/sbin/sshd")
    assert cfg.source is None


def test_valid_file() -> None:
    path = write_config(
        'default_profile = "development"\nwait_timeout = 60\nsshd = "/opt/openssh/sbin/sshd"\n'
        'image_cache = "/project/lab/images"\n'
    )
    assert config.load() == Config(
        default_profile="development", wait_timeout=60.0, sshd="/opt/openssh/sbin/sshd",
        image_cache="/project/lab/images", source=path,
    )


def test_partial_file_keeps_the_other_defaults() -> None:
    path = write_config("wait_timeout = 12.5\n")
    assert config.load() == Config(wait_timeout=12.5, source=path)


def test_unknown_key_lists_the_valid_ones() -> None:
    path = write_config("timeout = 5\n")
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value) == (
        f"{path}: timeout = 5: unknown key; valid keys: default_profile, wait_timeout, "
        "warn_time_left, sshd, image_cache, transport, clusters, update"
    )


@pytest.mark.parametrize(
    ("toml_value", "shown"),
    [
        ("0", "0"),
        ("-5", "-5"),
        ('"60"', "'60'"),
        ("true", "True"),
        ("[60]", "[60]"),
        pytest.param(
            "nan", "nan",
        ),
    ],
)
def test_bad_wait_timeout(toml_value: str, shown: str) -> None:
    path = write_config(f"wait_timeout = {toml_value}\n")
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value) == f"{path}: wait_timeout = {shown}: expected seconds > 0"


@pytest.mark.parametrize("value", ["sbin/sshd", "sshd", "~/sshd", ""])
def test_relative_sshd_path(value: str) -> None:
    path = write_config(f'sshd = "{value}"\n')
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value) == f"{path}: sshd = {value!r}: expected an absolute path"


@pytest.mark.parametrize("value", ['"images"', '""', "5", '"/x\\ny"'])
def test_image_cache_must_be_an_absolute_path(value: str) -> None:
    path = write_config(f"image_cache = {value}\n")
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith(f"{path}: image_cache = ")
    assert str(info.value).endswith("expected the absolute path of a shared folder for container images")


def test_bad_default_profile() -> None:
    path = write_config('default_profile = "../x"\n')
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith(f"{path}: default_profile: invalid profile name '../x'")


def test_invalid_toml_names_the_file() -> None:
    path = write_config("wait_timeout = \n")
    with pytest.raises(ConfigError, match=f"^{path}: line 1, column 16: not valid TOML: Invalid value$"):
        config.load()


def test_interactive_slurm_config_points_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config("wait_timeout = 1\n")  # the usual file: must be ignored
    other = tmp_path / "elsewhere" / "my.toml"
    other.parent.mkdir()
    other.write_text("wait_timeout = 99\n")
    monkeypatch.setenv("INTERACTIVE_SLURM_CONFIG", str(other))
    assert Path(folders.config_file()) == other
    assert config.load() == Config(wait_timeout=99.0, source=other)


def test_interactive_slurm_config_naming_a_missing_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config("wait_timeout = 1\n")
    monkeypatch.setenv("INTERACTIVE_SLURM_CONFIG", str(tmp_path / "missing.toml"))
    assert config.load() == Config()


@pytest.mark.parametrize(("toml_value", "seconds"), [('"30m"', 1800), ('"1h"', 3600),
                                                     ('"00:45:00"', 2700), ('"90s"', 90)])
def test_warn_time_left(toml_value: str, seconds: int) -> None:
    write_config(f"warn_time_left = {toml_value}\n")
    assert config.load().warn_time_left == seconds


def test_warn_time_left_defaults_to_half_an_hour() -> None:
    assert Config().warn_time_left == 1800


@pytest.mark.parametrize("toml_value", ['"soon"', "30", '"0m"', '"-5m"'])
def test_bad_warn_time_left(toml_value: str) -> None:
    path = write_config(f"warn_time_left = {toml_value}\n")
    with pytest.raises(ConfigError) as info:
        config.load()
    assert str(info.value).startswith(f"{path}: warn_time_left = ")
    assert str(info.value).endswith(': expected a duration such as "30m", "1h" or "00:45:00"')
