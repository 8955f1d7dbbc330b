"""One subset's summary from its per-item records: the numbers every view of a run shows.

``summarize_subset(spec, records, resamples, seed)`` is the one place that turns a subset's
scoring or judge records into its corpus metrics with bootstrap intervals (per mode; a judged
subset's one score stands in both modes), its counts, its per-class F1 (multi-label) or judge
criteria, and, on request, the bootstrap draws the paired tests need. ``ecgbench report`` (and
Studio, which shows the report's numbers), ``ecgbench submit``/``validate`` and the leaderboard
build on it; lmms-eval's aggregation hooks take their values from :func:`metric_value`, and
:func:`metric_names` names them (the keys of a run's results and samples lines, which
``pulse_tasks.results.runs`` reads back).

Counts (:func:`subset_counts`): auto-scored subsets ``unparsed`` (paper mode found no answer),
``invalid`` (strict mode found none), ``failed`` (generation failures) and ``missing`` (no
prediction); judged subsets ``judge_ok`` (judged items, the score's mean is over them),
``judge_failed`` (the judge could not score them) and ``judge_skipped``: items left unjudged
without a judge error -- past the call budget (``skipped``) or deferred to ``ecgbench judge``
(``deferred``). That one meaning holds in lmms-eval's results, the report and submissions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from pulse_tasks.data.subsets import BY_CONFIG, Subset
from pulse_tasks.scoring import bootstrap
from pulse_tasks.scoring.bootstrap import Estimate

SCORE_COUNTS = ("unparsed", "invalid", "failed", "missing")  # auto-scored subsets (metrics.aggregate's keys)
JUDGE_COUNTS = ("judge_ok", "judge_failed", "judge_skipped")  # judged subsets

# lmms-eval's metric names per kind (subsets.KINDS), in the order lmms-eval prints them. Paper mode first (the
# published protocol), strict mode next to it, then the counts that qualify both.
COUNT_METRICS = ("unparsed", "invalid_rate")
# Counts of a judged task: items the judge failed on, items left unjudged (budget cap or deferred:
# subset_counts), and all items (the score is over the judged ones).
JUDGE_COUNT_METRICS = ("judge_failed", "judge_skipped", "judge_items")


def metric_names(subset: Subset) -> tuple[str, ...]:
    """The lmms-eval metric names reported for one subset (each samples line carries the item's
    record under every one of them)."""
    rule = subset.rule
    if rule.judged:
        return ("judge_score", *rule.criteria, *JUDGE_COUNT_METRICS)
    return (*(f"{m}_paper" for m in rule.metrics), *(f"{m}_strict" for m in rule.metrics), *COUNT_METRICS)


def subset_aggregate(spec: Subset, records: Sequence[Mapping[str, Any]],
                     columns: bootstrap.ItemColumns | None = None) -> dict[str, Any]:
    """The subset's aggregate: ``judge.aggregate`` for judged subsets, else ``metrics.aggregate``."""
    if spec.judged:
        from pulse_tasks.scoring import judge

        return judge.aggregate(list(records))
    from pulse_tasks.scoring import metrics

    return metrics.aggregate(spec, list(records), columns=columns)


def subset_counts(spec: Subset, agg: Mapping[str, Any]) -> dict[str, int]:
    """The counts that qualify a subset's numbers (module docstring: one meaning everywhere)."""
    if spec.judged:
        return {"judge_ok": agg["n_judged"], "judge_failed": agg["n_failed"],
                "judge_skipped": agg["n_skipped"] + agg.get("n_deferred", 0)}
    return {key: agg[key] for key in SCORE_COUNTS}


def metric_value(records: Sequence[Mapping[str, Any]], metric: str) -> float:
    """Corpus value of one lmms-eval metric name (e.g. "auc_paper", "unparsed", "judge_score") over
    one subset's records: what lmms-eval's results report (NaN for no records or an undefined metric)."""
    if not records:
        return float("nan")
    spec = BY_CONFIG[records[0]["subset"]]
    agg = subset_aggregate(spec, records)
    if spec.judged:
        counts = {**subset_counts(spec, agg), "judge_items": agg.get("n", 0)}
        value = agg.get("score") if metric == "judge_score" else counts[metric] if metric in counts else \
            _criterion(agg.get("criteria") or {}, metric)
    elif metric in COUNT_METRICS:
        value = agg[metric]
    else:
        name, _, mode = metric.rpartition("_")
        value = agg[mode][name]
    # Undefined metrics (e.g. AUC when every gold class is constant) are None: report NaN, not 0.
    return float("nan") if value is None else float(value)


