"""`ecgbench score`: rescore saved predictions of one subset in paper and strict mode.

    ecgbench score --subset ptb-test --data DIR --predictions samples.jsonl
    ecgbench score --subset ptb-test --data DIR --predictions samples.jsonl --explain ID

Reads either an lmms-eval samples file (``--log_samples`` output: ``doc_id``, maybe ``doc``,
``resps``/``filtered_resps`` and our per-metric records, which carry the item ``id``) or the
reference inference output (``question_id``/``text`` as LLaVA's model_vqa writes it, or
``id``/``response``), matches the predictions to the subset's items by id (lmms-eval lines
without an id: by ``doc_id``, the item's position in the data), scores them with
``pulse_tasks.scoring.metrics`` and prints one JSON object on stdout. Warnings (missing predictions,
invalid responses) go to stderr; unusable input exits 2 with a one-line message.

``--explain ID`` (repeatable) prints, instead of the corpus metrics, one JSON object per named
item: its response, gold, paper and strict answers and the strict ``explain`` record (which
statement was taken as the answer and that the rationale was not read, which spans matched which
label, which were negated by what trigger, why an answer is invalid; the layout is in
docs/interfaces.md). An id that is not in the data exits 2. With ``--questions-from-predictions``
the questions come from the reference output's ``prompt`` field instead of the data (no data
needed, the gold is not known and not shown): how strict mode reads any answer of a saved run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pulse_tasks.data.subsets import Subset, UnknownSubsetError, get_subset
from pulse_tasks.scoring import metrics
from pulse_tasks.scoring.predictions import (
    EXIT_INPUT_ERROR,
    LMMS_EVAL,
    MAX_LISTED_IDS,
    InputError,
    listing,
    load_docs,  # looked up here at call time: tests replace rescore.load_docs
    match_predictions,
    read_predictions,
    write_records,
)
from pulse_tasks.scoring.records import STATUS_MISSING, STATUS_OK, ScoreRecord


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ecgbench score`."""
    parser.add_argument("--subset", required=True,
                        help="hub config name (ptb-test, code15-test, ...) or task name (ecgbench_ptb)")
    parser.add_argument("--data", default=None,
                        help="ECGBench data folder (hub parquet or README json layout); "
                             "default $ECGBENCH_DATA, else the hub")
    parser.add_argument("--predictions", required=True,
                        help="lmms-eval samples JSONL, or the reference inference output JSONL")
    parser.add_argument("--ignore-extra", action="store_true",
                        help="skip predictions whose id is not in the data instead of failing")
    parser.add_argument("--records-out", default=None,
                        help="also write the per-item scoring records to this JSONL file")
    parser.add_argument("--explain", action="append", default=None, metavar="ID",
                        help="print why strict mode scored item ID as it did (repeatable), instead of the metrics")
    parser.add_argument("--questions-from-predictions", action="store_true",
                        help="with --explain: take each question from the predictions file's 'prompt' "
                             "(reference inference output) instead of the data; the gold is not shown")


def _first_text(value: object) -> object:
    """lmms-eval nests responses in lists (per request, per return): take the first leaf."""
    while isinstance(value, list):
        value = value[0] if value else None
    return value


# --------------------------------------------------------------------------------------------
# Scoring (reading and matching: pulse_tasks.scoring.predictions)
# --------------------------------------------------------------------------------------------


def _auto_scored(subset_name: str) -> Subset:
    """The subset named, which must be one scored without a judge (else InputError)."""
    try:
        subset = get_subset(subset_name)
    except UnknownSubsetError as err:
        raise InputError(str(err)) from None
    if subset.judged:
        raise InputError(f"{subset.config} is judged by an LLM: use `ecgbench judge`, not `ecgbench score`")
    return subset


def score_predictions(subset: Subset, docs: list[Mapping[str, Any]],
                      responses: Mapping[str, object]) -> tuple[dict, list[dict]]:
    """(aggregate, records): every item of ``docs`` scored; no response = ``missing``."""
    records = [metrics.score_item(subset, doc, responses.get(str(doc["id"]))) for doc in docs]
    return metrics.aggregate(subset, records), records


