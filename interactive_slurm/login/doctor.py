"""``doctor`` on the login node: every part of a connection's path there, in the order it is taken.

The install and its Python, config.toml, the files the tool trusts (StrictModes), the state
folder's filesystem, the session records, Slurm's commands and controller, the default partition,
each profile against its partition's limits, the accounts and QOS the profiles name
(``login/accounts.py``), and the home directory's free space (VS Code's server lands there).
With ``job``: the keyhole of every running session, then one session checked end to end
(``login/jobcheck.py``: the only part that submits and cancels a job). Each check is a function
of injected inputs (the runner, ``statvfs``, the mount table, the clock) that returns
:class:`~interactive_slurm.base.checks.Check` values; :func:`run` runs them all, none stops the
others. Apart from that job (and its log), nothing here changes anything.

The parsers (:func:`parse_partitions`, :func:`parse_nodes`) are pure functions of
``scontrol --oneliner show partition|node`` text.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from interactive_slurm import __version__
from interactive_slurm.base import checks, config, folders
from interactive_slurm.base.checks import Check, fail, ok, warn
from interactive_slurm.base.errors import (
    Aborted,
    CommandError,
    InteractiveSlurmError,
    UnsafePathError,
)
from interactive_slurm.base.runner import Runner, check_result
from interactive_slurm.base.values import format_seconds, time_to_seconds
from interactive_slurm.connect import endpoint
from interactive_slurm.login import accounts, profiles, slurm

SLURM_COMMANDS = ("sbatch", "squeue", "scontrol")
#: Below these, the home directory is too full for VS Code's server (``~/.vscode-server`` takes
#: hundreds of MB and tens of thousands of files).
MIN_FREE_BYTES = 1 << 30
MIN_FREE_INODES = 50_000
#: Filesystems that login and compute nodes usually share (``/proc/mounts`` type names).
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "cephfs", "ceph", "panfs",
    "wekafs", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "orangefs", "pvfs2", "afs",
})
_LIMIT_KEYS = ("time", "cpus", "mem", "gpus")


# --- what Slurm says -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    """One partition of ``scontrol --oneliner show partition`` (None: UNLIMITED)."""

    name: str
    default: bool
    state: str
    max_time: int | None
    max_cpus_per_node: int | None
    max_mem_per_node: int | None  # MB
    tres: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeInfo:
    """One node of ``scontrol --oneliner show node``: its size and partitions."""

    name: str
    cpus: int
    memory: int  # MB
    gpus: dict[str, int]  # GPU type ("" when untyped) -> count
    partitions: tuple[str, ...]
    state: str

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())

    @property
    def usable(self) -> bool:
        """Whether the node takes new jobs (not down, drained, not responding, ...)."""
        state = self.state.lower()
        return "*" not in state and not any(
            part.startswith(slurm.UNUSABLE_NODE_STATES) for part in state.split("+"))


def _limit(value: str | None) -> int | None:
    """An integer limit; None for UNLIMITED, empty or unreadable."""
    if value is None or not value.isdigit():
        return None
    return int(value)


def parse_time_limit(value: str | None) -> int | None:
    """Seconds in a MaxTime value; None for UNLIMITED/INFINITE (or anything unreadable)."""
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    try:
        return time_to_seconds(value)
    except ValueError:
        return None


def parse_partitions(output: str) -> list[Partition]:
    """The partitions of ``scontrol --oneliner show partition`` output."""
    parts = []
    for line in output.splitlines():
        f = slurm.parse_scontrol_fields(line)
        if "PartitionName" not in f:
            continue
        tres = dict(item.partition("=")[::2] for item in f.get("TRES", "").split(",") if "=" in item)
        parts.append(Partition(
            name=f["PartitionName"], default=f.get("Default", "NO").upper() == "YES",
            state=f.get("State", "UNKNOWN").upper(), max_time=parse_time_limit(f.get("MaxTime")),
            max_cpus_per_node=_limit(f.get("MaxCPUsPerNode")),
            max_mem_per_node=_limit(f.get("MaxMemPerNode")), tres=tres,
        ))
    return parts


def parse_gres(value: str) -> dict[str, int]:
    """GPUs in a node's ``Gres=`` value (``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2``): type -> count."""
    gpus: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", value).split(","):
        words = item.strip().split(":")
        if words[0] != "gpu" or len(words) < 2 or not words[-1].isdigit():
            continue
        kind = words[1] if len(words) >= 3 else ""
        gpus[kind] = gpus.get(kind, 0) + int(words[-1])
    return gpus


