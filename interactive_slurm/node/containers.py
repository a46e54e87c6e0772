"""Container runtimes that run a session's sshd inside an image: enroot, Apptainer/Singularity,
Charliecloud.

One contract for all three (:class:`Runtime`): *prepare* the image once (into the image cache,
see :mod:`interactive_slurm.node.imagecache`), *wrap* the sshd argv, *clean up*. :func:`prepare`
returns a :class:`Container` whose :meth:`Container.wrap` is a pure function of the argv, so the
same prepared container serves a long-running ``sshd -D`` and a per-connection ``sshd -i`` alike
(every runtime here passes stdin/stdout through to the command).

Whatever a site's runtime configuration mounts by default, the session puts in the container
itself what its sshd needs, at the same paths as on the node:

- the user's home directory (``~/.ssh/authorized_keys``), the job's temp dir (sshd_config, host
  key, certificate, log) and the tool's state dir, as bind mounts;
- ``/etc/passwd`` and ``/etc/group`` written by the session: the user with the node's home and a
  shell the image has, and the ``tty`` group under the id the container sees the node's ``tty``
  group as (an unprivileged sshd cannot chown a pty; with the group right it has no need to);
- the job's environment (``SLURM_*``, ``CUDA_VISIBLE_DEVICES``) through ``SetEnv`` in
  sshd_config, which the session writes for every sshd, in a container or not;
- in GPU jobs, the GPUs: ``--nv`` (Apptainer), ``NVIDIA_VISIBLE_DEVICES`` for enroot's NVIDIA
  hook; Charliecloud sees the node's ``/dev`` as it is.

Before sshd starts, one probe in the container checks that the image has an executable sshd and
learns the ids the container sees; every failure is a :class:`SessionError` whose message says
what to do.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from interactive_slurm.base import defaults
from interactive_slurm.base.errors import CommandError, SessionError
from interactive_slurm.base.runner import Runner
from interactive_slurm.node.imagecache import CacheUnusable, ImageCache, cache_key

IMPORT_TIMEOUT = 3600.0
PROBE_TIMEOUT = 120.0

#: Shown in errors and ``remote list``; also the values of the profile key ``container_runtime``.
RUNTIME_NAMES = defaults.CONTAINER_RUNTIMES

#: The probe run once in the container: sshd present, the ids the container sees, a shell.
PROBE_SCRIPT = r"""
[ -x "$1" ] || { echo "no-sshd"; exit 0; }
while read -r key value rest; do
  case $key in Uid:|Gid:) echo "$key $value" ;; esac
done < /proc/self/status
if [ -r /proc/self/gid_map ]; then
  while read -r inside outside count; do echo "gidmap $inside $outside $count"; done < /proc/self/gid_map
fi
for s in "$2" /bin/bash /bin/sh; do
  if [ -x "$s" ]; then echo "shell $s"; break; fi
done
"""

Log = Callable[[str], None]


@dataclass(frozen=True)
class Needs:
    """What the session's sshd needs inside the container (filled in by the session)."""

    job_id: str
    sshd: str
    binds: tuple[Path, ...]  # bound at the same path: home, job temp dir, state dir
    workdir: Path            # the job's private temp dir: passwd/group files go here
    gpu: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # the job's environment (for GPUs)


@dataclass(frozen=True)
class Probe:
    sshd_ok: bool
    uid: int = -1
    gid: int = -1
    gid_map: tuple[tuple[int, int, int], ...] = ()
    shell: str = "/bin/sh"


def parse_probe(text: str) -> Probe:
    """The probe's output (:data:`PROBE_SCRIPT`) as a :class:`Probe`."""
    uid = gid = -1
    gid_map: list[tuple[int, int, int]] = []
    shell = "/bin/sh"
    for line in text.splitlines():
        words = line.split()
        if words == ["no-sshd"]:
            return Probe(sshd_ok=False)
        if len(words) == 2 and words[0] == "Uid:" and words[1].isdigit():
            uid = int(words[1])
        elif len(words) == 2 and words[0] == "Gid:" and words[1].isdigit():
            gid = int(words[1])
        elif len(words) == 4 and words[0] == "gidmap" and all(w.isdigit() for w in words[1:]):
            gid_map.append((int(words[1]), int(words[2]), int(words[3])))
        elif len(words) == 2 and words[0] == "shell":
            shell = words[1]
    return Probe(True, uid, gid, tuple(gid_map), shell)


