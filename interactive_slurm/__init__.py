"""interactive-slurm: ``ssh slurm-cpu`` lands in a shell inside a Slurm job."""

from __future__ import annotations

__version__ = "0.1.0"