def parse_nodes(output: str) -> list[NodeInfo]:
    """The nodes of ``scontrol --oneliner show node`` output."""
    nodes = []
    for line in output.splitlines():
        f = slurm.parse_scontrol_fields(line)
        if "NodeName" not in f:
            continue
        cpus = _limit(f.get("CPUEfctv")) or _limit(f.get("CPUTot")) or 0
        nodes.append(NodeInfo(
            name=f["NodeName"], cpus=cpus, memory=_limit(f.get("RealMemory")) or 0,
            gpus=parse_gres(f.get("Gres", "")),
            partitions=tuple(p for p in f.get("Partitions", "").split(",") if p),
            state=f.get("State", "UNKNOWN"),
        ))
    return nodes


def parse_version(output: str) -> str:
    """Slurm's version in ``scontrol --version`` output (``slurm-wlm 22.05.8`` -> ``22.05.8``)."""
    words = output.split()
    return words[-1] if words else ""


def mem_megabytes(mem: str) -> int:
    """A profile's ``mem`` (``16G``, ``512M``, ``1T``, ``2048``: Slurm's default unit is MB) in MB."""
    number, unit = (mem[:-1], mem[-1].upper()) if mem[-1:].isalpha() else (mem, "M")
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return int(int(number) * scale)


def format_mem(mb: int) -> str:
    return f"{mb // 1024}G" if mb >= 1024 and mb % 1024 == 0 else f"{mb}M"


# --- the checks ----------------------------------------------------------------------------------

def this_install(prefix: str = sys.prefix, executable: str = sys.executable) -> list[Check]:
    """The version this command runs, its install and its Python."""
    from pathlib import Path

    from interactive_slurm.install import installs

    python = f"Python {sys.version.split()[0]} ({executable})"
    root = installs.root_of(prefix)
    if root is None:
        return [ok("install", f"interactive-slurm {__version__} (not a versioned install: "
                              f"{prefix}), {python}")]
    vid = installs.id_of(prefix)
    current = installs.current(Path(root))
    saw = f"interactive-slurm {__version__} (install {vid} in {root}), {python}"
    if current != vid:
        return [warn("install", f"{saw}; but {root}/current is {current or 'missing'}",
                     f"new connections run {root}/current/bin/interactive-slurm: run that one's "
                     "`doctor`, or `remote update --rollback` if the switch was not meant")]
    return [ok("install", saw)]


def config_file() -> list[Check]:
    """config.toml loads (every command reads it)."""
    path = folders.config_file()
    try:
        cfg = config.load()
    except InteractiveSlurmError as exc:
        return [fail("config", str(exc), f"edit {path}: the message names the key and the value")]
    where = str(cfg.source) if cfg.source else f"none at {path}: defaults"
    return [ok("config", f"{where} (default_profile {cfg.default_profile}, wait_timeout "
                         f"{cfg.wait_timeout:g} s)")]


def _mount_of(path: str, mounts: str) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount that holds ``path`` in /proc/mounts text."""
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        words = line.split()
        if len(words) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), words[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, words[2])
    return best


def _existing(path: str) -> str:
    """``path``, or the nearest folder above it that exists (resolved)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return os.path.realpath(probe)


