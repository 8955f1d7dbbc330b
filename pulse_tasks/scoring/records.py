"""Scoring and judge records: their states, their JSON, and the questions every consumer asks.

One record per item, written into lmms-eval's samples files (under every metric name), into
``ecgbench score --records-out``, into submissions (``--attach-predictions``) and read back by the
report, ``ecgbench compare``, the leaderboard and Studio. This module is the one place that knows
their shape:

* every state word: a response's ``status`` (``STATUS_*``: ok, failed, empty, not_text,
  not_utf8, missing), a judge record's ``status`` (``JUDGE_*``: ok, failed, skipped, deferred)
  and the outcome words of an item (``CORRECT`` ... ``ABSENT``), and the generation-failure
  markers (``FAILED_PREFIXES``) our adapter and lmms-eval's API adapters return instead of raising;
* the typed records: :class:`ScoreRecord` (auto-scored subsets, ``pulse_tasks.scoring.metrics``) and
  :class:`JudgeRecord` (report and arena, ``pulse_tasks.scoring.judge``). ``to_dict()`` writes the JSON
  exactly as samples files hold it (key order included); ``from_dict()`` reads records written by
  any earlier version (missing keys take their old defaults, keys it does not know are kept);
* the record questions: :func:`kind_of`, :func:`is_correct`, :func:`outcome`,
  :func:`judge_ok`, :func:`judge_score`, :func:`judge_failed`, :func:`strict_version_of`.

Records travel as plain dicts (JSON); consumers ask these functions instead of reading keys.
Pure Python, no third-party import (of this package only ``data.subsets``, pure too): the model side
(``pulse_models.engine``) imports it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pulse_tasks.data.subsets import BY_CONFIG, KINDS

# --------------------------------------------------------------------------------------------
# State words
# --------------------------------------------------------------------------------------------

# Generation-failure markers: our adapter writes FAILED_MARKER + reason, lmms-eval's API adapters
# their own; the scorers read any text that starts with one of FAILED_PREFIXES as a failure.
FAILED_MARKER = "[ECGBENCH_GENERATION_FAILED]"
FAILED_PREFIXES = ("[ECGBENCH_GENERATION_FAILED", "[LMMS_EVAL_REQUEST_FAILED")

# A response's state (ScoreRecord.status; pulse_tasks.scoring.parsing.coerce_response decides it).
STATUS_OK = "ok"
STATUS_FAILED = "failed"  # generation failure marker
STATUS_EMPTY = "empty"  # "" or whitespace only
STATUS_NOT_TEXT = "not_text"  # not a str/bytes at all
STATUS_NOT_UTF8 = "not_utf8"  # undecodable bytes
STATUS_MISSING = "missing"  # None: the item has no prediction
INVALID_STATUSES = (STATUS_EMPTY, STATUS_NOT_TEXT, STATUS_NOT_UTF8)

# A judge record's state: only ``ok`` carries a score; the others are counted, never a 0.
JUDGE_OK, JUDGE_FAILED, JUDGE_SKIPPED, JUDGE_DEFERRED = "ok", "failed", "skipped", "deferred"
JUDGE_STATUSES = (JUDGE_OK, JUDGE_FAILED, JUDGE_SKIPPED, JUDGE_DEFERRED)
# Counted as "judge_skipped" everywhere (lmms-eval's results, report, submission): items left
# unjudged without a judge error, past the call budget or deferred to `ecgbench judge`.
JUDGE_UNJUDGED = (JUDGE_SKIPPED, JUDGE_DEFERRED)

# One run's outcome on one item (Studio's table and filters).
CORRECT, WRONG, INVALID, FAILED, MISSING = "correct", "wrong", "invalid", "gen. failed", "missing"
ABSENT = "absent"  # the run has no record of this item
UNKNOWN = "unknown"  # a record whose subset or judge state cannot be told

MODES = ("paper", "strict")  # the two scoring modes of auto-scored records
GENERATION_FAILED_KEY = "generation_failed"  # set by the task hooks: the item's generation failed or was empty
LEGACY_STRICT_VERSION = 1  # what records written before the strict version was recorded were scored with


def is_failure_marker(text: str) -> bool:
    """True when ``text`` (leading whitespace ignored) is a generation-failure marker."""
    return text.lstrip().startswith(FAILED_PREFIXES)


def failed_text(reason: object) -> str:
    """Our adapter's response for an item whose generation failed: the marker and one line of reason."""
    return f"{FAILED_MARKER} {' '.join(str(reason).split())[:500]}"


