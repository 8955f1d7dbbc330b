"""`ecgbench submit` / `ecgbench validate`: schema, completeness, hash, recomputed metrics, tampering."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pulse_app import cli
from pulse_tasks.data.subsets import FULL_SIZE, SUBSETS
from pulse_tasks.results import runs, submission
from pulse_tasks.scoring.strict import STRICT_VERSION

RESAMPLES = 30  # intervals are not what these tests check; keep them cheap


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete synthetic run: all nine subsets at their published sizes."""
    recs, resps = runs.synthetic_run(seed=3, skill=0.7, scale=1.0)
    return runs.write_run(tmp_path_factory.mktemp("full"), "full-model", recs, resps)


@pytest.fixture(scope="module")
def full_doc(full_run: Path) -> dict:
    return submission.build_submission(runs.load_run(full_run), "Full Model", attach_predictions=True,
                                       resamples=RESAMPLES, seed=0, created="2026-01-01T00:00:00Z")


def test_complete_submission_is_valid_and_carries_identity(full_doc: dict) -> None:
    errors, notes = submission.validate_submission(full_doc)
    assert errors == []
    assert full_doc["complete"] is True and full_doc["partial_reasons"] == []
    assert set(full_doc["subsets"]) == {s.config for s in SUBSETS}
    assert sum(e["n"] for e in full_doc["subsets"].values()) == FULL_SIZE
    assert len(full_doc["predictions"]) == FULL_SIZE
    assert full_doc["model"]["name"] == "Full Model" and full_doc["model"]["model_args"] == "pretrained=full-model"
    assert full_doc["judge"]["arena"]["rubric_sha"] == runs.JUDGE_IDENTITY["rubric_sha"]
    assert full_doc["tasks"]["ptb-test"] == {"task": "ecgbench_ptb", "version": 1,
                                             "data_source": "hub:PULSE-ECG/ECGBench@main",
                                             "strict_version": STRICT_VERSION}
    assert full_doc["scoring"]["strict_version"] == STRICT_VERSION
    assert full_doc["lmms_eval_version"] == "main@00000000"
    assert any(n.startswith("predictions verified") for n in notes)
    assert not any("PARTIAL" in n for n in notes)


def test_tampered_metric_is_rejected_with_the_reason(full_doc: dict) -> None:
    doc = copy.deepcopy(full_doc)
    est = doc["subsets"]["cpsc-test"]["metrics"]["strict"]["f1"]
    est["value"] += 5.0
    est["hi"] += 5.0  # keep it inside its interval: only recomputation can catch it
    errors, _ = submission.validate_submission(doc)
    assert any(e.startswith("cpsc-test strict f1: submitted") for e in errors), errors


