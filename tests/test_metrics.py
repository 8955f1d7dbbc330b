"""pulse_tasks.scoring.metrics against hand-computed values and against the reference's scikit-learn calls."""

from __future__ import annotations

import json
import math
import random
import warnings

import numpy as np
import pytest

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring import metrics, parsing

ONLY = parsing.ONLY_ANSWER_SENTENCE
FAILED = "[ECGBENCH_GENERATION_FAILED: CUDA out of memory]"


def letter_doc(i: int, gold: str, subset: str = "mmmu-ecg") -> dict:
    return {"id": f"q{i}", "subset": subset, "questions": ["Which one? A. x B. y C. z D. w"],
            "answers": [gold], "gold_options": []}


def label_doc(i: int, gold: str, subset: str = "ptb-test") -> dict:
    return {"id": f"e{i}", "subset": subset, "questions": ["Labels?"], "answers": [gold], "gold_options": []}


def qa_doc(i: int, options: list[str], gold: list[str]) -> dict:
    prompt = f"Which apply? Options: {', '.join(options)} {ONLY}"
    return {"id": f"qa{i}", "subset": "ecgqa-test", "questions": [prompt],
            "answers": [", ".join(gold)], "gold_options": gold}


def score_all(subset: str, docs: list[dict], responses: list) -> dict:
    return metrics.aggregate(subset, [metrics.score_item(subset, d, r) for d, r in zip(docs, responses)])


# ------------------------------------------------------------------------ records


def test_records_are_small_json_and_flag_states():
    doc = letter_doc(0, "B")
    cases = {"B": ("ok", False, False), FAILED: ("failed", True, True), "": ("empty", True, True),
             None: ("missing", True, True), b"\xff": ("not_utf8", True, True), 3.5: ("not_text", True, True)}
    for response, (status, unparsed, invalid) in cases.items():
        record = metrics.score_item("mmmu-ecg", doc, response)
        assert record["status"] == status
        assert (record["unparsed"], record["invalid"]) == (unparsed, invalid)
        assert record["failed"] is (status == "failed") and record["missing"] is (status == "missing")
        assert len(json.dumps(record, allow_nan=False)) < 700  # the explain record is most of it
    for subset, d in (("ptb-test", label_doc(0, "NORM")), ("ecgqa-test", qa_doc(0, ["yes", "no"], ["yes"]))):
        assert len(json.dumps(metrics.score_item(subset, d, "NORM yes"), allow_nan=False)) < 700
    long = metrics.score_item("mmmu-ecg", doc, "The rhythm is regular. " * 200)  # no answer: the whole text
    assert long["explain"]["region_end"] == len("The rhythm is regular. " * 200)
    assert len(json.dumps(long, allow_nan=False)) < 900  # the region is shown cut, its offsets kept


def test_subset_by_task_name_and_judged_subsets_refused():
    assert metrics.score_item("ecgbench_mmmu", letter_doc(0, "A"), "A")["subset"] == "mmmu-ecg"
    with pytest.raises(ValueError, match="judge"):
        metrics.score_item("arena", letter_doc(0, "A"), "A")
    with pytest.raises(ValueError, match="Did you mean"):
        metrics.score_item("ptb-tset", label_doc(0, "NORM"), "NORM")


def test_failed_response_never_matches_labels():
    # "[LMMS_EVAL_REQUEST_FAILED" contains "ST" (code15's sinus tachycardia) as a substring
    record = metrics.score_item("code15-test", label_doc(0, "ST", "code15-test"), "[LMMS_EVAL_REQUEST_FAILED x]")
    assert record["paper"] == [] and record["strict"] == [] and record["failed"]


# ------------------------------------------------------------------------ letters


def test_letter_accuracy_expected_credit_for_unparsed():
    docs = [letter_doc(i, g) for i, g in enumerate("ABCDA")]
    responses = ["A", "C", "I cannot tell", FAILED, None]  # right, wrong, unparsed, failed, missing
    result = score_all("mmmu-ecg", docs, responses)
    # paper: (1 + 0 + 1/4 + 1/4 + 1/4) / 5 ; strict: 1/5
    assert result["paper"]["accuracy"] == pytest.approx(100 * 1.75 / 5)
    assert result["strict"]["accuracy"] == pytest.approx(20.0)
    assert (result["unparsed"], result["invalid"], result["failed"], result["missing"]) == (3, 3, 1, 1)
    assert result["invalid_rate"] == pytest.approx(60.0)
    credits = np.array([1, 0, .25, .25, .25])
    assert result["se"]["paper"]["accuracy"] == pytest.approx(100 * credits.std(ddof=1) / math.sqrt(5))


