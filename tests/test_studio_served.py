"""ECGBench Studio served to a team: each visitor's own Explore view, the folder box kept to the
--results folders, images and files never read from outside them (issue 25).

One Studio in served mode (forced on 127.0.0.1, as a Studio behind a reverse proxy is) over one
results root: two model folders the page starts with, one more folder a visitor may load, and a
crafted run whose samples name /etc/passwd, a `..` path and a symlink out of the root (both to a
real PNG) as their images, beside one image that lies inside the root. No --data: every image comes from what the
runs name. Browser tests drive Debian's Chromium through Playwright (conftest's fixtures).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

FIRST_SUBSET = "cpsc-test"  # the page opens on it (first in the paper's order); item ids name their subset
SUBSET = "csn-test-no-cot"  # the other subset of the runs, and the crafted run's only one
LOAD_TIMEOUT_MS = 60_000  # generous: several sessions share two CPU cores
REFUSAL = "no such results folder under the folders this Studio serves"


def _guess(spec, doc) -> str:
    """Right on odd items, wrong on even ones (the next letter / another label)."""
    gold = doc["answers"][0]
    if int(doc["id"][-1]) % 2:
        return gold
    if spec.kind == "letter":
        return spec.letters[(spec.letters.index(gold[0]) + 1) % len(spec.letters)]
    return "none of these" if spec.kind == "ecgqa" else spec.labels[0]


def _png(path: Path, color: str) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 64), color).save(path)
    return path


def _name_media(results_file: Path, media: dict[int, list[str]]) -> list[str]:
    """Give the samples lines of ``results_file`` lmms-eval 0.7's ``input_media`` (line number ->
    references); returns the item ids in line order."""
    ids = []
    for samples in results_file.parent.glob("*_samples_*.jsonl"):
        lines = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
        for n, line in enumerate(lines):
            record = next(v for v in line.values() if isinstance(v, dict) and "id" in v)
            ids.append(record["id"])
            if n in media:
                line["input_media"] = media[n]
        samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return ids


@pytest.fixture(scope="module")
def served_root(tmp_path_factory, synth_data_dir) -> dict:
    """ROOT/{guesser,oracle}: the --results runs; ROOT/extra/carol: another folder under the root;
    ROOT/crafted/mallory: a run naming images in and out of the root; an image outside the root."""
    from pulse_tasks.glue.answered import write_answered_run

    root = tmp_path_factory.mktemp("served") / "root"
    auto = [FIRST_SUBSET, SUBSET]
    write_answered_run(root, "guesser", synth_data_dir, _guess, auto, synthetic=True)
    write_answered_run(root, "oracle", synth_data_dir, lambda spec, doc: doc["answers"][0], auto, synthetic=True)
    write_answered_run(root / "extra", "carol", synth_data_dir, _guess, auto, synthetic=True)
    crafted = write_answered_run(root / "crafted", "mallory", synth_data_dir, _guess, [SUBSET], synthetic=True)
    outside = _png(tmp_path_factory.mktemp("outside") / "secret.png", "red")
    inside = _png(crafted.parent / "media" / "inside.png", "blue")
    (crafted.parent / "linked.png").symlink_to(outside)
    ids = _name_media(crafted, {0: ["/etc/passwd"], 1: [os.path.relpath(outside, crafted.parent)],  # ../../..
                                2: ["media/inside.png"], 3: ["linked.png", "https://example.org/ecg.png"]})
    return {"root": root, "crafted": crafted, "ids": ids, "outside": outside, "inside": inside,
            "passwd_id": ids[0], "dotdot_id": ids[1], "inside_id": ids[2], "link_id": ids[3]}


@pytest.fixture(scope="module")
def served(served_root):
    pytest.importorskip("gradio")
    from pulse_app import studio as st

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ECGBENCH_DATA", raising=False)  # no data copy: images come only from what runs name
        state = st.Studio([str(served_root["root"])], None, st.Asker(None, argparse_options()), resamples=50,
                          restrict_folders=True)
        app = st.launch(state, port=0, block=False)
        try:
            yield state, app.local_url.rstrip("/")
        finally:
            app.close()


def argparse_options():
    import argparse

    from pulse_app import studio as st

    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    return st.model_options(parser.parse_args([]))


def _open(chromium_browser, url: str):
    """A visitor: its own browser context (no shared cookies or storage), on the Explore tab with
    the first table drawn."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_selector("#explore-table tr[data-id]")
    return context, page


