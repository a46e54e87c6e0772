"""setup's one look at the login node (laptop/probe.py, remote_scripts.PROBE_SH): the cluster's
Python found by itself (issue 22, item 3) and the home directory's room for VS Code's server
(issue 19).

The probe is a POSIX sh script; here it runs for real under /bin/sh with a PATH of stand-ins
(a "python3" that answers like Python 3.6 and runs nothing else, the real interpreter as
"python3.11") and a login shell whose profile defines `module` as Lmod does. What it prints goes
through the same checks as a login node's answer. The end-to-end tests (tests/e2e/
test_setup_probe.py) do the same through real test login nodes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interactive_slurm.base.errors import ConfigError
from interactive_slurm.laptop import changes, clusters, jsonc, probe, remote_scripts, setup
from interactive_slurm.laptop.probe import Folder, Probe, SetupError, Space

from .test_setup_plan import request

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4a6kOgCjA1B6ZCfO3W5lQd4Y4bqNH8yQ3eEw6f8Xv me@laptop"
REAL = os.path.realpath(sys.executable)
MARK = remote_scripts.MARK

#: A stand-in for RHEL 8's /usr/bin/python3: answers the version check as Python 3.6.8 would,
#: and runs nothing else (a probe or an install that used it would fail loudly).
OLD_PYTHON = """#!/bin/sh
case "$1" in
    -V|--version) echo "Python 3.6.8"; exit 0 ;;
    -c) case "$2" in *version_info*) echo "3.6.8"; exit 0 ;; esac ;;
