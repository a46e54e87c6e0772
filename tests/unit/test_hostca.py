"""hostca.py: known_hosts merging (pure) and the CA with the real, local ssh-keygen."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from interactive_slurm.base import folders, sshhosts
from interactive_slurm.base.errors import UnsafePathError
from interactive_slurm.base.runner import SubprocessRunner
from interactive_slurm.node import hostca

from .fakes import FakeRunner

CA_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewKey interactive-slurm host CA of u"
OLD_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldKey interactive-slurm host CA of u"
LINE = f"@cert-authority *.interactive-slurm {CA_PUB}"

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def test_known_hosts_line() -> None:
    assert hostca.known_hosts_line(CA_PUB) == LINE


def test_aliases() -> None:
    assert sshhosts.kind_alias("gpu") == "gpu.interactive-slurm"
    assert sshhosts.job_alias("42") == "job42.interactive-slurm"


def test_merge_into_an_empty_file() -> None:
    assert hostca.merge_known_hosts("", LINE) == LINE + "\n"


def test_merge_keeps_unrelated_lines_and_replaces_the_old_ca_line() -> None:
    existing = (
        "login01 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILogin\n"
        "# a comment\n"
        f"@cert-authority *.interactive-slurm {OLD_PUB}\n"
        "@cert-authority *.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n"
    )
    assert hostca.merge_known_hosts(existing, LINE) == (
        "login01 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILogin\n"
        "# a comment\n"
        "@cert-authority *.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n"
        f"{LINE}\n"
    )


def test_merge_is_idempotent() -> None:
    once = hostca.merge_known_hosts("host1 ssh-ed25519 AAAA\n", LINE)
    assert hostca.merge_known_hosts(once, LINE) == once
    assert once.count("@cert-authority") == 1


def test_write_known_hosts(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "known_hosts"
    hostca.write_known_hosts(path, LINE)
    hostca.write_known_hosts(path, LINE)
    assert path.read_text() == LINE + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@needs_ssh_keygen
def test_ensure_ca_makes_a_private_key_once(home: Path) -> None:
    ca = hostca.ensure_ca(SubprocessRunner())
    assert ca == home / "state" / "hostca" / "ca"
    assert stat.S_IMODE(os.stat(ca).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.parent).st_mode) == 0o700
    pub = ca.with_suffix(".pub").read_text()
    assert pub.startswith("ssh-ed25519 ")
    assert "interactive-slurm host CA of " in pub
    assert [p.name for p in Path(folders.state_dir()).iterdir()] == ["hostca"]  # no temp dir left
    # A second call reuses the key: it must not run ssh-keygen (the fake knows no command).
    assert hostca.ensure_ca(FakeRunner()) == ca
    assert hostca.ca_public_key(FakeRunner()) == pub.strip()


@needs_ssh_keygen
def test_ensure_ca_refuses_a_group_writable_folder() -> None:
    ca = hostca.ensure_ca(SubprocessRunner())
    os.chmod(ca.parent, 0o770)
    with pytest.raises(UnsafePathError, match=f"writable by group .*chmod go-w {ca.parent}$"):
        hostca.ensure_ca(FakeRunner())


@needs_ssh_keygen
def test_sign_host_key_certifies_both_principals(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    key = tmp_path / "host_ed25519_key"
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    cert = hostca.sign_host_key(
        runner, key.with_suffix(".pub"), job_id="42", kind="cpu", valid_seconds=3600
    )
    assert cert == tmp_path / "host_ed25519_key-cert.pub"
    listing = runner.run(["ssh-keygen", "-L", "-f", str(cert)]).stdout
    lines = [line.strip() for line in listing.splitlines()]
    assert "Type: ssh-ed25519-cert-v01@openssh.com host certificate" in lines
    start = lines.index("Principals:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Critical Options:"))
    assert lines[start + 1:end] == ["cpu.interactive-slurm", "job42.interactive-slurm"]
    assert "Key ID: \"interactive-slurm job 42\"" in lines
    ca_fingerprint = runner.run(["ssh-keygen", "-l", "-f", str(Path(folders.hostca_dir()) / "ca.pub")])
    assert ca_fingerprint.stdout.split()[1] in listing  # signed by the user's CA
