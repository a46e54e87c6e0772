"""The guard in front of a web app that has no login of its own (TensorBoard, code-server).

It listens on the app's public unix socket (in a 0700 folder of the user) and lets a connection
through to the app only when the connection's first request carries the app's token:

- ``?token=TOKEN`` on a GET or HEAD: answered with a redirect to the same page without the token
  and a cookie that holds it (``HttpOnly``, ``SameSite=Lax``), so the token leaves the address bar
  and the browser's later requests (pages, assets, websockets) carry the cookie;
- the cookie, or ``Authorization: token TOKEN``: the request and everything after it on this
  connection go to the app unchanged (one connection is one client: the laptop's forward opens
  one channel per browser connection);
- anything else: ``403``, and the connection is closed.

:func:`decide` is the whole policy, a pure function of the request's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

#: The most a request's head may take (request line and headers).
MAX_HEAD = 32 * 1024
#: Seconds a connection has to send its first request's head.
HEAD_TIMEOUT = 30.0
CHUNK = 64 * 1024

PASS, REDIRECT, DENY, BAD = "pass", "redirect", "deny", "bad"


@dataclass(frozen=True)
class Decision:
    action: str          # PASS, REDIRECT, DENY or BAD
    location: str = ""   # REDIRECT: where to


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def cookie_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """The values of cookie ``name`` in every ``Cookie`` header."""
    found = []
    for key, value in headers:
        if key != "cookie":
            continue
        for part in value.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                found.append(v.strip().strip('"'))
    return found


def decide(head: bytes, token: str, cookie: str) -> Decision:
    """What to do with a connection whose first request's head is ``head``."""
    try:
        text = head.decode("latin-1")
        first, *rest = text.split("\r\n")
        method, target, version = first.split(" ")
    except ValueError:
        return Decision(BAD)
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        return Decision(BAD)
    headers = []
    for line in rest:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            return Decision(BAD)
        headers.append((key.strip().lower(), value.strip()))
    parts = urlsplit(target)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "token"]
    with_token = bool(given) and all(_same(v, token) for v in given)
    if with_token and method in ("GET", "HEAD"):
        others = [(k, v) for k, v in query if k != "token"]
        return Decision(REDIRECT, parts.path + (f"?{urlencode(others)}" if others else ""))
    auth = [v for k, v in headers if k == "authorization"]
    if (with_token or any(_same(v, token) for v in cookie_values(headers, cookie))
            or any(_same(v, f"token {token}") for v in auth)):
        return Decision(PASS)
    return Decision(DENY)


def _response(status: str, body: str, extra: tuple[str, ...] = ()) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(data)}", "Cache-Control: no-store", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def redirect_response(location: str, token: str, cookie: str) -> bytes:
    return _response("302 Found", "", (
        f"Location: {location}",
        f"Set-Cookie: {cookie}={token}; Path=/; HttpOnly; SameSite=Lax",
    ))


DENIED = _response("403 Forbidden", "interactive-slurm: this app needs its token: open the URL "
                                     "that `interactive-slurm open` (or `remote app start`) printed\n")
BAD_REQUEST = _response("400 Bad Request", "interactive-slurm: not an HTTP/1 request\n")
NO_APP = _response("502 Bad Gateway", "interactive-slurm: the app does not answer (yet)\n")

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side (it may still answer)."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class Guard:
    """One app's guard: :meth:`handle` is the unix server's connection callback."""

    def __init__(self, token: str, cookie: str, connect: Connect) -> None:
        self.token, self.cookie, self.connect = token, cookie, connect

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            decision = decide(head, self.token, self.cookie)
            if decision.action != PASS:
                writer.write({REDIRECT: redirect_response(decision.location, self.token, self.cookie),
                              DENY: DENIED}.get(decision.action, BAD_REQUEST))
                await writer.drain()
                return
            try:
                app_reader, upstream = await self.connect()
            except OSError:
                writer.write(NO_APP)
                await writer.drain()
                return
            upstream.write(head)
            await asyncio.gather(_pipe(reader, upstream), _pipe(app_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await w.wait_closed()


async def start(path: str, guard: Guard) -> asyncio.AbstractServer:
    """Serve ``guard`` on the unix socket ``path`` (its folder is the user's, 0700)."""
    return await asyncio.start_unix_server(guard.handle, path=path, limit=MAX_HEAD)