esac
echo "python3: a stand-in for Python 3.6.8 that runs nothing else" >&2
exit 1
"""

#: Lmod's `module`, as far as the probe uses it: `module load NAME` prepends NAME's bin folder.
MODULE_FUNCTION = """
module() {
    [ "$1" = load ] || return 1
    if [ -d "{modules}/$2/bin" ]; then PATH="{modules}/$2/bin:$PATH"; export PATH
    else echo "Lmod has detected the following error: unknown module $2" >&2; return 1
    fi
}
echo "Welcome to the test cluster"   # a chatty profile: its output must not confuse the probe
"""


class Node:
    """A login node made of folders: ``bin`` is its PATH, ``home`` its home directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.home = root / "home"
        self.modules = root / "modules"
        self.bin.mkdir()
        self.home.mkdir()
        self.env: dict[str, str] = {"HOME": str(self.home), "SHELL": "/bin/bash",
                                    "PATH": str(self.bin)}

    def old_python3(self) -> None:
        script = self.bin / "python3"
        script.write_text(OLD_PYTHON)
        script.chmod(0o755)

    def link(self, name: str, folder: Path | None = None) -> None:
        folder = folder or self.bin
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(REAL)

    def module(self, name: str) -> None:
        """A module NAME that puts the real Python on PATH as python3 (like a python/3.11 one)."""
        self.link("python3", self.modules / name / "bin")
        (self.home / ".bash_profile").write_text(
            MODULE_FUNCTION.replace("{modules}", str(self.modules)))

    def probe(self, *, python: str = "", vscode_dir: str = "", tight: bool = False,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = probe.argv("~/inst", KEY, python or None, vscode_dir or None)
        if tight:  # every home is "tight" against these thresholds
            argv[-2:] = [str(2**62), str(2**62)]
        return subprocess.run(argv, input=remote_scripts.PROBE_SH, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=120)

    def found(self, **kw: Any) -> Probe:
        result = self.probe(**kw)
        return probe.interpret(result.stdout, "login", kw.get("python") or None,
                               exit_status=result.returncode, stderr=result.stderr)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


# --- the interpreter ------------------------------------------------------------------------------

def test_a_usable_python3_is_taken_as_it_always_was(node: Node) -> None:
    node.link("python3")
    found = node.found()
    assert found.executable == str(node.bin / "python3") and found.python == sys.version_info[:2]
    assert [c.name for c in found.candidates] == ["python3"]  # nothing else asked
    assert probe.choice(found) == f"cluster Python: {node.bin / 'python3'} (Python " \
        f"{'.'.join(map(str, sys.version_info[:3]))})"
    assert found.home == str(node.home) and found.root == str(node.home / "inst")
    assert found.authorized is False and found.current is None


def test_an_old_python3_makes_it_take_python3_x_and_say_why(node: Node) -> None:
    node.old_python3()
    node.link("python3.11")
    found = node.found()
    assert found.executable == str(node.bin / "python3.11")
    assert [(c.name, c.version) for c in found.candidates] == [
        ("python3", (3, 6, 8)), ("python3.13", None), ("python3.12", None),
        ("python3.11", tuple(sys.version_info[:3]))]
    said = probe.choice(found)
    assert said.startswith(f"cluster Python: {node.bin / 'python3.11'} (Python 3.")
    assert said.endswith(f", python3.11 on the login PATH); passed over: python3 is 3.6.8 at "
                         f"{node.bin / 'python3'}; python3.13, python3.12 not found")


def test_without_a_python3_x_the_login_shells_module_is_used(node: Node) -> None:
    node.old_python3()
    node.module("python3")
    found = node.found()
    assert found.executable == str(node.modules / "python3" / "bin" / "python3")
    assert found.module == "found"
    said = probe.choice(found)
    assert ", from `module load python3`, runs without the module loaded); passed over: " \
        "python3 is 3.6.8 at " in said


def test_module_load_python_is_tried_after_python3(node: Node) -> None:
    node.old_python3()
    node.module("python")
    found = node.found()
    assert found.executable == str(node.modules / "python" / "bin" / "python3")
    assert next(c.describe() for c in found.candidates if c.how == "module") == \
        "`module load python3` gives no python"


def test_with_nothing_usable_one_line_lists_what_was_found(node: Node) -> None:
    node.old_python3()
    with pytest.raises(SetupError) as info:
        node.found()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no Python 3.9 or newer on login: python3 is 3.6.8 at ")
    assert "python3.13, python3.12, python3.11, python3.10, python3.9 not found" in message
    assert "no `module` command in the login shell" in message
    assert "--python" in message and "module load" in message


def test_a_module_that_gives_nothing_is_said_so(node: Node) -> None:
    node.old_python3()
    (node.home / ".bash_profile").write_text(MODULE_FUNCTION.replace("{modules}", str(node.modules)))
    with pytest.raises(SetupError, match="`module load python3`, `module load python` gives no python"):
        node.found()


def test_a_login_shell_that_is_not_sh_like_is_not_asked(node: Node) -> None:
    node.old_python3()
    with pytest.raises(SetupError, match="no sh-like login shell to try `module load` in"):
        node.found(env={"SHELL": "/bin/tcsh"})


def test_an_explicit_python_wins_even_over_a_usable_python3(node: Node) -> None:
    node.link("python3")
    node.link("python3.11")
    found = node.found(python="python3.11")
    assert found.executable == str(node.bin / "python3.11")
    assert [c.how for c in found.candidates] == ["explicit"]
    assert probe.choice(found).endswith(", from --python python3.11)")


@pytest.mark.parametrize(("python", "message"), [
    ("python3", r"--python python3: python3 is 3.6.8 at .*/bin/python3 on login; "
                "interactive-slurm needs Python 3.9 or newer"),
    ("python3.12", "--python python3.12: not found on login's PATH"),
])
def test_an_explicit_python_that_does_not_do_says_so(node: Node, python: str, message: str) -> None:
    node.old_python3()
    node.link("python3.11")
    with pytest.raises(SetupError, match=message):
        node.found(python=python)


def test_a_path_entry_with_a_tab_is_never_reported(node: Node) -> None:
    odd = node.root / "odd\tdir"
    node.link("python3", odd)
    node.old_python3()
    node.env["PATH"] = f"{odd}:{node.bin}"
    with pytest.raises(SetupError) as info:
        node.found()
    # The odd one (first on PATH) is neither taken nor printed.
    assert "login: python3, python3.13, " in str(info.value) and "odd" not in str(info.value)


def test_the_version_check_is_old_python_syntax() -> None:
    """It must answer on Python 3.6 (RHEL 8) and even 2.7: a single-argument print() and
    nothing newer; the probe itself runs only on the 3.9+ one, yet keeps 3.6 syntax."""
    ast.parse(remote_scripts.VERSION_CHECK, feature_version=(3, 4))
    ast.parse(remote_scripts.PROBE, feature_version=(3, 6))
    assert "print(" in remote_scripts.VERSION_CHECK and "f\"" not in remote_scripts.VERSION_CHECK


# --- the home directory and the scratch folders -----------------------------------------------

def test_the_home_directorys_room_is_measured(node: Node) -> None:
    node.link("python3")
    found = node.found()
    st = os.statvfs(node.home)
    assert found.space is not None and abs(found.space.free - st.f_bavail * st.f_frsize) < 2**30
    assert found.folders == ()  # home is not tight: no scratch folder looked at


def test_a_tight_home_reports_the_users_scratch_folders(node: Node, tmp_path: Path) -> None:
    node.link("python3")
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    shared = tmp_path / "work"
    shared.mkdir()
    shared.chmod(0o777)
    found = node.found(tight=True, env={"SCRATCH": str(scratch), "WORK": str(shared)})
    assert [(f.name, f.path, f.exists, f.is_dir, f.mine, f.shared) for f in found.folders] == [
        ("$SCRATCH", str(scratch), True, True, True, False),
        ("$WORK", str(shared), True, True, True, True)]
    assert found.folders[0].space is not None


def test_scratch_set_only_by_the_login_profile_is_found(node: Node, tmp_path: Path) -> None:
    node.link("python3")
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    (node.home / ".bash_profile").write_text(f"export SCRATCH={scratch}\necho hello\n")
    found = node.found(tight=True)
    assert [f.path for f in found.folders] == [str(scratch)]


def test_an_asked_folder_is_looked_at(node: Node, tmp_path: Path) -> None:
    node.link("python3")
    found = node.found(vscode_dir=str(tmp_path / "missing"))
    assert [(f.name, f.exists) for f in found.folders] == [("--vscode-server-dir", False)]


# --- hostile answers ----------------------------------------------------------------------------------

GOOD_JSON = {"python": [3, 11], "executable": "/usr/bin/python3.11", "home": "/home/a",
             "root": "/home/a/is", "authorized": True, "current": None,
             "space": {"free": 2**40, "inodes": 10**7}, "folders": []}


def answer(*lines: str, data: dict[str, Any] | None = None) -> str:
    out = list(lines)
    if data is not None:
        out.append(json.dumps(data))
    return "\n".join(out) + "\n"


def line(*fields: str) -> str:
    return "\t".join([MARK, *fields])


OLD = line("python", "path", "python3", "/usr/bin/python3", "3.6.8")
NEW = line("python", "path", "python3.11", "/usr/bin/python3.11", "3.11.2")


def test_a_plain_answer_is_taken_and_login_noise_ignored() -> None:
    found = probe.interpret(answer("Welcome!", OLD, line("python", "path", "python3.13", "", ""),
                                   NEW, data=GOOD_JSON), "login", None)
    assert found.executable == "/usr/bin/python3.11" and len(found.candidates) == 3


@pytest.mark.parametrize(("text", "named"), [
    (answer(line("python", "path", "-oProxyCommand=x", "/usr/bin/x", "3.11.2"), data=GOOD_JSON),
     "not an interpreter it was asked about"),
    (answer(line("python", "path", "python3.11", "/usr/bin/py\x1b]0;x\x07", "3.11.2"), data=GOOD_JSON),
     r"answered the path of python3.11 = '/usr/bin/py\x1b]0;x\x07'"),
    (answer(line("python", "path", "python3.11", "/usr/bin/python3.11", "3.11.2; rm"), data=GOOD_JSON),
     "expected MAJOR.MINOR.MICRO"),
    (answer(line("python", "module", "python3", "/x", "3.11.2", "extra"), data=GOOD_JSON),
     "not a line of setup's probe"),
    (answer(line("module", "maybe", "", "", ""), data=GOOD_JSON), "not a line of setup's probe"),
    (answer(*[OLD] * 40), "more than 32 interpreters"),
    (answer(OLD, NEW, data={**GOOD_JSON, "executable": "/usr/bin/python3"}),
     "which is not the 3.9+ interpreter it reported finding"),
    (answer(OLD, NEW, data={**GOOD_JSON, "python": [3, 12]}),
     "which is not the 3.9+ interpreter it reported finding"),
    (answer(data=GOOD_JSON), "which is not the 3.9+ interpreter it reported finding"),
    (answer(NEW, data={**GOOD_JSON, "executable": "-AY"}), "answered executable = '-AY'"),
    (answer(NEW, data={**GOOD_JSON, "space": {"free": -1, "inodes": 3}}), "answered space = "),
    (answer(NEW, data={**GOOD_JSON, "space": {"free": True, "inodes": 3}}), "answered space = "),
    (answer(NEW, data={**GOOD_JSON, "folders": [{"name": "$HOME", "path": "/x", "exists": True}]}),
     "not one it was asked about"),
    (answer(NEW, data={**GOOD_JSON, "folders": [{"name": "--vscode-server-dir", "path": "/x y",
                                                  "exists": True}]}),
     "answered --vscode-server-dir = '/x y'"),
    (answer(NEW, data={**GOOD_JSON, "folders": [{"name": "$SCRATCH", "path": "/x",
                                                  "exists": "yes"}]}), "expected exists, dir"),
    (answer(NEW, data={**GOOD_JSON, "folders": [{"name": "$SCRATCH", "path": "/x"}] * 4}),
     "expected a short list"),
    (answer(NEW, "{not json"), "not JSON"),
])
def test_every_hostile_answer_is_refused_printably(text: str, named: str) -> None:
    with pytest.raises(SetupError) as info:
        probe.interpret(text, "login.example.org", None)
    assert named in str(info.value)
    assert str(info.value).isprintable()


def test_an_odd_scratch_path_is_shown_escaped_and_never_used() -> None:
    folder = {"name": "$SCRATCH", "path": "/x y\x1b]0;t\x07", "exists": True, "dir": True,
              "mine": True, "shared": False, "space": None}
    found = probe.interpret(answer(NEW, data={**GOOD_JSON, "folders": [folder],
                                              "space": {"free": 1, "inodes": 1}}), "login", None)
    chosen = probe.server_dir(found, None, "", "login")
    assert chosen.path is None and chosen.warnings[0].isprintable()
    assert "$SCRATCH = '/x y\\x1b]0;t\\x07' has characters setup does not write" in chosen.warnings[0]


def test_a_failed_probe_says_so_with_its_last_line() -> None:
    with pytest.raises(SetupError, match=r"setup's probe failed \(exit 1\): PermissionError: x"):
        probe.interpret(answer(NEW), "login", None, exit_status=1, stderr="Traceback\nPermissionError: x\n")


# --- where VS Code's server goes ---------------------------------------------------------------------

ROOMY = Space(50 * 2**30, 5_000_000)
TIGHT = Space(300 * 2**20, 4_000)


def found_with(space: Space | None, *folders: Folder) -> Probe:
    return Probe((3, 11), "/home/a", "/home/a/is", True, None, executable="/usr/bin/python3.11",
                 space=space, folders=folders)


def scratch(name: str = "$SCRATCH", path: str = "/scratch/a", **kw: Any) -> Folder:
    values: dict[str, Any] = dict(exists=True, is_dir=True, mine=True, shared=False, space=ROOMY)
    values.update(kw)
    return Folder(name, path, **values)


def test_thresholds() -> None:
    assert not ROOMY.tight and TIGHT.tight
    assert Space(probe.TIGHT_BYTES - 1, None).tight and not Space(probe.TIGHT_BYTES, None).tight
    assert Space(10 * 2**30, probe.TIGHT_INODES - 1).tight
    assert TIGHT.describe() == "300 MiB and 4,000 files" and ROOMY.describe().startswith("50.0 GiB")


def test_a_roomy_home_keeps_vscodes_default() -> None:
    assert probe.server_dir(found_with(ROOMY, scratch()), None, "", "login") == probe.ServerDir(None)
    assert probe.server_dir(found_with(None), None, "", "login") == probe.ServerDir(None)


def test_a_tight_home_uses_the_users_scratch_and_says_so() -> None:
    chosen = probe.server_dir(found_with(TIGHT, scratch()), None, "", "login")
    assert chosen.path == "/scratch/a" and not chosen.warnings
    assert chosen.said[0].startswith("your home on login has 300 MiB and 4,000 files free, too "
                                     "little for VS Code's server")
    assert "$SCRATCH = /scratch/a" in chosen.said[0] and "--vscode-server-dir" in chosen.said[0]


@pytest.mark.parametrize(("folder", "why"), [
    (scratch(exists=False), "$SCRATCH = /scratch/a does not exist"),
    (scratch(mine=False), "$SCRATCH = /scratch/a is not yours"),
    (scratch(shared=True), "$SCRATCH = /scratch/a can be written by others"),
    (scratch(is_dir=False), "$SCRATCH = /scratch/a is not a folder"),
    (scratch(space=TIGHT), "$SCRATCH = /scratch/a has only 300 MiB and 4,000 files free"),
])
def test_a_tight_home_without_a_fitting_scratch_warns(folder: Folder, why: str) -> None:
    chosen = probe.server_dir(found_with(TIGHT, folder), None, "", "login")
    assert chosen.path is None and not chosen.said
    assert "pass --vscode-server-dir DIR" in chosen.warnings[0] and why in chosen.warnings[0]


def test_the_second_variable_is_taken_when_the_first_does_not_fit() -> None:
    chosen = probe.server_dir(found_with(TIGHT, scratch(mine=False), scratch("$WORK", "/work/a")),
                              None, "", "login")
    assert chosen.path == "/work/a"


def test_no_scratch_variables_are_named_in_the_warning() -> None:
    chosen = probe.server_dir(found_with(TIGHT), None, "", "login")
    assert chosen.warnings[0].endswith("$SCRATCH and $WORK are not set there")


def test_an_asked_folder_wins_and_must_be_the_users_own() -> None:
    asked = scratch("--vscode-server-dir", "/proj/a")
    assert probe.server_dir(found_with(ROOMY, asked), "/proj/a", "", "login").path == "/proj/a"
    missing = probe.server_dir(found_with(ROOMY, scratch("--vscode-server-dir", "/p", exists=False)),
                               "/p", "", "login")
    assert missing.path == "/p" and "VS Code makes the folder" in missing.said[0]
    for bad, why in ((scratch("--vscode-server-dir", "/p", mine=False), "is not yours"),
                     (scratch("--vscode-server-dir", "/p", shared=True), "can be written by others"),
                     (scratch("--vscode-server-dir", "/p", is_dir=False), "is not a folder")):
        with pytest.raises(SetupError, match=f"--vscode-server-dir /p {why}"):
            probe.server_dir(found_with(ROOMY, bad), "/p", "", "login")


def test_an_earlier_choice_is_kept_until_home_is_asked_for() -> None:
    assert probe.server_dir(found_with(ROOMY), None, "/scratch/a", "login").path == "/scratch/a"
    home = probe.server_dir(found_with(TIGHT, scratch()), "~", "/scratch/a", "login")
    assert home.path is None and "in your home" in home.said[0]


# --- the request and the local files --------------------------------------------------------------------

@pytest.fixture
def laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "laptop"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "Code" / "User").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("VSCODE_APPDATA", raising=False)
    return home




