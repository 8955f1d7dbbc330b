"""Per-item scoring records and corpus metrics for the seven auto-scored ECGBench subsets.

``score_item`` parses one response in both modes (see ``pulse_tasks.parsing``) and returns a
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
from typing import Any, Mapping

import numpy as np

from pulse_tasks import parsing
from pulse_tasks import strict as strict_mode
from pulse_tasks.records import STATUS_FAILED, STATUS_MISSING, ScoreRecord
from pulse_tasks.subsets import Subset, get_subset

SCALE = 100.0  # the paper reports every metric x100

MULTILABEL_METRICS = ("auc", "f1", "hamming_loss")  # the paper's keys for ptb, code15, cpsc


def _resolve(subset: Subset | str) -> Subset:
    resolved = get_subset(subset) if isinstance(subset, str) else subset
    if resolved.kind not in ("multilabel", "letter", "ecgqa"):
        raise ValueError(
            f"{resolved.config} is scored by the LLM judge (pulse_tasks.judge), not by metrics"
        )
    return resolved


# --------------------------------------------------------------------------------------------
# Per item
# --------------------------------------------------------------------------------------------


def _first_answer(doc: Mapping[str, Any]) -> str:
    answers = doc.get("answers") or [""]
    answer = answers[0]
    return answer if isinstance(answer, str) else str(answer)


def score_item(subset: Subset | str, doc: Mapping[str, Any], response: object) -> dict:
    """Score one response to one normalized doc in paper and strict mode.

    Returns ``{"id", "subset", "kind", "status", "gold", "paper", "strict", "unparsed",
    "invalid", "failed", "missing", "strict_version", "explain", ...}``: ``status`` is the response state
    (``parsing.response_status``), ``unparsed`` means paper mode found no answer, ``invalid``
    that strict mode found none (and scores the item wrong), ``explain`` why strict mode read what it
    did (``pulse_tasks.strict``; docs/interfaces.md). Letter and ECG-QA records also carry
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
    if sub.kind == "letter":
        gold = parsing.gold_letter(_first_answer(doc))
        if gold is None:
            raise ValueError(f"{sub.config} item {record.id!r}: gold answer has no letter A-H")
        paper = parsing.parse_letter_paper(text) if text else None
        explain = explain or strict_mode.explain_letter(text, sub.letters, prompt)
        strict = explain["labels"][0] if explain["labels"] else None
        record.paper_credit = 1.0 / len(sub.letters) if paper is None else float(paper == gold)
        record.strict_correct = strict == gold
        record.unparsed, record.invalid = paper is None, strict is None
    elif sub.kind == "ecgqa":
        gold = list(doc.get("gold_options") or [])
        if not gold:  # fall back to the joined answer string
            gold = [g.strip() for g in _first_answer(doc).split(",") if g.strip()]
        candidates = parsing.ecgqa_candidates(prompt)
        paper = parsing.parse_ecgqa_paper(text, candidates) if text else []
        explain = explain or strict_mode.explain_ecgqa(text, candidates, prompt)
        strict = list(explain["labels"])
        record.paper_credit = float(set(paper) == set(gold))
        record.strict_correct = bool(strict) and set(strict) == set(parsing.strict_candidates(gold))
        record.unparsed, record.invalid = not paper, not strict
    else:
        code15 = sub.config == "code15-test"
        gold_text = _first_answer(doc)
        paper = parsing.parse_labels_paper(text, sub.labels, code15=code15) if text else []
        explain = explain or strict_mode.explain_labels(text, sub.labels, prompt)
        strict = list(explain["labels"])
        gold = parsing.gold_labels_paper(gold_text, sub.labels, code15=code15)
        record.gold_strict = parsing.gold_labels_strict(gold_text, sub.labels)
        record.unparsed, record.invalid = not paper, not strict
    record.gold, record.paper, record.strict, record.explain = gold, paper, strict, explain
    return record.to_dict()


# --------------------------------------------------------------------------------------------
# Corpus metrics
# --------------------------------------------------------------------------------------------


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _binarize(label_lists: list[list[str]], classes: list[str]) -> np.ndarray:
    """(n_items, n_classes) bool matrix; labels outside ``classes`` are dropped."""
    index = {label: i for i, label in enumerate(classes)}
    rows, cols = [], []
    for row, labels in enumerate(label_lists):
        for label in labels:
            col = index.get(label)
            if col is not None:
                rows.append(row)
                cols.append(col)
    matrix = np.zeros((len(label_lists), len(classes)), bool)
    matrix[rows, cols] = True
    return matrix


