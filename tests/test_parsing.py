"""Every parsing rule of pulse_tasks.scoring.parsing, paper mode quirk by quirk and its strict counterpart."""

from __future__ import annotations

import pytest

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring import parsing

PTB = BY_CONFIG["ptb-test"].labels
CODE15 = BY_CONFIG["code15-test"].labels
CPSC = BY_CONFIG["cpsc-test"].labels
ONLY = parsing.ONLY_ANSWER_SENTENCE

# ------------------------------------------------------------------------ response states


@pytest.mark.parametrize("response, status", [
    ("B", "ok"),
    ("[ECGBENCH_GENERATION_FAILED: CUDA out of memory]", "failed"),
    ("  [LMMS_EVAL_REQUEST_FAILED after 5 retries]", "failed"),
    ("Answer: [ECGBENCH_GENERATION_FAILED", "ok"),  # the marker only counts at the start
    ("", "empty"),
    ("  \n\t", "empty"),
    (None, "missing"),
    (b"A", "ok"),  # UTF-8 bytes are decoded
    (b"\xff\xfeA", "not_utf8"),
    ("abc\udcff", "not_utf8"),  # a lone surrogate: undecodable bytes read with surrogateescape
    (42, "not_text"),
    (["A"], "not_text"),
])
def test_response_status(response, status):
    assert parsing.response_status(response) == status
    assert parsing.is_failed_response(response) is (status == "failed")
    assert parsing.is_invalid_response(response) is (status in ("empty", "not_text", "not_utf8", "missing"))


def test_coerce_response_returns_text_only_when_usable():
    assert parsing.coerce_response(b"NORM") == ("NORM", "ok")
    assert parsing.coerce_response(None) == ("", "missing")
    assert parsing.coerce_response("[LMMS_EVAL_REQUEST_FAILED x]") == ("", "failed")


# ------------------------------------------------------------------------ letters, paper


@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    (" C \n", "C"),  # rule 1 on the stripped response
    ("b", None),  # lower case is no letter
    ("I", None),  # a single letter outside A-H
    ("E", "E"),  # paper looks for A-H on every subset (wrong, not unparsed, on mmmu)
    # rule 2: "A." .. "H." in alphabet order, first one occurring anywhere wins
    ("The answer is C. Also consider B.", "B"),
    ("Made in the USA. The rhythm is D.", "A"),  # quirk: "A." inside a word
    ("F. ectopic beats, G. and H.", "F"),
    # rule 3: the character after the LAST "The correct option is "
    ("The correct option is C", "C"),
    ("The correct option is A first, but The correct option is D", "D"),
    ("The correct option is c", None),  # not A-H -> unparsed, rule 4 not tried
    ("The correct option is (B)", None),  # quirk: a parenthesis is not a letter
    ("Answer: B\nThe correct option is Z", None),  # invalid after rule 3 -> unparsed, no fallback
    ("The correct option is ", None),  # nothing after the marker
    ("The correct option is B. Sinus", "B"),  # rule 2 already finds "B."
    # rule 4: first of A..H (alphabet order) contained after the last "Answer:"
    ("Reasoning first.\nAnswer: D", "D"),
    ("Answer: Based on the ECG, C", "B"),  # quirk: the B of "Based"
    ("Answer: A\nAnswer: C", "C"),  # the last "Answer:"
    ("Answer: D or C", "C"),  # alphabet order, not position
    ("Answer: none of them", None),
    ("answer: C", None),  # "Answer:" is case-sensitive
    ("I cannot tell from this image", None),
    ("", None),
])
def test_parse_letter_paper(text, expected):
    assert parsing.parse_letter_paper(text) == expected


# ------------------------------------------------------------------------ letters, strict


