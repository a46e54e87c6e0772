"""``doctor --job``'s checks that must run on the job's node: run inside the job as an
overlapping ``srun`` step (``interactive-slurm doctor --in-job --json``, see
``login/jobcheck.py``), whose JSON the login node reads.

- **session sshd**: the session's own ``sshd_config`` (in its temp dir on the node) passes
  ``sshd -t``, which also loads its host key and certificate;
- **terminals**: a new pseudo-terminal belongs to the ``tty`` group: devpts mounted without
  ``gid=5`` gives it the user's group, and an sshd that is not root cannot ``chown`` it, so an
  interactive ``ssh slurm-cpu`` closes at once;
- **container runtime NAME**: the runtime each profile names (or, with only ``container``, any
  runtime) is on this node's PATH;
- **internet**: the node reaches VS Code's download server (a warning when not: VS Code must
  then download its server on the laptop), within a short bound.

Each check is a function of injected inputs and returns
:class:`~interactive_slurm.base.checks.Check` values; :func:`run` runs them all.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from interactive_slurm.base import checks, folders
from interactive_slurm.base.checks import Check, fail, ok, warn
from interactive_slurm.base.errors import EndpointError, InteractiveSlurmError
from interactive_slurm.base.runner import Runner
from interactive_slurm.connect import endpoint
from interactive_slurm.login import profiles
from interactive_slurm.node import containers, tmpdirs
from interactive_slurm.node.session import pts_mount_lacks_tty_gid

#: Where VS Code's server comes from (``update.code.visualstudio.com/commit:…/server-linux-x64``).
DOWNLOAD_HOST = ("update.code.visualstudio.com", 443)
#: How long the internet check waits (name lookup included): a node without a route often
#: drops packets rather than refusing them.
INTERNET_TIMEOUT = 5.0
SSHD_TIMEOUT = 30.0


# --- the session's sshd --------------------------------------------------------------------------

def session_bases(job_id: str, env: Mapping[str, str]) -> list[str]:
    """Where the session may have made its temp dir: the base its own ``TMPDIR`` gives (read
    from the session process, whose pid the record holds), this step's, and ``/tmp``."""
    envs: list[Mapping[str, str]] = []
    with contextlib.suppress(EndpointError, OSError, ValueError):
        ep = endpoint.read_job(job_id)
        if ep is not None:
            raw = Path(f"/proc/{ep.session_pid}/environ").read_bytes()
            envs.append(dict(item.decode(errors="replace").partition("=")[::2]
                             for item in raw.split(b"\0") if b"=" in item))
    envs.append(env)
    bases = [tmpdirs.base_dir(e, lambda _: None) for e in envs]
    return list(dict.fromkeys([*bases, tmpdirs.FALLBACK]))


def session_configs(job_id: str, bases: Iterable[str]) -> list[Path]:
    """The ``sshd_config`` files in this user's temp dirs of job ``job_id`` under ``bases``."""
    found = []
    for base in bases:
        for folder in sorted(Path(base).glob(f"{tmpdirs.PREFIX}{job_id}-*")):
            cfg = folder / "sshd_config"
            with contextlib.suppress(OSError):
                if folder.stat().st_uid == os.getuid() and cfg.is_file():
                    found.append(cfg)
    return found


def session_sshd(runner: Runner, job_id: str, sshd: str, bases: Sequence[str]) -> list[Check]:
    """``sshd -t`` on the session's own config (in its container, the session ran it there)."""
    name = "session sshd"
    log = folders.job_log(job_id)
    configs = session_configs(job_id, bases)
    if not configs:
        return [fail(name, f"job {job_id} has no sshd_config in {', '.join(bases)}: its session "
                           "did not get as far as writing one",
                     f"read the job's log, {log}: its last `error:` line says why")]
    cfg = configs[-1]
    used = containers.read_record(Path(folders.job_dir(job_id)))
    if used is not None:
        return [ok(name, f"{cfg}: the session checked it with `sshd -t` in its {used[0]} "
                         f"container ({used[1]}) before it published its record")]
    result = runner.run([sshd, "-t", "-f", str(cfg)], check=False, timeout=SSHD_TIMEOUT)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        return [fail(name, f"`{sshd} -t -f {cfg}` refuses it (exit {result.returncode}): {detail}",
                     f"`sshd` in {folders.config_file()} must name OpenSSH's server on the "
                     f"compute nodes (now {sshd}); the job's log {log} has the session's messages")]
    return [ok(name, f"`{sshd} -t` accepts {cfg} (host key and certificate load)")]


