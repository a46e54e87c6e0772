"""The self-check a new install must pass before ``current`` points to it.

Run by :func:`installs.self_check` as ``<install>/bin/interactive-slurm self-check``. A dry run of
what a connection does with this install: the config loads; every profile loads and becomes
sbatch options; the proxy's batch script and sbatch command are built for both kinds; the fast
path's and the session's modules import and the session's sshd_config renders. Nothing is
submitted, started or written.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from interactive_slurm.base import config
from interactive_slurm.login import profiles, slurm

PROXY_MODULES = ("entry", "connect.endpoint", "connect.fastpath", "connect.splice", "login.proxy",
                 "login.remote")
SESSION_MODULES = ("node.session", "node.hostca", "node.containers", "node.imagecache")


def run() -> list[str]:
    """Run every check; returns what was checked (one line each). Errors propagate."""
    done = []
    cfg = config.load()
    done.append(f"config: {cfg.source or 'defaults'}")
    names = sorted(profiles.available())
    for name in names:
        prof = profiles.load(name)
        for kind in profiles.KINDS:
            profiles.sbatch_resource_args(prof.resources(kind))
    done.append(f"profiles: {', '.join(names)}")
    for module in PROXY_MODULES:
        importlib.import_module(f"interactive_slurm.{module}")
    prof = profiles.load(cfg.default_profile)
    for kind in profiles.KINDS:
        res = prof.resources(kind)
        slurm.render_batch_script(python=sys.executable, kind=kind, profile=prof.name,
                                  valid_for=res.time_seconds, container=res.container or None)
        slurm.sbatch_argv(name=slurm.job_name(kind, prof.name), comment="interactive-slurm:",
                          log_path=Path("/nonexistent/job-%j.log"), workdir=Path("/"),
                          resource_args=profiles.sbatch_resource_args(res))
    done.append(f"proxy: batch scripts of profile {prof.name} (dry run)")
    for module in SESSION_MODULES:
        importlib.import_module(f"interactive_slurm.{module}")
    from interactive_slurm.node import session

    session.render_sshd_config(
        job_id="0", kind="cpu", user="self-check",
        host_key=Path("/nonexistent/host_key"), host_cert=Path("/nonexistent/host_key-cert.pub"),
        env={},
    )
    done.append("session: sshd_config (dry run)")
    return done
