"""`ecgbench judge`: LLM-judge saved report/arena predictions, or estimate what that would cost.

    ecgbench judge --subset ptb-test-report --data DIR --predictions samples.jsonl
    ecgbench judge estimate --subset arena --data DIR --predictions samples.jsonl

Predictions: an lmms-eval samples file (``--log_samples``; the text in ``filtered_resps`` or
``resps``, arena as the list of its two turns) or the reference output (``question_id``/``text``
or ``id``/``response``; arena turns as a list, or one line per turn in order). Matching is by
item id (lmms-eval lines without one: by ``doc_id``, the item's position in the data).

Judge later: on an lmms-eval samples file (``<date_id>_samples_<task>.jsonl``) the items already
judged there (status ``ok``) are kept, only the failed, skipped and deferred ones are judged, and
their records are written beside it to ``<date_id>_judge_<task>.jsonl`` (``--no-attach``: don't),
where ``ecgbench report``/``compare``/``submit`` pick them up. A second run judges only what is
still unjudged.

Prints one JSON object on stdout. Exit status: 0 all items judged; 1 some items failed or were
skipped (the score is printed and flagged); 2 unusable input (a truncated file, one of another
subset or data version, the gold-history arena's per-turn samples) or no judge configured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from pulse_tasks.scoring.judge.attached import (
    ADDED_KEY,
    RESPONSE_SHA_KEY,
    attached_path,
    read_attached,
    response_sha,
    write_attached,
)
from pulse_tasks.scoring.predictions import (
    EXIT_INPUT_ERROR,
    GOLD_HISTORY_TURNS,
    LMMS_EVAL,
    InputError,
    listing,
    load_docs,
    match_predictions,
    read_predictions,
    write_records,
)
from pulse_tasks.scoring.records import JUDGE_FAILED, JUDGE_OK, judge_ok

EXIT_INCOMPLETE = 1  # judged, but some items failed or were skipped: the score is flagged
ACTIONS = ("run", "estimate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ecgbench judge [run|estimate]`."""
    parser.add_argument("action", nargs="?", choices=ACTIONS, default="run",
                        help="run (default): judge and print the score; estimate: dry run, no API calls")
    parser.add_argument("--subset", required=True, help="ptb-test-report or arena (or their task names)")
    parser.add_argument("--data", default=None, help="ECGBench data folder; default $ECGBENCH_DATA, else the hub")
    parser.add_argument("--predictions", required=True, help="lmms-eval samples JSONL or reference output JSONL")
    parser.add_argument("--judge-model", default=None, help="judge model / Azure deployment (default $ECGBENCH_JUDGE_MODEL "
                                                            "or gpt-4o-2024-08-06)")
    parser.add_argument("--judge-base-url", default=None, help="OpenAI-compatible base URL (default $ECGBENCH_JUDGE_BASE_URL)")
    parser.add_argument("--concurrency", type=int, default=None, help="judge calls in flight (default 16)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per judge request (default 60); also the window in which a judge that answers no call counts as down")
    parser.add_argument("--max-judge-calls", type=int, default=None, help="budget: items sent to the API at most")
    parser.add_argument("--judge-prompt-file", default=None, help="replace the built-in rubric text with this file")
    parser.add_argument("--cache", default=None, help="judge cache file (default $ECGBENCH_JUDGE_CACHE or ~/.cache)")
    parser.add_argument("--no-cache", action="store_true", help="judge without the cache")
    parser.add_argument("--records-out", default=None, help="also write the per-item judge records (JSONL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-attach", action="store_true",
                        help="on an lmms-eval samples file: don't write the new records beside it "
                             "(<date_id>_judge_<task>.jsonl, read by report/compare/submit)")


def _settings(args: argparse.Namespace) -> Any:
    from pulse_tasks.scoring.judge.settings import settings_from_env

    overrides: dict[str, Any] = {"model": args.judge_model, "base_url": args.judge_base_url,
                                 "concurrency": args.concurrency, "timeout_s": args.timeout,
                                 "max_calls": args.max_judge_calls, "prompt_file": args.judge_prompt_file,
                                 "cache_path": args.cache}
    settings = settings_from_env(**overrides)
    if args.no_cache:
        import dataclasses

        settings = dataclasses.replace(settings, cache_path=None)
    return settings


