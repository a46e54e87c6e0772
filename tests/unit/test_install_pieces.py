"""The cluster install made from this laptop: wheels rebuilt from installed distributions,
installs.py's layout (install, switch, prune, half-made installs), and the small programs setup
runs on the login node (run here with this machine's python3 and a temporary HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from interactive_slurm.base.runner import SubprocessRunner
from interactive_slurm.install import installs
from interactive_slurm.laptop import remote_scripts, wheels


@pytest.mark.parametrize(("spec", "py", "ok"), [
    (None, (3, 9), True),
    (">=3.9", (3, 9), True),
    (">=3.10", (3, 9), False),
    (">=3.8,!=3.9.*", (3, 9), False),
    (">=3.8,!=3.9.*", (3, 10), True),
    ("<3.13,>=3.9", (3, 13), False),
    ("~=3.9", (3, 12), True),
    ("==3.9.*", (3, 9), True),
    (">3.9", (3, 9), False),  # only the minor version is known: 3.9 is not above 3.9
    ("not a specifier", (3, 9), True),  # as pip does: an unreadable one excludes nothing
])
def test_requires_python(spec: str | None, py: tuple[int, int], ok: bool) -> None:
    assert wheels.python_ok(spec, py) is ok


@pytest.mark.parametrize(("marker", "py", "applies"), [
    ('python_version < "3.11"', (3, 9), True),
    ('python_version < "3.11"', (3, 11), False),
    ('extra == "laptop"', (3, 11), False),
    ('platform_system == "Windows"', (3, 11), False),
    ('sys_platform == "win32" or python_version < "3.10"', (3, 9), True),
    ('python_version < "3.10" and extra == "test"', (3, 9), False),
    ('(os_name == "posix" and implementation_name == "cpython") or extra == "x"', (3, 9), True),
])
def test_markers_for_a_linux_cluster(marker: str, py: tuple[int, int], applies: bool) -> None:
    assert wheels.marker_applies(marker, py) is applies


@pytest.mark.parametrize("marker", ['platform_machine == "x86_64"', 'python_full_version >= "3.9.1"',
                                    "python_version <"])
def test_markers_this_laptop_cannot_answer_for_the_cluster_are_errors(marker: str) -> None:
    with pytest.raises(wheels.WheelError, match="cannot evaluate the requirement marker"):
        wheels.marker_applies(marker, (3, 11))


def test_cluster_distributions_leave_out_the_laptop_extra() -> None:
    names = [canonicalize_name(n) for n in wheels.cluster_distributions((3, 9))]
    assert names[0] == "interactive-slurm"
    assert {"click", "platformdirs", "tomli-w", "tomli"} <= set(names)
    assert "asyncssh" not in names and "cryptography" not in names
    assert "tomli" not in [canonicalize_name(n) for n in wheels.cluster_distributions((3, 11))]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[wheels.Built]]:
    dest = tmp_path_factory.mktemp("wheels")
    py = (sys.version_info[0], sys.version_info[1])
    return dest, wheels.build_all(SubprocessRunner(), dest, py)


def test_repacked_wheels_are_complete_and_recorded(built: tuple[Path, list[wheels.Built]]) -> None:
    _, made = built
    names = {canonicalize_name(b.name) for b in made}
    assert {"interactive-slurm", "click", "platformdirs", "tomli-w", "pip"} <= names
    ours = next(b for b in made if b.name == "interactive-slurm")
    assert ours.how == "repacked"
    with zipfile.ZipFile(ours.path) as zf:
        files = zf.namelist()
        record = zf.read(next(f for f in files if f.endswith(".dist-info/RECORD"))).decode()
    assert "interactive_slurm/install/installs.py" in files
    assert "interactive_slurm/profiles/default.toml" in files
    assert not [f for f in files if f.endswith(".pyc") or f.startswith("..")]
    for name in files:
        if not name.endswith("RECORD"):
            assert f"{name},sha256=" in record
    info = [i for i, f in enumerate(files) if ".dist-info/" in f]
    assert info == list(range(len(files) - len(info), len(files)))  # the .dist-info folder last


def test_the_same_install_makes_the_same_wheels(built: tuple[Path, list[wheels.Built]],
                                                tmp_path: Path) -> None:
    _, made = built
    again = wheels.build_all(SubprocessRunner(), tmp_path, (sys.version_info[0], sys.version_info[1]))
    assert [b.path.read_bytes() for b in again] == [b.path.read_bytes() for b in made]


def test_install_switch_again_and_prune(built: tuple[Path, list[wheels.Built]], tmp_path: Path) -> None:
    dest, made = built
    root = tmp_path / "root"
    vid = installs.version_id("0.1.0", [b.path for b in made])
    summary = installs.install_and_switch(root, dest, vid)
    assert summary["id"] == vid and installs.current(root) == vid
    script = root / "current" / "bin" / "interactive-slurm"
    out = subprocess.run([str(script), "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert "interactive-slurm, version" in out
    # The lean console script: isolated (-I), and without site where the venv allows it.
    first, header = script.read_text().splitlines()[:2]
    assert first == f"#!{root / 'versions' / vid / 'bin' / 'python'} -IS"
    assert header == installs.LAUNCHER_HEADER
    assert script.stat().st_mode & 0o111
    # ... and it knows its venv as site would have told it (the updater finds its root by it).
    setup = script.read_text().split("from interactive_slurm.entry import main")[0]
    code = setup + "import interactive_slurm.install.installs as i; print(sys.prefix, i.root_of(sys.prefix))"
    out = subprocess.run([str(root / "versions" / vid / "bin" / "python"), "-IS", "-c", code],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(root / "versions" / vid), str(root)]
    assert (root / "lock").stat().st_mode & 0o777 == 0o600
    assert root.stat().st_mode & 0o777 == 0o700
    mtime = (root / "versions" / vid / installs.COMPLETE).stat().st_mtime
    installs.install_and_switch(root, dest, vid)  # the same wheels: nothing is made again
    assert (root / "versions" / vid / installs.COMPLETE).stat().st_mtime == mtime
    # Older installs beyond three go, the current one and protected ones stay; half-made go too.
    for n in range(4):
        fake = root / "versions" / f"0.0.{n}-x"
        fake.mkdir()
        (fake / installs.COMPLETE).write_text("x")
        os.utime(fake / installs.COMPLETE, (n, n))
    (root / "versions" / "0.0.9-half").mkdir()
    with installs.locked(root):
        removed = installs.prune(root, protect={"0.0.0-x"})
    assert sorted(removed) == ["0.0.1-x"]
    left = sorted(p.name for p in (root / "versions").iterdir())
    assert left == ["0.0.0-x", "0.0.2-x", "0.0.3-x", vid]


def test_a_failed_install_leaves_current_and_no_half_made_dir(
        built: tuple[Path, list[wheels.Built]], tmp_path: Path) -> None:
    dest, made = built
    root = tmp_path / "root"
    vid = installs.version_id("0.1.0", [b.path for b in made])
    installs.install_and_switch(root, dest, vid)
    only_pip = tmp_path / "only-pip"
    only_pip.mkdir()
    pip = next(b.path for b in made if b.name == "pip")
    (only_pip / pip.name).write_bytes(pip.read_bytes())
    with pytest.raises(installs.InstallError, match=r"installing interactive-slurm into .*failed"):
        installs.install_and_switch(root, only_pip, "9.9.9-broken")
    assert installs.current(root) == vid
    assert not (root / "versions" / "9.9.9-broken").exists()


def test_installs_runs_standalone_from_stdin(built: tuple[Path, list[wheels.Built]], tmp_path: Path) -> None:
    """What setup does over SSH: `python3 - install ROOT WHEELS ID` with the file on stdin."""
    dest, made = built
    vid = installs.version_id("0.1.0", [b.path for b in made])
    source = Path(installs.__file__).read_text()
    proc = subprocess.run([sys.executable, "-I", "-", "install", str(tmp_path / "r"), str(dest), vid],
                          input=source, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == vid
    bad = subprocess.run([sys.executable, "-I", "-", "install", str(tmp_path / "r"), str(dest), "../x"],
                         input=source, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and json.loads(bad.stdout) == {"error": "invalid install id '../x'"}


def run_remote(program: str, *args: str, home: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-I", "-c", program, *args], capture_output=True, text=True,
                          env={"HOME": str(home), "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk4a6kOgCjA1B6ZCfO3W5lQd4Y4bqNH8yQ3eEw6f8Xv me@laptop"


def test_authorize_appends_once_with_private_modes(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    assert run_remote(remote_scripts.AUTHORIZE, KEY, home=home)["added"] is True
    assert run_remote(remote_scripts.AUTHORIZE, KEY, home=home)["added"] is False
    ak = home / ".ssh" / "authorized_keys"
    assert ak.read_text() == KEY + "\n"
    assert (home / ".ssh").stat().st_mode & 0o777 == 0o700 and ak.stat().st_mode & 0o777 == 0o600


def test_authorize_keeps_other_lines_and_fixes_group_write(tmp_path: Path) -> None:
    home = tmp_path / "h"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    ak = home / ".ssh" / "authorized_keys"
    ak.write_text('from="10.0.0.0/8" ssh-ed25519 AAAAother other')  # no final newline
    ak.chmod(0o664)
    run_remote(remote_scripts.AUTHORIZE, KEY, home=home)
    assert ak.read_text() == f'from="10.0.0.0/8" ssh-ed25519 AAAAother other\n{KEY}\n'
    assert ak.stat().st_mode & 0o777 == 0o644
    # The same key with options in front counts as present.
    ak.write_text(f'no-pty {KEY}\n')
    assert run_remote(remote_scripts.AUTHORIZE, KEY, home=home)["added"] is False


def test_probe_reports_python_root_and_access(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    data = run_remote(remote_scripts.PROBE, sys.executable, "~/inst", KEY, "", "0", "0", home=home)
    space = data.pop("space")
    assert data == {"python": list(sys.version_info[:2]), "executable": sys.executable,
                    "home": str(home), "root": str(home / "inst"), "authorized": False,
                    "current": None, "folders": []}
    assert isinstance(space, dict) and space["free"] > 0


def test_uninstall_program_removes_only_an_install(tmp_path: Path) -> None:
    other = tmp_path / "not-an-install"
    other.mkdir()
    proc = subprocess.run([sys.executable, "-I", "-c", remote_scripts.UNINSTALL, str(other)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "does not look like an interactive-slurm install" in proc.stdout
    assert other.exists()


@pytest.mark.parametrize(("queue", "removed"), [
    ("12 vscode-remote-cpu\n13 myjob\n", False),
    ("13 myjob\n", True),
    ("", True),
])
def test_uninstall_program_leaves_an_install_that_sessions_run_from(
    tmp_path: Path, queue: str, removed: bool,
) -> None:
    """Issue 20: --remove-install stranded running sessions (neither reachable nor cancellable)."""
    root = tmp_path / "inst"
    (root / "versions" / "0.1.0-a").mkdir(parents=True)
    (root / "current").symlink_to("versions/0.1.0-a")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\nprintf '%s' '{queue}'\n")
    squeue.chmod(0o755)
    proc = subprocess.run([sys.executable, "-I", "-c", remote_scripts.UNINSTALL, str(root)],
                          capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert root.exists() is not removed
    if not removed:
        assert proc.returncode == 1
        assert f"sessions still run from {root} (job 12)" in proc.stdout
        assert "remote cancel --all --yes" in proc.stdout


def test_a_dependency_too_new_for_the_clusters_python_is_downloaded_for_it(tmp_path: Path) -> None:
    """click 8.2+ needs Python 3.10: for a 3.9 cluster, pip download picks one that runs there."""
    from importlib import metadata

    from .fakes import FakeRunner, Reply, fail

    needs = metadata.distribution("click").metadata["Requires-Python"]
    py = (3, 9) if not wheels.python_ok(needs, (3, 9)) else (3, 0)

    def download(argv: tuple[str, ...], _input: str | None) -> Reply:
        # click, and pip too where this pip is also too new for ``py`` (a Python 3.9 laptop
        # has click 8.1, so ``py`` is 3.0 there).
        dest = Path(argv[argv.index("--dest") + 1])
        name = "click-8.1.8" if argv[-1] == "click" else f"{argv[-1]}-1.0"
        (dest / f"{name}-py3-none-any.whl").write_bytes(b"PK")
        return Reply()

    runner = FakeRunner({sys.executable: download})
    [made] = wheels.build_all(runner, tmp_path, py, names=["click"])[:1]
    assert made.how == "downloaded" and made.path.name == "click-8.1.8-py3-none-any.whl"
    argv = runner.argvs(sys.executable)[0]
    assert argv[argv.index("--python-version") + 1] == f"{py[0]}.{py[1]}"
    assert "--only-binary=:all:" in argv and "--no-deps" in argv
    # No network on this laptop either: the error names the package and the Python.
    offline = FakeRunner({sys.executable: fail("ERROR: Could not find a version (no network)")})
    with pytest.raises(wheels.WheelError, match=r"click: no wheel for the cluster's Python 3\.\d+ here"):
        wheels.build_all(offline, tmp_path / "none", py, names=["click"])
