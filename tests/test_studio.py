"""ECGBench Studio in a real headless browser (Debian's Chromium through Playwright).

One Studio server for the module (in a thread, on a free port) over a small synthetic run of two
models scored by the task hook lmms-eval calls (one of them split over two results files, as a
split evaluation is), and a tiny random PULSE-architecture checkpoint for Ask. The README's
screenshots (docs/studio-explore.png, docs/studio-ask.png) come from these tests under `make
screenshots`; a plain run writes them under the test's temp folder.

Every wait is for the state the test then checks (a text the action brings, the table's new rows),
never for an element the page may already show from before the action.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SUBSET = "csn-test-no-cot"  # a letter subset: right/wrong is unambiguous
SPLIT_FIRST = ("ptb-test", "code15-test", "cpsc-test")  # the oracle's first lmms-eval call; the rest come later
ASK_TOKENS = 24  # enough words for the stream to arrive in several pieces, cheap on a CPU
LOAD_TIMEOUT_MS = 60_000  # generous: seven engineers share two CPU cores

pytest.importorskip("gradio")


def _guess(spec, doc) -> str:
    """A deterministic answerer: wrong on even items (the next letter / another label), right on odd."""
    gold = doc["answers"][0]
    odd = int(doc["id"][-1]) % 2 == 1
    if spec.kind == "letter":
        letter = gold[0]
        return gold if odd else spec.letters[(spec.letters.index(letter) + 1) % len(spec.letters)]
    if spec.kind == "ecgqa":
        return gold if odd else "none of these"
    return gold if odd else spec.labels[0]


def _oracle(spec, doc) -> str:
    return doc["answers"][0]


def _stand_in_explain(record: dict, response: str) -> dict:
    """Until the strict scorer writes record["explain"] itself (issue 13): the same shape, built
    from the strict labels found in the response."""
    labels = record["strict"] if isinstance(record.get("strict"), list) else [record["strict"]] * (record["strict"] is not None)
    spans = []
    for label in labels:
        at = response.find(str(label))
        if at >= 0:
            spans.append({"text": str(label), "start": at, "end": at + len(str(label)), "label": str(label),
                          "source": "stand-in", "negated": False, "trigger": None})
    return {"mode": "strict", "region": response, "spans": spans, "labels": labels,
            "invalid_reason": None if labels else "no answer found"}


def _add_explanations(results_file: Path) -> None:
    for samples in results_file.parent.glob("*_samples_*.jsonl"):
        lines = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
        for line in lines:
            response = line["filtered_resps"][0]
            for key, value in line.items():
                if isinstance(value, dict) and "strict" in value and "explain" not in value:
                    value["explain"] = _stand_in_explain(value, response)
        samples.write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, synth_data_dir) -> Path:
    from pulse_tasks.data.subsets import SUBSETS
    from pulse_tasks.glue.answered import write_answered_run

    out = tmp_path_factory.mktemp("studio-results")
    auto = [s.config for s in SUBSETS if s.kind not in ("report", "arena")]
    for path in (write_answered_run(out, "guesser", synth_data_dir, _guess, synthetic=True),
                 write_answered_run(out, "oracle", synth_data_dir, _oracle, SPLIT_FIRST, synthetic=True,
                                    date_id="20260101T000000"),
                 write_answered_run(out, "oracle", synth_data_dir, _oracle, [c for c in auto if c not in SPLIT_FIRST],
                                    synthetic=True, date_id="20260101T010000")):
        _add_explanations(path)
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from pulse_models.testing import make_tiny_original_checkpoint

    return make_tiny_original_checkpoint(tmp_path_factory.mktemp("studio-model") / "tiny", seed=0)


@pytest.fixture(scope="module")
def studio(results_dir, tiny_model, synth_data_dir):
    from pulse_app import studio as st

    options = st.model_options(_parse_studio_args(["--dtype", "float32", "--device-map", "cpu"]))
    app_state = st.Studio([str(results_dir)], str(synth_data_dir), st.Asker(str(tiny_model), options),
                          resamples=100, max_new_tokens=ASK_TOKENS)
    # Not waited for: the model loads in the background while the Explore tests run, and the Ask
    # page's status line must turn to "ready" by itself (a timer refreshes it).
    app = st.launch(app_state, port=0, block=False)
    try:
        yield app_state, app.local_url
    finally:
        app.close()


def _parse_studio_args(argv: list[str]):
    import argparse

    from pulse_app import studio as st

    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def page(browser_page, studio):
    """The Studio page; every request the page makes must stay on this machine."""
    outside: list[str] = []
    browser_page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                    else outside.append(r.url))
    browser_page.set_default_timeout(LOAD_TIMEOUT_MS)
    browser_page.goto(studio[1])
    yield browser_page
    assert outside == [], f"the page reached outside this machine: {outside[:5]}"


def _wait_text(page, selector: str, text: str) -> None:
    """Wait until the element exists and its text contains ``text``."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); return e && e.innerText.includes(text); }",
                           arg=[selector, text])