def state_filesystem(state_dir: str, mounts: str | None, resolved: str | None = None) -> list[Check]:
    """The state folder (session records, job logs) must be on a filesystem the compute nodes
    share: the session writes its record there and the proxy reads it here. ``resolved``: the
    folder (or the nearest one above it that exists) with symlinks resolved."""
    name = "state filesystem"
    if mounts is None:
        return [ok(name, f"{state_dir}: not checked (no /proc/mounts here)")]
    found = _mount_of(resolved or state_dir, mounts)
    if found is None:
        return [ok(name, f"{state_dir}: not checked (no mount holds it)")]
    point, fstype = found
    if fstype in SHARED_FILESYSTEMS:
        return [ok(name, f"{state_dir} is on {fstype} ({point}), shared with the compute nodes")]
    return [warn(name, f"{state_dir} is on a local {fstype} filesystem ({point}): compute nodes "
                       "cannot publish their session records here unless Slurm runs on this "
                       "very machine",
                 "set INTERACTIVE_SLURM_HOME (in the shell startup file the ProxyCommand's ssh "
                 "reads, e.g. ~/.bashrc) to a folder on a filesystem the compute nodes share")]


def session_records(now: float) -> list[Check]:
    """The records in the state folder: unreadable, foreign, not renewed (stale), live."""
    name = "session records"
    jobs_dir = folders.jobs_dir()
    broken: list[str] = []
    try:
        found = endpoint.find(broken=broken)
    except UnsafePathError as exc:
        return [warn(name, f"not checked: {checks.split_fix(str(exc))[0]}",
                     "fix the trusted folders first (see above)")]
    out: list[Check] = []
    foreign = []
    try:
        for entry in os.scandir(jobs_dir):
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != os.getuid():
                foreign.append(f"{entry.path} (uid {st.st_uid})")
    except FileNotFoundError:
        pass
    if foreign:
        out.append(fail(name, f"not yours: {', '.join(foreign)}",
                        f"remove {'them' if len(foreign) > 1 else 'it'} (rm -r PATH; ask the "
                        f"admins if you cannot), and check who can write to {jobs_dir}"))
    if broken:
        out.append(warn(name, f"unreadable or from an older version: {', '.join(broken)}",
                        f"rm {' '.join(broken)} (the proxy also drops them on its next slow path)"))
    stale = [ep for ep in found if endpoint.expired(ep, now)]
    if stale:
        ages = ", ".join(f"job {ep.job_id} on {ep.host}:{ep.port} ({int(now - ep.identity[2])} s)"
                         for ep in stale if ep.identity)
        out.append(warn(name, f"not renewed for over {endpoint.LEASE_SECONDS:g} s (their session "
                              f"stopped): {ages}",
                        "`remote list` removes the records of jobs no longer queued; a record "
                        "whose job still runs means its session hangs: `remote cancel JOBID`"))
    live = [ep for ep in found if not endpoint.expired(ep, now)]
    if not out:
        what = ", ".join(f"job {ep.job_id} ({ep.kind}, {ep.profile}) on {ep.host}:{ep.port}"
                         for ep in live) or "none (no running session)"
        out.append(ok(name, f"{jobs_dir}: {what}"))
    return out


def slurm_commands(which: Callable[[str], str | None]) -> list[Check]:
    """sbatch, squeue and scontrol on PATH (the ProxyCommand's shell must find them)."""
    found = {cmd: which(cmd) for cmd in SLURM_COMMANDS}
    missing = [cmd for cmd, path in found.items() if path is None]
    if missing:
        return [fail("slurm commands", f"not on PATH: {', '.join(missing)} "
                                       f"(PATH={os.environ.get('PATH', '')})",
                     "load Slurm's module or add its bin folder to PATH in the startup file that "
                     "non-interactive ssh commands read (bash: ~/.bashrc, above any early "
                     "`return`); ask your admins where Slurm is installed. (On a laptop: nothing "
                     "is set up here yet: interactive-slurm setup LOGIN)")]
    return [ok("slurm commands", ", ".join(f"{path}" for path in found.values()))]


