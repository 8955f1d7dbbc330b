"""Turn a model's free-text answer into a letter, a label set or an ECG-QA option set.

Two rule sets live side by side, as pure functions:

* **paper mode** (``*_paper``) reproduces the reference scripts of the PULSE paper exactly,
  quirks included (the ECGBench protocol notes: reference scripts and their quirks), so published numbers can be
  matched;
* **strict mode** (``*_strict``) scores what the model actually said.

Every parser returns an explicit "unparsed" value (``None`` for a letter, an empty list for a
label/option set); the metrics count it, never silently score it as 0.

Paper-mode choices where the reference leaves a gap
---------------------------------------------------
* Rule 1 of the letter parser strips whitespace (the reference strips model outputs at
  inference); rules 2-4 read the text as given.
* A failed, empty, non-text or missing response is never parsed: it is unparsed (expected credit
  for letters, the empty prediction otherwise). This keeps e.g. the "ST" of
  ``[LMMS_EVAL_REQUEST_FAILED`` from becoming code15's sinus-tachycardia label.
* code15 gold strings that are not exactly NORM/ABNORMAL are read with the prediction rule
  (ABNORMAL plus the specific labels named).
* ECG-QA candidates keep empty pieces (``"a, , b"``), as the reference does.

What strict mode accepts
------------------------
``parse_letter_strict``, ``parse_labels_strict`` and ``parse_ecgqa_strict`` return the answer of
``pulse_tasks.scoring.strict`` (its docstring lists the rules: answer region, the question's codes and
descriptions, curated synonyms, lookalikes, NegEx-style negation, one letter per question, whole
ECG-QA options), which also explains each reading. ``gold_labels_strict`` reads gold strings by
whole-token codes only (gold answers are code lists; code15's named findings add ABNORMAL).

Response states (``response_status``): ``ok``; ``failed`` (a generation-failure marker from our
adapter or lmms-eval's API adapters); ``empty`` (empty or whitespace only); ``not_text`` (not a
string, e.g. a number or list); ``not_utf8`` (bytes that are not UTF-8, or a string holding lone
surrogates from undecodable bytes); ``missing`` (``None``: no prediction for the item).
Only ``ok`` responses are parsed; all others are unparsed in paper mode and invalid in strict mode.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from pulse_tasks.scoring import strict
from pulse_tasks.scoring.records import (  # noqa: F401 -- state words, defined once there
    FAILED_PREFIXES,
    INVALID_STATUSES,
    STATUS_EMPTY,
    STATUS_FAILED,
    STATUS_MISSING,
    STATUS_NOT_TEXT,
    STATUS_NOT_UTF8,
    STATUS_OK,
    is_failure_marker,
)
from pulse_tasks.scoring.strict import normalize_option, strict_candidates  # noqa: F401 -- re-exported

# --------------------------------------------------------------------------------------------
# Response states
# --------------------------------------------------------------------------------------------

# The state words and failure markers are defined once, in pulse_tasks.scoring.records (re-exported above).


def response_status(response: object) -> str:
    """Classify a raw response: one of the ``STATUS_*`` values (never raises)."""
    return coerce_response(response)[1]


def coerce_response(response: object) -> tuple[str, str]:
    """Return ``(text, status)``: the response as text when it is usable, else ``("", status)``.

    ``None`` is ``missing``; bytes are decoded as UTF-8; anything else that is not a str, and str
    holding lone surrogates (undecodable bytes read with ``surrogateescape``), are invalid.
    """
    if response is None:
        return "", STATUS_MISSING
    if isinstance(response, (bytes, bytearray)):
        try:
            response = bytes(response).decode("utf-8")
        except UnicodeDecodeError:
            return "", STATUS_NOT_UTF8
    if not isinstance(response, str):
        return "", STATUS_NOT_TEXT
    try:
        response.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the file held bytes that are not UTF-8
        return "", STATUS_NOT_UTF8
    if is_failure_marker(response):
        return "", STATUS_FAILED
    if not response.strip():
        return "", STATUS_EMPTY
    return response, STATUS_OK


def is_failed_response(text: object) -> bool:
    """True when the response is a generation-failure marker (leading whitespace ignored).

    Empty responses are not failures (they are *invalid*); non-str input never raises and is not a
    failure either (``response_status`` reports it as ``not_text``/``not_utf8``/``missing``).
    """
    return response_status(text) == STATUS_FAILED


def is_invalid_response(text: object) -> bool:
    """True for responses that are no text to parse: empty/whitespace, non-text, non-UTF-8 and
    ``None`` (missing). Failures are reported separately (``is_failed_response``)."""
    return response_status(text) in INVALID_STATUSES + (STATUS_MISSING,)


# --------------------------------------------------------------------------------------------
# Letters
# --------------------------------------------------------------------------------------------

PAPER_LETTERS = "ABCDEFGH"  # the reference parser looks for A-H on every letter subset
CORRECT_OPTION_MARKER = "The correct option is "  # reference rule 3 (trailing space included)
ANSWER_MARKER = "Answer:"  # reference rule 4, and code15's answer cut (case-sensitive there)


def parse_letter_paper(text: str) -> str | None:
    """The reference letter parser; ``None`` when unparsed.

    1. the whole (whitespace-stripped) response is one letter A-H;
    2. else "A.", "B.", ... "H." in that order: the first that occurs anywhere wins;
    3. else if "The correct option is " occurs: the character right after its last occurrence if
       it is A-H, otherwise unparsed (rule 4 is not tried);
    4. else if "Answer:" occurs: the first of A..H (alphabet order) contained in the text after
       its last occurrence;
    5. else unparsed.

    The reference strips model outputs at inference time; rule 1 strips too, rules 2-4 read the
    text as given.
    """
    stripped = text.strip()
    if len(stripped) == 1 and stripped in PAPER_LETTERS:
        return stripped
    for letter in PAPER_LETTERS:
        if letter + "." in text:
            return letter
    if CORRECT_OPTION_MARKER in text:
        after = text.rsplit(CORRECT_OPTION_MARKER, 1)[1]
        return after[0] if after[:1] and after[0] in PAPER_LETTERS else None
    if ANSWER_MARKER in text:
        after = text.rsplit(ANSWER_MARKER, 1)[1]
        for letter in PAPER_LETTERS:
            if letter in after:
                return letter
    return None


def parse_letter_strict(text: str, letters: str, prompt: str = "") -> str | None:
    """Strict letter (``pulse_tasks.scoring.strict.explain_letter``); ``None`` if invalid."""
    labels = strict.explain_letter(text, letters, prompt)["labels"]
    return labels[0] if labels else None


def gold_letter(answer: str) -> str | None:
    """Gold letter = the first character of the gold value (leading whitespace ignored)."""
    stripped = answer.lstrip() if isinstance(answer, str) else ""
    return stripped[0] if stripped and stripped[0] in PAPER_LETTERS else None


# --------------------------------------------------------------------------------------------
# Multi-label (ptb, code15, cpsc)
# --------------------------------------------------------------------------------------------

CODE15_NORM = "NORM"
CODE15_ABNORMAL = "ABNORMAL"
CODE15_GLOBAL = (CODE15_NORM, CODE15_ABNORMAL)  # code15's first label: normal vs abnormal ECG


def _order(found: Iterable[str], labels: tuple[str, ...]) -> list[str]:
    found = set(found)
    return [label for label in labels if label in found]


def parse_labels_paper(text: str, labels: tuple[str, ...], code15: bool = False) -> list[str]:
    """Reference label matcher: case-sensitive substrings, in vocabulary order.

    code15: the text is first cut to what follows the last "Answer:"; then NORM is predicted when
    "NORM" occurs and "ABNORMAL" does not, ABNORMAL when "ABNORMAL" occurs, plus any of the
    specific labels found as substrings.
    """
    if not code15:
        return [label for label in labels if label in text]
    if ANSWER_MARKER in text:
        text = text.rsplit(ANSWER_MARKER, 1)[1]
    found = [label for label in labels if label not in CODE15_GLOBAL and label in text]
    if CODE15_ABNORMAL in text:
        found.append(CODE15_ABNORMAL)
    elif CODE15_NORM in text:
        found.append(CODE15_NORM)
    return _order(found, labels)


def gold_labels_paper(gold: str, labels: tuple[str, ...], code15: bool = False) -> list[str]:
    """Reference gold labels: the label names found in the gold string.

    code15: a gold string that is exactly NORM or ABNORMAL is that label; otherwise the code15
    rule of ``parse_labels_paper`` applies (ABNORMAL plus the specific labels named).
    """
    if code15 and gold.strip() in CODE15_GLOBAL:
        return [gold.strip()]
    return parse_labels_paper(gold, labels, code15=code15)


# Characters that continue a token: "I-AVB", "1dAVb", "ST-segment", "non_AF" are single tokens.
_TOKEN_CHARS = "A-Za-z0-9_-"


@lru_cache(maxsize=None)
def _label_regex(labels: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One compiled whole-token, case-insensitive pattern per vocabulary (cached)."""
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    pattern = re.compile(rf"(?<![{_TOKEN_CHARS}])(?:{alternatives})(?![{_TOKEN_CHARS}])", re.IGNORECASE)
    return pattern, {label.casefold(): label for label in labels}


