"""A blind table test of strict mode: answers its author never saw, labelled by a careful reader.

Written before reading ``pulse_tasks/scoring/strict.py`` or ``tests/test_strict.py``; the prompts follow
the ECGBench wording (docs: ecgbench-protocol.md, pulse_tasks/data/synth.py) and every item is scored
the way users reach it, through ``metrics.score_item`` (the record lmms-eval keeps).

How a careful reader labels an answer (the conventions, applied to every row):
- **Asserted findings count**: "X", "consistent with X", "likely/probable X", "suggestive of X",
  "suspected X", "possible X" all read as X. In a
  classification prompt the model is asked for its best reading; a hedged positive is still the
  finding it reports (a cardiologist's "probable LVH" is coded as LVH in PTB-XL's own statements,
  which carry a likelihood but are still the statement).
- **Uncommitted mentions do not count**: "cannot exclude X" / "cannot rule out X" / "X is not
  excluded" without any positive claim say only that X's absence is unproven; the reader has not
  reported X (clinically a call for correlation, not a diagnosis), so X is not in the label set.
  Rule of thumb: a finding counts when the reader holds it at least as likely as not ("possible"
  is about even odds on radiology certainty lexicons, "cannot exclude" and "unlikely" are below).
- **Negated findings do not count**: "no X", "no evidence of X", "without X", "X is absent",
  "X ruled out", "negative for X", "not X".
- **The answer's conclusion wins** over its reasoning: the text after a final "Answer:"-style line.
- **Normal**: "normal ECG" / "within normal limits" / "normal sinus rhythm" as the whole reading is
  NORM (CPSC's NORM is "Normal"); "normal sinus rhythm with <finding>" is the finding only.
- **PTB-XL superclasses** are read clinically: bundle branch blocks, fascicular blocks, AV blocks,
  WPW and IVCD are CD; LVH/RVH/atrial enlargement are HYP; ST depression/elevation, T-wave
  inversion, ST-T abnormality or "strain" are STTC; an infarct (old or acute) or pathological Q
  waves are MI.
- **code15**: a named abnormality means ABNORMAL (plus the listed code when it is one of the six);
  "normal" alone is NORM.
- **Letters**: exactly one chosen letter, else invalid (``None``); a refusal is invalid.
- **ECG-QA**: the set of options the answer chooses (whole options, lead names without the
  "lead" prefix still name the lead option); negated options are not chosen.
"""

from __future__ import annotations

import pytest

from pulse_tasks.scoring import metrics
from pulse_tasks.scoring.strict import strict_candidates

MIN_AGREEMENT = 0.98  # the issue's bar for strict mode against a careful human reading

PROMPTS = {
    "ptb-test": (
        "Which of the following diagnostic classes does this ECG belong to? Options: NORM: Normal ECG, "
        "MI: Myocardial Infarction, STTC: ST/T Change, CD: Conduction Disturbance, HYP: Hypertrophy. "
        "List every class that applies, separated by ';'."),
    "cpsc-test": (
        "Please identify the abnormalities shown in this 12-lead ECG. Choose from: NORM(Normal), "
        "AF(Atrial fibrillation), I-AVB(First-degree atrioventricular block), LBBB(Left bundle branch block), "
        "RBBB(Right bundle branch block), PAC(Premature atrial contraction), PVC(Premature ventricular "
        "contraction), STD(ST-segment depression), STE(ST-segment elevation). List every label that applies, "
        "separated by ';'."),
    "code15-test": (
        "Is this ECG normal or abnormal? If abnormal, name the findings from: 1dAVb(1st degree AV block), "
        "RBBB(right bundle branch block), LBBB(left bundle branch block), SB(sinus bradycardia), "
        "ST(sinus tachycardia), AF(atrial fibrillation). End your reply with 'Answer:' followed by NORM, "
        "or ABNORMAL and the findings."),
    "csn-test-no-cot": (
        "What is the most likely diagnosis based on this ECG?\nA. Sinus bradycardia\nB. Atrial fibrillation\n"
        "C. Sinus rhythm\nD. Sinus tachycardia\nE. Left bundle branch block\nF. First degree AV block\n"
        "G. Right bundle branch block\nH. T wave inversion\n"
        "Answer with the option's letter from the given choices directly."),
    "g12-test-no-cot": (
        "What is the most likely diagnosis based on this ECG?\nA. Right bundle branch block\nB. Sinus rhythm\n"
        "C. Atrial flutter\nD. Premature ventricular contractions\nE. Sinus tachycardia\n"
        "F. Left ventricular hypertrophy\nG. Atrial fibrillation\nH. Sinus bradycardia\n"
        "Answer with the option's letter from the given choices directly."),
    "mmmu-ecg": (
        "A 62-year-old man presents with palpitations. Which rhythm does this ECG show?\n"
        "(A) Atrial flutter with 2:1 block\n(B) Atrial fibrillation\n(C) Sinus tachycardia\n"
        "(D) Multifocal atrial tachycardia\nAnswer the question step by step, then give the final answer "
        "on the last line in the form 'Answer: X', where X is the option letter."),
}
ECGQA_TAIL = "Only answer based on the given Options without any explanation."
ECGQA_PROMPTS = {
    "yn": f"Does this ECG show symptoms of atrial fibrillation?\nOptions: yes, no, not sure. {ECGQA_TAIL}",
    "yn_lvh": f"Does this ECG show left ventricular hypertrophy?\nOptions: yes, no, not sure. {ECGQA_TAIL}",
    "leads": ("Which leads show ST-segment elevation?\nOptions: lead I, lead II, lead III, lead aVR, lead aVL, "
              "lead aVF, lead V1, lead V2, lead V3, lead V4, lead V5, lead V6, none. " + ECGQA_TAIL),
    "rhythm": ("Which rhythm does this ECG show?\nOptions: sinus rhythm, sinus bradycardia, sinus tachycardia, "
               f"atrial fibrillation. {ECGQA_TAIL}"),
    "noise": ("What type of noise does this ECG show?\nOptions: baseline drift, static noise, burst noise, "
              f"electrode problems, none. {ECGQA_TAIL}"),
}

