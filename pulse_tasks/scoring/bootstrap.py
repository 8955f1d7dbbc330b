"""Bootstrap intervals and paired tests for ECGBench corpus metrics.

Items are resampled with replacement and the corpus metric is recomputed on every resample
(macro F1, binary-prediction AUC and Hamming loss are not means over items, so a per-item
standard error would be wrong for them). One resample is a row of item counts ``W[b, i]`` (how
often item i was drawn); every metric below is a function of ``W @ per_item_columns``, so 1000
resamples of a 2,000-item subset cost a few small matrix products instead of 1000 calls to
``metrics.aggregate`` (~5 ms each, 35 s for a full run).

These vectorised metrics are the only implementation of the corpus metrics: ``pulse_tasks.scoring.metrics.aggregate``
computes its numbers with them on a single row of ones (every item once), including paper mode's
rule that the classes are the ones seen in the (resampled) gold labels; the tests check them
against scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pulse_tasks.data.subsets import Subset, get_subset
from pulse_tasks.scoring.records import judged_record, score_record

SCALE = 100.0  # every ECGBench metric is reported x100, as in the paper
DEFAULT_RESAMPLES = 1000  # the usual bootstrap size for 95% percentile intervals
DEFAULT_SEED = 0  # reports are reproducible unless the user asks for another seed
CONFIDENCE = 0.95  # two-sided interval level everywhere in the report
MODES = ("paper", "strict")
PER_CLASS_PREFIX = "f1:"  # per-class F1 keys ("f1:NORM") beside the corpus metrics
JUDGE_KEY = "score"  # judged subsets have one score (0-100) and no paper/strict distinction
# Hamming loss is an error rate: lower is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"hamming_loss"})


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap interval (None where undefined: never shown as 0)."""

    value: float | None
    lo: float | None
    hi: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


def _none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ----------------------------------------------------------------------------------------------
# Resampling


def subset_seed(seed: int, subset: str) -> np.random.SeedSequence:
    """A per-subset stream, so one subset's interval does not depend on which others are present."""
    return np.random.SeedSequence([seed, *subset.encode()])


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) float matrix: how often each item is drawn in each resample (rows sum to n)."""
    if n == 0:
        return np.zeros((resamples, 0))
    idx = rng.integers(0, n, size=(resamples, n))
    flat = idx + (np.arange(resamples) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap draws; undefined (NaN) draws are left out."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# Per-item columns


@dataclass(frozen=True)
class ItemColumns:
    """The per-item numbers a subset's corpus metrics are built from, in record order."""

    family: str  # subsets.KindRule.family: "accuracy", "multilabel" or "judge"
    ids: tuple[str, ...]
    columns: dict[str, Any]  # name -> ndarray, see ``item_columns``


