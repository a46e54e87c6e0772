"""Reconnect time from a laptop: the login hop as a shared connection (ControlMaster) vs not.

Run as the unprivileged test user (``sudo scripts/bench`` does that), with the local cluster and
the test login node on 127.0.0.1:2222 (scripts/login-node). A temporary laptop HOME is set up
with ``interactive-slurm setup`` (the test user's own key, so nothing is asked). With the
session hosts' own masters off, the block's shared login hop is compared with the same block
with ``ControlMaster=no`` for the hop; a third row is the block as written (the session's own
master too). They are run alternately, run by run, reusing one session, and the table gives
the medians, min and max, and the ratio of the first two medians. Loopback
has no network latency: over a real network each saved login handshake is several round trips.

    python benchmarks/bench_laptop.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TOOL = str(BIN / "interactive-slurm")
LOGIN_PORT = 2222
HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key.pub")


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    opts = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lapb", dir="/tmp"))
    install = Path(tempfile.mkdtemp(prefix="lapbi", dir="/tmp"))
    real_home = Path(os.path.expanduser("~" + os.environ["USER"]))
    key = " ".join(HOST_KEY.read_text().split()[:2])
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{LOGIN_PORT} {key}\n")
    env = {"HOME": str(home), "USER": os.environ["USER"], "LOGNAME": os.environ["USER"],
           "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        subprocess.run([TOOL, "setup", "127.0.0.1", "--port", str(LOGIN_PORT), "--user", env["USER"],
                        "--identity", str(real_home / ".ssh" / "id_ed25519"), "--install-dir",
                        str(install / "is"), "--yes", "--no-vscode"], env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
        block = home / ".ssh" / "config"
        # As a terminal user's block: this ssh has no terminal, so the session masters'
        # persistence (`Match ... exec "test -t 2"`) is made unconditional.
        block.write_text(block.read_text().replace(' exec "test -t 2"', ""))
        # The login hop's sharing is measured with the session hosts' own masters off (each
        # ssh is then a new connection to the session); the block as written is the third row.
        no_session_master = re.sub(r"(?m)^  ControlPath .*\n", "  ControlPath none\n",
                                   block.read_text().replace("  ControlMaster auto\n",
                                                             "  ControlMaster no\n"))
        shared = home / "config-shared-login"
        shared.write_text(no_session_master)
        plain = home / "config-no-control-master"
        # No master, and no use of one either (with a ControlPath set, ssh would still use it).
        plain.write_text(re.sub(r"ControlPath=\S+", "ControlPath=none",
                                no_session_master.replace("ControlMaster=auto", "ControlMaster=no")))
        subprocess.run(["scancel", "--me"], check=False)
        # Start the session (and the shared login connection) once; all then reuse the job.
        once(["ssh", "-F", str(shared), "-o", "BatchMode=yes", "slurm-cpu", "true"], env)
        once(["ssh", "-F", str(block), "-o", "BatchMode=yes", "slurm-cpu", "true"], env)
        with_cm: list[float] = []
        without: list[float] = []
        as_written: list[float] = []
        for _ in range(opts.runs):
            with_cm.append(once(["ssh", "-F", str(shared), "-o", "BatchMode=yes", "slurm-cpu", "true"], env))
            without.append(once(["ssh", "-F", str(plain), "-o", "BatchMode=yes", "slurm-cpu", "true"], env))
            as_written.append(once(["ssh", "-F", str(block), "-o", "BatchMode=yes", "slurm-cpu", "true"],
                                   env))
    finally:
        for sock in (home / ".ssh" / "interactive-slurm-cm").glob("*"):
            subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                           capture_output=True, timeout=30)
        subprocess.run(["scancel", "--me"], check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(install, ignore_errors=True)

    rows = {"ssh slurm-cpu true via the login node, shared login connection (ControlMaster)": with_cm,
            "ssh slurm-cpu true via the login node, a new login each time": without,
            "ssh slurm-cpu true, the block as written (the session's own master too)": as_written}
    print(f"| laptop reconnect ({opts.runs} alternating runs, one session) | median ms | min ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} "
              f"| {max(values) * 1000:.0f} |")
    ratio = statistics.median(without) / statistics.median(with_cm)
    print(f"| a new login each time / shared connection (ratio of medians) | {ratio:.2f}x | | |")
    if opts.json:
        opts.json.write_text(json.dumps({k: v for k, v in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
