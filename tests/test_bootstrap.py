"""Bootstrap intervals and paired tests against closed-form answers and metrics.aggregate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from pulse_tasks.data.subsets import get_subset
from pulse_tasks.results.runs import synthetic_run
from pulse_tasks.scoring import bootstrap, judge, metrics


def _accuracy_cols(outcomes: np.ndarray, ids: tuple[str, ...] | None = None) -> bootstrap.ItemColumns:
    ids = ids or tuple(str(i) for i in range(len(outcomes)))
    return bootstrap.ItemColumns("accuracy", ids, {"paper": outcomes.astype(float), "strict": outcomes.astype(float)})


def test_resample_weights_are_multinomial_counts() -> None:
    w = bootstrap.resample_weights(7, 500, np.random.default_rng(1))
    assert w.shape == (500, 7)
    assert np.all(w.sum(axis=1) == 7)
    assert np.all(w >= 0) and np.all(w == np.round(w))
    # each item is drawn once per resample on average
    assert abs(w.mean() - 1.0) < 0.05
    again = bootstrap.resample_weights(7, 500, np.random.default_rng(1))
    assert np.array_equal(w, again)


def test_bernoulli_interval_matches_binomial_quantiles_and_normal_approximation() -> None:
    # The bootstrap distribution of a Bernoulli mean is exactly Binomial(n, p_hat) / n.
    n, k = 400, 120
    outcomes = np.zeros(n)
    outcomes[:k] = 1.0
    est = bootstrap.bootstrap_columns(_accuracy_cols(outcomes), "mmmu-ecg", resamples=20000, seed=5)
    acc = est["strict"]["accuracy"]
    p = k / n
    assert acc.value == pytest.approx(100 * p)
    exact_lo, exact_hi = 100 * binom.ppf(0.025, n, p) / n, 100 * binom.ppf(0.975, n, p) / n
    assert acc.lo == pytest.approx(exact_lo, abs=0.51)  # one item is 0.25 points
    assert acc.hi == pytest.approx(exact_hi, abs=0.51)
    half = 100 * norm.ppf(0.975) * math.sqrt(p * (1 - p) / n)
    assert acc.lo == pytest.approx(100 * p - half, abs=0.6)
    assert acc.hi == pytest.approx(100 * p + half, abs=0.6)


def test_interval_is_seeded_and_degenerate_for_constant_outcomes() -> None:
    ones = _accuracy_cols(np.ones(50))
    est = bootstrap.bootstrap_columns(ones, "csn-test-no-cot", resamples=200, seed=0)["paper"]["accuracy"]
    assert (est.value, est.lo, est.hi) == (100.0, 100.0, 100.0)
    mixed = _accuracy_cols(np.arange(60) % 3 == 0)
    a = bootstrap.bootstrap_columns(mixed, "csn-test-no-cot", resamples=300, seed=4)
    b = bootstrap.bootstrap_columns(mixed, "csn-test-no-cot", resamples=300, seed=4)
    c = bootstrap.bootstrap_columns(mixed, "csn-test-no-cot", resamples=300, seed=5)
    assert a == b
    assert a != c


def test_percentile_interval_ignores_undefined_draws() -> None:
    draws = np.array([np.nan, *np.linspace(0, 100, 101)])
    lo, hi = bootstrap.percentile_interval(draws, 0.9)
    assert lo == pytest.approx(5.0) and hi == pytest.approx(95.0)
    assert bootstrap.percentile_interval(np.array([np.nan, np.nan])) == (None, None)


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict]]:
    recs, _ = synthetic_run(seed=2, skill=0.6, scale=0.04)
    return recs


@pytest.mark.parametrize("subset", ["ptb-test", "code15-test", "cpsc-test", "ecgqa-test", "csn-test-no-cot", "mmmu-ecg"])
def test_vectorised_metrics_equal_aggregate_on_resamples(subset: str, records: dict[str, list[dict]]) -> None:
    spec, recs = get_subset(subset), records[subset]
    cols = bootstrap.item_columns(spec, recs)
    rng = np.random.default_rng(11)
    for draw in range(6):
        if draw == 0:
            idx = np.arange(len(recs))
        elif draw == 1:  # a resample that drops whole classes from the gold labels (paper mode: fewer classes)
            idx = np.full(len(recs), rng.integers(len(recs)))
        else:
            idx = rng.integers(0, len(recs), len(recs))
        w = np.bincount(idx, minlength=len(recs))[None, :].astype(float)
        ours = bootstrap.weighted_metrics(cols, w)
        ref = metrics.aggregate(spec, [recs[i] for i in idx])
        for mode in bootstrap.MODES:
            for key, value in ref[mode].items():
                got = float(ours[mode][key][0])
                if value is None:
                    assert not math.isfinite(got), (mode, key)
                else:
                    assert got == pytest.approx(value, abs=1e-9), (mode, key, draw)
            for label, value in ref.get("per_class_f1", {}).get(mode, {}).items():
                got = float(ours[mode][f"{bootstrap.PER_CLASS_PREFIX}{label}"][0])
                assert (value is None and not math.isfinite(got)) or got == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("subset", ["ptb-test-report", "arena"])
def test_judge_weighted_mean_equals_judge_aggregate(subset: str, records: dict[str, list[dict]]) -> None:
    recs = records[subset]
    assert any(r["status"] == "failed" for r in recs) or len(recs) < 30
    est = bootstrap.bootstrap_subset(subset, recs, resamples=100, seed=0)["judge"]
    ref = judge.aggregate(recs)
    assert est["score"].value == pytest.approx(ref["score"], abs=1e-3)
    for name, value in ref["criteria"].items():
        assert est[name].value == pytest.approx(value, abs=1e-3)
    assert est["score"].lo <= est["score"].value <= est["score"].hi


def test_failed_judge_items_never_count_as_zero() -> None:
    base = {"subset": "arena", "judge": {}, "criteria": {"Accuracy": 8.0}}
    recs = [{**base, "id": "a", "status": "ok", "score": 80.0},
            {**base, "id": "b", "status": "failed", "score": None, "criteria": {}}]
    est = bootstrap.bootstrap_subset("arena", recs, resamples=50, seed=0)["judge"]["score"]
    assert est.value == 80.0


def test_mcnemar_matches_exact_binomial() -> None:
    # 10 items only B gets right, 2 only A gets right, 30 both, 8 neither.
    a = np.array([1] * 2 + [0] * 10 + [1] * 30 + [0] * 8, bool)
    b = np.array([0] * 2 + [1] * 10 + [1] * 30 + [0] * 8, bool)
    p, a_only, b_only = bootstrap.mcnemar_exact(a, b)
    assert (a_only, b_only) == (2, 10)
    closed_form = 2 * sum(math.comb(12, k) for k in (10, 11, 12)) / 2 ** 12  # two-sided, symmetric null
    assert p == pytest.approx(closed_form)
    assert p == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    assert bootstrap.mcnemar_exact(a, a)[0] == 1.0


def test_paired_differences_use_mcnemar_for_binary_accuracy() -> None:
    a = np.array([1] * 2 + [0] * 10 + [1] * 30 + [0] * 8, float)
    b = np.array([0] * 2 + [1] * 10 + [1] * 30 + [0] * 8, float)
    out = bootstrap.paired_differences(_accuracy_cols(a), _accuracy_cols(b), "csn-test-no-cot", resamples=2000, seed=0)
    d = out["strict"]["accuracy"]
    assert d.test == "McNemar exact" and d.discordant == (2, 10)
    assert d.diff == pytest.approx(100 * 8 / 50)
    assert d.p_value == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    assert d.lo < d.diff < d.hi and d.lo > 0


def test_paired_bootstrap_of_identical_runs_is_zero_with_p_one(records: dict[str, list[dict]]) -> None:
    cols = bootstrap.item_columns("ptb-test", records["ptb-test"])
    out = bootstrap.paired_differences(cols, cols, "ptb-test", resamples=200, seed=0)
    for mode in bootstrap.MODES:
        d = out[mode]["f1"]
        assert d.test == "paired bootstrap"
        assert (d.diff, d.lo, d.hi) == (0.0, 0.0, 0.0)
        assert d.p_value == 1.0


def test_bootstrap_p_value_is_small_for_a_clear_shift_and_large_for_none() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(5.0, 1.0, 4000)
    assert bootstrap.bootstrap_p_value(draws, 5.0) < 0.001
    # observed 1 SD from zero: two-sided normal p = 0.317
    assert bootstrap.bootstrap_p_value(draws, 1.0) == pytest.approx(2 * norm.sf(1.0), abs=0.03)
