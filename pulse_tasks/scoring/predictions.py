"""Saved predictions files, shared by `ecgbench score` and `ecgbench judge`.

Two formats, one object per line (a JSON array of the same objects is accepted too):

* an lmms-eval samples file (``--log_samples``): ``doc_id``, ``resps``/``filtered_resps``, maybe
  ``doc`` and our per-item metric or judge records, which carry the item ``id`` and ``subset``;
* the reference inference output: ``question_id``/``text`` (LLaVA's model_vqa) or ``id``/``response``.

Predictions are matched to the data's items by id; lmms-eval lines without one fall back to
``doc_id``, the item's position in the data. Unusable input raises :class:`InputError`, which the
commands report as one line on stderr with exit status :data:`EXIT_INPUT_ERROR`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulse_tasks.data.subsets import Subset

EXIT_INPUT_ERROR = 2  # same code argparse uses for a bad command line
MAX_LISTED_IDS = 20  # ids named in a message before "... and N more"

LMMS_EVAL = "lmms-eval"
REFERENCE = "reference"
# What a samples line of ecgbench_arena_gold_history names as its subset: one line per turn, no
# judge record (its conversations are judged in lmms-eval's aggregation), so not an arena file.
GOLD_HISTORY_TURNS = "arena gold-history turns"


class InputError(Exception):
    """Unusable input: reported as one line on stderr, exit status 2."""


def listing(ids: list[str]) -> str:
    """``a, b, c ... and N more``: messages stay one readable line however many ids there are."""
    shown = ", ".join(ids[:MAX_LISTED_IDS])
    more = len(ids) - MAX_LISTED_IDS
    return shown + (f" ... and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Prediction:
    """One prediction (one line of the file, or several joined arena turns)."""

    line: int  # 1-based line number of its (first) line, for messages
    id: str | None  # item id when the line names one
    doc_id: int | None  # lmms-eval's position of the item in the data
    response: Any  # as saved: lmms-eval's (filtered_)resps nesting kept; a list of turns when joined
    source_format: str  # LMMS_EVAL or REFERENCE
    subset: str | None = None  # the subset named by our record on an lmms-eval line
    record: Mapping[str, Any] | None = None  # our metric/judge record on an lmms-eval line, as saved
    prompt: str | None = None  # the question a reference line carries ("prompt"), if any


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _our_record(line: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """One of our metric/judge records on an lmms-eval samples line (they carry the item id).

    Both kinds hold "id", "subset" and "status"; the logged ``doc`` is skipped because normalized
    docs hold "id" and "subset" too, and a doc must not pass for a scoring record.
    """
    for key, value in line.items():
        if key != "doc" and isinstance(value, dict) and {"id", "subset", "status"} <= value.keys():
            return value
    return None


def _turn_record(line: Mapping[str, Any]) -> bool:
    """True for a line of the gold-history arena: its per-turn record (conversation id, turn, response)."""
    return any(key != "doc" and isinstance(value, dict) and {"id", "subset", "turn", "response"} <= value.keys()
               for key, value in line.items())


def _parse(obj: object, line: int) -> Prediction:
    if not isinstance(obj, dict):
        raise InputError(f"line {line}: expected a JSON object, got {type(obj).__name__}")
    if "doc_id" in obj and ("resps" in obj or "filtered_resps" in obj):
        # filtered_resps is what lmms-eval's metrics saw, even when it is null
        response = obj.get("filtered_resps", obj.get("resps"))
        record = _our_record(obj)
        item_id = str(record["id"]) if record is not None and record["id"] is not None else None
        doc = obj.get("doc")
        if item_id is None and isinstance(doc, dict) and doc.get("id") is not None:
            item_id = str(doc["id"])
        doc_id = obj["doc_id"]
        if not isinstance(doc_id, int) or isinstance(doc_id, bool):
            raise InputError(f"line {line}: doc_id {doc_id!r} is not an integer")
        subset = str(record["subset"]) if record is not None else None
        if record is None and _turn_record(obj):
            subset = GOLD_HISTORY_TURNS
        return Prediction(line, item_id, doc_id, response, LMMS_EVAL, subset, record)
    id_key = next((k for k in ("question_id", "id") if k in obj), None)
    text_key = next((k for k in ("text", "response") if k in obj), None)
    if id_key is None or text_key is None:
        raise InputError(
            f"line {line}: not an lmms-eval sample (doc_id + resps) nor a reference output "
            f"(question_id + text, or id + response); keys: {', '.join(sorted(obj)[:8])}"
        )
    prompt = obj.get("prompt")
    return Prediction(line, str(obj[id_key]), None, obj[text_key], REFERENCE,
                      prompt=prompt if isinstance(prompt, str) else None)


def _join_turns(predictions: list[Prediction]) -> list[Prediction]:
    """Reference lines with a text response and the same id -> one prediction, turns in file order.

    The reference inference writes one line per arena turn; lmms-eval lines and responses that
    are already a list are left alone (a repeat of those is a duplicate, caught by the matcher).
    """
    joined: list[Prediction] = []
    turns: dict[str, tuple[int, list[Any]]] = {}  # id -> (its index in joined, its turns)
    for prediction in predictions:
        if prediction.source_format != REFERENCE or prediction.id is None \
                or not isinstance(prediction.response, str):
            joined.append(prediction)
        elif prediction.id in turns:
            turns[prediction.id][1].append(prediction.response)
        else:
            turns[prediction.id] = (len(joined), [prediction.response])
            joined.append(prediction)
    for index, texts in turns.values():
        joined[index] = replace(joined[index], response=texts)
    return joined


def read_predictions(path: str, join_turns: bool = False) -> list[Prediction]:
    """Parse a predictions JSONL file (a JSON array file is accepted too).

    Lines that are not UTF-8 are decoded with ``surrogateescape``, so their responses reach the
    scorer and are reported (``not_utf8``) instead of aborting the run. ``join_turns``: join
    reference lines of the same id into one list of turns (arena).
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
        predictions = [_parse(obj, i) for i, obj in enumerate(objects, 1)]
    else:
        predictions = []
        lines = text.splitlines()
        last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
        for number, line in enumerate(lines, 1):  # file line numbers, blanks counted
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                hint = " (the last line: the file looks truncated, e.g. a run killed while writing it)" \
                    if number == last and not text.endswith("\n") else ""
                raise InputError(f"{path}:{number}: not valid JSON ({err.msg}){hint}") from None
            predictions.append(_parse(obj, number))
    return _join_turns(predictions) if join_turns else predictions


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@dataclass
class Matched:
    """Predictions matched to the data's items."""

    responses: dict[str, Any]  # item id -> raw response
    missing: list[str]  # item ids with no prediction, in data order
    extra: list[str]  # prediction ids not in the data ("doc_id=N" when N is out of range)


