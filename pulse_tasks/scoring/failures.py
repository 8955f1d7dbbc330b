"""Generation failures per subset: when too many answers are failure markers or empty, say so.

Paper mode gives a failed or empty answer chance credit (by design), so a run whose generations
mostly failed (CUDA error, unreadable images) would still print plausible numbers. The lmms-eval
hooks log an ERROR at the end of such a task, `ecgbench report` shows a banner on the subset and
`ecgbench submit` refuses it unless told otherwise. One rule for all three: this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pulse_tasks.scoring import parsing

# More than 5% of a subset's items without a real answer: its numbers mostly measure the failures.
FAILURE_THRESHOLD = 0.05
N_FIRST_IDS = 5  # failed item ids named in a message (enough to find the cause, short enough to read)


def response_failed(response: Any) -> bool:
    """True for a generation that gave no answer: our adapter's or lmms-eval's failure marker, an
    empty or missing text; for multi-turn answers (the arena) when any turn is such."""
    if isinstance(response, (list, tuple)):
        return not response or any(response_failed(turn) for turn in response)
    return parsing.is_failed_response(response) or parsing.is_invalid_response(response)


@dataclass(frozen=True)
class FailureSummary:
    """How many of a subset's items failed to generate, and which came first."""

    subset: str
    n: int
    failed: int
    first_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.failed / self.n if self.n else 0.0

    @property
    def over_threshold(self) -> bool:
        return self.rate > FAILURE_THRESHOLD

    def message(self) -> str:
        return (f"{self.subset}: {self.failed} of {self.n} generations failed or were empty ({self.rate:.0%} > "
                f"{FAILURE_THRESHOLD:.0%}); its scores mostly measure the failures (paper mode gives them "
                f"chance credit). First failed ids: {', '.join(self.first_ids)}")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "failed": self.failed, "rate": round(self.rate, 4), "threshold": FAILURE_THRESHOLD,
                "over_threshold": self.over_threshold, "first_ids": list(self.first_ids)}


def summarize(subset: str, ids: Sequence[Any], failed: Sequence[bool]) -> FailureSummary:
    """The summary of one subset from item ids and their failure flags (same order)."""
    bad = [str(i) for i, f in zip(ids, failed) if f]
    return FailureSummary(subset=subset, n=len(failed), failed=len(bad), first_ids=bad[:N_FIRST_IDS])


def summarize_responses(subset: str, ids: Sequence[Any], responses: Sequence[Any]) -> FailureSummary:
    """:func:`summarize` with the flags read from the responses themselves."""
    return summarize(subset, ids, [response_failed(r) for r in responses])
