"""``doctor --job`` on the login node: a real session, checked from here and on its node.

The session is the user's running ``cpu`` session when there is one (it costs nothing), else a
short one doctor starts with the smallest profile that fits (10 minutes at most, an idle timeout
of 5 minutes, no container, no ``--begin`` or mail options) and cancels when it ends, also on
an error, Ctrl-C, SIGTERM or SIGHUP (a SIGKILLed doctor leaves a job that ends itself
idle). Its jobs carry the profile label :data:`LABEL`, which no profile can be called, so no
``ssh slurm-cpu`` ever reuses one. Then, in the order a connection meets them:

- **session**: the job starts and its session publishes a record (it ran ``sshd -t`` first);
- **session port**: this login node reaches the record's port over TCP and the session proves
  its secret there (when not: whether ``srun`` can carry the connection instead, and the
  ``transport`` setting that picks it); not tried where ``transport = "srun"`` keeps the port
  on the node's loopback;
- **srun step**: an overlapping ``srun`` step into the job runs doctor's node checks
  (``doctor --in-job``, see ``node/nodecheck.py``), whose JSON comes back here;
- the node checks themselves, and **doctor's job**: it was cancelled.

It submits and cancels with the proxy's own code (``login/proxy.py``) and asks Slurm about the
job as the proxy does, but waits only for the record: the port is then tried over TCP alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

from interactive_slurm.base import checks, defaults, folders, selfcmd
from interactive_slurm.base.checks import Check, fail, ok, warn
from interactive_slurm.base.errors import (
    Aborted,
    CommandError,
    EndpointError,
    ProxyError,
    SubmitRefused,
)
from interactive_slurm.base.runner import Runner
from interactive_slurm.base.values import format_seconds
from interactive_slurm.connect import endpoint, fastpath, keyhole, srunstep
from interactive_slurm.login import profiles, proxy, slurm

KIND = "cpu"
#: The profile label of doctor's own jobs (``vscode-remote-cpu-doctor.check``): not a valid
#: profile name, so no proxy matches it and ``remote list`` shows what it is.
LABEL = "doctor.check"
#: The short job's time limit and idle timeout (seconds).
JOB_TIME = 600
JOB_IDLE = 300
#: sbatch options of a profile's ``extra`` that a check job leaves out.
DROPPED_EXTRA = ("--begin", "--mail-type", "--mail-user")
STEP_TIMEOUT = 120.0
#: While waiting for the record: how often Slurm is asked about the job, and the record looked for.
QUERY_GAP = 3.0
POLL = 0.25


def short_resources(prof: profiles.Profile) -> profiles.Resources:
    """``prof``'s cpu session made short: time at most :data:`JOB_TIME`, the idle timeout
    :data:`JOB_IDLE`, no container, no start delay or mail."""
    res = prof.resources(KIND)
    return replace(
        res, time=format_seconds(min(JOB_TIME, res.time_seconds)), idle_timeout=JOB_IDLE,
        container=None, container_runtime=None,
        extra=tuple(x for x in res.extra if not x.startswith(DROPPED_EXTRA)),
    )


def running_session(runner: Runner, used: str, now: float) -> tuple[slurm.Job, endpoint.Endpoint] | None:
    """The user's running cpu session with a fresh record (the profile in use first, then the
    oldest); never another doctor's job, which that doctor cancels."""
    found = []
    for job in slurm.my_jobs(runner):
        if job.kind != KIND or not job.running or job.profile == LABEL:
            continue
        try:
            ep = endpoint.read_job(job.job_id)
        except (EndpointError, OSError):
            continue
        if ep is not None and not endpoint.expired(ep, now):
            found.append((job, ep))
    found.sort(key=lambda pair: (pair[0].profile != used, int(pair[0].job_id)))
    return found[0] if found else None


@dataclass(frozen=True)
class Waited:
    """How the wait for a session's record ended: the record, or why there is none."""

    ep: endpoint.Endpoint | None
    job: slurm.Job | None  # Slurm's last word on the job (None: it does not know it)
    why: str = ""  # without a record: what happened
    hopeless: bool = False  # pending for a reason that waiting does not resolve