@dataclass(frozen=True)
class SlurmView:
    """What the controller said: its partitions and nodes."""

    version: str
    partitions: list[Partition]
    nodes: list[NodeInfo]

    def partition(self, name: str) -> Partition | None:
        return next((p for p in self.partitions if p.name == name), None)

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions if p.default), None)

    def nodes_of(self, partition: str) -> list[NodeInfo]:
        return [n for n in self.nodes if partition in n.partitions]


def _slurm_failure(name: str, exc: CommandError) -> Check:
    if slurm.unreachable(exc):
        return fail(name, f"slurmctld does not answer: {exc}",
                    "try again in a minute; if it persists, tell your admins (quote this line)")
    return fail(name, str(exc), "run the command by hand on the login node; if Slurm itself "
                                "fails, tell your admins (quote this line)")


def slurm_controller(runner: Runner) -> tuple[list[Check], SlurmView | None]:
    """Slurm's version, and whether slurmctld answers with its partitions and nodes."""
    out: list[Check] = []
    try:
        result = check_result(runner.run(["scontrol", "--version"], check=False, timeout=30))
        version = parse_version(result.stdout)
        out.append(ok("slurm version", f"Slurm {version}"))
    except CommandError as exc:
        version = ""
        out.append(_slurm_failure("slurm version", exc))
    try:
        parts = check_result(runner.run(["scontrol", "--oneliner", "show", "partition"],
                                        check=False, timeout=30))
        nodes = check_result(runner.run(["scontrol", "--oneliner", "show", "node"],
                                        check=False, timeout=30))
    except CommandError as exc:
        out.append(_slurm_failure("slurm controller", exc))
        return out, None
    view = SlurmView(version, parse_partitions(parts.stdout), parse_nodes(nodes.stdout))
    names = ", ".join(p.name + ("*" if p.default else "") for p in view.partitions)
    out.append(ok("slurm controller", f"answers: partitions {names or 'none'}; "
                                      f"{len(view.nodes)} node(s)"))
    return out, view


def default_partition(view: SlurmView) -> list[Check]:
    """A partition marked Default=YES, UP, with nodes that take jobs (a profile without
    ``partition`` goes there)."""
    name = "default partition"
    part = view.default
    if part is None:
        return [warn(name, "none (no partition has Default=YES)",
                     "every profile must name one: interactive-slurm profiles set NAME "
                     f"partition=<one of {', '.join(p.name for p in view.partitions) or '?'}>")]
    return [_partition_state(name, part, view)]


def _partition_state(name: str, part: Partition, view: SlurmView) -> Check:
    nodes = view.nodes_of(part.name)
    usable = [n for n in nodes if n.usable]
    limit = format_seconds(part.max_time) if part.max_time else "UNLIMITED"
    saw = f"{part.name}: State={part.state}, MaxTime={limit}, {len(usable)} of {len(nodes)} node(s) take jobs"
    if part.state != "UP":
        return fail(name, saw, f"partition {part.name} takes no jobs now: ask your admins, or set "
                               "another partition in your profile (interactive-slurm profiles set "
                               "NAME partition=OTHER)")
    if nodes and not usable:
        states = ", ".join(sorted({n.state for n in nodes}))
        return warn(name, f"{saw} ({states})", "a new session waits until a node is back; "
                                               "use another partition meanwhile, or ask your admins")
    return ok(name, saw)


@dataclass(frozen=True)
class Problem:
    """One way a profile's request exceeds its partition: what, the key, a value that fits."""

    what: str
    key: str
    value: str


