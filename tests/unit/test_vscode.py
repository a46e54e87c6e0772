"""laptop/vscode.py: where the settings files are, and what plan/unplan do to their text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interactive_slurm.base.errors import InteractiveSlurmError
from interactive_slurm.laptop import jsonc, vscode

HOSTS = ["slurm-cpu", "slurm-gpu"]
OURS_4 = (
    '    "remote.SSH.connectTimeout": 600,\n'
    '    "remote.SSH.remotePlatform": {\n'
    '        "slurm-cpu": "linux",\n'
    '        "slurm-gpu": "linux"\n'
    "    },\n"
    '    "remote.SSH.showLoginTerminal": true'
)

# (settings.json before, exact text after plan(HOSTS, 600))
PLAN_CASES = [
    pytest.param("", "{\n" + OURS_4 + "\n}\n", id="empty-file"),
    pytest.param("{}", "{\n" + OURS_4 + "\n}", id="empty-object"),
    pytest.param(
        '{\n    // my font\n    "editor.fontSize": 14, /* x */\n    "files.exclude": {"*.pyc": true,},\n}\n',
        '{\n    // my font\n    "editor.fontSize": 14, /* x */\n    "files.exclude": {"*.pyc": true,},\n'
        + OURS_4
        + ",\n}\n",
        id="comments-and-trailing-commas",
    ),
    pytest.param(
        '{\n    "url": "http://x//y /* z */ \\"q\\"" // real comment\n}',
        '{\n    "url": "http://x//y /* z */ \\"q\\"", // real comment\n' + OURS_4 + "\n}",
        id="strings-that-look-like-comments",
    ),
    pytest.param(
        '{\r\n\t"a": 1,\r\n\t"remote.SSH.remotePlatform": {\r\n\t\t"mac": "macOS" // mine\r\n\t}\r\n}\r\n',
        '{\r\n\t"a": 1,\r\n\t"remote.SSH.remotePlatform": {\r\n\t\t"mac": "macOS", // mine\r\n'
        '\t\t"slurm-cpu": "linux",\r\n\t\t"slurm-gpu": "linux"\r\n\t},\r\n'
        '\t"remote.SSH.connectTimeout": 600,\r\n\t"remote.SSH.showLoginTerminal": true\r\n}\r\n',
        id="crlf-tabs-merge-remotePlatform",
    ),
    pytest.param(
        '{\n  "remote.SSH.connectTimeout": 1800,\n  "remote.SSH.remotePlatform": {"slurm-cpu": "windows"},\n'
        '  "remote.SSH.showLoginTerminal": false\n}',
        '{\n  "remote.SSH.connectTimeout": 1800,\n'
        '  "remote.SSH.remotePlatform": {"slurm-cpu": "linux", "slurm-gpu": "linux"},\n'
        '  "remote.SSH.showLoginTerminal": true\n}',
        id="values-replaced-larger-timeout-kept",
    ),
    pytest.param(
        '{\n  "remote.SSH.connectTimeout": 15 // too short\n}',
        '{\n  "remote.SSH.connectTimeout": 600, // too short\n'
        '  "remote.SSH.remotePlatform": {\n    "slurm-cpu": "linux",\n    "slurm-gpu": "linux"\n  },\n'
        '  "remote.SSH.showLoginTerminal": true\n}',
        id="smaller-timeout-raised",
    ),
]


@pytest.mark.parametrize(("before", "after"), PLAN_CASES)
def test_plan_exact(before: str, after: str) -> None:
    assert vscode.plan(before, HOSTS, 600) == after


@pytest.mark.parametrize(("before", "after"), PLAN_CASES)
def test_plan_is_idempotent(before: str, after: str) -> None:
    assert vscode.plan(after, HOSTS, 600) == after


TYPICAL = [
    "{}",
    '{\n    "editor.fontSize": 14\n}\n',
    '{\n    // comment\n    "editor.fontSize": 14, /* block */\n    "x": [1, 2,],\n}\n',
    '{\r\n\t"a": "b" // c\r\n}\r\n',
    '{\n  "remote.SSH.remotePlatform": {\n    "mac": "macOS"\n  }\n}',
    '{"remote.SSH.remotePlatform": {"mac": "macOS"}, "b": 2}',
    "{\n    // only a comment\n}\n",
]


@pytest.mark.parametrize("text", TYPICAL)
def test_unplan_undoes_plan(text: str) -> None:
    planned = vscode.plan(text, HOSTS, 600)
    assert planned != text
    assert vscode.unplan(planned, HOSTS, remove_globals=True, connect_timeout=600) == text


def test_unplan_without_globals_leaves_them() -> None:
    planned = vscode.plan('{\n    "a": 1\n}', HOSTS, 600)
    assert vscode.unplan(planned, HOSTS, remove_globals=False) == (
        '{\n    "a": 1,\n    "remote.SSH.connectTimeout": 600,\n    "remote.SSH.showLoginTerminal": true\n}'
    )


def test_unplan_keeps_what_the_user_changed() -> None:
    text = (
        '{\n    "remote.SSH.connectTimeout": 900,\n'
        '    "remote.SSH.remotePlatform": {"slurm-cpu": "linux", "mine": "linux"},\n'
        '    "remote.SSH.showLoginTerminal": true\n}'
    )
    assert vscode.unplan(text, HOSTS, remove_globals=True, connect_timeout=600) == (
        '{\n    "remote.SSH.connectTimeout": 900,\n    "remote.SSH.remotePlatform": {"mine": "linux"}\n}'
    )


def test_plan_then_unplan_of_other_hosts_only() -> None:
    first = vscode.plan("{}", ["slurm-cpu"], 600)
    both = vscode.plan(first, ["hpc2-cpu"], 600)
    assert json.loads(both)["remote.SSH.remotePlatform"] == {"slurm-cpu": "linux", "hpc2-cpu": "linux"}
    assert vscode.unplan(both, ["hpc2-cpu"], remove_globals=False) == first


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n    "a": 1,\n    "b" 2\n}', "expected ':', found '2' at line 3 column 9"),
        ('{"a": 1', "expected ',' or '}', found the end of the text"),
        ("[]", "the top-level value is not an object"),
        ('{"a": "no end}', "a string that is never closed"),
        ('{"a": 1} /* open', "a /* comment that is never closed"),
        (
            '{"remote.SSH.showLoginTerminal": true, "remote.SSH.showLogin\\u0054erminal": true}',
            'the key "remote.SSH.showLoginTerminal" appears 2 times',
        ),
        ('{"remote.SSH": {"connectTimeout": 60}}', '"remote.SSH" also sets "remote.SSH.connectTimeout"'),
        ('{"remote": {"SSH": {}}}', '"remote" also sets'),
        ('{"remote.SSH.remotePlatform": "linux"}', "is not an object of host: platform"),
    ],
)
def test_unsafe_files_raise_and_change_nothing(text: str, message: str) -> None:
    original = text
    for call in (
        lambda: vscode.plan(text, HOSTS, 600),
        lambda: vscode.unplan(text, HOSTS, remove_globals=True, connect_timeout=600),
    ):
        with pytest.raises(vscode.VSCodeSettingsError) as info:
            call()
        assert message in str(info.value)
        assert str(info.value).startswith("cannot edit the VS Code settings safely: ")
        assert isinstance(info.value, InteractiveSlurmError)
    assert text == original


def test_plan_rejects_a_bad_timeout() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        vscode.plan("{}", HOSTS, 0)


def test_manual_snippet_is_what_plan_writes() -> None:
    snippet = vscode.manual_snippet(HOSTS, 600)
    assert snippet == "{\n" + OURS_4 + "\n}"
    assert jsonc.loads(vscode.plan("", HOSTS, 600)) == json.loads(snippet)



# --- remote.SSH.serverInstallPath (issue 19): VS Code's server where it fits -------------------

SIP = "remote.SSH.serverInstallPath"


def test_plan_writes_server_install_path_for_our_hosts_only_when_asked() -> None:
    assert SIP not in vscode.plan("{}", HOSTS, 600)
    planned = vscode.plan("{}", HOSTS, 600, server_dir="/scratch/alice")
    assert planned == "{\n" + OURS_4 + (',\n    "remote.SSH.serverInstallPath": {\n'
                                        '        "slurm-cpu": "/scratch/alice",\n'
                                        '        "slurm-gpu": "/scratch/alice"\n    }\n}')
    assert vscode.plan(planned, HOSTS, 600, server_dir="/scratch/alice",
                       previous_server_dir="/scratch/alice") == planned
    assert jsonc.loads(planned) == json.loads(vscode.manual_snippet(HOSTS, 600,
                                                                    server_dir="/scratch/alice"))


@pytest.mark.parametrize("text", [
    *TYPICAL, '{\n    "remote.SSH.serverInstallPath": {\n        "other": "/data" // mine\n    }\n}\n',
])
def test_unplan_takes_the_server_path_out_byte_for_byte(text: str) -> None:
    planned = vscode.plan(text, HOSTS, 600, server_dir="/scratch/alice")
    assert jsonc.loads(planned)[SIP]["slurm-cpu"] == "/scratch/alice"
    assert vscode.unplan(planned, HOSTS, remove_globals=True, connect_timeout=600,
                         server_dir="/scratch/alice") == text


def test_a_path_the_user_set_is_kept_and_named() -> None:
    mine = '{\n    "remote.SSH.serverInstallPath": {"slurm-cpu": "/mine"}\n}'
    planned = vscode.plan(mine, HOSTS, 600, server_dir="/scratch/alice")
    assert jsonc.loads(planned)[SIP] == {"slurm-cpu": "/mine", "slurm-gpu": "/scratch/alice"}
    assert vscode.own_server_paths(mine, HOSTS, "/scratch/alice", None) == {"slurm-cpu": "/mine"}
    # Uninstall takes out only setup's value; the user's stays.
    out = vscode.unplan(planned, HOSTS, remove_globals=True, connect_timeout=600,
                        server_dir="/scratch/alice")
    assert out == mine
    # ... also when the user changed setup's value since.
    changed = planned.replace('"slurm-gpu": "/scratch/alice"', '"slurm-gpu": "/elsewhere"')
    assert jsonc.loads(vscode.unplan(changed, HOSTS, remove_globals=True, connect_timeout=600,
                                     server_dir="/scratch/alice"))[SIP] == {
        "slurm-cpu": "/mine", "slurm-gpu": "/elsewhere"}


def test_a_new_folder_replaces_setups_old_one_and_none_takes_it_out() -> None:
    first = vscode.plan("{}", HOSTS, 600, server_dir="/scratch/a")
    moved = vscode.plan(first, HOSTS, 600, server_dir="/work/a", previous_server_dir="/scratch/a")
    assert jsonc.loads(moved)[SIP] == {"slurm-cpu": "/work/a", "slurm-gpu": "/work/a"}
    assert vscode.own_server_paths(first, HOSTS, "/work/a", "/scratch/a") == {}
    home = vscode.plan(moved, HOSTS, 600, server_dir=None, previous_server_dir="/work/a")
    assert home == vscode.plan("{}", HOSTS, 600)


def test_a_server_install_path_that_is_not_an_object_is_not_edited() -> None:
    with pytest.raises(vscode.VSCodeSettingsError, match="not an object of host: path"):
        vscode.plan('{"remote.SSH.serverInstallPath": "/x"}', HOSTS, 600, server_dir="/s")


def _user_dirs(root: Path, products: list[str]) -> None:
    for product in products:
        (root / product / "User").mkdir(parents=True)


@pytest.mark.parametrize(
    ("system", "root", "env"),
    [
        ("Linux", ".config", {}),
        ("Linux", "xdg", {"XDG_CONFIG_HOME": "{home}/xdg"}),
        ("Darwin", "Library/Application Support", {}),
        ("Windows", "AppData/Roaming", {"APPDATA": "{home}/AppData/Roaming"}),
        ("Windows", "AppData/Roaming", {}),
        ("Linux", "portable", {"VSCODE_APPDATA": "{home}/portable"}),
    ],
)
def test_settings_files(tmp_path: Path, system: str, root: str, env: dict[str, str]) -> None:
    home = tmp_path / "home"
    _user_dirs(home / root, ["Code", "VSCodium", "Cursor"])
    (home / root / "Code - Insiders").mkdir()  # no User folder: not a usable install
    (home / root / "Sublime").mkdir()
    filled = {key: value.format(home=home) for key, value in env.items()}
    assert vscode.settings_files(system, home, filled) == [
        ("Code", home / root / "Code" / "User" / "settings.json"),
        ("VSCodium", home / root / "VSCodium" / "User" / "settings.json"),
        ("Cursor", home / root / "Cursor" / "User" / "settings.json"),
    ]


def test_settings_files_none_installed(tmp_path: Path) -> None:
    assert vscode.settings_files("Darwin", tmp_path, {}) == []


def test_settings_files_all_products(tmp_path: Path) -> None:
    _user_dirs(tmp_path / ".config", list(vscode.PRODUCTS))
    found = vscode.settings_files("Linux", tmp_path, {"XDG_CONFIG_HOME": "relative/ignored"})
    assert [product for product, _ in found] == ["Code", "Code - Insiders", "VSCodium", "Cursor"]
    assert found[1][1] == tmp_path / ".config" / "Code - Insiders" / "User" / "settings.json"