def _row_ids(page) -> list[str]:
    return page.locator("#explore-table tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")


def _wait_rows(page, ids: list[str]) -> None:
    """Wait until the items table shows exactly these rows, in this order."""
    page.wait_for_function("ids => JSON.stringify([...document.querySelectorAll('#explore-table tr[data-id]')]"
                           ".map(r => r.dataset.id)) === JSON.stringify(ids)", arg=ids)


def _record_explore_states(page) -> None:
    """Keep (message text, number of table rows) of every state the Explore tab shows from now on."""
    page.evaluate("""() => { window.__explore = [];
        const note = () => window.__explore.push([document.querySelector('#explore-message').innerText,
            document.querySelectorAll('#explore-table tr[data-id]').length]);
        note();
        new MutationObserver(note).observe(document.body,
                                           {subtree: true, childList: true, characterData: true}); }""")


def _choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def test_explore_a_wrong_b_right_item_with_image_and_explanation(page, studio, screenshot):
    from pulse_app import views

    state, _ = studio
    page.get_by_role("tab", name="Explore").click()
    assert "oracle" in page.inner_text("#explore-runs") and "20260101T010000_results.json" in page.inner_text("#explore-runs")
    first = views.subsets_of(state.loaded.runs)[0]
    assert first != SUBSET  # the page opens on another subset: the new rows below come from the choice
    _wait_rows(page, [r.id for r in views.paginate(state.rows(first), 1).rows])
    _choose(page, "explore-subset", SUBSET)
    everything = [r.id for r in state.rows(SUBSET)]
    _wait_rows(page, everything)
    total = len(everything)
    page.get_by_label("A wrong, B right").check()
    expected = [r.id for r in views.filter_rows(state.rows(SUBSET), views.Filters(wrong_in="guesser", right_in="oracle"))]
    assert 0 < len(expected) < total
    _wait_rows(page, expected)
    for row in page.locator("#explore-table tr[data-id]").all():
        outcomes = row.locator("td").all_inner_texts()
        assert outcomes.count("wrong") == 1 and outcomes.count("correct") == 1
    assert re.search(rf"{len(expected)} of {total} items", page.inner_text("#explore-page-note"))
    thumbs = page.locator("#explore-table img.thumb").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert thumbs and all(w > 0 for w in thumbs)

    row = next(r for r in state.rows(SUBSET) if r.id == expected[0])
    assert page.locator("#explore-image img").count() == 0  # no item open yet
    _choose(page, "explore-item", expected[0])
    _wait_text(page, "#explore-item-view", row.questions[0].splitlines()[0])
    page.wait_for_function("(() => { const i = document.querySelector('#explore-image img');"
                           " return i && i.complete && i.naturalWidth > 0; })()")
    size = page.eval_on_selector("#explore-image img", "i => [i.naturalWidth, i.naturalHeight]")
    assert size[0] > 0 and size[1] > 0
    view = page.inner_text("#explore-item-view")
    assert row.questions[0].splitlines()[0] in view and "Gold" in view
    for run in ("guesser", "oracle"):
        assert run in view and str(row.cells[run].response) in view
    assert "Strict reading" in view and "Labels kept" in view
    screenshot(page, "studio-explore.png", full_page=True)