def fit_problems(res: profiles.Resources, part: Partition, nodes: Sequence[NodeInfo]) -> list[Problem]:
    """Where ``res`` asks more than ``part`` (and its nodes) can ever give (pure)."""
    out = []
    if part.max_time is not None and res.time_seconds > part.max_time:
        limit = format_seconds(part.max_time)
        out.append(Problem(f"time {res.time} is over MaxTime {limit}", "time", limit))
    cpu_caps = [x for x in (part.max_cpus_per_node, max((n.cpus for n in nodes), default=None))
                if x is not None]
    if cpu_caps and res.cpus > min(cpu_caps):
        out.append(Problem(f"cpus {res.cpus} is over the {min(cpu_caps)} a node gives", "cpus",
                           str(min(cpu_caps))))
    mem = mem_megabytes(res.mem)
    sizes = [x for x in (part.max_mem_per_node, max((n.memory for n in nodes), default=None))
             if x is not None]
    if sizes and mem > min(sizes):
        out.append(Problem(f"mem {res.mem} is over the {format_mem(min(sizes))} a node gives",
                           "mem", format_mem(min(sizes))))
    if res.gpus:
        typed = [n.gpus.get(res.gpu_type, 0) for n in nodes] if res.gpu_type else \
            [n.gpu_count for n in nodes]
        most = max(typed, default=0)
        if nodes and res.gpus > most:
            what = f"{res.gpu_type} GPUs" if res.gpu_type else "GPUs"
            if most == 0:
                out.append(Problem(f"gpus {res.gpus}: no node of {part.name} has {what}", "partition",
                                   "<a partition with GPUs>"))
            else:
                out.append(Problem(f"gpus {res.gpus} is over the {most} {what} a node has", "gpus",
                                   str(most)))
    if not out and nodes and not any(
            n.cpus >= res.cpus and n.memory >= mem and
            (n.gpus.get(res.gpu_type, 0) if res.gpu_type else n.gpu_count) >= res.gpus
            for n in nodes):
        out.append(Problem(f"no single node has {res.cpus} CPUs, {res.mem} and {res.gpus} GPUs "
                           "together", "cpus", "<fewer>"))
    return out


def _set_command(profile: str, kind: str, key: str, value: str) -> str:
    return f"interactive-slurm profiles set {profile} {kind}.{key}={value}"


def profile_fit(prof: profiles.Profile, kind: str, view: SlurmView, used: bool) -> Check:
    """One profile's ``kind`` table against its partition: exists, UP, time, CPUs, memory, GPUs.

    A misfit fails the profile the connection uses (``used``) and warns for the others (they
    are used only with ``--profile``)."""
    res = prof.resources(kind)
    name = f"profile {prof.name} [{kind}]"
    report = fail if used else warn
    where = f"{prof.source}"
    part_name = res.partition or (view.default.name if view.default else None)
    if part_name is None:
        return report(name, f"no partition: {where} names none and Slurm has no default",
                      _set_command(prof.name, kind, "partition",
                                   view.partitions[0].name if view.partitions else "NAME"))
    part = view.partition(part_name)
    if part is None:
        valid = ", ".join(p.name for p in view.partitions) or "none"
        return report(name, f"partition {part_name} ({where}) does not exist; partitions: {valid}",
                      _set_command(prof.name, kind, "partition",
                                   view.default.name if view.default else "NAME"))
    problems = fit_problems(res, part, view.nodes_of(part.name))
    if part.state != "UP":
        problems.insert(0, Problem(f"partition {part.name} is {part.state}", "partition", "OTHER"))
    request = " ".join(profiles.sbatch_resource_args(res)[2:5]) + (
        f" --gres=gpu:{res.gpus}" if res.gpus else "")
    if problems:
        saw = f"{'; '.join(p.what for p in problems)} (partition {part.name}; {where} [{kind}])"
        fix = "; ".join(dict.fromkeys(_set_command(prof.name, kind, p.key, p.value) for p in problems))
        return report(name, saw, f"{fix} (writes your own copy of the profile)")
    return ok(name, f"fits partition {part.name}: {request}")