# --- terminals -----------------------------------------------------------------------------------

def new_pty_gid() -> int:
    """The group a new pseudo-terminal gets on this node (what sshd would have to change)."""
    master, slave = os.openpty()
    try:
        return os.fstat(slave).st_gid
    finally:
        os.close(master)
        os.close(slave)


def tty_group() -> int | None:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return None


def devpts_options(mounts: str) -> str:
    """The options of the devpts mount in effect on ``/dev/pts`` ("" when none is listed)."""
    found = [f[3] for f in (line.split() for line in mounts.splitlines())
             if len(f) > 3 and f[1] == "/dev/pts" and f[2] == "devpts"]
    return found[-1] if found else ""


def terminals(pty_gid: Callable[[], int], tty_gid: int | None, mounts: str | None) -> list[Check]:
    """A new terminal belongs to the tty group, so an unprivileged sshd can hand it to a shell."""
    name = "terminals"
    options = devpts_options(mounts or "")
    mounted = f"/dev/pts is mounted {options}" if options else "no devpts mount is listed"
    try:
        gid = pty_gid()
    except OSError as exc:
        return [fail(name, f"cannot open a pseudo-terminal: {exc.strerror or exc} ({mounted})",
                     "ask your admins: /dev/ptmx and /dev/pts must work for users on the compute "
                     "nodes; until then use VS Code or `ssh slurm-cpu COMMAND` (no terminal)")]
    if tty_gid is None or gid == tty_gid:
        group = f"group tty (gid {gid})" if tty_gid is not None else f"gid {gid} (no tty group here)"
        return [ok(name, f"a new terminal belongs to {group}: sshd can hand it to your shell "
                         f"({mounted})")]
    lacks = " (no gid= option)" if mounts is not None and pts_mount_lacks_tty_gid(mounts) else ""
    return [fail(name, f"a new terminal belongs to gid {gid}, not to the tty group (gid {tty_gid}): "
                       f"{mounted}{lacks}; sshd, which is not root here, cannot change that, so a "
                       "plain `ssh slurm-cpu` closes at once (`ssh slurm-cpu COMMAND` and VS Code "
                       "work)",
                 f"ask your admins to mount devpts with gid={tty_gid},mode=620 on the compute "
                 "nodes (the usual default)")]


# --- container runtimes --------------------------------------------------------------------------

