"""What strict mode reads first in a long answer: the noise it skips and the answer statements.

Real models write the answer and then a long rationale (``NORM\\nThe ECG reading is considered
normal ... no signs of arrhythmia, conduction abnormalities, or ischemic changes``), a template
line (``Answer: $CLASS(1dAVb(1st degree av block))``), or reasoning that ends in ``Final answer:
No.``. A careful examiner takes the explicit answer statement as the answer and the rest as
rationale. This module finds, on a *cleaned* copy of the response (same length, so every offset
stays an offset into the response):

* **noise** -- mojibake (``â€â€``), HTML entities (``&gt;``), decoder tags (``<start of
  description>``, ``<end of detailed answer>``), code fences -- blanked out;
* **repetition loops** -- a sentence said again (``This image is a normal ECG.`` x 20) is read once;
* **echoes of the question** -- a sentence of the prompt repeated in the answer asserts nothing;
* **answer-statement candidates** -- ``Answer:``-style lines (any case, markdown, ``Final
  answer``, ``Conclusion:``), "the answer is X", "the most appropriate class (for this ECG) is
  X", and every short line (the subset's reader decides whether it is only a label, letter or
  option).

Which candidate is the answer is decided by ``pulse_tasks.scoring.strict`` (it knows the subset's
vocabulary): the last one that states a value. Pure functions; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

# Mojibake of UTF-8 read as cp1252 ("â€\x9d", "â€œ", "Ã©", "Â "), the replacement character,
# HTML entities and the tags/fences some decoders emit around or instead of an answer.
# Each kind of noise is its own pattern, scanned only when its first character is in the text
# (one alternation of all of them has no first character to skip to, and scans slowly).
_NOISE_PATTERNS = (
    ("\u00e2\u00c3\u00c2\ufffd", re.compile(r"(?:â€[^\x00-\x7f]?|Ã[^\x00-\x7f]|Â|\ufffd)+")),  # runs: one match
    ("&", re.compile(r"(?:&(?:gt|lt|amp|quot|apos|nbsp|#\d{1,5}|GT|LT|AMP);)+")),
    ("<", re.compile(r"(?:</?\s*(?:[Ss]tart|[Ee]nd|[Bb]egin)\s+of\s+[A-Za-z ]{0,40}>?\s*)+")),
    ("`", re.compile(r"```")),
)
# a stray fragment before a line's answer ("ık normal.", "íc – NORM", "點**: NORM")
_FRAGMENT_RE = re.compile(r"[^\x00-\x7f]{1,3}[A-Za-z]{0,2}(?=[\s*:.\u2013\u2014-]|$)", re.MULTILINE)
_NON_ASCII_LINE_RE = re.compile(r"\n[^\x00-\x7f]")


def _noise(text: str) -> list[tuple[int, int, str]]:
    """The noise ranges of ``text`` (see the module docstring)."""
    ranges = [(m.start(), m.end(), "noise") for first, pattern in _NOISE_PATTERNS
              if any(map(text.__contains__, first)) for m in pattern.finditer(text)]
    if not text.isascii():
        starts = [m.start() + 1 for m in _NON_ASCII_LINE_RE.finditer(text)]
        for pos in ([0] if text and not text[0].isascii() else []) + starts:
            m = _FRAGMENT_RE.match(text, pos)
            if m:
                ranges.append((m.start(), m.end(), "noise"))
    return ranges


# Disclaimers assert nothing about this ECG ("**Note:** ... should not be used as a substitute for
# professional medical advice", "Grok is not a doctor; please consult one"): the sentence is blanked.
_DISCLAIMER_RE = re.compile(
    r"substitute\s+for\s+(?:professional\s+)?medical\s+advice|for\s+educational\s+purposes"
    r"|\bnot\s+a\s+(?:doctor|physician|medical\s+professional)|\bdisclaimer\b"
    r"|consult\s+(?:with\s+)?(?:a|your|one)\b[^.!?\n]{0,40}?(?:doctor|physician|cardiologist|professional|provider|one\b)"
)
# A line that opens as a disclaimer is one, whole (its later sentences too)
_DISCLAIMER_LINE_RE = re.compile(r"(?m)^[ \t*_>#]*disclaimer\b[^\n]*")
# Sentences that define or list the options assert nothing about this ECG ("The candidate classes
# are NORM(normal ECG), MI(...) ...", "Each class is defined by specific criteria: AF by ...").
_DEFINITION_RE = re.compile(
    r"\b(?:is|are)\s+defined\s+(?:by|as)\b|\beach\s+(?:class|option|category|label)\b"
    r"|\b(?:candidate|possible|available|listed)\s+(?:classes|options|categories|labels|choices)\b"
    r"|\bthe\s+(?:classes|options|categories|choices)\s+(?:are|include)\b"
)
# Sentences (or lines) for the repetition check: a run up to ., !, ? or a newline.
_SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]*")
_KEY_RE = re.compile(r"[^a-z]+")
REPEAT_MIN_CHARS = 12  # shorter sentences ("NORM", "Yes.") are never treated as a loop
ECHO_MIN_CHARS = 30  # a prompt sentence at least this long, repeated in the answer, is an echo

# "Answer:" lines: "Answer:", "**Final Answer:**", "answer -", "Conclusion:", "Final diagnosis:".
ANSWER_LINE_RE = re.compile(  # on the lower-cased text, from its first word (scans fastest); _word_start checks
    r"(?:answer|conclusion|final\s+(?:diagnosis|classification|interpretation|verdict))"
    r"[*_]*\s*(?::|：|\s[-\u2013\u2014](?=\s))[*_]*"
)
# "the answer is X", "the final answer would be X"
ANSWER_IS_RE = re.compile(
    r"answer[*_]*\s+"
    r"(?:is|would\s+be|will\s+be)\b\s*:?"
)
# "Therefore, the most appropriate class for this ECG image is X", "the correct classification is X"
_THIS_ECG = r"(?:this|the)\s+(?:ecg|ekg|electrocardiogram|image)(?:\s+(?:image|tracing|reading))?"
# matched from its noun (a scan from "class"/"diagnosis"/... is fast); the words before it are
# checked by _CLASS_BEFORE_RE: an adjective ("the most appropriate class"), or the noun is followed
# by "of this ECG" ("the classification of this ECG image is X")
CLASS_IS_RE = re.compile(
    r"(?:class(?:ification)?(?:es|s)?|diagnos[ie]s|labels?|categor(?:y|ies)|options?|choices?)"
    rf"(?P<this>\s+(?:for|of)\s+{_THIS_ECG})?"
    r"\s+(?:is|are|would\s+be|will\s+be)\b\s*:?"
    # "the ECG image is classified as X"
    r"|(?P<classified>classified)\s+as\b\s*:?"
)
_CLASS_BEFORE_RE = re.compile(r"(?:appropriate|correct|likely|final|best|right|suitable|accurate)\s+$")
_CLASSIFIED_BEFORE_RE = re.compile(r"(?:ecg|ekg|electrocardiogram|image|tracing|reading)\s+(?:is|was|can\s+be|should\s+be)\s+$")
_CLASS_NOUN_ALONE = ("class", "classification", "category")


def _class_statement(lowered: str, m: re.Match[str]) -> bool:
    """Whether a CLASS_IS_RE match is a class statement (see there)."""
    before = lowered[max(0, m.start() - 40):m.start()]
    if m.group("classified"):
        return _CLASSIFIED_BEFORE_RE.search(before) is not None
    if m.start() and lowered[m.start() - 1].isalnum():
        return False
    if _CLASS_BEFORE_RE.search(before):
        return True
    noun = lowered[m.start():m.end()].split()[0]
    return bool(m.group("this")) and noun in _CLASS_NOUN_ALONE


_SENTENCE_END_RE = re.compile(r"(?<!\d)[.!?](?=\s|$)|\n")
_CLASS_HINTS = ("class", "diagnos", "label", "categor", "option", "choice")
SHORT_LINE_CHARS = 200  # a line longer than this is never "only a label" (CSN options are long)
_SHORT_LINE_RE = re.compile(rf"(?m)^[ \t]*+([^\n]{{1,{SHORT_LINE_CHARS}}}+)$")  # possessive: a long line fails at once

# Statement kinds (the explain record's "answer_statement" "kind").
KIND_ANSWER_LINE = "answer line"
KIND_ANSWER_IS = "the answer is"
KIND_CLASS_IS = "the class is"
KIND_LABEL_LINE = "label line"
KIND_VERDICT = "verdict sentence"


class Candidate(NamedTuple):
    """One place that may hold the answer: ``clean[start:end]``; ``binding``: an ``Answer:`` line
    (it is the answer even when it names nothing valid); ``kind``: one of the KIND_* names.
    (A named tuple: a long answer has dozens of candidates, and it is the cheapest to build.)"""

    kind: str
    start: int
    end: int
    binding: bool


@dataclass(frozen=True)
class Prepared:
    """A response and its cleaned copy (same length: noise, loops and echoes blanked), also
    lower-cased (``lowered``: the statement patterns are matched on it)."""

    text: str
    clean: str
    noise_chars: int
    repeat_chars: int
    echo_chars: int
    lowered: str = ""

    @property
    def ignored(self) -> dict[str, int]:
        """Characters left unread, by reason (only the non-zero ones)."""
        out = {"noise": self.noise_chars, "repetition": self.repeat_chars,
               "question echo or option definitions": self.echo_chars}
        return {k: v for k, v in out.items() if v}

    @property
    def only_noise(self) -> bool:
        """True when nothing readable is left (mojibake, tags, entities, punctuation only)."""
        return not re.search(r"[A-Za-z]{2}", self.clean) and not re.search(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", self.clean)


def _blank(text: str, ranges: list[tuple[int, int, str]]) -> tuple[str, dict[str, int]]:
    """``text`` with every character in the ``(start, end, why)`` ranges but line breaks made a
    space (same length), and how many characters were blanked for each reason."""
    if not ranges:
        return text, {}
    out, counts, cursor = [], {}, 0
    for start, end, why in sorted(ranges):
        start = max(start, cursor)
        if end <= start:
            continue
        segment = text[start:end]
        # every character but a line break made a space (str methods: faster than a substitution)
        blanked = "\n".join(" " * len(part) for part in segment.split("\n"))
        n = len(segment) - segment.count(" ") - segment.count("\n")
        counts[why] = counts.get(why, 0) + n
        out += [text[cursor:start], blanked]
        cursor = end
    out.append(text[cursor:])
    return "".join(out), counts


@lru_cache(maxsize=64)
def _echo_sentences(prompt: str) -> tuple[str, ...]:
    """The prompt's sentences long enough to count as an echo when repeated (lower case)."""
    out = []
    for line in (prompt or "").lower().split("\n"):
        if _OPTION_LINE_RE.match(line):  # "B. SB(sinus bradycardia), ...": quoting an option is answering
            continue
        out += [s for s in (m.group(0).strip() for m in _SENTENCE_RE.finditer(line)) if len(s) >= ECHO_MIN_CHARS]
    return tuple(out)


