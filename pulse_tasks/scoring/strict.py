"""Strict mode: read an answer the way a careful cardiologist would, and say why.

Each reader returns an *explanation* (a plain dict, JSON-ready) whose ``labels`` are the strict
answer and whose ``invalid_reason`` says why there is none::

    {"mode": "strict", "region": "...", "region_start": 0, "region_end": 12,
     "spans": [{"text", "start", "end", "label", "source", "negated", "trigger"}, ...],
     "labels": [...], "invalid_reason": None, "implied": [...],
     "answer_statement": {"kind", "start", "end", "text"}, "rationale_read": False,
     "rationale_chars": 1024, "ignored": {"noise": 40, "repetition": 900}}

``start``/``end`` are offsets into the whole response; ``region`` is the part of it that was read
(``response[region_start:region_end]``, shown cut to ``REGION_MAX_CHARS``); ``implied`` (code15's
NORM/ABNORMAL rules) appears only when a label was implied or dropped. ``answer_statement`` is
the statement taken as the answer (absent when the whole text was read, ``rationale_read`` then
true); ``ignored`` counts the characters left unread as noise, repetition, question echo or
option definitions (``pulse_tasks.scoring.statements``).

Rules (one example each; the README lists the same):

* **The answer statement first** (every subset; ``pulse_tasks.scoring.statements``) -- an ``Answer:``-style
  line (any case, markdown, "Final answer", "Conclusion:"; the value may be on the next line), "the
  answer is X", "the most appropriate class (for this ECG) is X" / "the ECG is classified as X"
  (only when X comes first: "the answer is based on ..." states nothing), a line that is only a
  label, letter or option (``NORM``, ``abnormal**``, ``â€ NORM``, ``- **MI**``; consecutive ones are
  one list), for ECG-QA also a line or closing sentence that opens with an option ("Yes, this ECG
  shows burst noise.") or a sentence that is only one ("Electrode problems."). With several, the
  last one that states a value is the answer, and the rest is rationale: shown in ``explain``, not
  read. ``NORM\nThe ECG ... no signs of arrhythmia, conduction abnormalities ...`` reads NORM;
  ``Answer: RBBB(right bundle branch block)\n... LBBB is also evident ...`` reads RBBB. A template
  wrapped around a real value is that value (``$CLASS(1dAVb(...))``, ``$LETTER(F)``, ``$G``); an
  unfilled template (``Answer: $CLASS(;CLASS)``) or an answer line cut at the token limit
  (``Answer: $CLASS(sinus brad``, a final bare ``Answer:``) states nothing. Without a statement the
  whole text is read (ECG-QA: first the reasoning's own conclusion, after its last "so",
  "therefore", "overall", when it names an option).
* **Code over name** -- a code with a gloss in parentheses is the code: ``LBBB(right bundle branch
  block)`` reads LBBB (the question asks for the code; the gloss is not read), unless the
  parentheses hold another code ("ABNORMAL (1dAVb)").
* **Noise and loops** -- mojibake (``â€â€``), HTML entities (``&gt;``), decoder tags (``<start of
  description>``), code fences and disclaimers ("not a substitute for professional medical
  advice") are not read; a sentence said again is read once; sentences of the prompt repeated in
  the answer and sentences that list or define the options ("The candidate classes are NORM(...),
  MI(...) ...", "Each class is defined by ...") assert nothing, nor do three or more glossed codes
  in a row or a run naming every ECG-QA option ("yes, no, or not sure"). A response with nothing
  left is invalid ("only noise"); a template echo or a text cut before any verdict says so.
* **The question's own vocabulary** -- a label is found by its code (whole token, any case,
  plural allowed: "PVCs"), by the description the prompt gives it ("STTC: ST/T Change",
  "PVC(Premature ventricular contraction)", "Premature ventricular contraction (PVC)"), or by a
  curated clinical synonym (``LABEL_SYNONYMS``: "A-fib", "1st degree AV block", "LVH" for
  PTB-XL's HYP). Longer phrases win over codes inside them.
* **Lookalikes** -- phrases that contain a code but name something else are read first and belong
  to no label (``LOOKALIKES``): "ST depression" is not code15's ST (sinus tachycardia); "AFL" and
  "atrial flutter" are not AF.
* **Negation** (``pulse_tasks.scoring.negation``, NegEx style) -- a negated mention is no finding:
  "no LBBB, rhythm is sinus; RBBB" reads RBBB; "without ST elevation" reads no STE; a negation
  covers the whole list it governs ("no signs of arrhythmia, conduction abnormalities, or
  ischemic changes", "rather than sinus tachycardia (option D) or atrial tachycardia (option H)").
  Hypothetical, conditional and defining mentions claim nothing ("which would be indicated by",
  "such as X", "e.g.", "if", "could suggest X", "X is a type of ...", "typical of X"), nor does a
  finding "present but does not reach the criterion for X". An
  unconfirmed mention claims no finding ("cannot exclude LVH", "MI cannot be ruled out"), while a
  hedged positive does ("possible/likely LVH", "consistent with MI"); a negative list value
  negates its term ("LBBB: absent", "- MI: no").
* **Normal and abnormal** -- "normal" alone counts only as a whole clause ("Normal.", "The ECG is
  normal"), never in "normal axis"; "normal sinus rhythm" names the rhythm, normal parts ("normal
  PR interval", "within the normal range") describe parts, and "normal ECG except for X" /
  "otherwise normal ECG" qualify the reading, so these are NORM only when no finding stands
  beside them. "normal or abnormal" echoes the question. code15 asks normal-vs-abnormal first: a specific finding, a negated NORM or
  "abnormal" means ABNORMAL ("RBBB" reads ABNORMAL, RBBB), a negated ABNORMAL without findings
  means NORM, and ABNORMAL wins over NORM.
* **Letter questions** -- the letter right after the last final-answer marker ("answer:",
  "answer is", "answer -", "correct option is", "I'd say B", LaTeX ``\\boxed{B}``, lower case allowed:
  "answer: c"), else in the whole text a bare letter ("(B)", "**B**"), "Option F", "B is correct",
  or a line starting "C." / "C)"; when no letter is
  given, the text of one option ("Sinus Tachycardia" for "D. Sinus Tachycardia"). Exactly one
  letter of the question's options, else invalid: "A or C", two different final letters and an
  echoed template ("Answer: $LETTER") have none.
* **ECG-QA** -- whole options on normalised text, longest first, so "lead III" never also selects
  "lead I"; option case does not matter; a negated option is not chosen, except options that are
  negations themselves ("no", "not sure"); a yes/no question answered with a negation ("It does
  not.") is "no"; "I don't know", "cannot be determined", "no X can be confirmed or excluded" and an
  unconfirmed mention ("AF cannot be excluded") are "not sure", so are "does not allow reliable
  assessment" and, when nothing else answers, "nondiagnostic"/"uninterpretable"; "Neither.", "neither
  (no clear signal)" and a statement "Neither X nor Y." are "none"; "Uncertain for (both) A and B"
  claims neither, and an answer that is only the question's qualifier ("Uncertain symptoms.") chooses
  no option. An option "X in Y leads" is also "Y X" ("anteroseptal myocardial infarction"), "below
  the normal range" also "below normal"; a line opening "Disclaimer" is not read. An option may
  differ by a plural "s" ("Electrode problems" for "electrodes problems"); an option split at a
  comma inside parentheses is joined again, and the question's qualifier ("including uncertain
  symptoms") is no option.

``STRICT_VERSION`` is bumped whenever any of this changes what an answer scores; task metadata,
scoring records, results and submissions carry it, and ``ecgbench compare``/``validate`` refuse
to mix versions.
"""

from __future__ import annotations

import re
import re._constants as _sre_constants  # the stdlib's own parser: which literal a pattern needs
import re._parser as _sre_parser
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring import statements
from pulse_tasks.scoring.negation import LazyScope, NegationScope, _sentence_scope
from pulse_tasks.scoring.records import LEGACY_STRICT_VERSION  # noqa: F401 -- what a run that records no strict version was scored with
from pulse_tasks.scoring.statements import Candidate, Prepared

STRICT_VERSION = 3  # 1: whole-token codes only; 2: prompt vocabulary, synonyms, negation, explain;
# 3: the answer statement first, noise/loops/echoes unread, list negation, hypothetical mentions

# Span sources (the explain record's "source" values).
SOURCE_CODE, SOURCE_DESCRIPTION, SOURCE_SYNONYM = "code", "description", "synonym"
SOURCE_LETTER, SOURCE_OPTION_TEXT, SOURCE_OPTION = "letter", "option_text", "option"
SOURCE_LOOKALIKE = "lookalike"  # a phrase that contains a code but names no label

# --------------------------------------------------------------------------------------------
# Vocabulary: curated synonyms and lookalikes (regex fragments, matched case-insensitively as
# whole words; a trailing plural "s"/"es" is always allowed)
# --------------------------------------------------------------------------------------------

