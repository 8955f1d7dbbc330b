"""Answer spaces: what each kind of subset does with an answer, in one table.

``subsets.KINDS`` holds the facts of a kind (judged or parsed, its metric family, its columns,
its turns); this module holds its behaviour, as functions, keyed by the same kinds
(``ANSWER_SPACES``): how a response to an item is scored in both modes, how a uniform guess
inside the answer space is drawn (``--model random_guess``), and what a synthetic item and a
synthetic response look like (``pulse_tasks.results.runs.synthetic_run``, the fixtures of the
report, compare and leaderboard tests). Every place that used to branch on a subset's kind looks
its kind up here or in ``KINDS``; ``tests/test_answers.py`` checks that both tables name the
same kinds.

The judged kinds (report, arena) have no scorer here (``pulse_tasks.scoring.judge`` grades them);
they guess and answer in free text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pulse_tasks.data.subsets import ECGQA_TAIL, KINDS, Subset
from pulse_tasks.scoring import parsing
from pulse_tasks.scoring import strict as strict_mode
from pulse_tasks.scoring.records import ScoreRecord

# Letter options offered in a question ("A. ...", "B) ..."), so guesses stay among real options.
OPTION_LETTER = re.compile(r"(?m)^\s*\(?([A-H])[.)]\s")
# A free-text guess for the judged subsets: no content, like the paper's Random row (score 0).
FREE_TEXT_GUESS = "No answer (random baseline)."

# Synthetic items (no image: scoring never reads it).
ECGQA_OPTIONS = ("yes", "no", "sinus rhythm", "atrial fibrillation", "left bundle branch block", "t wave inversion")

# score(subset, doc, text, prompt, record, explain): fills the record's gold, paper, strict, credit
# and unparsed/invalid fields; ``explain`` is the strict explanation already known (an unanswered
# item's) or None.
Scorer = Callable[[Subset, Mapping[str, Any], str, str, ScoreRecord, "dict[str, Any] | None"], None]
Guesser = Callable[[Subset, str, random.Random], str]
Example = Callable[[Subset, random.Random], dict[str, Any]]
Responder = Callable[[Subset, Mapping[str, Any], random.Random, bool], Any]


@dataclass(frozen=True)
class AnswerSpace:
    """The behaviour of one kind (see the module docstring)."""

    score: Scorer | None  # None: judged, not parsed
    guess: Guesser
    example: Example | None  # a synthetic item's questions/answers/gold_options (None: judged, see runs)
    respond: Responder  # a synthetic response, right or wrong


def first_answer(doc: Mapping[str, Any]) -> str:
    """The gold answer of a one-turn doc, as text."""
    answers = doc.get("answers") or [""]
    answer = answers[0]
    return answer if isinstance(answer, str) else str(answer)


# ----------------------------------------------------------------------------------------------
# Letter subsets (csn, g12, mmmu)


def _score_letter(sub: Subset, doc: Mapping[str, Any], text: str, prompt: str, record: ScoreRecord,
                  explain: dict[str, Any] | None) -> None:
    gold = parsing.gold_letter(first_answer(doc))
    if gold is None:
        raise ValueError(f"{sub.config} item {record.id!r}: gold answer has no letter A-H")
    paper = parsing.parse_letter_paper(text) if text else None
    explain = explain or strict_mode.explain_letter(text, sub.letters, prompt)
    strict = explain["labels"][0] if explain["labels"] else None
    record.paper_credit = 1.0 / len(sub.letters) if paper is None else float(paper == gold)
    record.strict_correct = strict == gold
    record.unparsed, record.invalid = paper is None, strict is None
    record.gold, record.paper, record.strict, record.explain = gold, paper, strict, explain


def _guess_letter(sub: Subset, question: str, rng: random.Random) -> str:
    offered = [c for c in OPTION_LETTER.findall(question) if c in sub.letters]
    return rng.choice(sorted(set(offered)) or list(sub.letters))


def _example_letter(sub: Subset, rng: random.Random) -> dict[str, Any]:
    return {"questions": ["Which diagnosis fits this ECG?"], "answers": [f"{rng.choice(sub.letters)}. Diagnosis"]}


def _respond_letter(sub: Subset, doc: Mapping[str, Any], rng: random.Random, right: bool) -> str:
    if rng.random() < 0.03:
        return "I cannot tell from this image."
    letter = doc["answers"][0][0] if right else rng.choice(sub.letters)
    return rng.choice([letter, f"{letter}. Diagnosis", f"Reasoning first.\nAnswer: {letter}"])


# ----------------------------------------------------------------------------------------------
# ECG-QA (options listed in the question; the gold is a set of them)


def _score_ecgqa(sub: Subset, doc: Mapping[str, Any], text: str, prompt: str, record: ScoreRecord,
                 explain: dict[str, Any] | None) -> None:
    gold = list(doc.get("gold_options") or [])
    if not gold:  # fall back to the joined answer string
        gold = [g.strip() for g in first_answer(doc).split(",") if g.strip()]
    candidates = parsing.ecgqa_candidates(prompt)
    paper = parsing.parse_ecgqa_paper(text, candidates) if text else []
    explain = explain or strict_mode.explain_ecgqa(text, candidates, prompt)
    strict = list(explain["labels"])
    record.paper_credit = float(set(paper) == set(gold))
    record.strict_correct = bool(strict) and set(strict) == set(parsing.strict_candidates(gold))
    record.unparsed, record.invalid = not paper, not strict
    record.gold, record.paper, record.strict, record.explain = gold, paper, strict, explain


def _guess_ecgqa(sub: Subset, question: str, rng: random.Random) -> str:
    candidates = parsing.ecgqa_candidates(question)
    return rng.choice(candidates) if candidates else ""


def _example_ecgqa(sub: Subset, rng: random.Random) -> dict[str, Any]:
    options = rng.sample(ECGQA_OPTIONS, 4)
    gold_options = options[: rng.randint(1, 2)]
    return {"questions": [f"Which findings are present? Options: {', '.join(options)}. {ECGQA_TAIL}"],
            "answers": [", ".join(gold_options)], "gold_options": gold_options}


def _respond_ecgqa(sub: Subset, doc: Mapping[str, Any], rng: random.Random, right: bool) -> str:
    return doc["answers"][0] if right else rng.choice(["yes", "no", "sinus rhythm"])


# ----------------------------------------------------------------------------------------------
# Multi-label subsets (ptb, code15, cpsc); code15's gold is NORM, or ABNORMAL with any of the six
# specific labels after it in the vocabulary.

CODE15 = "code15-test"


def _score_labels(sub: Subset, doc: Mapping[str, Any], text: str, prompt: str, record: ScoreRecord,
                  explain: dict[str, Any] | None) -> None:
    code15 = sub.config == CODE15
    gold_text = first_answer(doc)
    paper = parsing.parse_labels_paper(text, sub.labels, code15=code15) if text else []
    explain = explain or strict_mode.explain_labels(text, sub.labels, prompt)
    strict = list(explain["labels"])
    gold = parsing.gold_labels_paper(gold_text, sub.labels, code15=code15)
    record.gold_strict = parsing.gold_labels_strict(gold_text, sub.labels)
    record.unparsed, record.invalid = not paper, not strict
    record.gold, record.paper, record.strict, record.explain = gold, paper, strict, explain


def _guess_labels(sub: Subset, question: str, rng: random.Random) -> str:
    if sub.config == CODE15:
        if rng.random() < 0.5:
            return "NORM"
        specific = [label for label in sub.labels[2:] if rng.random() < 0.5]
        return ", ".join(["ABNORMAL", *specific])
    chosen = [label for label in sub.labels if rng.random() < 0.5]
    return ", ".join(chosen or [rng.choice(sub.labels)])


def _example_labels(sub: Subset, rng: random.Random) -> dict[str, Any]:
    if sub.config == CODE15:
        gold = ["NORM"] if rng.random() < 0.4 else ["ABNORMAL", *rng.sample(sub.labels[2:], rng.randint(0, 2))]
    else:
        gold = rng.sample(sub.labels, rng.randint(1, 2))
    return {"questions": ["What are the diagnostic labels?"], "answers": ["; ".join(gold)]}


def _respond_labels(sub: Subset, doc: Mapping[str, Any], rng: random.Random, right: bool) -> str:
    gold = re.split(r";\s*", doc["answers"][0])
    return "; ".join(gold if right else rng.sample(sub.labels, rng.randint(1, 2)))


# ----------------------------------------------------------------------------------------------
# Free text (report, arena: graded by the judge)


def _guess_free_text(sub: Subset, question: str, rng: random.Random) -> str:
    return FREE_TEXT_GUESS


def _respond_free_text(sub: Subset, doc: Mapping[str, Any], rng: random.Random, right: bool) -> Any:
    return "Sinus rhythm, normal axis." if sub.rule.turns == 1 else ["First answer.", "Second answer."]


_FREE_TEXT = AnswerSpace(None, _guess_free_text, None, _respond_free_text)

ANSWER_SPACES: dict[str, AnswerSpace] = {
    "letter": AnswerSpace(_score_letter, _guess_letter, _example_letter, _respond_letter),
    "ecgqa": AnswerSpace(_score_ecgqa, _guess_ecgqa, _example_ecgqa, _respond_ecgqa),
    "multilabel": AnswerSpace(_score_labels, _guess_labels, _example_labels, _respond_labels),
    "report": _FREE_TEXT,
    "arena": _FREE_TEXT,
}
assert ANSWER_SPACES.keys() == KINDS.keys(), "every kind of subsets.KINDS has an answer space"


def answer_space(sub: Subset) -> AnswerSpace:
    """The behaviour of ``sub``'s kind."""
    return ANSWER_SPACES[sub.kind]


def guess(sub: Subset, question: str, rng: random.Random) -> str:
    """One uniform guess inside the subset's answer space for this question."""
    return ANSWER_SPACES[sub.kind].guess(sub, question, rng)
