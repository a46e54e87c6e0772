"""folders.py: the config and state folders without platformdirs agree with platformdirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs
import pytest

from interactive_slurm.base import folders


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (folders.HOME_ENV, folders.CONFIG_ENV, "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/ada")
    monkeypatch.setattr(folders.os, "getuid", lambda: 1000)  # the simple rule is for users
    return monkeypatch


@pytest.mark.parametrize(("state", "config"), [
    (None, None), ("/xdg/state", "/xdg/config"), ("", ""), ("   ", "/c"), ("rel/state", "rel/cfg"),
])
def test_the_folders_are_platformdirs_own(plain_env: pytest.MonkeyPatch, state: str | None,
                                          config: str | None) -> None:
    for name, value in (("XDG_STATE_HOME", state), ("XDG_CONFIG_HOME", config)):
        if value is not None:
            plain_env.setenv(name, value)
    assert folders.state_dir() == platformdirs.user_state_dir(folders.APP)
    assert folders.config_dir() == platformdirs.user_config_dir(folders.APP)
    assert folders.config_file() == os.path.join(platformdirs.user_config_dir(folders.APP), "config.toml")
    assert str(Path(folders.state_dir())) == folders.state_dir()


@pytest.mark.skipif(sys.platform != "linux", reason="the simple rule is Linux's")
def test_the_simple_rule_answers_without_platformdirs(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv("XDG_STATE_HOME", "/xdg/state")
    assert folders._xdg("XDG_STATE_HOME", ".local/state") == "/xdg/state/interactive-slurm"
    assert folders._xdg("XDG_CONFIG_HOME", ".config") == "/home/ada/.config/interactive-slurm"
    plain_env.setenv("XDG_CONFIG_HOME", "relative")
    assert folders._xdg("XDG_CONFIG_HOME", ".config") is None  # platformdirs decides
    plain_env.setenv("HOME", "not/absolute")
    assert folders._xdg("XDG_STATE_HOME", ".local/state") is None


def test_the_override_puts_everything_under_one_folder(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv(folders.HOME_ENV, "/tmp/is-home/../is-home")
    assert folders.state_dir() == "/tmp/is-home/state"
    assert folders.jobs_dir() == "/tmp/is-home/state/jobs"
    assert folders.endpoint_file("12") == "/tmp/is-home/state/jobs/12/endpoint.json"
    assert folders.config_file() == "/tmp/is-home/config/config.toml"
    plain_env.setenv(folders.CONFIG_ENV, "/etc/is.toml")
    assert folders.config_file() == "/etc/is.toml"
    assert [str(p) for p in tuple(Path(p) for p in folders.trusted_paths())] == list(folders.trusted_paths())
