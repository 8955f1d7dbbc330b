"""What differs between kinds of subset is looked up, not branched on: the facts in
``subsets.KINDS``, the behaviour in ``scoring.answers.ANSWER_SPACES``.

The scan below fails on a comparison of a subset's kind with a kind's name (``sub.kind == "letter"``,
``kind in ("report", "arena")``) anywhere in the package code outside the two tables.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
from pathlib import Path

import pytest

from pulse_tasks.data.subsets import AUTO_SCORED, JUDGED, KINDS, SUBSETS
from pulse_tasks.results import runs
from pulse_tasks.scoring import answers, metrics

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pulse_tasks", "pulse_models", "pulse_app", "training", "yaml_tasks")
TABLES = {ROOT / "pulse_tasks/data/subsets.py", ROOT / "pulse_tasks/scoring/answers.py"}


def _names_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (isinstance(node, ast.Name) and node.id == "kind")


def _kind_names(node: ast.AST) -> set[str]:
    """The kinds' names a comparison operand spells out (a string, or a tuple/list/set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)} & KINDS.keys()


def kind_branches(source: str) -> list[int]:
    """Lines of ``source`` that compare a ``kind`` with the name of a subset kind."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_kind(o) for o in operands) and any(_kind_names(o) for o in operands):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("source, found", [
    ('if sub.kind == "letter":\n    pass', [1]),
    ('x = kind in ("report", "arena")', [1]),
    ('x = spec.kind != "multilabel"', [1]),
    ('x = source.kind == "hub"', []),  # a data source's kind, not a subset's
    ('x = sub.config == "arena"', []),
    ('x = sub.rule.judged', []),
])
def test_the_scan_finds_kind_branches(source: str, found: list[int]) -> None:
    assert kind_branches(source) == found


def test_no_module_branches_on_a_subset_kind() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path not in TABLES:
                offenders += [f"{path.relative_to(ROOT)}:{line}" for line in kind_branches(path.read_text())]
    assert not offenders, f"look the kind up in subsets.KINDS or scoring.answers.ANSWER_SPACES: {offenders}"


def test_every_kind_has_its_facts_and_its_behaviour() -> None:
    assert set(answers.ANSWER_SPACES) == set(KINDS) == {s.kind for s in SUBSETS}
    for sub in SUBSETS:
        space = answers.answer_space(sub)
        assert (space.score is None) == sub.judged == (space.example is None)


@pytest.mark.parametrize("sub", AUTO_SCORED, ids=lambda s: s.config)
def test_synthetic_items_score_right_when_answered_right_and_guesses_stay_in_the_space(sub) -> None:
    rng = random.Random(5)
    space = answers.answer_space(sub)
    for i in range(20):
        doc = {"id": f"x{i}", "subset": sub.config, "gold_options": [], **space.example(sub, rng)}
        right = metrics.score_item(sub, doc, space.respond(sub, doc, rng, True))
        if right["status"] == "ok" and right["explain"]["labels"]:  # the letter responder may decline
            assert right["paper" if sub.rule.family == "multilabel" else "paper_credit"] in (
                right["gold"], 1.0), right
        guess = metrics.score_item(sub, doc, space.guess(sub, doc["questions"][0], rng))
        assert not guess["invalid"], (sub.config, guess)


def test_judged_kinds_guess_and_answer_in_free_text() -> None:
    rng = random.Random(0)
    for sub in JUDGED:
        assert answers.guess(sub, "What does this ECG show?", rng) == answers.FREE_TEXT_GUESS
        reply = answers.answer_space(sub).respond(sub, {}, rng, True)
        assert len(reply if isinstance(reply, list) else [reply]) == sub.rule.turns


def test_synthetic_runs_are_what_they_were() -> None:
    """The fixtures of the report, compare and leaderboard tests did not move with the table: each
    item's id, gold and judge score and each response, as the per-kind code before it made them."""
    records, responses = runs.synthetic_run(seed=3, scale=0.02)
    gold = {k: [(r["id"], r.get("gold"), r.get("score")) for r in v] for k, v in records.items()}
    digest = hashlib.sha256(json.dumps([gold, responses], sort_keys=True).encode()).hexdigest()
    assert digest == "29989f732cb44b85202194c83216c0af0b9abfcae09802d16d1b98c983b8fb90"
