from __future__ import annotations

from interactive_slurm.entry import main

main()