def test_explore_unreadable_folder_is_a_message_and_the_app_keeps_serving(page, studio, results_dir, tmp_path):
    """A failed load empties the table with the message; the next good load brings rows and drops
    the error in the same update: no state shows an old run's rows under "No runs loaded", nor a
    previous error over new rows."""
    from pulse_app import views

    state, _ = studio
    page.get_by_role("tab", name="Explore").click()
    first = views.subsets_of(state.loaded.runs)[0]
    _wait_rows(page, [r.id for r in views.paginate(state.rows(first), 1).rows])  # the page's own first table
    _record_explore_states(page)
    page.fill("#explore-folder textarea, #explore-folder input", str(tmp_path / "no-such-run"))
    page.click("#explore-load")
    _wait_text(page, "#explore-message", "Cannot read")
    message = page.inner_text("#explore-message")
    assert "does not exist" in message and "No runs loaded" in message
    assert _row_ids(page) == [] and page.inner_text("#explore-runs").strip() == ""
    page.fill("#explore-folder textarea, #explore-folder input", str(results_dir))
    page.click("#explore-load")
    page.wait_for_function("document.querySelectorAll('#explore-table tr[data-id]').length > 0")  # none before
    assert "Cannot read" not in page.inner_text("#explore-message") and "oracle" in page.inner_text("#explore-runs")
    assert _row_ids(page) == [r.id for r in views.paginate(state.rows(first), 1).rows]
    states = page.evaluate("window.__explore")
    assert any("Cannot read" in text and rows == 0 for text, rows in states)
    mixed = [(text[:80], rows) for text, rows in states if rows and ("No runs loaded" in text or "Cannot read" in text)]
    assert not mixed, f"message and table disagreed: {mixed}"


def test_explore_events_of_an_earlier_load_change_nothing(page, studio, results_dir, tmp_path, monkeypatch):
    """The race a busy machine showed: the table events a failed load set off (its pickers emptied)
    reach the server only after the next good load. They carry the earlier load's count and are
    dropped: the good load's rows stay. Here the browser holds those requests back until the good
    load's rows are on the page, so the order is the bad one every time."""
    from pulse_app import studio as st
    from pulse_app import views

    state, _ = studio
    stale: list[tuple[float, int]] = []
    current = st.Visitor.current

    def seen(visitor, generation):
        if generation is not None and int(generation) != visitor.generation:
            stale.append((generation, visitor.generation))
        return current(visitor, generation)

    monkeypatch.setattr(st.Visitor, "current", seen)
    held = []

    def hold_tables_of_empty_pickers(route):
        body = route.request.post_data_json if route.request.method == "POST" else None
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list) and len(data) == 9 and data[1] is None:  # table_inputs with no subset
            held.append(route)
        else:
            route.continue_()

    page.route("**/gradio_api/queue/join*", hold_tables_of_empty_pickers)
    page.get_by_role("tab", name="Explore").click()
    first = views.subsets_of(state.loaded.runs)[0]
    expected = [r.id for r in views.paginate(state.rows(first), 1).rows]
    _wait_rows(page, expected)
    page.fill("#explore-folder textarea, #explore-folder input", str(tmp_path / "no-such-run"))
    page.click("#explore-load")
    _wait_text(page, "#explore-message", "Cannot read")
    deadline = time.monotonic() + LOAD_TIMEOUT_MS / 1000
    while not held and time.monotonic() < deadline:  # the emptied pickers' table events
        page.wait_for_timeout(50)
    assert held, "the failed load set off no table event"
    page.fill("#explore-folder textarea, #explore-folder input", str(results_dir))
    page.click("#explore-load")
    _wait_rows(page, expected)
    n = len(held)
    for route in held:
        route.continue_()
    while len(stale) < n and time.monotonic() < deadline:  # the server has dropped each of them
        page.wait_for_timeout(50)
    assert len(stale) >= n, f"{n} held events, {len(stale)} seen by the server"
    page.wait_for_timeout(200)  # a dropped event's (empty) reply reaches the page
    assert _row_ids(page) == expected and "Cannot read" not in page.inner_text("#explore-message")


def test_ask_streams_and_answers_a_second_turn(page, studio, tmp_path, screenshot):
    state, _ = studio
    _wait_text(page, "#ask-status", "ready")
    assert state.asker.error is None
    # A file that is not an image: refused with the reason, in the page.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#ask-upload input[type=file]", str(bad))
    _wait_text(page, "#ask-message", "Cannot use this file")
    assert "notes.png" in page.inner_text("#ask-message") and "/tmp" not in page.inner_text("#ask-message")
    page.set_input_files("#ask-upload input[type=file]", str(state.examples[0]))
    page.wait_for_function("(() => { const i = document.querySelector('#ask-preview img');"
                           " return i && i.naturalWidth > 0; })()")
    # Record every state of the conversation until the turn's facts arrive (they come with the last update).
    page.evaluate("""() => { window.__states = [];
        const chat = document.querySelector('#ask-chat');
        new MutationObserver(() => { const facts = document.querySelector('#ask-facts').innerText;
            window.__states.push([chat.innerText, facts.includes('"turn"')]); })
          .observe(chat, {subtree: true, childList: true, characterData: true}); }""")
    page.fill("#ask-question textarea", "What is the rhythm?")
    page.click("#ask-send")
    _wait_text(page, "#ask-facts", "llava_v1")
    states = page.evaluate("window.__states")
    partial = {text for text, final in states if not final and "What is the rhythm?" in text}
    assert len(partial) >= 3, f"the answer did not stream: {len(partial)} states before the end"
    facts = page.inner_text("#ask-facts")
    assert '"image"' in facts and '"truncated"' in facts and '"tiles"' in facts
    page.fill("#ask-question textarea", "Is it regular?")
    page.click("#ask-send")
    _wait_text(page, "#ask-facts", "Is it regular?")
    chat = page.inner_text("#ask-chat")
    assert "What is the rhythm?" in chat and "Is it regular?" in chat
    assert page.locator("#ask-chat .message").count() >= 4
    screenshot(page, "studio-ask.png", full_page=True)