def judge_file(args: argparse.Namespace, loader: Any = load_docs) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Everything `ecgbench judge` does: (printed JSON object, per-item records)."""
    from pulse_tasks.data.subsets import UnknownSubsetError, get_subset
    from pulse_tasks.scoring.judge.rubrics import judge_kind
    from pulse_tasks.scoring.judge.scoring import aggregate, estimate, judge_items
    from pulse_tasks.scoring.judge.settings import (
        JudgeNotConfiguredError,
        check_configured,
    )

    try:
        subset = get_subset(args.subset)
        judge_kind(subset)  # ValueError for a subset scored without the judge
        settings = _settings(args)
    except (UnknownSubsetError, ValueError, TypeError) as err:
        raise InputError(str(err)) from None
    # before the data: fail fast on a bad file; the reference output writes one line per arena turn
    predictions = read_predictions(args.predictions, join_turns=subset.rule.turns > 1)
    foreign = sorted({p.subset for p in predictions if p.subset and p.subset != subset.config})
    if GOLD_HISTORY_TURNS in foreign:
        raise InputError(f"{args.predictions} is a samples file of ecgbench_arena_gold_history (one line per turn): "
                         "ecgbench judge does not read it, its conversations are judged in lmms-eval's aggregation. "
                         "Judge it by rerunning that task with a judge configured and the first run's --use_cache "
                         "folder: the answers then come from the cache, no inference")
    if foreign:
        raise InputError(f"{args.predictions} holds {', '.join(foreign)} items, not {subset.config}: "
                         f"pass the samples file of {subset.task}")
    docs = loader(subset.config, args.data)
    if not docs:
        raise InputError(f"no {subset.config} items in {args.data or 'the default source'}")
    matched = match_predictions(docs, predictions)
    responses, missing, extra = matched.responses, matched.missing, matched.extra
    if not responses:  # nothing to judge: every "failed" record would only hide the mix-up
        raise InputError(f"none of the {len(predictions)} predictions in {args.predictions} is for an item of "
                         f"{subset.config} in {args.data or 'the default source'} (their ids: {listing(extra)}): "
                         "a file of another subset or data version?")
    if extra:
        print(f"warning: ignored {len(extra)} predictions for ids not in {subset.config}: {listing(extra)}",
              file=sys.stderr)
    if missing:
        print(f"warning: {len(missing)} of {len(docs)} items have no prediction (counted as failed)", file=sys.stderr)
    attach = None
    if not getattr(args, "no_attach", False) and any(p.source_format == LMMS_EVAL for p in predictions):
        attach = attached_path(args.predictions)
    kept = _already_judged(predictions, responses, attach)
    judged_docs = [d for d in docs if str(d["id"]) in responses and str(d["id"]) not in kept]
    judged_resps = [responses[str(d["id"])] for d in judged_docs]
    if args.action == "estimate":
        try:
            result = estimate(subset, judged_docs, judged_resps, settings)
        except OSError as err:  # an unreadable --judge-prompt-file
            raise InputError(f"cannot read {err.filename or 'the judge prompt file'}: {err.strerror or err}") from None
        result["missing"] = len(missing)
        result["already_judged"] = len(kept)
        return result, []
    try:
        check_configured(settings)
    except JudgeNotConfiguredError as err:
        raise InputError(str(err)) from None
    new = judge_items(subset, judged_docs, judged_resps, settings, progress=not args.no_progress)
    if attach is not None:
        added = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = [{**rec, RESPONSE_SHA_KEY: response_sha(responses[str(d["id"])]), ADDED_KEY: added}
               for rec, d in zip(new, judged_docs)]
        _write_attached(attach, kept, new)
    by_id = {**kept, **{str(r["id"]): r for r in new}}
    records = [by_id[str(d["id"])] for d in docs if str(d["id"]) in by_id]
    judge = new[0]["judge"] if new else (records[0].get("judge", {}) if records else {})
    records += [{"id": i, "subset": subset.config, "status": JUDGE_FAILED, "score": None, "criteria": {}, "judge": judge,
                 "usage": {}, "error": "no prediction"} for i in missing]
    agg = aggregate(records)
    result = {"subset": subset.config, "n": agg["n"], "n_judged": agg["n_judged"], "score": agg["score"],
              "criteria": agg["criteria"], "judge": agg["judge"], "stderr": agg["stderr"],
              "n_failed": agg["n_failed"], "n_skipped": agg["n_skipped"], "flagged": agg["flagged"],
              "usage": agg["usage"], "cost_usd": agg["cost_usd"], "errors": agg["errors"],
              "already_judged": len(kept), "newly_judged": sum(1 for r in new if judge_ok(r)),
              "attached": str(attach) if attach is not None else None}
    return result, records


def _already_judged(predictions: list[Any], responses: dict[str, Any], attach: Path | None) -> dict[str, dict[str, Any]]:
    """Records of items judged before (in the samples file, or added earlier beside it): not judged again."""
    kept: dict[str, dict[str, Any]] = {}
    for p in predictions:
        rec = p.record
        if p.id is not None and rec is not None and judge_ok(rec):
            kept[str(p.id)] = dict(rec)
    if attach is not None and attach.exists():
        for item_id, rec in read_attached(attach).items():
            if item_id in responses and rec.get("status") == JUDGE_OK \
                    and rec.get(RESPONSE_SHA_KEY) == response_sha(responses[item_id]):
                kept.setdefault(item_id, rec)
    return kept


def _write_attached(path: Path, kept: dict[str, dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Every added record (earlier ones still valid, then this run's) beside the samples file."""
    earlier = [r for r in kept.values() if ADDED_KEY in r]
    try:
        write_attached(path, earlier + new)
    except OSError as err:
        raise InputError(f"cannot write the added judge records {path}: {err.strerror or err}") from None
    print(f"ecgbench judge: wrote {len(earlier) + len(new)} added judge records to {path} "
          "(read by ecgbench report/compare/submit)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run `ecgbench judge`; see the module docstring for exit statuses."""
    try:
        result, records = judge_file(args)
        if args.records_out:
            write_records(args.records_out, records)
    except InputError as err:
        print(f"ecgbench judge: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(json.dumps(result, allow_nan=False))
    if args.action == "run" and (result.get("n_failed") or result.get("n_skipped")):
        return EXIT_INCOMPLETE
    return 0
