"""lmms-eval task hooks for the nine ECGBench subsets.

`yaml_tasks/ecgbench/utils.py` only re-exports these names: lmms-eval loads that file by path,
outside `sys.modules`, so the real code lives here (one copy of module state, normal imports).

Documents are the normalized rows of `pulse_tasks.data.sources` (id, subset, image, image_path,
questions, answers, gold_options). Scoring records come from `pulse_tasks.scoring.metrics` (automatic
subsets) or `pulse_tasks.scoring.judge` (report and arena), one record per item, stored under every
metric name so that lmms-eval's samples file keeps it and each aggregation recomputes its corpus
metric from the records.

Judged records reach lmms-eval in four states (``status`` ok, failed, skipped, deferred) and
carry ``score`` only when ok: lmms-eval 0.7.3 computes a CLT standard error over every per-item
``score`` it finds, and a ``None`` there crashes the whole run before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import partial
from typing import Any

from pulse_tasks.data.subsets import BY_CONFIG, SUBSETS, Subset, get_subset
from pulse_tasks.results.summary import metric_names, metric_value

# Per-item record key set by process_results (the item's generation failed or was empty) and the
# judge record lmms-eval accepts: pulse_tasks.scoring.records.
from pulse_tasks.scoring.records import GENERATION_FAILED_KEY, lmms_eval_safe

log = logging.getLogger("ecgbench")

# Lower is better only for Hamming loss and the failure counts (the metric names: summary.metric_names).
LOWER_IS_BETTER = frozenset({"hamming_loss_paper", "hamming_loss_strict", "unparsed", "invalid_rate", "judge_failed",
                             "judge_skipped"})

# Environment switch for runs that only generate (lmms-eval's --predict_only is applied after the
# tasks are built, so the judge check at task load cannot see it through the API).
SKIP_JUDGE_CHECK_ENV = "ECGBENCH_SKIP_JUDGE_CHECK"


# ---------------------------------------------------------------- documents


def process_docs(dataset: Any, subset: str) -> Any:
    """Normalize a loaded split (hub rows or already-normalized rows) for one subset.

    For the judged subsets this is also the fail-fast point: it runs when the task is built,
    before any model inference, and stops a run that has no judge configured.
    """
    from pulse_tasks.data.sources import normalize

    spec = get_subset(subset)
    if spec.judged:
        _check_judge_configured(spec)
    return normalize(dataset, spec.config)


def _predict_only_requested() -> bool:
    """Generate now, judge later: the judged items are recorded as deferred, no judge is called."""
    # The CLI flag is visible in argv; API users set the environment switch instead.
    return "--predict_only" in sys.argv or os.environ.get(SKIP_JUDGE_CHECK_ENV, "") not in ("", "0")


def _check_judge_configured(spec: Subset) -> None:
    if _predict_only_requested():
        return
    from pulse_tasks.scoring import judge

    judge.check_configured(judge.settings_from_env())


# One process_docs per subset: hub rows carry no subset name. partial keeps them plain data.
PROCESS_DOCS = {s.config: partial(process_docs, subset=s.config) for s in SUBSETS}


def doc_to_visual(doc: dict) -> list:
    """The ECG image, first and only visual (the reference puts the image before the question)."""
    image = doc["image"]
    return [image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image]


def _specific(kwargs: dict | None) -> tuple[str, str]:
    kwargs = kwargs or {}
    return kwargs.get("pre_prompt", "") or "", kwargs.get("post_prompt", "") or ""


def _question(doc: dict, turn: int, lmms_eval_specific_kwargs: dict | None) -> str:
    pre, post = _specific(lmms_eval_specific_kwargs)
    return f"{pre}{doc['questions'][turn]}{post}"


def history_transcript(questions: list[str], outputs: list[str], next_question: str) -> str:
    """A turn for adapters that keep no history: earlier turns spelled out in the text."""
    lines = ["This continues a conversation about the same ECG image."]
    for q, a in zip(questions, outputs):
        lines.append(f"Earlier question: {q}\nYour earlier answer: {a}")
    lines.append(f"Next question: {next_question}")
    return "\n\n".join(lines)


def doc_to_text(
    doc: dict,
    lmms_eval_specific_kwargs: dict | None = None,
    previous_output: list[str] | None = None,
    round_idx: int | None = None,
    previous_round_info: dict | None = None,
) -> Any:
    """The question text; for later arena rounds lmms-eval's multi-round 5-tuple.

    Round r >= 1 returns (visuals, text, terminal, previous_output, info). `text` spells the
    history out for adapters that keep none; `info["ecgbench_turns"]` carries the same history
    as structured (question, answer) pairs for adapters that build a real multi-turn prompt
    (our `pulse` adapter does).
    """
    if not round_idx:
        return _question(doc, 0, lmms_eval_specific_kwargs)
    outputs = list(previous_output or [])
    questions = [_question(doc, i, lmms_eval_specific_kwargs) for i in range(len(doc["questions"]))]
    if round_idx >= len(questions):
        return None, None, True, outputs, previous_round_info
    turns = [[q, a] for q, a in zip(questions[:round_idx], outputs[:round_idx])]
    info = {"ecgbench_turns": turns, "question": questions[round_idx], "round_idx": round_idx}
    text = history_transcript(questions[:round_idx], outputs[:round_idx], questions[round_idx])
    return doc_to_visual(doc), text, False, outputs, info


def _user(content_text: str, image: Any | None) -> dict:
    content: list[dict] = []
    if image is not None:
        content.append({"type": "image", "url": image})
    content.append({"type": "text", "text": content_text})
    return {"role": "user", "content": content}


def doc_to_messages(
    doc: dict,
    lmms_eval_specific_kwargs: dict | None = None,
    round_idx: int | None = None,
    previous_output: list[str] | None = None,
    previous_round_info: dict | None = None,
) -> Any:
    """Chat messages: the image first, then the question; later arena rounds carry the full history.

    Chat adapters are stateless between rounds (lmms-eval's vllm/openai chat loops send each
    round's messages as they are), so round r's messages hold every earlier turn.
    """
    image = doc_to_visual(doc)[0]
    questions = [_question(doc, i, lmms_eval_specific_kwargs) for i in range(len(doc["questions"]))]
    if not round_idx:
        return [_user(questions[0], image)]
    outputs = list(previous_output or [])
    if round_idx >= len(questions):
        return None, True, outputs, previous_round_info
    messages = [_user(questions[0], image)]
    for i in range(round_idx):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": outputs[i]}]})
        messages.append(_user(questions[i + 1], None))
    return messages, False, outputs, {"round_idx": round_idx}


def doc_to_target(doc: dict) -> str:
    """The gold answer of the first turn (ECG-QA: the gold options joined by ', ')."""
    return doc["answers"][0]


# ---------------------------------------------------------------- scoring


def _responses(results: list) -> list[str]:
    # generate_until gives [text]; multi-round gives [[turn1, turn2]] (or [turn1, turn2]).
    if results and isinstance(results[0], (list, tuple)):
        return list(results[0])
    return list(results)


def process_results(doc: dict, results: list) -> dict[str, dict]:
    """Score one item; the same record goes under every metric name of its subset."""
    from pulse_tasks.scoring.failures import response_failed

    spec = BY_CONFIG[doc["subset"]]
    responses = _responses(results)
    if spec.judged:
        from pulse_tasks.scoring import judge

        answer: Any = (responses[0] if responses else None) if spec.rule.turns == 1 else responses
        if _predict_only_requested():
            record = judge.deferred_record(spec.config, doc["id"])
        else:
            record = judge.score_item(spec.config, doc, answer)
        record = lmms_eval_safe(record)
    else:
        from pulse_tasks.scoring import metrics

        answer = responses[0] if responses else None
        record = metrics.score_item(spec, doc, answer)
    record = {**record, "subset": spec.config, "id": doc["id"], GENERATION_FAILED_KEY: response_failed(answer)}
    return {name: record for name in metric_names(spec)}


def aggregate_metric(records: list[dict], metric: str, task: str | None = None) -> float:
    """Corpus value of one metric name (``summary.metric_value``); at a task's first metric, an
    ERROR when too many generations failed. ``task`` names the lmms-eval task in that line when it
    is not the subset's own (the gold-history arena)."""
    if records:
        spec = BY_CONFIG[records[0]["subset"]]
        if metric == metric_names(spec)[0]:
            _log_generation_failures(spec, records, task or spec.task)
    return metric_value(records, metric)


def _log_generation_failures(spec: Subset, records: list[dict], task: str) -> None:
    """At the end of a task (its first metric's aggregation): an ERROR when too many generations failed."""
    from pulse_tasks.scoring.failures import summarize

    summary = summarize(spec.config, [r.get("id") for r in records], [bool(r.get(GENERATION_FAILED_KEY)) for r in records])
    if summary.over_threshold:
        log.error("ECGBench %s (%s)", summary.message(), task)


AGGREGATIONS = {
    name: partial(aggregate_metric, metric=name)
    for spec in SUBSETS
    for name in metric_names(spec)
}


# ---------------------------------------------------------------- arena for adapters without multi-round
#
# `ecgbench_arena` needs `generate_until_multi_round` (round 2 carries the model's own first
# answer, as in the paper). Many adapters do not implement it (lmms-eval's openai and llava_hf
# raise NotImplementedError). `ecgbench_arena_gold_history` poses every turn as its own
# `generate_until` request whose history holds the GOLD earlier answers, then judges each
# conversation (both turns in one judge call) in the aggregation. Its numbers are not the
# paper's protocol and are labelled so in the metric names' task.

ARENA_GOLD_TASK = "ecgbench_arena_gold_history"


def process_docs_arena_gold_history(dataset: Any) -> Any:
    """One document per (conversation, turn); turn k's history holds the gold answers before it."""
    import datasets

    base = process_docs(dataset, subset="arena")
    rows: list[dict] = []
    for doc in base:
        for turn in range(len(doc["questions"])):
            rows.append({**doc, "conversation_id": doc["id"], "turn": turn, "id": f"{doc['id']}#turn{turn + 1}"})
    features = base.features.copy()
    features["conversation_id"] = datasets.Value("string")
    features["turn"] = datasets.Value("int32")
    return datasets.Dataset.from_list(rows, features=features)


def doc_to_text_gold_history(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Turn k's text; earlier turns spelled out with their gold answers."""
    turn = doc["turn"]
    questions = [_question(doc, i, lmms_eval_specific_kwargs) for i in range(turn + 1)]
    if turn == 0:
        return questions[0]
    return history_transcript(questions[:turn], doc["answers"][:turn], questions[turn])


def doc_to_messages_gold_history(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[dict]:
    """Turn k's chat messages: the image, earlier questions with their gold answers, the question."""
    turn = doc["turn"]
    image = doc_to_visual(doc)[0]
    questions = [_question(doc, i, lmms_eval_specific_kwargs) for i in range(turn + 1)]
    messages = [_user(questions[0], image)]
    for i in range(turn):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": doc["answers"][i]}]})
        messages.append(_user(questions[i + 1], None))
    return messages


def process_results_gold_history(doc: dict, results: list) -> dict[str, dict]:
    """Keep the turn's response; the judge runs per conversation in the aggregation."""
    from pulse_tasks.scoring.failures import response_failed

    responses = _responses(results)
    response = responses[0] if responses else None
    record = {
        "subset": "arena",
        "id": doc["conversation_id"],
        "turn": doc["turn"],
        "response": response,
        "questions": list(doc["questions"]),
        "answers": list(doc["answers"]),
        GENERATION_FAILED_KEY: response_failed(response),
    }
    return {name: record for name in metric_names(BY_CONFIG["arena"])}


def judge_conversations(turn_records: list[dict]) -> list[dict]:
    """Judge records, one per conversation, from per-turn records (both turns in one judge call).

    Each carries ``generation_failed`` (a turn failed, was empty or is missing), as the other
    tasks' records do; with judging deferred (ECGBENCH_SKIP_JUDGE_CHECK) they are ``deferred``.
    """
    from pulse_tasks.scoring import judge
    from pulse_tasks.scoring.failures import response_failed

    by_conv: dict[str, dict[int, dict]] = {}
    for rec in turn_records:
        by_conv.setdefault(rec["id"], {})[rec["turn"]] = rec
    docs, answers = [], []
    for conv_id in sorted(by_conv):
        turns = by_conv[conv_id]
        first = next(iter(turns.values()))
        docs.append({"id": conv_id, "subset": "arena", "questions": first["questions"], "answers": first["answers"]})
        answers.append([turns[k]["response"] if k in turns else None for k in range(len(first["questions"]))])
    if _predict_only_requested():
        records = [judge.deferred_record("arena", doc["id"]) for doc in docs]
    else:
        records = judge.judge_items("arena", docs, answers)  # concurrent, up to the judge's own limit
    return [{**rec, GENERATION_FAILED_KEY: response_failed(answer)} for rec, answer in zip(records, answers)]


_GOLD_JUDGED: dict[str, list[dict]] = {}  # judge records per set of responses: five metrics, one judging


def aggregate_gold_history(records: list[dict], metric: str) -> float:
    """Corpus value of one arena metric for the gold-history variant."""
    import hashlib

    key = hashlib.sha256(json.dumps([[r["id"], r["turn"], r["response"]] for r in records], sort_keys=True).encode()).hexdigest()
    if key not in _GOLD_JUDGED:
        _GOLD_JUDGED[key] = [{**rec, "subset": "arena"} for rec in judge_conversations(records)]
    return aggregate_metric(_GOLD_JUDGED[key], metric, task=ARENA_GOLD_TASK)


AGGREGATIONS_GOLD_HISTORY = {
    name: partial(aggregate_gold_history, metric=name) for name in metric_names(BY_CONFIG["arena"])
}
