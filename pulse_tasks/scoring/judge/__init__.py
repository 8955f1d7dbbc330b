"""LLM judge for the free-text ECGBench subsets (ptb-test-report, arena).

Public API (what the task hooks and ``ecgbench judge`` use):

* :func:`settings_from_env` / :func:`check_configured`: where the judge is and whether it can run;
* :func:`score_item`: judge one item (thread-safe, never raises for API failures);
* :func:`judge_items`: judge a batch concurrently; :func:`aggregate`: subset score from records;
* :func:`estimate`: dry-run calls, tokens and cost.
"""

from pulse_tasks.scoring.judge.rubrics import (
    CRITERIA,
    RUBRIC_VERSION,
    InvalidReply,
    Verdict,
    parse_reply,
)
from pulse_tasks.scoring.judge.scoring import (
    STATUS_DEFERRED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    STATUSES,
    aggregate,
    deferred_record,
    estimate,
    judge_identity,
    judge_items,
    reset_runtimes,
    score_item,
)
from pulse_tasks.scoring.judge.settings import (
    DEFAULT_MODEL,
    JudgeNotConfiguredError,
    JudgeSettings,
    check_configured,
    redact,
    settings_from_env,
)

__all__ = [
    "CRITERIA", "DEFAULT_MODEL", "RUBRIC_VERSION", "STATUS_DEFERRED", "STATUS_FAILED", "STATUS_OK", "STATUS_SKIPPED", "STATUSES",
    "InvalidReply", "JudgeNotConfiguredError", "JudgeSettings", "Verdict",
    "aggregate", "check_configured", "deferred_record", "estimate", "judge_identity", "judge_items", "parse_reply", "redact",
    "reset_runtimes", "score_item", "settings_from_env",
]