def _labels_matrix(label_lists: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    index = {c: j for j, c in enumerate(classes)}
    matrix = np.zeros((len(label_lists), len(classes)), bool)
    for i, labels in enumerate(label_lists):
        for label in labels:
            j = index.get(label)
            if j is not None:
                matrix[i, j] = True
    return matrix


def item_columns(subset: Subset | str, records: Sequence[Mapping[str, Any]]) -> ItemColumns:
    """Turn scoring records (``metrics.score_item`` or judge records) into numeric columns.

    accuracy: ``paper`` (credit 0..1) and ``strict`` (0/1) per item; multilabel: per mode the gold
    and predicted (n, n_classes) bool matrices over the subset's vocabulary; judge: ``ok`` mask,
    ``score`` (0-100) and one column per criterion (0-100).
    """
    sub = get_subset(subset) if isinstance(subset, str) else subset
    n = len(records)
    ids = tuple(str(r.get("id")) for r in records)
    family = sub.rule.family
    if family == "accuracy":
        typed = [score_record(r) for r in records]
        cols = {"paper": np.fromiter((float(r.paper_credit) for r in typed), float, n),  # type: ignore[arg-type]
                "strict": np.fromiter((float(bool(r.strict_correct)) for r in typed), float, n)}
        return ItemColumns(family, ids, cols)
    if family == "multilabel":
        typed = [score_record(r) for r in records]
        classes = list(sub.labels)
        cols = {"classes": classes,
                "paper_gold": _labels_matrix([r.gold for r in typed], classes),
                "paper_pred": _labels_matrix([r.paper for r in typed], classes),
                "strict_gold": _labels_matrix([r.gold_strict for r in typed], classes),
                "strict_pred": _labels_matrix([r.strict for r in typed], classes)}
        return ItemColumns(family, ids, cols)
    judged = [judged_record(r) for r in records]
    ok = np.fromiter((r.ok for r in judged), bool, n)
    score = np.array([float(r.score) if r.ok else 0.0 for r in judged])  # type: ignore[arg-type]
    names: list[str] = []
    for r in judged:
        if r.ok:
            names += [c for c in r.criteria if c not in names]
    criteria = {}
    for name in names:
        has = np.array([r.ok and name in r.criteria for r in judged], bool)
        vals = np.array([float(r.criteria[name]) * 10.0 if h else 0.0 for r, h in zip(judged, has)])
        criteria[name] = (has, vals)  # criterion 0-10 -> 0-100, as judge.aggregate reports it
    return ItemColumns(family, ids, {"ok": ok, "score": score, "criteria": criteria})


# ----------------------------------------------------------------------------------------------
# Corpus metrics of weighted samples (one row of W = one resample)


def _weighted_mean(w: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    denom = w @ mask.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (w @ (values * mask)) / denom, np.nan)


def multilabel_per_class(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, paper: bool) -> dict[str, np.ndarray]:
    """Per-class F1 and binary-prediction ROC-AUC (B, C), the Hamming loss (B,) and the classes
    kept (B, C) for each row of ``w``; not scaled.

    ``w``: (B, n) item counts; ``gold``/``pred``: (n, C) bool. Per class, with TP/FP/FN/TN the
    weighted counts over items: F1 = 2TP / (2TP + FP + FN) (NaN when the class is absent from both
    gold and predictions); ROC-AUC of a 0/1 prediction = (TPR + TNR) / 2 (NaN when the gold column
    is constant, where ``roc_auc_score`` raises); Hamming loss = (FP + FN) over the kept classes /
    (n_items * n_kept_classes). Paper mode keeps only the classes with a gold positive in the
    sample (the reference binarises with the gold classes and drops other predictions); strict
    mode keeps the whole vocabulary; a class not kept is NaN.
    """
    n_items = w.sum(axis=1)  # (B,)
    # One product for the four count matrices: w is read once, not four times (it is the large
    # operand); integer counts of 0/1 columns are exact in float64, so the sums are the same.
    counts = w @ np.concatenate([gold & pred, ~gold & pred, gold & ~pred, gold], axis=1).astype(float)
    tp, fp, fn, pos = np.split(counts, 4, axis=1)  # each (B, C)
    neg = n_items[:, None] - pos
    keep = pos > 0 if paper else np.ones_like(pos, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(keep & (2 * tp + fp + fn > 0), 2 * tp / (2 * tp + fp + fn), np.nan)
        auc = np.where(keep & (pos > 0) & (neg > 0), (tp / pos + (neg - fp) / neg) / 2, np.nan)
        n_classes = keep.sum(axis=1)
        hl = np.where(n_classes > 0, ((fp + fn) * keep).sum(axis=1) / (n_items * n_classes), np.nan)
    return {"f1": f1, "auc": auc, "hamming_loss": hl, "keep": keep}


def multilabel_metrics(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, paper: bool,
                       classes: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """AUC, F1, HL (x100) per row of ``w`` (``multilabel_per_class``: the macro means over the
    classes where they are defined), and the per-class F1 of each of ``classes`` (the matrix
    columns' names) under ``f1:<class>``."""
    per_class = multilabel_per_class(w, gold, pred, paper)
    f1 = per_class["f1"]
    out = {"auc": SCALE * _nanmean_rows(per_class["auc"]), "f1": SCALE * _nanmean_rows(f1),
           "hamming_loss": SCALE * per_class["hamming_loss"]}
    for j, name in enumerate(classes):  # per-class F1, for the report's per-class plots and tables
        out[f"{PER_CLASS_PREFIX}{name}"] = SCALE * f1[:, j]
    return out


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    count = np.isfinite(x).sum(axis=1)
    total = np.where(np.isfinite(x), x, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def weighted_metrics(cols: ItemColumns, w: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """{mode: {metric: (B,) values}} for the rows of ``w``; judged subsets use mode "judge"."""
    c = cols.columns
    if cols.family == "accuracy":
        n = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return {m: {"accuracy": SCALE * (w @ c[m]) / n} for m in MODES}
    if cols.family == "multilabel":
        return {m: multilabel_metrics(w, c[f"{m}_gold"], c[f"{m}_pred"], m == "paper", c["classes"]) for m in MODES}
    out = {JUDGE_KEY: _weighted_mean(w, c["ok"], c["score"])}
    for name, (has, vals) in c["criteria"].items():
        out[name] = _weighted_mean(w, has, vals)
    return {"judge": out}


# ----------------------------------------------------------------------------------------------
# Intervals for one run, differences for two


def point_and_draws(cols: ItemColumns, subset: str, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                    weights: np.ndarray | None = None) -> tuple[dict[str, dict[str, np.ndarray]],
                                                                dict[str, dict[str, np.ndarray]] | None]:
    """The full-sample metrics (one row of ones) and their values on the resamples (``weights``,
    else ``resamples`` drawn from the subset's seeded stream; None without items or resamples)."""
    n = len(cols.ids)
    point = weighted_metrics(cols, np.ones((1, n)))
    if weights is None and n and resamples > 0:
        weights = resample_weights(n, resamples, np.random.default_rng(subset_seed(seed, subset)))
    return point, (weighted_metrics(cols, weights) if weights is not None and n else None)


def estimate(point: np.ndarray, draws: np.ndarray | None, confidence: float = CONFIDENCE) -> Estimate:
    """One metric's Estimate from its full-sample value (shape (1,) or (0,)) and its draws."""
    lo, hi = percentile_interval(draws, confidence) if draws is not None else (None, None)
    return Estimate(_none(float(point[0])) if point.size else None, lo, hi)


def bootstrap_columns(cols: ItemColumns, subset: str, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE) -> dict[str, dict[str, Estimate]]:
    """{mode: {metric: Estimate}}: the full-sample value and its percentile bootstrap interval."""
    point, draws = point_and_draws(cols, subset, resamples, seed)
    n = len(cols.ids)
    return {mode: {metric: estimate(value if n else value[:0], draws[mode][metric] if draws else None, confidence)
                   for metric, value in values.items()} for mode, values in point.items()}


def bootstrap_subset(subset: Subset | str, records: Sequence[Mapping[str, Any]],
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = CONFIDENCE) -> dict[str, dict[str, Estimate]]:
    """Intervals of every corpus metric of one subset from its per-item records."""
    sub = get_subset(subset) if isinstance(subset, str) else subset
    return bootstrap_columns(item_columns(sub, records), sub.config, resamples, seed, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """B - A on the same items: value, bootstrap interval and a two-sided p-value."""

    a: float | None
    b: float | None
    diff: float | None
    lo: float | None
    hi: float | None
    p_value: float | None
    test: str  # "paired bootstrap" or "McNemar exact"
    discordant: tuple[int, int] | None = None  # McNemar: (A right & B wrong, A wrong & B right)


def bootstrap_p_value(draws: np.ndarray, observed: float) -> float | None:
    """Two-sided p-value of "no difference": share of centred draws at least as far from 0.

    The bootstrap distribution of the difference, shifted to mean zero, stands in for the null
    distribution; the +1 terms keep p > 0 for a finite number of resamples.
    """
    finite = draws[np.isfinite(draws)]
    if finite.size == 0 or not math.isfinite(observed):
        return None
    centred = finite - finite.mean()
    return float((1 + np.count_nonzero(np.abs(centred) >= abs(observed) - 1e-12)) / (finite.size + 1))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact test on paired 0/1 outcomes: (two-sided p, n_A_only, n_B_only).

    Under "no difference" the discordant pairs split 50/50: an exact binomial test on them.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    a_only, b_only = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(binomtest(b_only, a_only + b_only, 0.5).pvalue), a_only, b_only


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0.0) | (x == 1.0)))


def paired_difference(a: float | None, b: float | None, draws_a: np.ndarray, draws_b: np.ndarray,
                      outcomes: tuple[np.ndarray, np.ndarray] | None = None,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """B - A of one metric from its full-sample values and its draws on the same resamples.

    ``outcomes``: the per-item values of an accuracy metric (A's, B's, same item order); when
    both are 0/1, McNemar's exact test gives the p-value instead of the bootstrap.
    """
    a, b = _none(a), _none(b)
    diff = None if a is None or b is None else b - a
    d = draws_b - draws_a
    lo, hi = percentile_interval(d, confidence)
    p, test, disc = bootstrap_p_value(d, diff if diff is not None else math.nan), "paired bootstrap", None
    if outcomes is not None and _is_binary(outcomes[0]) and _is_binary(outcomes[1]):
        p, a_only, b_only = mcnemar_exact(outcomes[0] == 1.0, outcomes[1] == 1.0)
        test, disc = "McNemar exact", (a_only, b_only)
    return PairedDifference(a, b, diff, lo, hi, p, test, disc)


def paired_differences(cols_a: ItemColumns, cols_b: ItemColumns, subset: str,
                       resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       confidence: float = CONFIDENCE) -> dict[str, dict[str, PairedDifference]]:
    """{mode: {metric: PairedDifference}} of B - A; both column sets must be in the same item order.

    The same resampled items are used for both runs (paired bootstrap). Accuracy with 0/1
    outcomes gets McNemar's exact test instead of the bootstrap p-value; paper-mode accuracy
    with the fractional credit of unparsed answers keeps the bootstrap p-value.
    """
    if cols_a.ids != cols_b.ids:
        raise ValueError(f"{subset}: the two runs must be aligned on the same items")
    n = len(cols_a.ids)
    ones = np.ones((1, n))
    point_a, point_b = weighted_metrics(cols_a, ones), weighted_metrics(cols_b, ones)
    w = resample_weights(n, resamples, np.random.default_rng(subset_seed(seed, subset)))
    draws_a, draws_b = weighted_metrics(cols_a, w), weighted_metrics(cols_b, w)
    out: dict[str, dict[str, PairedDifference]] = {}
    for mode in point_a:
        out[mode] = {}
        for metric in point_a[mode]:
            if metric not in point_b.get(mode, {}):
                continue
            outcomes = (cols_a.columns[mode], cols_b.columns[mode]) if cols_a.family == "accuracy" else None
            out[mode][metric] = paired_difference(float(point_a[mode][metric][0]), float(point_b[mode][metric][0]),
                                                  draws_a[mode][metric], draws_b[mode][metric], outcomes, confidence)
    return out
