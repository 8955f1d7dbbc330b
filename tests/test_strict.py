"""Strict mode against a careful human reading: a table of realistic answers, the explain record,
the NegEx module, the strict version in task metadata and `ecgbench score --explain`.

The table's expected label sets are what a cardiologist reads in each answer to each question
(written from the answer and the question, not from the parser's rules). Strict mode must agree
on at least ``MIN_AGREEMENT`` of them; the disagreements are printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pulse_app import cli
from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring import metrics, negation, strict

MIN_AGREEMENT = 0.98  # the bar: strict mode reads as a careful human on >= 98% of answers
ONLY = "Only answer based on the given Options without any explanation."

# Prompts in ECGBench's wording: each multi-label prompt defines its classes.
PROMPTS = {
    "ptb": ("Which of the following diagnostic classes does this ECG belong to? The classes are: NORM: Normal ECG, "
            "MI: Myocardial Infarction, STTC: ST/T Change, CD: Conduction Disturbance, HYP: Hypertrophy. "
            "Please list all classes that apply, separated by ';'."),
    "ptb_plain": ("Which of the following diagnostic classes does this ECG belong to? Options: NORM, MI, STTC, CD, HYP. "
                  "List every class that applies, separated by ';'."),
    "cpsc": ("Identify the abnormalities shown in this 12-lead ECG. Choose from: NORM(Normal), AF(Atrial fibrillation), "
             "I-AVB(First-degree atrioventricular block), LBBB(Left bundle branch block), RBBB(Right bundle branch block), "
             "PAC(Premature atrial contraction), PVC(Premature ventricular contraction), STD(ST-segment depression), "
             "STE(ST-segment elevation). List every label that applies, separated by ';'."),
    "code15": ("Is this ECG normal or abnormal? If abnormal, name the findings from: 1dAVb(1st degree AV block), "
               "RBBB(right bundle branch block), LBBB(left bundle branch block), SB(sinus bradycardia), "
               "ST(sinus tachycardia), AF(atrial fibrillation). End your reply with 'Answer:' followed by NORM or "
               "ABNORMAL and the findings."),
    "csn": ("What is the most likely diagnosis based on this ECG?\nA. Sinus Rhythm\nB. Atrial Fibrillation\n"
            "C. Sinus Bradycardia\nD. Sinus Tachycardia\nE. Atrial Flutter\nF. First Degree AV Block\n"
            "Answer with the option's letter from the given choices directly."),
    "g12": ("Which of the following best describes this ECG?\nA. Left Bundle Branch Block\nB. Right Bundle Branch Block\n"
            "C. Premature Ventricular Contractions\nD. Normal Sinus Rhythm\nE. Left Ventricular Hypertrophy\n"
            "Answer with the option's letter from the given choices directly."),
    "mmmu": ("A 58-year-old man presents with palpitations. Which rhythm does this ECG show?\n(A) Atrial flutter with "
             "2:1 block\n(B) Atrial fibrillation\n(C) Sinus tachycardia\n(D) Ventricular tachycardia\nAnswer the "
             "question step by step, then give the final answer on the last line in the form 'Answer: $LETTER', "
             "where $LETTER is the option letter."),
    "qa_af": f"Does this ECG show atrial fibrillation?\nOptions: yes, no, not sure. {ONLY}",
    "qa_leads": f"Which leads show ST elevation?\nOptions: lead I, lead II, lead III, lead aVF, lead V1, none. {ONLY}",
    "qa_rhythm": (f"Which rhythm does this ECG show?\nOptions: Sinus rhythm, Sinus bradycardia, Sinus tachycardia, "
                  f"atrial fibrillation. {ONLY}"),
}
SUBSET_OF = {"ptb": "ptb-test", "ptb_plain": "ptb-test", "cpsc": "cpsc-test", "code15": "code15-test",
             "csn": "csn-test-no-cot", "g12": "g12-test-no-cot", "mmmu": "mmmu-ecg",
             "qa_af": "ecgqa-test", "qa_leads": "ecgqa-test", "qa_rhythm": "ecgqa-test"}

# (prompt, class of the case, answer, what a careful human reads). Classes: plain, negation,
# vocabulary (the prompt's own descriptions), synonym, lookalike, letter, ecgqa, refusal, markdown.
TABLE: list[tuple[str, str, str, list[str]]] = [
    # ---------------------------------------------------------------- PTB-XL superclasses
    ("ptb", "plain", "NORM", ["NORM"]),
    ("ptb", "plain", "MI; STTC", ["MI", "STTC"]),
    ("ptb", "plain", "CD;HYP", ["CD", "HYP"]),
    ("ptb", "plain", "STTC", ["STTC"]),
    ("ptb", "plain", "The ECG belongs to the MI and CD classes.", ["MI", "CD"]),
    ("ptb", "plain", "norm", ["NORM"]),
    ("ptb", "vocabulary", "Hypertrophy", ["HYP"]),
    ("ptb", "vocabulary", "ST/T change", ["STTC"]),
    ("ptb", "vocabulary", "Myocardial infarction and conduction disturbance.", ["MI", "CD"]),
    ("ptb", "vocabulary", "Normal ECG", ["NORM"]),
    ("ptb", "vocabulary", "This tracing shows ST/T changes in the lateral leads.", ["STTC"]),
    ("ptb", "synonym", "LVH with strain pattern", ["HYP", "STTC"]),  # strain = ST depression + T inversion
    ("ptb", "synonym", "Left ventricular hypertrophy; ST-T wave abnormality", ["HYP", "STTC"]),
    ("ptb", "synonym", "Old inferior infarct. Right bundle branch block.", ["MI", "CD"]),
    ("ptb", "synonym", "Anterior STEMI", ["MI"]),
    ("ptb", "synonym", "Sinus rhythm with first degree AV block.", ["CD"]),
    ("ptb", "synonym", "LBBB", ["CD"]),
    ("ptb", "synonym", "T wave inversion in V1-V4, consistent with ischemia.", ["STTC"]),
    ("ptb", "synonym", "Within normal limits.", ["NORM"]),
    ("ptb", "synonym", "Left anterior fascicular block and left atrial enlargement.", ["CD", "HYP"]),
    ("ptb", "synonym", "Normal", ["NORM"]),
    ("ptb", "synonym", "The ECG is normal.", ["NORM"]),
    ("ptb", "synonym", "Normal sinus rhythm.", ["NORM"]),
    ("ptb", "synonym", "Normal sinus rhythm, normal axis, anteroseptal myocardial infarction.", ["MI"]),
    ("ptb", "synonym", "Sinus rhythm, normal axis, normal intervals. Inferior MI, age undetermined.", ["MI"]),
    ("ptb", "synonym", "Nonspecific ST-T changes.", ["STTC"]),
    ("ptb", "negation", "absence of hypertrophy; MI", ["MI"]),
    ("ptb", "negation", "No evidence of myocardial infarction. ST/T change present.", ["STTC"]),
    ("ptb", "negation", "There is no conduction disturbance, no hypertrophy. The ECG is normal.", ["NORM"]),
    ("ptb", "negation", "Inferior MI without ST elevation; no hypertrophy.", ["MI"]),
    ("ptb", "negation", "Not MI. Answer: NORM", ["NORM"]),
    ("ptb", "negation", "HYP is ruled out; CD.", ["CD"]),
    ("ptb", "negation", "LVH is absent. Answer: STTC", ["STTC"]),
    ("ptb", "negation", "Free of ischemic changes; normal ECG", ["NORM"]),
    ("ptb", "negation", "Negative for MI, positive for CD", ["CD"]),
    ("ptb", "negation", "No MI but there is HYP", ["HYP"]),
    ("ptb", "plain", "Reasoning: Q waves in II, III and aVF with inverted T waves.\nAnswer: MI; STTC", ["MI", "STTC"]),
    ("ptb", "markdown", "**Answer:** MI; CD", ["MI", "CD"]),
    ("ptb", "markdown", "- **MI** (inferior)\n- **HYP**", ["MI", "HYP"]),
    ("ptb", "refusal", "I'm sorry, I cannot interpret this ECG image.", []),
    ("ptb", "refusal", "The image is too blurry to determine the diagnostic class.", []),
    ("ptb", "plain", "MILD ST changes, minimal voltage criteria", ["STTC"]),
    ("ptb_plain", "plain", "MI, HYP", ["MI", "HYP"]),
    ("ptb_plain", "synonym", "Hypertrophy", ["HYP"]),
    ("ptb_plain", "synonym", "Myocardial infarction", ["MI"]),
    ("ptb_plain", "negation", "No LBBB, rhythm is sinus; RBBB", ["CD"]),
    ("ptb_plain", "plain", "CD", ["CD"]),
    ("ptb", "plain", "The answer is: NORM", ["NORM"]),
    # ---------------------------------------------------------------- CPSC 2018
    ("cpsc", "plain", "AF", ["AF"]),
    ("cpsc", "plain", "I-AVB; RBBB", ["I-AVB", "RBBB"]),
    ("cpsc", "plain", "STD; STE", ["STD", "STE"]),
    ("cpsc", "plain", "PAC", ["PAC"]),
    ("cpsc", "plain", "normal", ["NORM"]),
    ("cpsc", "plain", "i-avb, rbbb", ["I-AVB", "RBBB"]),
    ("cpsc", "plain", "The labels are LBBB and PVC.", ["LBBB", "PVC"]),
    ("cpsc", "vocabulary", "premature ventricular contraction", ["PVC"]),
    ("cpsc", "vocabulary", "Atrial fibrillation with ST-segment depression.", ["AF", "STD"]),
    ("cpsc", "vocabulary", "First-degree atrioventricular block", ["I-AVB"]),
    ("cpsc", "vocabulary", "Right bundle branch block and premature atrial contraction", ["RBBB", "PAC"]),
    ("cpsc", "vocabulary", "ST-segment elevation in V2-V4.", ["STE"]),
    ("cpsc", "synonym", "PVCs", ["PVC"]),
    ("cpsc", "synonym", "Frequent PACs.", ["PAC"]),
    ("cpsc", "synonym", "A-fib", ["AF"]),
    ("cpsc", "synonym", "AFib with rapid ventricular response", ["AF"]),
    ("cpsc", "synonym", "1° AV block", ["I-AVB"]),
    ("cpsc", "synonym", "AVB I and RBBB", ["I-AVB", "RBBB"]),
    ("cpsc", "synonym", "Third degree AV block I believe; RBBB", ["RBBB"]),  # "I" the pronoun
    ("cpsc", "synonym", "Sinus rhythm with supraventricular extrasystoles.", ["PAC"]),
    ("cpsc", "negation", "Normal ECG except for occasional PVCs.", ["PVC"]),
    ("ptb", "negation", "- NORM: no\n- MI: yes\n- CD: no", ["MI"]),
    ("ptb", "synonym", "2nd degree AVB (Mobitz II)", ["CD"]),
    ("ptb", "synonym", "Bifascicular block; QTc prolongation; P pulmonale.", ["CD", "STTC", "HYP"]),
    ("cpsc", "synonym", "Second degree AVB (Mobitz I); RBBB", ["RBBB"]),  # not CPSC's first degree
    ("cpsc", "synonym", "ST elev in V1-V3; ST depr. in V5", ["STD", "STE"]),
    ("code15", "lookalike", "ST elev in V2. Answer: ABNORMAL", ["ABNORMAL"]),  # "ST elev" is no sinus tachycardia
    ("ptb", "negation", "Old inferior MI; LVH cannot be excluded.", ["MI"]),
    ("cpsc", "synonym", "first degree heart block", ["I-AVB"]),
    ("cpsc", "synonym", "1st degree AV block and ST depression", ["I-AVB", "STD"]),
    ("cpsc", "synonym", "Premature ventricular complexes and ST elevation", ["PVC", "STE"]),
    ("cpsc", "synonym", "Ventricular premature beats", ["PVC"]),
    ("cpsc", "synonym", "Complete left bundle branch block.", ["LBBB"]),
    ("cpsc", "synonym", "Normal ECG.", ["NORM"]),
    ("cpsc", "synonym", "Normal sinus rhythm with occasional PVCs.", ["PVC"]),
    ("cpsc", "synonym", "Atrial premature complexes.", ["PAC"]),
    ("cpsc", "synonym", "ST segment depression in V5 and V6; prolonged PR interval.", ["STD", "I-AVB"]),
    ("cpsc", "lookalike", "AFL", []),
    ("cpsc", "lookalike", "Atrial flutter with 2:1 conduction.", []),
    ("cpsc", "lookalike", "AFL with RBBB", ["RBBB"]),
    ("cpsc", "lookalike", "non-AF rhythm; PAC", ["PAC"]),
    ("cpsc", "negation", "no LBBB, rhythm is sinus; RBBB", ["RBBB"]),
    ("cpsc", "negation", "Sinus rhythm without ST elevation. STD in V5-V6.", ["STD"]),
    ("cpsc", "negation", "No AF. PVC.", ["PVC"]),
    ("cpsc", "negation", "There is no evidence of atrial fibrillation; RBBB is present.", ["RBBB"]),
    ("cpsc", "negation", "LBBB is not present, but RBBB is.", ["RBBB"]),
    ("cpsc", "negation", "Not only AF but also PVCs.", ["AF", "PVC"]),
    ("cpsc", "negation", "Neither LBBB nor RBBB; first-degree AV block.", ["I-AVB"]),
    ("cpsc", "negation", "AF ruled out. PAC.", ["PAC"]),
    ("cpsc", "negation", "Absence of ST elevation; ST depression present", ["STD"]),
    ("cpsc", "negation", "No ST depression or ST elevation. Normal.", ["NORM"]),
    ("cpsc", "plain", "Step by step: irregularly irregular rhythm, no P waves.\nAnswer: AF", ["AF"]),
    ("cpsc", "markdown", "**Answer: AF; PVC**", ["AF", "PVC"]),
    ("cpsc", "markdown", "* RBBB\n* STD", ["RBBB", "STD"]),
    ("cpsc", "refusal", "I am unable to provide a diagnosis from this image.", []),
    ("cpsc", "refusal", "Please consult a cardiologist.", []),
    ("cpsc", "plain", "AF/STD", ["AF", "STD"]),
    # ---------------------------------------------------------------- CODE-15%
    ("code15", "plain", "NORM", ["NORM"]),
    ("code15", "plain", "ABNORMAL", ["ABNORMAL"]),
    ("code15", "plain", "ABNORMAL; RBBB; ST", ["ABNORMAL", "RBBB", "ST"]),
    ("code15", "plain", "Answer: ABNORMAL, 1dAVb", ["ABNORMAL", "1dAVb"]),
    ("code15", "plain", "Answer: NORM", ["NORM"]),
    ("code15", "plain", "RBBB", ["ABNORMAL", "RBBB"]),
    ("code15", "plain", "Looks NORM at first. Answer: ABNORMAL, RBBB", ["ABNORMAL", "RBBB"]),
    ("code15", "vocabulary", "sinus bradycardia", ["ABNORMAL", "SB"]),
    ("code15", "vocabulary", "Abnormal: right bundle branch block and 1st degree AV block.", ["ABNORMAL", "1dAVb", "RBBB"]),
    ("code15", "vocabulary", "The rhythm is sinus tachycardia at 125 bpm.\nAnswer: ABNORMAL, ST", ["ABNORMAL", "ST"]),
    ("code15", "vocabulary", "Atrial fibrillation", ["ABNORMAL", "AF"]),
    ("code15", "synonym", "normal", ["NORM"]),
    ("code15", "synonym", "The ECG is normal.", ["NORM"]),
    ("code15", "synonym", "Normal ECG. Answer: NORM", ["NORM"]),
    ("code15", "synonym", "Abnormal ECG with A-fib", ["ABNORMAL", "AF"]),
    ("code15", "synonym", "First degree heart block. Answer: ABNORMAL", ["ABNORMAL", "1dAVb"]),
    ("code15", "synonym", "Answer: abnormal, sinus brady", ["ABNORMAL", "SB"]),
    ("code15", "synonym", "Normal sinus rhythm.", ["NORM"]),
    ("code15", "lookalike", "ST depression in V4-V6. Answer: ABNORMAL", ["ABNORMAL"]),
    ("code15", "lookalike", "ABNORMAL: STD in V5", ["ABNORMAL"]),
    ("code15", "lookalike", "ST elevation in II, III, aVF", ["ABNORMAL"]),
    ("code15", "lookalike", "AFL", ["ABNORMAL"]),  # flutter is no AF, but an abnormal ECG
    ("code15", "lookalike", "Answer: ABNORMAL, atrial flutter", ["ABNORMAL"]),
    ("code15", "lookalike", "Atrial flutter", ["ABNORMAL"]),
    ("code15", "lookalike", "ST-segment changes, sinus tachycardia", ["ABNORMAL", "ST"]),
    ("code15", "negation", "The ECG is not normal. Answer: ABNORMAL, LBBB", ["ABNORMAL", "LBBB"]),
    ("code15", "negation", "No AF; sinus bradycardia. Answer: ABNORMAL, SB", ["ABNORMAL", "SB"]),
    ("code15", "negation", "No abnormalities detected.", ["NORM"]),
    ("code15", "negation", "Not normal: RBBB", ["ABNORMAL", "RBBB"]),
    ("code15", "negation", "Sinus rhythm without AV block. Answer: NORM", ["NORM"]),
    ("code15", "negation", "No RBBB, no LBBB, normal ECG.", ["NORM"]),
    ("code15", "markdown", "**Answer:** ABNORMAL; AF", ["ABNORMAL", "AF"]),
    ("code15", "markdown", "**Final answer**: NORM", ["NORM"]),
    ("code15", "refusal", "I cannot determine whether this ECG is normal.", []),
    ("code15", "refusal", "Sorry, I can't help with that.", []),
    ("code15", "plain", "1davb", ["ABNORMAL", "1dAVb"]),
    # ---------------------------------------------------------------- letters: CSN / G12
    ("csn", "letter", "B", ["B"]),
    ("csn", "letter", "(D)", ["D"]),
    ("csn", "letter", "D.", ["D"]),
    ("csn", "letter", "c", ["C"]),
    ("csn", "letter", "Option F", ["F"]),
    ("csn", "letter", "Answer: c", ["C"]),
    ("csn", "letter", "Answer: D. Sinus Tachycardia", ["D"]),
    ("csn", "letter", "The answer is B.", ["B"]),
    ("csn", "letter", "Sinus Tachycardia", ["D"]),
    ("csn", "letter", "atrial fibrillation", ["B"]),
    ("csn", "letter", "The ECG shows atrial flutter with sawtooth flutter waves.", ["E"]),
    ("csn", "letter", "First degree AV block", ["F"]),
    ("csn", "letter", "A or C", []),
    ("csn", "letter", "Answer: A or C", []),
    ("csn", "letter", "Answer: $LETTER", []),
    ("csn", "letter", "Answer: G", []),  # G is not one of the six options
    ("csn", "letter", "C. Sinus Bradycardia", ["C"]),
    ("csn", "letter", "(B) Atrial Fibrillation", ["B"]),
    ("csn", "letter", "I would choose option E.", ["E"]),
    ("csn", "letter", "The correct option is (A).", ["A"]),
    ("csn", "markdown", "**Answer: A**", ["A"]),
    ("csn", "markdown", "**B**", ["B"]),
    ("csn", "markdown", "**Answer:** **(C)**", ["C"]),
    ("csn", "refusal", "I cannot determine the rhythm from this image.", []),
    ("csn", "refusal", "None of the options fit.", []),
    ("csn", "letter", "Answer: A normal sinus rhythm", ["A"]),  # the option's text, not the article
    ("csn", "negation", "Not atrial fibrillation; this is sinus tachycardia.", ["D"]),
    ("csn", "letter", "Answer: B\nAnswer: D", ["D"]),  # the final answer line wins
    ("csn", "letter", "The rhythm is regular at 48 bpm with normal P waves, so the answer is C.", ["C"]),
    ("g12", "letter", "A", ["A"]),
    ("g12", "letter", "Answer: E", ["E"]),
    ("g12", "letter", "Right Bundle Branch Block", ["B"]),
    ("g12", "letter", "left ventricular hypertrophy", ["E"]),
    ("g12", "letter", "Answer: (C) Premature Ventricular Contractions", ["C"]),
    ("g12", "letter", "Option D", ["D"]),
    ("g12", "letter", "B, D", []),
    ("g12", "letter", "Answer: A and B", []),
    ("g12", "letter", "Answer: H", []),
    ("g12", "markdown", "### Answer\n**D. Normal Sinus Rhythm**", ["D"]),
    ("g12", "refusal", "This image does not contain enough information.", []),
    ("g12", "letter", "d", ["D"]),
    # ---------------------------------------------------------------- letters: MMMU-ECG (reasoning)
    ("mmmu", "letter", "The rhythm is irregularly irregular with no discernible P waves.\nAnswer: B", ["B"]),
    ("mmmu", "letter", "Rate about 150 bpm, regular, flutter waves in II.\nAnswer: A", ["A"]),
    ("mmmu", "letter", "Irregular R-R, no P waves. The final answer is $\\boxed{B}$", ["B"]),  # reasoning models
    ("mmmu", "letter", "I'd say D.", ["D"]),
    ("mmmu", "letter", "Answer - C", ["C"]),
    ("mmmu", "letter", "Flutter waves are absent, so B is correct.", ["B"]),
    ("mmmu", "letter", "The answer is B. I would say this is typical.", ["B"]),  # "I would say" + no letter: no marker
    ("mmmu", "letter", "Step 1: rate 120. Step 2: P before every QRS. Options A and B are unlikely.\nAnswer: C", ["C"]),
    ("mmmu", "letter", "Wide complex tachycardia with AV dissociation.\n\nAnswer: (D)", ["D"]),
    ("mmmu", "letter", "Answer: $LETTER", []),
    ("mmmu", "letter", "Answer: X", []),
    ("mmmu", "letter", "It could be A or B.\nAnswer: A or B", []),
    ("mmmu", "letter", "I think it's atrial fibrillation.", ["B"]),
    ("mmmu", "letter", "The final answer is C.", ["C"]),
    ("mmmu", "letter", "answer: b", ["B"]),
    ("mmmu", "letter", "Answer: E", []),
    ("mmmu", "markdown", "**Reasoning:** narrow QRS, rate 130, regular.\n\n**Answer: C**", ["C"]),
    ("mmmu", "markdown", "Final answer: **B**", ["B"]),
    ("mmmu", "refusal", "I'm unable to analyze this ECG.", []),
    ("mmmu", "letter", "Sinus tachycardia.\nAnswer: C", ["C"]),
    ("mmmu", "letter", "Considering A and C, the flutter waves favour A.\nAnswer: A", ["A"]),
    ("mmmu", "negation", "Answer: not B, it is C", ["C"]),
    # ---------------------------------------------------------------- ECG-QA
    ("qa_af", "ecgqa", "yes", ["yes"]),
    ("qa_af", "ecgqa", "No", ["no"]),
    ("qa_af", "ecgqa", "No, it does not.", ["no"]),
    ("qa_af", "ecgqa", "Atrial fibrillation cannot be excluded.", ["not sure"]),  # unconfirmed: not a "no"
    ("qa_af", "ecgqa", "Atrial fibrillation: no", ["no"]),
    ("qa_af", "ecgqa", "I'm not sure", ["not sure"]),
    ("qa_af", "ecgqa", "Not sure.", ["not sure"]),
    ("qa_af", "ecgqa", "Yes, it does.", ["yes"]),
    ("qa_af", "ecgqa", "It does not.", ["no"]),
    ("qa_af", "ecgqa", "YES", ["yes"]),
    ("qa_af", "ecgqa", "Yes, atrial fibrillation is present.", ["yes"]),
    ("qa_af", "ecgqa", "No, there is no atrial fibrillation.", ["no"]),
    ("qa_af", "ecgqa", "I don't know.", ["not sure"]),
    ("qa_af", "refusal", "The image quality is insufficient.", []),
    ("qa_af", "ecgqa", "Yes, no other arrhythmia is seen.", ["yes"]),
    ("qa_leads", "ecgqa", "lead III", ["lead iii"]),
    ("qa_leads", "ecgqa", "lead II, lead III, lead aVF", ["lead ii", "lead iii", "lead avf"]),
    ("qa_leads", "ecgqa", "Lead I", ["lead i"]),
    ("qa_leads", "ecgqa", "LEAD V1", ["lead v1"]),
    ("qa_leads", "ecgqa", "none", ["none"]),
    ("qa_leads", "ecgqa", "lead III and lead aVF", ["lead iii", "lead avf"]),
    ("qa_leads", "ecgqa", "lead I, lead II", ["lead i", "lead ii"]),
    ("qa_rhythm", "ecgqa", "sinus rhythm", ["sinus rhythm"]),
    ("qa_rhythm", "ecgqa", "Sinus bradycardia", ["sinus bradycardia"]),
    ("qa_rhythm", "ecgqa", "SINUS TACHYCARDIA", ["sinus tachycardia"]),
    ("qa_rhythm", "ecgqa", "Atrial fibrillation.", ["atrial fibrillation"]),
    ("qa_rhythm", "ecgqa", "The rhythm is sinus bradycardia, not atrial fibrillation.", ["sinus bradycardia"]),
    ("qa_rhythm", "ecgqa", "Answer: sinus tachycardia", ["sinus tachycardia"]),
    ("qa_rhythm", "refusal", "Cannot be determined from this image.", []),
    # ---------------------------------------------------------------- longer free text
    ("ptb", "synonym", "Sinus rhythm. Left axis deviation. Poor R wave progression, possible old anterior infarct.",
     ["MI"]),
    ("ptb", "synonym", "ECG shows signs of left ventricular hypertrophy with repolarization abnormalities.", ["HYP", "STTC"]),
    ("ptb", "negation", "There are no signs of ischemia or infarction; the tracing is within normal limits.", ["NORM"]),
    ("cpsc", "synonym", ("Sinus rhythm with frequent premature ventricular contractions and ST-segment depression in "
                         "the lateral leads."), ["PVC", "STD"]),
    ("cpsc", "vocabulary", "Atrial fibrillation, right bundle branch block", ["AF", "RBBB"]),
    ("cpsc", "negation", "The rhythm is sinus; no premature beats. Answer: NORM", ["NORM"]),
    ("code15", "synonym", ("This ECG shows sinus bradycardia at 48 bpm with a prolonged PR interval (first-degree AV "
                           "block).\nAnswer: ABNORMAL, SB, 1dAVb"), ["ABNORMAL", "SB", "1dAVb"]),
    ("code15", "plain", "Answer: ABNORMAL \u2013 left bundle branch block", ["ABNORMAL", "LBBB"]),
    ("csn", "letter", "The most likely diagnosis is B. Atrial Fibrillation.", ["B"]),
    ("csn", "letter", "D - sinus tachycardia", ["D"]),
    ("g12", "letter", ("The ECG shows a wide QRS with a broad notched R wave in V6, consistent with left bundle "
                       "branch block (A)."), ["A"]),
    ("mmmu", "letter", "Answer: B (Atrial fibrillation)", ["B"]),
    ("qa_leads", "ecgqa", "lead II and lead III", ["lead ii", "lead iii"]),
    ("qa_af", "ecgqa", "Absolutely not.", ["no"]),
    ("qa_af", "ecgqa", "There is atrial fibrillation.", ["yes"]),
]


def _doc(key: str) -> dict:
    return {"id": "x", "subset": SUBSET_OF[key], "questions": [PROMPTS[key]], "answers": ["A"]}


def strict_reading(key: str, answer: str) -> list[str]:
    """The strict answer to one table row, through the same code the scorer runs."""
    spec = BY_CONFIG[SUBSET_OF[key]]
    if spec.kind == "letter":
        return strict.explain_letter(answer, spec.letters, PROMPTS[key])["labels"]
    if spec.kind == "ecgqa":
        from pulse_tasks.scoring import parsing

        return strict.explain_ecgqa(answer, parsing.ecgqa_candidates(PROMPTS[key]))["labels"]
    return strict.explain_labels(answer, spec.labels, PROMPTS[key])["labels"]


def test_table_is_large_and_covers_every_class():
    assert len(TABLE) >= 150
    subsets = {SUBSET_OF[key] for key, *_ in TABLE}
    assert subsets >= {"ptb-test", "cpsc-test", "code15-test", "csn-test-no-cot", "g12-test-no-cot", "mmmu-ecg",
                       "ecgqa-test"}
    assert {cls for _, cls, _, _ in TABLE} >= {"plain", "negation", "vocabulary", "synonym", "lookalike", "letter",
                                               "ecgqa", "refusal", "markdown"}


def test_strict_mode_agrees_with_a_careful_reader():
    misses = [(key, answer, human, got) for key, _, answer, human in TABLE
              if sorted(got := strict_reading(key, answer)) != sorted(human)]
    for key, answer, human, got in misses:
        print(f"DISAGREE [{key}] {answer!r}: human {human}, strict {got}")
    agreement = 1 - len(misses) / len(TABLE)
    print(f"strict agrees with the human reading on {len(TABLE) - len(misses)} of {len(TABLE)} ({agreement:.1%})")
    assert agreement >= MIN_AGREEMENT, misses


# ------------------------------------------------------------------------ the explain record


def test_explain_record_says_which_span_matched_and_what_negated_it():
    spec = BY_CONFIG["cpsc-test"]
    text = "Sinus rhythm. Answer: no LBBB, rhythm is sinus; RBBB and premature ventricular contractions"
    exp = strict.explain_labels(text, spec.labels, PROMPTS["cpsc"])
    assert set(exp) >= {"mode", "region", "spans", "labels", "invalid_reason"}
    assert exp["mode"] == "strict" and exp["labels"] == ["RBBB", "PVC"] and exp["invalid_reason"] is None
    assert exp["region"] == text[exp["region_start"]:exp["region_end"]] == text.split("Answer:")[1]
    spans = {s["text"]: s for s in exp["spans"]}
    assert spans["LBBB"] | {} == {"text": "LBBB", "start": text.index("LBBB"), "end": text.index("LBBB") + 4,
                                  "label": "LBBB", "source": "code", "negated": True, "trigger": "no"}
    assert spans["premature ventricular contractions"]["source"] == "description"
    assert not spans["RBBB"]["negated"] and spans["RBBB"]["trigger"] is None
    for span in exp["spans"]:
        assert text[span["start"]:span["end"]] == span["text"]
    json.dumps(exp, allow_nan=False)


@pytest.mark.parametrize("key, answer, reason", [
    ("csn", "A or C", "more than one answer: A, C"),
    ("mmmu", "Answer: $LETTER", "the answer template was echoed ('$LETTER')"),
    ("csn", "Answer: G", "letter G is not an option (A, B, C, D, E, F)"),
    ("csn", "I cannot tell.", "no answer letter"),
    ("ptb", "No MI and no hypertrophy.", "every label found is negated"),
    ("ptb", "The image is blurry.", "no label of the question found"),
    ("qa_leads", "I cannot say.", "no option of the question found"),
])
def test_invalid_answers_say_why(key, answer, reason):
    spec = BY_CONFIG[SUBSET_OF[key]]
    if spec.kind == "letter":
        exp = strict.explain_letter(answer, spec.letters, PROMPTS[key])
    elif spec.kind == "ecgqa":
        from pulse_tasks.scoring import parsing

        exp = strict.explain_ecgqa(answer, parsing.ecgqa_candidates(PROMPTS[key]))
    else:
        exp = strict.explain_labels(answer, spec.labels, PROMPTS[key])
    assert exp["labels"] == [] and exp["invalid_reason"] == reason


def test_scoring_record_carries_explain_and_version():
    record = metrics.score_item("code15-test", {**_doc("code15"), "answers": ["ABNORMAL; SB"]}, "sinus brady")
    assert record["strict"] == ["ABNORMAL", "SB"] and record["strict_version"] == strict.STRICT_VERSION
    assert record["explain"]["implied"] == [{"label": "ABNORMAL", "because": "a finding was named: SB"}]
    empty = metrics.score_item("mmmu-ecg", {**_doc("mmmu"), "answers": ["B"]}, "")
    assert empty["explain"]["invalid_reason"] == "response is empty" and empty["invalid"]


def test_prompt_descriptions_in_both_forms():
    assert strict.prompt_descriptions(PROMPTS["ptb"], BY_CONFIG["ptb-test"].labels)["STTC"] == ["ST/T Change"]
    assert strict.prompt_descriptions(PROMPTS["cpsc"], BY_CONFIG["cpsc-test"].labels)["PVC"] == [
        "Premature ventricular contraction"]
    listed = "Choose: Premature ventricular contraction (PVC), Atrial fibrillation (AF)."
    assert strict.prompt_descriptions(listed, ("AF", "PVC")) == {
        "AF": ["Atrial fibrillation"], "PVC": ["Premature ventricular contraction"]}
    assert strict.prompt_options(PROMPTS["mmmu"])["B"] == "Atrial fibrillation"


@pytest.mark.parametrize("text, target, trigger", [
    ("no LBBB, rhythm is sinus; RBBB", "LBBB", "no"),
    ("no LBBB, rhythm is sinus; RBBB", "RBBB", None),
    ("absence of hypertrophy", "hypertrophy", "absence of"),
    ("without ST elevation", "ST elevation", "without"),
    ("negative for MI", "MI", "negative for"),
    ("this rules out AF", "AF", "rules out"),
    ("free of ischemia", "ischemia", "free of"),
    ("AF is absent", "AF", "is absent"),
    ("not only AF", "AF", None),  # pseudo trigger
    ("no change in the ST depression", "ST depression", None),  # pseudo trigger
    ("MI cannot be ruled out", "MI", "cannot be ruled out"),  # unconfirmed: claims no finding
    ("cannot exclude anterior infarct", "infarct", "cannot exclude"),
    ("LBBB: absent; RBBB: present", "LBBB", ": absent"),  # a negative value in a list
    ("LBBB: absent; RBBB: present", "RBBB", None),
    ("no LBBB but RBBB", "RBBB", None),  # "but" ends the scope
    ("no LBBB or RBBB", "RBBB", "no"),
    ("non-ST elevation MI", "ST elevation", "non-"),
    ("non-ST elevation MI", "MI", None),
    ("no definite evidence of acute ST elevation in the leads", "leads", None),  # beyond six words
])
def test_negex_scope(text, target, trigger):
    start = text.rindex(target)
    assert negation.negating_trigger(text, start, start + len(target)) == trigger


# ------------------------------------------------------------------------ versions and the CLI


def test_task_metadata_records_the_strict_version():
    template = Path(__file__).parents[1] / "yaml_tasks" / "ecgbench" / "_default_template_yaml"
    text = template.read_text().replace("!function", "")  # lmms-eval's tag; only the metadata is read here
    meta = yaml.safe_load(text)["metadata"]
    assert meta["strict_version"] == strict.STRICT_VERSION


def test_score_explain_prints_why(synth_data_dir, tmp_path, capsys):
    data = synth_data_dir
    answers = ["no LBBB; RBBB", "I cannot tell."]
    preds = tmp_path / "preds.jsonl"
    ids = [f"synth-cpsc-test-{i:04d}" for i in range(2)]
    preds.write_text("".join(json.dumps({"id": i, "response": a}) + "\n" for i, a in zip(ids, answers)))
    assert cli.main(["score", "--subset", "cpsc-test", "--data", str(data), "--predictions", str(preds),
                     "--ignore-extra"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["strict_version"] == strict.STRICT_VERSION and result["invalid"] == result["n"] - 1
    args = ["score", "--subset", "cpsc-test", "--data", str(data), "--predictions", str(preds)]
    assert cli.main([*args, "--explain", ids[0], "--explain", ids[1]]) == 0
    out = capsys.readouterr().out
    first, second = (json.loads(chunk) for chunk in out.replace("}\n{", "}\n\x00{").split("\x00"))
    assert first["id"] == ids[0] and first["response"] == answers[0] and first["strict"] == ["RBBB"]
    assert [(s["text"], s["negated"], s["trigger"]) for s in first["explain"]["spans"]] == [
        ("LBBB", True, "no"), ("RBBB", False, None)]
    assert second["invalid"] and second["explain"]["invalid_reason"] == "no label of the question found"
    assert cli.main([*args, "--explain", "nope"]) == 2
    assert "--explain: no item nope in cpsc-test" in capsys.readouterr().err