def inside_gid(host_gid: int, gid_map: Sequence[tuple[int, int, int]], overflow: int = 65534) -> int:
    """The id a node's group ``host_gid`` has in the container (``overflow`` if unmapped)."""
    if not gid_map:
        return host_gid
    for inside, outside, count in gid_map:
        if outside <= host_gid < outside + count:
            return inside + host_gid - outside
    return overflow


def overflow_gid() -> int:
    try:
        return int(Path("/proc/sys/kernel/overflowgid").read_text().strip())
    except (OSError, ValueError):
        return 65534


def passwd_text(user: str, uid: int, gid: int, home: str, shell: str) -> str:
    lines = ["root:x:0:0:root:/root:/bin/sh"]
    if uid != 0:
        lines.append(f"{user}:x:{uid}:{gid}::{home}:{shell}")
    lines.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    return "\n".join(lines) + "\n"


def group_text(user_group: str, gid: int, tty_gid: int) -> str:
    groups = [("root", 0), ("tty", tty_gid), (user_group, gid), ("nogroup", 65534)]
    seen: set[str] = set()
    lines = []
    for name, number in groups:
        if name not in seen:
            seen.add(name)
            lines.append(f"{name}:x:{number}:")
    return "\n".join(lines) + "\n"


def identity_files(workdir: Path, probe: Probe) -> tuple[Path, Path]:
    """Write the container's /etc/passwd and /etc/group for this user into ``workdir``."""
    me = pwd.getpwuid(os.getuid())
    try:
        user_group = grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        user_group = me.pw_name
    try:
        host_tty = grp.getgrnam("tty").gr_gid
    except KeyError:
        host_tty = 5
    uid = probe.uid if probe.uid >= 0 else os.getuid()
    gid = probe.gid if probe.gid >= 0 else os.getgid()
    tty = inside_gid(host_tty, probe.gid_map, overflow_gid())
    passwd, group = workdir / "passwd", workdir / "group"
    passwd.write_text(passwd_text(me.pw_name, uid, gid, me.pw_dir, probe.shell))
    group.write_text(group_text(user_group, gid, tty))
    for path in (passwd, group):
        os.chmod(path, 0o644)
    return passwd, group


def is_reference(image: str) -> bool:
    """A registry reference (``ubuntu:22.04``, ``docker://…``) rather than a path on the node."""
    return not image.startswith("/")


class Runtime:
    """One container runtime. Subclasses say how to build an image and how to start it."""

    name: ClassVar[str]
    binaries: ClassVar[tuple[str, ...]]

    def __init__(self, binary: str | None = None) -> None:
        found = next((b for b in self.binaries if shutil.which(b)), self.binaries[0])
        self.binary = binary or found

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    # -- image: where the runnable image comes from ---------------------------------------------

    def needs_build(self, image: str) -> bool:
        """Whether ``image`` must be converted/imported into the cache before it runs."""
        raise NotImplementedError

    def build_argv(self, image: str, dest: Path) -> list[str]:
        """The command that makes the runnable image at ``dest`` from ``image``."""
        raise NotImplementedError

    def build(self, runner: Runner, image: str, dest: Path, timeout: float) -> None:
        """Make the runnable image at ``dest`` (a path that does not exist yet, in an empty
        folder of the cache) from ``image``."""
        runner.run(self.build_argv(image, dest), timeout=timeout)

    # -- per job ----------------------------------------------------------------------------------

    def start_job(self, runner: Runner, runnable: Path, needs: Needs) -> str:
        """Per-job setup from the runnable image; returns what :meth:`prefix` starts."""
        return str(runnable)

    def prefix(self, target: str, binds: Sequence[tuple[Path, str]], needs: Needs) -> list[str]:
        """The argv that runs a command in ``target`` with ``binds`` (source, destination)."""
        raise NotImplementedError

    def cleanup_argvs(self, target: str, needs: Needs) -> list[list[str]]:
        return []