def _wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); return e && e.innerText.includes(text); }",
                           arg=[selector, text])


def _load(page, folder: str) -> None:
    page.fill("#explore-folder textarea, #explore-folder input", folder)
    page.click("#explore-load")


def _choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def _table_runs(page) -> list[str]:
    return page.locator("#explore-table thead tr").first.locator("th[colspan]").all_inner_texts()


# ----------------------------------------------------------------------------------------------
# In the browser


def test_a_visitor_loading_a_folder_leaves_another_visitors_page_as_it_was(chromium_browser, served, served_root):
    _, url = served
    ctx_a, a = _open(chromium_browser, url)
    ctx_b, b = _open(chromium_browser, url)
    try:
        start_runs = b.inner_text("#explore-runs")
        assert "guesser" in start_runs and "oracle" in start_runs and "carol" not in start_runs
        assert _table_runs(b) == ["guesser", "oracle"] and FIRST_SUBSET in b.inner_text("#explore-table")
        assert SUBSET not in b.inner_text("#explore-table")
        b_rows = b.locator("#explore-table tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")

        _load(a, str(served_root["root"] / "extra"))
        _wait_text(a, "#explore-runs", "carol")
        a.wait_for_function("() => [...document.querySelectorAll('#explore-table thead th[colspan]')]"
                            ".map(h => h.innerText).join() === 'carol'")
        assert "guesser" not in a.inner_text("#explore-runs")

        # B's page is as it was, and so is what the server holds for B: a new subset is drawn from
        # B's own runs, not from what A loaded.
        assert b.inner_text("#explore-runs") == start_runs
        assert b.locator("#explore-table tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)") == b_rows
        _choose(b, "explore-subset", SUBSET)
        _wait_text(b, "#explore-table", SUBSET)
        assert _table_runs(b) == ["guesser", "oracle"]
        assert b.inner_text("#explore-runs") == start_runs

        # A third visitor starts with the --results runs, whatever A loaded.
        ctx_c, c = _open(chromium_browser, url)
        try:
            assert _table_runs(c) == ["guesser", "oracle"] and "carol" not in c.inner_text("#explore-runs")
        finally:
            ctx_c.close()
        # A's own view is still A's: its next table (another subset) has carol's column.
        assert SUBSET not in a.inner_text("#explore-table")
        _choose(a, "explore-subset", SUBSET)
        _wait_text(a, "#explore-table", SUBSET)
        assert _table_runs(a) == ["carol"]
    finally:
        ctx_a.close()
        ctx_b.close()


def test_outside_folders_are_refused_as_missing_ones_are(chromium_browser, served, served_root, tmp_path):
    _, url = served
    ctx, page = _open(chromium_browser, url)
    try:
        seen = {}
        for typed in ("/etc", "../..", str(served_root["root"] / ".." / ".."), str(tmp_path / "no-such-run"),
                      str(served_root["root"] / "missing-run"), "absent-run"):
            _load(page, typed)
            # The markdown itself (the box around it also shows Gradio's timer while events run),
            # starting with this path: the previous message never passes for this one.
            page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel);"
                                   " return e && e.innerText.startsWith(text); }",
                                   arg=["#explore-message .prose", f"Cannot read {typed}: {REFUSAL}"])
            seen[typed] = page.inner_text("#explore-message .prose").replace(typed, "PATH")
        assert len(set(seen.values())) == 1, "\n".join(f"{k!r}: {v!r}" for k, v in seen.items())
        message = next(iter(seen.values()))
        assert "exist" not in message and "no lmms-eval results" not in message and "/etc" not in message
        # A folder under the root, typed relative to it, opens.
        _load(page, "crafted")
        _wait_text(page, "#explore-runs", "mallory")
        assert "Cannot read" not in page.inner_text("#explore-message")
    finally:
        ctx.close()


