"""The judge's circuit breaker as a state machine, on a hand-driven clock (no server, no threads
racing): what counts as evidence of an outage, when it trips, and the half-open probe per scope.
The same rules through the real client and the lmms-eval CLI: tests/test_judge_server.py and
tests/test_judged_run_e2e.py."""

from __future__ import annotations

import threading

import pytest

from pulse_tasks.scoring.judge.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def no_reply(b: Breaker, call: int, start: float, scope: str = "report", **kw) -> None:
    b.attempt(call, scope, start, False, error="APITimeoutError", **kw)


def test_one_item_is_never_an_outage(clock: Clock) -> None:
    b = Breaker(window_s=10, clock=clock)
    a = b.new_call()
    for t in (0, 20, 40):  # far more than the window, and out of attempts
        no_reply(b, a, t, last=t == 40)
    assert b.state == CLOSED and b.admit("report").allowed


def test_two_items_trip_on_a_spent_item_or_the_window(clock: Clock) -> None:
    b = Breaker(window_s=10, clock=clock)
    a, c = b.new_call(), b.new_call()
    no_reply(b, a, 0)
    no_reply(b, c, 1)
    assert b.state == CLOSED  # two items, 1 s apart, nobody out of attempts: a blip is ridden out
    no_reply(b, a, 2, last=True)  # a spent its attempts
    assert b.state == OPEN and "2 items" in b.reason
    b2 = Breaker(window_s=10, clock=clock)
    a, c = b2.new_call(), b2.new_call()
    no_reply(b2, a, 0)
    no_reply(b2, c, 9)
    assert b2.state == CLOSED
    no_reply(b2, c, 10)  # the evidence spans the window
    assert b2.state == OPEN


def test_a_reply_to_a_later_call_clears_the_evidence_an_earlier_one_does_not(clock: Clock) -> None:
    """Ordering is by start time: a reply to a call that started before the failures (and merely came
    back after them) is no proof the server still answers."""
    b = Breaker(window_s=10, clock=clock)
    a, c, d = b.new_call(), b.new_call(), b.new_call()
    no_reply(b, a, 5)
    b.attempt(d, "report", 4, True)  # started before a's failure: the evidence stays
    no_reply(b, c, 16)
    assert b.state == OPEN
    b = Breaker(window_s=10, clock=clock)
    a, c, d = b.new_call(), b.new_call(), b.new_call()
    no_reply(b, a, 5)
    b.attempt(d, "report", 6, True)  # started after it and answered: the server is up
    no_reply(b, c, 16, last=True)
    assert b.state == CLOSED  # only c's failure is left: one item


def test_http_errors_are_replies(clock: Clock) -> None:
    """Items failing with HTTP 500 (a reply) interleaved with timeouts of others: each 500 that
    started later clears the timeouts before it."""
    b = Breaker(window_s=10, clock=clock)
    for t in range(0, 60, 2):
        no_reply(b, b.new_call(), t, last=True)
        b.attempt(b.new_call(), "report", t + 1, True)  # a 500 for another prompt
    assert b.state == CLOSED


def test_open_refuses_its_scope_and_probes_the_next(clock: Clock) -> None:
    b = Breaker(window_s=10, clock=clock)
    a, c = b.new_call(), b.new_call()
    no_reply(b, a, 0, last=True)
    no_reply(b, c, 1)
    assert b.state == OPEN and b.blocked(probe=False) and b.blocked(probe=True) is None
    refused = b.admit("report")
    assert not refused.allowed and refused.reason == b.reason
    probe = b.admit("arena")
    assert probe.allowed and probe.probe and b.state == HALF_OPEN

    waited: list = []
    waiter = threading.Thread(target=lambda: waited.append(b.admit("arena")))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # the others wait for the probe's outcome
    no_reply(b, b.new_call(), 30, scope="arena", probe=True)
    waiter.join(5)
    assert b.state == OPEN and "probe call got no reply" in b.reason
    assert waited and not waited[0].allowed  # arena's items now fail at once
    assert b.trips == 2

    probe = b.admit("batch-3")
    assert probe.probe
    b.attempt(b.new_call(), "batch-3", 40, True, probe=True)  # any HTTP reply closes it
    assert b.state == CLOSED and b.admit("batch-3").allowed and b.admit("report").allowed


def test_a_probe_that_never_called_lets_the_next_item_probe(clock: Clock) -> None:
    b = Breaker(window_s=10, clock=clock)
    a, c = b.new_call(), b.new_call()
    no_reply(b, a, 0, last=True)
    no_reply(b, c, 1)
    probe = b.admit("arena")
    b.probe_over(probe)  # e.g. the call budget was spent: no attempt made
    assert b.state == OPEN and b.admit("arena").probe