def score_file(subset_name: str, data: str | None, predictions_path: str, ignore_extra: bool = False,
               loader: Callable[[Subset, str | None], list[dict]] | None = None,
               warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
               responses_out: dict[str, object] | None = None) -> tuple[dict, list[dict]]:
    """Everything `ecgbench score` does, returning (result JSON object, per-item records).

    ``loader(subset, data)`` returns the normalized records; default ``load_docs`` (looked up at
    call time, so tests can replace it). ``responses_out``, when given, receives each item's
    response by id (what ``--explain`` shows).
    """
    subset = _auto_scored(subset_name)
    predictions = read_predictions(predictions_path)  # before the data: fail fast on a bad file
    # the scorer wants one text per item: unwrap lmms-eval's nesting (reference lines are as given)
    predictions = [replace(p, response=_first_text(p.response)) if p.source_format == LMMS_EVAL else p
                   for p in predictions]
    named = sorted({p.subset for p in predictions if p.subset and p.subset != subset.config})
    if named:
        raise InputError(f"{predictions_path} holds scoring records of {', '.join(named)}, "
                         f"not {subset.config}: check --subset")
    docs = (loader or load_docs)(subset, data)
    if not docs:
        raise InputError(f"no {subset.config} items in {data or 'the default source'}")
    matched = match_predictions(docs, predictions)
    if matched.extra and not ignore_extra:
        raise InputError(
            f"{len(matched.extra)} predictions for ids not in {subset.config}: {listing(matched.extra)} "
            "(wrong --subset or --data? --ignore-extra skips them)"
        )
    if matched.extra:
        warn(f"warning: ignored {len(matched.extra)} predictions for unknown ids: {listing(matched.extra)}")
    if matched.missing:
        warn(f"warning: {len(matched.missing)} of {len(docs)} items have no prediction "
             f"(unparsed in paper mode, wrong in strict mode): {listing(matched.missing)}")
    result, records = score_predictions(subset, docs, matched.responses)
    if responses_out is not None:
        responses_out.update(matched.responses)
    bad = {status: k for status, k in result["statuses"].items() if status not in (STATUS_OK, STATUS_MISSING)}
    if bad:
        warn("warning: responses that are not answers: "
             + ", ".join(f"{k} {status}" for status, k in sorted(bad.items())))
    scored = [ScoreRecord.from_dict(r) for r in records]
    unanswered = sum(1 for r in scored if r.status == STATUS_OK and r.invalid)
    if unanswered:
        warn(f"warning: {unanswered} responses hold no answer that strict mode accepts "
             f"(paper mode: {sum(1 for r in scored if r.status == STATUS_OK and r.unparsed)} unparsed)")
    formats = sorted({p.source_format for p in predictions})
    result["missing_ids"] = matched.missing[:MAX_LISTED_IDS]
    result["ignored_extra"] = len(matched.extra)
    result["source"] = {"predictions": predictions_path, "format": "+".join(formats),
                        "data": data}
    return result, records


EXPLAIN_KEYS = ("id", "subset", "status", "gold", "gold_strict", "paper", "strict", "strict_correct", "invalid")


def explanation(record: Mapping[str, Any], response: object) -> dict[str, Any]:
    """What `--explain` prints for one item: the response, the answers and the explain record."""
    out = {key: record[key] for key in EXPLAIN_KEYS if key in record}
    out["response"] = response if isinstance(response, str) or response is None else repr(response)
    out["strict_version"] = record.get("strict_version")
    out["explain"] = record.get("explain")
    return out


def explain_from_predictions(subset_name: str, predictions_path: str, wanted: list[str]) -> list[dict[str, Any]]:
    """``--explain`` without the data: each wanted item read with the question its line carries."""
    subset = _auto_scored(subset_name)
    by_id = {p.id: p for p in read_predictions(predictions_path) if p.id is not None}
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise InputError(f"--explain: no prediction {listing(unknown)} in {predictions_path}")
    no_prompt = [i for i in wanted if not by_id[i].prompt]
    if no_prompt:
        raise InputError(f"--questions-from-predictions: {listing(no_prompt)} carry no 'prompt' "
                         "(only the reference inference output does): give --data instead")
    out = []
    for item_id in wanted:
        prediction = by_id[item_id]
        placeholder = subset.letters[:1]  # the gold is not known: any letter of a letter subset, else nothing
        doc = {"id": item_id, "subset": subset.config, "questions": [prediction.prompt],
               "answers": [placeholder], "gold_options": []}
        record = metrics.score_item(subset, doc, prediction.response)
        shown = explanation(record, prediction.response)
        for key in ("gold", "gold_strict", "strict_correct"):
            shown.pop(key, None)
        shown["question"] = prediction.prompt
        shown["note"] = "question from the predictions file; gold not known"
        out.append(shown)
    return out


def run(args: argparse.Namespace) -> int:
    """Run `ecgbench score`; 0 on success, 2 on unusable input (one line on stderr)."""
    responses: dict[str, object] = {}
    if getattr(args, "questions_from_predictions", False):
        wanted = [str(i) for i in getattr(args, "explain", None) or []]
        try:
            if not wanted:
                raise InputError("--questions-from-predictions needs --explain ID")
            shown = explain_from_predictions(args.subset, args.predictions, wanted)
        except InputError as err:
            print(f"ecgbench score: error: {err}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        for item in shown:
            print(json.dumps(item, indent=2, ensure_ascii=False))
        return 0
    try:
        result, records = score_file(args.subset, args.data, args.predictions, args.ignore_extra,
                                     responses_out=responses)
        if getattr(args, "records_out", None):
            write_records(args.records_out, records)
        wanted = [str(i) for i in getattr(args, "explain", None) or []]
        by_id = {str(r["id"]): r for r in records}
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            raise InputError(f"--explain: no item {listing(unknown)} in {result['subset']}")
    except InputError as err:
        print(f"ecgbench score: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if wanted:
        for item_id in wanted:
            print(json.dumps(explanation(by_id[item_id], responses.get(item_id)), indent=2, ensure_ascii=False))
        return 0
    print(json.dumps(result, allow_nan=False))
    return 0