class Enroot(Runtime):
    """NVIDIA enroot (Pyxis sites): a squashfs image, one container per job (``enroot create``)."""

    name = "enroot"
    binaries = ("enroot",)

    def needs_build(self, image: str) -> bool:
        if is_reference(image):
            return True
        if not image.endswith(".sqsh"):
            raise SessionError(f"enroot runs squashfs images (*.sqsh) or registry references, "
                               f"not {image}")
        return False

    def build_argv(self, image: str, dest: Path) -> list[str]:
        ref = image if "://" in image else f"docker://{image}"
        return [self.binary, "import", "--output", str(dest), ref]

    @staticmethod
    def container_name(job_id: str) -> str:
        return f"interactive-slurm-{job_id}"

    def start_job(self, runner: Runner, runnable: Path, needs: Needs) -> str:
        name = self.container_name(needs.job_id)
        runner.run([self.binary, "create", "--force", "--name", name, str(runnable)],
                   timeout=IMPORT_TIMEOUT)
        return name

    def prefix(self, target: str, binds: Sequence[tuple[Path, str]], needs: Needs) -> list[str]:
        argv = [self.binary, "start", "--rw"]
        argv += [f"--mount={src}:{dst}" for src, dst in binds]
        if needs.gpu:
            argv.append(f"--env=NVIDIA_VISIBLE_DEVICES={gpu_list(needs.env)}")
        return [*argv, target]

    def cleanup_argvs(self, target: str, needs: Needs) -> list[list[str]]:
        return [[self.binary, "remove", "--force", target]]


class Apptainer(Runtime):
    """Apptainer (or Singularity): a SIF file or sandbox dir in place; registry images pulled."""

    name = "apptainer"
    binaries: ClassVar[tuple[str, ...]] = ("apptainer", "singularity")

    def needs_build(self, image: str) -> bool:
        return is_reference(image)

    def build_argv(self, image: str, dest: Path) -> list[str]:
        ref = image if "://" in image else f"docker://{image}"
        return [self.binary, "pull", str(dest), ref]

    def prefix(self, target: str, binds: Sequence[tuple[Path, str]], needs: Needs) -> list[str]:
        argv = [self.binary, "exec"]
        if needs.gpu:
            argv.append("--nv")
        for src, dst in binds:
            argv += ["--bind", f"{src}:{dst}"]
        return [*argv, target]


class Singularity(Apptainer):
    name = "singularity"
    binaries = ("singularity",)