def runtime_path(name: str, which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The binary of runtime ``name`` on this node's PATH (None: not there)."""
    return next((p for p in (which(b) for b in containers.RUNTIMES[name].binaries) if p), None)


def container_runtimes(profs: Sequence[profiles.Profile], used: str, node: str,
                       which: Callable[[str], str | None] = shutil.which,
                       path: str = "") -> list[Check]:
    """Each profile that names a container or a runtime: that runtime (or, unnamed, any) is
    here. A missing one fails the profile the connections use and warns for the others."""
    present = {n: p for n in containers.RUNTIME_NAMES if (p := runtime_path(n, which))}
    out = []
    for prof in profs:
        wants: dict[tuple[str, str], list[str]] = {}  # (runtime, image) -> kinds
        for kind in profiles.KINDS:
            res = prof.resources(kind)
            if res.container or res.container_runtime:
                wants.setdefault((res.container_runtime or "", res.container or ""), []).append(kind)
        for (runtime, image), kinds in wants.items():
            out.append(_runtime_check(prof.name, kinds, runtime, image, present, node,
                                      prof.name == used, path))
    if not out:
        return [ok("containers", "no profile names a container")]
    return out


def _runtime_check(profile: str, kinds: list[str], runtime: str, image: str,
                   present: Mapping[str, str], node: str, used: bool, path: str) -> Check:
    name = f"container runtime {profile}"
    label = f"profile {profile} [{', '.join(kinds)}]"
    wanted = f"container {image}" if image else "no container (so it is not used yet)"
    if runtime and runtime in present:
        return ok(name, f"{label}: {runtime} is on node {node} ({present[runtime]}); {wanted}")
    if not runtime and present:
        first = next(iter(present))
        return ok(name, f"{label}: {wanted}; node {node} has {first} ({present[first]})")
    binaries = "/".join(containers.RUNTIMES[runtime].binaries) if runtime else \
        ", ".join(dict.fromkeys(b for r in containers.RUNTIMES.values() for b in r.binaries))
    saw = (f"{label} names container_runtime {runtime}" if runtime else
           f"{label} names {wanted}") + f", but {binaries} is not on node {node}'s PATH ({path})"
    if runtime and present:
        other = next(iter(present))
        fix = ("use a runtime this node has: interactive-slurm profiles set "
               f"{profile} " + " ".join(f"{k}.container_runtime={other}" for k in kinds))
    else:
        drop = ["container="] if len(kinds) == len(profiles.KINDS) else []
        fix = ("run without a container: interactive-slurm profiles set "
               f"{profile} " + " ".join([*drop, *(f"{k}.container=" for k in kinds)]))
    return (fail if used else warn)(
        name, saw, f"ask your admins which module loads {runtime or 'a container runtime'} on "
                   f"the compute nodes (load it in ~/.bashrc), or {fix}")


def _loadable() -> list[profiles.Profile]:
    out = []
    for pname in sorted(profiles.available()):
        with contextlib.suppress(InteractiveSlurmError):
            out.append(profiles.load(pname))
    return out


# --- the internet --------------------------------------------------------------------------------

def tcp_connect(host: str, port: int, timeout: float) -> None:
    socket.create_connection((host, port), timeout=timeout).close()


def proxy_of(env: Mapping[str, str]) -> tuple[str, int] | None:
    """The HTTPS proxy VS Code's download would go through (``https_proxy``), if any."""
    value = env.get("https_proxy") or env.get("HTTPS_PROXY") or ""
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def internet(node: str, env: Mapping[str, str],
             connect: Callable[[str, int, float], None] = tcp_connect,
             timeout: float = INTERNET_TIMEOUT) -> list[Check]:
    """Whether the node reaches VS Code's download server (or the HTTPS proxy), within
    ``timeout`` in all (a warning when not: VS Code can bring its server from the laptop)."""
    name = "internet"
    via = proxy_of(env)
    host, port = via or DOWNLOAD_HOST
    target = f"{host}:{port}" + (" (the https_proxy)" if via else "")
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            connect(host, port, timeout)
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)  # a name lookup may not time out
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or errors:
        why = f"{errors[0]}" if errors else f"no answer within {timeout:g} s"
        return [warn(name, f"node {node} cannot reach {target}: {why}; VS Code cannot download "
                           "its server on the node",
                     "in VS Code's settings, \"remote.SSH.localServerDownload\": \"always\": VS "
                     "Code then downloads its server on the laptop and copies it over (ssh "
                     "itself is not affected)")]
    return [ok(name, f"node {node} reaches {target}: VS Code can download its server there")]


# --- all of them ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """What the node checks read from outside (tests inject their own)."""

    runner: Runner
    sshd: str
    used: str
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    node: str = field(default_factory=socket.gethostname)
    mounts: Callable[[], str | None] = lambda: _read("/proc/self/mounts")
    pty_gid: Callable[[], int] = new_pty_gid
    tty_gid: Callable[[], int | None] = tty_group
    which: Callable[[str], str | None] = shutil.which
    connect: Callable[[str, int, float], None] = tcp_connect


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def run(inputs: Inputs) -> list[Check]:
    """Every node check; none stops the others."""
    job_id = inputs.env.get("SLURM_JOB_ID", "")
    if not endpoint.is_job_id(job_id):
        return [fail("node", "not inside a Slurm job (SLURM_JOB_ID is not set)",
                     "this runs as an srun step of `interactive-slurm doctor --job`; run that")]
    out: list[Check] = []

    def add(name: str, run_one: Callable[[], Iterable[Check]]) -> None:
        out.extend(checks.guarded(name, run_one))

    add("session sshd", lambda: session_sshd(inputs.runner, job_id, inputs.sshd,
                                             session_bases(job_id, inputs.env)))
    add("terminals", lambda: terminals(inputs.pty_gid, inputs.tty_gid(), inputs.mounts()))
    add("containers", lambda: container_runtimes(_loadable(), inputs.used, inputs.node,
                                                 inputs.which, inputs.env.get("PATH", "")))
    add("internet", lambda: internet(inputs.node, inputs.env, inputs.connect))
    return out