_AVB = r"(?:(?:av|a-v|atrio-?ventricular|heart)[\s-]*block|avb)"  # "AVB": the usual abbreviation of AV block
# "I" after "AV block" is the pronoun, not the degree, when a first-person verb follows ("... block I think")
_PRONOUN_I = r"(?!\s+(?:think|believe|suspect|guess|would|see|am|have|cannot|can't|'d|'m)\b)"
_AVB1 = (rf"(?:1st|first|1|i)(?:[\s-]*degree|°|\s*°)?[\s-]*{_AVB}"
         rf"|{_AVB}[\s-]*(?:1st|1°|°i|1|i{_PRONOUN_I})(?![\w-])")  # "AVB I", "AV block 1°": the European order
# Second/third degree and complete AV block (PTB-XL's 2AVB/3AVB, CD): "2nd degree AVB", "AV block III", "Mobitz II"
_AVB_HIGH = (rf"(?:2nd|second|3rd|third|ii|iii|2|3)(?:[\s-]*degree|°)?[\s-]*{_AVB}",
             rf"{_AVB}[\s-]*(?:2nd|3rd|ii|iii|2|3)°?(?![\w-])", r"complete\s+heart\s+block", r"chb",
             r"mobitz(?:[\s-]+(?:type[\s-]+)?(?:i{1,2}|1|2))?", r"wenckebach")
# A long QT interval is PTB-XL's LNGQT, one of the STTC statements
_LONG_QT = (r"(?:long|prolonged)\s+qtc?(?:[\s-]+intervals?)?", r"qtc?[\s-]+(?:interval\s+)?prolongation")
_AF = (r"atrial[\s-]+fibrillation", r"a[\s.-]?fib", r"afib")
_LBBB = (r"(?:complete\s+)?left[\s-]+bundle[\s-]+branch[\s-]+block", r"clbbb")
_RBBB = (r"(?:complete\s+)?right[\s-]+bundle[\s-]+branch[\s-]+block", r"crbbb")
_NORMAL_ECG = r"normal[\s-]+(?:12[\s-]*lead\s+)?(?:ecg|ekg|electrocardiogram|tracing|study|recording)"
_NORM = (_NORMAL_ECG, r"within\s+normal\s+limits", r"no\s+(?:significant\s+)?abnormalit(?:y|ies)(?:\s+(?:detected|seen|found))?")
# "Normal sinus rhythm" names the rhythm: NORM only when no finding stands beside it.
RHYTHM_ONLY_NORM = (r"normal\s+sinus\s+rhythm", r"nsr")
# "ST depr"/"ST elev": the report abbreviations
_STD = (r"st[\s-]*(?:segment\s+)?depressions?", r"depressed\s+st(?:[\s-]*segments?)?", r"st[\s-]*(?:segments?\s+)?depressed",
        r"st[\s-]*(?:segment\s+)?depr")
_STE = (r"st[\s-]*(?:segment\s+)?elevations?", r"elevated\s+st(?:[\s-]*segments?)?", r"st[\s-]*(?:segments?\s+)?elevated",
        r"st[\s-]*(?:segment\s+)?elev", r"stemi")

LABEL_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    # PTB-XL diagnostic superclasses; members from the SCP-ECG statements PTB-XL groups under each.
    "ptb-test": {
        "NORM": _NORM,
        "MI": (r"myocardial\s+infarction", r"infarcts?", r"infarctions?", r"n?stemi", r"(?:a|i|as|al|il|l|p|ip|ipl|pl)mi",
               r"(?:old|prior|previous|acute)\s+mi"),
        "STTC": (r"st[\s/-]*t[\s-]*(?:wave\s+)?(?:changes?|abnormalit(?:y|ies))", r"st\s+changes?",
                 r"t[\s-]*wave\s+(?:inversions?|changes?|abnormalit(?:y|ies))", r"inverted\s+t[\s-]*waves?",
                 r"repolari[sz]ation\s+abnormalit(?:y|ies)", r"ischemi[ac]", r"ischaemi[ac]", *_STD, *_STE[:-1],
                 r"(?:ventricular\s+)?strain(?:\s+pattern)?",  # "strain": the ST depression/T inversion of hypertrophy
                 *_LONG_QT),
        "CD": (r"conduction\s+(?:disturbances?|defects?|abnormalit(?:y|ies)|delay|blocks?)", r"bundle[\s-]+branch[\s-]+blocks?",
               r"[lr]bbb", r"i?c?[lr]bbb", r"[lr]afb", r"[lr]pfb", r"(?:left\s+)?(?:anterior|posterior)\s+(?:fascicular\s+block|hemiblock)",
               _AVB1, r"(?:2nd|second|3rd|third)[\s-]*degree[\s-]*(?:av\s+|heart\s+)?block", r"[123]avb", r"wpw",
               r"wolff[\s-]+parkinson[\s-]+white", r"ivcd",
               r"l[ap]hb",  # left anterior/posterior hemiblock, the older name of the fascicular blocks
               *_AVB_HIGH, r"(?:(?:bi|tri)|(?:left\s+)?(?:anterior|posterior|septal))?[\s-]*fascicular\s+blocks?"),
        "HYP": (r"(?:left|right)?[\s-]*ventricular\s+hypertroph(?:y|ies)", r"hypertroph(?:y|ies)", r"[lr]vh",
                r"(?:left|right|bi)[\s-]*atrial\s+(?:enlargement|overload|abnormality)", r"[lr]ae", r"[lr]ao",
                r"p[\s-]+(?:mitrale|pulmonale)"),  # the P waves of left/right atrial enlargement
    },
    # CPSC 2018 classes.
    "cpsc-test": {
        "NORM": _NORM,
        "AF": _AF,
        "I-AVB": (_AVB1, r"1avb", r"1davb", r"(?:prolonged\s+pr(?:\s+interval)?|pr\s+prolongation)"),
        "LBBB": _LBBB,
        "RBBB": _RBBB,
        "PAC": (r"premature\s+atrial\s+(?:contractions?|complex(?:es)?|beats?)", r"atrial\s+premature\s+(?:contractions?|complex(?:es)?|beats?)",
                r"apcs?", r"atrial\s+ectopics?(?:\s+beats?)?", r"atrial\s+extrasystoles?", r"atrial\s+bigeminy",
                # supraventricular premature beats: CPSC 2018's PAC class (atrial/junctional ectopy)
                r"supraventricular\s+(?:extrasystoles?|ectopics?(?:\s+beats?)?|premature\s+(?:contractions?|complex(?:es)?|beats?))",
                r"sves?", r"svpbs?", r"svpcs?"),
        "PVC": (r"premature\s+ventricular\s+(?:contractions?|complex(?:es)?|beats?)", r"ventricular\s+premature\s+(?:contractions?|complex(?:es)?|beats?)",
                r"vpcs?", r"vpbs?", r"ventricular\s+ectopics?(?:\s+beats?)?", r"ventricular\s+extrasystoles?",
                r"ventricular\s+(?:bigeminy|trigeminy|ectopy)"),  # bigeminy/trigeminy: every 2nd/3rd beat a PVC
        "STD": _STD,
        "STE": _STE,
    },
    # CODE-15% classes (normal vs abnormal, then six findings).
    "code15-test": {
        "NORM": _NORM,
        "ABNORMAL": (r"abnormal(?:\s+(?:ecg|ekg|electrocardiogram|tracing))?", r"abnormalit(?:y|ies)"),
        "1dAVb": (_AVB1, r"1avb", r"i-avb"),
        "RBBB": _RBBB,
        "LBBB": _LBBB,
        "SB": (r"sinus\s+bradycardia", r"sinus\s+brady"),
        "ST": (r"sinus\s+tachycardia", r"sinus\s+tachy"),
        "AF": _AF,
    },
}
# Phrases that contain a code of some vocabulary but name something else (read before codes).
# Those in ABNORMAL_LOOKALIKES still name an abnormality: code15's ABNORMAL when affirmed.
ABNORMAL_LOOKALIKES = (
    r"st[\s/-]*(?:(?:segments?[\s-]+)?(?:depressions?|elevations?|changes?|abnormalit(?:y|ies)|deviations?|depressed|elevated|elev|depr)|t)",
    r"afl", r"a[\s-]?flutter", r"atrial\s+flutter",  # flutter is not fibrillation
)
# Normal parts are no normal ECG -- but a reading that has nothing else is normal.
NORMAL_PARTS = (
    r"normal\s+(?:axis|intervals?|pr|qrs|qt|qtc|voltage|rate|p\s+waves?)(?:\s+intervals?)?",
    r"within\s+(?:the\s+)?normal\s+range",
)
LOOKALIKES = (
    *ABNORMAL_LOOKALIKES,
    r"st[\s-]*waves?", r"st[\s/-]*segments?",  # "the ST segment is normal": a part of the ECG, no finding
    r"normal\s+variant",
    *NORMAL_PARTS,
)
_NORMAL_CLAUSE_RE = re.compile(
    r"(?i)^(?:(?:the\s+)?(?:ecg|ekg|electrocardiogram|tracing|study)\s+(?:is|appears|looks|seems)\s+(?:to\s+be\s+)?)?"
    r"(?P<neg>not\s+|non-?)?(?:entirely\s+|completely\s+|essentially\s+|overall\s+)?(?P<word>normal|abnormal)$"
)
_GENERIC_DESCRIPTIONS = frozenset({"normal", "abnormal"})  # read by the clause rule, never as a bare word
_CODE15_GLOBAL = ("NORM", "ABNORMAL")
_WORD = "A-Za-z0-9_"
_PLURAL = r"(?:'?s|es)?"


