"""Issue 19 (its web apps): `interactive-slurm open` runs real Jupyter Notebook, JupyterLab and
TensorBoard (from PyPI: scripts/test-apps installs them with `pip install --user`, as a user
would) inside the session's job on the local cluster, forwards them to this machine (the
"laptop" here) through the managed ssh host, and Debian's headless Chromium, run as the test
user, loads them through the forward.

What is checked: the printed URL answers with the token and refuses without it; the second
user (isother) can reach neither the app's socket nor TensorBoard's port (it has none on the
node's network) and gets 403 at the forward without the token; the token is on no command
line; two apps at once over one master connection; stopping an app frees its socket; Ctrl-C on
`open` stops the app (not with --keep); cancelling the job ends the app. The screenshots are
kept under ARTIFACTS (printed by the tests).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import REQUIRED, TOOL, Harness, LoginNode, as_other, my_jobs, wait_for
from .test_multiplex import (
    mux,  # noqa: F401 - the shared (ControlMaster) host entries
    record,
    sshd_children,
)
from .test_setup import Laptop, laptop  # noqa: F401 - a fresh laptop home (the fixture)

ARTIFACTS = Path(os.environ.get("INTERACTIVE_SLURM_ARTIFACTS")
                 or "/tmp/interactive-slurm-artifacts") / "apps"
USER_BIN = Path.home() / ".local" / "bin"
APPS = {"jupyter": "jupyter-notebook", "lab": "jupyter-lab", "tensorboard": "tensorboard"}


@pytest.fixture(scope="module")
def web_apps() -> None:
    missing = [str(USER_BIN / exe) for exe in APPS.values() if not (USER_BIN / exe).exists()]
    if shutil.which("chromium") is None:
        missing.append("chromium")
    if missing:
        message = f"missing {', '.join(missing)}: run scripts/test-apps (scripts/test does)"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@dataclass
class Opened:
    """A running `interactive-slurm open`: its URL (stdout) and what it said (stderr)."""

    proc: subprocess.Popen[str]
    url: str = ""
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    said: list[str] = field(default_factory=list)

    def wait_url(self, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"open exited {self.proc.returncode}: {self.stderr()}")
            try:
                self.url = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no URL within {timeout} s: {self.stderr()}") from None
        return self.url

    def stderr(self) -> str:
        return "".join(self.said)

    def interrupt(self, timeout: float = 120) -> int:
        """Ctrl-C, as a user ends it."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)


def open_app(h: Harness, app: str, *args: str) -> Opened:
    proc = subprocess.Popen([str(TOOL), "open", app, "-F", str(h.ssh_config), "--no-browser", *args],
                            env=h.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    opened = Opened(proc)

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            opened.lines.put(line.strip())

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            opened.said.append(line)

    for target in (read_out, read_err):
        threading.Thread(target=target, daemon=True).start()
    return opened


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    """One GET (no redirect followed)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                      resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def without_token(url: str) -> str:
    return url.split("?", 1)[0]


def records(h: Harness) -> dict[str, dict[str, object]]:
    folder = h.home / "state" / "jobs"
    found = {}
    for path in folder.glob("*/apps/*.json"):
        data = json.loads(path.read_text())
        found[data["name"]] = {**data, "_path": str(path)}
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that init has not reaped yet has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def app_pid(rec: dict[str, object]) -> int:
    return int(Path(str(rec["runtime"]), "app.pid").read_text().split()[0])


def chromium(url: str, out_dir: Path, name: str) -> tuple[str, Path]:
    """Headless Chromium as the test user (its own sandbox, no --no-sandbox): the page's DOM
    after its scripts ran, and a screenshot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = out_dir / f".chromium-{name}"
    common = ["chromium", "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={profile}", "--virtual-time-budget=20000",
              "--window-size=1280,800"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, f"chromium --dump-dom failed: {dom.stderr[-2000:]}"
    shot = out_dir / f"{name}.png"
    shot.unlink(missing_ok=True)
    taken = subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, text=True,
                           timeout=180)
    assert taken.returncode == 0 and shot.exists(), f"no screenshot: {taken.stderr[-2000:]}"
    shutil.rmtree(profile, ignore_errors=True)
    return dom.stdout, shot


def announce(capsys: pytest.CaptureFixture[str], what: str) -> None:
    with capsys.disabled():
        print(f"\n[test artifact] {what}")


def other_connects_unix(path: str) -> str:
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1]); print('CONNECTED')\n"
            "except OSError as e: print(type(e).__name__)")
    return as_other("python3", "-c", code, path, timeout=60).stdout.strip()


def other_connects_tcp(port: int) -> str:
    code = ("import socket,sys\n"
            "try:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5); print('CONNECTED')\n"
            "except OSError as e: print(type(e).__name__)")
    return as_other("python3", "-c", code, str(port), timeout=60).stdout.strip()


def other_gets(url: str) -> str:
    code = ("import urllib.request,urllib.error,sys\n"
            "try: print(urllib.request.urlopen(sys.argv[1], timeout=30).status)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n"
            "except OSError as e: print(type(e).__name__)")
    return as_other("python3", "-c", code, url, timeout=60).stdout.strip()


