"""Judge records: score one item, judge a batch, aggregate records into a subset score.

Every item ends in an explicit state: ``ok`` (scored), ``failed`` (the judge could not score it:
API error, invalid replies, generation failure, bad input), ``skipped`` (past the call budget) or
``deferred`` (no judge run: generate now, judge later with ``ecgbench judge``). Only ``ok`` items
enter the mean; the others are counted and flag the score. A failed call is never a 0.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pulse_tasks.data.subsets import JUDGED, KINDS, Subset
from pulse_tasks.scoring.judge.cache import JudgeCache, cache_key
from pulse_tasks.scoring.judge.client import JudgeCallError, JudgeClient
from pulse_tasks.scoring.judge.costs import (
    approx_prompt_tokens,
    cost_usd,
    summarize_estimate,
)
from pulse_tasks.scoring.judge.rubrics import (
    CRITERIA,
    InvalidReply,
    JudgeKind,
    build_messages,
    judge_kind,
    parse_reply,
    rubric_identity,
    rubric_text,
    sha256,
)
from pulse_tasks.scoring.judge.settings import (
    HOW_TO_CONFIGURE,
    JudgeSettings,
    key_notice,
    redact,
    settings_from_env,
)
from pulse_tasks.scoring.records import JUDGE_DEFERRED as STATUS_DEFERRED
from pulse_tasks.scoring.records import JUDGE_FAILED as STATUS_FAILED
from pulse_tasks.scoring.records import JUDGE_OK as STATUS_OK
from pulse_tasks.scoring.records import JUDGE_SKIPPED as STATUS_SKIPPED
from pulse_tasks.scoring.records import JUDGE_STATUSES as STATUSES  # noqa: F401 -- the judge states, defined in records
from pulse_tasks.scoring.records import is_failure_marker, judge_record, judged_record

log = logging.getLogger(__name__)

RESPONSE_FORMAT = {"type": "json_object"}  # JSON mode, as the paper's judge
N_ERROR_EXAMPLES = 5  # distinct error messages shown in an aggregate
# A judge that hangs or goes down mid-run trips the circuit breaker (pulse_tasks.scoring.judge.breaker): the
# rest of that task or batch fails at once (answers kept, judge later) instead of spending every
# item's attempts and backoff; the next task or batch probes the judge with one call first.
_BATCHES = itertools.count(1)  # each judge_items call is its own breaker scope
CONFIG_OF = {s.kind: s.config for s in JUDGED}  # judge kind -> its subset ("report" -> "ptb-test-report")


def decoding(settings: JudgeSettings) -> dict[str, Any]:
    """Decoding parameters of a judge call (part of the cache key)."""
    return {"temperature": settings.temperature, "max_tokens": settings.max_tokens, "response_format": RESPONSE_FORMAT}


def judge_identity(settings: JudgeSettings, kind: JudgeKind) -> dict[str, Any]:
    """Who judged: model, provider, endpoint host, rubric version and hash, decoding."""
    return {"model": settings.model, "provider": settings.provider, "host": settings.host,
            **rubric_identity(kind, settings.prompt_file), "temperature": settings.temperature,
            "response_format": RESPONSE_FORMAT["type"]}


class _Runtime:
    """Process-wide state of one judge configuration: client, cache, budget, first-call gate."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self.client = JudgeClient(settings)
        self.cache = JudgeCache(settings.cache_path) if settings.cache_path else None
        self.lock = threading.Lock()
        self.calls_reserved = 0  # items sent to the API (budget units)
        self.fatal: str | None = None  # set by a 401/403/404, no quota, no chat API: later items fail at once
        self.verified = threading.Event()  # the first API call has come back
        self.probing = False
        notice = key_notice(settings)  # once per judge configuration and process
        log.log(logging.WARNING if settings.key_source == "none" else logging.INFO, "%s", notice)

    def stop(self, reason: str) -> None:
        """Stop judging in this process on a fatal answer: every later item fails at once (logged
        the first time). An outage is the breaker's business (per task or batch), not this."""
        with self.lock:
            first = self.fatal is None
            self.fatal = self.fatal or reason
        if first:
            log.error("judge stopped: %s. Every further item is marked failed (its answer is kept: "
                      "judge it later with `ecgbench judge` on the samples file).", reason)

    def reserve(self) -> bool:
        """Take one unit of the call budget; False when it is spent."""
        with self.lock:
            if self.settings.max_calls is not None and self.calls_reserved >= self.settings.max_calls:
                return False
            self.calls_reserved += 1
            return True

    def enter_gate(self) -> bool:
        """True for the one thread that makes the first API call; others wait for its outcome,
        so a wrong key costs one call, not one per thread."""
        with self.lock:
            if self.verified.is_set():
                return False
            if not self.probing:
                self.probing = True
                return True
        self.verified.wait()
        return False


