"""`ecgbench compare`: paired differences, McNemar rows, verdicts and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from pulse_app import cli
from pulse_tasks.results import compare, runs
from pulse_tasks.scoring.strict import STRICT_VERSION

SCALE = 0.05  # ~560 items: fast, and large enough for a real skill gap to show


def _write(root: Path, name: str, seed: int, skill: float, **kwargs) -> Path:
    recs, resps = runs.synthetic_run(seed=seed, skill=skill, scale=SCALE, item_seed=0)
    for subset in kwargs.pop("drop", ()):
        recs.pop(subset)
    edit = kwargs.pop("edit", None)
    if edit:
        edit(recs)
    return runs.write_run(root, name, recs, resps, **kwargs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    return _write(root, "weak", 1, 0.4), _write(root, "strong", 2, 0.9)


def test_clear_skill_gap_is_detected_in_favour_of_b(pair: tuple[Path, Path]) -> None:
    a, b = (runs.load_run(p) for p in pair)
    result = compare.compare_runs(a, b, resamples=300, seed=0)
    rows = {(r["subset"], r["mode"], r["metric"]): r for r in result["rows"]}
    assert rows[("ptb-test", "paper", "f1")]["verdict"].startswith("B better")
    hl = rows[("ptb-test", "strict", "hamming_loss")]
    assert hl["diff"] < 0 and hl["verdict"].startswith("B better")  # lower HL is better
    assert rows[("ptb-test-report", "judge", "score")]["diff"] > 0
    assert not any(k[2].startswith("f1:") for k in rows)  # per-class rows are left out


def test_mcnemar_row_is_the_exact_binomial_on_discordant_items(pair: tuple[Path, Path]) -> None:
    a, b = (runs.load_run(p) for p in pair)
    result = compare.compare_runs(a, b, resamples=100, seed=0)
    row = next(r for r in result["rows"] if (r["subset"], r["mode"]) == ("g12-test-no-cot", "strict"))
    assert row["test"] == "McNemar exact"
    ra = {r["id"]: r["strict_correct"] for r in a.subsets["g12-test-no-cot"].records}
    rb = {r["id"]: r["strict_correct"] for r in b.subsets["g12-test-no-cot"].records}
    a_only = sum(ra[i] and not rb[i] for i in ra)
    b_only = sum(rb[i] and not ra[i] for i in ra)
    assert tuple(row["discordant"]) == (a_only, b_only)
    assert row["p_value"] == pytest.approx(binomtest(b_only, a_only + b_only, 0.5).pvalue)
    assert row["diff"] == pytest.approx(100 * (b_only - a_only) / len(ra))


def test_a_run_against_itself_shows_no_difference(pair: tuple[Path, Path]) -> None:
    a = runs.load_run(pair[0])
    result = compare.compare_runs(a, a, resamples=100, seed=0)
    for row in result["rows"]:
        assert row["diff"] in (0.0, None)
        assert row["verdict"].startswith("no detectable difference") or row["diff"] is None


def test_verdict_directions() -> None:
    assert compare.verdict("accuracy", 3.0, 0.01).startswith("B better")
    assert compare.verdict("accuracy", -3.0, 0.01).startswith("A better")
    assert compare.verdict("hamming_loss", 3.0, 0.01).startswith("A better")
    assert compare.verdict("hamming_loss", -3.0, 0.01).startswith("B better")
    assert compare.verdict("auc", 3.0, 0.2).startswith("no detectable difference")
    assert compare.verdict("auc", None, None) == "undefined on these items"


@pytest.mark.parametrize("change, expected", [
    ({"data_source": "sha256:local-copy"}, "data source differs"),
    ({"version": 2}, "task/scoring version differs"),
    ({"strict_version": 1}, f"ptb-test: strict scoring version differs (A {STRICT_VERSION}, B 1+{STRICT_VERSION})"),
    ({"edit": lambda recs: recs.__setitem__("mmmu-ecg", recs["mmmu-ecg"][:-2])}, "mmmu-ecg: item sets differ: 2 only in A"),
    ({"edit": lambda recs: [r["judge"].__setitem__("rubric_sha", "ffff") for r in recs["arena"]]},
     "arena: judge or rubric differs"),
])
def test_refuses_incomparable_runs_saying_which(tmp_path: Path, change: dict, expected: str) -> None:
    a = runs.load_run(_write(tmp_path, "a", 1, 0.5))
    b = runs.load_run(_write(tmp_path, "b", 2, 0.5, **change))
    with pytest.raises(compare.IncomparableRuns) as info:
        compare.compare_runs(a, b, resamples=10)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_runs_without_samples_are_refused(tmp_path: Path) -> None:
    pa = _write(tmp_path, "a", 1, 0.5, drop=("arena",))
    pb = _write(tmp_path, "b", 2, 0.5, drop=("arena",))
    next(pb.parent.glob("*_samples_ecgbench_csn.jsonl")).unlink()
    with pytest.raises(compare.IncomparableRuns, match="csn-test-no-cot: run B has no samples file"):
        compare.compare_runs(runs.load_run(pa), runs.load_run(pb), resamples=10)


def test_subsets_in_one_run_only_are_listed_not_compared(tmp_path: Path) -> None:
    a = runs.load_run(_write(tmp_path, "a", 1, 0.5, drop=("arena",)))
    b = runs.load_run(_write(tmp_path, "b", 2, 0.5))
    result = compare.compare_runs(a, b, resamples=10)
    assert result["only_in"] == {"A": [], "B": ["arena"]}
    assert all(r["subset"] != "arena" for r in result["rows"])


def test_cli_compare_exit_codes(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = pair
    assert cli.main(["compare", str(a.parent), str(b), "--resamples", "50", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"]["name"] and data["rows"]
    other = _write(tmp_path, "c", 3, 0.5, data_source="sha256:other")
    assert cli.main(["compare", str(a), str(other), "--resamples", "10"]) == compare.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refusing to compare" in err and "data source differs" in err
    assert cli.main(["compare", str(a), str(b), "--resamples", "20"]) == 0
    assert "| subset | mode | metric |" in capsys.readouterr().out
