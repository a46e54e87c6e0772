"""The user's host CA and per-job host certificates.

The CA key pair is made once, on first use, in ``<state>/hostca`` (0700; key 0600). Each session
signs its fresh host key for the principals ``<kind>.interactive-slurm`` and
``job<id>.interactive-slurm``; clients trust ``@cert-authority *.interactive-slurm <CA key>`` with
``StrictHostKeyChecking yes``, so a process that grabs a session's port cannot pass as it. Those
names and options are :mod:`interactive_slurm.base.sshhosts`'s, shared with the clients' side.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
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
from interactive_slurm.base.sshhosts import CA_MARKER, CA_PATTERN, job_alias, kind_alias


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


def known_hosts_line(ca_pub: str) -> str:
    return f"{CA_MARKER} {CA_PATTERN} {ca_pub}"


def merge_known_hosts(existing: str, line: str) -> str:
    """``existing`` with our CA line replaced (or added); other lines are kept as they are."""
    kept = [
        row for row in existing.splitlines()
        if not (row.startswith(CA_MARKER) and row.split()[1:2] == [CA_PATTERN])
    ]
    return "\n".join([*kept, line]) + "\n"


def write_known_hosts(path: Path, line: str) -> None:
    folders.ensure_private_dir(path.parent)
    existing = path.read_text() if check_secure_if_exists(path) else ""
    merged = merge_known_hosts(existing, line)
    if merged != existing:
        write_private_atomic(path, merged, mode=0o600)
