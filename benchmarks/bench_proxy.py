"""Benchmarks of the connection path on the local cluster; prints a Markdown table.

Run as the unprivileged test user (``sudo scripts/bench`` does that):

    python benchmarks/bench_proxy.py [--runs N]

What it measures (median and max of N runs, wall-clock):
- interpreter start + imports of the proxy's fast path vs the full click CLI;
- the proxy's time to the sshd banner, fast path (endpoint file, no Slurm) vs the full CLI path;
- ``ssh slurm-cpu true`` reusing a session vs ``ssh`` straight to the session's sshd port;
- a new session, from no job to the banner (a handful of runs: each one is a Slurm job);
- how many Slurm commands a reused connection runs (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
TOOL = str(BIN / "interactive-slurm")


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, env=env, check=True, capture_output=True)


def banner(env: dict[str, str]) -> None:
    proc = subprocess.Popen([TOOL, "proxy", "cpu"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    proc.stdin.close()
    proc.wait(30)
    if not line.startswith(b"SSH-2.0-"):
        raise SystemExit(f"proxy printed {line!r} instead of an SSH banner")


def cancel_all() -> None:
    """Cancel our jobs and wait until the node is idle again (so Slurm's cleanup is not timed)."""
    subprocess.run(["scancel", "--me"], check=False)
    while subprocess.run(["squeue", "--me", "-h"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.3)
    for _ in range(100):
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
        if states.split() == ["idle"]:
            break
        time.sleep(0.3)
    time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per measurement")
    parser.add_argument("--new-sessions", type=int, default=3, help="runs of the new-session case")
    opts = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="is-bench-"))
    env = {**os.environ, "INTERACTIVE_SLURM_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}
    cfg = home / "ssh_config"
    cfg.write_text(subprocess.run([TOOL, "ssh-config"], env=env, capture_output=True, text=True,
                                  check=True).stdout)
    ssh = ["ssh", "-F", str(cfg), "-o", "BatchMode=yes"]
    cancel_all()
    rows: list[tuple[str, list[float]]] = []

    py = sys.executable
    rows.append(("python start + fast-path imports",
                 timed(lambda: run([py, "-c", "import interactive_slurm.entry, interactive_slurm."
                                    "endpoint, interactive_slurm.fastpath, interactive_slurm.splice"],
                                   env), opts.runs)))
    rows.append(("python start + full CLI imports (click)",
                 timed(lambda: run([py, "-c", "import interactive_slurm.cli"], env), opts.runs)))

    new = []
    for _ in range(opts.new_sessions):
        cancel_all()
        new += timed(lambda: banner(env), 1)
    rows.append(("new session on an idle node: no job -> sshd banner", new))

    rows.append(("proxy fast path -> banner", timed(lambda: banner(env), opts.runs)))
    slow_env = {**env, "INTERACTIVE_SLURM_NO_FAST_PATH": "1"}
    rows.append(("proxy via full CLI (reuse) -> banner", timed(lambda: banner(slow_env), opts.runs)))
    rows.append(("ssh slurm-cpu true (reuse)",
                 timed(lambda: run([*ssh, "slurm-cpu", "true"], env), opts.runs)))

    [record] = (home / "state" / "jobs").glob("*/endpoint.json")
    ep = json.loads(record.read_text())
    direct = [*ssh, "-o", f"HostKeyAlias=job{ep['job_id']}.interactive-slurm",
              "-o", f"UserKnownHostsFile={home / 'config' / 'known_hosts'}",
              "-o", "StrictHostKeyChecking=yes", "-p", str(ep["port"]), ep["host"], "true"]
    rows.append(("ssh straight to the session's sshd", timed(lambda: run(direct, env), opts.runs)))

    spy = home / "spy"
    spy.mkdir()
    calls = home / "calls"
    calls.touch()
    for name in ("squeue", "sbatch", "scancel", "scontrol", "sinfo"):
        (spy / name).write_text(f'#!/bin/sh\necho {name} >> {calls}\nexec /usr/bin/{name} "$@"\n')
        (spy / name).chmod(0o755)
    spy_env = {**env, "PATH": f"{spy}:{env['PATH']}"}
    for _ in range(5):
        run([*ssh, "slurm-cpu", "true"], spy_env)
    slurm_calls = len(calls.read_text().split())
    cancel_all()

    print(f"| measurement ({opts.runs} runs unless noted) | median ms | max ms |")
    print("| --- | ---: | ---: |")
    for name, values in rows:
        label = name if len(values) == opts.runs else f"{name} ({len(values)} runs)"
        print(f"| {label} | {statistics.median(values) * 1000:.0f} | {max(values) * 1000:.0f} |")
    print(f"| Slurm commands run by 5 reused connections | {slurm_calls} | |")
    if slurm_calls:
        raise SystemExit("the fast path ran Slurm commands")


if __name__ == "__main__":
    main()
