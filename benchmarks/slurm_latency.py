"""Split each new-session run of bench_proxy.py into Slurm's parts and the tool's.

Slurm starts a batch job on the next pass of its scheduler, not at submit; slurmctld.log has both
moments (``_slurm_rpc_submit_batch_job: JobId=J``, then ``sched: Allocate JobId=J`` or, when
the backfill pass starts it, ``sched/backfill: _start_job: Started JobId=J``; ms resolution).
The log is slurmctld's own (0600), so scripts/bench runs this as root after the benchmark:
``python3 slurm_latency.py BENCH.json SLURMCTLD.log``. The session's own steps come from the
ready line it writes in its job log (kept in BENCH.json by bench_proxy.py).
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import sys
from pathlib import Path

EVENT = re.compile(r"\[(\S+)\] (?:_slurm_rpc_submit_batch_job: JobId=(\d+)|sched: Allocate JobId=(\d+)"
                   r"|sched/backfill: _start_job: Started JobId=(\d+))")


def moments(log_lines: list[str], jobs: set[str]) -> dict[str, dict[str, datetime.datetime]]:
    found: dict[str, dict[str, datetime.datetime]] = {}
    for line in log_lines:
        match = EVENT.match(line)
        if not match:
            continue
        job = match.group(2) or match.group(3) or match.group(4)
        if job in jobs and not (match.group(2) is None and "allocate" in found.get(job, {})):
            kind = "submit" if match.group(2) else "allocate"
            found.setdefault(job, {})[kind] = datetime.datetime.fromisoformat(match.group(1))
    return found


READY = re.compile(r"ready in ([\d.]+) s after its start at (\S+) \((.*)\)")


def session_steps(line: str) -> tuple[datetime.datetime, float, dict[str, float]] | None:
    """(when the session's process started, seconds to ready, each step) from its ready line."""
    match = READY.search(line)
    if not match:
        return None
    steps = {}
    for part in match.group(3).split(", "):
        name, _, seconds = part.rpartition(" ")[0].rpartition(" ")
        steps[name] = float(seconds)
    return datetime.datetime.fromisoformat(match.group(2)), float(match.group(1)), steps


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(bench_json: str, log_path: str) -> None:
    new = json.loads(Path(bench_json).read_text())["new_session"]
    with open(log_path, errors="replace") as fh:
        found = moments(fh.readlines(), set(new.get("jobs", [])))
    print("Each new session, end to end, in order (clocks of the one machine): the proxy until "
          "Slurm has the job; Slurm's scheduling pass (submit -> start); Slurm's launch (start -> "
          "the session's process); the session's start (process -> listening); the connection "
          "(the proxy finds the record, keyhole, `sshd -i`, ssh's handshake, `true`). The "
          "tool's part is everything but Slurm's two parts.")
    print()
    print("| run | job | end to end | proxy -> submit | Slurm: scheduling | Slurm: launch | "
          "session start | connection | the tool's part |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    columns: dict[str, list[float]] = {}
    steps_seen: dict[str, list[float]] = {}
    runs = zip(new["runs"], new.get("jobs", []), new.get("starts", []), new.get("ready", []))
    for i, (total, job, start, ready) in enumerate(runs, 1):
        seen, steps = found.get(job, {}), session_steps(ready)
        if "submit" not in seen or "allocate" not in seen or steps is None:
            print(f"| {i} | {job} | {ms(total)} | (not in the logs) | | | | | |")
            continue
        began, took, each = steps
        began_at = began.timestamp()
        row = {
            "end to end": total,
            "proxy -> submit": seen["submit"].timestamp() - start,
            "Slurm: scheduling": (seen["allocate"] - seen["submit"]).total_seconds(),
            "Slurm: launch": began_at - seen["allocate"].timestamp(),
            "session start": took,
            "connection": start + total - (began_at + took),
        }
        row["the tool's part"] = total - row["Slurm: scheduling"] - row["Slurm: launch"]
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
        for name, value in each.items():
            steps_seen.setdefault(name, []).append(value)
        print(f"| {i} | {job} | " + " | ".join(ms(value) for value in row.values()) + " |")
    if columns:
        print("| median | | " + " | ".join(ms(statistics.median(values))
                                         for values in columns.values()) + " |")
        print()
        print("The session's start, step by step (median of the runs above; from each job log's "
              "ready line):")
        print()
        print("| " + " | ".join(steps_seen) + " |")
        print("|" + " ---: |" * len(steps_seen))
        print("| " + " | ".join(ms(statistics.median(v)) for v in steps_seen.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
