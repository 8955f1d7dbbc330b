"""Strict mode against blind examiner readings of long, real answers (issue 26).

The tables in ``tests/data/strict_real/`` were labelled blind (their README says how): real code15
answers of a fine-tuned FastVLM-1.5B, real ECG-QA answers of large general models, and long
answers written in those styles for ptb, cpsc and the letter subsets. Every row is scored the way
users reach it -- ``metrics.score_item``, the record lmms-eval keeps -- and compared with the
examiner's reading in the question's own vocabulary:

* code15's NORM/ABNORMAL question: the NORM/ABNORMAL part of the strict labels;
* code15's class question (``Determine the appropriate class ...: 1dAVb(...), RBBB(...), ...``):
  the six codes (strict adds ABNORMAL to any code, which that question does not ask for);
* ptb/cpsc: the label set; letters: the letter; ECG-QA: the option set;
* ``invalid`` (the answer commits to nothing): strict finds no answer.

Every disagreement is printed; the issue's bars: 97% on the real code15 and ECG-QA answers each,
98% on the long synthetic tables.

``heldout_code15``/``heldout_ecgqa`` are a uniform random sample of other real answers labelled blind
by a second examiner (``heldout.md``). On first use strict v3 agreed on 100/100 code15 and only 44/50
(88%) ECG-QA answers; the ECG-QA misses were then used for development, so these two tables are
regression tables now (bar 97%), no longer a held-out estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring import metrics
from pulse_tasks.scoring.strict import strict_candidates

DATA = Path(__file__).parent / "data" / "strict_real"
MIN_REAL = 0.97  # real code15 answers, real ECG-QA answers (each)
MIN_LONG = 0.98  # long answers written in the real styles
INVALID = "invalid"
CODE15 = BY_CONFIG["code15-test"]
CODE15_GLOBAL = {"NORM", "ABNORMAL"}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def _doc(subset: str, row: dict) -> dict:
    """A normalized doc as the task builds it; gold does not matter (the reading is compared)."""
    gold = {"ecgqa-test": "yes", "ptb-test": "NORM", "cpsc-test": "NORM", "code15-test": "NORM"}.get(subset, "A")
    item_id = row.get("question_id") or row["id"]
    return {"id": item_id, "subset": subset, "image_path": "", "questions": [row["prompt"]], "answers": [gold],
            "gold_options": [gold] if subset == "ecgqa-test" else []}


def _expected(reading: object) -> frozenset[str]:
    if reading == INVALID:
        return frozenset()
    if isinstance(reading, list):
        return frozenset(reading)
    return frozenset(r for r in str(reading).split(";") if r)


def _strict_reading(subset: str, row: dict) -> frozenset[str]:
    """What strict mode reads, through the scoring record, in the question's vocabulary."""
    record = metrics.score_item(subset, _doc(subset, row), row["text"])
    kind = BY_CONFIG[subset].kind
    if kind == "letter":
        return frozenset([record["strict"]]) if record["strict"] else frozenset()
    if kind == "ecgqa":
        return frozenset(record["strict"])
    labels = frozenset(record["strict"])
    if subset == "code15-test":
        binary = "NORM" in row["prompt"] and "ABNORMAL" in row["prompt"]
        return labels & CODE15_GLOBAL if binary else labels - CODE15_GLOBAL
    return labels


def _agreement(name: str, rows: list[tuple[str, dict]], expected_of) -> tuple[int, list[str]]:
    misses = []
    for subset, row in rows:
        want, got = expected_of(subset, row), _strict_reading(subset, row)
        if want != got:
            item = row.get("question_id") or row["id"]
            misses.append(f"  {name} {item}: examiner {sorted(want) or INVALID}  strict {sorted(got) or INVALID}"
                          f"\n    why: {row.get('reason', '')}\n    text: {row['text'][:160]!r}")
    return len(rows) - len(misses), misses


def _examiner(subset: str, row: dict) -> frozenset[str]:
    reading = _expected(row["reading"])
    if BY_CONFIG[subset].kind == "ecgqa":
        return frozenset(strict_candidates(reading))
    return reading