def wait_for_record(runner: Runner, job_id: str, timeout: float, err: TextIO, *,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> Waited:
    """Wait until job ``job_id``'s session publishes its record, the job ends, Slurm holds it
    for a reason that waiting does not resolve, or ``timeout`` passes (progress on ``err``)."""
    progress = proxy.Progress(err, clock)
    start = clock()
    next_query = start
    job: slurm.Job | None = None
    reasons = slurm.ReasonWatch()  # a passing reason is not acted on, as in the proxy's wait
    while True:
        try:
            ep = endpoint.read_job(job_id)
        except (EndpointError, OSError):
            ep = None
        now = clock()
        if ep is not None and not endpoint.expired(ep):
            progress.done()
            return Waited(ep, job)
        if now >= next_query:
            next_query = now + QUERY_GAP
            try:
                job = slurm.job_state(runner, job_id)
            except CommandError as exc:  # "no" is the caller's to report; "no answer" is retried
                if not slurm.unreachable(exc):
                    raise
                progress.show(f"job {job_id}: Slurm is not answering (retrying) "
                              f"[{int(now - start)}s]", key="unreachable")
            else:
                if job is None or job.ended:
                    progress.done()
                    state = "is gone from the queue" if job is None else f"ended {job.state}"
                    return Waited(None, job, f"job {job_id} {state} before its session was "
                                             f"ready{proxy.failure(job_id)}")
                key = reasons.see(job, now)
                if key:
                    progress.done()
                    return Waited(None, job, f"Slurm holds job {job_id} for {job.reason}: "
                                             f"change {key} in the profile", True)
                progress.show(f"{proxy.describe_state(job)} [{int(now - start)}s]",
                              key=proxy.describe_state(job))
        if now - start > timeout:
            progress.done()
            return Waited(None, job, f"no session record after {timeout:g} s")
        sleep(POLL)


def tcp_probe(ep: endpoint.Endpoint) -> None:
    """TCP to the record's port and the keyhole proof there (never ``srun``, whatever
    ``transport`` says): OSError or KeyholeError when it fails."""
    sock = fastpath.connect_tcp(ep.host, ep.port, fastpath.CONNECT_TIMEOUT)
    try:
        keyhole.prove(sock, ep.secret_bytes(), ep.job_id, keyhole.DEADLINE)
    except OSError as exc:  # connected: what failed is the proof
        raise keyhole.KeyholeError(exc.strerror or str(exc) or type(exc).__name__) from exc
    finally:
        sock.close()


@dataclass
class JobInputs:
    """What the job checks need (tests inject ``wait`` and ``connect``)."""

    runner: Runner
    used: str
    #: The smallest profile that fits its partition (None: none does).
    smallest: profiles.Profile | None
    err: TextIO
    transport: str = "auto"
    timeout: float = float(defaults.DOCTOR_JOB_WAIT)
    wait: Callable[[Runner, str, float, TextIO], Waited] = wait_for_record
    probe: Callable[[endpoint.Endpoint], None] = tcp_probe
    now: Callable[[], float] = time.time
    step_command: Sequence[str] = field(default_factory=selfcmd.module_argv)


@dataclass
class Target:
    """The session under test, and how far it got."""

    job_id: str
    node: str = ""
    ep: endpoint.Endpoint | None = None
    port_error: str | None = None  # None: reached over TCP and proved its secret
    #: The transport that applies to it (its profile's, else config.toml's): ``srun`` makes
    #: the session listen on its node's loopback only, so TCP is not tried.
    transport: str = "auto"


def run(inputs: JobInputs) -> list[Check]:
    """The job checks. Raises only :class:`Aborted` (after cancelling its own job)."""
    started: list[str] = []
    out: list[Check] = []
    try:
        with proxy.abort_on_signals():
            target = _session(inputs, started, out)
            if target is not None:
                out += _checks(inputs, target)
    finally:
        if started:
            out.append(_cancel(inputs, started[0]))
    return out


def _session(inputs: JobInputs, started: list[str], out: list[Check]) -> Target | None:
    """The running session to check, or a short one started now (``started`` learns its id
    before anything can interrupt); None when there is none to check (``out`` says why)."""
    name = "session"
    try:
        found = running_session(inputs.runner, inputs.used, inputs.now())
    except CommandError as exc:
        out.append(fail(name, f"could not list your jobs: {exc}", "run `squeue --me` by hand"))
        return None
    if found is not None:
        job, ep = found
        target = Target(job.job_id, job.nodes, ep, transport=ep.transport or inputs.transport)
        out.append(ok(name, f"your running session, job {job.job_id} (profile {job.profile}) on "
                            f"{job.nodes}: doctor starts no job"))
        target.port_error = _probe(inputs, target)
        return target
    prof = inputs.smallest
    if prof is None:
        out.append(fail(name, "not started: no profile fits a partition that takes jobs",
                        "fix the profile checks above first"))
        return None
    res = short_resources(prof)
    what = f"a {res.time} job of profile {prof.name} ({' '.join(profiles.sbatch_resource_args(res))})"
    try:
        with proxy.signals_blocked():
            job_id = proxy.submit(inputs.runner, proxy.Request(KIND, LABEL), res)
            started.append(job_id)
    except Aborted:
        raise
    except ProxyError as exc:
        refused = exc.__cause__
        if isinstance(refused, SubmitRefused):
            out.append(fail(name, f"Slurm refused {what}: {refused.reason}",
                            f"change {refused.key} in profile {prof.name}: interactive-slurm "
                            f"profiles set {prof.name} {KIND}.KEY=VALUE"))
        else:
            out.append(fail(name, f"could not submit {what}: {exc}", "run sbatch by hand"))
        return None
    except CommandError as exc:
        out.append(fail(name, f"could not submit {what}: {exc}",
                        "run sbatch by hand; if Slurm itself fails, tell your admins"))
        return None
    inputs.err.write(f"interactive-slurm: doctor started job {job_id}: {what}; it is cancelled "
                     "when doctor ends\n")
    inputs.err.flush()
    return _started(inputs, job_id, prof, out)


def _started(inputs: JobInputs, job_id: str, prof: profiles.Profile,
             out: list[Check]) -> Target | None:
    """Wait for the session of doctor's own job ``job_id``."""
    name = "session"
    log = folders.job_log(job_id)
    start = time.monotonic()
    try:
        waited = inputs.wait(inputs.runner, job_id, inputs.timeout, inputs.err)
    except CommandError as exc:
        out.append(fail(name, f"Slurm did not say how job {job_id} is doing: {exc}",
                        "try again in a minute; if it persists, tell your admins"))
        return None
    job = waited.job
    if waited.ep is None:
        if job is not None and job.pending and not waited.hopeless:
            out.append(warn(name, f"job {job_id} of profile {prof.name} still waits in the queue "
                                  f"({job.reason}) after {inputs.timeout:g} s: the session checks "
                                  "did not run",
                            "run doctor --job again when the queue is shorter, or while a "
                            "session of yours runs (doctor then uses it)"))
        else:
            out.append(fail(name, f"the session of profile {prof.name} did not start: {waited.why}",
                            f"the job's log {log} has the session's own messages"
                            + ("" if waited.hopeless else
                               "; `interactive-slurm profiles show "
                               f"{prof.name}` shows what the job asked for")))
        return None
    if job is None or not job.nodes:
        job = _job(inputs.runner, job_id) or job
    target = Target(job_id, job.nodes if job is not None else "", waited.ep,
                    transport=waited.ep.transport or inputs.transport)
    out.append(ok(name, f"job {job_id} (profile {prof.name}) started on {target.node or '?'}; its "
                        f"session ran `sshd -t` and published its record in "
                        f"{time.monotonic() - start:.0f} s"))
    target.port_error = _probe(inputs, target)
    return target


def _probe(inputs: JobInputs, target: Target) -> str | None:
    """None when the session's port answers over TCP with the keyhole proof (or is not meant
    to: transport srun); else why not."""
    if target.ep is None or target.transport == "srun":
        return None
    try:
        inputs.probe(target.ep)
    except TimeoutError:
        return f"no answer within {fastpath.CONNECT_TIMEOUT:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    except keyhole.KeyholeError as exc:
        return f"connected, but the keyhole failed: {exc}"
    return None


def _job(runner: Runner, job_id: str) -> slurm.Job | None:
    try:
        return slurm.job_state(runner, job_id)
    except CommandError:
        return None


def _checks(inputs: JobInputs, target: Target) -> list[Check]:
    """The port, the srun step and, through it, the node's own checks."""
    found, step = _step(inputs, target)
    return [_port(inputs, target, step.status == checks.OK), step, *found]


def _step(inputs: JobInputs, target: Target) -> tuple[list[Check], Check]:
    """doctor's node checks, run inside the job by an overlapping srun step."""
    name = "srun step"
    if not target.node:
        return [], fail(name, f"Slurm does not say which node job {target.job_id} runs on",
                        f"scontrol show job {target.job_id}")
    argv = srunstep.step_argv(target.job_id, target.node, [
        *inputs.step_command, "doctor", "--in-job", "--json", "--profile", inputs.used])
    try:
        result = inputs.runner.run(argv, check=False, timeout=STEP_TIMEOUT)
    except CommandError as exc:
        return [], _step_failed(inputs, target, str(exc))
    try:
        found = checks.from_json(result.stdout)
    except ValueError:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        return [], _step_failed(inputs, target, f"exit {result.returncode}: {detail}")
    return found, ok(name, f"`srun --overlap` ran doctor's node checks inside job "
                           f"{target.job_id} on {target.node}")


def _step_failed(inputs: JobInputs, target: Target, detail: str) -> Check:
    tcp_works = target.port_error is None and target.transport != "srun"
    report = warn if tcp_works else fail
    return report("srun step", f"`srun --jobid={target.job_id} --overlap` on {target.node} did "
                               f"not run doctor's node checks: {detail}",
                  "Slurm 20.11 or later is needed for --overlap; run `srun --jobid="
                  f"{target.job_id} --overlap hostname` by hand and show your admins what it "
                  "says" + (" (TCP works, so connections do)" if tcp_works else ""))


def _port(inputs: JobInputs, target: Target, step_ok: bool) -> Check:
    """This login node reaches the session's port over TCP (and the keyhole answers there)."""
    name = "session port"
    where = f"{target.ep.host}:{target.ep.port}" if target.ep else "the session's port"
    cfg = folders.config_file()
    whose = (f"profile {target.ep.profile}'s transport key" if target.ep is not None
             and target.ep.transport else str(cfg))
    if target.transport == "srun":
        if step_ok:
            return ok(name, f"not tried: transport = srun ({whose}) keeps the session's port on its "
                            "node's loopback; connections go through srun, which works")
        return fail(name, f"transport = srun ({whose}) keeps the session's port on its node's "
                          "loopback, and no srun step into the job works",
                    f"set transport = \"auto\" in {cfg} (and the profile), or show your admins "
                    "the srun step's error below")
    if target.port_error is None:
        return ok(name, f"this login node reaches {where} over TCP and the session proved its "
                        "secret there")
    saw = (f"this login node cannot reach {where} over TCP ({target.port_error}): a firewall "
           "between login and compute nodes?")
    ports = ("ask your admins to let the login nodes reach the compute nodes' unprivileged "
             "ports (INTERACTIVE_SLURM_PORTS=LOW-HIGH in the job's environment narrows the ports "
             "a session picks to the ones they open)")
    if not step_ok:
        return fail(name, f"{saw} No srun step into the job works either, so no connection can "
                          "reach the session", f"tell your admins; {ports}")
    via = f"{saw} An srun step into the job works, so the `srun` transport can carry connections"
    if target.transport == "auto":
        return warn(name, f"{via}; transport = auto ({whose}) finds that by itself (TCP first, "
                          "then srun, remembered for a day per partition)",
                    f"set transport = \"srun\" in {cfg} to skip the TCP try, or {ports}")
    return fail(name, f"{via}, but transport = {target.transport} ({whose}) uses TCP only",
                f"set transport = \"auto\" (or \"srun\") in {whose}: connections then go "
                f"through an `srun --overlap` step into the job; or {ports}")


def _cancel(inputs: JobInputs, job_id: str) -> Check:
    """Cancel doctor's own job (signals held: a second Ctrl-C waits for it)."""
    name = "doctor's job"
    try:
        with proxy.signals_blocked():
            slurm.cancel(inputs.runner, [job_id])
    except CommandError as exc:
        inputs.err.write(f"interactive-slurm: could not cancel job {job_id}: {exc}; "
                         f"run: scancel {job_id}\n")
        return fail(name, f"could not cancel job {job_id}, which doctor started: {exc}",
                    f"scancel {job_id}")
    inputs.err.write(f"interactive-slurm: cancelled job {job_id}, which doctor started\n")
    inputs.err.flush()
    return ok(name, f"cancelled job {job_id}, which doctor started")