@pytest.mark.parametrize("text, letters, expected", [
    ("B", "ABCD", "B"),
    ("(B)", "ABCD", "B"),
    ("B.", "ABCD", "B"),
    ("B)", "ABCD", "B"),
    (" C \n", "ABCD", "C"),
    ("b", "ABCD", "B"),  # a lone letter is the answer in any case
    ("E", "ABCD", None),  # outside the subset's letters
    ("E", "ABCDEFGH", "E"),
    ("I", "ABCDEFGH", None),
    # no stray "X." anywhere
    ("Made in the USA. The rhythm is D.", "ABCD", None),
    ("Sinus rhythm, type A.", "ABCD", None),
    # markers: the letter right after the last one
    ("The answer is C. Also consider B.", "ABCD", "C"),
    ("Answer: C", "ABCD", "C"),
    ("answer: (C)", "ABCD", "C"),
    ("Answer: C. Atrial fibrillation", "ABCD", "C"),
    ("Answer: C (atrial flutter)", "ABCD", "C"),
    ("Answer: C\n\nThe PR interval is long.", "ABCD", "C"),
    ("The correct option is C", "ABCD", "C"),
    ("The correct option is (B).", "ABCD", "B"),
    ("Correct option: D", "ABCD", "D"),
    ("**Answer:** B", "ABCD", "B"),  # markdown emphasis is formatting
    ("**Answer**: **(B)**", "ABCD", "B"),
    ("**B**", "ABCD", "B"),
    ("**C.** Atrial fibrillation", "ABCD", "C"),
    ("**Answer:** **Based** on the ECG", "ABCD", None),
    ("Answer: A\nLater: Answer: C", "ABCD", "C"),
    ("Answer: B ... final Answer: E", "ABCD", None),  # last marker invalid -> no fallback
    ("Answer: Based on the ECG, C", "ABCD", "C"),  # the letter of the final-answer line, not "B" of "Based"
    ("Answer: A normal ECG", "ABCD", None),  # the article A
    ("Answer: A-fib", "ABCD", None),
    ("Answer: C because the PR is long", "ABCD", "C"),
    ("The correct option is c", "ABCD", "C"),  # lower case after a final-answer marker
    ("Answer: none of them", "ABCD", None),
    # a leading option label
    ("C. Atrial fibrillation", "ABCD", "C"),
    ("(C) Atrial fibrillation", "ABCD", "C"),
    ("C) Atrial fibrillation", "ABCD", "C"),
    ("H: sinus tachycardia", "ABCDEFGH", "H"),
    ("H: sinus tachycardia", "ABCD", None),
    ("A normal sinus rhythm", "ABCD", None),  # the article again
    ("I cannot tell from this image", "ABCD", None),
    ("", "ABCD", None),
])
def test_parse_letter_strict(text, letters, expected):
    assert parsing.parse_letter_strict(text, letters) == expected


@pytest.mark.parametrize("answer, expected", [
    ("B", "B"), ("C. Atrial fibrillation", "C"), (" D", "D"), ("", None), ("x", None),
])
def test_gold_letter_is_first_character(answer, expected):
    assert parsing.gold_letter(answer) == expected


# ------------------------------------------------------------------------ labels, paper vs strict


@pytest.mark.parametrize("labels, code15, text, paper, strict", [
    # quirk: NORM inside ABNORMAL
    (PTB, False, "ABNORMAL ECG", ["NORM"], []),
    # quirk: MI inside other words
    (PTB, False, "MILD ST changes, MINIMAL voltage", ["MI"], ["STTC"]),  # "ST changes" is PTB-XL's STTC
    (PTB, False, "Old MI and STTC.", ["MI", "STTC"], ["MI", "STTC"]),
    (PTB, False, "(MI)", ["MI"], ["MI"]),
    # quirk: ST inside STD/STE (code15's ST = sinus tachycardia)
    (CODE15, True, "ABNORMAL: STD in V5", ["ABNORMAL", "ST"], ["ABNORMAL"]),
    (CODE15, True, "STE in II", ["ST"], []),
    (CODE15, True, "ST-segment depression", ["ST"], ["ABNORMAL"]),  # no sinus tachycardia, but abnormal
    (CODE15, True, "sinus tachycardia (ST).", ["ST"], ["ABNORMAL", "ST"]),  # a finding implies ABNORMAL
    (CPSC, False, "STD and STE", ["STD", "STE"], ["STD", "STE"]),
    # quirk: AF inside AFL
    (CPSC, False, "AFL with 2:1 block", ["AF"], []),
    (CODE15, True, "AFL", ["AF"], ["ABNORMAL"]),
    (CPSC, False, "non-AF rhythm", ["AF"], []),
    (CPSC, False, "AF/STD", ["AF", "STD"], ["AF", "STD"]),
    # quirk: case-sensitive
    (PTB, False, "norm", [], ["NORM"]),
    (CPSC, False, "i-avb, rbbb", [], ["I-AVB", "RBBB"]),
    (CPSC, False, "I-AVB", ["I-AVB"], ["I-AVB"]),
    (CODE15, True, "1davb", [], ["ABNORMAL", "1dAVb"]),
    (CODE15, True, "ABNORMAL, 1dAVb, RBBB", ["ABNORMAL", "1dAVb", "RBBB"], ["ABNORMAL", "1dAVb", "RBBB"]),
    # code15: the "Answer:" cut, then the NORM/ABNORMAL rule
    (CODE15, True, "Not ABNORMAL. Answer: NORM", ["NORM"], ["NORM"]),
    (CODE15, True, "Looks NORM at first. Answer: ABNORMAL, RBBB", ["ABNORMAL", "RBBB"], ["ABNORMAL", "RBBB"]),
    (CODE15, True, "ABNORMAL", ["ABNORMAL"], ["ABNORMAL"]),  # no NORM added
    (CODE15, True, "NORM", ["NORM"], ["NORM"]),
    (CODE15, True, "RBBB and LBBB", ["RBBB", "LBBB"], ["ABNORMAL", "RBBB", "LBBB"]),
    (CODE15, True, "RBBB. answer: LBBB", ["RBBB", "LBBB"], ["ABNORMAL", "LBBB"]),  # paper's cut is case-sensitive
    # strict applies the answer cut to every subset
    (PTB, False, "Not MI. Answer: NORM", ["NORM", "MI"], ["NORM"]),
    (PTB, False, "", [], []),
])
def test_labels_paper_and_strict(labels, code15, text, paper, strict):
    assert parsing.parse_labels_paper(text, labels, code15=code15) == paper
    assert parsing.parse_labels_strict(text, labels) == strict