def _phrase_regex(phrase: str) -> str:
    """A prompt description as a pattern: any case, flexible spaces, hyphens and slashes."""
    words = [w for w in re.split(r"([\s/-]+)", phrase.strip()) if w]
    out = []
    for w in words:
        if re.fullmatch(r"[\s/-]+", w):
            out.append(r"[\s/-]+" if w.strip() == "" else r"[\s/-]*")
        else:
            out.append(re.escape(w))
    return "".join(out)


def prompt_descriptions(prompt: str, labels: tuple[str, ...]) -> dict[str, list[str]]:
    """The description the prompt gives each label code: "CODE: text", "CODE(text)", "text (CODE)"."""
    return {label: list(texts) for label, texts in _described(prompt, labels)}


@lru_cache(maxsize=1024)  # a subset's prompts repeat: read each once
def _described(prompt: str, labels: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    found: dict[str, list[str]] = {}
    if not prompt:
        return ()
    for label in labels:
        code = re.escape(label)
        after = re.finditer(rf"(?<![\w-]){code}(?![\w-])\s*(?::|=|\(|-\s)\s*([^,;\n()]+?)\s*(?=[,;\n)]|\.\s|\.$|$)", prompt)
        before = re.finditer(rf"([A-Za-z][^,;:\n()]*?)\s*\(\s*{code}\s*\)", prompt)
        texts = [m.group(1) for m in after] + [" ".join(m.group(1).split()[-6:]) for m in before]
        for text in texts:
            text = text.strip(" .'\"")
            if text and text.casefold() != label.casefold() and text not in labels and len(text.split()) <= 8:
                found.setdefault(label, []).append(text)
    return tuple((label, tuple(texts)) for label, texts in sorted(found.items()))


@lru_cache(maxsize=256)
def _vocabulary(labels: tuple[str, ...], described: tuple[tuple[str, tuple[str, ...]], ...]):
    """Three compiled passes (phrases, lookalikes, codes) and each pass's group -> (label, source)."""
    synonyms = next((LABEL_SYNONYMS[c] for c, s in BY_CONFIG.items() if s.labels == labels), {})
    phrases: list[tuple[str, str, str]] = []  # (pattern, label, source)
    for label, texts in described:
        phrases += [(_phrase_regex(t.lower()), label, SOURCE_DESCRIPTION) for t in texts
                    if t.casefold() not in _GENERIC_DESCRIPTIONS]
    for label in labels:
        phrases += [(p, label, SOURCE_SYNONYM) for p in synonyms.get(label, ())]
        if label == "NORM":
            phrases += [(p, label, SOURCE_SYNONYM) for p in RHYTHM_ONLY_NORM]
    # the prompt's own words first (its spans say "description"), then synonyms; longest first in each
    phrases.sort(key=lambda t: (t[2] != SOURCE_DESCRIPTION, -len(t[0])))
    codes = [(re.escape(label.lower()), label, SOURCE_CODE) for label in sorted(labels, key=len, reverse=True)]
    lookalikes = [(p, None, SOURCE_LOOKALIKE) for p in LOOKALIKES]
    return [_Pass([(label, source, p) for p, label, source in terms])
            for terms in (phrases, lookalikes, codes) if terms]


def _mandatory_literals(pattern: str) -> tuple[str, ...] | None:
    """Plain strings one of which every match of ``pattern`` contains, or None when unknown.

    Read from the parsed pattern: the longest run of literal characters at its top level ("(?:complete
    \\s+)?left[\\s-]+bundle..." gives ("bundle",), "ischemi[ac]" ("ischemi",)); an alternation
    gives one per branch ("(?:2nd|second)[\\s-]*degree" gives ("degree",), "a[\\s.-]?fib|afib"
    ("fib", "afib")); a leading group is entered.
    """
    try:
        ops = list(_sre_parser.parse(pattern))
    except re.error:  # pragma: no cover - every vocabulary pattern compiles
        return None
    return _literals_of(ops)


def _literals_of(ops: list) -> tuple[str, ...] | None:
    while len(ops) == 1 and ops[0][0] is _sre_constants.SUBPATTERN:
        ops = list(ops[0][1][-1])
    if len(ops) == 1 and ops[0][0] is _sre_constants.BRANCH:
        found = [_literals_of(list(branch)) for branch in ops[0][1][1]]
        return None if any(f is None for f in found) else tuple(x for f in found for x in f)
    best, run, groups = "", "", []
    for op, arg in ops:
        if op is _sre_constants.LITERAL:
            run += chr(arg)
            best = max(best, run, key=len)
            continue
        run = ""
        inner = None
        if op is _sre_constants.SUBPATTERN:  # a group that must match: its own literals will do
            inner = _literals_of(list(arg[-1]))
        elif op is _sre_constants.BRANCH:  # an inlined "(?:a|b)": one literal per branch
            found = [_literals_of(list(branch)) for branch in arg[1]]
            inner = None if any(f is None for f in found) else tuple(x for f in found for x in f)
        if inner is not None:
            groups.append(inner)
    if len(best) >= 3 or (best and not groups):
        return (best,) if len(best) >= 2 else None
    return min(groups, key=len) if groups else ((best,) if len(best) >= 2 else None)


class _Pass:
    """One scan over the lower-cased text: an alternation of terms, each ``(label, source, pattern)``.

    The scan tries every alternative at every word start, so a long answer costs about the number
    of alternatives; a term whose mandatory literal ("bundle", "ischemi") is not in the text cannot
    match, so the scan uses an alternation of the terms that can (compiled once per such set).
    """

    def __init__(self, terms: list[tuple[str | None, str, str]]) -> None:
        self.terms = terms
        self.literals = [None if lits is None else frozenset(lits)
                         for lits in (_mandatory_literals(p) for _, _, p in terms)]
        self.unique = frozenset(x for lits in self.literals if lits for x in lits)
        self.full = self._compile(tuple(range(len(terms))))
        self._patterns: dict[tuple[int, ...], re.Pattern[str]] = {}  # compiled once per term subset
        self._subsets: dict[frozenset[str], tuple[tuple[int, ...], re.Pattern[str]]] = {}

    def _compile(self, indices: tuple[int, ...]) -> re.Pattern[str]:
        # one word-start check for all alternatives (the scan's hot path), then the term;
        # case-sensitive on lower-cased text: sre skips to possible first characters (IGNORECASE cannot)
        alternatives = "|".join(f"({self.terms[i][2]})" for i in indices) or "(?!)"
        # "\\b" rather than a look-behind: sre scans about twice as fast (every term starts with a
        # letter or digit, so both say "not inside a word")
        return re.compile(rf"\b(?:{alternatives}){_PLURAL}(?![{_WORD}])")

    def scan(self, masked: str):
        """(match, (label, source, term)) for every match in ``masked``."""
        present = frozenset(filter(masked.__contains__, self.unique))
        chosen = self._subsets.get(present)  # (indices, pattern) per set of literals present
        if chosen is None:
            indices = tuple(i for i, lits in enumerate(self.literals) if lits is None or not present.isdisjoint(lits))
            pattern = self.full if len(indices) == len(self.terms) else self._patterns.get(indices)
            if pattern is None:
                if len(self._patterns) >= SUBSET_PATTERNS_MAX:
                    self._patterns.clear()
                pattern = self._patterns[indices] = self._compile(indices)
            if len(self._subsets) >= SUBSET_PATTERNS_MAX:
                self._subsets.clear()
            chosen = self._subsets[present] = (indices, pattern)
        indices, pattern = chosen
        for m in pattern.finditer(masked):
            yield m, self.terms[indices[m.lastindex - 1]]


SUBSET_PATTERNS_MAX = 2048  # compiled term subsets kept per pass


_HYPHENS = str.maketrans("\u2010\u2011\u2012\u2212\u2019\u2018", "----''")  # "t\u2011waves" is "t-waves"


def _lower_same_length(text: str) -> str:
    """``text.lower()``, keeping any character whose lower case is longer (offsets stay valid);
    typographic hyphens and apostrophes read as plain ones."""
    lowered = text.lower()
    if len(lowered) != len(text):
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return lowered.translate(_HYPHENS)


# "Normal ECG except for X" / "otherwise normal ECG" qualify the normal reading: X is the finding.
_EXCEPT_AFTER_RE = re.compile(r"[\s*_,]*(?:except|apart\s+from|aside\s+from|other\s+than|save\s+for|but\s+for|besides)\b")
_OTHERWISE_BEFORE_RE = re.compile(r"\botherwise[\s*_]*$")
_CLAUSE_RE = re.compile(r"[^.;,!?\n]+")
_MARKDOWN = " \t*_#>`'\"-"


def _span(text: str, start: int, end: int, label: str | None, source: str,
          scope: NegationScope | LazyScope | None, offset: int) -> dict[str, Any]:
    trigger = scope.governing(start - offset, end - offset) if scope is not None else None
    span = {"text": text[start:end], "start": start, "end": end, "label": label, "source": source,
            "negated": trigger is not None, "trigger": trigger.text if trigger else None}
    if trigger is not None and trigger.hypothetical:
        span["hypothetical"] = True  # "such as X", "X would ...": mentioned, not claimed
    return span


REGION_MAX_CHARS = 240  # records are stored once per metric name: long regions keep their offsets only


def _explanation(region: str, offset: int, spans: list[dict], labels: list[str], reason: str | None,
                 **extra: Any) -> dict[str, Any]:
    shown = region if len(region) <= REGION_MAX_CHARS else region[:REGION_MAX_CHARS - 1] + "\u2026"
    out = {"mode": "strict", "region": shown, "region_start": offset, "region_end": offset + len(region),
           "spans": sorted(spans, key=lambda s: s["start"]), "labels": labels,
           "invalid_reason": None if labels else reason}
    out.update({k: v for k, v in extra.items() if v})
    return out


def not_answered(status: str) -> dict[str, Any]:
    """The explanation of a response that is no text to read (failed, empty, missing, ...)."""
    return _explanation("", 0, [], [], f"response is {status}")


# --------------------------------------------------------------------------------------------
# The answer statement first (every subset)
# --------------------------------------------------------------------------------------------

_TEMPLATE_WORD_RE = re.compile(r"(?i)\$\s*\{?\s*(?:class|letter|answer|label)\s*\}?|<\s*(?:class|letter)\s*>|\[\s*(?:class|letter)\s*\]")
_TEMPLATE_FILLED_RE = re.compile(r"(?i)\$\s*(?:class|letter)\s*\(\s*[^;)\s]")  # "$CLASS(RBBB ...)": a real value
_GLOSS_PAREN_RE = re.compile(r"\([^()\n]*\)")  # "MI (inferior)": a gloss after a label
_CONNECTOR_WORDS = frozenset({"and", "or", "with", "plus", "class", "classes", "label", "labels", "letter", "option",
                              "options", "answer", "final", "the", "is"})


def _only_noise(prep: Prepared) -> dict[str, Any]:
    return _explanation("", 0, [], [], "the response is only noise (mojibake, markup or decoder tags)",
                        ignored=prep.ignored)


def _leftover_is_connective(line: str, spans: list[dict[str, Any]], start: int) -> bool:
    """True when ``line`` (at ``start``) holds nothing but the spans, connectors and junk."""
    chars = list(line)
    for s in spans:
        for i in range(max(0, s["start"] - start), min(len(chars), s["end"] - start)):
            chars[i] = " "
    rest = _GLOSS_PAREN_RE.sub(" ", _TEMPLATE_WORD_RE.sub(" ", "".join(chars)))
    return all(w.lower() in _CONNECTOR_WORDS or not w.isascii() for w in re.findall(r"[^\W\d_]+", rest))


LABEL_LINE_WORDS = 8  # a line of more words is never "only a label" (multi-label and ECG-QA) ...
GLOSSED_LINE_WORDS = 16  # ... unless it glosses codes: "RBBB(right bundle branch block); STD(...)"
_WORDS_RE = re.compile(r"[^\W_]+")


def _few_words(line: str) -> bool:
    words = len(_WORDS_RE.findall(line))
    return words <= LABEL_LINE_WORDS or ("(" in line and words <= GLOSSED_LINE_WORDS)


def _choose_statement(prep: Prepared, cands: list[Candidate], read, label_only,
                      prefilter=None) -> tuple[Candidate, dict] | None:
    """The answer statement: the last candidate that states a value, unless a binding ``Answer:``
    line without one comes after it (then that line is the answer, and it names nothing).
    ``prefilter(line)``: a cheap test a label line must pass before it is read. Candidates are
    read from the last one back, and only until the answer is found."""

    def evaluate(cand: Candidate) -> tuple[str, dict | None]:
        if (cand.kind == statements.KIND_LABEL_LINE and prefilter is not None
                and not prefilter(prep.clean[cand.start:cand.end])):
            return "skip", None
        exp = read(cand.start, cand.end, cand)
        has_value = bool(exp["labels"])
        if cand.kind in (statements.KIND_ANSWER_IS, statements.KIND_CLASS_IS) and has_value:
            has_value = _value_first(prep.clean, cand, exp)  # "the answer is based on ..." states nothing
        if cand.kind == statements.KIND_LABEL_LINE and has_value:
            has_value = label_only(prep.clean[cand.start:cand.end], exp, cand.start)
        if has_value:
            return "value", exp
        if cand.binding and not (statements.unfinished(prep.clean, cand.start, cand.end)  # "Answer: $CLASS(sinus brad"
                                 or _TEMPLATE_WORD_RE.search(prep.clean, cand.start, cand.end)):  # "$CLASS(;CLASS)"
            return "empty", exp  # an answer line that names nothing is still the answer
        return "skip", None  # a cut or unfilled answer line states nothing: earlier ones or the text are read

    for i in range(len(cands) - 1, -1, -1):
        cand = cands[i]
        status, exp = evaluate(cand)
        if status == "skip":
            continue
        if status == "value" and cand.kind == statements.KIND_LABEL_LINE:
            first = cand
            for prev in reversed(cands[:i]):  # consecutive label lines are one list ("- **MI**\n- **HYP**")
                if prev.kind != statements.KIND_LABEL_LINE or prep.clean[prev.end:first.start].strip():
                    break
                if evaluate(prev)[0] != "value":
                    break
                first = prev
            if first is not cand:
                cand = Candidate(cand.kind, first.start, cand.end, False)
                exp = read(cand.start, cand.end, cand)
        return cand, exp
    return None


_VALUE_LEAD_RE = re.compile(r"(?i)[\s*_:\"'(\[$]*(?:(?:the|a|an|option|choice|class|letter|label|\$class)\b[\s*_:\"'(\[$]*)*")


def _value_first(clean: str, cand: Candidate, exp: dict[str, Any]) -> bool:
    """True when the statement opens with its value ("the answer is RBBB", not "is based on ...")."""
    lead = _VALUE_LEAD_RE.match(clean, cand.start, cand.end)
    first = lead.end() if lead else cand.start
    return any(s["start"] <= first + 1 and s["end"] > first for s in exp["spans"] if s["label"] and not s["negated"])


def _with_statement(prep: Prepared, chosen: tuple[Candidate, dict] | None, whole) -> dict[str, Any]:
    """The chosen statement's explanation (the rest marked as rationale, not read), else ``whole()``."""
    if chosen is None:
        exp = whole()
        exp["rationale_read"] = True
        template = _TEMPLATE_WORD_RE.search(prep.clean)
        if not exp["labels"] and template and not _TEMPLATE_FILLED_RE.search(prep.clean):
            exp["invalid_reason"] = f"the answer template was echoed ({template.group(0).strip()!r})"
    else:
        cand, exp = chosen
        text = prep.text[cand.start:cand.end]
        exp["answer_statement"] = {"kind": cand.kind, "start": cand.start, "end": cand.end,
                                   "text": text if len(text) <= REGION_MAX_CHARS else text[:REGION_MAX_CHARS - 1] + "\u2026"}
        exp["rationale_read"] = False
        exp["rationale_chars"] = len(prep.text.strip()) - len(text.strip())
    if prep.ignored:
        exp["ignored"] = prep.ignored
    return exp


def _no_value_reason(prep: Prepared, region: str, reason: str) -> str:
    template = _TEMPLATE_WORD_RE.search(region)
    if template:
        return f"the answer template was echoed ({template.group(0).strip()!r})"
    if statements.cut_off(prep.text):
        return reason + "; the response was cut off before any verdict"
    return reason


# --------------------------------------------------------------------------------------------
# Multi-label (ptb, cpsc, code15)
# --------------------------------------------------------------------------------------------


def explain_labels(text: str, labels: tuple[str, ...], prompt: str = "") -> dict[str, Any]:
    """Strict multi-label reading of one response (see the module docstring)."""
    prep = statements.prepare(text, prompt)
    if prep.only_noise:
        return _only_noise(prep)
    described = _described(prompt, labels)

    memo: dict[tuple[int, int], dict[str, Any]] = {}

    def read(start: int, end: int, cand: Candidate | None = None) -> dict[str, Any]:
        if (start, end) not in memo:
            memo[start, end] = _read_labels(prep, start, end, labels, described)
        return memo[start, end]

    def label_only(line: str, exp: dict[str, Any], start: int) -> bool:
        return _leftover_is_connective(line, exp["spans"], start)

    chosen = _choose_statement(prep, statements.candidates(prep.clean, lowered=prep.lowered), read, label_only,
                               _few_words)
    return _with_statement(prep, chosen, lambda: read(0, len(text)))


# A code followed by a gloss in parentheses ("LBBB(right bundle branch block)", "RBBB (complete)"):
# the code is what the question asks for, so the gloss is not read -- even when it names another
# label (the code/name conflict: "LBBB(right bundle branch block)" reads LBBB).
_GLOSS_RE_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def _gloss_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    pattern = _GLOSS_RE_CACHE.get(labels)
    if pattern is None:
        codes = "|".join(re.escape(label.lower()) for label in sorted(labels, key=len, reverse=True))
        pattern = re.compile(rf"(?<![{_WORD}-])(?:{codes})\s*\(([^()\n]{{1,60}})\)")
        _GLOSS_RE_CACHE[labels] = pattern
    return pattern


@lru_cache(maxsize=64)
def _code_token_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    codes = "|".join(re.escape(label.lower()) for label in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?<![{_WORD}-])(?:{codes})(?![{_WORD}-])")


_BINARY_ECHO_RE = re.compile(r"\b(?:norm(?:al)?|abnormal)\s*(?:or|and|/|vs\.?|versus)\s*(?:norm(?:al)?|abnormal)\b")
OPTION_ECHO_MIN = 3  # "NORM(normal ECG), MI(myocardial infarction), STTC(ST/T change) and ...": the option list
_ECHO_GAP_RE = re.compile(r"[\s,;/]*(?:\b(?:and|or)\b)?[\s,;/]*$")


def _mark_option_echoes(spans: list[dict[str, Any]], glossed: dict[int, int], masked: str, offset: int) -> None:
    """Three or more glossed codes in a row, as the prompt lists them, echo the options: no finding."""
    codes = sorted((s for s in spans if s["label"] and s["start"] - offset in glossed),
                   key=lambda s: s["start"])
    run: list[dict[str, Any]] = []
    for span in codes + [None]:
        if span is not None and run and _ECHO_GAP_RE.match(masked[glossed[run[-1]["start"] - offset]:span["start"] - offset]):
            run.append(span)
            continue
        if len(run) >= OPTION_ECHO_MIN:
            for s in run:
                s.update(negated=True, trigger="an echo of the question's options", hypothetical=True)
        run = [span] if span is not None else []


READ_CACHE_CHARS = 200  # statement regions up to this long are read once per distinct wording
READ_CACHE_SIZE = 4096
_READ_CACHE: dict[tuple, dict[str, Any]] = {}


def _read_labels(prep: Prepared, start: int, end: int, labels: tuple[str, ...],
                 described: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, Any]:
    """``_read_region_labels``, cached for short regions: models repeat their answer lines ("NORM",
    "Answer: RBBB(right bundle branch block)") across answers. The reading depends only on the
    region (cleaned and original), the vocabulary and whether the response was cut off."""
    if end - start > READ_CACHE_CHARS:
        return _read_region_labels(prep, start, end, labels, described)
    key = (prep.clean[start:end], prep.text[start:end], labels, described, statements.cut_off(prep.text))
    cached = _READ_CACHE.get(key)
    if cached is None:
        if len(_READ_CACHE) >= READ_CACHE_SIZE:
            _READ_CACHE.clear()
        cached = _READ_CACHE[key] = _shifted(_read_region_labels(prep, start, end, labels, described), -start)
    return _shifted(cached, start)


def clear_caches() -> None:
    """Forget what was read from answers (short statement regions, negation scopes of sentences), as
    at the start of a run; compiled patterns and per-prompt vocabularies stay (``bench/score_speed.py``
    times every repeat from this state)."""
    _READ_CACHE.clear()
    _sentence_scope.cache_clear()
    statements._positions.cache_clear()


def _shifted(exp: dict[str, Any], delta: int) -> dict[str, Any]:
    """A copy of a region's explanation with every offset moved by ``delta``."""
    out = dict(exp, region_start=exp["region_start"] + delta, region_end=exp["region_end"] + delta,
               labels=list(exp["labels"]),
               spans=[dict(s, start=s["start"] + delta, end=s["end"] + delta) for s in exp["spans"]])
    if "implied" in exp:
        out["implied"] = [dict(i) for i in exp["implied"]]
    return out


def _read_region_labels(prep: Prepared, start: int, end: int, labels: tuple[str, ...],
                        described: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, Any]:
    text, offset = prep.text, start
    region = prep.clean[start:end]
    scope = LazyScope(region)
    masked = _lower_same_length(region)
    glossed: dict[int, int] = {}  # code start -> end of its "(gloss)"
    if "(" in masked:
        for m in _gloss_re(labels).finditer(masked):
            a, b = m.span(1)
            if _code_token_re(labels).search(masked, a, b):  # "ABNORMAL (1dAVb)": a second code, no gloss
                continue
            masked = masked[:a] + " " * (b - a) + masked[b:]
            glossed[m.start()] = m.end()
    spans: list[dict[str, Any]] = []
    for scan in _vocabulary(labels, described):
        for m, (label, source, term) in scan.scan(masked):
            # a lookalike that names no finding ("ST segment", "normal variant") needs no negation check
            plain = label is None and term not in ABNORMAL_LOOKALIKES and term not in NORMAL_PARTS
            span = _span(text, offset + m.start(), offset + m.end(), label, source, None if plain else scope, offset)
            if label == "NORM" and term in RHYTHM_ONLY_NORM:
                span["rhythm_only"] = True
            elif label == "NORM" and (_EXCEPT_AFTER_RE.match(masked, m.end()) or _OTHERWISE_BEFORE_RE.search(masked, 0, m.start())):
                span["qualified"] = True  # "normal ECG except for PVCs": NORM only when no finding stands beside
            if source == SOURCE_LOOKALIKE and term in ABNORMAL_LOOKALIKES:
                span["abnormal"] = True
            elif source == SOURCE_LOOKALIKE and term in NORMAL_PARTS and "NORM" in labels:
                span["normal_part"] = True
            spans.append(span)
        for s in spans:  # mask what this pass found: later passes never read inside it
            a, b = s["start"] - offset, s["end"] - offset
            masked = masked[:a] + " " * (b - a) + masked[b:]
    spans += _normal_clauses(text, masked, offset, labels, scope)
    if "ABNORMAL" in labels:  # "normal or abnormal", "NORM or ABNORMAL": the question's two options, echoed
        for m in _BINARY_ECHO_RE.finditer(_lower_same_length(region)):
            for s in spans:
                if m.start() <= s["start"] - offset < m.end() and s["label"] in _CODE15_GLOBAL:
                    s.update(negated=True, trigger="an echo of the question's options", hypothetical=True)
    if len(glossed) >= OPTION_ECHO_MIN:
        _mark_option_echoes(spans, glossed, masked, offset)
    chosen, implied = _resolve_labels(spans, labels)
    reason = ("every label found is negated" if any(s["label"] for s in spans)
              else _no_value_reason(prep, region, "no label of the question found"))
    return _explanation(text[start:end], offset, spans, chosen, reason, implied=implied)


def _normal_clauses(text: str, masked: str, offset: int, labels: tuple[str, ...],
                    scope: NegationScope | LazyScope) -> list[dict[str, Any]]:
    """"Normal." / "The ECG is not normal" as a whole clause (a bare word elsewhere is no label)."""
    spans = []
    if "normal" not in masked:  # every clause it reads says "normal" or "abnormal" (masked is lower case)
        return spans
    for clause in _CLAUSE_RE.finditer(masked):
        body = clause.group(0)
        lead = len(body) - len(body.lstrip(_MARKDOWN))
        core = body.strip(_MARKDOWN)
        m = _NORMAL_CLAUSE_RE.match(core)
        if not m:
            continue
        word = m.group("word").lower()
        label = "NORM" if word == "normal" else "ABNORMAL"
        if label not in labels:
            continue
        start = offset + clause.start() + lead + m.start("word")
        span = _span(text, start, start + len(m.group("word")), label, SOURCE_DESCRIPTION if label == "NORM" else SOURCE_SYNONYM,
                     scope, offset)
        if m.group("neg"):
            span.update(negated=True, trigger=m.group("neg").strip().lower())
        spans.append(span)
    return spans


def _resolve_labels(spans: list[dict], labels: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    """Final labels from the spans: affirmed ones, then the NORM/ABNORMAL rules."""
    conditional = ("rhythm_only", "qualified", "normal_part")  # NORM only when no finding stands beside
    positive = {s["label"] for s in spans if s["label"] and not s["negated"] and not any(s.get(k) for k in conditional)}
    negated = {s["label"] for s in spans if s["label"] and s["negated"]}
    rhythm_only = any(any(s.get(k) for k in conditional) and not s["negated"] for s in spans)
    findings = positive - set(_CODE15_GLOBAL)
    others = sorted({s["text"] for s in spans if s.get("abnormal") and not s["negated"]})
    implied: list[dict[str, str]] = []
    if rhythm_only and not findings and not (others and any(s.get("normal_part") for s in spans)):
        positive.add("NORM")
    if "ABNORMAL" in labels:  # code15: normal vs abnormal, then the findings
        if (findings or others) and "ABNORMAL" not in positive:
            positive.add("ABNORMAL")
            implied.append({"label": "ABNORMAL", "because": "a finding was named: " + ", ".join(sorted(findings) + others)})
        elif "NORM" in negated and not positive:
            positive.add("ABNORMAL")
            implied.append({"label": "ABNORMAL", "because": "NORM is negated"})
        elif "ABNORMAL" in negated and not positive:
            positive.add("NORM")
            implied.append({"label": "NORM", "because": "ABNORMAL is negated and no finding named"})
        if "ABNORMAL" in positive and "NORM" in positive:
            positive.discard("NORM")
            implied.append({"label": "NORM", "because": "dropped: ABNORMAL wins over NORM"})
    return [label for label in labels if label in positive], implied


# --------------------------------------------------------------------------------------------
# Letter questions (csn, g12, mmmu)
# --------------------------------------------------------------------------------------------

_EMPH = r"[*_]*"
# On the lower-cased text; every alternative starts with a literal, so the scan skips to possible
# first characters (a marker's optional first words, "final answer", "I choose", change only where
# it starts, never where its answer starts); _marker_ok checks the word start and the letter's case.
_LETTER_MARKER_RE = re.compile(
    rf"(?:answer{_EMPH}\s*(?:is\s*:?|would\s+be\s*:?|:|[\u2013\u2014-](?=\s))|"
    rf"correct\s+(?:option|answer|choice){_EMPH}\s*(?:is\s*:?|:)|"
    rf"choose|select|pick|(?P<say>i(?:'?d|\s+would|\s+will|'ll)\s+(?:say|go\s+with))(?=[\s*_]*\(?[a-h]\)?(?![\w'])))(?![\w']){_EMPH}"
    r"|\\boxed\s*\{(?:\\text\s*\{)?"  # "Answer - C"; "I'd say B" (a capital letter must follow); "\boxed{B}"
)
_MARKER_WORDS = ("answer", "correct", "choose", "select", "pick", "i'd", "id ", "i would", "i will", "i'll", "\\boxed")
_CAPITAL_AFTER_RE = re.compile(r"[\s*_]*\(?[A-H]")


def _marker_ok(text: str, m: re.Match[str]) -> bool:
    """"I'd say B" is a marker only when a capital letter follows (a later "I would say ..." never is)."""
    if m.start() and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_") and not m.group(0).startswith("\\"):
        return False  # "\b": the marker starts a word
    return not m.group("say") or _CAPITAL_AFTER_RE.match(text, m.end("say")) is not None
_OPTION_LINE_RE = re.compile(r"(?m)(?:^|(?<=\s))\(?([A-H])[.)]\s+(.+?)\s*(?=\s\(?[A-H][.)]\s|$)")
_TEMPLATE_RE = re.compile(r"(?i)\$\s*\{?\s*letter\s*\}?|<\s*letter\s*>|\[\s*letter\s*\]|\$[A-Z]\b")
# After a final-answer marker: the letter (any case, maybe "(B)" or "option B"), then a boundary.
_AFTER_MARKER_RE = re.compile(
    rf"\s*{_EMPH}(?:(?:option|choice|letter)\s+)?{_EMPH}\(?([A-Ha-h])\)?{_EMPH}"
    r"(?=$|[\s]*[.,;:!)\]\n}]|\s+[(\u2013\u2014-]|\s+(?:or|and|because|since|as|is|which|given|due)\b|\s+[a-z])"
)
_MORE_LETTERS_RE = re.compile(rf"\s*(?:,|/|&|\bor\b|\band\b)\s*{_EMPH}\(?([A-H])\)?{_EMPH}(?![{_WORD}])")
_LETTER_LIST_RE = re.compile(
    rf"{_EMPH}\(?[A-H]\)?{_EMPH}(?:\s*(?:,|/|&|\bor\b|\band\b)\s*{_EMPH}\(?[A-H]\)?{_EMPH})+\.?"
)
_BARE_RE = re.compile(rf"{_EMPH}\(?([A-Ha-h])\)?[.:)]?{_EMPH}")
_ANYWHERE_RE = re.compile(
    rf"(?i:option|choice)\s+\(?([A-H])\)?(?![{_WORD}])|\(([A-H])\)|(?m:^){_EMPH}([A-H])(?:[.):]){_EMPH}(?=\s|$)"
)
_ANYWHERE_STARTS = ("option", "choice", "(", "\n")  # every _ANYWHERE_RE match starts at one (or a line start)


def _anywhere_matches(region: str):
    """``_ANYWHERE_RE.finditer(region)``, matched only where a match can start (the scan tries every
    position and is several times slower on a long answer); the same matches in the same order."""
    lowered = region.lower()
    if len(lowered) != len(region) or "\u0131" in region:  # "İ", "ı": (?i) case rules beyond lower()
        yield from _ANYWHERE_RE.finditer(region)
        return
    starts = {0}
    for word in _ANYWHERE_STARTS:
        pos = lowered.find(word)
        while pos != -1:
            starts.add(pos + 1 if word == "\n" else pos)
            pos = lowered.find(word, pos + 1)
    last = 0
    for pos in sorted(starts):
        if pos >= last:
            m = _ANYWHERE_RE.match(region, pos)
            if m:
                yield m
                last = m.end()


_IS_CORRECT_RE = re.compile(  # "B is correct" (scanned only when such a word is in the text)
    rf"(?<![{_WORD}'])([A-H])\)?{_EMPH}\s+is\s+(?:the\s+)?(?:correct|right|best)\b"
)
_IS_CORRECT_HINTS = ("correct", "right", "best")
_ARTICLE_AFTER = re.compile(r"\s+[a-z]")  # "A normal ECG": the article, unless a connective follows
_CONNECTIVE_AFTER = re.compile(r"\s+(?:or|and|because|since|as|is|which|given|due)\b")
_LETTER_TOKEN_RE = re.compile(
    rf"(?<![{_WORD}'])\(?([A-H])\)?{_EMPH}(?![{_WORD}'])(?=$|[\s]*[.,;:!)\]\n]|\s+[(\u2013\u2014-]|\s+[a-z])"
)


def _is_article(region: str, m: re.Match[str]) -> bool:
    """"A normal ECG": an "A" followed by a lower-case word that is no connective is the article."""
    return (m.group(1) in "Aa" and _ARTICLE_AFTER.match(region, m.end()) is not None
            and _CONNECTIVE_AFTER.match(region, m.end()) is None)


def prompt_options(prompt: str) -> dict[str, str]:
    """The options a letter question lists ("A. text" or "(A) text", one or more a line), A first."""
    return dict(_prompt_options(prompt or ""))


@lru_cache(maxsize=1024)  # a subset's prompts repeat: read each once
def _prompt_options(prompt: str) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for m in _OPTION_LINE_RE.finditer(prompt):
        found.setdefault(m.group(1), m.group(2).strip(" ,;"))
    letters = "".join(sorted(found))
    if not letters or "ABCDEFGH"[:len(letters)] != letters:  # not a real A, B, C... listing
        return ()
    return tuple(found.items())


def explain_letter(text: str, letters: str, prompt: str = "") -> dict[str, Any]:
    """Strict letter reading of one response (see the module docstring)."""
    options = prompt_options(prompt)
    valid = "".join(letter for letter in letters if letter in options) if options else letters
    prep = statements.prepare(text, prompt)
    if prep.only_noise:
        return _only_noise(prep)
    clean = prep.clean
    cands = [Candidate(statements.KIND_ANSWER_LINE, *_marker_region(clean, m.end()), True)
             for m in statements.matches_at_words(_LETTER_MARKER_RE, prep.lowered, _MARKER_WORDS) if _marker_ok(clean, m)]
    cands += statements.candidates(clean, lowered=prep.lowered, answer_lines=False)
    cands.sort(key=lambda c: (c.start, c.end))

    def read(start: int, end: int, cand: Candidate | None = None) -> dict[str, Any]:
        after_marker = cand is not None and cand.binding
        return _read_letter(prep, start, end, after_marker, options, valid)

    option_texts = _normalized_options(prompt or "")

    def label_only(line: str, exp: dict[str, Any], start: int) -> bool:
        body = line.strip()
        return bool(_BARE_RE.fullmatch(body) or _LETTER_LINE_RE.match(body)
                    or normalize_option(body.strip("*_ ")) in option_texts)

    chosen = _choose_statement(prep, cands, read, label_only, lambda line: label_only(line, {}, 0))
    return _with_statement(prep, chosen, lambda: read(0, len(text)))


@lru_cache(maxsize=1024)
def _normalized_options(prompt: str) -> frozenset[str]:
    return frozenset(normalize_option(t) for _, t in _prompt_options(prompt))


_LETTER_WRAPPER_RE = re.compile(r"(?i)\$\s*\{?\s*letter\s*\}?\s*(?=\(\s*[A-H]\s*\))")
_DOLLAR_LETTER_RE = re.compile(r"\$([A-H])(?![\w])")
_LETTER_LINE_RE = re.compile(r"[*_]*\(?[A-H][.):][*_]*\s+\S")  # "B. Atrial fibrillation", "(C) Sinus rhythm"


def _marker_region(text: str, offset: int) -> tuple[int, int]:
    """After a final-answer marker: the rest of its line, or the next line when that is empty."""
    line_end = text.find("\n", offset + (1 if text[offset:offset + 1] == "\n" else 0))
    if not text[offset:line_end if line_end != -1 else None].strip():  # "Answer:\nB"
        nxt = text.find("\n", line_end + 1) if line_end != -1 else -1
        line_end = nxt
    return offset, (line_end if line_end != -1 else len(text))


def _read_letter(prep: Prepared, start: int, end: int, after_marker: bool, options: dict[str, str],
                 valid: str) -> dict[str, Any]:
    text, offset, region = prep.text, start, prep.clean[start:end]
    # "$LETTER(F)", "$G": the template wrapped around a real letter is that letter
    region = _LETTER_WRAPPER_RE.sub(lambda m: " " * len(m.group(0)), region)
    region = _DOLLAR_LETTER_RE.sub(lambda m: " " + m.group(1), region)
    if not after_marker:  # read as a whole: an echoed template names nothing, the rest may
        region = _TEMPLATE_RE.sub(lambda m: " " * len(m.group(0)), region)
    scope = LazyScope(region)
    template = _TEMPLATE_RE.search(region) or (re.fullmatch(r"[*_\s]*(X)[*_.\s]*", region) if "X" not in valid else None)
    if template:
        return _explanation(text[start:end], offset, [], [], f"the answer template was echoed ({template.group(0).strip()!r})")
    spans = _letter_spans(text, region, offset, after_marker, scope)
    if not any(not s["negated"] for s in spans):
        spans += _option_text_spans(text, region, offset, options, scope)
    chosen = sorted({s["label"] for s in spans if not s["negated"]})
    outside = [c for c in chosen if c not in valid]
    if len(chosen) == 1 and not outside:
        return _explanation(text[start:end], offset, spans, chosen, None)
    if outside:
        reason = f"letter {', '.join(outside)} is not an option ({', '.join(valid)})"
    elif len(chosen) > 1:
        reason = f"more than one answer: {', '.join(chosen)}"
    elif spans:
        reason = "every answer found is negated"
    else:
        reason = _no_value_reason(prep, region, "no answer letter" + (" after the final-answer marker" if after_marker else ""))
    return _explanation(text[start:end], offset, spans, [], reason)


def _letter_spans(text: str, region: str, offset: int, after_marker: bool,
                  scope: NegationScope | LazyScope) -> list[dict[str, Any]]:
    spans = []

    def add(pos: int, letter: str) -> None:
        spans.append(_span(text, offset + pos, offset + pos + 1, letter.upper(), SOURCE_LETTER, scope, offset))

    bare = _BARE_RE.fullmatch(region.strip())
    if bare:
        add(region.index(bare.group(1), len(region) - len(region.lstrip())), bare.group(1))
        return spans
    if _LETTER_LIST_RE.fullmatch(region.strip()):  # "A or C", "B, D": several letters, no answer
        for m in re.finditer(r"[A-H]", region):
            add(m.start(), m.group(0))
        return spans
    if after_marker:
        m = _AFTER_MARKER_RE.match(region)
        if m and not _is_article(region, m):
            add(m.start(1), m.group(1))
            pos = m.end()
            while (more := _MORE_LETTERS_RE.match(region, pos)):
                add(more.start(1), more.group(1))
                pos = more.end()
            return spans
        # no letter first ("Answer: not B, it is C"): any letter of the final-answer line, negation-aware
        for m in _LETTER_TOKEN_RE.finditer(region):
            if not _is_article(region, m):
                add(m.start(1), m.group(1))
        return spans
    for m in _anywhere_matches(region):
        group = next(g for g in (1, 2, 3) if m.group(g))
        add(m.start(group), m.group(group))
    if any(map(region.__contains__, _IS_CORRECT_HINTS)):
        for m in _IS_CORRECT_RE.finditer(region):
            add(m.start(1), m.group(1))
    return spans


@lru_cache(maxsize=1024)
def _options_by_text(options: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {normalize_option(t): letter for letter, t in options if normalize_option(t)}


def _option_text_spans(text: str, region: str, offset: int, options: dict[str, str],
                       scope: NegationScope | LazyScope) -> list[dict[str, Any]]:
    by_text = _options_by_text(tuple(options.items()))
    haystack = region.lower()
    spans = []
    for phrase in sorted(by_text, key=len, reverse=True):
        for start in _find_phrase(haystack, phrase):
            spans.append(_span(text, offset + start, offset + start + len(phrase), by_text[phrase],
                               SOURCE_OPTION_TEXT, scope, offset))
            haystack = haystack[:start] + " " * len(phrase) + haystack[start + len(phrase):]
    return spans


# --------------------------------------------------------------------------------------------
# ECG-QA
# --------------------------------------------------------------------------------------------

_WS_RE = re.compile(r"\s+")
_SPACE_RE = re.compile(r"\s")
# "no" is the answer when a clause ends or a pronoun follows ("No, it does not"), not in "no AF".
_NO_ANSWER_END_RE = re.compile(r"[*_\s]*(?:[.,;:!?)\n\u2013\u2014-]|$)|\s+(?:it|there|this|that|the\s+ecg|i)\b")
# Ways of saying the "not sure" option (matched only when it is an option).
NOT_SURE_SYNONYMS = ("i'm not sure", "i am not sure", "unsure", "indeterminate", "inconclusive", "cannot tell", "can't tell",
                     "don't know", "do not know", "cannot determine", "can't determine", "unable to determine",
                     "cannot be determined")
NOT_SURE = "not sure"
# "No form-related symptoms can be determined", "cannot be assessed", "no abnormality can be
# confirmed or excluded": the answer is that it cannot be told, the "not sure" option. "uncertain"
# alone also says so, but not in ECG-QA's own term "uncertain symptoms".
_NEITHER_RE = re.compile(r"\bneither\b(?=[*_]*\s*(?:[.;,:!()\n\u2013\u2014-]|$)|\s+of\s+(?:them|these|the\s+two)\b)"
                         r"|^[\s*_>#-]*neither\b(?=[^.;!?\n]*\bnor\b)")  # "Neither X nor Y." as the statement
_NOT_SURE_RE = re.compile(
    r"\b(?:can ?not|can't|could not|couldn't|unable to|impossible to|not possible to)\s+(?:be\s+)?(?:\w+ly\s+)?"
    r"(?:determined?|assess(?:ed)?|evaluated?|interpret(?:ed)?|conclude(?:d)?|confirm(?:ed)?\s+or\s+(?:exclude|rule)d?)\b"
    r"|\bno\b[^.;:!?]{0,80}?\bcan\s+be\s+(?:\w+ly\s+)?(?:determined|assessed|evaluated|interpreted|concluded"
    r"|confirmed\s+or\s+(?:excluded|ruled\s+out))\b"
    r"|\buncertain\b(?!\s+(?:symptoms?|features?|findings?|signs?))"
    # "does not allow reliable assessment of rhythm", "nondiagnostic", "uninterpretable": it cannot be told
    r"|\b(?:does|do|did)\s+not\s+(?:allow|permit|enable)\b[^.;!?]{0,40}?\b(?:assess|evaluat|interpret|determin|analy)"
)
# "Nondiagnostic.", "uninterpretable": not sure only when nothing else answers (not even a plain "no":
# "non-diagnostic and shows no definite diagnostic symptoms" is no)
_NONDIAGNOSTIC_RE = re.compile(r"\bnon-?diagnostic\b|\buninterpretable\b|\bnot\s+interpretable\b")


def normalize_option(option: str) -> str:
    """Strict option form: lower-cased, whitespace collapsed, a trailing period dropped."""
    return _WS_RE.sub(" ", option).strip().rstrip(".").strip().lower()


def strict_candidates(candidates: Iterable[str]) -> list[str]:
    """Normalised, de-duplicated, non-empty options, in their original order.

    The reference splits the options on every comma; strict mode joins the pieces of an option
    with a comma inside parentheses ("bigeminal pattern (unknown origin, supraventricular, or
    ventricular)") and drops the question's own qualifier ("including uncertain symptoms"), which
    the split turns into a pseudo-option no gold answer holds.
    """
    joined: list[str] = []
    for piece in candidates:
        if joined and joined[-1].count("(") > joined[-1].count(")"):
            joined[-1] += ", " + piece.strip()
        else:
            joined.append(piece)
    options = [normalize_option(c) for c in joined]
    return [c for c in dict.fromkeys(options) if c and not _QUALIFIER_RE.match(c)]


_QUALIFIER_RE = re.compile(r"(?:including|excluding)\s+uncertain\s+symptoms$")
_QUALIFIER_ANSWER_RE = re.compile(r"(?i)[\s*_>#-]*uncertain\s+symptoms?[\s*_.!]*")


def _find_phrase(haystack: str, phrase: str) -> list[int]:
    """Start offsets of ``phrase`` in ``haystack`` not touching a letter or digit on either side."""
    starts, start, size = [], haystack.find(phrase), len(phrase)
    while start != -1:
        before = haystack[start - 1] if start else " "
        after = haystack[start + size] if start + size < len(haystack) else " "
        if not before.isalnum() and not after.isalnum():
            starts.append(start)
        start = haystack.find(phrase, start + 1)
    return starts


def _is_negation(option: str) -> bool:
    """Options that are negations themselves ("no", "none", "not sure") are never negated."""
    scope = NegationScope.of(option + " x")
    return bool(scope.triggers) or option in ("none", "neither")


def explain_ecgqa(text: str, candidates: list[str], prompt: str = "") -> dict[str, Any]:
    """Strict ECG-QA reading of one response (see the module docstring)."""
    options = strict_candidates(candidates)
    prep = statements.prepare(text, prompt)
    if prep.only_noise:
        return _only_noise(prep)
    clean = prep.clean
    cands = statements.candidates(clean, lowered=prep.lowered)
    # A sentence that is only an option ("... skin preparation problems. Electrode problems.\n\n##
    # Explanation") is a verdict like a line that is only one.
    cands += [Candidate(statements.KIND_LABEL_LINE, a, b, False) for a, b in statements.short_sentences(clean)]
    # A line that opens with an option ("Yes, this ECG shows burst noise.", "No.") is a verdict: its
    # first sentence; so is the response's closing sentence when it opens with one.
    verdicts = [(a, b) for a, b in statements.lines_of(clean)]
    closing = statements.last_sentence(clean)
    if closing:
        verdicts.append(closing)
    option_re = _option_start_re(tuple(options))
    for a, b in verdicts:
        m = option_re.match(clean, a) or ("none" in options and _NEITHER_START_RE.match(clean, a))
        if m and (a, b) != closing:
            b = statements.sentence_end(clean, a, b)
        if m:
            cands.append(Candidate(statements.KIND_VERDICT, a, b, False))
    if any(_QUALIFIER_RE.match(normalize_option(c)) for c in candidates):
        # "Uncertain symptoms." alone answers with the question's qualifier, no option: it is the
        # answer (binding, like an empty answer line) and chooses nothing
        cands = [Candidate(c.kind, c.start, c.end, True) if _QUALIFIER_ANSWER_RE.fullmatch(clean, c.start, c.end)
                 else c for c in cands]
    cands.sort(key=lambda c: (c.start, c.end))

    memo: dict[tuple[int, int], dict[str, Any]] = {}

    def read(start: int, end: int, cand: Candidate | None = None) -> dict[str, Any]:
        if (start, end) not in memo:
            memo[start, end] = _read_ecgqa(prep, start, end, options)
        return memo[start, end]

    def label_only(line: str, exp: dict[str, Any], start: int) -> bool:
        return _leftover_is_connective(line, exp["spans"], start)

    chosen = _choose_statement(prep, cands, read, label_only, _few_words)
    if chosen is None:  # no explicit answer: the reasoning's own conclusion ("..., so this ECG shows X.")
        conclusion = statements.conclusion(clean)
        if conclusion is not None:
            exp = read(conclusion.start, conclusion.end)
            if exp["labels"]:
                chosen = (conclusion, exp)
    return _with_statement(prep, chosen, lambda: read(0, len(text)))


_NEITHER_START_RE = re.compile(r"(?i)[*_\s>#-]*neither\b(?=[^.;!?\n]*\bnor\b|[*_]*\s*(?:[.;,:!(\u2013\u2014-]|$))")


@lru_cache(maxsize=256)
def _option_start_re(options: tuple[str, ...]) -> re.Pattern[str]:
    """An option at the very start of a line or sentence, then punctuation or the end."""
    alternatives = "|".join(_phrase_regex(o) for o in sorted(options, key=len, reverse=True))
    return re.compile(rf"(?i)[*_\s>#-]*(?:{alternatives})[*_]*\s*(?:[,.;:!\u2013\u2014-]|$)" if options else r"(?!)", re.MULTILINE)


def _mark_full_option_lists(spans: list[dict[str, Any]], options: list[str], haystack: str, offset: int) -> None:
    """A run that names every option ("yes, no, or not sure") echoes the question: no answer."""
    found = sorted((s for s in spans if s["source"] == SOURCE_OPTION), key=lambda s: s["start"])
    run: list[dict[str, Any]] = []
    for span in found + [None]:
        if span is not None and run and _ECHO_GAP_RE.match(haystack[run[-1]["end"] - offset:span["start"] - offset]):
            run.append(span)
            continue
        if {s["label"] for s in run} >= set(options):
            for s in run:
                s.update(negated=True, trigger="an echo of the question's options", hypothetical=True)
        run = [span] if span is not None else []


@lru_cache(maxsize=1024)
def _option_re(option: str) -> re.Pattern[str]:
    """An option as a whole phrase; a word of four letters or more may differ by a plural "s"
    ("Electrode problems." names the option "electrodes problems")."""
    forms = [_option_words(option.split(" "))]
    located = _LOCATED_OPTION_RE.fullmatch(option)
    if located:  # "myocardial infarction in anteroseptal leads" is also "anteroseptal myocardial infarction"
        forms.append(_option_words([*located.group("where").split(" "), *located.group("what").split(" ")]))
    relative = _RELATIVE_OPTION_RE.fullmatch(option)
    if relative:  # "below the normal range" is also "below normal", "below normal limits"
        forms.append(re.escape(relative.group(1)) + r" (?:the )?normal(?: range| limits)?")
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(forms) + r")(?![a-z0-9])")


_LOCATED_OPTION_RE = re.compile(r"(?P<what>[a-z][a-z -]*?) in (?P<where>[a-z-]+(?: [a-z-]+)?) leads")
_RELATIVE_OPTION_RE = re.compile(r"(above|below|within) the normal range")


def _option_words(words: list[str]) -> str:
    out = []
    for word in words:
        if len(word) >= 4 and word.isalpha():
            stem = word[:-1] if word.endswith("s") and not word.endswith("ss") else word
            out.append(re.escape(stem) + "(?:s|es)?")
        else:
            out.append(re.escape(word))
    return " ".join(out)


def _read_ecgqa(prep: Prepared, start: int, end: int, options: list[str]) -> dict[str, Any]:
    text, offset, region = prep.text, start, prep.clean[start:end]
    haystack = lowered = _SPACE_RE.sub(" ", _lower_same_length(region))  # one-for-one, so offsets stay valid
    scope = NegationScope.of(region)
    spans = []
    for option in sorted(options, key=len, reverse=True):
        for pos, stop in [m.span() for m in _option_re(option).finditer(haystack)]:
            span = _span(text, offset + pos, offset + stop, option, SOURCE_OPTION, scope, offset)
            if _is_negation(option) and not span.get("hypothetical"):
                span.update(negated=False, trigger=None)
            if option == "no" and "yes" in options and not _NO_ANSWER_END_RE.match(haystack, stop):
                span.update(negated=True, trigger=f"{option!r} used as a word, not as the answer")
            spans.append(span)
            haystack = haystack[:pos] + " " * (stop - pos) + haystack[stop:]
    if NOT_SURE in options and not any(not s["negated"] for s in spans):
        for m in _NOT_SURE_RE.finditer(lowered):
            spans.append({"text": text[offset + m.start():offset + m.end()], "start": offset + m.start(),
                          "end": offset + m.end(), "label": NOT_SURE, "source": SOURCE_SYNONYM,
                          "negated": False, "trigger": None})
        for phrase in NOT_SURE_SYNONYMS:
            for pos in _find_phrase(haystack, phrase):
                spans.append({"text": text[offset + pos:offset + pos + len(phrase)], "start": offset + pos,
                              "end": offset + pos + len(phrase), "label": NOT_SURE, "source": SOURCE_SYNONYM,
                              "negated": False, "trigger": None})
        for t in scope.triggers:  # "AF cannot be excluded" neither affirms nor denies: not sure
            if t.unconfirmed:
                spans.append({"text": text[offset + t.start:offset + t.end], "start": offset + t.start,
                              "end": offset + t.end, "label": NOT_SURE, "source": SOURCE_SYNONYM,
                              "negated": False, "trigger": None})
    if "none" in options and not any(not s["negated"] for s in spans):
        for m in _NEITHER_RE.finditer(haystack):  # "Neither; the ECG is inconclusive": the option none
            spans.append({"text": text[offset + m.start():offset + m.end()], "start": offset + m.start(),
                          "end": offset + m.end(), "label": "none", "source": SOURCE_SYNONYM,
                          "negated": False, "trigger": None})
    if "yes" in options and "no" in options and not any(not s["negated"] for s in spans):
        first = next((t for t in scope.triggers if t.kind != "prefix" and not t.unconfirmed and not t.hypothetical), None)
        if first is not None:  # "It does not." / "There is no AF." answer the yes/no question
            spans.append({"text": text[offset + first.start:offset + first.end], "start": offset + first.start,
                          "end": offset + first.end, "label": "no", "source": SOURCE_SYNONYM,
                          "negated": False, "trigger": first.text})
    if NOT_SURE in options and not any(not s["negated"] for s in spans):
        for m in _NONDIAGNOSTIC_RE.finditer(lowered):
            spans.append({"text": text[offset + m.start():offset + m.end()], "start": offset + m.start(),
                          "end": offset + m.end(), "label": NOT_SURE, "source": SOURCE_SYNONYM,
                          "negated": False, "trigger": None})
    if len(options) >= OPTION_ECHO_MIN:
        _mark_full_option_lists(spans, options, haystack, offset)
    chosen = {s["label"] for s in spans if not s["negated"]}
    labels = [option for option in options if option in chosen]
    reason = ("every option found is negated" if spans
              else _no_value_reason(prep, region, "no option of the question found"))
    return _explanation(text[offset:end], offset, spans, labels, reason)
