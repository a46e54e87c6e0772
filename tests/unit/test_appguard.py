"""node/appguard.py: the token check in front of an app without a login (the policy as a table,
then a real guard on a unix socket in front of a real little HTTP app), and node/appserve.py's
process handling on real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from interactive_slurm.base import httpprobe
from interactive_slurm.node import appguard
from interactive_slurm.node.appguard import BAD, DENY, PASS, REDIRECT, Decision

TOKEN = "a" * 48
COOKIE = "interactive-slurm-7-tensorboard"


def head(first: str, *headers: str) -> bytes:
    return ("\r\n".join([first, "Host: 127.0.0.1:8888", *headers]) + "\r\n\r\n").encode()


@pytest.mark.parametrize(("request_head", "decision"), [
    (head(f"GET /?token={TOKEN} HTTP/1.1"), Decision(REDIRECT, "/")),
    (head(f"GET /data/runs?token={TOKEN}&tag=loss HTTP/1.1"), Decision(REDIRECT, "/data/runs?tag=loss")),
    (head(f"HEAD /x?token={TOKEN} HTTP/1.0"), Decision(REDIRECT, "/x")),
    (head(f"POST /api?token={TOKEN} HTTP/1.1"), Decision(PASS)),
    (head("GET / HTTP/1.1", f"Cookie: other=1; {COOKIE}={TOKEN}"), Decision(PASS)),
    (head("GET / HTTP/1.1", f'Cookie: {COOKIE}="{TOKEN}"'), Decision(PASS)),
    (head("GET / HTTP/1.1", f"Authorization: token {TOKEN}"), Decision(PASS)),
    (head("GET / HTTP/1.1"), Decision(DENY)),
    (head("GET /?token=wrong HTTP/1.1"), Decision(DENY)),
    (head(f"GET /?token={TOKEN}&token=wrong HTTP/1.1"), Decision(DENY)),
    (head("GET / HTTP/1.1", f"Cookie: {COOKIE}=wrong"), Decision(DENY)),
    (head("GET / HTTP/1.1", f"Cookie: interactive-slurm-8-lab={TOKEN}"), Decision(DENY)),
    (head("GET / HTTP/1.1", f"Authorization: Bearer {TOKEN}"), Decision(DENY)),
    (head(f"GET http://evil/?token={TOKEN} HTTP/1.1"), Decision(BAD)),
    (head("GET / SSH-2.0"), Decision(BAD)),
    (b"\x16\x03\x01garbage\r\n\r\n", Decision(BAD)),
    (head("GET / HTTP/1.1", "no colon here"), Decision(BAD)),
])
def test_decide(request_head: bytes, decision: Decision) -> None:
    assert appguard.decide(request_head, TOKEN, COOKIE) == decision


APP = r"""
import socket, sys, os
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen()
while True:
    conn, _ = srv.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    body = b"app saw: " + data.split(b"\r\n")[0]
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    conn.close()
"""


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="isg-"))  # short: unix socket paths
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def exchange(path: str, raw: bytes) -> bytes:
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(raw)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_a_real_guard_in_front_of_a_real_app(folder: Path) -> None:
    app_sock, public = str(folder / "app.sock"), str(folder / "http.sock")
    app = subprocess.Popen([sys.executable, "-c", APP, app_sock])
    try:
        async def main() -> list[bytes]:
            async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_unix_connection(app_sock)

            server = await appguard.start(public, appguard.Guard(TOKEN, COOKIE, connect))
            loop = asyncio.get_running_loop()
            while not os.path.exists(app_sock):
                await asyncio.sleep(0.05)
            try:
                return [await loop.run_in_executor(None, exchange, public, raw) for raw in (
                    head("GET /runs HTTP/1.1"),
                    head(f"GET /runs?token={TOKEN} HTTP/1.1"),
                    head("GET /runs HTTP/1.1", f"Cookie: {COOKIE}={TOKEN}", "Connection: close"),
                    b"\x00" * 100 + b"\r\n\r\n",
                )] + [str(await loop.run_in_executor(
                    None, lambda: httpprobe.status(public, "/", headers={"Cookie": f"{COOKIE}={TOKEN}"})
                )).encode()]
            finally:
                server.close()

        denied, redirected, passed, bad, probed = asyncio.run(main())
    finally:
        app.kill()
        app.wait()
    assert denied.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"needs its token" in denied
    assert redirected.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"\r\nLocation: /runs\r\n" in redirected
    assert f"\r\nSet-Cookie: {COOKIE}={TOKEN}; Path=/; HttpOnly; SameSite=Lax\r\n".encode() in redirected
    assert passed.startswith(b"HTTP/1.1 200 OK") and passed.endswith(b"app saw: GET /runs HTTP/1.1")
    assert bad.startswith(b"HTTP/1.1 400 Bad Request")
    assert probed == b"200"


def test_no_app_behind_the_guard_is_a_502(folder: Path) -> None:
    public = str(folder / "http.sock")

    async def main() -> bytes:
        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_unix_connection(str(folder / "missing.sock"))

        server = await appguard.start(public, appguard.Guard(TOKEN, COOKIE, connect))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, exchange, public, head("GET / HTTP/1.1", f"Cookie: {COOKIE}={TOKEN}"))
        finally:
            server.close()

    assert asyncio.run(main()).startswith(b"HTTP/1.1 502 Bad Gateway")


SUPERVISOR = r"""
import os, subprocess, sys, time
from interactive_slurm.node import appserve
appserve.GRACE = 0.5
appserve.become_subreaper()
app = ("import signal, subprocess, time\n"
       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
       "k = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
       "print(k.pid, flush=True)\ntime.sleep(300)\n")
proc = subprocess.Popen([sys.executable, "-c", app], start_new_session=True, stdout=subprocess.PIPE)
kernel = int(proc.stdout.readline())
assert appserve.descendants(proc.pid) == [kernel]
start = time.monotonic()
appserve.stop_app(proc)
print(proc.returncode, os.path.exists(f"/proc/{kernel}"), appserve.descendants(os.getpid()),
      time.monotonic() - start < 5)
"""


def test_stop_app_ends_the_app_and_what_left_its_group() -> None:
    """The app ignores SIGTERM and its child left the group (as Jupyter's kernels do): after the
    grace both are killed and reaped by the supervisor, their subreaper (a real process tree)."""
    out = subprocess.run([sys.executable, "-c", SUPERVISOR], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(-signal.SIGKILL), "False", "[]", "True"]
