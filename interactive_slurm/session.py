"""The compute-node side: an unprivileged sshd for this job, published once it answers.

temp dir (0700) -> fresh ed25519 host key + certificate from the user's host CA -> sshd_config
-> ``sshd -D`` on a random free port (another on a bind collision) -> readiness (our own connect
reads the ``SSH-2.0-`` banner) -> publish the endpoint -> wait. On SIGTERM/SIGINT/SIGHUP, or when
sshd dies: remove the endpoint, stop sshd, remove the temp dir.
"""

from __future__ import annotations

import getpass
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from interactive_slurm import __version__, endpoint, hostca, paths, tmpdirs
from interactive_slurm.containers import Enroot
from interactive_slurm.errors import CommandError, SessionError
from interactive_slurm.runner import Runner, spawn

TEMPLATES = Path(__file__).parent / "templates"
#: Environment passed into ssh sessions: the job's view of itself and its devices.
ENV_PREFIXES = ("SLURM_", "INTERACTIVE_SLURM_")
ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "TMPDIR")
_ENV_VALUE_RE = re.compile(r"^[^\"\\\n\r\x00]*\Z", re.ASCII)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
PORT_ATTEMPTS = 10
READY_TIMEOUT = 15.0


@dataclass(frozen=True)
class SessionSpec:
    job_id: str
    kind: str
    profile: str
    valid_for: int
    sshd: str
    container: str = ""


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables sshd should set in every session (values sshd_config can carry)."""
    return {
        name: value
        for name, value in sorted(env.items())
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES)
        and _ENV_NAME_RE.match(name)
        and _ENV_VALUE_RE.match(value)
    }


def setenv_line(env: Mapping[str, str]) -> str:
    if not env:
        return ""
    return "SetEnv " + " ".join(f'"{name}={value}"' for name, value in env.items())


def render_sshd_config(
    *, job_id: str, kind: str, user: str, port: int, host_key: Path, host_cert: Path,
    pid_file: Path, env: Mapping[str, str], extra: str = "",
) -> str:
    for value in (user, str(host_key), str(host_cert), str(pid_file)):
        if any(c.isspace() or c in "\"'\\#" for c in value):
            raise SessionError(f"cannot put {value!r} in sshd_config: it has spaces or quotes")
    template = string.Template((TEMPLATES / "sshd_config").read_text())
    return template.substitute(
        version=__version__, job_id=job_id, kind=kind, user=user, port=port,
        host_key=host_key, host_cert=host_cert, pid_file=pid_file,
        setenv=setenv_line(env), extra=extra,
    )


def port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so outgoing connections never hold ours."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (max(1024, min(20000, low - 5000)), max(2048, low - 1))


def pick_port(rng: random.Random) -> int:
    low, high = port_range()
    return rng.randint(low, high)


def read_banner(host: str, port: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        return data


class Session:
    """One running session; :meth:`run` blocks until the job ends or sshd dies."""

    def __init__(self, runner: Runner, spec: SessionSpec, log: TextIO = sys.stderr) -> None:
        self.runner, self.spec, self.log = runner, spec, log
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.published = False
        self.started = time.monotonic()
        self.runtime = Enroot(spec.container, spec.job_id) if spec.container else None

    def say(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} interactive-slurm session {self.spec.job_id}: {message}", file=self.log,
              flush=True)

    def check_ptys(self) -> None:
        """Warn in the job log when ptys are not group tty (``ssh -t`` would then fail)."""
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        for line in mounts:
            fields = line.split()
            if len(fields) > 3 and fields[1] == "/dev/pts" and fields[2] == "devpts":
                if "gid=" not in fields[3]:
                    self.say("warning: /dev/pts is not mounted with gid=<tty group>; an "
                             "unprivileged sshd cannot give shells a terminal (ssh -t fails). "
                             "Ask the admins to mount devpts with gid=5,mode=620.")
                return

    def prepare(self) -> tuple[Path, Path]:
        self.check_ptys()
        paths.ensure_private_dir(paths.job_dir(self.spec.job_id))
        self.tmp = tmpdirs.make_session_dir(self.runner, self.spec.job_id, self.say)
        key = self.tmp / "host_ed25519_key"
        self.runner.run([
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key),
            "-C", f"interactive-slurm job {self.spec.job_id}",
        ])
        cert = hostca.sign_host_key(
            self.runner, key.with_suffix(".pub"), job_id=self.spec.job_id,
            kind=self.spec.kind, valid_seconds=self.spec.valid_for,
        )
        return key, cert

    def write_config(self, key: Path, cert: Path, port: int, extra: str) -> Path:
        assert self.tmp is not None
        cfg = self.tmp / "sshd_config"
        cfg.write_text(render_sshd_config(
            job_id=self.spec.job_id, kind=self.spec.kind, user=getpass.getuser(), port=port,
            host_key=key, host_cert=cert, pid_file=self.tmp / "sshd.pid",
            env=forwarded_env(os.environ), extra=extra,
        ))
        os.chmod(cfg, 0o600)
        return cfg

    def sshd_argv(self, *args: str) -> list[str]:
        """sshd with ``args``, inside the job's container when the profile names one."""
        assert self.tmp is not None
        argv = [self.spec.sshd, *args]
        if self.runtime is not None:
            argv = self.runtime.wrap(argv, mounts=[self.tmp])
        return argv

    def penalties_option(self, key: Path, cert: Path) -> str:
        """``PerSourcePenalties no`` where sshd knows it (9.8+): one user, many connections."""
        cfg = self.write_config(key, cert, 22, "PerSourcePenalties no")
        check = self.runner.run(self.sshd_argv("-t", "-f", str(cfg)), check=False)
        return "PerSourcePenalties no" if check.returncode == 0 else ""

    def start_sshd(self, key: Path, cert: Path) -> None:
        assert self.tmp is not None
        if self.runtime is not None:
            self.say(f"creating {self.runtime.name} container from {self.spec.container}")
            self.runtime.prepare(self.runner, self.tmp)
        extra = self.penalties_option(key, cert)
        rng = random.SystemRandom()
        errors = []
        for _attempt in range(PORT_ATTEMPTS):
            port = pick_port(rng)
            cfg = self.write_config(key, cert, port, extra)
            log = self.tmp / "sshd.log"
            log.write_text("")
            argv = self.sshd_argv("-D", "-f", str(cfg), "-E", str(log))
            self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self.wait_ready(port, log):
                self.port = port
                self.check_certified(cert)
                return
            text = log.read_text(errors="replace")
            errors.append(f"port {port}: {text.strip()[-300:] or 'no log'}")
            self.stop_sshd()
            if "Address already in use" not in text and "Bind to port" not in text:
                break
        raise SessionError("sshd did not start: " + "; ".join(errors))

    def wait_ready(self, port: int, log: Path) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if "Bind to port" in log.read_text(errors="replace"):
                # sshd keeps running when only one address family is taken; another
                # process holds the port on the other one, so this port is no good.
                return False
            try:
                if read_banner("127.0.0.1", port, timeout=0.5).startswith(b"SSH-2.0-"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def check_certified(self, cert: Path) -> None:
        """Publish only once the sshd on our port serves our certified key."""
        served = hostca.scan_keys(self.runner, "127.0.0.1", self.port, certs=True)
        if hostca.key_blob(cert.read_text()) not in served:
            raise SessionError(
                f"the sshd on port {self.port} does not serve this job's host certificate"
            )

    def publish(self, key: Path) -> None:
        assert self.proc is not None
        ep = endpoint.Endpoint(
            job_id=self.spec.job_id, kind=self.spec.kind, profile=self.spec.profile,
            host=socket.gethostname(), port=self.port,
            host_key=key.with_suffix(".pub").read_text().strip(),
            sshd_pid=self.proc.pid, started_at=time.time(), container=self.spec.container,
        )
        path = endpoint.publish(ep)
        self.published = True
        self.say(f"ready in {time.monotonic() - self.started:.2f} s: sshd pid {self.proc.pid} on "
                 f"{ep.host}:{ep.port}; endpoint {path}")

    def wait(self) -> int:
        """Block until a stop signal or sshd's exit; return the session's exit status."""
        assert self.proc is not None and self.tmp is not None
        stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        watched = stops | {signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            while True:
                if self.proc.poll() is not None:
                    log = (self.tmp / "sshd.log").read_text(errors="replace").strip()
                    self.say(f"sshd exited unexpectedly (status {self.proc.returncode}); "
                             f"its last log lines:\n{log[-2000:]}")
                    return 1
                info = signal.sigtimedwait(watched, 60)
                if info is not None and info.si_signo in stops:
                    self.say(f"got {signal.Signals(info.si_signo).name}; stopping")
                    return 0
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)

    def stop_sshd(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        endpoint.remove(self.spec.job_id)
        self.stop_sshd()
        if self.runtime is not None:
            self.runtime.cleanup(self.runner)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(paths.job_dir(self.spec.job_id), ignore_errors=True)

    def run(self) -> int:
        # Block stop signals while starting so cleanup always runs; wait() takes them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        try:
            key, cert = self.prepare()
            self.start_sshd(key, cert)
            self.publish(key)
            return self.wait()
        except CommandError as exc:
            raise SessionError(str(exc)) from exc
        finally:
            self.cleanup()


def spec_from_env(
    env: Mapping[str, str], *, kind: str, profile: str, valid_for: int, sshd: str, container: str
) -> SessionSpec:
    job_id = env.get("SLURM_JOB_ID", "")
    if not endpoint.is_job_id(job_id):
        raise SessionError("`interactive-slurm session` runs inside a Slurm job (no SLURM_JOB_ID)")
    if container:
        if not Enroot(container, job_id).available():
            raise SessionError(f"profile asks for container {container!r}, but enroot is not "
                               f"installed on {socket.gethostname()}")
    elif not os.path.isabs(sshd) or not os.access(sshd, os.X_OK):
        raise SessionError(f"sshd not found at {sshd} on {socket.gethostname()} "
                           "(set `sshd` in config.toml)")
    return SessionSpec(job_id, kind, profile, valid_for, sshd, container)