def _repeated(ids: Iterable[str]) -> list[str]:
    """Ids that occur more than once, in order of their second occurrence."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}  # an ordered set
    for item_id in ids:
        if item_id in seen:
            repeated[item_id] = None
        seen.add(item_id)
    return list(repeated)


def match_predictions(docs: list[Mapping[str, Any]], predictions: list[Prediction]) -> Matched:
    """Key every prediction by item id (``doc_id`` -> the id of the data's item at that index).

    Raises InputError naming duplicated prediction ids (or duplicated ids in the data): with
    either, which response belongs to which item is ambiguous, so nothing is scored.
    """
    ids = [str(doc["id"]) for doc in docs]
    repeated = _repeated(ids)
    if repeated:
        raise InputError(f"the data has {len(repeated)} duplicated item ids: {listing(repeated)}")
    known = set(ids)
    responses: dict[str, Any] = {}
    duplicates: list[str] = []
    extra: list[str] = []
    for prediction in predictions:
        item_id = prediction.id
        if item_id is None:
            if prediction.doc_id is not None and 0 <= prediction.doc_id < len(ids):
                item_id = ids[prediction.doc_id]
            else:
                extra.append(f"doc_id={prediction.doc_id}")
                continue
        if item_id not in known:
            extra.append(item_id)
        elif item_id in responses:
            duplicates.append(item_id)
        else:
            responses[item_id] = prediction.response
    if duplicates:
        unique = list(dict.fromkeys(duplicates))  # each id once, in file order
        raise InputError(f"{len(unique)} duplicated prediction ids: {listing(unique)}")
    missing = [item_id for item_id in ids if item_id not in responses]
    return Matched(responses, missing, extra)


# --------------------------------------------------------------------------------------------
# Data and output
# --------------------------------------------------------------------------------------------


def load_docs(subset: Subset | str, data: str | None) -> list[dict[str, Any]]:
    """The subset's normalized records (no images) from ``pulse_tasks.data.sources``."""
    config = subset if isinstance(subset, str) else subset.config
    try:  # imported here: the data module pulls in heavy optional dependencies
        from pulse_tasks.data.sources import load_records, resolve_source
    except ImportError as err:
        raise InputError(f"cannot load data: pulse_tasks.data.sources is unavailable ({err})") from None
    try:
        return list(load_records(config, resolve_source(data)))
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # DataError, DataUnavailableError
        raise InputError(f"cannot load {config} from {data or 'the default source'}: {err}") from None


def write_records(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Write per-item records as JSONL (``--records-out``); InputError when the file can't be written."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