def test_model_failures_are_messages(studio, tmp_path):
    """A model that fails to load, and one whose generation fails: the tab says so, the app stays."""
    from pulse_app import studio as st

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    options = st.model_options(_parse_studio_args(["--dtype", "float32", "--device-map", "cpu"]))
    asker = st.Asker(str(broken), options)
    asker.start()
    assert asker.ready.wait(120)
    assert "cannot" in asker.status().lower() or "failed" in asker.status().lower()
    app_state, _ = studio
    assert app_state.asker.ready.wait(300) and app_state.asker.error is None, app_state.asker.error
    failing = st.Studio([], None, st.Asker(app_state.asker.name, options))
    failing.asker.model, failing.asker.name = app_state.asker.model, app_state.asker.name
    failing.asker.ready.set()

    class Exploding:
        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            return getattr(self._engine, name)

        def generate(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    real = app_state.asker.model.engine
    try:
        app_state.asker.model.engine = Exploding(real)
        *_, last = failing.ask(str(app_state.examples[0]), "Rhythm?", [], 8, 0.0)
    finally:
        app_state.asker.model.engine = real
    chat, turns, facts, message, question = last
    assert "generation failed" in message and "out of memory" in message and turns == [] and question == "Rhythm?"
    *_, last = failing.ask(str(app_state.examples[0]), "   ", [], 8, 0.0)
    assert "question is empty" in last[3]


def test_cli_serves_its_first_page_bound_to_localhost(results_dir, synth_data_dir):
    """`ecgbench studio` through the console script: first page served, 127.0.0.1 by default."""
    ecgbench = Path(sys.executable).with_name("ecgbench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([str(ecgbench), "studio", "--results", str(results_dir), "--data", str(synth_data_dir),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        while "ECGBench Studio on" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "studio exited"
        url = re.search(r"http://\S+", line).group(0)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200 and b"ECGBench Studio" in resp.read()
        print(f"cold start to first page: {time.monotonic() - start:.1f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_oversized_upload_is_refused_with_the_limit(tmp_path):
    from pulse_app import studio as st

    big = tmp_path / "scan.png"
    with big.open("wb") as fh:  # sparse: no 20 MB written
        fh.truncate(st.MAX_UPLOAD_MB * 1024 * 1024 + 1)
    upload, preview, message = st._preview(str(big))
    assert upload is None and preview is None
    assert f"up to {st.MAX_UPLOAD_MB} MB" in message and "scan.png" in message and str(tmp_path) not in message


def test_ask_handler_streams_with_an_hf_model(tmp_path):
    """The same turn through an HF image-text-to-text checkpoint (chat template), streamed."""
    from pulse_app import studio as st
    from pulse_models.testing import make_tiny_hf_checkpoint

    path = make_tiny_hf_checkpoint(tmp_path / "hf")
    asker = st.Asker(str(path), st.model_options(_parse_studio_args(["--dtype", "float32", "--device-map", "cpu"])))
    asker.start()
    assert asker.ready.wait(300) and asker.error is None, asker.error
    app_state = st.Studio([], None, asker)
    image = str(st.example_images()[0])
    updates = list(app_state.ask(image, "What is the rhythm?", [], 16, 0.0))
    chat, turns, facts, message, _ = updates[-1]
    assert message == "" and facts["format"] != "llava_original" and facts["template"] == "chat_template"
    assert turns == [["What is the rhythm?", facts["answer"]]]
    streamed = {u[0][-1]["content"] for u in updates[:-1] if u[0]}
    assert len(streamed) >= 2  # partial answers before the last one
    *_, (chat2, turns2, facts2, _, _) = app_state.ask(image, "And the axis?", turns, 8, 0.0)
    assert len(turns2) == 2 and facts2["turn"] == 2 and len(chat2) == 4