_OPTION_LINE_RE = re.compile(r"\s*\(?[a-h][.)]\s")


_NOISE_HINTS = ("&", "<", "```")  # an ASCII text with none of these has no noise to blank
_DISCLAIMER_HINTS = ("advice", "educational", "not a ", "disclaimer", "consult")
_DEFINITION_HINTS = ("defined", "each ", "candidate ", "possible ", "available ", "listed ", "the classes",
                     "the options", "the categories", "the choices")

# Words every match of the pattern contains (one per alternative): without one, the scan is skipped.
_DISCLAIMER_WORDS = ("substitute", "educational", "doctor", "physician", "professional", "disclaimer", "consult")
_PLURAL_NOUNS = ("classes", "options", "categories", "labels", "choices")


def _may_define(lowered: str) -> bool:
    """Whether _DEFINITION_RE can match: "defined", "each" with a class noun, or a plural class noun."""
    return ("defined" in lowered or any(map(lowered.__contains__, _PLURAL_NOUNS))
            or ("each" in lowered and any(map(lowered.__contains__, ("class", "option", "category", "label")))))


def _lower(text: str) -> str:
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def prepare(text: str, prompt: str = "") -> Prepared:
    """The response with noise, repetition loops and echoes of the prompt blanked out."""
    ranges: list[tuple[int, int, str]] = []
    if not text.isascii() or any(map(text.__contains__, _NOISE_HINTS)):
        ranges += _noise(text)
    lowered = _lower(text)
    if any(map(lowered.__contains__, _DISCLAIMER_WORDS)) and any(map(lowered.__contains__, _DISCLAIMER_HINTS)):
        ranges += [(*_sentence_around(lowered, m.start()), "noise") for m in _DISCLAIMER_RE.finditer(lowered)]
    if "disclaimer" in lowered:  # "_Disclaimer: Grok is not a doctor ... Don't share information ..._": the line
        ranges += [(m.start(), m.end(), "noise") for m in _DISCLAIMER_LINE_RE.finditer(lowered)]
    if any(map(lowered.__contains__, _DEFINITION_HINTS)) and _may_define(lowered):
        ranges += [(*_sentence_around(lowered, m.start()), "echo") for m in _DEFINITION_RE.finditer(lowered)]
    for sentence in _echo_sentences(prompt):
        start = lowered.find(sentence)
        while start != -1:
            ranges.append((start, start + len(sentence), "echo"))
            start = lowered.find(sentence, start + len(sentence))
    clean, counts = _blank(text, ranges)
    if counts:
        lowered = _lower(clean)
    seen: set[str] = set()
    repeats = []
    # the positions are needed only when some sentence repeats (a set of the sentences says so at C speed)
    keys = [k for k in map(str.strip, _SENTENCE_RE.findall(lowered)) if len(k) >= REPEAT_MIN_CHARS]
    for m in _SENTENCE_RE.finditer(lowered) if len(set(keys)) < len(keys) else ():
        key = m.group(0).strip()
        if len(key) < REPEAT_MIN_CHARS:
            continue
        if key in seen:
            repeats.append((m.start(), m.end(), "repeat"))
        else:
            seen.add(key)
    if repeats:
        clean, repeated = _blank(clean, repeats)
        counts.update(repeated)
        lowered = _lower(clean)
    return Prepared(text, clean, counts.get("noise", 0), counts.get("repeat", 0), counts.get("echo", 0), lowered)