TABLES = {
    # name: (rows as (subset, row), bar)
    "code15 (real)": (lambda: [("code15-test", r) for r in _rows("code15_labels")], MIN_REAL),
    "ECG-QA (real)": (lambda: [("ecgqa-test", r) for r in _rows("ecgqa_labels")], MIN_REAL),
    "ptb/cpsc (long)": (lambda: [(r["subset"], r) for r in _rows("long_ptb_cpsc")], MIN_LONG),
    "letters (long)": (lambda: [(r["subset"], r) for r in _rows("long_letters")], MIN_LONG),
    # second examiner, uniform sample; 88% (ECG-QA) blind on first use, then used for development
    "code15 (held-out)": (lambda: [("code15-test", r) for r in _rows("heldout_code15")], MIN_REAL),
    "ECG-QA (held-out)": (lambda: [("ecgqa-test", r) for r in _rows("heldout_ecgqa")], MIN_REAL),
}


def test_tables_are_as_large_as_the_issue_asks():
    assert len(_rows("code15_labels")) >= 200
    assert len(_rows("ecgqa_labels")) >= 100
    long_rows = _rows("long_ptb_cpsc") + _rows("long_letters")
    assert len(long_rows) >= 100
    assert {r["subset"] for r in long_rows} >= {"ptb-test", "cpsc-test", "csn-test-no-cot", "g12-test-no-cot", "mmmu-ecg"}
    for name in ("code15_labels", "ecgqa_labels", "long_ptb_cpsc", "long_letters", "heldout_code15", "heldout_ecgqa"):
        ids = [r.get("question_id") or r["id"] for r in _rows(name)]
        assert len(set(ids)) == len(ids), f"{name}: a duplicated row would count twice"


@pytest.mark.parametrize("name", list(TABLES))
def test_strict_agrees_with_the_examiner(name: str, capsys: pytest.CaptureFixture[str]):
    load, bar = TABLES[name]
    rows = load()
    agree, misses = _agreement(name, rows, _examiner)
    with capsys.disabled():
        print(f"\n{name}: strict agrees with the examiner on {agree}/{len(rows)} ({100 * agree / len(rows):.1f}%)")
        for miss in misses:
            print(miss)
    assert agree / len(rows) >= bar


# --------------------------------------------------------------------------- the v3 rules, one each

CLASS_PROMPT = ("Determine the appropriate class for the ECG image: 1dAVb(1st degree av block), RBBB(right bundle "
                "branch block), LBBB(left bundle branch block), SB(sinus bradycardia), ST(sinus tachycardia), "
                "AF(atrial fibrillation). The last line of your response should be of the following format: "
                "'Answer: $CLASS(;CLASS)' (without quotes and separate multiple classes with a semicolon if any), "
                "where CLASS is one of the above candidate classes.")
BINARY_PROMPT = "Judge whether the ECG reading is normal or abnormal. Your result should be NORM or ABNORMAL."


def _code15(prompt: str, text: str) -> dict:
    return metrics.score_item("code15-test", {"id": "x", "questions": [prompt], "answers": ["NORM"]}, text)


@pytest.mark.parametrize("prompt, text, labels", [
    # the first line is the answer; the list under one negation is all negated anyway
    (BINARY_PROMPT, ("NORM\nThe ECG reading is considered normal ... there are no signs of arrhythmia, conduction "
                     "abnormalities, or ischemic changes."), ["NORM"]),
    # the answer line wins over a rationale that names every option
    (CLASS_PROMPT, ("Answer: RBBB(right bundle branch block)\nThe presence of left bundle branch block (LBBB) is also "
                    "evident, with sinus bradycardia and atrial fibrillation."), ["ABNORMAL", "RBBB"]),
    # code over name; the template wrapped around a real value is that value
    (CLASS_PROMPT, "Answer: LBBB(right bundle branch block)\nWe can determine ...", ["ABNORMAL", "LBBB"]),
    (CLASS_PROMPT, "Answer: $CLASS(1dAVb(1st degree av block))\nWe can determine ...", ["ABNORMAL", "1dAVb"]),
    # with several statements, the last one
    (CLASS_PROMPT, ("Answer: $CLASS(1dAVb(1st degree av block))\nThe rate is slow. Therefore, the most appropriate "
                    "class for this ECG image is sinus bradycardia."), ["ABNORMAL", "SB"]),
    # noise before the label; a loop read once
    (BINARY_PROMPT, "\u00e2\u20ac\u009d\nNORM\n" + "This image is a normal ECG.\n" * 20, ["NORM"]),
    (BINARY_PROMPT, "&gt;ABNORMAL&gt;\n<end of detailed answer>\n<end of detailed answer>", ["ABNORMAL"]),
    # a hypothetical mention claims nothing; no statement: the whole text is read
    (BINARY_PROMPT, ("The ECG shows sinus rhythm with a narrow QRS, which rules out left bundle branch block, which "
                     "would be indicated by a prolonged QRS. Overall, the ECG is within normal limits."), ["NORM"]),
])
def test_answer_statement_first(prompt: str, text: str, labels: list[str]):
    assert _code15(prompt, text)["strict"] == labels