def test_letter_credit_uses_the_subsets_letter_count():
    result = score_all("csn-test-no-cot", [letter_doc(0, "A", "csn-test-no-cot")], ["no idea"])
    assert result["paper"]["accuracy"] == pytest.approx(100 / 8)
    assert result["strict"]["accuracy"] == 0.0


def test_letter_paper_quirk_vs_strict():
    # "USA." is read as A by the reference; strict finds no answer
    result = score_all("g12-test-no-cot", [letter_doc(0, "A", "g12-test-no-cot")], ["Made in the USA."])
    assert result["paper"]["accuracy"] == 100.0 and result["strict"]["accuracy"] == 0.0
    # mmmu: a letter outside A-D is a wrong answer in paper mode, unparsed (wrong) in strict
    record = metrics.score_item("mmmu-ecg", letter_doc(0, "A"), "E")
    assert (record["paper"], record["paper_credit"], record["unparsed"]) == ("E", 0.0, False)
    assert (record["strict"], record["invalid"]) == (None, True)


# ------------------------------------------------------------------------ ECG-QA


def test_ecgqa_exact_set_match_and_quirks():
    docs = [
        qa_doc(0, ["yes", "no", "none"], ["none"]),  # no/none collision
        qa_doc(1, ["Sinus rhythm", "atrial fibrillation"], ["Sinus rhythm"]),  # lower-casing bug
        qa_doc(2, ["lead I", "lead II", "lead V1"], ["lead I", "lead V1"]),
        qa_doc(3, ["yes", "no"], ["yes"]),
    ]
    responses = ["none", "Sinus rhythm", "lead V1, lead I", "lead II"]
    records = [metrics.score_item("ecgqa-test", d, r) for d, r in zip(docs, responses)]
    assert [r["paper_credit"] for r in records] == [0.0, 0.0, 0.0, 0.0]
    # item 2 in paper mode: "lead I" is not lower-cased -> never matches
    assert [r["strict_correct"] for r in records] == [True, True, True, False]
    result = metrics.aggregate("ecgqa-test", records)
    assert result["paper"]["accuracy"] == 0.0 and result["strict"]["accuracy"] == 75.0
    assert result["unparsed"] == 3  # items 1-3: no paper candidate (capitalised, or absent)
    assert result["invalid"] == 1  # item 3: "lead ii" is not an option of item 3


def test_ecgqa_paper_correct_when_sets_equal():
    doc = qa_doc(0, ["yes", "no", "not sure"], ["yes"])
    assert metrics.score_item("ecgqa-test", doc, "Yes")["paper_credit"] == 1.0
    assert metrics.score_item("ecgqa-test", doc, "not sure")["paper_credit"] == 0.0  # {"no", "not sure"}


# ------------------------------------------------------------------------ multi-label, hand computed


def test_multilabel_hand_computed():
    docs = [label_doc(i, g) for i, g in enumerate(["NORM", "MI", "MI; STTC", "NORM"])]
    responses = ["NORM", "MI, CD", "STTC", ""]
    result = score_all("ptb-test", docs, responses)
    # paper classes = gold classes NORM, MI, STTC (CD dropped):
    #   NORM TP1 FN1 -> F1 2/3, AUC (1/2 + 1)/2 = .75 ; MI the same ; STTC F1 1, AUC 1
    assert result["classes"]["paper"] == ["NORM", "MI", "STTC"]
    assert result["paper"]["f1"] == pytest.approx(100 * 7 / 9)
    assert result["paper"]["auc"] == pytest.approx(100 * 2.5 / 3)
    assert result["paper"]["hamming_loss"] == pytest.approx(100 * 2 / 12)
    # strict classes = NORM, MI, STTC, CD, HYP: CD F1 0 (one false positive), HYP undefined;
    #   AUC undefined for CD and HYP (no gold positives)
    assert result["strict"]["f1"] == pytest.approx(100 * (7 / 3) / 4)
    assert result["strict"]["auc"] == pytest.approx(100 * 2.5 / 3)
    assert result["strict"]["hamming_loss"] == pytest.approx(100 * 3 / 20)
    assert result["auc_nan_classes"] == {"paper": [], "strict": ["CD", "HYP"]}
    assert result["f1_undefined_classes"] == {"paper": [], "strict": ["HYP"]}
    assert result["per_class_f1"]["paper"] == pytest.approx({"NORM": 200 / 3, "MI": 200 / 3, "STTC": 100.0})
    assert result["per_class_f1"]["strict"]["CD"] == 0.0 and result["per_class_f1"]["strict"]["HYP"] is None
    assert result["unparsed"] == 1 and result["invalid"] == 1
    json.dumps(result, allow_nan=False)


