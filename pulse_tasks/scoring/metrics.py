"""Per-item scoring records and corpus metrics for the seven auto-scored ECGBench subsets.

``score_item`` parses one response in both modes (see ``pulse_tasks.scoring.parsing``) and returns a
small JSON-serialisable record; ``aggregate`` turns a list of such records into the paper's
metrics, on the paper's 0-100 scale:

* letter subsets (csn, g12, mmmu) and ecgqa: ``accuracy``;
* multi-label subsets (ptb, code15, cpsc): ``auc``, ``f1``, ``hamming_loss``.

Paper mode reproduces the reference, made deterministic: an unparsed letter earns the expected
credit 1/k of the reference's random guess (k = the subset's number of letters); multi-label
classes are the classes seen in the gold labels (other predicted labels dropped), F1 is the mean
of per-class F1, AUC the nan-mean over classes of ROC-AUC on the 0/1 predictions (classes whose
AUC is undefined are listed under ``auc_nan_classes``), HL the Hamming loss.

Strict mode uses the strict parsers; an unparsed, failed, empty or missing answer is wrong
(multi-label: the empty prediction), and the classes are the subset's full label vocabulary, so
predicting a label absent from the gold data costs precision. A class with no gold positives and
no predictions has an undefined F1: it is left out of the mean and listed (``f1_undefined_classes``).

Items without a prediction (``response=None``) are flagged ``missing``: strict scores them wrong;
paper mode treats them as an empty response (the reference would have refused the whole run).

The per-class counts come from one vectorised pass over a 0/1 matrix (numpy) instead of one
scikit-learn call per class: ``import sklearn.metrics`` alone takes ~1.7 s here, more than the
whole 2 s scoring budget for a full run. The tests check every number against scikit-learn's
``f1_score``, ``roc_auc_score`` and ``hamming_loss`` (the functions the reference calls).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping

import numpy as np

from pulse_tasks.data.subsets import Subset, get_subset
from pulse_tasks.scoring import bootstrap, parsing
from pulse_tasks.scoring.answers import answer_space
from pulse_tasks.scoring import strict as strict_mode
from pulse_tasks.scoring.records import (
    STATUS_FAILED,
    STATUS_MISSING,
    ScoreRecord,
    score_record,
)

SCALE = bootstrap.SCALE  # the paper reports every metric x100


def _resolve(subset: Subset | str) -> Subset:
    resolved = get_subset(subset) if isinstance(subset, str) else subset
    if resolved.judged:
        raise ValueError(
            f"{resolved.config} is scored by the LLM judge (pulse_tasks.scoring.judge), not by metrics"
        )
    return resolved


# --------------------------------------------------------------------------------------------
# Per item
# --------------------------------------------------------------------------------------------


def score_item(subset: Subset | str, doc: Mapping[str, Any], response: object) -> dict:
    """Score one response to one normalized doc in paper and strict mode.

    Returns ``{"id", "subset", "kind", "status", "gold", "paper", "strict", "unparsed",
    "invalid", "failed", "missing", "strict_version", "explain", ...}``: ``status`` is the response state
    (``parsing.response_status``), ``unparsed`` means paper mode found no answer, ``invalid``
    that strict mode found none (and scores the item wrong), ``explain`` why strict mode read what it
    did (``pulse_tasks.scoring.strict``; docs/interfaces.md). Letter and ECG-QA records also carry
    the item's paper credit and strict correctness; multi-label records the label lists.
    """
    sub = _resolve(subset)
    text, status = parsing.coerce_response(response)
    record = ScoreRecord(id=str(doc.get("id", "")), subset=sub.config, kind=sub.kind, status=status,
                         failed=status == STATUS_FAILED, missing=status == STATUS_MISSING,
                         strict_version=strict_mode.STRICT_VERSION)
    prompt = (doc.get("questions") or [""])[0]
    prompt = prompt if isinstance(prompt, str) else str(prompt)
    explain = strict_mode.not_answered(status) if not text else None
    answer_space(sub).score(sub, doc, text, prompt, record, explain)  # type: ignore[misc]  # parsed kinds have one
    return record.to_dict()


# --------------------------------------------------------------------------------------------
# Corpus metrics (computed by pulse_tasks.scoring.bootstrap's vectorised code on one row of ones)
# --------------------------------------------------------------------------------------------


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def multilabel_scores(gold: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Per-class F1 and binary-prediction ROC-AUC, and the Hamming loss, from 0/1 matrices.

    ``gold``/``pred``: (n_items, n_classes) bool; every class kept (strict mode's rule). The
    definitions are ``bootstrap.multilabel_per_class``'s (NaN where undefined). Not scaled.
    """
    scores = bootstrap.multilabel_per_class(np.ones((1, gold.shape[0])), gold, pred, paper=False)
    hamming = float(scores["hamming_loss"][0]) if gold.shape[0] and gold.shape[1] else math.nan
    return {"classes": classes, "f1": scores["f1"][0], "auc": scores["auc"][0], "hamming_loss": hamming}


