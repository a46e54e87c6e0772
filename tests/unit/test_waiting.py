"""waiting.py: the waiting proxy's schedule as a pure function of what it has seen.

The numbers are the ones the waiting loop used before the schedule had a module of its own (the
loop in ``proxy.Waiter.wait`` kept them in four counters and two local variables).
"""

from __future__ import annotations

import pytest

from interactive_slurm.login import waiting
from interactive_slurm.login.waiting import Seen

KNOWN = Seen.begin(0.0, known=True, log=False)  # a job acquire saw, no job log yet


@pytest.mark.parametrize(
    ("seen", "next_query", "poll"),
    [
        # Nothing known yet: ask at once. No job log: the record is looked for 0.2 s apart.
        (Seen.begin(0.0, known=False, log=False), 0.0, 0.2),
        # A job known from acquire counts as one answer at the start; then the gaps grow, the
        # last one repeating: 2, 6, 15, 35, 65, 95 s.
        (KNOWN, 2.0, 0.2),
        (Seen(asked=2.0, answers=2), 6.0, 0.2),
        (Seen(asked=6.0, answers=3), 15.0, 0.2),
        (Seen(asked=15.0, answers=4), 35.0, 0.2),
        (Seen(asked=35.0, answers=5), 65.0, 0.2),
        (Seen(asked=65.0, answers=6), 95.0, 0.2),
        (Seen(asked=995.0, answers=36), 1025.0, 0.2),
        # The job log changed at 20 s (the job started): ask at 21 s, not 35 s; polls restart
        # at 5 ms and grow by 1.25 up to 0.1 s.
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=0), 21.0, 0.005),
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=1), 21.0, 0.00625),
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=4), 21.0, 0.01220703125),
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=13), 21.0, 0.02),
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=99), 21.0, 0.02),
        (Seen(asked=15.0, answers=4, changed=20.0, log=True, polls=100), 21.0, 0.1),
        (Seen(asked=15.0, answers=4, log=True, polls=10_000), 35.0, 0.1),
        # A change after the query was due anyway moves nothing.
        (Seen(asked=2.0, answers=2, changed=5.5, log=True, polls=3), 6.0, 0.009765625),
        # The job log went away: polls restart at 5 ms, growing up to 0.2 s again.
        (Seen(asked=6.0, answers=3, changed=7.0, log=False, polls=14), 8.0, 0.11368683772161603),
        (Seen(asked=6.0, answers=3, changed=7.0, log=False, polls=17), 8.0, 0.2),
        # slurmctld does not answer: +2, +4, +8, +15 s, then +15 s again.
        (Seen(asked=6.0, answers=2, unanswered=1), 8.0, 0.2),
        (Seen(asked=8.0, answers=2, unanswered=2), 12.0, 0.2),
        (Seen(asked=12.0, answers=2, unanswered=3), 20.0, 0.2),
        (Seen(asked=20.0, answers=2, unanswered=4), 35.0, 0.2),
        (Seen(asked=35.0, answers=2, unanswered=9), 50.0, 0.2),
        # ...and a job log change brings that forward too.
        (Seen(asked=20.0, answers=2, unanswered=4, changed=22.5, log=True, polls=0), 23.5, 0.005),
        # Another failure: +2 s, whatever came before it.
        (Seen(asked=6.0, answers=3, failures=1), 8.0, 0.2),
        (Seen(asked=20.0, answers=2, unanswered=4, failures=2), 22.0, 0.2),
        # A query is out: its answer is due now (the loop polls POLL_MIN apart for it).
        (Seen(asked=15.0, answers=3, out=True), 15.0, 0.2),
    ],
)
def test_the_schedule(seen: Seen, next_query: float, poll: float) -> None:
    assert seen.next_query == next_query
    assert seen.poll == poll


@pytest.mark.parametrize(
    ("seen", "now", "tty", "pause"),
    [
        (KNOWN, 0.0, False, 0.2),  # the poll interval
        (KNOWN, 1.875, False, 0.125),  # the next query is sooner
        (KNOWN, 1.9375, True, 0.0625),  # so is the next whole second on a terminal
        (Seen.begin(10.0, known=True, log=False), 11.875, True, 0.125),  # seconds of the wait
        (KNOWN, 1.875, True, 0.125),
        (KNOWN, 0.5, True, 0.2),  # the next second (0.5 s) is further than the poll
        (KNOWN, 2.5, False, waiting.POLL_MIN),  # the query is due: soon, never a busy loop
        (KNOWN.ask(2.0), 2.5, False, waiting.POLL_MIN),  # a query is out: act on its answer soon
        (Seen.begin(0.0, known=True, log=True), 0.5, True, waiting.POLL_MIN),  # the log is new
    ],
)
def test_the_pause(seen: Seen, now: float, tty: bool, pause: float) -> None:
    assert seen.pause(now, tty=tty) == pause