# (subset, response, the labels a careful reader finds).  Letters: a letter or None (invalid).
PTB, CPSC, CODE, CSN, G12, MMMU = ("ptb-test", "cpsc-test", "code15-test", "csn-test-no-cot",
                                   "g12-test-no-cot", "mmmu-ecg")
LABEL_CASES: list[tuple[str, str, set[str]]] = [
    # --- PTB-XL superclasses ---------------------------------------------------------------
    (PTB, "NORM", {"NORM"}),
    (PTB, "MI; STTC", {"MI", "STTC"}),
    (PTB, "norm", {"NORM"}),
    (PTB, "CD;HYP", {"CD", "HYP"}),
    (PTB, "This ECG is within normal limits.", {"NORM"}),
    (PTB, "Normal ECG", {"NORM"}),
    (PTB, ("The ECG shows sinus rhythm with Q waves in II, III and aVF, consistent with an old inferior "
          "myocardial infarction."), {"MI"}),
    (PTB, "**Diagnosis:** Left ventricular hypertrophy with secondary ST/T changes.", {"HYP", "STTC"}),
    (PTB, ("Findings:\n- Sinus rhythm\n- Right bundle branch block\n- Left anterior fascicular block\n"
          "Classes: CD"), {"CD"}),
    (PTB, "LVH", {"HYP"}),
    (PTB, "Complete RBBB.", {"CD"}),
    (PTB, "LAFB", {"CD"}),
    (PTB, "IRBBB", {"CD"}),
    (PTB, "1st degree AVB", {"CD"}),
    (PTB, "Sinus rhythm. Nonspecific ST-T wave abnormality.", {"STTC"}),
    (PTB, "Normal sinus rhythm with T wave inversion in V4-V6.", {"STTC"}),
    (PTB, "The tracing shows anterior ST elevation, likely an acute anterior myocardial infarction.", {"MI", "STTC"}),
    (PTB, "Probable left ventricular hypertrophy by voltage criteria.", {"HYP"}),
    (PTB, "No evidence of myocardial infarction. Left bundle branch block.", {"CD"}),
    (PTB, "There is no hypertrophy and no conduction disturbance; the ECG is normal.", {"NORM"}),
    (PTB, "Based on the image, the ECG belongs to the following classes: MI, CD.", {"MI", "CD"}),
    (PTB, "Answer: HYP; STTC", {"HYP", "STTC"}),
    (PTB, "I cannot provide a medical diagnosis from this image. Please consult a cardiologist.", set()),
    (PTB, "Left atrial enlargement and right ventricular hypertrophy.", {"HYP"}),
    (PTB, "Myocardial infarction is ruled out; the ST/T change is nonspecific.", {"STTC"}),
    (PTB, "The QRS is wide with an rSR' pattern in V1: right bundle branch block. Conduction Disturbance.", {"CD"}),
    (PTB, "Inferior MI, age undetermined. Cannot exclude left ventricular hypertrophy.", {"MI"}),
    (PTB, "sinus rhythm, normal axis, no ST changes. NORM", {"NORM"}),
    (PTB, "Old anteroseptal infarct.", {"MI"}),
    (PTB, "The ECG demonstrates a conduction disturbance (LBBB) and hypertrophy.", {"CD", "HYP"}),
    (PTB, "ST depression in the lateral leads, suggestive of ischemia.", {"STTC"}),
    (PTB, "MI", {"MI"}),
    (PTB, "Wolff-Parkinson-White pattern.", {"CD"}),
    (PTB, "Classes: STTC, MI, HYP", {"STTC", "MI", "HYP"}),
    (PTB, "The ECG is abnormal: LVH with strain pattern.", {"HYP", "STTC"}),
    (PTB, "Not a normal ECG. Myocardial Infarction.", {"MI"}),
    # --- CPSC 2018 ------------------------------------------------------------------------
    (CPSC, "AF", {"AF"}),
    (CPSC, "RBBB; PVC", {"RBBB", "PVC"}),
    (CPSC, "Normal sinus rhythm.", {"NORM"}),
    (CPSC, "NORM", {"NORM"}),
    (CPSC, "Normal", {"NORM"}),
    (CPSC, "The ECG shows atrial fibrillation with rapid ventricular response.", {"AF"}),
    (CPSC, "AF with RVR", {"AF"}),
    (CPSC, "Sinus rhythm with frequent PVCs.", {"PVC"}),
    (CPSC, "1st degree AVB", {"I-AVB"}),
    (CPSC, "First-degree AV block and right bundle branch block.", {"I-AVB", "RBBB"}),
    (CPSC, "ST elevation in V2-V4.", {"STE"}),
    (CPSC, "ST-segment depression in leads V5 and V6.", {"STD"}),
    (CPSC, "Premature atrial contractions are seen.", {"PAC"}),
    (CPSC, "Left bundle branch block", {"LBBB"}),
    (CPSC, "There is no atrial fibrillation. The rhythm is sinus with premature ventricular contractions.", {"PVC"}),
    (CPSC, "Findings: **LBBB**, **STD**", {"LBBB", "STD"}),
    (CPSC, "I'm unable to interpret medical images.", set()),
    (CPSC, "Sinus rhythm; without ST elevation; PACs.", {"PAC"}),
    (CPSC, "The ECG is consistent with atrial fibrillation and ST-segment depression.", {"AF", "STD"}),
    (CPSC, "Likely RBBB.", {"RBBB"}),
    (CPSC, "Possible first degree atrioventricular block.", {"I-AVB"}),
    (CPSC, "Atrial flutter.", set()),
    (CPSC, "Sinus rhythm, within normal limits.", {"NORM"}),
    (CPSC, "i-avb; lbbb", {"I-AVB", "LBBB"}),
    (CPSC, "The answer is: PVC", {"PVC"}),
    (CPSC, "Ventricular premature beats (PVCs) and ST depression.", {"PVC", "STD"}),
    (CPSC, "No ST depression or elevation. Atrial fibrillation.", {"AF"}),
    (CPSC, "Atrial premature beats.", {"PAC"}),
    (CPSC, "Answer: STE", {"STE"}),
    (CPSC, "The rhythm is irregularly irregular without P waves, i.e. AF. Also RBBB.", {"AF", "RBBB"}),
    (CPSC, "Right bundle branch block is absent; left bundle branch block is present.", {"LBBB"}),
    (CPSC, "Normal ECG. No abnormalities.", {"NORM"}),
    (CPSC, "A-fib", {"AF"}),
    (CPSC, "Anterior ST-segment elevation, cannot rule out PVC.", {"STE"}),
    # --- CODE-15% -------------------------------------------------------------------------
    (CODE, "NORM", {"NORM"}),
    (CODE, "ABNORMAL", {"ABNORMAL"}),
    (CODE, "ABNORMAL; RBBB", {"ABNORMAL", "RBBB"}),
    (CODE, "Answer: NORM", {"NORM"}),
    (CODE, "The ECG shows sinus bradycardia at 48 bpm.\nAnswer: ABNORMAL, SB", {"ABNORMAL", "SB"}),
    (CODE, "Normal sinus rhythm.\nAnswer: NORM", {"NORM"}),
    (CODE, "sinus brady", {"ABNORMAL", "SB"}),
    (CODE, "Sinus tachycardia.", {"ABNORMAL", "ST"}),
    (CODE, "ST depression in V5-V6. Answer: ABNORMAL", {"ABNORMAL"}),
    (CODE, "1st degree AVB", {"ABNORMAL", "1dAVb"}),
    (CODE, "AF with RVR", {"ABNORMAL", "AF"}),
    (CODE, "Atrial fibrillation and left bundle branch block.\nAnswer: ABNORMAL; AF; LBBB", {"ABNORMAL", "AF", "LBBB"}),
    (CODE, "The ECG is normal.", {"NORM"}),
    (CODE, "Abnormal ECG.", {"ABNORMAL"}),
    (CODE, "RBBB", {"ABNORMAL", "RBBB"}),
    (CODE, "There is no atrial fibrillation; the rhythm is sinus tachycardia.\nAnswer: ABNORMAL, ST",
     {"ABNORMAL", "ST"}),
    (CODE, "Rate 130 bpm, regular, P before each QRS. Final answer: ST", {"ABNORMAL", "ST"}),
    (CODE, "I cannot determine whether this ECG is normal.", set()),
    (CODE, "Answer: ABNORMAL (1dAVb)", {"ABNORMAL", "1dAVb"}),
    (CODE, "**Answer:** NORM", {"NORM"}),
    (CODE, "Heart rate 45 bpm: sinus bradycardia. No AV block. Answer: SB", {"ABNORMAL", "SB"}),
    (CODE, "answer: norm", {"NORM"}),
    (CODE, "Left bundle branch block pattern. Answer: ABNORMAL, LBBB", {"ABNORMAL", "LBBB"}),
    (CODE, "First degree heart block.", {"ABNORMAL", "1dAVb"}),
    (CODE, "Likely sinus bradycardia.", {"ABNORMAL", "SB"}),
    # --- harder phrasing (second blind batch) -------------------------------------------
    (PTB, "Negative for myocardial infarction; incomplete right bundle branch block.", {"CD"}),
    (PTB, "Left anterior hemiblock.", {"CD"}),
    (PTB, "Sinus rhythm. Left axis deviation. LAHB. Poor R wave progression, cannot exclude anterior infarct.",
     {"CD"}),
    (PTB, "Intraventricular conduction delay.", {"CD"}),
    (PTB, "MI is not present. HYP is not present. STTC.", {"STTC"}),
    (PTB, "- NORM: no\n- MI: yes\n- STTC: no\n- CD: no\n- HYP: no", {"MI"}),
    (PTB, "Lateral T-wave inversions; left ventricular hypertrophy is unlikely.", {"STTC"}),
    (PTB, "Second degree AV block, Mobitz type I.", {"CD"}),
    (CPSC, "AVB I", {"I-AVB"}),
    (CPSC, "Atrial fibrillation is not seen; sinus rhythm with 1° AV block.", {"I-AVB"}),
    (CPSC, "Normal ECG except for occasional PVCs.", {"PVC"}),
    (CPSC, "Free of ST elevation. ST depression present in V4-V6.", {"STD"}),
    (CPSC, "Complete left bundle branch block (LBBB) with secondary ST-T changes.", {"LBBB"}),
    (CPSC, "Sinus rhythm with supraventricular extrasystoles.", {"PAC"}),
    (CPSC, "Ventricular extrasystoles.", {"PVC"}),
    (CPSC, "AF, but no RBBB.", {"AF"}),
    (CPSC, "LBBB: absent; RBBB: present", {"RBBB"}),
    (CPSC, "The most likely labels are AF and PVC.", {"AF", "PVC"}),
    (CODE, "Sinus bradycardia, otherwise normal ECG.\nAnswer: ABNORMAL; SB", {"ABNORMAL", "SB"}),
    (CODE, "No signs of AF or bundle branch block. Normal ECG. Answer: NORM", {"NORM"}),
    (CODE, "Answer: ABNORMAL — atrial fibrillation", {"ABNORMAL", "AF"}),
    (CODE, "The rhythm is sinus at 72 bpm; the ECG is within normal limits.", {"NORM"}),
    (CODE, "First-degree atrioventricular block (PR 240 ms).", {"ABNORMAL", "1dAVb"}),
    (CODE, "Right bundle branch block and left anterior fascicular block.\nAnswer: ABNORMAL, RBBB",
     {"ABNORMAL", "RBBB"}),
]
LETTER_CASES: list[tuple[str, str, str | None]] = [
    # --- CSN / G12 (eight options) --------------------------------------------------------
    (CSN, "A", "A"),
    (CSN, "D.", "D"),
    (CSN, "C. Sinus rhythm", "C"),
    (CSN, "The answer is (B).", "B"),
    (CSN, "Final answer: F", "F"),
    (CSN, "b", "B"),
    (CSN, "**G**", "G"),
    (CSN, "Sinus tachycardia", "D"),
    (CSN, ("The ECG shows a regular narrow complex rhythm at 130 bpm with P waves before each QRS, so the "
          "most likely diagnosis is D. Sinus tachycardia."), "D"),
    (CSN, "I cannot diagnose medical conditions from images.", None),
    (CSN, "A or C", None),
    (CSN, "Answer: E", "E"),
    (CSN, "Option H", "H"),
    (CSN, "The correct option is A", "A"),
    (CSN, "Either B or G; I am not certain.", None),
    (CSN, "sinus bradycardia", "A"),
    (CSN, "(C)", "C"),
    (CSN, "Answer: $LETTER", None),
    (CSN, "Right bundle branch block (G).", "G"),
    (CSN, "The best answer is F: First degree AV block.", "F"),
    (G12, "G", "G"),
    (G12, "Atrial fibrillation.", "G"),
    (G12, "E. Sinus tachycardia", "E"),
    (G12, "Answer: C", "C"),
    (G12, "The ECG shows sawtooth flutter waves, so the answer is C.", "C"),
    (G12, "Based on the irregularly irregular rhythm and absent P waves, I'd choose **G. Atrial fibrillation**.", "G"),
    (G12, "F", "F"),
    (G12, "h", "H"),
    (G12, "It is not A. The answer is D.", "D"),
    (G12, "Sorry, I can't help with interpreting this ECG.", None),
    (G12, "Left ventricular hypertrophy", "F"),
    (G12, "B and E", None),
    # --- MMMU-ECG (four options, reasoning then "Answer: X") -------------------------------
    (MMMU, "Answer: B", "B"),
    (MMMU, ("The rhythm is irregularly irregular with no discernible P waves. This is atrial fibrillation.\n"
           "Answer: B"), "B"),
    (MMMU, ("Step 1: the rate is about 150 bpm. Step 2: flutter waves are visible in II, III and aVF at 300/min. "
           "Option C is unlikely because there are no upright P waves.\nAnswer: A"), "A"),
    (MMMU, "**Answer: D**", "D"),
    (MMMU, ("Let's think step by step. The P waves vary in morphology (at least three forms), so this is "
           "multifocal atrial tachycardia.\nFinal answer: D"), "D"),
    (MMMU, "answer: c", "C"),
    (MMMU, "The answer is (B) Atrial fibrillation.", "B"),
    (MMMU, "A", "A"),
    (MMMU, "I am not able to provide a diagnosis. Please consult a physician.", None),
    (MMMU, "Answer: A or C", None),
    (MMMU, "Atrial fibrillation is the most likely rhythm given the irregular R-R intervals.", "B"),
    (MMMU, "Considering options A and B, the regular rhythm excludes B.\nAnswer: (A)", "A"),
    (MMMU, "The most likely answer is C. Sinus tachycardia.", "C"),
    (MMMU, "Answer: B\nAnswer: D", "D"),
    (CSN, "B) Atrial fibrillation", "B"),
    (CSN, "I would go with option E.", "E"),
    (CSN, "Answer: **C**", "C"),
    (CSN, "My answer: D", "D"),
    (CSN, "The correct choice is (D).", "D"),
    (G12, "(b)", "B"),
    (G12, "Not A. Answer: H", "H"),
    (G12, "The irregular rhythm could suggest G, but the sawtooth waves make C the answer.\nAnswer: C", "C"),
    (MMMU, "Answer: A. Atrial flutter with 2:1 block", "A"),
    (MMMU, "The final answer is B.", "B"),
    (MMMU, "Answer: The correct answer is C.", "C"),
]
ECGQA_CASES: list[tuple[str, str, list[str]]] = [
    ("yn", "yes", ["yes"]),
    ("yn", "Yes", ["yes"]),
    ("yn", "No", ["no"]),
    ("yn", "No, it does not.", ["no"]),
    ("yn", "not sure", ["not sure"]),
    ("yn", "I'm not sure.", ["not sure"]),
    ("yn", "Yes, the ECG shows atrial fibrillation.", ["yes"]),
    ("yn", "no.", ["no"]),
    ("yn_lvh", "NO", ["no"]),
    ("yn_lvh", "Yes.", ["yes"]),
    ("yn_lvh", "No, there is no left ventricular hypertrophy.", ["no"]),
    ("leads", "lead V1, lead V2, lead V3", ["lead V1", "lead V2", "lead V3"]),
    ("leads", "lead III", ["lead III"]),
    ("leads", "lead II, lead III, lead aVF", ["lead II", "lead III", "lead aVF"]),
    ("leads", "none", ["none"]),
    ("leads", "Lead I, Lead aVL", ["lead I", "lead aVL"]),
    ("leads", "lead V2", ["lead V2"]),
    ("leads", "lead aVR", ["lead aVR"]),
    ("rhythm", "sinus bradycardia", ["sinus bradycardia"]),
    ("rhythm", "Sinus rhythm", ["sinus rhythm"]),
    ("rhythm", "Atrial fibrillation.", ["atrial fibrillation"]),
    ("rhythm", "sinus tachycardia", ["sinus tachycardia"]),
    ("noise", "baseline drift", ["baseline drift"]),
    ("noise", "baseline drift, static noise", ["baseline drift", "static noise"]),
    ("noise", "None", ["none"]),
    ("noise", "electrode problems", ["electrode problems"]),
    ("yn", "Yes, it does.", ["yes"]),
    ("yn", "Not sure", ["not sure"]),
    ("yn_lvh", "No, it doesn't.", ["no"]),
    ("leads", "None of the leads.", ["none"]),
    ("leads", "lead V1, lead V2", ["lead V1", "lead V2"]),
    ("rhythm", "The rhythm is sinus bradycardia, not atrial fibrillation.", ["sinus bradycardia"]),
    ("noise", "static noise", ["static noise"]),
]