def _standard_error(values: np.ndarray) -> float | None:
    """Standard error x100 of a mean over items (sample std / sqrt(n)); None below two items."""
    n = values.size
    return SCALE * float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None


def _multilabel_modes(cols: bootstrap.ItemColumns) -> dict[str, Any]:
    """Per mode: the classes scored, per-class F1 x100 and the classes whose AUC or F1 is undefined."""
    out: dict[str, Any] = {"per_class_f1": {}, "classes": {}, "auc_nan_classes": {}, "f1_undefined_classes": {}}
    vocabulary = cols.columns["classes"]
    ones = np.ones((1, len(cols.ids)))
    for mode in bootstrap.MODES:
        scores = bootstrap.multilabel_per_class(ones, cols.columns[f"{mode}_gold"], cols.columns[f"{mode}_pred"],
                                                paper=mode == "paper")
        f1, auc, keep = scores["f1"][0], scores["auc"][0], scores["keep"][0]
        kept = [j for j in range(len(vocabulary)) if keep[j]]  # paper: the gold classes only, as the reference
        out["classes"][mode] = [vocabulary[j] for j in kept]
        out["per_class_f1"][mode] = ({vocabulary[j]: _nan_to_none(SCALE * f1[j]) for j in kept} if cols.ids else {})
        out["auc_nan_classes"][mode] = [vocabulary[j] for j in kept if np.isnan(auc[j])]
        out["f1_undefined_classes"][mode] = [vocabulary[j] for j in kept if np.isnan(f1[j])]
    return out


def aggregate(subset: Subset | str, records: list[Mapping[str, Any]],
              columns: bootstrap.ItemColumns | None = None) -> dict:
    """Corpus metrics of one subset from ``score_item`` records (see the module docstring).

    Returns ``{"subset", "n", "paper": {...}, "strict": {...}, "unparsed", "invalid",
    "invalid_rate", "failed", "missing", "statuses", "strict_version", "se", ...}``; multi-label subsets add
    ``per_class_f1``, ``auc_nan_classes``, ``f1_undefined_classes`` and ``classes`` (per mode).
    ``unparsed`` counts items where paper mode found no answer; ``invalid`` (and ``invalid_rate``,
    x100) items where strict mode found none -- failed, empty, non-text and missing responses
    included; ``statuses`` counts the raw response states. NaN never appears: undefined numbers
    are ``None``. Records scored by different strict versions raise ValueError (never mixed).
    ``columns``: the records' ``bootstrap.item_columns`` when the caller has them already.
    """
    sub = _resolve(subset)
    records = list(records)
    typed = [score_record(r) for r in records]
    versions = {r.version for r in typed}
    if len(versions) > 1:
        raise ValueError(f"{sub.config}: records scored by strict versions {sorted(versions)} cannot be "
                         "aggregated together; rescore them with `ecgbench score`")
    for record, r in zip(records, typed):
        if record.get("kind") != sub.kind or record.get("subset", sub.config) != sub.config:
            raise ValueError(
                f"record {r.id!r} of subset {record.get('subset')!r} cannot be aggregated as {sub.config}"
            )
    n = len(typed)
    statuses = dict(Counter(r.status for r in typed))
    invalid = sum(1 for r in typed if r.invalid)
    result: dict[str, Any] = {
        "subset": sub.config,
        "n": n,
        "paper": {},
        "strict": {},
        "unparsed": sum(1 for r in typed if r.unparsed),
        "invalid": invalid,
        "invalid_rate": SCALE * invalid / n if n else None,
        "failed": statuses.get(STATUS_FAILED, 0),
        "missing": statuses.get(STATUS_MISSING, 0),
        "statuses": statuses,
        "strict_version": versions.pop() if versions else strict_mode.STRICT_VERSION,
    }
    cols = columns if columns is not None else bootstrap.item_columns(sub, records)
    point = bootstrap.weighted_metrics(cols, np.ones((1, n)))
    for mode in bootstrap.MODES:
        result[mode] = {name: _nan_to_none(float(point[mode][name][0])) if n else None for name in sub.rule.metrics}
    if sub.rule.family == "accuracy":
        result["se"] = {mode: {"accuracy": _standard_error(cols.columns[mode])} for mode in bootstrap.MODES}
        return result
    result.update(_multilabel_modes(cols))
    return result
