"""pulse_app.views without a browser: joining runs by item, filters, paging, merged split runs,
the item view's strict explanation and judge states, credentials kept out of the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulse_app import views
from pulse_tasks.glue.answered import write_answered_run
from pulse_tasks.results import runs
from pulse_tasks.results.redaction import REDACTED


def _letter(item_id: str, gold: str, strict: str | None, paper: str | None = "same", **extra) -> dict:
    paper = strict if paper == "same" else paper
    return {"id": item_id, "subset": "csn-test-no-cot", "kind": "letter", "status": "ok", "gold": gold,
            "paper": paper, "strict": strict, "paper_credit": 0.125 if paper is None else float(paper == gold),
            "strict_correct": strict == gold, "unparsed": paper is None, "invalid": strict is None,
            "failed": False, "missing": False, **extra}


def _judged(item_id: str, status: str, score: float | None, **extra) -> dict:
    return {"id": item_id, "subset": "ptb-test-report", "status": status, "score": score,
            "criteria": {"Diagnosis": 8.0} if status == "ok" else {},
            "explanations": {"Diagnosis": "names the infarct"} if status == "ok" else {},
            "error": "HTTP 500" if status == "failed" else None, **extra}


@pytest.fixture
def two_runs(tmp_path: Path) -> list[runs.Run]:
    """Run A wrong where B is right on csn item 1, both right on 0, both invalid/unparsed on 2."""
    a = {"csn-test-no-cot": [_letter("c0", "A", "A"), _letter("c1", "B", "C"), _letter("c2", "D", None, None)],
         "ptb-test-report": [_judged("r0", "ok", 70.0), _judged("r1", "failed", None)]}
    b = {"csn-test-no-cot": [_letter("c0", "A", "A"), _letter("c1", "B", "B"), _letter("c2", "D", None, None)],
         "ptb-test-report": [_judged("r0", "ok", 90.0), _judged("r1", "deferred", None)]}
    resp_a = {"csn-test-no-cot": ["A", "C", "no idea"], "ptb-test-report": ["Sinus rhythm.", "Normal."]}
    resp_b = {"csn-test-no-cot": ["A", "B. Atrial flutter", "hmm"], "ptb-test-report": ["Inferior MI.", "x"]}
    runs.write_run(tmp_path, "model-a", a, resp_a, model_args="pretrained=a,api_key=sk-secret-1234")
    runs.write_run(tmp_path, "model-b", b, resp_b)
    return views.load_results([tmp_path]).runs


def test_rows_join_runs_by_item_and_outcomes_name_each_state(two_runs):
    rows = views.item_rows(two_runs, "csn-test-no-cot")
    assert [r.id for r in rows] == ["c0", "c1", "c2"]
    assert set(rows[0].cells) == {"model-a", "model-b"}
    assert rows[2].cells["model-a"].response == "no idea"
    assert [views.outcome(r.record("model-a")) for r in rows] == [views.CORRECT, views.WRONG, views.INVALID]
    assert views.outcome(rows[2].record("model-a"), "paper") == views.WRONG  # 1/8 expected credit is not "right"
    judged = views.item_rows(two_runs, "ptb-test-report")
    assert views.outcome(judged[0].record("model-b")) == "judge ok 90.0"
    assert views.outcome(judged[1].record("model-a")) == "judge failed"
    assert views.judge_score(judged[1].record("model-b")) is None  # deferred: no score
    assert views.is_correct(judged[0].record("model-a")) is None  # judged items are not right/wrong


@pytest.mark.parametrize("filters, expected", [
    (views.Filters(), ["c0", "c1", "c2"]),
    (views.Filters(wrong_in="model-a", right_in="model-b"), ["c1"]),
    (views.Filters(wrong_in="model-b", right_in="model-a"), []),
    (views.Filters(unparsed=True), ["c2"]),
    (views.Filters(invalid=True), ["c2"]),
    (views.Filters(text="flutter"), ["c1"]),  # a run's answer
    (views.Filters(text="C1"), ["c1"]),  # the id, case-insensitive
    (views.Filters(failed=True), []),
])
def test_filters(two_runs, filters, expected):
    rows = views.item_rows(two_runs, "csn-test-no-cot")
    assert [r.id for r in views.filter_rows(rows, filters)] == expected


def test_judge_failed_filter(two_runs):
    rows = views.item_rows(two_runs, "ptb-test-report")
    assert [r.id for r in views.filter_rows(rows, views.Filters(judge_failed=True))] == ["r1"]


def test_multilabel_correct_is_set_equality_per_mode():
    rec = {"kind": "multilabel", "subset": "ptb-test", "gold": ["MI", "HYP"], "gold_strict": ["HYP", "MI"],
           "paper": ["HYP", "MI"], "strict": ["MI"]}
    assert views.is_correct(rec, "paper") is True and views.is_correct(rec, "strict") is False


@pytest.mark.parametrize("n, number, size, shown, page, count", [
    (45, 1, 20, 20, 1, 3), (45, 3, 20, 5, 3, 3), (45, 9, 20, 5, 3, 3), (45, 0, 20, 20, 1, 3),
    (0, 1, 20, 0, 1, 1), (20, 2, 20, 20, 1, 1),
])
def test_paginate_clamps(n, number, size, shown, page, count):
    rows = [views.ItemRow(str(i), "s", {}) for i in range(n)]
    pg = views.paginate(rows, number, size)
    assert (len(pg.rows), pg.number, pg.count, pg.total) == (shown, page, count, n)
    if pg.rows:
        assert pg.rows[0].id == str((page - 1) * size)


def test_split_run_reads_as_one(tmp_path):
    """Two lmms-eval calls of one model (auto subsets, then the judged one) read as one run."""
    runs.write_run(tmp_path, "m", {"csn-test-no-cot": [_letter("c0", "A", "A")]}, date_id="20260101T000000")
    runs.write_run(tmp_path, "m", {"ptb-test-report": [_judged("r0", "ok", 50.0)]}, date_id="20260102T000000")
    loaded = views.load_results([tmp_path])
    assert loaded.errors == [] and len(loaded.runs) == 1
    assert views.subsets_of(loaded.runs) == ["ptb-test-report", "csn-test-no-cot"]  # the paper's table order
    assert len(views.run_facts(loaded.runs[0])["results_files"]) == 2
    assert [r.id for r in views.item_rows(loaded.runs, "csn-test-no-cot")] == ["c0"]


def test_unreadable_results_become_messages(tmp_path, two_runs):
    broken = tmp_path / "broken" / "x"
    broken.mkdir(parents=True)
    (broken / "20260101T000000_results.json").write_text("{not json")
    loaded = views.load_results([tmp_path / "nowhere", broken.parent, two_runs[0].results_file.parent])
    assert [r.name for r in loaded.runs] == ["model-a"]
    assert len(loaded.errors) == 2 and "does not exist" in loaded.errors[0] and "cannot read" in loaded.errors[1]


def test_run_facts_redact_credentials(two_runs):
    facts = views.run_facts(two_runs[0])
    assert "sk-secret" not in json.dumps(facts) and f"api_key={REDACTED}" in facts["model_args"]


EXPLAIN = {"mode": "strict", "region": "No MI; left ventricular hypertrophy.",
           "spans": [{"text": "MI", "start": 3, "end": 5, "label": "MI", "source": "abbrev", "negated": True,
                      "trigger": "No"},
                     {"text": "left ventricular hypertrophy", "start": 7, "end": 35, "label": "HYP",
                      "source": "synonym", "negated": False, "trigger": None},
                     {"text": "bad", "start": 30, "end": 99, "label": "X", "source": "?", "negated": False,
                      "trigger": None}],
           "labels": ["HYP"], "invalid_reason": None}


def test_explain_segments_cover_the_region_once():
    pieces = views.explain_segments(EXPLAIN)
    assert "".join(t for t, _ in pieces) == EXPLAIN["region"]
    assert [s["label"] for _, s in pieces if s] == ["MI", "HYP"]  # out-of-range span not highlighted


def test_item_view_shows_explanation_judge_and_escapes(two_runs):
    rows = views.item_rows(two_runs, "csn-test-no-cot")
    row = rows[1]
    row.cells["model-a"].record = {**row.record("model-a"), "explain": {**EXPLAIN, "invalid_reason": "<two letters>"}}
    row.cells["model-b"].response = "<script>alert(1)</script>"
    page = views.item_html(row, ["model-a", "model-b"])
    assert "Strict reading" in page and '<mark class="span negated"' in page and "Labels kept: <b>HYP</b>" in page
    assert "&lt;two letters&gt;" in page and "<script>" not in page and "&lt;script&gt;" in page
    assert "No strict explanation" in page  # model-b's record has none: said, not hidden
    judged = views.item_rows(two_runs, "ptb-test-report")
    html_ok = views.item_html(judged[0], ["model-a", "model-b"])
    assert "Judge: <b>ok</b>, score <b>70.0</b>" in html_ok and "names the infarct" in html_ok
    html_failed = views.item_html(judged[1], ["model-a", "model-b"])
    assert "Judge error: HTTP 500" in html_failed and "Judge: <b>deferred</b>" in html_failed


def test_table_and_corpus_fragments(two_runs):
    rows = views.item_rows(two_runs, "csn-test-no-cot")
    page = views.paginate(rows, 1)
    table = views.table_html(page, ["model-a", "model-b"], {"c0": "data:image/jpeg;base64,AAAA"})
    assert table.count("<tr data-id=") == 3 and 'src="data:image/jpeg;base64,AAAA"' in table
    assert table.count(">wrong<") == 1 and table.count(">invalid<") == 2
    corpus = views.corpus_html(two_runs, "csn-test-no-cot", resamples=50)
    assert "model-a" in corpus and "[" in corpus  # values with intervals
    empty = views.table_html(views.paginate([], 1), ["model-a"])
    assert "No item matches" in empty


def test_item_data_reads_questions_and_images_once(synth_data_dir):
    from pulse_tasks.data import sources as ecg_data

    items = views.ItemData(ecg_data.resolve_source(str(synth_data_dir)))
    docs = items.docs("csn-test-no-cot")
    first = next(iter(docs))
    img = items.image("csn-test-no-cot", first)
    assert img is not None and img.size[0] > 0
    assert items.thumbnail("csn-test-no-cot", first).startswith("data:image/jpeg;base64,")
    assert items.image("csn-test-no-cot", "no-such-id") is None
    assert views.ItemData(None).image("csn-test-no-cot", first) is None


def test_demo_prints_a_studio_command_that_parses(tmp_path):
    """The command `make demo` ends with names the demo's results, data and model, and is valid."""
    import argparse
    import shlex

    from pulse_app import demo, studio

    out = tmp_path / "demo out"
    # As lmms-eval lays them out under the demo's --output_path folders (pulse one level deeper).
    runs = {"pulse": out / "results" / "pulse" / "ckpt" / "x_results.json",
            "random_guess": out / "results" / "random_guess" / "y_results.json"}
    command = demo.studio_command(runs, str(out / "checkpoint"), out / "data" / "ecgbench", on_gpu=False)
    argv = shlex.split(command)
    assert argv[:2] == ["ecgbench", "studio"]
    parser = argparse.ArgumentParser()
    studio.add_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert args.results == [str(runs["random_guess"].parent), str(runs["pulse"].parent)]
    assert args.model == str(out / "checkpoint")
    assert args.data == str(out / "data" / "ecgbench") and args.dtype == "float32" and args.host == "127.0.0.1"


def test_demo_rhythm_accuracy_counts_strictly_correct_items(tmp_path, synth_data_dir):
    from pulse_app import demo

    path = write_answered_run(tmp_path, "oracle", synth_data_dir, lambda spec, doc: doc["answers"][0],
                              ["csn-test-no-cot"], synthetic=True)
    ok, n = demo.rhythm_accuracy(path)["csn-test-no-cot"]
    assert ok == n > 0
