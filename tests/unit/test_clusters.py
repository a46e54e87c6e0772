"""laptop/clusters.py: the [clusters.NAME] tables of config.toml, and the one set of login rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from interactive_slurm.base import config, folders
from interactive_slurm.base.errors import ConfigError
from interactive_slurm.laptop import clusters
from interactive_slurm.laptop.clusters import Cluster

VALUES = {"login": '"login.example.org"', "user": '"alice"', "port": "2222", "jump": '"bob@gw.example.org"',
          "hosts": '["slurm-cpu", "slurm-gpu"]', "profile": '"big"'}


def table(**changed: str) -> str:
    values = {**VALUES, **changed}
    return 'default_profile = "development"\n\n[clusters.slurm]\n' + "".join(
        f"{key} = {value}\n" for key, value in values.items())


TABLE = table()


def write_config(text: str) -> Path:
    path = Path(folders.config_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_file_no_clusters() -> None:
    assert clusters.load() == ()


def test_a_table_is_read_and_the_rest_of_the_file_is_base_configs() -> None:
    write_config(TABLE)
    assert clusters.load() == (Cluster(name="slurm", login="login.example.org", user="alice", port=2222,
                                       jump="bob@gw.example.org", hosts=("slurm-cpu", "slurm-gpu"),
                                       profile="big"),)
    assert config.load().default_profile == "development"  # base accepts the key, leaves the tables
    assert clusters.named(clusters.load(), "slurm") is not None
    assert clusters.named(clusters.load(), "other") is None


def test_the_rest_of_the_file_is_still_checked() -> None:
    path = write_config("wait_timeout = 0\n" + TABLE)
    with pytest.raises(ConfigError, match=f"^{path}: wait_timeout = 0: expected seconds > 0$"):
        clusters.load()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("port", "0", "port 0: expected 1-65535"),
    ("port", "true", "port True: expected 1-65535"),
    ("login", '"-oProxyCommand=x"', "login host '-oProxyCommand=x': expected a host name or address"),
    ("user", '"a b"', "user 'a b': expected a login name"),
    ("jump", '"x;y"', r"jump host 'x;y': expected \[user@\]host\[:port\]\[,...\]"),
    ("hosts", '["a;b"]', "host alias 'a;b': expected a host name or address"),
    ("hosts", '"slurm-cpu"', "hosts = 'slurm-cpu': expected a list of strings"),
    ("identity", "3", "identity = 3: expected a string"),
    ("colour", '"red"', "colour = 'red': unknown key; valid keys: login, user, jump, identity, install, "
                        "python, profile, ssh_config, known_hosts, vscode_server, port, hosts, vscode, "
                        "vscode_globals, vscode_before"),
])
def test_errors_name_the_file_the_table_the_key_and_the_value(key: str, value: str, message: str) -> None:
    path = write_config(table(**{key: value}))
    with pytest.raises(ConfigError, match=f"^{path}: \\[clusters.slurm\\]: {message}$"):
        clusters.load()


def test_a_missing_login_and_a_bad_name() -> None:
    path = write_config('[clusters.slurm]\nuser = "alice"\n')
    with pytest.raises(ConfigError, match=r"\[clusters.slurm\]: login is missing"):
        clusters.load()
    write_config('[clusters."a/b"]\nlogin = "l"\nuser = "alice"\n')
    with pytest.raises(ConfigError, match=f"^{path}: \\[clusters.a/b\\]: cluster name 'a/b': use letters"):
        clusters.load()


def test_nothing_invalid_is_written() -> None:
    write_config(TABLE)
    with pytest.raises(ConfigError, match="user 'a b'"):
        clusters.render_update(lambda data: data["clusters"]["slurm"].__setitem__("user", "a b"))
    assert Path(folders.config_file()).read_text() == TABLE


def test_setup_options_and_the_tables_share_the_rules() -> None:
    clusters.check_login("slurm", "login.example.org", "alice", 22, None)
    with pytest.raises(ConfigError, match="port 70000: expected 1-65535"):
        clusters.check_login("slurm", "login.example.org", "alice", 70000, "")
