"""``interactive-slurm session``: the batch script's command, read without click.

Every new session waits for this process to start, so its arguments (written by
``login/slurm.render_batch_script``, never typed by people) are read by :func:`parse` here
instead of loading the whole command line (click and every command module: ~0.1 s on a 2-core
node). The command stays hidden and keeps its flags: ``--kind``, ``--profile``, ``--valid-for``,
``--idle-timeout``, ``--transport``, ``--container`` and ``--container-runtime``, each as
``--flag VALUE`` or ``--flag=VALUE``. Errors go to stderr (the job log) as ``error: ...``, as
the full CLI's do.
"""

from __future__ import annotations

import contextlib
import os
import time

from interactive_slurm.base.errors import SessionError

USAGE = ("usage: interactive-slurm session --kind cpu|gpu --profile NAME --valid-for SECONDS "
         "[--idle-timeout SECONDS] [--transport auto|tcp|srun] [--container IMAGE "
         "[--container-runtime NAME]]")
_FLAGS = ("--kind", "--profile", "--valid-for", "--idle-timeout", "--transport", "--container",
          "--container-runtime")
_REQUIRED = ("--kind", "--profile", "--valid-for")
KINDS = ("cpu", "gpu")


def parse(args: list[str]) -> dict[str, str]:
    """The flags of ``args`` by name (``--valid-for`` -> its value); a :class:`SessionError`
    naming the flag or value that is wrong."""
    found: dict[str, str] = {}
    rest = list(args)
    while rest:
        name, eq, value = rest.pop(0).partition("=")
        if name not in _FLAGS:
            raise SessionError(f"unknown argument {name!r}; {USAGE}")
        if not eq:
            if not rest:
                raise SessionError(f"{name} needs a value; {USAGE}")
            value = rest.pop(0)
        if name in found:
            raise SessionError(f"{name} given twice")
        found[name] = value
    missing = [name for name in _REQUIRED if name not in found]
    if missing:
        raise SessionError(f"missing {', '.join(missing)}; {USAGE}")
    if found["--kind"] not in KINDS:
        raise SessionError(f"--kind must be cpu or gpu, not {found['--kind']!r}")
    for name in ("--valid-for", "--idle-timeout"):
        text = found.get(name, "0")
        if not (text.isascii() and text.isdigit()):
            raise SessionError(f"{name} must be a whole number of seconds, not {text!r}")
    if "--container-runtime" in found and "--container" not in found:
        raise SessionError("--container-runtime needs --container")
    return found


def start(args: list[str]) -> int:
    """Parse, check the trusted folders, read config.toml and run the session until it ends."""
    from interactive_slurm.base import config, folders, selfcmd
    from interactive_slurm.base.runner import SubprocessRunner
    from interactive_slurm.node import session

    started = session.script_start(os.environ, time.time())
    flags = parse(args)
    transport = flags.get("--transport", "")
    if transport and transport not in config.TRANSPORTS:
        raise SessionError(f"--transport must be one of {', '.join(config.TRANSPORTS)}, "
                           f"not {transport!r}")
    folders.check_trusted()  # StrictModes for config, profiles, known_hosts and state
    cfg = config.load()
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if job_id.isascii() and job_id.isdigit():
        with contextlib.suppress(OSError):  # slurmd made the job's log with the job's umask
            os.chmod(folders.job_log(job_id), 0o600)
    spec = session.spec_from_env(
        os.environ, kind=flags["--kind"], profile=flags["--profile"],
        valid_for=int(flags["--valid-for"]), sshd=cfg.sshd,
        container=flags.get("--container", ""),
        container_runtime=flags.get("--container-runtime", ""),
        idle_timeout=int(flags.get("--idle-timeout", "0")), image_cache=cfg.image_cache,
        transport=transport, configured=cfg.transport,
    )
    os.environ.pop(session.WARN_BEFORE_ENV, None)  # the session's own: not passed on to shells
    tool = selfcmd.tool_for_shells()
    if tool:  # every shell in the job learns this install (`interactive-slurm open` uses it)
        os.environ[selfcmd.TOOL_ENV] = tool
    serving = session.Session(SubprocessRunner(), spec)
    serving.script_start = started
    return serving.run()


def main(args: list[str]) -> None:
    """Console entry for ``session``: one ``error:`` line on stderr for what went wrong."""
    from interactive_slurm.base import toplevel

    toplevel.run(lambda: start(args))