def _doc(subset: str, prompt: str, item_id: str) -> dict:
    gold = {"ecgqa-test": "yes", "ptb-test": "NORM", "cpsc-test": "NORM", "code15-test": "NORM"}.get(subset, "A")
    return {"id": item_id, "subset": subset, "image_path": "", "questions": [prompt], "answers": [gold],
            "gold_options": [gold] if subset == "ecgqa-test" else []}


def _read() -> list[tuple[str, str, object, object]]:
    """(subset, response, expected, strict) for every row, read through metrics.score_item."""
    rows = []
    for i, (subset, response, expected) in enumerate(LABEL_CASES):
        record = metrics.score_item(subset, _doc(subset, PROMPTS[subset], f"blind-{i}"), response)
        rows.append((subset, response, sorted(expected), sorted(record["strict"])))
    for i, (subset, response, letter) in enumerate(LETTER_CASES):
        record = metrics.score_item(subset, _doc(subset, PROMPTS[subset], f"blind-l{i}"), response)
        rows.append((subset, response, letter, record["strict"]))
    for i, (key, response, options) in enumerate(ECGQA_CASES):
        record = metrics.score_item("ecgqa-test", _doc("ecgqa-test", ECGQA_PROMPTS[key], f"blind-q{i}"), response)
        rows.append((f"ecgqa-test/{key}", response, sorted(strict_candidates(options)), sorted(record["strict"])))
    return rows


def test_blind_table_covers_every_subset():
    subsets = {s for s, _, _ in LABEL_CASES} | {s for s, _, _ in LETTER_CASES}
    assert subsets == {PTB, CPSC, CODE, CSN, G12, MMMU}
    assert len(LABEL_CASES) + len(LETTER_CASES) + len(ECGQA_CASES) >= 120
    responses = [(s, r) for s, r, _ in LABEL_CASES + LETTER_CASES] + [(k, r) for k, r, _ in ECGQA_CASES]
    assert len(set(responses)) == len(responses), "a duplicated row would count twice"


def test_strict_agrees_with_the_blind_reading(capsys: pytest.CaptureFixture[str]):
    rows = _read()
    misses = [row for row in rows if row[2] != row[3]]
    with capsys.disabled():
        print(f"\nblind strict agreement: {len(rows) - len(misses)}/{len(rows)}")
        for subset, response, expected, got in misses:
            print(f"  {subset}: {response!r}\n    human {expected}  strict {got}")
    assert (len(rows) - len(misses)) / len(rows) >= MIN_AGREEMENT