_RUNTIMES: dict[JudgeSettings, _Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime(settings: JudgeSettings) -> _Runtime:
    """The process-wide runtime for ``settings`` (created once)."""
    with _RUNTIMES_LOCK:
        rt = _RUNTIMES.get(settings)
        if rt is None:
            rt = _RUNTIMES[settings] = _Runtime(settings)
        return rt


def reset_runtimes() -> None:
    """Forget clients, budgets and fatal errors (a new run in the same process; tests)."""
    with _RUNTIMES_LOCK:
        for rt in _RUNTIMES.values():
            if rt.cache is not None:
                rt.cache.close()
        _RUNTIMES.clear()


def _turns(kind: JudgeKind, responses: str | Sequence[Any]) -> list[str]:
    """The response text per turn; ValueError when the shape is wrong."""
    value: Any = responses
    # lmms-eval hands over [text] or [[turn1, turn2]]: unwrap single-element lists.
    while isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    turns = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    expected = KINDS[kind].turns
    if turns is None or len(turns) != expected or not all(isinstance(t, str) for t in turns):
        raise ValueError(f"{kind} needs {expected} response text(s), got {type(responses).__name__} "
                         f"{str(responses)[:80]!r}")
    return turns


def _doc_fields(kind: JudgeKind, doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    questions, answers = list(doc.get("questions") or []), list(doc.get("answers") or [])
    expected = KINDS[kind].turns  # the arena's later turns are questions of their own
    if len(answers) < expected or (expected > 1 and len(questions) < expected):
        raise ValueError(f"doc {doc.get('id')!r} has {len(questions)} question(s) and {len(answers)} answer(s); "
                         f"{kind} needs {expected}")
    return [str(q) for q in questions[:expected]], [str(a) for a in answers[:expected]]


_record = judge_record  # one judge record's JSON (pulse_tasks.scoring.records.JudgeRecord)


def deferred_record(subset: Subset | str, doc_id: Any) -> dict[str, Any]:
    """The record of an item left for ``ecgbench judge`` (no judge call, no score)."""
    return _record(doc_id, CONFIG_OF[judge_kind(subset)], STATUS_DEFERRED, {},
                   error="not judged in this run (judge later: ecgbench judge on the samples file)")


def score_item(subset: Subset | str, doc: dict[str, Any], responses: str | Sequence[Any],
               settings: JudgeSettings | None = None, scope: Hashable = None) -> dict[str, Any]:
    """Judge one item. Thread-safe; returns a record and never raises for API, reply or input
    problems (status "failed" with the reason). Only a subset that is not judged raises.

    ``scope``: the task or batch the item belongs to, the circuit breaker's unit (default: the
    subset, i.e. the lmms-eval task): a breaker that tripped in one scope probes before the next."""
    kind = judge_kind(subset)
    config = CONFIG_OF[kind]
    doc_id = doc.get("id") if isinstance(doc, dict) else None
    try:
        settings = settings or settings_from_env()
        judge = judge_identity(settings, kind)
    except (ValueError, OSError) as exc:
        return _record(doc_id, config, STATUS_FAILED, {}, error=f"judge settings: {exc}")
    if not settings.configured:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"judge not configured. {HOW_TO_CONFIGURE}")
    try:
        questions, answers = _doc_fields(kind, doc)
        turns = _turns(kind, responses)
    except (ValueError, AttributeError, TypeError) as exc:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"invalid input: {exc}")
    if any(is_failure_marker(t) for t in turns):
        return _record(doc_id, config, STATUS_FAILED, judge, error="generation failed; response not judged")

    rt = runtime(settings)
    try:
        rubric = rubric_text(kind, settings.prompt_file)
    except OSError as exc:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"judge prompt file: {exc}")
    messages = build_messages(kind, rubric, questions, answers, turns)
    dec = decoding(settings)
    key = cache_key(settings.model, messages, dec)
    prompt_sha = sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False))[:16]
    base = {"prompt_sha": prompt_sha}

    if rt.cache is not None and (hit := rt.cache.get(key)) is not None:
        try:
            verdict = parse_reply(kind, hit[0])
            return _record(doc_id, config, STATUS_OK, judge, score=verdict.score, criteria=verdict.criteria,
                           explanations=verdict.explanations, raw=hit[0], cached=True, **base)
        except InvalidReply:
            pass  # a reply the current parser rejects: judge again
    if rt.fatal:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"judging stopped: {rt.fatal}", **base)
    scope = config if scope is None else scope
    admission = rt.client.breaker.admit(scope)
    if not admission.allowed:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"judging stopped: {admission.reason}", **base)
    try:
        if not rt.reserve():
            return _record(doc_id, config, STATUS_SKIPPED, judge,
                           error=f"judge call budget of {settings.max_calls} reached", **base)
        return _judge_call(rt, kind, messages, key, doc_id, config, judge, base, scope, admission.probe)
    finally:
        rt.client.breaker.probe_over(admission)