def _sentence_around(text: str, pos: int) -> tuple[int, int]:
    """(start, end) of the sentence holding ``pos`` (the keyword of a disclaimer or definition)."""
    start = max(text.rfind(c, 0, pos) for c in ".!?\n") + 1
    return start, _sentence_end(text, pos)


def _line_end(clean: str, pos: int) -> int:
    end = clean.find("\n", pos)
    return len(clean) if end == -1 else end


def _sentence_end(clean: str, pos: int) -> int:
    m = _SENTENCE_END_RE.search(clean, pos)
    return m.start() + (1 if m and clean[m.start()] != "\n" else 0) if m else len(clean)


def sentence_end(clean: str, start: int, end: int) -> int:
    """The end of the sentence that starts at ``start`` (at most ``end``)."""
    return min(_sentence_end(clean, start), end)


def _word_start(text: str, pos: int, also: str = "") -> bool:
    """True when ``text[pos]`` starts a word (no letter, digit, "_" or ``also`` right before it)."""
    return pos == 0 or not (text[pos - 1].isalnum() or text[pos - 1] == "_" or text[pos - 1] in also)


def matches_at_words(pattern: re.Pattern[str], lowered: str, words: tuple[str, ...]):
    """``pattern.match`` at every occurrence of one of ``words`` (found with ``str.find``, which is
    many times faster than a regex scan over a long answer)."""
    starts = set()
    for word in words:
        starts.update(_positions(lowered, word))
    for pos in sorted(starts):
        m = pattern.match(lowered, pos)
        if m:
            yield m


