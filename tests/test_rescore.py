"""`ecgbench score`: both prediction formats, id matching and every kind of bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pulse_app import cli
from pulse_tasks.scoring import metrics, rescore

MMMU_GOLD = "ABCDA"


def mmmu_docs() -> list[dict]:
    return [{"id": f"m{i}", "subset": "mmmu-ecg", "questions": ["Which? A. a B. b C. c D. d"],
             "answers": [g], "gold_options": []} for i, g in enumerate(MMMU_GOLD)]


def ptb_docs() -> list[dict]:
    return [{"id": f"p{i}", "subset": "ptb-test", "questions": ["Labels?"], "answers": [g],
             "gold_options": []} for i, g in enumerate(["NORM", "MI; STTC", "CD"])]


@pytest.fixture
def loader(monkeypatch):
    """Inject normalized records instead of reading a data folder."""
    data = {"mmmu-ecg": mmmu_docs(), "ptb-test": ptb_docs()}
    monkeypatch.setattr(rescore, "load_docs", lambda subset, where: data[subset.config])
    return data


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def lmms_line(doc_id: int, response: object, doc: dict | None = None, record: dict | None = None) -> dict:
    line = {"doc_id": doc_id, "target": "x", "resps": [[response]], "filtered_resps": [response]}
    if doc is not None:
        line["doc"] = doc
    if record is not None:
        line.update(accuracy_paper=record, accuracy_strict=record)
    return line


def score_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(["score", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


# ------------------------------------------------------------------------ formats


def test_lmms_eval_samples_matched_by_record_id(loader, tmp_path, capsys):
    docs = loader["mmmu-ecg"]
    answers = ["A", "Answer: B", "The correct option is D", "I cannot tell", "A."]
    # lines out of order and with misleading doc_ids: the id in our records wins
    rows = [lmms_line(99 - i, answers[i], record=metrics.score_item("mmmu-ecg", docs[i], "x"))
            for i in reversed(range(5))]
    path = write_jsonl(tmp_path / "samples.jsonl", rows)
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--data", "d", "--predictions", str(path))
    assert code == 0, err
    # right, right, wrong, unparsed (1/4), right
    assert result["paper"]["accuracy"] == pytest.approx(100 * 3.25 / 5)
    assert result["strict"]["accuracy"] == pytest.approx(60.0)
    assert (result["n"], result["unparsed"], result["invalid"], result["missing"]) == (5, 1, 1, 0)
    assert result["subset"] == "mmmu-ecg" and result["source"]["format"] == "lmms-eval"


def test_lmms_eval_samples_by_doc_id_order_and_doc(loader, tmp_path, capsys):
    rows = [lmms_line(2, "CD"), lmms_line(0, "NORM"), lmms_line(1, "MI and STTC", doc={"id": "p1"})]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    code, result, _ = score_cli(capsys, "--subset", "ecgbench_ptb", "--predictions", str(path))
    assert code == 0
    assert result["paper"] == {"auc": 100.0, "f1": 100.0, "hamming_loss": 0.0}
    assert result["per_class_f1"]["paper"] == {label: 100.0 for label in ("NORM", "MI", "STTC", "CD")}
    assert result["per_class_f1"]["strict"]["HYP"] is None


@pytest.mark.parametrize("id_key, text_key", [("question_id", "text"), ("id", "response")])
def test_reference_output_formats(loader, tmp_path, capsys, id_key, text_key):
    rows = [{id_key: f"m{i}", "prompt": "p", text_key: g} for i, g in enumerate(MMMU_GOLD)]
    path = write_jsonl(tmp_path / "ref.jsonl", rows)
    code, result, _ = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 0 and result["paper"]["accuracy"] == 100.0 and result["source"]["format"] == "reference"


def test_json_array_and_records_out(loader, tmp_path, capsys):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps([{"id": f"m{i}", "response": g} for i, g in enumerate(MMMU_GOLD)]))
    out = tmp_path / "records.jsonl"
    code, result, _ = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path), "--records-out", str(out))
    assert code == 0 and result["strict"]["accuracy"] == 100.0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"m{i}" for i in range(5)]


# ------------------------------------------------------------------------ imperfect but usable input


def test_missing_predictions_listed_and_scored_wrong(loader, tmp_path, capsys):
    path = write_jsonl(tmp_path / "ref.jsonl", [{"id": "m0", "response": "A"}, {"id": "m1", "response": "B"}])
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 0
    assert "3 of 5 items have no prediction" in err and "m2, m3, m4" in err
    assert result["missing"] == 3 and result["missing_ids"] == ["m2", "m3", "m4"]
    assert result["strict"]["accuracy"] == pytest.approx(40.0)
    assert result["paper"]["accuracy"] == pytest.approx(100 * 2.75 / 5)  # missing = unparsed in paper


def test_empty_and_non_utf8_responses_are_invalid(loader, tmp_path, capsys):
    path = tmp_path / "ref.jsonl"
    lines = [b'{"id": "m0", "response": "A"}', b'{"id": "m1", "response": ""}',
             b'{"id": "m2", "response": "\xff\xfe C"}', b'{"id": "m3", "response": "  "}',
             b'{"id": "m4", "response": "[ECGBENCH_GENERATION_FAILED: timeout]"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 0
    assert result["statuses"] == {"ok": 1, "empty": 2, "not_utf8": 1, "failed": 1}
    assert result["invalid"] == 4 and result["invalid_rate"] == pytest.approx(80.0)
    assert "2 empty" in err and "1 not_utf8" in err and "1 failed" in err


def test_extra_ids_fail_unless_ignored(loader, tmp_path, capsys):
    rows = [{"id": f"m{i}", "response": g} for i, g in enumerate(MMMU_GOLD)] + [{"id": "zz9", "response": "A"}]
    path = write_jsonl(tmp_path / "ref.jsonl", rows)
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 2 and result is None
    assert err.count("\n") == 1 and "zz9" in err and "--ignore-extra" in err
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path), "--ignore-extra")
    assert code == 0 and result["ignored_extra"] == 1 and result["strict"]["accuracy"] == 100.0


def test_doc_id_out_of_range_is_extra(loader, tmp_path, capsys):
    path = write_jsonl(tmp_path / "s.jsonl", [lmms_line(7, "A")])
    code, _, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 2 and "doc_id=7" in err


# ------------------------------------------------------------------------ unusable input


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b'{"id": "m0", "response": "A"}\n{"id": "m0", "response": "B"}\n', "duplicated prediction ids: m0"),
    (b'{"id": "m0", "response": "A"}\n{not json\n', ":2: not valid JSON"),
    (b'{"foo": 1}\n', "line 1: not an lmms-eval sample"),
    (b'[1, 2]\n', "line 1: expected a JSON object"),
    (b'{"doc_id": "x", "resps": [["A"]]}\n', "doc_id 'x' is not an integer"),
])
def test_unusable_predictions_exit_2_with_one_line(loader, tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 2 and result is None
    assert message in err and err.count("\n") == 1 and err.startswith("ecgbench score: error:")


@pytest.mark.parametrize("subset, message", [
    ("mmmu-ecgg", "Did you mean 'mmmu-ecg'"),
    ("arena", "ecgbench judge"),
])
def test_bad_subset_exit_2(loader, tmp_path, capsys, subset, message):
    path = write_jsonl(tmp_path / "ref.jsonl", [{"id": "m0", "response": "A"}])
    code, _, err = score_cli(capsys, "--subset", subset, "--predictions", str(path))
    assert code == 2 and message in err and err.count("\n") == 1


def test_records_of_another_subset_exit_2(loader, tmp_path, capsys):
    doc = loader["ptb-test"][0]
    path = write_jsonl(tmp_path / "s.jsonl", [lmms_line(0, "NORM", record=metrics.score_item("ptb-test", doc, "x"))])
    code, _, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 2 and "holds scoring records of ptb-test, not mmmu-ecg" in err


def test_duplicated_data_ids_exit_2(monkeypatch, tmp_path, capsys):
    docs = mmmu_docs()
    docs[3]["id"] = "m1"
    monkeypatch.setattr(rescore, "load_docs", lambda subset, where: docs)
    path = write_jsonl(tmp_path / "ref.jsonl", [{"id": "m0", "response": "A"}])
    code, _, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(path))
    assert code == 2 and "the data has 1 duplicated item ids: m1" in err


def test_missing_predictions_file(loader, tmp_path, capsys):
    code, _, err = score_cli(capsys, "--subset", "mmmu-ecg", "--predictions", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "cannot read predictions" in err


def test_score_file_with_injected_loader(tmp_path):
    path = write_jsonl(tmp_path / "ref.jsonl", [{"id": "p0", "response": "ABNORMAL"}])
    warnings: list[str] = []
    result, records = rescore.score_file("ptb-test", None, str(path), loader=lambda s, d: ptb_docs(),
                                         warn=warnings.append)
    assert records[0]["paper"] == ["NORM"] and records[0]["strict"] == []  # the substring quirk
    assert result["missing"] == 2 and len(warnings) == 2  # missing items; no strict answer
    assert "1 responses hold no answer that strict mode accepts (paper mode: 0 unparsed)" in warnings[1]


# ------------------------------------------------------------------------ the real data loader


@pytest.mark.skipif(importlib.util.find_spec("pulse_tasks.data.sources") is None, reason="pulse_tasks.data.sources not written yet")
def test_real_loader_json_layout(tmp_path, capsys):
    rows = [{"id": f"mm{i}", "image": f"mmmu/{i}.png",
             "conversations": [{"from": "human", "value": "<image>\nWhich rhythm? A. x B. y C. z D. w"},
                               {"from": "gpt", "value": g}]}
            for i, g in enumerate("ABCD")]
    (tmp_path / "mmmu-ecg.json").write_text(json.dumps(rows))
    preds = write_jsonl(tmp_path / "preds.jsonl",
                        [{"question_id": f"mm{i}", "prompt": "p", "text": t}
                         for i, t in enumerate(["A", "Answer: B", "USA.", "no idea"])])
    code, result, err = score_cli(capsys, "--subset", "mmmu-ecg", "--data", str(tmp_path), "--predictions", str(preds))
    assert code == 0, err
    assert result["n"] == 4 and result["strict"]["accuracy"] == 50.0
    assert result["paper"]["accuracy"] == pytest.approx(100 * 2.25 / 4)  # "USA." -> A (wrong), 1/4 credit


@pytest.mark.skipif(importlib.util.find_spec("pulse_tasks.data.sources") is None, reason="pulse_tasks.data.sources not written yet")
def test_real_loader_bad_folder_exit_2(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"id": "x", "response": "A"}])
    code, _, err = score_cli(capsys, "--subset", "mmmu-ecg", "--data", str(tmp_path / "absent"),
                             "--predictions", str(preds))
    assert code == 2 and err.count("\n") == 1 and "absent" in err