@pytest.mark.parametrize("labels, code15, gold, paper, strict", [
    (PTB, False, "NORM; STTC", ["NORM", "STTC"], ["NORM", "STTC"]),
    (PTB, False, "CD;HYP", ["CD", "HYP"], ["CD", "HYP"]),
    (CODE15, True, "NORM", ["NORM"], ["NORM"]),
    (CODE15, True, " ABNORMAL ", ["ABNORMAL"], ["ABNORMAL"]),  # the gold string is itself the label
    (CODE15, True, "ABNORMAL; RBBB; ST", ["ABNORMAL", "RBBB", "ST"], ["ABNORMAL", "RBBB", "ST"]),
    (CODE15, True, "RBBB", ["RBBB"], ["ABNORMAL", "RBBB"]),  # strict: a finding is an abnormal ECG
    (CPSC, False, "I-AVB; STD", ["I-AVB", "STD"], ["I-AVB", "STD"]),
])
def test_gold_labels(labels, code15, gold, paper, strict):
    assert parsing.gold_labels_paper(gold, labels, code15=code15) == paper
    assert parsing.gold_labels_strict(gold, labels) == strict


# ------------------------------------------------------------------------ ECG-QA


@pytest.mark.parametrize("prompt, candidates", [
    (f"Is there AF? Options: yes, no, not sure {ONLY}", ["yes", "no", "not sure"]),
    (f"Q? Options: yes, no, none. {ONLY}", ["yes", "no", "none."]),  # the period stays (reference)
    (f"Options: x. Which leads? Options: lead I, lead II, lead V1 {ONLY}", ["lead I", "lead II", "lead V1"]),
    ("Options: a, , b", ["a", "", "b"]),  # empty pieces kept, as the reference keeps them
    ("No marker a, b", ["No marker a", "b"]),  # no "Options:": the whole prompt
])
def test_ecgqa_candidates(prompt, candidates):
    assert parsing.ecgqa_candidates(prompt) == candidates


@pytest.mark.parametrize("candidates, text, paper, strict", [
    # quirk: the no/none collision
    (["yes", "no", "none"], "none", ["no", "none"], ["none"]),
    (["yes", "no", "not sure"], "Not sure.", ["no", "not sure"], ["not sure"]),
    (["yes", "no"], "No", ["no"], ["no"]),
    (["yes", "no"], "I know it", ["no"], []),  # paper: "no" inside "know"
    # quirk: candidates are not lower-cased, so a capitalised option never matches in paper mode
    (["Sinus rhythm", "atrial fibrillation"], "Sinus rhythm", [], ["sinus rhythm"]),
    (["Sinus rhythm", "atrial fibrillation"], "ATRIAL FIBRILLATION", ["atrial fibrillation"], ["atrial fibrillation"]),
    # strict: longest option first, matched text masked
    (["fibrillation", "atrial fibrillation"], "atrial fibrillation", ["fibrillation", "atrial fibrillation"],
     ["atrial fibrillation"]),
    (["lead i", "lead ii"], "lead ii, lead i", ["lead i", "lead ii"], ["lead i", "lead ii"]),
    (["lead i", "lead ii"], "lead ii", ["lead i", "lead ii"], ["lead ii"]),
    (["yes", "none."], "none", [], ["none"]),  # strict drops the trailing period
    (["a", "", "b"], "zzz", [""], []),  # paper: the empty candidate matches everything
])
def test_ecgqa_paper_and_strict(candidates, text, paper, strict):
    assert parsing.parse_ecgqa_paper(text, candidates) == paper
    assert parsing.parse_ecgqa_strict(text, candidates) == strict


def test_normalize_option():
    assert parsing.normalize_option("  Sinus   Rhythm. ") == "sinus rhythm"
    assert parsing.strict_candidates(["Yes", "yes", "", " No "]) == ["yes", "no"]
