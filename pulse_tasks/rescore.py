"""`ecgbench score`: rescore saved predictions of one subset in paper and strict mode.

    ecgbench score --subset ptb-test --data DIR --predictions samples.jsonl

Reads either an lmms-eval samples file (``--log_samples`` output: ``doc_id``, maybe ``doc``,
``resps``/``filtered_resps`` and our per-metric records, which carry the item ``id``) or the
reference inference output (``question_id``/``text`` as LLaVA's model_vqa writes it, or
``id``/``response``), matches the predictions to the subset's items by id (lmms-eval lines
without an id: by ``doc_id``, the item's position in the data), scores them with
``pulse_tasks.metrics`` and prints one JSON object on stdout. Warnings (missing predictions,
invalid responses) go to stderr; unusable input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pulse_tasks import metrics
from pulse_tasks.subsets import Subset, UnknownSubsetError, get_subset

EXIT_INPUT_ERROR = 2  # same code argparse uses for a bad command line
MAX_LISTED_IDS = 20  # ids named in a message or in the JSON before "... and N more"


class InputError(Exception):
    """Unusable input: reported as one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Prediction:
    """One line of a predictions file."""

    line: int  # 1-based line number (for messages)
    id: str | None  # item id when the line names one
    doc_id: int | None  # lmms-eval's position of the item in the data
    response: object  # raw response (str normally; anything else is scored as invalid)
    source_format: str  # "lmms-eval" or "reference"
    subset: str | None = None  # the subset named by our record on an lmms-eval line


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