def _judge_call(rt: _Runtime, kind: JudgeKind, messages: list[dict[str, str]], key: str, doc_id: Any, config: str,
                judge: dict[str, Any], base: dict[str, Any], scope: Hashable, probe: bool) -> dict[str, Any]:
    """Call the judge for one item (asking again on invalid replies) and make its record."""
    settings, secrets, dec = rt.settings, rt.settings.secrets(), decoding(rt.settings)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "api_calls": 0}
    first_call = rt.enter_gate()  # the first call of the process: the others wait for it
    if rt.fatal:
        return _record(doc_id, config, STATUS_FAILED, judge, error=f"judging stopped: {rt.fatal}", **base)
    last_raw, error = None, "no reply"
    try:
        for attempt in range(1 + settings.invalid_retries):
            try:
                reply = rt.client.complete(messages, dec, scope=scope, probe=probe and attempt == 0)
            except JudgeCallError as exc:
                if exc.fatal:
                    rt.stop(str(exc))
                return _record(doc_id, config, STATUS_FAILED, judge, error=str(exc), usage=usage, **base)
            usage["api_calls"] += reply.attempts
            usage["prompt_tokens"] += reply.usage.get("prompt_tokens", 0)
            usage["completion_tokens"] += reply.usage.get("completion_tokens", 0)
            last_raw = redact(reply.text, secrets)
            try:
                verdict = parse_reply(kind, reply.text)
            except InvalidReply as exc:
                error = f"invalid judge reply: {exc}"
                log.info("item %s: %s", doc_id, error)
                continue
            if rt.cache is not None:
                rt.cache.put(key, settings.model, reply.text, {k: usage[k] for k in ("prompt_tokens", "completion_tokens")})
            return _record(doc_id, config, STATUS_OK, judge, score=verdict.score, criteria=verdict.criteria,
                           explanations=verdict.explanations, raw=last_raw, usage=usage, **base)
        return _record(doc_id, config, STATUS_FAILED, judge, raw=last_raw, usage=usage,
                       error=f"{error} (after {1 + settings.invalid_retries} replies)", **base)
    except Exception as exc:
        log.exception("unexpected judge failure on item %s", doc_id)
        return _record(doc_id, config, STATUS_FAILED, judge, raw=last_raw, usage=usage,
                       error=redact(f"unexpected {type(exc).__name__}: {exc}", secrets)[:500], **base)
    finally:
        if first_call:
            rt.verified.set()


