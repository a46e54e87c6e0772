"""Split each new-session run of bench_proxy.py into Slurm's part and the tool's part.

Slurm starts a batch job on the next pass of its scheduler, not at submit; slurmctld.log has both
moments (``_slurm_rpc_submit_batch_job: JobId=J``, then ``sched: Allocate JobId=J`` or, when
the backfill pass starts it, ``sched/backfill: _start_job: Started JobId=J``; ms resolution).
The log is slurmctld's own (0600), so scripts/bench runs this as root after the benchmark:
``python3 slurm_latency.py BENCH.json SLURMCTLD.log``.
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


def main(bench_json: str, log_path: str) -> None:
    new = json.loads(Path(bench_json).read_text())["new_session"]
    with open(log_path, errors="replace") as fh:
        found = moments(fh.readlines(), set(new.get("jobs", [])))
    print("| new session run | job | end to end | Slurm: submit -> start | the rest (the tool, ssh) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rests = []
    for i, (total, job) in enumerate(zip(new["runs"], new.get("jobs", [])), 1):
        seen = found.get(job, {})
        if "submit" in seen and "allocate" in seen:
            slurm = (seen["allocate"] - seen["submit"]).total_seconds()
            rests.append(total - slurm)
            print(f"| {i} | {job} | {total * 1000:.0f} ms | {slurm * 1000:.0f} ms | "
                  f"{(total - slurm) * 1000:.0f} ms |")
        else:
            print(f"| {i} | {job} | {total * 1000:.0f} ms | (not in the log) | |")
    if rests:
        print(f"| median | | {statistics.median(new['runs']) * 1000:.0f} ms | | "
              f"{statistics.median(rests) * 1000:.0f} ms |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