@lru_cache(maxsize=64)  # one answer's scans ask for the same word ("answer") several times
def _positions(lowered: str, word: str) -> tuple[int, ...]:
    out = []
    pos = lowered.find(word)
    while pos != -1:
        out.append(pos)
        pos = lowered.find(word, pos + 1)
    return tuple(out)


_ANSWER_WORDS = ("answer", "conclusion", "final")
_CLASS_WORDS = ("class", "diagnos", "label", "categor", "option", "choice")


def candidates(clean: str, short_lines: bool = True, lowered: str | None = None,
               answer_lines: bool = True) -> list[Candidate]:
    """Every answer-statement candidate of a cleaned response, in text order (``answer_lines=False``:
    without the ``Answer:`` lines, for readers that find their own markers)."""
    found: list[Candidate] = []
    lowered = _lower(clean) if lowered is None else lowered
    for m in matches_at_words(ANSWER_LINE_RE, lowered, _ANSWER_WORDS) if answer_lines else ():
        if not _word_start(lowered, m.start(), "$"):
            continue
        start, end = m.end(), _line_end(clean, m.end())
        if not clean[start:end].strip(" \t*_#>`'\"-"):  # "Answer:\nB": the value is on the next line
            nxt = end + 1
            while nxt < len(clean) and not clean[nxt:_line_end(clean, nxt)].strip():
                nxt = _line_end(clean, nxt) + 1
            if nxt < len(clean):
                start, end = nxt, _line_end(clean, nxt)
        found.append(Candidate(KIND_ANSWER_LINE, start, end, True))
    for m in matches_at_words(ANSWER_IS_RE, lowered, ("answer",)):
        if _word_start(lowered, m.start()):
            found.append(Candidate(KIND_ANSWER_IS, m.end(), _sentence_end(clean, m.end()), False))
    for m in matches_at_words(CLASS_IS_RE, lowered, _CLASS_WORDS):
        if _class_statement(lowered, m):
            found.append(Candidate(KIND_CLASS_IS, m.end(), _sentence_end(clean, m.end()), False))
    if short_lines:
        for m in _SHORT_LINE_RE.finditer(clean):
            body = m.group(1).rstrip()
            if body:
                found.append(Candidate(KIND_LABEL_LINE, m.start(1), m.start(1) + len(body), False))
    found.sort(key=lambda c: (c.start, c.end))
    return found