def profile_checks(view: SlurmView, used: str) -> list[Check]:
    """Every profile and kind against Slurm's partitions (a profile that does not load fails or
    warns as a misfit would)."""
    out: list[Check] = []
    for pname in sorted(profiles.available(), key=lambda n: (n != used, n)):
        try:
            prof = profiles.load(pname)
        except InteractiveSlurmError as exc:
            report = fail if pname == used else warn
            what, fix = checks.split_fix(str(exc))
            out.append(report(f"profile {pname}", what,
                              fix or "edit the file: the message names the key and the value"))
            continue
        out += [profile_fit(prof, kind, view, pname == used) for kind in profiles.KINDS]
    if used not in profiles.available():
        out.insert(0, fail(f"profile {used}", f"no such profile (default_profile or --profile); "
                                              f"available: {', '.join(sorted(profiles.available()))}",
                           f"set default_profile in {folders.config_file()} to one of them, or "
                           f"make it: interactive-slurm profiles set {used} --from default "
                           "cpu.time=08:00:00"))
    return out


def home_space(home: str, statvfs: Callable[[str], Any] = os.statvfs) -> list[Check]:
    """Free space and inodes in the home directory, where VS Code puts its server."""
    name = "home space"
    st = statvfs(home)
    free = st.f_bavail * st.f_frsize
    inodes = st.f_favail if st.f_files else None
    saw = f"{home}: {free / (1 << 30):.1f} GiB free" + (
        f", {inodes} inodes free" if inodes is not None else "")
    fix = ("free some space (du -sh ~/.vscode-server ~/.cache ~/.conda; quota -s), or put VS "
           "Code's server elsewhere: in VS Code's settings, \"remote.SSH.serverInstallPath\": "
           "{\"slurm-cpu\": \"/a/bigger/shared/folder\"}")
    if free < MIN_FREE_BYTES or (inodes is not None and inodes < MIN_FREE_INODES):
        return [warn(name, f"{saw} (VS Code's server needs ~1 GiB and ~50000 files)", fix)]
    return [ok(name, saw)]


def live_sessions(connect: Callable[[endpoint.Endpoint], Any], now: float) -> list[Check]:
    """``--job``: every running session's record answers through its keyhole."""
    from interactive_slurm.connect import fastpath

    name = "session keyhole"
    try:
        found = [ep for ep in endpoint.find() if not endpoint.expired(ep, now)]
    except UnsafePathError as exc:
        return [warn(name, f"not checked: {checks.split_fix(str(exc))[0]}",
                     "fix the trusted folders first (see above)")]
    out: list[Check] = []  # none running: the job checks below start one
    for ep in found:
        label = f"job {ep.job_id} ({ep.kind}) at {ep.host}:{ep.port}"
        start = time.monotonic()
        try:
            sock = connect(ep)
        except fastpath.StaleEndpoint as exc:
            out.append(fail(name, f"{label}: {exc}",
                            f"the next connect drops the record and starts over; if the job still "
                            f"runs, its session hangs: remote cancel {ep.job_id}; if the port is "
                            "refused or silent from here only, a firewall stands between this "
                            "login node and the compute node: tell your admins"))
            continue
        sock.close()
        out.append(ok(name, f"{label} proved its secret in {1000 * (time.monotonic() - start):.0f} ms"))
    return out


def smallest_profile(view: SlurmView, used: str) -> profiles.Profile | None:
    """The profile whose cpu session asks the least (GPUs, CPUs, memory, time), among those that
    load and fit their partition; the one in use wins a tie. ``doctor --job`` starts it."""
    fitting = []
    for name in profiles.available():
        try:
            prof = profiles.load(name)
        except InteractiveSlurmError:
            continue
        if profile_fit(prof, "cpu", view, True).status == checks.OK:
            fitting.append(prof)

    def size(prof: profiles.Profile) -> tuple[int, int, int, int, bool, str]:
        res = prof.cpu
        return (res.gpus, res.cpus, mem_megabytes(res.mem), res.time_seconds, prof.name != used,
                prof.name)

    return min(fitting, key=size, default=None)


def _read_mounts() -> str | None:
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


