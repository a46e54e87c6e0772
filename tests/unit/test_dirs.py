"""dirs.py: the config and state folders without platformdirs agree with platformdirs."""

from __future__ import annotations

import os
import sys

import platformdirs
import pytest

from interactive_slurm import dirs, paths


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (dirs.HOME_ENV, dirs.CONFIG_ENV, "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/ada")
    monkeypatch.setattr(dirs.os, "getuid", lambda: 1000)  # the simple rule is for users
    return monkeypatch


@pytest.mark.parametrize(("state", "config"), [
    (None, None), ("/xdg/state", "/xdg/config"), ("", ""), ("   ", "/c"), ("rel/state", "rel/cfg"),
])
def test_the_folders_are_platformdirs_own(plain_env: pytest.MonkeyPatch, state: str | None,
                                          config: str | None) -> None:
    for name, value in (("XDG_STATE_HOME", state), ("XDG_CONFIG_HOME", config)):
        if value is not None:
            plain_env.setenv(name, value)
    assert dirs.state_dir() == platformdirs.user_state_dir(dirs.APP)
    assert dirs.config_dir() == platformdirs.user_config_dir(dirs.APP)
    assert dirs.config_file() == os.path.join(platformdirs.user_config_dir(dirs.APP), "config.toml")
    assert str(paths.state_dir()) == dirs.state_dir()


@pytest.mark.skipif(sys.platform != "linux", reason="the simple rule is Linux's")
def test_the_simple_rule_answers_without_platformdirs(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv("XDG_STATE_HOME", "/xdg/state")
    assert dirs._xdg("XDG_STATE_HOME", ".local/state") == "/xdg/state/interactive-slurm"
    assert dirs._xdg("XDG_CONFIG_HOME", ".config") == "/home/ada/.config/interactive-slurm"
    plain_env.setenv("XDG_CONFIG_HOME", "relative")
    assert dirs._xdg("XDG_CONFIG_HOME", ".config") is None  # platformdirs decides
    plain_env.setenv("HOME", "not/absolute")
    assert dirs._xdg("XDG_STATE_HOME", ".local/state") is None


def test_the_override_puts_everything_under_one_folder(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv(dirs.HOME_ENV, "/tmp/is-home/../is-home")
    assert dirs.state_dir() == "/tmp/is-home/state"
    assert dirs.jobs_dir() == "/tmp/is-home/state/jobs"
    assert dirs.endpoint_file("12") == "/tmp/is-home/state/jobs/12/endpoint.json"
    assert dirs.config_file() == "/tmp/is-home/config/config.toml"
    plain_env.setenv(dirs.CONFIG_ENV, "/etc/is.toml")
    assert dirs.config_file() == "/etc/is.toml"
    assert [str(p) for p in paths.trusted_paths()] == list(dirs.trusted_paths())