def multilabel_scores(gold: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Per-class F1 and binary-prediction ROC-AUC, and the Hamming loss, from 0/1 matrices.

    ``gold``/``pred``: (n_items, n_classes) bool. Per class, with TP/FP/FN/TN counted over items:
    F1 = 2TP / (2TP + FP + FN) (NaN when the class is absent from both gold and predictions);
    ROC-AUC of a 0/1 prediction = (TPR + TNR) / 2 (NaN when the gold column is constant, where
    ``roc_auc_score`` raises); Hamming loss = (FP + FN) / (n_items * n_classes). Not scaled.
    """
    n_items, n_classes = gold.shape
    tp = np.count_nonzero(gold & pred, axis=0).astype(float)
    fp = np.count_nonzero(~gold & pred, axis=0).astype(float)
    fn = np.count_nonzero(gold & ~pred, axis=0).astype(float)
    positives, negatives = tp + fn, n_items - (tp + fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        tpr, tnr = tp / positives, (negatives - fp) / negatives
        auc = np.where((positives > 0) & (negatives > 0), (tpr + tnr) / 2, np.nan)
    hamming = float((fp + fn).sum() / (n_items * n_classes)) if n_items and n_classes else math.nan
    return {"classes": classes, "f1": f1, "auc": auc, "hamming_loss": hamming}


def _multilabel_mode(gold_lists: list[list[str]], pred_lists: list[list[str]],
                     classes: list[str]) -> tuple[dict, dict, dict]:
    """(metrics x100, per-class F1 x100, undefined-class lists) for one mode."""
    if not gold_lists or not classes:
        nothing = {name: None for name in MULTILABEL_METRICS}
        return nothing, {}, {"auc_nan_classes": list(classes), "f1_undefined_classes": list(classes)}
    scores = multilabel_scores(_binarize(gold_lists, classes), _binarize(pred_lists, classes), classes)
    f1, auc = scores["f1"], scores["auc"]
    metrics = {
        "auc": _nan_to_none(SCALE * np.nanmean(auc)) if not np.isnan(auc).all() else None,
        "f1": _nan_to_none(SCALE * np.nanmean(f1)) if not np.isnan(f1).all() else None,
        "hamming_loss": _nan_to_none(SCALE * scores["hamming_loss"]),
    }
    per_class = {c: _nan_to_none(SCALE * v) for c, v in zip(classes, f1, strict=True)}
    undefined = {
        "auc_nan_classes": [c for c, v in zip(classes, auc, strict=True) if np.isnan(v)],
        "f1_undefined_classes": [c for c, v in zip(classes, f1, strict=True) if np.isnan(v)],
    }
    return metrics, per_class, undefined


def _mean_and_se(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean x100 and its standard error x100 (sample std / sqrt(n))."""
    n = values.size
    if n == 0:
        return None, None
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    return SCALE * float(values.mean()), (SCALE * se if se is not None else None)


def aggregate(subset: Subset | str, records: list[Mapping[str, Any]]) -> dict:
    """Corpus metrics of one subset from ``score_item`` records (see the module docstring).

    Returns ``{"subset", "n", "paper": {...}, "strict": {...}, "unparsed", "invalid",
    "invalid_rate", "failed", "missing", "statuses", "strict_version", "se", ...}``; multi-label subsets add
    ``per_class_f1``, ``auc_nan_classes``, ``f1_undefined_classes`` and ``classes`` (per mode).
    ``unparsed`` counts items where paper mode found no answer; ``invalid`` (and ``invalid_rate``,
    x100) items where strict mode found none -- failed, empty, non-text and missing responses
    included; ``statuses`` counts the raw response states. NaN never appears: undefined numbers
    are ``None``. Records scored by different strict versions raise ValueError (never mixed).
    """
    sub = _resolve(subset)
    records = list(records)
    versions = {r.get("strict_version", strict_mode.LEGACY_STRICT_VERSION) for r in records}
    if len(versions) > 1:
        raise ValueError(f"{sub.config}: records scored by strict versions {sorted(versions)} cannot be "
                         "aggregated together; rescore them with `ecgbench score`")
    for record in records:
        if record.get("kind") != sub.kind or record.get("subset", sub.config) != sub.config:
            raise ValueError(
                f"record {record.get('id')!r} of subset {record.get('subset')!r} cannot be "
                f"aggregated as {sub.config}"
            )
    n = len(records)
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    invalid = sum(1 for r in records if r["invalid"])
    result: dict[str, Any] = {
        "subset": sub.config,
        "n": n,
        "paper": {},
        "strict": {},
        "unparsed": sum(1 for r in records if r["unparsed"]),
        "invalid": invalid,
        "invalid_rate": SCALE * invalid / n if n else None,
        "failed": statuses.get(parsing.STATUS_FAILED, 0),
        "missing": statuses.get(parsing.STATUS_MISSING, 0),
        "statuses": statuses,
        "strict_version": versions.pop() if versions else strict_mode.STRICT_VERSION,
    }
    if sub.kind in ("letter", "ecgqa"):
        paper, paper_se = _mean_and_se(np.fromiter((r["paper_credit"] for r in records), float, n))
        strict, strict_se = _mean_and_se(np.fromiter((r["strict_correct"] for r in records), float, n))
        result["paper"] = {"accuracy": paper}
        result["strict"] = {"accuracy": strict}
        result["se"] = {"paper": {"accuracy": paper_se}, "strict": {"accuracy": strict_se}}
        return result

    gold = [r["gold"] for r in records]
    seen = {label for labels in gold for label in labels}
    paper_classes = [label for label in sub.labels if label in seen]  # reference: gold classes only
    strict_classes = list(sub.labels)  # strict: the full vocabulary
    paper, paper_f1, paper_undefined = _multilabel_mode(gold, [r["paper"] for r in records], paper_classes)
    strict, strict_f1, strict_undefined = _multilabel_mode(
        [r["gold_strict"] for r in records], [r["strict"] for r in records], strict_classes
    )
    result["paper"], result["strict"] = paper, strict
    result["per_class_f1"] = {"paper": paper_f1, "strict": strict_f1}
    result["classes"] = {"paper": paper_classes, "strict": strict_classes}
    result["auc_nan_classes"] = {"paper": paper_undefined["auc_nan_classes"],
                                 "strict": strict_undefined["auc_nan_classes"]}
    result["f1_undefined_classes"] = {"paper": paper_undefined["f1_undefined_classes"],
                                      "strict": strict_undefined["f1_undefined_classes"]}
    return result