def _listing(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_LISTED_IDS])
    more = len(ids) - MAX_LISTED_IDS
    return shown + (f" ... and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------------------------
# Reading predictions
# --------------------------------------------------------------------------------------------


def _first_text(value: object) -> object:
    """lmms-eval nests responses in lists (per request, per return): take the first leaf."""
    while isinstance(value, list):
        value = value[0] if value else None
    return value


def _our_record(line: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """One of our per-metric records on an lmms-eval samples line (they carry the item id)."""
    for value in line.values():
        if isinstance(value, dict) and "id" in value and "kind" in value and "subset" in value:
            return value
    return None


def _parse_line(obj: object, line: int) -> Prediction:
    if not isinstance(obj, dict):
        raise InputError(f"line {line}: expected a JSON object, got {type(obj).__name__}")
    if "doc_id" in obj and ("resps" in obj or "filtered_resps" in obj):
        response = _first_text(obj.get("filtered_resps", obj.get("resps")))
        record = _our_record(obj)
        item_id = str(record["id"]) if record is not None else None
        doc = obj.get("doc")
        if item_id is None and isinstance(doc, dict) and doc.get("id") is not None:
            item_id = str(doc["id"])
        doc_id = obj["doc_id"]
        if not isinstance(doc_id, int) or isinstance(doc_id, bool):
            raise InputError(f"line {line}: doc_id {doc_id!r} is not an integer")
        subset = str(record["subset"]) if record is not None else None
        return Prediction(line, item_id, doc_id, response, "lmms-eval", subset)
    id_key = next((k for k in ("question_id", "id") if k in obj), None)
    text_key = next((k for k in ("text", "response") if k in obj), None)
    if id_key is None or text_key is None:
        raise InputError(
            f"line {line}: not an lmms-eval sample (doc_id + resps) nor a reference output "
            f"(question_id + text, or id + response); keys: {', '.join(sorted(obj)[:8])}"
        )
    return Prediction(line, str(obj[id_key]), None, obj[text_key], "reference")


def read_predictions(path: str) -> list[Prediction]:
    """Parse a predictions JSONL file (a JSON array file is accepted too).

    Lines that are not UTF-8 are decoded with ``surrogateescape``, so their responses reach the
    scorer and are reported as ``not_utf8`` instead of aborting the run.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise InputError(f"cannot read predictions {path}: {err.strerror or err}") from None
    text = raw.decode("utf-8", errors="surrogateescape")
    if not text.strip():
        raise InputError(f"predictions file {path} is empty")
    if text.lstrip().startswith("["):  # a JSON array of the same objects
        try:
            objects = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return [_parse_line(obj, i) for i, obj in enumerate(objects, 1)]
    predictions = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        predictions.append(_parse_line(obj, number))
    return predictions


# --------------------------------------------------------------------------------------------
# Matching and scoring
# --------------------------------------------------------------------------------------------


@dataclass
class Matched:
    """Predictions matched to the data's items."""

    responses: dict[str, object]  # item id -> raw response
    missing: list[str]  # item ids with no prediction, in data order
    extra: list[str]  # prediction ids not in the data


def match_predictions(docs: list[Mapping[str, Any]], predictions: list[Prediction]) -> Matched:
    """Key every prediction by item id (``doc_id`` -> the id of the data's item at that index).

    Raises InputError naming duplicated prediction ids (or duplicated ids in the data).
    """
    ids = [str(doc["id"]) for doc in docs]
    known = set(ids)
    if len(known) != len(ids):
        seen: set[str] = set()
        repeated = list(dict.fromkeys(i for i in ids if i in seen or seen.add(i)))
        raise InputError(f"the data has {len(repeated)} duplicated item ids: {_listing(repeated)}")
    responses: dict[str, object] = {}
    duplicates, extra = [], []
    for prediction in predictions:
        item_id = prediction.id
        if item_id is None:
            if 0 <= prediction.doc_id < len(ids):
                item_id = ids[prediction.doc_id]
            else:
                extra.append(f"doc_id={prediction.doc_id}")
                continue
        if item_id in responses:
            duplicates.append(item_id)
            continue
        if item_id not in known:
            extra.append(item_id)
            continue
        responses[item_id] = prediction.response
    if duplicates:
        unique = list(dict.fromkeys(duplicates))
        raise InputError(f"{len(unique)} duplicated prediction ids: {_listing(unique)}")
    missing = [item_id for item_id in ids if item_id not in responses]
    return Matched(responses, missing, extra)


def score_predictions(subset: Subset, docs: list[Mapping[str, Any]],
                      responses: Mapping[str, object]) -> tuple[dict, list[dict]]:
    """(aggregate, records): every item of ``docs`` scored; no response = ``missing``."""
    records = [metrics.score_item(subset, doc, responses.get(str(doc["id"]))) for doc in docs]
    return metrics.aggregate(subset, records), records


def load_docs(subset: Subset, data: str | None) -> list[dict]:
    """The subset's normalized records (no images) from ``pulse_tasks.data``."""
    try:
        from pulse_tasks.data import load_records, resolve_source
    except ImportError as err:
        raise InputError(f"cannot load data: pulse_tasks.data is unavailable ({err})") from None
    try:
        return list(load_records(subset.config, resolve_source(data)))
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # DataError, DataUnavailableError
        where = data or "the default source"
        raise InputError(f"cannot load {subset.config} from {where}: {err}") from None


def score_file(subset_name: str, data: str | None, predictions_path: str, ignore_extra: bool = False,
               loader: Callable[[Subset, str | None], list[dict]] | None = None,
               warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
               ) -> tuple[dict, list[dict]]:
    """Everything `ecgbench score` does, returning (result JSON object, per-item records).

    ``loader(subset, data)`` returns the normalized records; default ``load_docs`` (looked up at
    call time, so tests can replace it).
    """
    try:
        subset = get_subset(subset_name)
    except UnknownSubsetError as err:
        raise InputError(str(err)) from None
    if subset.kind in ("report", "arena"):
        raise InputError(f"{subset.config} is judged by an LLM: use `ecgbench judge`, not `ecgbench score`")
    predictions = read_predictions(predictions_path)  # before the data: fail fast on a bad file
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
            f"{len(matched.extra)} predictions for ids not in {subset.config}: {_listing(matched.extra)} "
            "(wrong --subset or --data? --ignore-extra skips them)"
        )
    if matched.extra:
        warn(f"warning: ignored {len(matched.extra)} predictions for unknown ids: {_listing(matched.extra)}")
    if matched.missing:
        warn(f"warning: {len(matched.missing)} of {len(docs)} items have no prediction "
             f"(unparsed in paper mode, wrong in strict mode): {_listing(matched.missing)}")
    result, records = score_predictions(subset, docs, matched.responses)
    bad = {status: k for status, k in result["statuses"].items() if status not in ("ok", "missing")}
    if bad:
        warn("warning: responses that are not answers: "
             + ", ".join(f"{k} {status}" for status, k in sorted(bad.items())))
    unanswered = sum(1 for r in records if r["status"] == "ok" and r["invalid"])
    if unanswered:
        warn(f"warning: {unanswered} responses hold no answer that strict mode accepts "
             f"(paper mode: {sum(1 for r in records if r['status'] == 'ok' and r['unparsed'])} unparsed)")
    formats = sorted({p.source_format for p in predictions})
    result["missing_ids"] = matched.missing[:MAX_LISTED_IDS]
    result["ignored_extra"] = len(matched.extra)
    result["source"] = {"predictions": predictions_path, "format": "+".join(formats),
                        "data": data}
    return result, records


def run(args: argparse.Namespace) -> int:
    """Run `ecgbench score`; 0 on success, 2 on unusable input (one line on stderr)."""
    try:
        result, records = score_file(args.subset, args.data, args.predictions, args.ignore_extra)
        if getattr(args, "records_out", None):
            try:
                with open(args.records_out, "w", encoding="utf-8") as handle:
                    for record in records:
                        handle.write(json.dumps(record) + "\n")
            except OSError as err:
                raise InputError(f"cannot write {args.records_out}: {err.strerror or err}") from None
    except InputError as err:
        print(f"ecgbench score: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(json.dumps(result, allow_nan=False))
    return 0
