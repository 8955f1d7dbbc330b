"""Strict mode's vocabulary scan (``strict._Pass``) runs an alternation of only the terms whose
mandatory literals a text holds; it must find exactly what the one alternation of all terms finds
with ``finditer``: the same spans and, where terms compete, the same term.

Checked on every real answer the benchmark ships (bench/data: a fine-tuned model's code15
answers, large models' ECG-QA reasoning), each with every label vocabulary, and on hand-made texts
where terms overlap or start together.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pulse_tasks.data.subsets import AUTO_SCORED
from pulse_tasks.scoring import strict

DATA = Path(__file__).resolve().parents[1] / "bench" / "data"


def reference_scan(scan: strict._Pass, masked: str) -> list[tuple[int, int, tuple]]:
    """What one alternation of every term finds (the scan's meaning)."""
    pattern = scan._compile(tuple(range(len(scan.terms))))
    return [(m.start(), m.end(), scan.terms[m.lastindex - 1]) for m in pattern.finditer(masked)]


def found(scan: strict._Pass, masked: str) -> list[tuple[int, int, tuple]]:
    return [(m.start(), m.end(), term) for m, term in scan.scan(masked)]


def _real_texts() -> list[str]:
    texts = []
    for name in ("fastvlm-code15-test.jsonl.gz", "llm-ecgqa-answers.jsonl.gz"):
        with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return texts


VOCABULARIES = sorted({s.labels for s in AUTO_SCORED if s.labels})


@pytest.mark.parametrize("labels", VOCABULARIES, ids=lambda labels: labels[1])
def test_the_narrowed_scan_finds_what_one_alternation_finds_on_real_answers(labels) -> None:
    passes = strict._vocabulary(labels, ())
    texts = _real_texts()
    assert len(texts) > 1000
    checked = 0
    for text in texts:
        masked = strict._lower_same_length(text)
        for scan in passes:
            expected = reference_scan(scan, masked)
            assert found(scan, masked) == expected, text[:200]
            checked += len(expected)
    assert checked > 500  # the answers do name these findings


def test_competing_terms_resolve_as_in_the_alternation() -> None:
    # terms of different literals ("bundle", "block", "degree") that overlap and start together: the
    # earlier term wins at the same start, and the next match starts after the chosen one
    terms = [("RBBB", "synonym", r"right\s+bundle\s+branch\s+block"),
             ("CD", "synonym", r"right\s+bundle"),
             ("AVB", "synonym", r"(?:first|1st)[\s-]+degree\s+(?:av\s+)?block"),
             ("X", "synonym", r"block"),
             ("Y", "synonym", r"degree")]
    scan = strict._Pass(terms)
    for text in ("right bundle branch block and right bundle; first degree av block, block",
                 "degree block right bundle", "right bundle branch blocks", "no finding at all",
                 "1st-degree block right  bundle branch  block"):
        assert found(scan, text) == reference_scan(scan, text)
    assert [t[2][0] for t in found(scan, "right bundle branch block, right bundle")] == ["RBBB", "CD"]


def test_a_scan_with_no_group_present_finds_nothing() -> None:
    scan = strict._Pass([("A", "synonym", r"alpha"), ("B", "synonym", r"beta")])
    assert found(scan, "gamma delta") == []
    assert found(scan, "beta alpha") == reference_scan(scan, "beta alpha") != []
