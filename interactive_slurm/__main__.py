from __future__ import annotations

from interactive_slurm.cli import main

main()