@pytest.mark.parametrize("text, reason", [
    ("\u00e2\u20ac\u009d\u00e2\u20ac\u009d\u00e2\u20ac\u009d\u00e2\u20ac\u009d", "the response is only noise"),
    ("Answer: $CLASS(;CLASS)\nWe can determine the appropriate class by analyzing the patterns.",
     "the answer template was echoed"),
    (("<start of description>\nThe image displays an electrocardiogram (ECG) tracing, which is a graphical "
      "representation of the electrical activity of the heart over a period of time. The tracing is presented on a "
      "grid with horizontal and vertical lines, which help to measure the time and amplitude of the waves and"), "cut off"),
])
def test_degenerate_answers_are_invalid_with_the_reason(text: str, reason: str):
    record = _code15(CLASS_PROMPT, text)
    assert record["invalid"] and reason in record["explain"]["invalid_reason"]


def test_explain_shows_the_statement_and_that_the_rationale_was_not_read():
    text = ("Answer: RBBB(right bundle branch block)\nWe can determine the appropriate class ... The absence of "
            "left bundle branch block (LBBB) is evident.")
    explain = _code15(CLASS_PROMPT, text)["explain"]
    statement = explain["answer_statement"]
    assert statement["kind"] == "answer line" and statement["text"].strip() == "RBBB(right bundle branch block)"
    assert explain["rationale_read"] is False and explain["rationale_chars"] > 50
    assert all(s["start"] >= statement["start"] for s in explain["spans"])  # nothing read in the rationale
    whole = _code15(BINARY_PROMPT, "ial\nThe ECG image shows a normal pattern. Overall, the ECG is within normal limits.")
    assert whole["strict"] == ["NORM"] and whole["explain"]["rationale_read"] is True
    assert "answer_statement" not in whole["explain"]


