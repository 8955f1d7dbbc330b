"""Negation scope in the NegEx manner (Chapman et al., 2001), as a small pure module.

NegEx reads a finding as negated when a negation trigger governs it: a *pre* trigger ("no",
"without", "absence of", "negative for", "rules out", "free of", ...) negates the findings that
follow it, a *post* trigger ("... is absent", "... ruled out") the findings before it. Scope ends
at a clause boundary (sentence or clause punctuation, or a conjunction such as "but" or
"however") and after ``SCOPE_WORDS`` words. *Pseudo* triggers ("not only", "no change", ...)
contain a trigger's words but negate nothing; they are matched first and their text can never be
a trigger. *Unconfirmed* mentions ("cannot exclude X", "X cannot be ruled out") claim no finding and
count as pre/post triggers; a *value* trigger negates a listed term ("LBBB: absent", "- MI: no").

A hand-written module rather than negspacy/medspaCy: those pull in spaCy and a language model
(hundreds of MB, about a second to load), while the scoring of a full ECGBench run has a 2 s
budget (``bench/score_speed.py``); the trigger lists here are the few that ECG answers use.

    >>> scope = NegationScope.of("No LBBB, rhythm is sinus; RBBB")
    >>> scope.trigger_for(3, 7), scope.trigger_for(26, 30)
    ('no', None)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

# "ST depression is present but does not reach the 1 mm criterion for STD": below the criterion,
# neither the finding before nor the class after is claimed (post and pre trigger at once).
_BELOW_CRITERION = ("but does not reach", "but does not meet", "but does not fulfil", "but does not fulfill",
                    "but does not satisfy", "but falls short of")
# Pre-negation triggers: negate what follows them (longest first, so "no evidence of" wins).
PRE_TRIGGERS = (*_BELOW_CRITERION,
    "no evidence of", "no signs of", "no sign of", "no features of", "not consistent with",
    "not suggestive of", "negative for", "absence of", "absent", "free of", "rules out",
    "ruled out", "rule out", "excludes", "without", "cannot see", "not", "no", "nor", "neither",
    "never", "denies", "isn't", "doesn't", "don't", "aren't", "lacks", "lack of",
    "rather than", "instead of", "as opposed to",  # "AF rather than sinus tachycardia (option D)"
)
# Post-negation triggers: negate what precedes them in the same clause.
POST_TRIGGERS = (
    "is absent", "are absent", "absent", "is ruled out", "ruled out", "is excluded", "excluded",
    "not seen", "not present", "not identified", "not detected", "not observed", "not noted",
    "unlikely",
    *_BELOW_CRITERION,
)
# Pseudo triggers: look like negation, negate nothing (NegEx's list, the ECG-relevant part).
PSEUDO_TRIGGERS = (
    "not only", "no change", "no significant change", "no interval change", "no new", "not certain whether",
    "no longer normal", "without change", "not necessarily",
)
# Unconfirmed mentions: "cannot exclude X" says X's absence is unproven, not that X is seen: the
# reader holds X less likely than "possible X" (about even odds on certainty lexicons such as
# Panicek & Hricak, AJR 2016), so like "unlikely" it reports no finding. NegEx lists these as
# pseudo triggers because they are no negation; for scoring what an answer claims they act as one.
UNCONFIRMED_PRE = ("cannot exclude", "can not exclude", "can't exclude", "cannot rule out", "can not rule out",
                   "can't rule out", "could not exclude", "could not rule out", "unable to exclude",
                   "unable to rule out", "not possible to exclude",
                   # "Uncertain for both A and B": neither is claimed
                   "uncertain for", "uncertain about", "unclear for", "unclear about")
UNCONFIRMED_POST = ("cannot be excluded", "can not be excluded", "can't be excluded", "cannot be ruled out",
                    "can not be ruled out", "can't be ruled out", "not excluded", "not ruled out",
                    "could not be excluded", "could not be ruled out")
# Hypothetical and conditional mentions assert nothing ("which would be indicated by a prolonged
# QRS", "such as LBBB", "e.g. AF", "if infarction is occurring"), nor does a definition of a term
# ("sinus tachycardia is a type of ...", "burst noise is typically characterized by ..."): they
# act as triggers that mark the mention unclaimed, but they are no denial (ECG-QA's "no" never
# comes from them).
HYPOTHETICAL_PRE = ("such as", "e.g.", "e.g", "eg.", "for example", "for instance", "if", "whether", "would",
                    "would be", "to rule out", "to exclude", "to assess for", "to look for", "to evaluate for",
                    "could suggest", "could indicate", "could represent", "could be", "might suggest",
                    "might indicate", "might represent", "might be",
                    "typically associated with", "usually associated with", "commonly associated with",
                    "often associated with", "characteristic of", "typical of", "seen in")
HYPOTHETICAL_POST = ("would", "would be", "is a type of", "are a type of", "is a form of", "is a kind of",
                     "is typically", "are typically", "is usually", "are usually", "is often", "are often",
                     "is commonly", "are commonly", "is generally", "are generally", "is characterized by",
                     "are characterized by", "is defined as", "are defined as", "refers to", "is seen in",
                     "are seen in", "would require", "would show", "would manifest")
# "I would go with E", "I would classify this as RBBB": a choice, not a hypothetical
HYPOTHETICAL_PSEUDO = ("would say", "would go with", "would choose", "would pick", "would select", "would answer",
                       "would classify", "would read", "would call", "would label", "would diagnose", "would suggest",
                       "would favor", "would favour", "would be consistent with")
# Conjunctions that end a trigger's scope, as punctuation does ("no LBBB but RBBB").
SCOPE_ENDERS = ("but", "however", "although", "though", "yet", "except", "apart from", "aside from",
                "whereas", "while", "which", "instead", "rather", "so", "therefore", "thus", "then")
SCOPE_WORDS = 6  # NegEx limits a trigger's reach to a few words; six covers "no definite acute ST elevation"
# "non-" negates only the term it is glued to: "non-ST elevation MI" is an MI, "non-AF" no AF.
PREFIX_TRIGGER = "non"
# Clause punctuation; a comma ends a clause ("no LBBB, rhythm is sinus"), an em dash too ("rather than
# static noise — baseline drift"); "(" does not ("no LVH (A)": the aside continues the phrase).
_BOUNDARY_CHARS = ".;:!?\n,)[]\u2014"
# ... unless it separates the items of one list that a coordinator closes: "no signs of arrhythmia,
# conduction abnormalities, or ischemic changes" negates all three. A list item is a short phrase
# without a verb; an item with one ("and the rhythm is sinus") starts a new clause.
_PAREN_RE = re.compile(r"[()]")
_OR_RE = re.compile(r"(?i)\b(?:or|nor)\b")
_COORDINATOR_RE = re.compile(r"\b(?:or|and|nor|as\s+well\s+as)\b")
_VERB_RE = re.compile(r"\b(?:is|are|was|were|be|been|has|have|had|shows?|showed|suggests?|indicates?|appears?|seems?"
                      r"|demonstrates?|reveals?|exhibits?|displays?|presents?|confirms?|supports?|can|could|may|might"
                      r"|would|should|will|does|do|did)\b")
LIST_ITEM_WORDS = 6  # a list item longer than this is a clause


def _alternation(phrases: tuple[str, ...]) -> str:
    parts = sorted(phrases, key=len, reverse=True)
    return "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in parts)


# One pass over the lower-cased text (case-sensitive patterns keep sre's first-character skip):
# pseudo triggers first, so "not only" is never the trigger "not"; then triggers, scope enders,
# clause punctuation and the "non-" prefix.
_SCAN_RE = re.compile(
    rf"(?<![\w'])(?:(?P<pseudo>{_alternation(PSEUDO_TRIGGERS + HYPOTHETICAL_PSEUDO)})"
    rf"|(?P<trigger>{_alternation(PRE_TRIGGERS + POST_TRIGGERS + UNCONFIRMED_PRE + UNCONFIRMED_POST + HYPOTHETICAL_PRE + HYPOTHETICAL_POST)})"
    rf"|(?P<ender>{_alternation(SCOPE_ENDERS)}))(?![\w'])|(?P<punct>[{re.escape(_BOUNDARY_CHARS)}]|(?<=\s)\u2013(?=\s))"
    rf"|(?<![\w'])(?P<prefix>{PREFIX_TRIGGER}[- ]?)(?=\w)"
)


def _is_initial(lowered: str, dot: int) -> bool:
    """True for the period of a lone option letter ("A. SB(...)"), which ends no sentence."""
    return dot >= 1 and lowered[dot - 1] in "abcdefgh" and (dot < 2 or lowered[dot - 2] in " \t(\n")


_PRE, _POST = frozenset(PRE_TRIGGERS + UNCONFIRMED_PRE), frozenset(POST_TRIGGERS + UNCONFIRMED_POST)
_UNCONFIRMED = frozenset(UNCONFIRMED_PRE + UNCONFIRMED_POST)
_HYP_PRE, _HYP_POST = frozenset(HYPOTHETICAL_PRE), frozenset(HYPOTHETICAL_POST)
# A finding given a negative value in a list ("LBBB: absent", "- NORM: no", "AF = negative"): the
# value negates only the term right before its colon (markdown allowed between).
VALUE_TRIGGERS = ("no", "absent", "not present", "negative", "not seen", "none", "not detected", "false")
_VALUE_RE = re.compile(
    rf"[:=][ \t*_]*(?P<value>{_alternation(VALUE_TRIGGERS)})(?![\w'])(?=[ \t*_]*(?:$|[\n;,.(]))", re.MULTILINE
)
_VALUE_GAP = " \t*_"  # what may stand between a term and its value's colon
_SPACES_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"[\w'/+-]+")


@dataclass(frozen=True)
class Trigger:
    """One negation trigger found in a text: ``kind`` is "pre", "post", "prefix" ("non-") or "value" (": no")."""

    start: int
    end: int
    text: str
    kind: str
    unconfirmed: bool = False  # "cannot exclude"-style: the term is not claimed, but not denied either
    hypothetical: bool = False  # "such as X", "X would ...", "X is a type of": mentioned, not claimed


@dataclass(frozen=True)
class NegationScope:
    """The triggers and clause boundaries of one text; ask it whether a span is negated."""

    text: str
    triggers: tuple[Trigger, ...]
    boundaries: tuple[int, ...]  # start offsets of clause boundaries (punctuation, "but", ...)
    list_commas: tuple[int, ...] = ()  # commas between the items of one list: no boundary
    openers: tuple[tuple[int, int], ...] = ()  # (")" offset, its "(" offset): a parenthesis inside a scope

    @classmethod
    def of(cls, text: str) -> NegationScope:
        """Find every trigger and boundary of ``text`` in one pass (pseudo triggers win)."""
        lowered = text.lower()
        if len(lowered) != len(text):  # a character whose lower case is longer: keep offsets
            lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        found: list[Trigger] = []
        boundaries: list[int] = []
        commas: list[int] = []
        for m in _SCAN_RE.finditer(lowered):
            kind = m.lastgroup
            if kind == "trigger":
                phrase = _SPACES_RE.sub(" ", m.group(kind))
                for trigger_kind, table, hyp in (("pre", _PRE, _HYP_PRE), ("post", _POST, _HYP_POST)):
                    if phrase in table:
                        found.append(Trigger(m.start(), m.end(), phrase, trigger_kind, phrase in _UNCONFIRMED))
                    elif phrase in hyp:
                        found.append(Trigger(m.start(), m.end(), phrase, trigger_kind, hypothetical=True))
            elif kind == "prefix":
                found.append(Trigger(m.start(), m.end(), PREFIX_TRIGGER + "-", "prefix"))
            elif kind in ("ender", "punct"):
                if m.group(0) == "." and _is_initial(lowered, m.start()):
                    continue  # "for example A. SB(...)": an option letter or initial, no sentence end
                boundaries.append(m.start())
                if m.group(0) == ",":
                    commas.append(m.start())
        for m in _VALUE_RE.finditer(lowered):
            found.append(Trigger(m.start(), m.end(), ": " + _SPACES_RE.sub(" ", m.group("value")), "value"))
        list_commas = _list_commas(lowered, boundaries, commas) if commas and found else ()
        if list_commas:
            boundaries = [b for b in boundaries if b not in set(list_commas)]
        openers: list[tuple[int, int]] = []
        if found and ")" in lowered:
            stack: list[int] = []
            for m in _PAREN_RE.finditer(lowered):
                if m.group(0) == "(":
                    stack.append(m.start())
                elif stack:
                    openers.append((m.start(), stack.pop()))
        return cls(text, tuple(found), tuple(boundaries), tuple(list_commas), tuple(openers))

    def _crosses_boundary(self, start: int, end: int) -> bool:
        # a ")" whose "(" lies in the gap too closes an aside ("atrial fibrillation rather than sinus
        # tachycardia (option D) or atrial tachycardia (option H)"): no clause boundary
        inside = {close for close, opener in self.openers if start <= opener}
        return any(start <= b < end and b not in inside for b in self.boundaries)

    def _item_start(self, start: int, end: int) -> int:
        """Where the list item holding ``end`` begins: after the last list comma or "or"/"nor" in
        [start, end) ("rather than sinus tachycardia (option D) or atrial tachycardia (option H)")."""
        inside = [c + 1 for c in self.list_commas if start <= c < end]
        inside += [m.end() for m in _OR_RE.finditer(self.text, start, end)]
        return max(inside) if inside else start

    def _words_between(self, start: int, end: int) -> int:
        return len(_WORD_RE.findall(self.text, start, end)) if end > start else 0

    def trigger_for(self, start: int, end: int) -> str | None:
        """The trigger that negates the span ``text[start:end]``, or None when it is affirmed.

        A pre trigger counts when it ends before the span, with no clause boundary and at most
        ``SCOPE_WORDS`` words between; a post trigger when it starts after the span on the same
        terms. The nearest trigger wins; a trigger inside the span negates nothing.
        """
        trig = self.governing(start, end)
        return trig.text if trig else None

    def governing(self, start: int, end: int) -> Trigger | None:
        """The ``Trigger`` behind ``trigger_for`` (its kind, and whether it is hypothetical)."""
        best: tuple[int, Trigger] | None = None
        for trig in self.triggers:
            if trig.kind == "prefix":
                if trig.end == start:
                    return trig
                continue
            if trig.kind == "value":
                if trig.start >= end and not self.text[end:trig.start].strip(_VALUE_GAP):
                    return trig
                continue
            if trig.kind == "pre" and trig.end <= start:
                gap = (trig.end, start)
                counted = (self._item_start(*gap), start)  # each list item gets the whole reach
            elif trig.kind == "post" and trig.start >= end:
                gap = counted = (end, trig.start)
            else:
                continue
            if self._crosses_boundary(*gap):
                continue
            words = self._words_between(*counted)
            if words <= SCOPE_WORDS and (best is None or words < best[0]):
                best = (words, trig)
        return best[1] if best else None


class LazyScope:
    """``NegationScope`` answers for a long text, built one sentence at a time and only for the
    sentences asked about (a trigger never reaches across ".", "!", "?" or a line break, so the
    answers are the same; "e.g." and an option letter's "A." end no sentence)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._scopes: dict[int, tuple[int, NegationScope]] = {}

    def _is_cut(self, i: int) -> bool:
        """Whether ``text[i]`` ends a sentence: "!", "?", a line break, or "." before a space ("e.g." and "A." do not)."""
        text = self.text
        c = text[i]
        if c != ".":
            return c in "!?\n"
        if i + 1 >= len(text) or not text[i + 1].isspace():
            return False
        return not (i >= 1 and text[i - 1].isalpha() and (i < 2 or not text[i - 2].isalnum()))

    def _sentence(self, pos: int) -> tuple[int, int]:
        # found from ``pos`` outwards with str.find/rfind: only the sentence asked about is cut
        text = self.text
        start = max(text.rfind("!", 0, pos), text.rfind("?", 0, pos), text.rfind("\n", 0, pos))
        dot = text.rfind(".", 0, pos)
        while dot > start and not self._is_cut(dot):
            dot = text.rfind(".", 0, dot)
        start = max(start, dot) + 1
        ends = [i for i in (text.find("!", pos), text.find("?", pos), text.find("\n", pos)) if i != -1]
        end = min(ends) if ends else len(text)
        dot = text.find(".", pos, end)
        while dot != -1 and not self._is_cut(dot):
            dot = text.find(".", dot + 1, end)
        return start, (dot if dot != -1 else end)

    def governing(self, start: int, end: int) -> Trigger | None:
        """As ``NegationScope.governing``, offsets into the whole text."""
        a, b = self._sentence(start)
        cached = self._scopes.get(a)
        if cached is None:
            cached = self._scopes[a] = (a, _sentence_scope(self.text[a:max(b, end)]))
        return cached[1].governing(start - a, end - a)

    def trigger_for(self, start: int, end: int) -> str | None:
        trig = self.governing(start, end)
        return trig.text if trig else None


@lru_cache(maxsize=8192)  # models repeat their sentences across answers: read each once
def _sentence_scope(sentence: str) -> NegationScope:
    return NegationScope.of(sentence)


def _list_commas(lowered: str, boundaries: list[int], commas: list[int]) -> list[int]:
    """The commas that separate the items of a list closed by a coordinator ("X, Y, or Z")."""
    hard = [b for b in boundaries if lowered[b] != ","]
    out: list[int] = []
    for comma in commas:
        if comma in out:
            continue
        stop = next((b for b in hard if b > comma), len(lowered))
        run = [c for c in commas if comma <= c < stop] + [stop]
        items = []
        for a, b in itertools.pairwise(run):
            item = lowered[a + 1:b]
            if _VERB_RE.search(item) or len(_WORD_RE.findall(item)) > LIST_ITEM_WORDS:
                break
            items.append(a)
            if _COORDINATOR_RE.search(item):
                out += items
                break
    return out


def negating_trigger(text: str, start: int, end: int) -> str | None:
    """One-off form of ``NegationScope.of(text).trigger_for(start, end)``."""
    return NegationScope.of(text).trigger_for(start, end)
