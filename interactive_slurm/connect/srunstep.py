"""The one way this project runs a program inside a running job: an overlapping ``srun`` step.

Used by the ``srun`` transport (the proxy's bytes through Slurm's own I/O forwarding, for sites
whose firewall lets only Slurm's traffic reach compute nodes) and by ``doctor --job`` (checks
that must run on the job's node). Imported by the fast path: no imports beyond builtins.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from collections.abc import Sequence


def step_argv(job_id: str, node: str, argv: Sequence[str], *, srun: str = "srun") -> list[str]:
    """``srun`` running ``argv`` once on ``node`` inside job ``job_id``, stdio carried raw.

    Each flag, and why it is there:

    - ``--jobid``: a step of the session's job (no new allocation; the job's limits apply);
    - ``--overlap``: share the job's CPUs, memory and GPUs with the batch step (the session)
      instead of waiting for free ones, which a busy job never has (Slurm 20.11+);
    - ``--nodes=1 --ntasks=1 --nodelist``: one task, on the node whose session we reach;
    - ``--cpus-per-task=1 --mem=0``: ask for no more than the batch step already holds (``--mem=0``
      is "all of the job's memory on the node"; with ``--overlap`` nothing is taken from it);
    - ``--unbuffered``: stdout is written as it comes, not held back until a newline (SSH's
      bytes have none to wait for);
    - ``--input=0``: stdin goes to the one task (the default for -n1, said so it stays so);
    - ``--kill-on-bad-exit=1``, ``--wait=0``: the step ends with its task, no lingering;
    - ``--quiet``: no "job step created"/"step is waiting" chatter; srun's messages go to
      stderr in any case, never to stdout where the SSH bytes are;
    - ``--export=ALL``: the step runs with this environment (PATH to the install);
    - ``--job-name``: the step is named for ``squeue --steps`` and ``sacct``.

    No ``--pty``: a pseudo-terminal would translate bytes (CR/LF, ^C) and break the SSH stream.
    """
    return [
        srun, f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node}",
        "--cpus-per-task=1", "--mem=0", "--unbuffered", "--input=0", "--kill-on-bad-exit=1",
        "--wait=0", "--quiet", "--export=ALL", "--job-name=interactive-slurm-step",
        *argv,
    ]
