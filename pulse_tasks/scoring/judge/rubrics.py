"""Judge rubrics (our wording of the reference protocol), prompt assembly and reply validation.

The rubric text is the system message; the item (ground truth and candidate) is the user
message, built here so a user's ``judge_prompt_file`` only has to replace the instructions.
Criteria, 0-10 scales, anchors (10/5/0), JSON keys and the score formula (mean x 10) follow the
reference protocol (the PULSE paper and its judge scripts).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pulse_tasks.data.subsets import KINDS, Subset, get_subset

JudgeKind = Literal["report", "arena"]

# Bump whenever a rubric text, the user-message layout or the reply parser changes what it accepts
# as a verdict (a change that only accepts replies that were rejected before leaves every earlier
# verdict as it was, and keeps the version: judge-later records then do not look like another judge).
RUBRIC_VERSION = "ecgbench-judge-v1"

# Criteria in report order, as the JSON keys the judge is asked for: the lmms-eval metric names of
# subsets.KINDS in title case ("instruction_adherence" -> "Instruction Adherence").
CRITERIA: dict[JudgeKind, tuple[str, ...]] = {
    kind: tuple(c.replace("_", " ").title() for c in rule.criteria)  # type: ignore[misc]
    for kind, rule in KINDS.items() if rule.judged
}

# Key spellings seen in reference judge outputs, normalised (lower case, letters only) -> criterion.
KEY_ALIASES: dict[JudgeKind, dict[str, str]] = {
    "report": {"diagnosis": "Diagnosis", "waveform": "Waveform", "form": "Waveform", "wave": "Waveform",
               "rhythm": "Rhythm"},
    "arena": {"accuracy": "Accuracy", "completeness": "Completeness",
              "instructionadherence": "Instruction Adherence", "adherence": "Instruction Adherence",
              "instructionfollowing": "Instruction Adherence"},
}

SCORE_MIN, SCORE_MAX = 0.0, 10.0  # the rubric's scale
ITEM_SCALE = 10.0  # item score = mean criterion score x 10 -> 0-100, as in the paper


def judge_kind(subset: Subset | str) -> JudgeKind:
    """"report" or "arena"; ValueError for subsets that are not judged."""
    sub = subset if isinstance(subset, Subset) else get_subset(subset)
    if not sub.judged:
        raise ValueError(f"subset {sub.config!r} is scored automatically, not by the LLM judge")
    return sub.kind  # type: ignore[return-value]


def builtin_rubric(kind: JudgeKind) -> str:
    """The packaged rubric text for ``kind``."""
    return resources.files("pulse_tasks.scoring.judge").joinpath("rubrics", f"{kind}.txt").read_text(encoding="utf-8")


@lru_cache(maxsize=32)
def _read_prompt_file(path: str, mtime_ns: int) -> str:  # mtime in the key: edits are picked up
    return Path(path).read_text(encoding="utf-8")


def rubric_text(kind: JudgeKind, prompt_file: Path | None = None) -> str:
    """The rubric in force: the user's prompt file if given, else the built-in one."""
    if prompt_file is None:
        return builtin_rubric(kind)
    return _read_prompt_file(str(prompt_file), Path(prompt_file).stat().st_mtime_ns)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rubric_identity(kind: JudgeKind, prompt_file: Path | None = None) -> dict[str, Any]:
    """Version and hash of the rubric in force (``custom`` when a prompt file replaced it)."""
    text = rubric_text(kind, prompt_file)
    return {"rubric_version": RUBRIC_VERSION if prompt_file is None else f"custom:{Path(prompt_file).name}",
            "rubric_sha": sha256(text)[:16]}


def _block(title: str, text: str) -> str:
    return f"[{title}]\n{text.strip()}\n[End of {title}]"


# Closes every user message: JSON mode needs the word "JSON" in the prompt, even with a custom rubric.
REPLY_INSTRUCTION = "Reply with the JSON object only."


def user_message(kind: JudgeKind, questions: list[str], answers: list[str], responses: list[str]) -> str:
    """The item to grade: ground truth and candidate; one block per turn for multi-turn kinds (arena)."""
    if KINDS[kind].turns == 1:
        parts = [_block("Ground-truth report", answers[0]), _block("Generated report", responses[0])]
    else:
        parts = []
        for turn, (q, a, r) in enumerate(zip(questions, answers, responses), start=1):
            parts += [_block(f"Turn {turn} question", q), _block(f"Turn {turn} ground-truth answer", a),
                      _block(f"Turn {turn} assistant response", r)]
    return "\n\n".join(parts + [REPLY_INSTRUCTION])