def token_on_a_command_line(token: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def tcp_listeners(pid: int) -> list[str]:
    """The TCP ports process ``pid`` and what it started listen on in the node's network."""
    inodes = set()
    for proc in [pid, *_below(pid)]:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{proc}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.append(f"{table}: {fields[1]}")
    return found


def _below(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(text.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out


@pytest.fixture
def shots(capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    announce(capsys, f"screenshots of the web-app tests go to {ARTIFACTS}")
    yield ARTIFACTS


def test_open_jupyter_gives_a_private_url_that_chromium_loads(
    harness: Harness, web_apps: None, other_user: None, shots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = harness
    # A recipe of the user's own whose program is missing: one line, the recipe's hint.
    h.write_file(h.home / "config" / "apps" / "nothere.toml", (
        'description = "missing"\npackage = "nothere (PyPI)"\n'
        'install = "pip install --user nothere, or module load nothere"\n'
        'listen = "unix"\ncommand = ["no-such-app-xyz", "--socket={socket}"]\n'
        'token = "env"\nready = "/"\n[env]\nNOTHERE_TOKEN = "{token}"\n'))
    (h.home / "config" / "apps").chmod(0o700)
    missing = h.tool("open", "nothere", "-F", str(h.ssh_config), "--no-browser", check=False)
    assert missing.returncode == 1
    assert ("error: no-such-app-xyz not found on the compute node (" in missing.stderr
            and "): pip install --user nothere, or module load nothere" in missing.stderr), missing.stderr
    [job] = [j["id"] for j in my_jobs()]  # the session that started for it stays for jupyter

    opened = open_app(h, "jupyter")
    try:
        url = opened.wait_url()
        assert url.startswith("http://127.0.0.1:") and "/tree?token=" in url
        said = opened.stderr()
        assert f"jupyter started in job {job}" in said, said
        base = url.split("/tree", 1)[0]
        token = url.split("token=", 1)[1]

        # The URL with its token: the notebook UI; without it: the login page, and the API 403.
        page = get(url)
        assert page.status == 200 and "Jupyter" in page.body
        assert get(without_token(url)).status == 302
        assert "/login" in get(without_token(url)).headers["location"]
        assert get(f"{base}/api/contents?token={token}").status == 200
        assert get(f"{base}/api/contents").status == 403
        assert other_gets(f"{base}/api/contents") == "403"

        # In the job: the record (0600, in a 0700 folder), the socket in a 0700 folder of the
        # user that the other user cannot enter, the token on no command line.
        rec = records(h)["jupyter"]
        assert stat.S_IMODE(os.stat(str(rec["_path"])).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(str(rec["_path"])).parent).st_mode) == 0o700
        sock = str(rec["socket"])
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(Path(sock).parent).st_mode) == 0o700
        assert other_connects_unix(sock) == "PermissionError"
        assert token_on_a_command_line(token) == []
        assert rec["token"] == token and rec["job_id"] == job
        assert tcp_listeners(app_pid(rec)) == []  # Jupyter listens on its socket only

        # Headless Chromium through the forward: the notebook's file browser.
        dom, shot = chromium(url, shots, "jupyter-notebook")
        announce(capsys, f"screenshot of Jupyter Notebook through the forward: {shot}")
        assert "<title>Home</title>" in dom and "jp-DirListing" in dom, dom[:2000]
        assert shot.stat().st_size > 10_000

        supervisor, app = int(rec["pid"]), app_pid(rec)  # type: ignore[call-overload]
        assert alive(supervisor) and alive(app)
        # Ctrl-C: the forward goes and the app stops (no --keep).
        assert opened.interrupt() == 0, opened.stderr()
        assert "stopped jupyter in job" in opened.stderr()
        wait_for(lambda: not alive(supervisor) and not alive(app), 30, "jupyter to stop")
        assert not Path(sock).exists() and "jupyter" not in records(h)
        assert not _listens(base)  # the forward is gone too
    finally:
        if opened.proc.poll() is None:
            opened.proc.kill()


def _listens(base: str) -> bool:
    try:
        get(f"{base}/")
    except OSError:
        return False
    return True


def test_two_apps_at_once_over_one_master_then_stop_and_cancel(
    mux: Harness, web_apps: None, other_user: None, shots: Path, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = mux
    logs = tmp_path / "runs"
    logs.mkdir()
    job = h.ssh("slurm-cpu", "echo $SLURM_JOB_ID").stdout.strip()  # the master and the session
    lab = open_app(h, "lab", "--keep")
    board = open_app(h, "tensorboard", "--keep", "--workdir", str(logs))
    try:
        lab_url, board_url = lab.wait_url(), board.wait_url()
        assert [j["id"] for j in my_jobs()] == [job]  # both in the one session's job
        apps = records(h)
        assert set(apps) == {"lab", "tensorboard"}
        # Everything rode the master: the session still serves its one connection.
        assert len(sshd_children(int(record(h)["session_pid"]))) == 1  # type: ignore[call-overload]

        # JupyterLab, in Chromium through the forward (which rides the master).
        assert get(lab_url).status == 200
        dom, shot = chromium(lab_url, shots, "jupyterlab")
        announce(capsys, f"screenshot of JupyterLab through the forward: {shot}")
        assert "<title>JupyterLab</title>" in dom and "jp-LabShell" in dom, dom[:2000]

        # TensorBoard has no login: the guard asks for the token, then a cookie carries it.
        first = get(board_url)
        assert first.status == 302 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"].split(";", 1)[0]
        assert "HttpOnly" in first.headers["set-cookie"]
        page = get(without_token(board_url), {"Cookie": cookie})
        assert page.status == 200 and "TensorBoard" in page.body
        assert get(without_token(board_url)).status == 403
        assert other_gets(without_token(board_url)) == "403"
        dom, shot = chromium(board_url, shots, "tensorboard")
        announce(capsys, f"screenshot of TensorBoard through the forward: {shot}")
        assert "tf-tensorboard" in dom or "TensorBoard" in dom, dom[:2000]

        # TensorBoard's port is in its own network: nobody on the node reaches it, not even
        # the user outside the app's namespace; its socket's folder is closed to others.
        tb = apps["tensorboard"]
        assert int(tb["port"]) > 0  # type: ignore[call-overload]
        assert other_connects_tcp(int(tb["port"])) == "ConnectionRefusedError"  # type: ignore[call-overload]
        assert other_connects_unix(str(tb["socket"])) == "PermissionError"
        assert tcp_listeners(app_pid(tb)) == []  # none in the node's network
        assert token_on_a_command_line(str(tb["token"])) == []

        listing = h.remote("list").stdout
        assert "APPS" in listing and "lab,tensorboard" in listing
        app_list = json.loads(h.remote("app", "list", "--json").stdout)
        assert {a["name"] for a in app_list} == {"lab", "tensorboard"}
        assert all("token" not in a and a["state"] == "running" for a in app_list)

        # Ctrl-C with --keep: the forward goes, the app stays.
        lab_sock = str(apps["lab"]["socket"])
        assert lab.interrupt() == 0, lab.stderr()
        assert Path(lab_sock).exists() and alive(int(apps["lab"]["pid"]))  # type: ignore[call-overload]

        # `remote app stop` (here: from outside the job, through the session) frees the socket.
        stopped = h.remote("app", "stop", "lab")
        assert f"stopped lab in job {job}" in stopped.stderr
        assert not Path(lab_sock).exists() and not Path(str(apps["lab"]["runtime"])).exists()
        assert not alive(int(apps["lab"]["pid"]))  # type: ignore[call-overload]
        assert set(records(h)) == {"tensorboard"}

        # Cancelling the job ends the app that is left.
        supervisor, app = int(tb["pid"]), app_pid(tb)  # type: ignore[call-overload]
        subprocess.run(["scancel", job], check=True)
        wait_for(lambda: not alive(supervisor) and not alive(app), 60, "tensorboard to end")
        assert not Path(str(tb["socket"])).exists()
        assert board.proc.wait(90) != 0  # its watch sees the app go
        assert "stopped answering" in board.stderr() or "ended" in board.stderr()
    finally:
        for opened in (lab, board):
            if opened.proc.poll() is None:
                opened.proc.kill()


def test_open_from_a_laptop_set_up_through_the_login_node(
    laptop: Laptop, login_node: LoginNode, web_apps: None,  # noqa: F811
) -> None:
    """The laptop's way: `setup` against the test login node, then `open lab` with the block it
    wrote (the login hop's shared connection, the session host's master, the install setup put
    on the cluster, which the session names to its shells)."""
    args = ["127.0.0.1", "--port", str(login_node.pw_port), "--user", laptop.env["USER"],
            "--install-dir", str(laptop.install), "--yes"]
    code, out = laptop.setup(*args, answers=[(r"password: ", login_node.password)])
    assert code == 0, out
    # As a terminal user's block (this test has no terminal): the masters persist.
    laptop.ssh_config.write_text(laptop.ssh_config.read_text().replace(' exec "test -t 2"', ""))
    tool = f"{laptop.install}/current/bin/interactive-slurm"
    shown = laptop.ssh("-o", "BatchMode=yes", "slurm-cpu", "echo $INTERACTIVE_SLURM_TOOL")
    assert shown.returncode == 0 and shown.stdout.strip() == tool, shown.stderr
    h = Harness(laptop.home, laptop.env, laptop.ssh_config)
    opened = open_app(h, "lab")
    try:
        url = opened.wait_url()
        page = get(url)
        assert page.status == 200 and "JupyterLab" in page.body
        assert get(without_token(url)).status == 302
        [job] = [j["id"] for j in my_jobs()]
        assert f"lab started in job {job}" in opened.stderr()
        assert opened.interrupt() == 0, opened.stderr()
        assert f"stopped lab in job {job}" in opened.stderr()
        assert not _listens(url.split("/lab", 1)[0])
    finally:
        if opened.proc.poll() is None:
            opened.proc.kill()