def lines_of(clean: str) -> list[tuple[int, int]]:
    """(start, end) of every non-blank line."""
    out, pos = [], 0
    for line in clean.split("\n"):
        if line.strip():
            lead = len(line) - len(line.lstrip())
            out.append((pos + lead, pos + len(line.rstrip())))
        pos += len(line) + 1
    return out


SHORT_SENTENCE_CHARS = 60
_SENTENCE_SPLIT_RE = re.compile(r"[^.!?\n]+[.!?]?")


def short_sentences(clean: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence short enough to be only an answer ("Yes.", "Static noise.")
    that does not already fill its line (lines are candidates of their own)."""
    out = []
    for m in _SENTENCE_SPLIT_RE.finditer(clean):
        body = m.group(0).strip()
        if not body or len(body) > SHORT_SENTENCE_CHARS:
            continue
        start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
        line_start = clean.rfind("\n", 0, start) + 1
        line_end = _line_end(clean, start)
        if clean[line_start:start].strip() or clean[start + len(body):line_end].strip():
            out.append((start, start + len(body)))
    return out


KIND_CONCLUSION = "conclusion"
_CONCLUSION_RE = re.compile(
    r"\b(?:so(?:\s+overall)?|therefore|thus|hence|consequently|in\s+conclusion|in\s+summary|to\s+conclude|overall)\b[,:]?"
)


def conclusion(clean: str) -> Candidate | None:
    """The reasoning's last conclusion: after the last "so"/"therefore"/"overall", to its sentence end."""
    last = None
    for last in _CONCLUSION_RE.finditer(_lower(clean)):
        pass
    if last is None:
        return None
    return Candidate(KIND_CONCLUSION, last.end(), _sentence_end(clean, last.end()), False)


def last_sentence(clean: str) -> tuple[int, int] | None:
    """(start, end) of the response's final sentence (its last non-blank line's last sentence)."""
    spans = lines_of(clean)
    if not spans:
        return None
    start, end = spans[-1]
    body = clean[start:end]
    cuts = [m.end() for m in re.finditer(r"(?<!\d)[.!?](?=\s)", body)]
    if cuts:
        start += cuts[-1]
        start += len(clean[start:end]) - len(clean[start:end].lstrip())
    return (start, end) if start < end else None


def unfinished(clean: str, start: int, end: int) -> bool:
    """True when a statement at the very end of the response stops before or inside its value
    ("Answer:" or "Answer: $CLASS(sinus brad" cut at the token limit)."""
    body = clean[start:end]
    return not clean[end:].strip() and (body.count("(") > body.count(")") or not body.strip())


def cut_off(text: str) -> bool:
    """True when the response stops mid-sentence (cut at the token limit): no closing punctuation."""
    tail = text.rstrip()
    return bool(tail) and tail[-1] not in ".!?)]}*\"'`>" and not tail[-1].isdigit() and len(tail) > 200
