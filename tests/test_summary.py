"""pulse_tasks.results.summary: one subset summary behind the report, submissions, the board and lmms-eval's counts."""

from __future__ import annotations

import copy

import pytest

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.glue import hooks
from pulse_tasks.results import report, submission
from pulse_tasks.results.runs import load_runs, synthetic_run, write_run
from pulse_tasks.results.summary import subset_counts, summarize_subset
from pulse_tasks.scoring import metrics
from pulse_tasks.scoring.records import JUDGE_DEFERRED, JUDGE_SKIPPED


@pytest.fixture(scope="module")
def run_with_unjudged(tmp_path_factory):
    """A small synthetic run whose arena has a deferred item and whose report subset a budget-skipped one."""
    recs, resps = synthetic_run(seed=11, scale=0.1)
    recs["arena"][0] = {**recs["arena"][0], "status": JUDGE_DEFERRED, "score": None, "criteria": {}}
    recs["ptb-test-report"][1] = {**recs["ptb-test-report"][1], "status": JUDGE_SKIPPED, "score": None, "criteria": {}}
    folder = tmp_path_factory.mktemp("run")
    write_run(folder, "synth", recs, resps)
    (run,) = load_runs([folder])
    return run


def test_judge_skipped_counts_skipped_and_deferred_items_everywhere(run_with_unjudged) -> None:
    """One meaning: items left unjudged without a judge error (budget-skipped or deferred), the
    same number in lmms-eval's results (hooks), the report and the submission."""
    rep = report.build_report([run_with_unjudged], resamples=0)
    doc = submission.build_submission(run_with_unjudged, resamples=0)
    for name in ("arena", "ptb-test-report"):
        sr = run_with_unjudged.subsets[name]
        records = [{**r, "subset": name} for r in sr.records]
        from_hooks = hooks.aggregate_metric(records, "judge_skipped")
        assert from_hooks == 1.0
        assert rep["runs"][0]["subsets"][name]["counts"]["judge_skipped"] == 1
        assert doc["subsets"][name]["counts"]["judge_skipped"] == 1
        assert sr.aggregated["judge_skipped"] == 1.0  # the results file the run wrote
    assert submission.validate_submission(doc)[0] == []


def test_submissions_from_before_the_decision_still_validate(run_with_unjudged) -> None:
    doc = submission.build_submission(run_with_unjudged, attach_predictions=True, resamples=0)
    old = copy.deepcopy(doc)
    old["subsets"]["arena"]["counts"]["judge_skipped"] = 0  # budget-skipped only: deferred left out
    errors, notes = submission.validate_submission(old)
    assert errors == [] and any("deferred" in n and n.startswith("arena") for n in notes)
    old["subsets"]["arena"]["counts"]["judge_skipped"] = 2  # any other number is still wrong
    errors, _ = submission.validate_submission(old)
    assert errors == ["arena count judge_skipped: submitted 2, recomputed 1"]


def test_report_submission_and_board_read_one_summary(run_with_unjudged) -> None:
    from pulse_tasks.results.leaderboard import board

    for name, sr in run_with_unjudged.subsets.items():
        spec = BY_CONFIG[name]
        s = summarize_subset(spec, sr.records, resamples=50, seed=3)
        rep = report.subset_result(sr, resamples=50, seed=3)
        entry = submission.subset_entry(name, sr.records, 50, 3)
        assert rep["modes"] == s.table()
        assert entry["metrics"] == ({"judge": s.table()["paper"]} if spec.judged else s.table())
        assert rep["counts"].items() >= entry["counts"].items() == subset_counts(spec, s.aggregate).items()
        draws = board.subset_draws(name, sr.records, 50, 3)
        for mode, values in s.modes.items():
            assert draws.point[mode] == pytest.approx({m: e.value for m, e in values.items()}, nan_ok=True)


def test_aggregate_is_the_summary_point_value(run_with_unjudged) -> None:
    for name, sr in run_with_unjudged.subsets.items():
        spec = BY_CONFIG[name]
        if spec.judged:
            continue
        agg = metrics.aggregate(spec, sr.records)
        s = summarize_subset(spec, sr.records, resamples=0)
        assert {m: {k: e.value for k, e in v.items()} for m, v in s.modes.items()} == {m: agg[m] for m in s.modes}
        assert s.counts == {k: agg[k] for k in ("unparsed", "invalid", "failed", "missing")}