def test_a_crafted_runs_outside_images_are_missing_and_not_served(chromium_browser, served, served_root, tmp_path):
    state, url = served
    ctx, page = _open(chromium_browser, url)
    try:
        _load(page, str(served_root["crafted"].parent.parent))
        _wait_text(page, "#explore-runs", "mallory")
        page.wait_for_function("() => [...document.querySelectorAll('#explore-table thead th[colspan]')]"
                               ".map(h => h.innerText).join() === 'mallory'")
        thumbs = page.locator("#explore-table tr[data-id]").evaluate_all(
            "rows => Object.fromEntries(rows.map(r => [r.dataset.id, !!r.querySelector('img.thumb')]))")
        assert thumbs[served_root["inside_id"]] is True
        assert not any(thumbs[served_root[k]] for k in ("passwd_id", "dotdot_id", "link_id"))

        for key in ("passwd_id", "dotdot_id", "link_id"):
            item = served_root[key]
            _choose(page, "explore-item", item)
            _wait_text(page, "#explore-item-view", item)
            assert "Missing image" in page.inner_text("#explore-item-view")
            assert page.locator("#explore-image img").count() == 0
        _choose(page, "explore-item", served_root["inside_id"])
        _wait_text(page, "#explore-item-view", served_root["inside_id"])
        page.wait_for_function("(() => { const i = document.querySelector('#explore-image img');"
                               " return i && i.complete && i.naturalWidth > 0; })()")
        assert "Missing image" not in page.inner_text("#explore-item-view")
        src = page.eval_on_selector("#explore-image img", "i => i.src")
        page.screenshot(path=str(tmp_path / "studio-served-item.png"), full_page=True)
    finally:
        ctx.close()

    # Gradio's file route, asked directly: the image shown is Gradio's cached copy (not the file
    # in the results folder), and nothing outside the bundled examples and that cache is served:
    # not /etc/passwd, not the raw results file (model_args unredacted), not the symlink out of
    # the root, not the in-root image by its own path.
    assert "/gradio_api/file=" in src
    served_path = urllib.parse.unquote(src.split("/gradio_api/file=", 1)[1])
    assert not served_path.startswith(str(served_root["root"]))
    assert _status(src) == 200
    for path in ("/etc/passwd", served_root["crafted"], served_root["crafted"].parent / "linked.png",
                 served_root["outside"], served_root["inside"]):
        assert _status(f"{url}/gradio_api/file={path}") in (403, 404), path
    assert _status(f"{url}/gradio_api/file={state.examples[0]}") == 200  # the route itself works


def test_two_pages_are_two_visitors_in_the_models_line(chromium_browser, tmp_path):
    """Through the page: questions wait in arrival order, each page counted as its own visitor
    (Gradio's session, injected into the handler), and each gets its answer once the turn before
    it is done. Generation is a stand-in (this test is about the line, not the model)."""
    from types import SimpleNamespace

    from pulse_app import studio as st

    state = st.Studio([], None, st.Asker(None, argparse_options()))
    state.asker.name = "stand-in"
    state.asker.model = SimpleNamespace(engine=SimpleNamespace(process_image=lambda img: img), format="stand-in",
                                        device="cpu")
    state.asker.ready.set()
    state.asker.start = lambda: None  # launch() would load "stand-in" as a checkpoint

    def answer(model, image, processed, upload, question, turns, max_new_tokens, temperature):
        done = [*turns, [question, f"answer to {question}"]]
        yield st._messages(done), done, None, "", ""

    state._answer = answer
    image = _png(tmp_path / "ecg.png", "white")
    app = st.launch(state, port=0, block=False)
    contexts = []
    try:
        head = state.turns.enter("someone else")  # a turn that holds the model until released
        pages = {}
        for name, ahead in (("A", 1), ("B", 2)):
            context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(context)
            page = pages[name] = context.new_page()
            page.set_default_timeout(LOAD_TIMEOUT_MS)
            page.goto(app.local_url)
            _wait_text(page, "#ask-status", "ready")
            page.set_input_files("#ask-upload input[type=file]", str(image))
            page.wait_for_function("(() => { const i = document.querySelector('#ask-preview img');"
                                   " return i && i.naturalWidth > 0; })()")
            page.fill("#ask-question textarea", f"question of {name}")
            page.click("#ask-send")
            # B is behind A: had the two pages been one visitor, B would have been refused instead.
            _wait_text(page, "#ask-message", f"waiting for the model: {ahead} question(s) before yours")
        assert len(state.turns) == 3
        state.turns.leave(head)
        for name in ("A", "B"):
            _wait_text(pages[name], "#ask-chat", f"answer to question of {name}")
        assert len(state.turns) == 0
    finally:
        for context in contexts:
            context.close()
        app.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ----------------------------------------------------------------------------------------------