# --------------------------------------------------------------------------------------------
# Typed records
# --------------------------------------------------------------------------------------------


def _extra(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


def _json(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A typed record's JSON: a record read from disk keeps its keys and their order, a new one
    writes ``names`` in order; keys added after scoring (``extra``) follow."""
    order = record.keys if record.keys is not None else names
    out = {k: record.extra[k] if k in record.extra else getattr(record, k) for k in order}
    out.update((k, v) for k, v in record.extra.items() if k not in out)
    return out


@dataclass
class ScoreRecord:
    """One auto-scored item (letter, ECG-QA or multi-label subset), in both scoring modes.

    ``status`` is the response state; ``unparsed``: paper mode found no answer; ``invalid``:
    strict mode found none (the item is wrong). Letter and ECG-QA records carry ``paper_credit``
    and ``strict_correct``; multi-label records ``gold_strict`` (the gold read by strict rules).
    ``extra`` keeps keys added after scoring (the hooks' ``generation_failed``, ...), in order.
    """

    id: str
    subset: str
    kind: str
    status: str
    failed: bool
    missing: bool
    strict_version: int | None
    gold: Any = None
    paper: Any = None
    strict: Any = None
    unparsed: bool = False
    invalid: bool = False
    paper_credit: float | None = None  # letter / ecgqa
    strict_correct: bool | None = None  # letter / ecgqa
    gold_strict: list[str] | None = None  # multilabel
    explain: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] | None = None  # a record read from disk: its keys in their order (written back as read)

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON, key for key and in the order the scorer has always written it."""
        head = ("id", "subset", "kind", "status", "failed", "missing", "strict_version")
        if self.multilabel:
            body: tuple[str, ...] = ("gold", "gold_strict", "paper", "strict", "unparsed", "invalid")
        else:
            body = ("gold", "paper", "strict", "paper_credit", "strict_correct", "unparsed", "invalid")
        return _json(self, (*head, *body, "explain"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreRecord:
        """A record as written by any version (older ones lack ``strict_version``, ``explain``...)."""
        names = _FIELDS[cls]
        values = {k: data[k] for k in names if k in data}
        values.setdefault("id", "")
        values.setdefault("subset", "")
        values.setdefault("kind", kind_of(data))
        values.setdefault("status", STATUS_OK)
        values.setdefault("failed", values["status"] == STATUS_FAILED)
        values.setdefault("missing", values["status"] == STATUS_MISSING)
        values.setdefault("strict_version", None)
        return cls(**values, extra=_extra(data, names), keys=tuple(data))

    @property
    def multilabel(self) -> bool:
        """A multi-label record (label lists in both modes), by its kind's family in ``subsets.KINDS``."""
        rule = KINDS.get(self.kind)
        return rule is not None and rule.family == "multilabel"

    @property
    def version(self) -> int:
        """The strict scoring version (records from before it was recorded: the legacy version)."""
        return LEGACY_STRICT_VERSION if self.strict_version is None else int(self.strict_version)

    def correct(self, mode: str) -> bool:
        """Right in ``mode``: full paper credit (an unparsed letter's 1/k is not right) or strict
        correctness; multi-label: the predicted label set equals that mode's gold set."""
        if self.multilabel:
            gold = self.gold if mode == "paper" else self.gold_strict
            return sorted(getattr(self, mode) or []) == sorted(gold or [])
        if mode == "paper":
            return self.paper_credit == 1.0
        return bool(self.strict_correct)


def _zero_usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "api_calls": 0}


@dataclass
class JudgeRecord:
    """One judged item (report or arena): ``score`` (0-100) and ``criteria`` (0-10) only when
    ``status`` is ok; failed, skipped and deferred items carry the reason in ``error``."""

    id: str | None
    subset: str
    status: str
    score: float | None = None
    criteria: dict[str, float] = field(default_factory=dict)
    explanations: dict[str, str] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None
    prompt_sha: str | None = None
    usage: dict[str, int] = field(default_factory=_zero_usage)
    cached: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keys: tuple[str, ...] | None = None  # a record read from disk: its keys in their order

    def to_dict(self) -> dict[str, Any]:
        return _json(self, _FIELDS[JudgeRecord])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgeRecord:
        """A record as written by any version; records from before judge states were recorded
        have no ``status``: ok when they hold a finite score, else failed."""
        names = _FIELDS[cls]
        values = {k: data[k] for k in names if k in data}
        values.setdefault("id", None)
        values.setdefault("subset", "")
        if not values.get("status"):
            values["status"] = JUDGE_OK if _finite(data.get("score")) else JUDGE_FAILED
        for key in ("criteria", "explanations", "judge"):
            if not isinstance(values.get(key), Mapping):
                values[key] = {}
        if not isinstance(values.get("usage"), Mapping):
            values["usage"] = {}
        return cls(**values, extra=_extra(data, names), keys=tuple(data))

    @property
    def ok(self) -> bool:
        """Judged: status ok with a score (the only items that enter a judge mean)."""
        return self.status == JUDGE_OK and _finite(self.score)


_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls) if f.name not in ("extra", "keys"))
                                        for cls in (ScoreRecord, JudgeRecord)}


def judge_record(doc_id: Any, subset: str, status: str, judge: Mapping[str, Any], **fields_: Any) -> dict[str, Any]:
    """A new judge record's JSON (``pulse_tasks.scoring.judge``'s scorer and ``ecgbench judge``)."""
    return JudgeRecord(None if doc_id is None else str(doc_id), subset, status, judge=dict(judge), **fields_).to_dict()


# --------------------------------------------------------------------------------------------
# Questions about one record (dicts as read from JSON)
# --------------------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def kind_of(record: Mapping[str, Any]) -> str:
    """The subset kind of a record (judge records carry no ``kind``: their subset says it)."""
    kind = record.get("kind")
    if kind:
        return str(kind)
    spec = BY_CONFIG.get(str(record.get("subset", "")))
    return spec.kind if spec else UNKNOWN


def is_judged(record: Mapping[str, Any]) -> bool:
    """A judge record (report or arena)."""
    rule = KINDS.get(kind_of(record))
    return rule is not None and rule.judged


def score_record(record: Mapping[str, Any]) -> ScoreRecord:
    return record if isinstance(record, ScoreRecord) else ScoreRecord.from_dict(record)  # type: ignore[return-value]


def judged_record(record: Mapping[str, Any]) -> JudgeRecord:
    return record if isinstance(record, JudgeRecord) else JudgeRecord.from_dict(record)  # type: ignore[return-value]


def is_correct(record: Mapping[str, Any] | None, mode: str = "strict") -> bool | None:
    """Whether the answer is right in ``mode``; None for judged items, unknown kinds and absent records."""
    if record is None or mode not in MODES:
        return None
    kind = kind_of(record)
    if kind == UNKNOWN or is_judged(record):
        return None
    return score_record(record).correct(mode)


def outcome(record: Mapping[str, Any] | None, mode: str = "strict") -> str:
    """One word for an item: correct / wrong / invalid / gen. failed / missing, or the judge's
    state (``judge ok`` with its score, ``judge failed``, ``judge skipped``, ``judge deferred``)."""
    if record is None:
        return ABSENT
    if is_judged(record):
        judged = judged_record(record)
        return f"judge {judged.status}" + (f" {judged.score:.1f}" if judged.ok else "")
    if record.get("missing"):
        return MISSING
    if record.get("failed"):
        return FAILED
    if mode == "strict" and record.get("invalid"):
        return INVALID
    return CORRECT if is_correct(record, mode) else WRONG


def judge_ok(record: Mapping[str, Any]) -> bool:
    """A judged item with a score (status ok; records without a status: a finite score)."""
    return judged_record(record).ok


def judge_failed(record: Mapping[str, Any] | None) -> bool:
    """A judged item whose judge call failed (no score)."""
    return record is not None and is_judged(record) and judged_record(record).status == JUDGE_FAILED


def judge_score(record: Mapping[str, Any] | None) -> float | None:
    """The judge's score, only when the item was judged (failed/skipped/deferred have none)."""
    if record is None or not is_judged(record):
        return None
    judged = judged_record(record)
    return float(judged.score) if judged.ok else None  # type: ignore[arg-type]


def strict_version_of(record: Mapping[str, Any], default: int | None = LEGACY_STRICT_VERSION) -> int | None:
    """The strict scoring version of an auto-scored record (``default`` when the record names
    none: it was scored before versions were recorded); None for judge records, which strict
    mode does not score."""
    if is_judged(record):
        return None
    version = record.get("strict_version")
    return default if version is None else int(version)


def lmms_eval_safe(record: Mapping[str, Any]) -> dict[str, Any]:
    """A judge record lmms-eval's aggregation accepts: ``score`` only when the item was judged
    (its CLT standard error takes every ``score`` key; a None there crashes the run)."""
    if record.get("status") == JUDGE_OK and isinstance(record.get("score"), (int, float)):
        return dict(record)
    return {k: v for k, v in record.items() if k != "score"}