class Charliecloud(Runtime):
    """Charliecloud (``ch-run``, unprivileged): a directory image in place; a tarball or SquashFS
    file unpacked once into the cache (``ch-convert``; before Charliecloud 0.26, which has none,
    a tarball with ``ch-tar2dir``: Debian 11 ships 0.21)."""

    name = "charliecloud"
    binaries = ("ch-run",)
    TARBALLS = (".tar.gz", ".tgz", ".tar.xz", ".tar")  # longest first: the name ch-tar2dir makes
    ARCHIVES = (*TARBALLS, ".sqfs", ".squashfs")

    def __init__(self, binary: str | None = None) -> None:
        super().__init__(binary)
        folder = os.path.dirname(self.binary)
        self.convert = os.path.join(folder, "ch-convert") if folder else "ch-convert"
        self.tar2dir = os.path.join(folder, "ch-tar2dir") if folder else "ch-tar2dir"

    def needs_build(self, image: str) -> bool:
        if is_reference(image):
            raise SessionError(
                f"Charliecloud runs an image directory or file given by absolute path "
                f"(.tar, .tar.gz, .sqfs), not {image!r}: `ch-image pull` and `ch-convert` make one"
            )
        if image.endswith(self.ARCHIVES):
            return True
        if not os.path.isdir(image):
            raise SessionError(f"Charliecloud cannot run {image}: expected an image directory or "
                               f"a {', '.join(self.ARCHIVES)} file")
        return False

    def build_argv(self, image: str, dest: Path) -> list[str]:
        return [self.convert, "-o", "dir", image, str(dest)]

    def build(self, runner: Runner, image: str, dest: Path, timeout: float) -> None:
        if shutil.which(self.convert) or not shutil.which(self.tar2dir):
            super().build(runner, image, dest, timeout)
            return
        # No ch-convert (Charliecloud before 0.26): `ch-tar2dir TARBALL DIR` unpacks into
        # DIR/NAME, NAME being the tarball's name without its extension.
        ext = next((e for e in self.TARBALLS if image.endswith(e)), "")
        if not ext:
            raise SessionError(
                f"this Charliecloud has no ch-convert (0.26 and later have it), and its "
                f"{self.tar2dir} unpacks only tarballs ({', '.join(self.TARBALLS)}), not {image}: "
                "load a newer Charliecloud, or unpack the image into a directory and give that"
            )
        runner.run([self.tar2dir, image, str(dest.parent)], timeout=timeout)
        made = dest.parent / os.path.basename(image)[:-len(ext)]
        try:
            os.rename(made, dest)
        except OSError as exc:
            raise SessionError(f"{self.tar2dir} did not unpack {image} into {made}: "
                               f"{exc.strerror or exc}") from exc

    def start_job(self, runner: Runner, runnable: Path, needs: Needs) -> str:
        # A read-only image cannot get mount points at run time: make them in the image.
        for path in needs.binds:
            try:
                (runnable / path.relative_to("/")).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                why = (f"cannot make the mount point {path} in the image {runnable}: "
                       f"{exc.strerror or exc}")
                if isinstance(exc, PermissionError) and runnable.stat().st_uid != os.getuid():
                    # Another member's entry of a shared cache: the image goes to our own cache.
                    raise CacheUnusable(why) from exc
                raise SessionError(why) from exc
        return str(runnable)

    def prefix(self, target: str, binds: Sequence[tuple[Path, str]], needs: Needs) -> list[str]:
        argv = [self.binary]
        if any(dst in ("/etc/passwd", "/etc/group") for _, dst in binds):
            argv.append("--no-passwd")
        for src, dst in binds:
            argv += ["-b", f"{src}:{dst}"]
        return [*argv, target, "--"]

    def cleanup_argvs(self, target: str, needs: Needs) -> list[list[str]]:
        # The job's temp dir is the one mount point made for this job alone.
        return [["rmdir", str(Path(target) / needs.workdir.relative_to("/"))]]


RUNTIMES: Mapping[str, type[Runtime]] = {
    "enroot": Enroot, "apptainer": Apptainer, "singularity": Singularity,
    "charliecloud": Charliecloud,
}


def gpu_list(env: Mapping[str, str]) -> str:
    """The GPUs Slurm gave the job, for NVIDIA's container hooks (``all`` when unknown)."""
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(name, "")
        if value:
            return value
    return "all"


def find_runtime(name: str = "") -> Runtime:
    """The runtime ``name`` (``""``: the first one installed, in :data:`RUNTIME_NAMES` order)."""
    if name:
        if name not in RUNTIMES:
            raise SessionError(f"unknown container runtime {name!r}; valid: {', '.join(RUNTIME_NAMES)}")
        rt = RUNTIMES[name]()
        if not rt.available():
            raise SessionError(f"profile asks for container runtime {name}, but {rt.binary} is not "
                               f"installed on {socket.gethostname()}")
        return rt
    for candidate in RUNTIMES.values():
        rt = candidate()
        if rt.available():
            return rt
    binaries = ", ".join(dict.fromkeys(b for r in RUNTIMES.values() for b in r.binaries))
    raise SessionError(f"profile asks for a container, but no container runtime ({binaries}) is "
                       f"installed on {socket.gethostname()}")


