"""Judge records added to a finished lmms-eval run ("judge later"), kept beside its samples file.

``ecgbench judge --predictions OUT/model/<date_id>_samples_<task>.jsonl`` judges the items whose
record there is not ``ok`` (failed, skipped by the budget, deferred) and writes their records to
``<date_id>_judge_<task>.jsonl`` next to it; the samples file itself is never rewritten, so the
run's answers stay as lmms-eval wrote them. ``pulse_tasks.results.runs`` reads both: an added record
replaces the item's unjudged one when it was made for the same response (``response_sha``), and
is marked with ``judge_added`` (when it was added), so reports can say what came afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pulse_tasks.scoring.records import JUDGE_OK

log = logging.getLogger(__name__)

SAMPLES_INFIX = "_samples_"  # lmms-eval: <date_id>_samples_<task>.jsonl
ATTACHED_INFIX = "_judge_"  # ours, beside it: <date_id>_judge_<task>.jsonl (not matched by *_samples_*)
ADDED_KEY = "judge_added"  # UTC time ecgbench judge added the record
RESPONSE_SHA_KEY = "response_sha"  # which response the record judged (a rerun's samples do not match)


def attached_path(samples_file: str | Path) -> Path | None:
    """Where the added judge records of an lmms-eval samples file live; None for other files."""
    path = Path(samples_file)
    if SAMPLES_INFIX not in path.name or path.suffix != ".jsonl":
        return None
    date_id, _, task = path.stem.partition(SAMPLES_INFIX)
    return path.with_name(f"{date_id}{ATTACHED_INFIX}{task}.jsonl")


def canonical_response(value: Any) -> Any:
    """The response as the samples readers see it: lmms-eval's single-element lists unwrapped."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def response_sha(response: Any) -> str:
    """sha256 (16 hex) of the canonical JSON of a response."""
    text = json.dumps(canonical_response(response), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_attached(path: Path) -> dict[str, dict[str, Any]]:
    """Added records by item id; unreadable lines are skipped with a warning (never fatal)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        log.warning("cannot read added judge records %s: %s", path, exc)
        return out
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("%s:%d: not JSON, skipped (a truncated write?)", path, number)
            continue
        if isinstance(rec, dict) and rec.get("id") is not None:
            out[str(rec["id"])] = rec
    return out


def write_attached(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write the records atomically (a killed write leaves the previous file, never half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(dict(r), allow_nan=False) + "\n" for r in records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_attached(records: Sequence[dict[str, Any]], responses: Sequence[Any],
                   attached: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int, list[str]]:
    """(records with the added ones in place of unjudged ones, how many were added, ids whose
    added record judged another response and was ignored)."""
    out, added, mismatched = [], 0, []
    for rec, response in zip(records, responses):
        extra = attached.get(str(rec.get("id")))
        if extra is None or rec.get("status") == JUDGE_OK:
            out.append(rec)
            continue
        if extra.get(RESPONSE_SHA_KEY) != response_sha(response):
            mismatched.append(str(rec.get("id")))
            out.append(rec)
            continue
        out.append({**rec, **extra, "subset": rec.get("subset"), "id": rec.get("id")})
        added += 1
    return out, added, mismatched