# Without a browser


def test_loopback_and_served_hosts():
    from pulse_app import access
    from pulse_app.studio import folder_policy_restricted

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert access.is_loopback(host) and not folder_policy_restricted(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "studio.lab.example"):
        assert not access.is_loopback(host) and folder_policy_restricted(host), host
    assert not folder_policy_restricted("0.0.0.0", allow_any_folder=True)
    assert folder_policy_restricted("127.0.0.1", results_folders_only=True)


def test_folder_policy_resolves_before_it_compares(tmp_path):
    from pulse_app.access import FolderPolicy

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "runs" / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inner").symlink_to(root / "runs")
    policy = FolderPolicy.under([root])
    assert policy.resolve(str(root / "runs" / "a")) == (root / "runs" / "a").resolve()
    assert policy.resolve("runs/a") == (root / "runs" / "a").resolve()  # relative: under the root
    assert policy.resolve(str(root / "inner")) == (root / "runs").resolve()  # a symlink that stays inside
    for typed in (str(outside), str(root / "escape"), "escape", "..", "../outside", str(root / "runs" / ".." / ".."),
                  "/etc", str(root / "missing"), "missing"):
        assert policy.resolve(typed) is None, typed
    assert policy.refusal("/etc").replace("/etc", "X") == policy.refusal(str(root / "missing")).replace(
        str(root / "missing"), "X")
    assert FolderPolicy().resolve("anything/at/all") == Path("anything/at/all")  # open: as typed
    assert FolderPolicy.under([tmp_path / "gone"]).resolve(str(tmp_path)) is None


def test_media_references_open_only_under_the_roots(tmp_path):
    import base64
    import io

    from PIL import Image

    from pulse_app import access

    root = tmp_path / "root"
    good = _png(root / "run" / "img" / "a.png", "green")
    (root / "run" / "notes.png").write_text("not an image")
    secret = _png(tmp_path / "secret.png", "red")
    (root / "run" / "link.png").symlink_to(secret)
    bases, roots = [root / "run"], [root.resolve()]
    assert access.resolve_media("img/a.png", bases, roots) == good.resolve()
    assert access.resolve_media(str(good), bases, roots) == good.resolve()
    assert access.open_media_image("img/a.png", bases, roots).size == (96, 64)
    for ref in ("/etc/passwd", "../secret.png", str(secret), "link.png", "notes.png", "missing.png",
                "https://example.org/a.png", "file:///etc/passwd", ""):
        assert access.open_media_image(ref, bases, roots) is None, ref
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), "white").save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert access.open_media_image(uri, [], []).size == (8, 4)
    assert access.open_media_image("data:image/png;base64,!!!", [], []) is None


def test_turns_wait_in_line_one_per_visitor():
    import threading

    from pulse_app.access import Busy, TurnQueue

    line = TurnQueue(per_visitor=1, max_waiting=3)
    first = line.enter("a")
    with pytest.raises(Busy, match="per visitor"):
        line.enter("a")
    second, third = line.enter("b"), line.enter("c")
    with pytest.raises(Busy, match="busy"):
        line.enter("d")
    assert [line.ahead(t) for t in (first, second, third)] == [0, 1, 2]
    assert line.wait(second, 0.01) == 1  # still behind the first
    order = []
    waiter = threading.Thread(target=lambda: (line.wait(third, 30), order.append("c")))
    waiter.start()
    line.leave(first)
    assert line.wait(second, 5) == 0
    order.append("b")
    line.leave(second)
    waiter.join(30)
    assert order == ["b", "c"] and len(line) == 1
    line.leave(third)
    assert len(line) == 0 and line.enter("a") is not None  # "a" may ask again once answered