@dataclass(frozen=True)
class Container:
    """A prepared container for one job; :meth:`wrap` is a pure function of the argv."""

    runtime: str
    image: str
    target: str
    argv_prefix: tuple[str, ...]
    cleanups: tuple[tuple[str, ...], ...] = ()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the container (stdin/stdout passed through)."""
        return [*self.argv_prefix, *argv]

    def cleanup(self, runner: Runner) -> None:
        for argv in self.cleanups:
            runner.run(argv, check=False)


def prepare(
    runner: Runner, runtime: Runtime, image: str, needs: Needs, cache: ImageCache,
    log: Log = lambda _: None,
) -> Container:
    """Make ``image`` runnable (once per image, in ``cache``), set the job's container up, check
    it has sshd, and return it. A failure after per-job setup removes what was set up."""
    runnable = resolve_image(runner, runtime, image, cache, log)
    target = runtime.start_job(runner, runnable, needs)
    base = [(p, str(p)) for p in outermost(needs.binds)]
    cleanups = tuple(tuple(a) for a in runtime.cleanup_argvs(target, needs))
    try:
        probe_argv = [*runtime.prefix(target, base, needs), "/bin/sh", "-c", PROBE_SCRIPT,
                      "probe", needs.sshd, pwd.getpwuid(os.getuid()).pw_shell]
        result = runner.run(probe_argv, check=False, timeout=PROBE_TIMEOUT)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip() or "no output")[-500:]
            raise SessionError(f"{runtime.name} could not start a container from {image}: {detail}")
        probe = parse_probe(result.stdout)
        if not probe.sshd_ok:
            raise SessionError(
                f"container image {image} has no executable {needs.sshd}: install OpenSSH's "
                "server in the image (see templates/container/) or set `sshd` in config.toml"
            )
        passwd, group = identity_files(needs.workdir, probe)
        binds = [*base, (passwd, "/etc/passwd"), (group, "/etc/group")]
        prefix = runtime.prefix(target, binds, needs)
    except BaseException:
        for argv in cleanups:
            runner.run(argv, check=False)
        raise
    return Container(runtime.name, image, target, tuple(prefix), cleanups)


def outermost(binds: Sequence[Path]) -> list[Path]:
    """``binds`` without duplicates and without paths inside another one (bound already)."""
    out: list[Path] = []
    for path in binds:
        if not any(p in path.parents for p in binds) and path not in out:
            out.append(path)
    return out


RECORD = "container"


def record(job_dir: Path, container: Container) -> None:
    """Note the job's runtime and image next to its endpoint record (shown by ``remote list``)."""
    (job_dir / RECORD).write_text(f"{container.runtime} {container.image}\n")


def read_record(job_dir: Path) -> tuple[str, str] | None:
    try:
        runtime, _, image = (job_dir / RECORD).read_text().strip().partition(" ")
    except OSError:
        return None
    return (runtime, image) if runtime in RUNTIMES else None


def resolve_image(runner: Runner, runtime: Runtime, image: str, cache: ImageCache, log: Log) -> Path:
    """The runnable image for ``image``: the path itself, or its (built once) cache entry."""
    if not is_reference(image) and not os.path.exists(image):
        raise SessionError(f"container image {image} does not exist on this node")
    if not runtime.needs_build(image):
        return Path(image)

    def build(dest: Path) -> None:
        log(f"preparing {image} with {runtime.name} (once; cached in {cache.root})")
        try:
            runtime.build(runner, image, dest, IMPORT_TIMEOUT)
        except CommandError as exc:
            raise SessionError(f"could not prepare container image {image} with {runtime.name}: "
                               f"{exc}") from exc

    return cache.entry(cache_key(runtime.name, image), build, image, log)