def judge_items(subset: Subset | str, docs: Sequence[dict[str, Any]], responses: Sequence[Any],
                settings: JudgeSettings | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Judge many items concurrently (``settings.concurrency`` in flight); records in input order."""
    if len(docs) != len(responses):
        raise ValueError(f"{len(docs)} docs but {len(responses)} responses")
    settings = settings or settings_from_env()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(docs), desc=f"judging {subset if isinstance(subset, str) else subset.config}",
                   unit="item", dynamic_ncols=True)

    scope = ("batch", next(_BATCHES))  # the breaker gives every batch its own chance

    def one(i: int) -> dict[str, Any]:
        rec = score_item(subset, docs[i], responses[i], settings, scope=scope)
        if bar is not None:
            bar.update(1)
        return rec

    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="ecgbench-judge") as pool:
            return list(pool.map(one, range(len(docs))))
    finally:
        if bar is not None:
            bar.close()


def _mean_se(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Subset score (0-100) over the ``ok`` records; failed and skipped ones counted and flagged."""
    records = [judged_record(r) for r in records if isinstance(r, dict)]
    ok = [r for r in records if r.ok]
    states = Counter(r.status for r in records)
    n_failed, n_skipped, n_deferred = states[STATUS_FAILED], states[STATUS_SKIPPED], states[STATUS_DEFERRED]
    score, stderr = _mean_se([float(r.score) for r in ok])  # type: ignore[arg-type]
    names: list[str] = []
    for r in ok:
        names += [c for c in r.criteria if c not in names]
    criteria = {}
    for name in names:
        vals = [float(r.criteria[name]) * 10 for r in ok if name in r.criteria]
        criteria[name] = round(sum(vals) / len(vals), 4) if vals else None
    identities = []
    for r in records:
        if r.judge and r.judge not in identities:
            identities.append(r.judge)
    judge: dict[str, Any] = dict(identities[0]) if identities else {}
    if len(identities) > 1:
        judge["mixed"] = identities  # records from different judges/rubrics: the mean mixes them
    usage = {k: sum(int(r.usage.get(k, 0)) for r in records) for k in ("prompt_tokens", "completion_tokens", "api_calls")}
    usage["cached"] = sum(1 for r in records if r.cached)
    errors = Counter(r.error for r in records if r.status != STATUS_OK and r.error)
    return {
        "n": len(records), "n_judged": len(ok), "n_failed": n_failed, "n_skipped": n_skipped,
        "n_deferred": n_deferred,
        "score": None if score is None else round(score, 4),
        "stderr": None if stderr is None else round(stderr, 4),
        "criteria": criteria,
        "flagged": bool(n_failed or n_skipped or n_deferred or len(identities) > 1),
        "judge": judge, "usage": usage,
        "cost_usd": cost_usd(judge.get("model", ""), usage["prompt_tokens"], usage["completion_tokens"]),
        "errors": dict(errors.most_common(N_ERROR_EXAMPLES)),
    }


def estimate(subset: Subset | str, docs: Sequence[dict[str, Any]], responses: Sequence[Any],
             settings: JudgeSettings | None = None) -> dict[str, Any]:
    """Dry run: calls still needed (cache hits excluded), approximate tokens and cost. No API calls."""
    kind = judge_kind(subset)
    settings = settings or settings_from_env()
    rubric = rubric_text(kind, settings.prompt_file)
    cache = JudgeCache(settings.cache_path) if settings.cache_path and settings.cache_path.exists() else None
    calls = cached = tokens = invalid = 0
    try:
        for doc, resp in zip(docs, responses):
            try:
                questions, answers = _doc_fields(kind, doc)
                turns = _turns(kind, resp)
            except (ValueError, TypeError, AttributeError):
                invalid += 1
                continue
            messages = build_messages(kind, rubric, questions, answers, turns)
            if cache is not None and cache_key(settings.model, messages, decoding(settings)) in cache:
                cached += 1
                continue
            calls += 1
            tokens += approx_prompt_tokens(messages)
    finally:
        if cache is not None:
            cache.close()
    budgeted = calls if settings.max_calls is None else min(calls, settings.max_calls)
    out = {"subset": CONFIG_OF[kind], "n": len(docs), "invalid_inputs": invalid}
    out.update(summarize_estimate(settings.model, budgeted, cached, int(tokens * budgeted / calls) if calls else 0))
    if budgeted < calls:
        out["skipped_by_budget"] = calls - budgeted
    out["criteria"] = list(CRITERIA[kind])
    return out