def test_score_explain_reads_a_reference_output_without_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`ecgbench score --explain ID --questions-from-predictions` on the real answers' file format."""
    from pulse_app import cli

    rows = [r for r in _rows("code15_labels") if r["text"].startswith("Answer: RBBB")][:2]
    preds = tmp_path / "step-final.jsonl"
    preds.write_text("".join(json.dumps({"question_id": r["question_id"], "prompt": r["prompt"], "text": r["text"]})
                             + "\n" for r in rows), encoding="utf-8")
    args = ["score", "--subset", "code15-test", "--predictions", str(preds), "--questions-from-predictions"]
    assert cli.main([*args, "--explain", rows[0]["question_id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == rows[0]["question_id"] and "RBBB" in shown["strict"] and "gold" not in shown
    assert shown["explain"]["answer_statement"]["text"] and shown["explain"]["rationale_read"] is False
    assert cli.main([*args, "--explain", "nope"]) == 2
    assert "no prediction nope" in capsys.readouterr().err
    assert cli.main(args) == 2


@pytest.mark.parametrize("text, target, trigger", [
    ("no signs of arrhythmia, conduction abnormalities, or ischemic changes", "ischemic changes", "no signs of"),
    ("absence of LBBB and RBBB", "RBBB", "absence of"),
    ("no LBBB, rhythm is sinus; RBBB", "RBBB", None),  # a clause, not a list item
    ("There is no AF, and the rhythm is sinus tachycardia", "sinus tachycardia", None),
    ("which would be indicated by a prolonged QRS", "prolonged QRS", "would be"),
    ("abnormalities such as ST elevation or T-wave changes", "T-wave changes", "such as"),
    ("atrial fibrillation rather than sinus tachycardia (option D) or atrial tachycardia (option H)", "option H",
     "rather than"),
    ("Sinus tachycardia is a type of tachycardia", "Sinus tachycardia", "is a type of"),
])
def test_negation_covers_lists_and_hypothetical_mentions(text: str, target: str, trigger: str | None):
    from pulse_tasks.scoring.negation import LazyScope, NegationScope

    start = text.index(target)
    assert NegationScope.of(text).trigger_for(start, start + len(target)) == trigger
    assert LazyScope(text).trigger_for(start, start + len(target)) == trigger  # per sentence, same answer


ECGQA_YNS = "Question: Does this ECG show any rhythm-related symptoms?\nOptions: yes, no, not sure\n"
ECGQA_PAIR = ("Question: Which diagnostic symptom does this ECG show, myocardial infarction in lateral leads or "
              "myocardial infarction in anteroseptal leads, excluding uncertain symptoms?\nOptions: myocardial "
              "infarction in lateral leads, myocardial infarction in anteroseptal leads, excluding uncertain symptoms, "
              "both, none\n")
ECGQA_RANGE = ("Question: Which range does the p duration of this ECG fall in, above the normal range or below the "
               "normal range?\nOptions: above the normal range, below the normal range, both, none\n")
_RATIONALE = "The tracing is brief and noisy, with baseline drift and artifact in several leads. "


@pytest.mark.parametrize("prompt, text, options", [
    # "neither" before its reason, and a closing "Neither X nor Y." choose the option none
    (ECGQA_PAIR, _RATIONALE + "\n\nFinal answer: neither (inadequate interpretable signal).", ["none"]),
    (ECGQA_PAIR, _RATIONALE + "\n\nNeither myocardial infarction in lateral leads nor anteroseptal changes.", ["none"]),
    # undeterminable: not sure; but "non-diagnostic and shows no X" answers no
    (ECGQA_YNS, _RATIONALE + "Final answer: The ECG does not allow reliable assessment of rhythm (nondiagnostic).",
     ["not sure"]),
    (ECGQA_YNS, _RATIONALE + "Final answer: Nondiagnostic due to severe artifact.", ["not sure"]),
    (ECGQA_YNS, _RATIONALE + "Final answer: No \u2014 no rhythm-related symptoms are evident (non-diagnostic).", ["no"]),
    # "Uncertain for both A and B" claims neither; "Uncertain symptoms." alone chooses no option
    (ECGQA_PAIR, _RATIONALE + "Final answer: Uncertain for both lateral and anteroseptal myocardial infarction.", []),
    (ECGQA_PAIR, _RATIONALE + "\n\nUncertain symptoms.", []),
    # an option "X in Y leads" is also "Y X"; "below the normal range" is also "Below normal."
    (ECGQA_PAIR, _RATIONALE + "The most consistent abnormality is ST elevation in V1-V4 \u2014 anteroseptal "
     "myocardial infarction.", ["myocardial infarction in anteroseptal leads"]),
    (ECGQA_RANGE, _RATIONALE + "The P wave lasts about 60 ms. Below normal.", ["below the normal range"]),
    # a closing "Yes, ..." before a disclaimer line is the verdict
    (ECGQA_YNS, _RATIONALE + "This makes the rhythm hard to read, though the extra beats might be real. Yes, this ECG "
     "shows rhythm-related symptoms.\n\n_Disclaimer: Grok is not a doctor; please consult one. Don't share "
     "information that can identify you._", ["yes"]),
])
def test_ecgqa_statement_classes(prompt: str, text: str, options: list[str]):
    doc = {"id": "x", "questions": [prompt], "answers": ["yes"], "gold_options": ["yes"]}
    assert metrics.score_item("ecgqa-test", doc, text)["strict"] == options