def parse_labels_strict(text: str, labels: tuple[str, ...], prompt: str = "") -> list[str]:
    """Strict labels (``pulse_tasks.scoring.strict.explain_labels``): the question's codes, descriptions
    and synonyms, negation-aware, after the last "answer:" if any."""
    return strict.explain_labels(text, labels, prompt)["labels"]


def gold_labels_strict(gold: str, labels: tuple[str, ...]) -> list[str]:
    """Strict gold labels: the vocabulary labels named in the gold string as whole tokens.

    code15 (a vocabulary with ABNORMAL): a gold string naming a finding is ABNORMAL too, as strict
    mode reads a prediction ("RBBB" is ABNORMAL, RBBB), so the two sides agree.
    """
    pattern, canonical = _label_regex(labels)
    found = {canonical[m.casefold()] for m in pattern.findall(gold)}
    if CODE15_ABNORMAL in labels and found - set(CODE15_GLOBAL):
        found = (found - {CODE15_NORM}) | {CODE15_ABNORMAL}
    return _order(found, labels)


# --------------------------------------------------------------------------------------------
# ECG-QA
# --------------------------------------------------------------------------------------------

OPTIONS_MARKER = "Options:"
# The reference removes this closing instruction before splitting the options.
ONLY_ANSWER_SENTENCE = "Only answer based on the given Options without any explanation."


def ecgqa_candidates(prompt: str) -> list[str]:
    """Reference candidates: text after the last "Options:", closing sentence removed, split on
    commas, each stripped (empty pieces kept, as the reference keeps them)."""
    tail = prompt.rsplit(OPTIONS_MARKER, 1)[-1].replace(ONLY_ANSWER_SENTENCE, "")
    return [piece.strip() for piece in tail.split(",")]


def parse_ecgqa_paper(text: str, candidates: list[str]) -> list[str]:
    """Reference prediction: the candidates that are substrings of the lower-cased response.

    The candidates are NOT lower-cased (reference bug: a capitalised option never matches), and
    plain substring matching lets "no" match inside "none".
    """
    lowered = text.lower()
    return [c for c in dict.fromkeys(candidates) if c in lowered]


def parse_ecgqa_strict(text: str, candidates: list[str]) -> list[str]:
    """Strict options (``pulse_tasks.scoring.strict.explain_ecgqa``): whole options, longest first."""
    return strict.explain_ecgqa(text, candidates)["labels"]