@pytest.mark.parametrize(("kw", "message"), [
    ({"vscode_server_dir": "relative"}, "--vscode-server-dir 'relative': expected an absolute path"),
    ({"vscode_server_dir": "/scratch/../etc"}, "--vscode-server-dir"),
    ({"vscode_server_dir": "/s\x1b[2J"}, r"--vscode-server-dir '/s\\x1b\[2J'"),
    ({"vscode_server_dir": "/s", "vscode": False}, "not with --no-vscode"),
    ({"python": "-oProxyCommand=x"}, "--python"),
])
def test_the_request_checks_the_new_options(laptop: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        request(laptop, **kw)
    assert request(laptop, vscode_server_dir="~").vscode_server_dir == "~"


SETTINGS = '{\n    // mine\n    "editor.fontSize": 14,\n}\n'


def plan(req: setup.Request, **kw: Any) -> list[changes.Change]:
    report = setup.Report()
    planned = setup.plan_files(req, clusters.load(), tool="/home/alice/is/current/bin/interactive-slurm",
                               install_root="/home/alice/is", ca_line=None, report=report, **kw)
    setup.apply_all(planned, report)
    return planned


def test_setup_writes_the_server_path_and_the_interpreter_and_uninstall_undoes_it(
        laptop: Path) -> None:
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    settings.write_text(SETTINGS)
    plan(request(laptop), python="/usr/bin/python3.11", server_dir="/scratch/alice")
    written = jsonc.loads(settings.read_text())
    assert written["remote.SSH.serverInstallPath"] == {"slurm-cpu": "/scratch/alice",
                                                       "slurm-gpu": "/scratch/alice"}
    cluster = clusters.named(clusters.load(), "slurm")
    assert cluster is not None and cluster.python == "/usr/bin/python3.11"
    assert cluster.vscode_server == "/scratch/alice"
    assert setup.describe(cluster)["vscode_server"] == "/scratch/alice"
    # Again without an answer: the earlier folder is kept, nothing changes.
    assert not [c for c in plan(request(laptop), python="/usr/bin/python3.11",
                                server_dir="/scratch/alice") if c.changed]
    _, undo = setup.plan_uninstall("slurm")
    setup.apply_all(undo, setup.Report())
    assert settings.read_text() == SETTINGS


def test_home_again_takes_the_path_out_and_forgets_it(laptop: Path) -> None:
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    settings.write_text(SETTINGS)
    plan(request(laptop), python="/usr/bin/python3", server_dir="/scratch/alice")
    plan(request(laptop, vscode_server_dir="~"), python="/usr/bin/python3", server_dir=None)
    assert "serverInstallPath" not in settings.read_text()
    cluster = clusters.named(clusters.load(), "slurm")
    assert cluster is not None and cluster.vscode_server == ""


def test_a_users_own_server_path_is_kept_and_said(laptop: Path) -> None:
    settings = laptop / ".config" / "Code" / "User" / "settings.json"
    mine = '{\n    "remote.SSH.serverInstallPath": {"slurm-cpu": "/mine"}\n}\n'
    settings.write_text(mine)
    report = setup.Report()
    planned = setup.plan_files(request(laptop), (), tool="/t", install_root="/r", ca_line=None,
                               report=report, server_dir="/scratch/alice")
    assert any("sets remote.SSH.serverInstallPath for slurm-cpu to '/mine' already; left as it is"
               in m for m in report.manual)
    setup.apply_all(planned, report)
    _, undo = setup.plan_uninstall("slurm")
    setup.apply_all(undo, setup.Report())
    assert settings.read_text() == mine