def test_ask_refuses_a_second_turn_of_the_same_visitor_and_queues_others(tmp_path):
    """Studio.ask through its line: a visitor whose turn is running is refused a second one with a
    message; another visitor's turn says how many are before it and leaves the line when dropped."""
    from types import SimpleNamespace

    from pulse_app import studio as st

    state = st.Studio([], None, st.Asker(None, argparse_options()))
    state.asker = SimpleNamespace(name="stand-in", ready=SimpleNamespace(is_set=lambda: True, wait=lambda timeout: True),
                                  error=None, model=SimpleNamespace(engine=SimpleNamespace(process_image=lambda img: img)),
                                  status=lambda: "ready", served=None)
    image = str(_png(tmp_path / "ecg.png", "white"))
    running = state.turns.enter("visitor-a")  # visitor a's turn holds the model
    *_, last = state.ask(image, "What is the rhythm?", [], 8, 0.0, visitor="visitor-a")
    assert last[3].startswith("**Cannot ask now**") and "per visitor" in last[3] and last[4] == "What is the rhythm?"
    waiting = state.ask(image, "What is the rhythm?", [], 8, 0.0, visitor="visitor-b")
    assert re.search(r"1 question\(s\) before yours", next(waiting)[3])
    assert len(state.turns) == 2
    waiting.close()  # the page went away: its turn leaves the line
    assert len(state.turns) == 1
    state.turns.leave(running)


def test_handlers_read_nothing_for_subsets_the_view_lacks(served_root):
    """What a script may send past the page's dropdowns: an unknown subset reads no data and
    leaves no cache entry; a known one draws its table."""
    pytest.importorskip("gradio")
    from pulse_app import studio as st

    state = st.Studio([str(served_root["root"])], None, st.Asker(None, argparse_options()), resamples=10,
                      restrict_folders=True)
    visitor = st.Visitor()
    for subset in ("../../etc/passwd", "ptb-test", None):
        corpus, table, *_ = state.table(visitor, subset, None, None, "strict", [], "", 1)
        assert corpus == "" and table == ""
        assert state.item(visitor, subset, "x") == (None, "")
    assert state.default._rows == {} and state.default.items.errors == {}
    corpus, table, *_ = state.table(visitor, SUBSET, None, None, "strict", [], "", 1)
    assert SUBSET in table and list(state.default._rows) == [SUBSET]


def test_cli_bound_beyond_loopback_restricts_the_folder_box(served_root):
    """`ecgbench studio --host 0.0.0.0`: says the folder box is restricted, serves its page."""
    ecgbench = Path(sys.executable).with_name("ecgbench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([str(ecgbench), "studio", "--results", str(served_root["root"]), "--host", "0.0.0.0",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        while not lines or "ECGBench Studio on" not in lines[-1]:
            lines.append(proc.stdout.readline())
            assert lines[-1] or proc.poll() is None, "studio exited: " + "".join(lines)
        assert any("opens folders under --results only" in x for x in lines), lines
        port = re.search(r":(\d+)", lines[-1].split("on", 1)[1]).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            assert resp.status == 200 and b"ECGBench Studio" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_start_up_check_waits_for_a_slow_server(monkeypatch):
    """Gradio's own check gives up at the first request over 3 s and then refuses to start; Studio's
    retries timeouts until LAUNCH_CHECK_S (a busy machine once failed the served test here)."""
    import httpx

    from pulse_app import studio as st

    calls = []

    def head(url, **kwargs):
        calls.append(url)
        if len(calls) < 3:
            raise httpx.ReadTimeout("slow")
        return httpx.Response(200)

    monkeypatch.setattr(httpx, "head", head)
    monkeypatch.setattr(st.time, "sleep", lambda s: None)
    assert st._patient_url_ok("http://127.0.0.1:1/") is True and len(calls) == 3
    monkeypatch.setattr(st, "LAUNCH_CHECK_S", 0.0)
    calls.clear()
    monkeypatch.setattr(httpx, "head", lambda url, **kw: (_ for _ in ()).throw(httpx.ConnectError("refused")))
    assert st._patient_url_ok("http://127.0.0.1:1/") is False