def test_multilabel_nan_auc_class_is_reported_not_poisoning():
    # every gold row has NORM: its ROC-AUC is undefined (NaN in the reference, which poisons the mean)
    docs = [label_doc(0, "NORM"), label_doc(1, "NORM; MI")]
    result = score_all("ptb-test", docs, ["NORM", "NORM"])
    assert result["auc_nan_classes"]["paper"] == ["NORM"]
    assert result["paper"]["auc"] == pytest.approx(50.0)  # MI only: constant prediction -> 0.5
    assert result["paper"]["f1"] == pytest.approx(50.0)  # NORM 1, MI 0
    assert result["paper"]["hamming_loss"] == pytest.approx(25.0)


def test_multilabel_substring_quirks_change_the_scores():
    # gold MI; "MILD ABNORMAL" gives MI and NORM in paper mode, nothing in strict mode
    docs = [label_doc(0, "MI"), label_doc(1, "NORM")]
    result = score_all("ptb-test", docs, ["MILD ABNORMAL changes", "NORM"])
    # paper classes MI, NORM: MI TP1 ; NORM TP1 FP1 -> F1 2/3 ; HL 1/4
    assert result["paper"]["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["paper"]["hamming_loss"] == pytest.approx(25.0)
    assert result["strict"]["f1"] == pytest.approx(50.0)  # MI 0 (missed), NORM 1; rest undefined
    assert result["invalid"] == 1


def test_code15_norm_abnormal():
    docs = [label_doc(0, "NORM", "code15-test"), label_doc(1, "ABNORMAL; AF", "code15-test")]
    records = [metrics.score_item("code15-test", d, r)
               for d, r in zip(docs, ["ABNORMAL", "Not NORM. Answer: ABNORMAL, AFL"])]
    assert records[0]["gold"] == ["NORM"] and records[0]["paper"] == ["ABNORMAL"]
    assert records[1]["paper"] == ["ABNORMAL", "AF"] and records[1]["strict"] == ["ABNORMAL"]


def test_aggregate_rejects_foreign_records_and_handles_empty():
    record = metrics.score_item("ptb-test", label_doc(0, "NORM"), "NORM")
    with pytest.raises(ValueError, match="cannot be aggregated"):
        metrics.aggregate("cpsc-test", [record])
    with pytest.raises(ValueError):
        metrics.aggregate("mmmu-ecg", [record])
    empty = metrics.aggregate("ptb-test", [])
    assert empty["n"] == 0 and empty["paper"] == {"auc": None, "f1": None, "hamming_loss": None}
    assert metrics.aggregate("mmmu-ecg", [])["paper"] == {"accuracy": None}


def test_all_metrics_on_every_multilabel_subset_both_modes():
    for name in ("ptb-test", "code15-test", "cpsc-test"):
        labels = BY_CONFIG[name].labels
        docs = [label_doc(i, "; ".join(labels[i % len(labels):][:2]), name) for i in range(12)]
        result = score_all(name, docs, ["; ".join(labels[:3])] * 12)
        for mode in ("paper", "strict"):
            assert set(result[mode]) == {"auc", "f1", "hamming_loss"}
            assert result["per_class_f1"][mode]
        json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------------ against scikit-learn


def _reference_multilabel(gold: list[list[str]], pred: list[list[str]]) -> tuple[float, float, float]:
    """The reference's computation: MultiLabelBinarizer fit on gold, per-class sklearn calls."""
    from sklearn.metrics import f1_score, hamming_loss, roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer

    mlb = MultiLabelBinarizer()
    y_true = mlb.fit_transform(gold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unknown class(es) will be ignored"
        y_pred = mlb.transform(pred)
        f1s, aucs = [], []
        for i in range(y_true.shape[1]):
            f1s.append(f1_score(y_true[:, i], y_pred[:, i], zero_division=0))
            try:
                aucs.append(roc_auc_score(y_true[:, i], y_pred[:, i]))
            except ValueError:
                aucs.append(np.nan)
    return 100 * np.mean(f1s), 100 * np.nanmean(aucs), 100 * hamming_loss(y_true, y_pred)


@pytest.mark.parametrize("seed", range(6))
def test_paper_multilabel_matches_reference_sklearn(seed):
    rng = random.Random(seed)
    name = ("ptb-test", "cpsc-test", "code15-test")[seed % 3]
    labels = BY_CONFIG[name].labels
    n = rng.randint(3, 60)
    docs = [label_doc(i, "; ".join(rng.sample(labels[:-1], rng.randint(1, 2))), name) for i in range(n)]
    responses = [", ".join(rng.sample(labels, rng.randint(0, 3))) for _ in range(n)]
    records = [metrics.score_item(name, d, r) for d, r in zip(docs, responses)]
    result = metrics.aggregate(name, records)
    f1, auc, hl = _reference_multilabel([r["gold"] for r in records], [r["paper"] for r in records])
    assert result["paper"]["f1"] == pytest.approx(f1)
    assert result["paper"]["hamming_loss"] == pytest.approx(hl)
    if math.isnan(auc):
        assert result["paper"]["auc"] is None
    else:
        assert result["paper"]["auc"] == pytest.approx(auc)


def test_multilabel_scores_match_sklearn_per_class():
    from sklearn.metrics import f1_score, hamming_loss, roc_auc_score

    rng = np.random.default_rng(0)
    gold = rng.random((50, 6)) < 0.3
    pred = rng.random((50, 6)) < 0.4
    gold[:, 5] = True  # a constant gold column: undefined AUC
    scores = metrics.multilabel_scores(gold, pred, list("abcdef"))
    for i in range(5):
        assert scores["f1"][i] == pytest.approx(f1_score(gold[:, i], pred[:, i]))
        assert scores["auc"][i] == pytest.approx(roc_auc_score(gold[:, i], pred[:, i]))
    assert math.isnan(scores["auc"][5])
    assert scores["hamming_loss"] == pytest.approx(hamming_loss(gold, pred))


# ------------------------------------------------------------------------ speed (bench/score_speed.py)


def test_full_size_scoring_within_budget(bench_script):
    # short synthetic answers; strict v3: ~0.55 s quiet (docs/performance.md); budget 2 s on one core,
    # held to the CPU seconds of the scoring thread: two CI runs at once (load 12-20) took 2.8-4.1 s of
    # wall time for it. The real-length set is timed by the bench itself (docs/performance.md).
    bench = bench_script("score_speed")
    n_items, seconds, wall = bench.run_benchmark(repeat=3)
    assert n_items == sum(s.n_items for s in bench.AUTO_SCORED) == 10_697
    assert 0 < seconds < bench.BUDGET_S, f"{seconds:.2f} CPU seconds ({wall:.2f} s wall)"


def test_benchmark_script_fails_over_budget(capsys, bench_script):
    bench = bench_script("score_speed")
    assert bench.main(["--repeat", "1", "--budget", "0", "--set", "synthetic"]) == 1
    assert "OVER BUDGET" in capsys.readouterr().out


def test_real_length_set_is_built_from_the_committed_answers(bench_script):
    """The real-length set needs no shared folder: the bench's gzip copies, resampled to full size."""
    bench = bench_script("score_speed")
    items = bench.build_real_items()
    assert len(items) == 10_697 and {sub.config for sub, _, _ in items} == {s.config for s in bench.AUTO_SCORED}
    texts = [response for _, _, response in items]
    assert sum(map(len, texts)) / len(texts) > 900  # real length, about 1,100 characters
    seconds, _, results = bench.time_scoring(items[::50])  # it scores (the full set's timing: docs/performance.md)
    assert seconds > 0 and all(r["strict_version"] == 3 for r in results.values())
