"""The user's host CA and per-job host certificates.

The CA key pair is made once, on first use, in ``<state>/hostca`` (0700; key 0600). Each session
signs its fresh host key for the principals ``<kind>.interactive-slurm`` and
``job<id>.interactive-slurm``; clients trust ``@cert-authority *.interactive-slurm <CA key>`` with
``StrictHostKeyChecking yes``, so a process that grabs a session's port cannot pass as it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
import time
from pathlib import Path

from interactive_slurm.base import folders
from interactive_slurm.base.errors import InteractiveSlurmError, UnsafePathError
from interactive_slurm.base.fsutil import (
    check_private,
    check_secure,
    check_secure_if_exists,
    write_private_atomic,
)
from interactive_slurm.base.runner import Runner

DOMAIN = "interactive-slurm"
PATTERN = f"*.{DOMAIN}"
MARKER = "@cert-authority"


def kind_alias(kind: str) -> str:
    return f"{kind}.{DOMAIN}"


def job_alias(job_id: str) -> str:
    return f"job{job_id}.{DOMAIN}"


def ca_key() -> Path:
    return Path(folders.hostca_dir()) / "ca"


def ensure_ca(runner: Runner) -> Path:
    """The CA private key, made now if there is none (race-free between concurrent sessions)."""
    final = Path(folders.hostca_dir())
    if not (final / "ca.pub").exists():
        folders.ensure_private_dir(final.parent)
        tmp = Path(tempfile.mkdtemp(prefix=".hostca-", dir=final.parent))
        try:
            runner.run([
                "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "ca"),
                "-C", f"interactive-slurm host CA of {getpass.getuser()}",
            ])
            os.chmod(tmp / "ca", 0o600)  # explicit modes, whatever the umask
            os.chmod(tmp / "ca.pub", 0o644)
            try:
                os.rename(tmp, final)  # atomic; fails if another session won the race
            except OSError:
                if not (final / "ca.pub").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    check_secure(final)
    check_private(os.stat(final), final, UnsafePathError)
    check_private(os.stat(final / "ca"), final / "ca", UnsafePathError)
    return final / "ca"


def ca_public_key(runner: Runner) -> str:
    return (ensure_ca(runner).with_suffix(".pub")).read_text().strip()


def sign_host_key(
    runner: Runner, host_pub: Path, *, job_id: str, kind: str, valid_seconds: int
) -> Path:
    """Certify ``host_pub``; returns the ``*-cert.pub`` path next to it."""
    ca = ensure_ca(runner)
    runner.run([
        "ssh-keygen", "-q", "-s", str(ca), "-h",
        "-I", f"interactive-slurm job {job_id}",
        "-n", f"{kind_alias(kind)},{job_alias(job_id)}",
        "-V", f"-5m:+{max(valid_seconds, 60) + 600}s",
        str(host_pub),
    ])
    cert = host_pub.with_name(host_pub.name[: -len(".pub")] + "-cert.pub")
    if not cert.exists():
        raise InteractiveSlurmError(f"ssh-keygen wrote no certificate next to {host_pub}")
    return cert


def key_blob(line: str) -> str:
    """The base64 key of a ``type blob [comment]`` or ``host type blob`` line ("" if none)."""
    fields = line.split()
    for i, field in enumerate(fields[:-1]):
        if field.startswith(("ssh-", "ecdsa-", "sk-")):
            return fields[i + 1]
    return ""


def scan_keys(runner: Runner, host: str, port: int, *, certs: bool = False) -> set[str]:
    """Ed25519 key blobs the sshd at host:port offers (``certs``: its certificates instead).

    One connection per try (``-t ed25519``); an empty answer is tried again, since a busy sshd
    may drop unauthenticated connections (MaxStartups).
    """
    argv = ["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", str(port)]
    if certs:
        argv.append("-c")
    blobs: set[str] = set()
    for attempt in range(3):
        result = runner.run([*argv, host], check=False, timeout=15)
        lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
        blobs = {key_blob(line) for line in lines} - {""}
        if blobs:
            break
        time.sleep(0.2 * (attempt + 1))
    return blobs


def known_hosts_line(ca_pub: str) -> str:
    return f"{MARKER} {PATTERN} {ca_pub}"


def merge_known_hosts(existing: str, line: str) -> str:
    """``existing`` with our CA line replaced (or added); other lines are kept as they are."""
    kept = [
        row for row in existing.splitlines()
        if not (row.startswith(MARKER) and row.split()[1:2] == [PATTERN])
    ]
    return "\n".join([*kept, line]) + "\n"


def write_known_hosts(path: Path, line: str) -> None:
    folders.ensure_private_dir(path.parent)
    existing = path.read_text() if check_secure_if_exists(path) else ""
    merged = merge_known_hosts(existing, line)
    if merged != existing:
        write_private_atomic(path, merged, mode=0o600)