@dataclass(frozen=True)
class Inputs:
    """Everything the cluster-side checks read from outside (tests inject their own)."""

    runner: Runner
    home: str = field(default_factory=lambda: os.path.expanduser("~"))
    #: The profile the connection uses (None: config.toml's default_profile).
    profile: str | None = None
    job: bool = False
    which: Callable[[str], str | None] = shutil.which
    statvfs: Callable[[str], Any] = os.statvfs
    mounts: Callable[[], str | None] = _read_mounts
    now: Callable[[], float] = time.time
    connect: Callable[[endpoint.Endpoint], Any] | None = None  # None: fastpath.open_connection
    #: Where ``--job`` shows its progress (the wait for its job).
    err: TextIO = field(default_factory=lambda: sys.stderr)
    #: ``--job``'s wait for its job's session record and its TCP probe of the port (None:
    #: :func:`jobcheck.wait_for_record`, :func:`jobcheck.tcp_probe`).
    wait: Callable[..., Any] | None = None
    probe: Callable[[endpoint.Endpoint], None] | None = None


def _settings(profile: str | None) -> tuple[str, str]:
    """The profile in use and the ``transport`` setting (config.toml; the defaults when it does
    not load: the config check reports why)."""
    try:
        cfg = config.load()
    except InteractiveSlurmError:
        cfg = config.Config()
    return profile or cfg.default_profile, cfg.transport


def run(inputs: Inputs) -> list[Check]:
    """Every cluster-side check, in the order a connection meets them; none stops the others
    (``--job``'s checks raise :class:`Aborted` on Ctrl-C, after cancelling their job)."""
    out: list[Check] = []

    def add(name: str, run_one: Callable[[], Iterable[Check]]) -> None:
        out.extend(checks.guarded(name, run_one))

    used, transport = _settings(inputs.profile)
    add("install", this_install)
    add("config", config_file)
    add("trusted folders", checks.trusted_folders)
    add("state filesystem", lambda: state_filesystem(folders.state_dir(), inputs.mounts(),
                                                     _existing(folders.state_dir())))
    add("session records", lambda: session_records(inputs.now()))
    add("slurm commands", lambda: slurm_commands(inputs.which))
    view: SlurmView | None = None
    if all(inputs.which(cmd) for cmd in SLURM_COMMANDS):
        found, view = slurm_controller(inputs.runner)
        out += found
    if view is None:
        out.append(warn("profiles", "not checked: Slurm's partitions are unknown (see above)",
                        "fix the Slurm check above first"))
    else:
        add("default partition", lambda: default_partition(view))
        add("profiles", lambda: profile_checks(view, used))
        add("accounts", lambda: accounts.check(inputs.runner, used))
    add("home space", lambda: home_space(inputs.home, inputs.statvfs))
    if inputs.job:
        out += _job_checks(inputs, view, used, transport)
    return out


def _job_checks(inputs: Inputs, view: SlurmView | None, used: str, transport: str) -> list[Check]:
    """``--job``: the keyhole of every running session, then a session checked end to end."""
    from interactive_slurm.connect import fastpath
    from interactive_slurm.login import jobcheck

    connect = inputs.connect or fastpath.open_connection
    out = checks.guarded("session keyhole", lambda: live_sessions(connect, inputs.now()))
    if view is None:
        return [*out, warn("session", "not started: Slurm does not answer (see above)",
                           "fix the Slurm checks above first")]
    try:
        smallest = smallest_profile(view, used)
    except InteractiveSlurmError as exc:
        return [*out, fail("session", f"not started: {exc}", "fix the checks above first")]
    job_inputs = jobcheck.JobInputs(runner=inputs.runner, used=used, smallest=smallest,
                                    err=inputs.err, transport=transport, now=inputs.now)
    if inputs.wait is not None:
        job_inputs.wait = inputs.wait
    if inputs.probe is not None:
        job_inputs.probe = inputs.probe
    try:
        return [*out, *jobcheck.run(job_inputs)]
    except Aborted:
        raise
    except (InteractiveSlurmError, OSError) as exc:  # after jobcheck cancelled its job
        return [*out, fail("session", f"could not check: {exc}",
                           "run again with INTERACTIVE_SLURM_DEBUG=1 and report the error")]