def _criterion(criteria: Mapping[str, Any], metric: str) -> float | None:
    # Judge criteria keep their rubric spelling ("Instruction Adherence"); metric names are snake_case.
    for key, value in criteria.items():
        if key.lower().replace(" ", "_") == metric:
            return value
    return None


@dataclass
class SubsetSummary:
    """What a subset's records say (``summarize_subset``)."""

    spec: Subset
    records: Sequence[Mapping[str, Any]] = field(repr=False)
    columns: bootstrap.ItemColumns = field(repr=False)
    modes: dict[str, dict[str, Estimate]]  # MODES -> the kind's table metrics (judged: the score, in both)
    criteria: dict[str, Estimate]  # judged subsets: the judge's criteria (0-100)
    estimate: Callable[[str, str], Estimate] = field(repr=False)  # (mode, metric) -> Estimate
    draws: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)  # keep_draws: mode -> metric

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def complete(self) -> bool:
        return self.n == self.spec.n_items

    @cached_property
    def aggregate(self) -> dict[str, Any]:
        """``subset_aggregate`` of the records (computed when first asked)."""
        return subset_aggregate(self.spec, self.records, self.columns)

    @cached_property
    def per_class(self) -> dict[str, dict[str, Estimate]]:
        """Multi-label subsets: mode -> class -> F1 estimate, over the classes the aggregate scores
        in that mode (paper: those seen in the gold labels); {} for other kinds."""
        if self.columns.family != "multilabel":
            return {}
        classes = self.aggregate["classes"]
        return {mode: {c: self.estimate(mode, bootstrap.PER_CLASS_PREFIX + c) for c in classes[mode]}
                for mode in bootstrap.MODES}

    @property
    def counts(self) -> dict[str, int]:
        return subset_counts(self.spec, self.aggregate)

    @property
    def outcomes(self) -> dict[str, np.ndarray]:
        """Accuracy subsets: each item's credit per mode (paired tests use McNemar's on 0/1 ones)."""
        return {m: self.columns.columns[m] for m in bootstrap.MODES} if self.columns.family == "accuracy" else {}

    def table(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """{mode: {metric: estimate dict}}, the layout of reports and boards."""
        return {mode: {k: e.to_dict() for k, e in values.items()} for mode, values in self.modes.items()}


def summarize_subset(spec: Subset, records: Sequence[Mapping[str, Any]],
                     resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED, *,
                     weights: np.ndarray | None = None, keep_draws: bool = False,
                     confidence: float = bootstrap.CONFIDENCE) -> SubsetSummary:
    """The summary of one subset's records: values with their percentile bootstrap intervals
    (``resamples`` drawn from the subset's seeded stream, or the given ``weights`` matrix), counts,
    per-class F1 or criteria; ``keep_draws`` keeps the bootstrap values for paired tests."""
    records = list(records)
    cols = bootstrap.item_columns(spec, records)
    point, draws = bootstrap.point_and_draws(cols, spec.config, resamples, seed, weights)
    n = len(records)

    def est(mode: str, metric: str) -> Estimate:
        return bootstrap.estimate(point[mode][metric] if n else point[mode][metric][:0],
                                  draws[mode][metric] if draws is not None else None, confidence)

    criteria: dict[str, Estimate] = {}
    if spec.judged:  # one score, no paper/strict distinction: the same estimate in both modes
        score = est("judge", bootstrap.JUDGE_KEY)
        modes = {mode: {bootstrap.JUDGE_KEY: score} for mode in bootstrap.MODES}
        criteria = {k: est("judge", k) for k in point["judge"] if k != bootstrap.JUDGE_KEY}
        kept = {mode: draws["judge"] for mode in bootstrap.MODES} if keep_draws and draws is not None else None
    else:
        modes = {mode: {m: est(mode, m) for m in spec.rule.metrics} for mode in bootstrap.MODES}
        kept = draws if keep_draws else None
    return SubsetSummary(spec, records, cols, modes, criteria, est, kept)