def build_messages(kind: JudgeKind, rubric: str, questions: list[str], answers: list[str],
                   responses: list[str]) -> list[dict[str, str]]:
    """Chat messages for one judge call."""
    return [{"role": "system", "content": rubric},
            {"role": "user", "content": user_message(kind, questions, answers, responses)}]


@dataclass(frozen=True)
class Verdict:
    """A validated judge reply: criterion -> 0-10 score (and the judge's explanations)."""

    criteria: dict[str, float]
    explanations: dict[str, str]

    @property
    def score(self) -> float:
        """Item score 0-100: mean of the criterion scores x 10."""
        return sum(self.criteria.values()) / len(self.criteria) * ITEM_SCALE


class InvalidReply(ValueError):
    """The judge replied, but not with valid JSON holding every criterion's 0-10 score."""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _load_json(text: str) -> dict[str, Any]:
    if not text.strip():
        raise InvalidReply("reply is empty")
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first:last + 1])  # prose around the object
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    raise InvalidReply("reply is not a JSON object")


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z]", "", key.lower())


# A score written as text: "8", "8.5", "8/10", "8 / 10.0", "8 out of 10" (the rubric's own scale only).
_STRING_SCORE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*10(?:\.0+)?)?\s*", re.IGNORECASE)


def _number(value: Any, criterion: str) -> float:
    if isinstance(value, bool):
        raise InvalidReply(f"{criterion}: score is a boolean")
    if isinstance(value, str):
        match = _STRING_SCORE.fullmatch(value)
        if not match:
            raise InvalidReply(f"{criterion}: score {value!r} is not a number")
        value = float(match.group(1))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidReply(f"{criterion}: score {value!r} is not a number")
    if not SCORE_MIN <= value <= SCORE_MAX:
        raise InvalidReply(f"{criterion}: score {value} is outside 0-10")
    return float(value)


def parse_reply(kind: JudgeKind, text: str) -> Verdict:
    """Validate a judge reply; raise :class:`InvalidReply` saying what is wrong.

    Accepts ``{Criterion: {Score, Explanation}}`` or ``{Criterion: number}``, keys in any case and
    spacing (a trailing "score" allowed), the reference's "Form" for Waveform, scores as numbers or
    text on the 0-10 scale ("8", "8/10", "8 out of 10"), one wrapping object (``{"scores": {...}}``)
    and a JSON object inside prose or code fences. Anything else (another scale, a missing or
    doubled criterion, a list) is invalid: the item is "failed", never a 0.
    """
    data = _load_json(text)
    aliases = KEY_ALIASES[kind]

    def criterion_of(key: Any) -> str | None:  # "Rhythm", "rhythm_score", "Rhythm Score" -> Rhythm
        norm = _norm_key(str(key))
        return aliases.get(norm) or aliases.get(norm.removesuffix("score"))

    nested = [v for v in data.values() if isinstance(v, dict)]
    if not any(criterion_of(k) for k in data) and len(nested) == 1:
        data = nested[0]  # one wrapping object: {"scores": {...}} or {"evaluation": {...}}
    scores: dict[str, float] = {}
    explanations: dict[str, str] = {}
    for key, value in data.items():
        criterion = criterion_of(key)
        if criterion is None:
            continue
        if isinstance(value, dict):
            inner = {_norm_key(str(k)): v for k, v in value.items()}
            if "score" not in inner:
                raise InvalidReply(f"{criterion}: no Score field")
            explanation = inner.get("explanation", inner.get("reason", ""))
            value = inner["score"]
            explanations[criterion] = str(explanation)
        if criterion in scores:
            raise InvalidReply(f"{criterion}: scored twice")
        scores[criterion] = _number(value, criterion)
    missing = [c for c in CRITERIA[kind] if c not in scores]
    if missing:
        raise InvalidReply(f"missing score(s) for {', '.join(missing)}")
    return Verdict({c: scores[c] for c in CRITERIA[kind]}, explanations)
