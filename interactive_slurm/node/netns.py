"""A private network for an app that can only listen on TCP (TensorBoard): a new user and network
namespace of this process, with only a loopback interface.

In it, ``127.0.0.1:PORT`` is nobody else's: the other users of the node (and the user's own other
processes) cannot connect to the app at all; the app's guard, in the same namespace, reaches it
there and serves the outside world on a unix socket in a 0700 folder (paths of unix sockets are
shared by all network namespaces). The user's id and group are mapped to themselves, so files the
app writes are the user's as usual. The price: the app has no network beyond its loopback.

Needs unprivileged user namespaces (on by default in Debian, Ubuntu, RHEL 8+ and SUSE; a site
may turn them off with ``user.max_user_namespaces = 0``). Must run while the process has one
thread (before asyncio starts, before any thread).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from interactive_slurm.base.errors import AppError

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def enter_private_network() -> None:
    """Move this process into a new user + network namespace and bring its loopback up."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise AppError(
            f"cannot give the app a private network: unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: "
            f"{os.strerror(err)}. User namespaces may be off on this node "
            "(/proc/sys/user/max_user_namespaces); a TCP app is never started on a port other "
            "users of the node could reach: ask the admins, or use an app that listens on a unix "
            "socket")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            ifreq = struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, ifreq)
    except OSError as exc:
        raise AppError(f"cannot set up the app's private network: {exc}") from exc

