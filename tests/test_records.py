"""pulse_tasks.scoring.records: typed records write today's JSON and read every earlier version's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pulse_tasks.results.runs import synthetic_run
from pulse_tasks.scoring import judge, metrics, records

ROOT = Path(__file__).resolve().parents[1]


def _doc(subset: str) -> dict:
    if subset == "mmmu-ecg":
        return {"id": "m1", "questions": ["Which? A. x B. y C. z D. w"], "answers": ["B"]}
    if subset == "ecgqa-test":
        return {"id": "q1", "questions": ["Which? Options: yes, no. Only answer based on the given Options "
                                          "without any explanation."], "answers": ["yes"], "gold_options": ["yes"]}
    return {"id": "p1", "questions": ["What are the labels?"], "answers": ["NORM; MI"]}


@pytest.mark.parametrize("subset,response", [("mmmu-ecg", "B"), ("mmmu-ecg", None), ("ecgqa-test", "yes"),
                                             ("ptb-test", "MI"), ("ptb-test", "[LMMS_EVAL_REQUEST_FAILED x]")])
def test_score_records_round_trip_key_for_key(subset: str, response: object) -> None:
    rec = {**metrics.score_item(subset, _doc(subset), response), records.GENERATION_FAILED_KEY: False}
    typed = records.ScoreRecord.from_dict(rec)
    assert json.dumps(typed.to_dict()) == json.dumps(rec)  # values and key order: samples files unchanged


def test_synthetic_run_records_round_trip() -> None:
    recs, _ = synthetic_run(seed=3, scale=0.02)
    for subset, items in recs.items():
        for rec in items:
            cls = records.JudgeRecord if records.is_judged(rec) else records.ScoreRecord
            assert json.dumps(cls.from_dict(rec).to_dict()) == json.dumps(rec), subset


def test_records_of_earlier_versions_are_read() -> None:
    # before strict versions and explanations were recorded: no strict_version, no explain, no kind
    old = {"id": "x", "subset": "mmmu-ecg", "status": "ok", "failed": False, "missing": False, "gold": "B",
           "paper": "B", "strict": "A", "paper_credit": 1.0, "strict_correct": False, "unparsed": False,
           "invalid": False}
    typed = records.ScoreRecord.from_dict(old)
    assert typed.kind == "letter" and typed.version == records.LEGACY_STRICT_VERSION and typed.explain is None
    assert typed.to_dict() == old  # nothing added on the way back
    assert records.strict_version_of(old) == records.LEGACY_STRICT_VERSION
    assert records.strict_version_of(old, default=None) is None
    assert records.is_correct(old, "paper") is True and records.is_correct(old, "strict") is False
    # judge records from before judge states: a finite score is ok, no score is failed
    assert records.judge_ok({"id": "r", "subset": "arena", "score": 70.0})
    assert records.judge_failed({"id": "r", "subset": "arena", "score": None, "error": "HTTP 500"})
    assert records.judge_score({"id": "r", "subset": "ptb-test-report", "score": 70.0}) == 70.0
    assert records.outcome({"id": "r", "subset": "arena", "score": 70.0}) == "judge ok 70.0"


def test_judge_records_carry_a_score_only_when_ok() -> None:
    deferred = judge.deferred_record("arena", "a1")
    assert deferred["status"] == records.JUDGE_DEFERRED and deferred["score"] is None
    assert records.JudgeRecord.from_dict(deferred).to_dict() == deferred
    assert records.judge_score(deferred) is None and not records.judge_failed(deferred)
    assert records.outcome(deferred) == "judge deferred"
    assert "score" not in records.lmms_eval_safe(deferred)
    ok = {**deferred, "status": records.JUDGE_OK, "score": 80.0}
    assert records.lmms_eval_safe(ok) == ok and records.judge_score(ok) == 80.0


def test_outcomes_name_each_state() -> None:
    right = metrics.score_item("mmmu-ecg", _doc("mmmu-ecg"), "B")
    unparsed = metrics.score_item("mmmu-ecg", _doc("mmmu-ecg"), "no idea")
    failed = metrics.score_item("mmmu-ecg", _doc("mmmu-ecg"), records.failed_text("CUDA error"))
    missing = metrics.score_item("mmmu-ecg", _doc("mmmu-ecg"), None)
    assert [records.outcome(r) for r in (right, unparsed, failed, missing)] == [
        records.CORRECT, records.INVALID, records.FAILED, records.MISSING]
    assert records.outcome(unparsed, "paper") == records.WRONG  # 1/4 expected credit is not "right"
    assert records.outcome(None) == records.ABSENT


def test_no_module_but_records_defines_a_state_word_or_failure_marker() -> None:
    """Constants holding a record state word, and failure-marker literals, live in records.py only."""
    states = "|".join(re.escape(w) for w in (*records.INVALID_STATUSES, *records.JUDGE_STATUSES, records.STATUS_MISSING,
                                              records.CORRECT, records.WRONG, records.INVALID, records.FAILED))
    constant = re.compile(rf'^[A-Z_][A-Z0-9_, ]*=\s*("[^"]*",\s*)*"({states})"\s*(,|#|$)', re.M)
    marker = re.compile(r'["\'](\[ECGBENCH_GENERATION_FAILED|\[LMMS_EVAL_REQUEST_FAILED)')
    offenders = []
    for folder in ("pulse_tasks", "pulse_app", "pulse_models", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path.name != "records.py" and (constant.search(text) or marker.search(text)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    assert marker.search((ROOT / "pulse_tasks" / "scoring" / "records.py").read_text(encoding="utf-8"))  # the test can fail
