"""The nine ECGBench subsets: names, answer spaces and sizes, in one table.

Every other module (data loading, prompts, parsing, metrics, the YAML tasks, the report) looks
subsets up here instead of repeating names, label sets or counts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["multilabel", "letter", "ecgqa", "report", "arena"]
Family = Literal["accuracy", "multilabel", "judge"]


@dataclass(frozen=True)
class KindRule:
    """How the subsets of one kind are scored, aggregated and tabled: every branch on a subset's
    kind reads this table instead of listing kinds.

    ``judged``: scored by the LLM judge (``pulse_tasks.scoring.judge``: one score, no paper/strict modes,
    judge records) rather than by parsing (``pulse_tasks.scoring.metrics``: scoring records in both modes);
    ``family``: how the corpus metrics are computed from the per-item records (``pulse_tasks.scoring.bootstrap``:
    mean credit, multi-label F1/AUC/HL, mean judge score over judged items); ``metrics``: the
    corpus metrics (the report's and the board's columns, per mode); ``criteria``: the judge's
    criteria as lmms-eval metric names; ``turns``: questions per item; ``gold_options``: the gold
    answer is a set of the options the question lists (its conversation's answer is a list);
    ``qa_turns``: the conversation is a list of {question, answer} turns (not LLaVA's from/value).
    The behaviour of each kind (scoring, guessing, synthetic answers) is the table
    ``pulse_tasks.scoring.answers.ANSWER_SPACES``, keyed by the same kinds.
    """

    kind: str
    judged: bool
    family: Family
    metrics: tuple[str, ...]
    criteria: tuple[str, ...] = ()
    turns: int = 1
    gold_options: bool = False
    qa_turns: bool = False


KINDS: dict[str, KindRule] = {rule.kind: rule for rule in (
    KindRule("multilabel", False, "multilabel", ("auc", "f1", "hamming_loss")),
    KindRule("letter", False, "accuracy", ("accuracy",)),
    KindRule("ecgqa", False, "accuracy", ("accuracy",), gold_options=True),
    KindRule("report", True, "judge", ("score",), ("diagnosis", "waveform", "rhythm")),
    KindRule("arena", True, "judge", ("score",), ("accuracy", "completeness", "instruction_adherence"), turns=2,
             qa_turns=True),
)}

HUB_DATASET = "PULSE-ECG/ECGBench"  # the public home of the benchmark (parquet, one config a subset)

# The sentence that closes every ECG-QA question of the reference data (the options come before it).
ECGQA_TAIL = "Only answer based on the given Options without any explanation."

# Letter answer spaces: csn/g12 offer up to eight options, MMMU-ECG four (reference scripts).
LETTERS_8 = "ABCDEFGH"
LETTERS_4 = "ABCD"


@dataclass(frozen=True)
class Subset:
    """One ECGBench subset as the paper scores it."""

    config: str  # hub config name, e.g. "ptb-test"; also the name on the CLI
    task: str  # lmms-eval task name, e.g. "ecgbench_ptb"
    kind: Kind  # how answers are parsed and scored
    n_items: int  # size of the published subset (the reference skips runs of any other size)
    domain: Literal["in", "out"]  # in-domain (ECGInstruct sources) or out-of-domain
    labels: tuple[str, ...] = field(default=())  # multilabel: the label vocabulary
    letters: str = ""  # letter subsets: the option letters
    title: str = ""  # column title in the paper's tables

    @property
    def rule(self) -> KindRule:
        """How this subset's kind is scored (``KINDS``)."""
        return KINDS[self.kind]

    @property
    def judged(self) -> bool:
        """Scored by the LLM judge (report, arena), not by parsing."""
        return KINDS[self.kind].judged


SUBSETS: tuple[Subset, ...] = (
    Subset("ptb-test", "ecgbench_ptb", "multilabel", 2082, "in",
           labels=("NORM", "MI", "STTC", "CD", "HYP"), title="PTB-XL"),
    Subset("ptb-test-report", "ecgbench_ptb_report", "report", 500, "in", title="PTB-XL Report"),
    # code15's gold is NORM or ABNORMAL, optionally followed by the six specific labels.
    Subset("code15-test", "ecgbench_code15", "multilabel", 1400, "in",
           labels=("NORM", "ABNORMAL", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"), title="CODE-15%"),
    Subset("ecgqa-test", "ecgbench_ecgqa", "ecgqa", 1317, "in", title="ECG-QA"),
    Subset("cpsc-test", "ecgbench_cpsc", "multilabel", 2061, "out",
           labels=("NORM", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"), title="CPSC 2018"),
    Subset("csn-test-no-cot", "ecgbench_csn", "letter", 1611, "out", letters=LETTERS_8, title="CSN"),
    Subset("g12-test-no-cot", "ecgbench_g12", "letter", 2026, "out", letters=LETTERS_8, title="G12EC"),
    Subset("mmmu-ecg", "ecgbench_mmmu", "letter", 200, "out", letters=LETTERS_4, title="MMMU ECG"),
    Subset("arena", "ecgbench_arena", "arena", 50, "out", title="ECG Arena"),
)

BY_CONFIG: dict[str, Subset] = {s.config: s for s in SUBSETS}
BY_TASK: dict[str, Subset] = {s.task: s for s in SUBSETS}
JUDGED = tuple(s for s in SUBSETS if s.judged)
AUTO_SCORED = tuple(s for s in SUBSETS if not s.judged)
FULL_SIZE = sum(s.n_items for s in SUBSETS)  # 11,247 items


class UnknownSubsetError(ValueError):
    """A subset name that is neither a hub config nor a task name."""


def get_subset(name: str) -> Subset:
    """Look a subset up by hub config name ("ptb-test") or task name ("ecgbench_ptb").

    A typo raises UnknownSubsetError naming the closest valid names.
    """
    if name in BY_CONFIG:
        return BY_CONFIG[name]
    if name in BY_TASK:
        return BY_TASK[name]
    valid = list(BY_CONFIG) + list(BY_TASK)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownSubsetError(
        f"unknown ECGBench subset {name!r}.{hint} Valid subsets: {', '.join(BY_CONFIG)}."
    )
