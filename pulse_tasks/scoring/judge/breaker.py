"""The judge's circuit breaker: stop judging on evidence of an outage, not on per-item failures.

The rule (README "The judge", docs/interfaces.md):

* **Evidence of an outage** is an attempt that got no HTTP reply at all (connection refused or
  reset, DNS failure, timeout) and *started* after the start of the latest attempt that did get
  one. Any HTTP status counts as a reply: a 500 for one prompt while other prompts get verdicts
  is that item's failure (its own bounded retries), not the server's. Ordering by start time,
  across every call in flight, keeps retries that finish last from looking like an outage.
* The breaker **trips** (open) when that evidence covers at least two items and either its start
  times span one timeout (``ECGBENCH_JUDGE_TIMEOUT``) or one of those items has spent all its
  attempts. Calls in flight then stop retrying, and the task or batch it tripped in fails its
  remaining items at once (``judging stopped: ...``; the answers are kept for ``ecgbench judge``).
* **Half-open**: the first item of the next task or batch is a probe: one attempt, the others
  wait for it. Any HTTP reply closes the breaker and judging goes on; no reply opens it again for
  that task or batch. So every judged task of a run gets its own chance.

What it does not stop: a gateway that answers every call with a 5xx (a reply each time) costs every
item its own bounded attempts (``ECGBENCH_JUDGE_MAX_ATTEMPTS``); with HTTP errors the server cannot
be told from the prompts it fails, and failing items that could be judged is the worse mistake.

This is Nygard's circuit breaker (closed, open, half-open) with the half-open trial taken per
task or batch instead of after a fixed delay: a task is the unit a user reruns or judges later.
It is written here rather than taken from a library (pybreaker, circuitbreaker) because those
trip on a count of failed calls in completion order, which is exactly what misreads concurrent
per-item failures as an outage.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
MIN_ITEMS = 2  # evidence from one item alone may be that item's prompt (one that always times out)


@dataclass(frozen=True)
class Admission:
    """Whether an item may call the judge now; ``probe``: its first attempt is the half-open trial."""

    allowed: bool
    probe: bool = False
    reason: str | None = None  # why not (the trip's reason)


class Breaker:
    """Thread-safe breaker for one judge configuration; ``clock`` is injectable for tests."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._cond = threading.Condition()
        self.state = CLOSED
        self.scope: Hashable | None = None  # the task or batch the breaker tripped (or is probing) in
        self.reason: str | None = None
        self.trips = 0
        self._ids = itertools.count(1)
        self._last_reply_start = -math.inf
        self._evidence: list[tuple[float, int]] = []  # (start, call) of attempts with no reply, after the last reply's start
        self._spent: dict[int, float] = {}  # call -> start of its last attempt, for calls that ended with no reply

    def new_call(self) -> int:
        """An id for one item's call (its attempts share it)."""
        with self._cond:
            return next(self._ids)

    def admit(self, scope: Hashable) -> Admission:
        """Closed: go. Open in ``scope``: refused. Open elsewhere: this item probes (half-open).
        While a probe is out, wait for its outcome."""
        with self._cond:
            while self.state == HALF_OPEN:
                self._cond.wait()
            if self.state == CLOSED:
                return Admission(True)
            if scope == self.scope:
                return Admission(False, reason=self.reason)
            self.state, self.scope = HALF_OPEN, scope
            log.warning("judge: probing with one call before judging this task or batch (stopped before: %s)", self.reason)
            return Admission(True, probe=True)

    def blocked(self, probe: bool) -> str | None:
        """The reason a call in flight must not make another attempt (None: go on)."""
        with self._cond:
            return None if probe or self.state == CLOSED else self.reason

    def attempt(self, call: int, scope: Hashable, start: float, replied: bool, *, last: bool = False,
                probe: bool = False, error: str = "") -> None:
        """Record one attempt: ``start`` from :attr:`clock` when it was sent, ``replied`` when any
        HTTP reply came back, ``last`` when the call makes no further attempt."""
        with self._cond:
            if replied:
                if start > self._last_reply_start:
                    self._last_reply_start = start
                    self._evidence = [(s, c) for s, c in self._evidence if s > start]
                    self._spent = {c: s for c, s in self._spent.items() if s > start}
                if probe and self.state == HALF_OPEN:
                    self._set(CLOSED, None, None)
                    log.warning("judge: the probe got a reply; judging goes on")
                return
            if start > self._last_reply_start:
                self._evidence.append((start, call))
                if last:
                    self._spent[call] = start
            if probe and self.state == HALF_OPEN:
                self._trip(scope, f"the probe call got no reply ({error})")
            elif self.state == CLOSED and self._outage():
                calls = {c for _, c in self._evidence}
                self._trip(scope, f"no reply from the judge for {len(self._evidence)} attempt(s) of {len(calls)} items "
                                  f"(last: {error})")

    def probe_over(self, admission: Admission) -> None:
        """The probe item is done; a probe that never got to call (budget, cache) reopens nothing."""
        if not admission.probe:
            return
        with self._cond:
            if self.state == HALF_OPEN:  # no attempt was recorded: let the next item probe
                self._set(OPEN, self.scope, self.reason)
                self.scope = None

    def _outage(self) -> bool:
        if len({c for _, c in self._evidence}) < MIN_ITEMS:
            return False
        starts = [s for s, _ in self._evidence]
        return max(starts) - min(starts) >= self.window_s or bool(self._spent)

    def _trip(self, scope: Hashable, reason: str) -> None:
        self.trips += 1
        self._set(OPEN, scope, reason)
        self._evidence.clear()
        self._spent.clear()
        log.error("judge stopped for this task or batch: %s. Its remaining items are marked failed (answers kept: judge them "
                  "later with `ecgbench judge` on the samples file); the next task or batch probes the judge first.",
                  reason)

    def _set(self, state: str, scope: Hashable | None, reason: str | None) -> None:
        self.state, self.scope, self.reason = state, scope, reason
        self._cond.notify_all()