def test_mixed_strict_versions_are_invalid(full_doc: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = copy.deepcopy(full_doc)
    doc["tasks"]["ptb-test"]["strict_version"] = STRICT_VERSION - 1
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert cli.main(["validate", str(path)]) == submission.EXIT_INVALID
    assert f"ptb-test: strict scoring version {STRICT_VERSION - 1}, the submission's is {STRICT_VERSION}" \
        in capsys.readouterr().err
    old = copy.deepcopy(full_doc)  # records of an older scorer under a newer declared version
    next(i for i in old["predictions"] if i["subset"] == "cpsc-test")["record"].pop("strict_version")
    errors, _ = submission.validate_submission(old)
    assert f"cpsc-test: attached records scored with strict version 1, the submission's is {STRICT_VERSION}" in errors


def test_tampered_prediction_breaks_the_hash(full_doc: dict) -> None:
    doc = copy.deepcopy(full_doc)
    item = next(i for i in doc["predictions"] if i["subset"] == "mmmu-ecg" and not i["record"]["strict_correct"])
    item["record"]["strict_correct"] = True
    errors, _ = submission.validate_submission(doc)
    assert "predictions do not match predictions_sha256 (edited after submission?)" in errors
    # re-hashing the edited predictions does not help: the metrics no longer follow from them
    doc["predictions_sha256"] = submission.predictions_sha256(doc["predictions"])
    errors, _ = submission.validate_submission(doc)
    assert any(e.startswith("mmmu-ecg strict accuracy: submitted") for e in errors), errors


def test_dropped_prediction_is_caught(full_doc: dict) -> None:
    doc = copy.deepcopy(full_doc)
    doc["predictions"] = [i for i in doc["predictions"] if i["id"] != "arena-00000"]
    doc["predictions_sha256"] = submission.predictions_sha256(doc["predictions"])
    errors, _ = submission.validate_submission(doc)
    assert any("arena: submitted n=50, 49 predictions attached" in e for e in errors), errors


def test_value_outside_its_interval_is_rejected(full_doc: dict) -> None:
    doc = copy.deepcopy(full_doc)
    doc.pop("predictions")
    doc["subsets"]["g12-test-no-cot"]["metrics"]["paper"]["accuracy"]["value"] = 101.0
    errors, _ = submission.validate_submission(doc)
    assert any("g12-test-no-cot paper accuracy: value 101.0 outside its interval" in e for e in errors)


def test_without_predictions_the_hash_cannot_be_checked(full_doc: dict) -> None:
    doc = copy.deepcopy(full_doc)
    doc.pop("predictions")
    errors, notes = submission.validate_submission(doc)
    assert errors == []
    assert "predictions not attached: hash not verified, metrics not recomputed" in notes


def test_partial_submission_is_marked_and_must_say_so(tmp_path: Path) -> None:
    recs, resps = runs.synthetic_run(seed=1, scale=0.01)
    del recs["arena"]
    run = runs.load_run(runs.write_run(tmp_path, "m", recs, resps))
    doc = submission.build_submission(run, attach_predictions=True, resamples=10)
    assert doc["complete"] is False
    assert "arena: missing" in doc["partial_reasons"]
    assert "ptb-test: 21 of 2082 items" in doc["partial_reasons"]
    errors, notes = submission.validate_submission(doc)
    assert errors == [] and any(n.startswith("PARTIAL submission: arena: missing") for n in notes)
    doc["complete"] = True  # a partial run claiming to be complete
    errors, _ = submission.validate_submission(doc)
    assert any(e.startswith("'complete' is True but: arena: missing") for e in errors)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.pop("judge"), "$: missing 'judge'"),
    (lambda d: d.__setitem__("schema_version", "ecgbench-submission-v0"), "$.schema_version: must be"),
    (lambda d: d["subsets"].__setitem__("ptb-tset", d["subsets"]["ptb-test"]), "key 'ptb-tset'"),
    (lambda d: d.__setitem__("predictions_sha256", "abc"), "$.predictions_sha256: 'abc' does not match"),
    (lambda d: d["subsets"]["mmmu-ecg"].__setitem__("n", "200"), "$.subsets.mmmu-ecg.n: expected integer"),
])
def test_builtin_schema_checker_rejects_malformed_documents(full_doc: dict, edit, expected: str) -> None:
    doc = copy.deepcopy(full_doc)
    doc.pop("predictions")
    edit(doc)
    errors = submission.schema_errors(doc)
    assert any(expected in e for e in errors), errors


def test_schema_file_is_packaged_and_describes_v1() -> None:
    s = submission.schema()
    assert s["properties"]["schema_version"]["const"] == submission.SCHEMA_VERSION
    assert s["$defs"]["subset_name"]["enum"] == [x.config for x in SUBSETS]


def test_cli_submit_and_validate_round_trip(full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "submission.json"
    assert cli.main(["submit", str(full_run), "--out", str(out), "--attach-predictions", "--resamples", "20"]) == 0
    assert "complete" in capsys.readouterr().out
    assert cli.main(["validate", str(out), "--require-complete"]) == 0
    assert "valid:" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    doc["subsets"]["ecgqa-test"]["counts"]["invalid"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    assert cli.main(["validate", str(tampered)]) == submission.EXIT_INVALID
    assert "ecgqa-test count invalid: submitted" in capsys.readouterr().err


def test_cli_validate_unreadable_and_submit_without_samples(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["validate", str(bad)]) == submission.EXIT_INPUT_ERROR
    recs, resps = runs.synthetic_run(seed=1, scale=0.01)
    path = runs.write_run(tmp_path, "m", recs, resps)
    next(path.parent.glob("*_samples_ecgbench_g12.jsonl")).unlink()
    assert cli.main(["submit", str(path), "--out", str(tmp_path / "s.json")]) == submission.EXIT_INPUT_ERROR
    assert "no samples file for g12-test-no-cot" in capsys.readouterr().err
