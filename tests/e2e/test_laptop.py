"""The laptop path: ssh -> the machine's system sshd as the login node -> proxy -> the job."""

from __future__ import annotations

from pathlib import Path

from .conftest import TOOL, Harness, my_jobs


def test_laptop_hops_through_the_login_node(harness: Harness, tmp_path: Path) -> None:
    # The "laptop" trusts the login node's real host key (read from its file, not scanned).
    host_key = Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    login_known = tmp_path / "login_known_hosts"
    login_known.write_text(f"localhost {' '.join(host_key)}\n")
    hop = f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={login_known}"

    cfg = harness.tool("ssh-config", "--login", "localhost", "--remote-command", str(TOOL)).stdout
    # ConnectTimeout bounds the hop to the login node only (not the wait in the queue).
    assert "ProxyCommand ssh -o ConnectTimeout=30 localhost " in cfg
    cfg = cfg.replace("ProxyCommand ssh -o", f"ProxyCommand {hop} -o")
    laptop_cfg = tmp_path / "laptop_ssh_config"
    laptop_cfg.write_text(cfg)

    # Trust: the CA line comes from the login node, over the verified hop.
    trust = harness.run([*hop.split(), "localhost", str(TOOL), "trust"], check=True).stdout
    assert trust.startswith("@cert-authority *.interactive-slurm ssh-ed25519 ")
    known = harness.home / "config" / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(trust)

    out = harness.run(["ssh", "-F", str(laptop_cfg), "-o", "BatchMode=yes", "slurm-cpu",
                       "echo JOB=$SLURM_JOB_ID"], check=True)
    jobs = my_jobs()
    assert len(jobs) == 1 and f"JOB={jobs[0]['id']}" in out.stdout
    assert "submitted job" in out.stderr  # the login node's progress reaches the laptop
