"""When the waiting proxy next asks Slurm and how soon it looks for the record again.

Pure functions of what the proxy has seen (:class:`Seen`, times in seconds on the waiting loop's
clock); no I/O, no clock of its own, stdlib only. The whole schedule:

    next query = asked + gap, or changed + LOG_CHANGE_QUERY when sooner (the first change of
                 the job log seen since a query last went out, while none was out)
    gap        = 0                                   nothing asked yet (the job is not known)
               = QUERY_GAPS[answers - 1]              after an answer (the last gap repeats)
               = max(that, HELD_GAP)                  after an answer naming a HELD_REASON
               = UNREACHABLE_GAPS[unanswered - 1]     while slurmctld does not answer (last repeats)
               = UNREACHABLE_GAPS[0]                  after another failure (FAILURES_IN_A_ROW end it)
    poll       = min(POLL_MIN * POLL_GROWTH ** polls since the job log changed, cap);
                 cap = POLL_STARTING for the first STARTING_POLLS polls after the job log
                 appeared or changed, then POLL_MAX; POLL_MAX_PENDING without a job log (and
                 throughout when there has been no job log since the start)
    pause      = min(poll, the next whole second on a terminal, max(next query - now, POLL_MIN))
                 (while a query is out, next query = when it went: polls POLL_MIN apart)

A job known from acquire counts as one answer at the start, so a job that stays pending is asked
about 2, 6, 15, 35, 65, 95, ... s after it: 4 one-RPC queries in its first minute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The state, reason and expected start change only when the scheduler runs: ask 2, 6, 15, 35 s
# after the first answer, then every 30 s. With the duplicate check, the submit and the second
# check (2 + 1 + 2 RPCs), a job that stays pending costs 9 RPCs in its first minute.
QUERY_GAPS = (2.0, 4.0, 9.0, 20.0, 30.0)
# A job held by what changes only by hand (a partition set DOWN or INACTIVE, a hold) is asked
# about every HELD_GAP seconds: the record is found by stat polls anyway, and slurmctld is spared.
HELD_GAP = 30.0
HELD_REASONS = ("PartitionDown", "PartitionInactive", "JobHeldUser", "JobHeldAdmin")
# slurmctld down or restarting: retry soon, then back off (each try can itself take ~9 s).
UNREACHABLE_GAPS = (2.0, 4.0, 8.0, 15.0)
# Other query failures in a row that end the wait (a passing failure is retried).
FAILURES_IN_A_ROW = 3
# The job log changed (the job started, the session logged a step or failed): ask this soon.
LOG_CHANGE_QUERY = 1.0
# A stat of the record right after the job log appears or changes: the session is close.
POLL_MIN = 0.005
# Each poll after that waits this much longer, up to the cap.
POLL_GROWTH = 1.25
# The cap once the job has a log: the record is seen within 0.1 s of being published.
POLL_MAX = 0.1
# ... and while the session is likely starting (its log appeared or changed about 2 s ago or
# less: a session is ready 0.1-0.5 s after its job starts), within 0.02 s: a stat each time.
POLL_STARTING = 0.02
STARTING_POLLS = 100
# The cap before the job has a log (it has not started): no record can come yet.
POLL_MAX_PENDING = 0.2
# One query may take this long; one that does not finish in time counts as a failure.
QUERY_TIMEOUT = 30.0
# Reasons a pending job gives when nodes it could use are down or drained: then the partition's
# nodes are looked at once per reason (2 RPCs). Not "Resources": a busy cluster says that all
# day, and the check would push a pending job's first minute past 10 RPCs.
NODE_REASONS = ("ReqNodeNotAvail", "Nodes required for job are DOWN", "NodeDown",
                "Nodes_required_for_job_are_DOWN")
# Seconds a new record may fail the keyhole (the session may still be starting) before giving up.
UNREACHABLE_GRACE = 30.0

_POWER_BOUND = 64  # polls past this change nothing (the caps are reached by 17); keeps ** finite


@dataclass(frozen=True)
class Seen:
    """What the waiting proxy has seen; times are seconds on the waiting loop's clock."""

    start: float = 0.0  # when the wait began
    asked: float = 0.0  # when the last query went out (the start before any)
    answers: int = 0  # queries Slurm answered; a job known from acquire counts as one, at the start
    unanswered: int = 0  # tries in a row that slurmctld did not answer
    failures: int = 0  # other failed queries in a row
    out: bool = False  # a query is out: sent, its answer not yet acted on
    changed: float | None = None  # first job-log change seen since a query last went out
    log: bool = False  # the job log exists
    polls: int | None = None  # polls since the job log last changed; None: no log since the start
    held: bool = False  # the last answer: pending for one of HELD_REASONS

    @classmethod
    def begin(cls, at: float, *, known: bool, log: bool) -> Seen:
        """The wait begins ``at``: ``known`` when acquire already saw the job, ``log`` when the
        job's log exists."""
        return cls(start=at, asked=at, answers=int(known), log=log, polls=0 if log else None)

    @property
    def gap(self) -> float:
        """Seconds from the last query to the next, by how the last one went."""
        if self.failures:
            return UNREACHABLE_GAPS[0]
        if self.unanswered:
            return UNREACHABLE_GAPS[min(self.unanswered, len(UNREACHABLE_GAPS)) - 1]
        if self.answers:
            gap = QUERY_GAPS[min(self.answers, len(QUERY_GAPS)) - 1]
            return max(gap, HELD_GAP) if self.held else gap
        return 0.0

    @property
    def next_query(self) -> float:
        """When to ask Slurm next; while a query is out, when it went (its answer is due)."""
        if self.out:
            return self.asked
        due = self.asked + self.gap
        return due if self.changed is None else min(due, self.changed + LOG_CHANGE_QUERY)

    @property
    def poll(self) -> float:
        """The longest wait before the next look for the record."""
        cap = POLL_MAX if self.log else POLL_MAX_PENDING
        if self.polls is None:
            return cap
        if self.log and self.polls < STARTING_POLLS:
            cap = POLL_STARTING
        return min(cap, POLL_MIN * POLL_GROWTH ** min(self.polls, _POWER_BOUND))

    @property
    def gives_up(self) -> bool:
        return self.failures >= FAILURES_IN_A_ROW

    def pause(self, now: float, *, tty: bool) -> float:
        """How long to wait at ``now`` (the elapsed time ticks each second on a terminal)."""
        next_tick = self.start + int(now - self.start) + 1 if tty else now + 3600.0
        return max(0.0, min(self.poll, next_tick - now, max(self.next_query - now, POLL_MIN)))

    # What happened: each returns what the proxy has seen since.

    def ask(self, now: float) -> Seen:
        return replace(self, asked=now, out=True, changed=None)

    def answer(self, *, held: bool = False) -> Seen:
        """Slurm answered; ``held``: the job waits for one of :data:`HELD_REASONS`."""
        return replace(self, out=False, answers=self.answers + 1, unanswered=0, failures=0,
                       held=held)

    def no_answer(self) -> Seen:
        return replace(self, out=False, unanswered=self.unanswered + 1, failures=0)

    def fail(self) -> Seen:
        return replace(self, out=False, failures=self.failures + 1)

    def log_change(self, now: float, *, exists: bool) -> Seen:
        """The job log appeared, grew or went; a change while a query is out moves nothing."""
        first = self.changed is None and not self.out
        return replace(self, log=exists, polls=0, changed=now if first else self.changed)

    def polled(self) -> Seen:
        return replace(self, polls=None if self.polls is None else self.polls + 1)