def asked_until(seen: Seen, end: float, answer: list[str]) -> list[float]:
    """When the loop asks up to ``end``, each ask answered as ``answer`` says in turn (the last
    repeating): "ok", "down" (slurmctld silent) or "fail"."""
    times: list[float] = []
    while seen.next_query <= end:
        times.append(seen.next_query)
        seen = seen.ask(seen.next_query)
        outcome = answer[min(len(times), len(answer)) - 1]
        seen = {"ok": seen.answer, "down": seen.no_answer, "fail": seen.fail}[outcome]()
    return times


def test_a_pending_job_costs_four_queries_in_its_first_minute() -> None:
    assert asked_until(KNOWN, 60, ["ok"]) == [2, 6, 15, 35]
    # Without the job from acquire, one more: at once.
    assert asked_until(Seen.begin(0.0, known=False, log=False), 60, ["ok"]) == [0, 2, 6, 15, 35]


def test_an_unreachable_slurmctld_backs_off_and_the_count_goes_on_after() -> None:
    answers = ["down"] * 5 + ["ok"]
    assert asked_until(KNOWN, 100, answers) == [2, 4, 8, 16, 31, 46, 50, 59, 79]


def test_other_failures_are_retried_at_the_first_unreachable_gap_and_three_end_the_wait() -> None:
    seen = KNOWN.ask(2.0).no_answer().ask(4.0).no_answer().ask(8.0).fail()
    assert (seen.next_query, seen.gives_up) == (10.0, False)
    seen = seen.ask(10.0).fail()
    assert (seen.next_query, seen.gives_up) == (12.0, False)
    assert seen.ask(12.0).fail().gives_up
    assert not seen.ask(12.0).no_answer().fail().gives_up  # only failures in a row count
    # Silent tries still count across a failure in between: this is the second (+4 s).
    assert KNOWN.ask(2.0).no_answer().ask(4.0).fail().ask(6.0).no_answer().next_query == 10.0


def test_the_first_log_change_since_the_last_query_counts() -> None:
    seen = Seen(asked=15.0, answers=4).log_change(20.0, exists=True).log_change(20.5, exists=True)
    assert seen.next_query == 21.0
    assert seen.ask(21.0).answer().next_query == 51.0  # asked: the change is spent


def test_a_log_change_while_a_query_is_out_moves_nothing() -> None:
    seen = Seen(asked=15.0, answers=3).ask(15.0).log_change(15.5, exists=True)
    assert (seen.log, seen.polls) == (True, 0)  # the polls speed up all the same
    assert seen.answer().next_query == 35.0


def test_polls_count_since_the_last_log_change() -> None:
    seen = Seen.begin(0.0, known=True, log=True)
    intervals = []
    for _ in range(110):
        intervals.append(seen.poll)
        seen = seen.polled()
    assert intervals[:3] == [0.005, 0.00625, 0.0078125]
    # While the session starts (about 2 s), a stat every 0.02 s at most; then every 0.1 s.
    assert intervals[7:100] == [0.02] * 93 and intervals[6] < 0.02
    assert 1.8 < sum(intervals[:100]) < 2.1
    assert intervals[100:] == [0.1] * 10
    assert seen.log_change(3.0, exists=True).poll == waiting.POLL_MIN
    assert KNOWN.polled().polled().poll == waiting.POLL_MAX_PENDING  # no log yet: no speed-up


def test_a_job_held_by_a_down_partition_is_asked_about_every_30_s() -> None:
    """Issue 20: a job queued in a DOWN partition cost 13 RPCs in its first minute."""
    seen = waiting.Seen.begin(0.0, known=True, log=False)
    times = []
    now = 0.0
    while True:
        now = seen.next_query
        if now > 60:
            break
        times.append(now)
        seen = seen.ask(now).answer(held=True)
    assert times == [2.0, 32.0]  # the first answer names the reason; then every 30 s
    assert waiting.Seen.begin(0.0, known=True, log=False).ask(2.0).answer().next_query == 6.0
