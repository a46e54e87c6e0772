"""The ``interactive-slurm`` console script: the reuse path before anything heavy.

``proxy KIND`` with a live session is answered by :mod:`interactive_slurm.connect.reuse` without
importing click or the Slurm layer, and without one, a plain ``proxy KIND`` (only ``--profile``,
``--container``, ``--timeout``) waits for its session without click; ``connect JOBID``,
``relay-fd`` and ``bridge`` (the srun transport's task on the node) need neither, and
``session`` (the batch script's command) goes to :mod:`interactive_slurm.node.launch` without
click; everything else goes to the full CLI (:mod:`interactive_slurm.cli.main`). Every
install's console script (pip's, or the lean ``python -IS`` launcher of install/installs.py)
calls :func:`main` here, so this module keeps its name and place whatever the layout.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["connect"]:
        from interactive_slurm.connect import reuse

        reuse.connect(args[1:])
        return
    if args[:1] == ["relay-fd"]:  # the slow path's hand-off (not for people: no --help)
        from interactive_slurm.connect import reuse

        reuse.relay_fd(args[1:])
        return
    if args[:1] == ["bridge"]:  # the srun transport's task on the node (not for people)
        from interactive_slurm.connect import transport

        transport.bridge(args[1:])
        return
    if args[:1] == ["session"]:  # the batch script's command (not for people: no click)
        from interactive_slurm.node import launch

        launch.main(args[1:])
        return
    if args[:1] == ["proxy"]:
        from interactive_slurm.connect import reuse
        from interactive_slurm.install import autocheck

        autocheck.maybe_start()
        plain = reuse.parse_proxy_args(args[1:])  # None: anything unusual, for click to read
        if plain is not None:
            if not os.environ.get("INTERACTIVE_SLURM_NO_FAST_PATH") and reuse.proxy(*plain[:3]):
                return
            # The slow path without click.
            from interactive_slurm.base import toplevel
            from interactive_slurm.cli import base as cli_base
            from interactive_slurm.login import proxy

            toplevel.run(lambda: proxy.start(cli_base.runner(), *plain),
                         hint=toplevel.proxy_hint(plain[0]))
    from interactive_slurm.cli.main import main as cli_main

    cli_main()
