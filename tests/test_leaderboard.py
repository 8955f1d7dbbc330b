"""`ecgbench leaderboard build | check`: a site from a folder of submissions made by `ecgbench submit`.

The submissions are made the way a real one is: lmms-eval-shaped run folders (results json + one
samples file per subset, ``runs.write_run``) scored by the task hooks, then the real `ecgbench
submit`. Their items come from ``runs.synthetic_run`` but the runs are *not* flagged synthetic:
they say they read a pinned hub revision (``hub:PULSE-ECG/ECGBench@<sha>``) with ids shaped like
the real ones, as a run on a local copy of the real data would look. The leaderboard refuses runs
flagged synthetic, which one file here is, to check that it does.

Folder: four verified full-size models (two pairs of equal skill: ties expected inside a pair,
not between them), one verified on another data revision (not comparable), one unverified (no
predictions attached), one partial, one tampered, one duplicate, one synthetic, one unreadable.
"""

from __future__ import annotations

import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pulse_app import cli
from pulse_tasks.results import runs
from pulse_tasks.results.leaderboard import site as site_module
from pulse_tasks.results.report import COLUMNS

SUBMIT_RESAMPLES = "50"  # the submitted intervals are not what is tested; the board computes its own
BOARD_RESAMPLES = 200  # paired tests and intervals of the board (the CLI default is 1000)
REVISION = "hub:PULSE-ECG/ECGBench@3f9a1c2e"  # a pinned hub revision, as #14's data_source records it
OTHER_REVISION = "hub:PULSE-ECG/ECGBench@77aa00ff"
SECRET = "sk-test-SECRET-0001"  # must never reach a page
HOSTILE_NAME = 'Delta-7B <img src=x onerror="document.title=1">'  # model names are untrusted text
EPOCH = "1767225600"  # SOURCE_DATE_EPOCH: a fixed build time keeps the screenshots (`make screenshots`) stable
# name -> (answer seed, skill, data source, attach predictions, model_args)
FULL = {
    "Alpha-7B": (1, 0.80, REVISION, True, f"pretrained=org/alpha-7b,api_key={SECRET}"),
    "Beta-7B": (2, 0.80, REVISION, True, "pretrained=org/beta-7b"),
    "Gamma-7B": (3, 0.55, REVISION, True, "pretrained=org/gamma-7b"),
    HOSTILE_NAME: (4, 0.54, REVISION, True, "pretrained=org/delta-7b"),
    "OtherRev-7B": (5, 0.70, OTHER_REVISION, True, "pretrained=org/otherrev-7b"),
    "Unverified-7B": (6, 0.75, REVISION, False, "pretrained=org/unverified-7b"),
}


def _submit(run_file: Path, out: Path, name: str, attach: bool) -> None:
    argv = ["submit", str(run_file), "--out", str(out), "--model-name", name, "--resamples", SUBMIT_RESAMPLES]
    assert cli.main(argv + (["--attach-predictions"] if attach else [])) == 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The submissions folder, the run folders behind it and the files by role."""
    base = tmp_path_factory.mktemp("leaderboard")
    subs, run_root = base / "submissions", base / "runs"
    subs.mkdir()
    run_files, files = {}, {}
    for i, (name, (seed, skill, source, attach, args)) in enumerate(FULL.items()):
        recs, resps = runs.synthetic_run(seed=seed, skill=skill, item_seed=0)  # same items for every model
        run_files[name] = runs.write_run(run_root / f"m{i}", f"model{i}", recs, resps, data_source=source,
                                         model_args=args)
        files[name] = subs / f"m{i}.json"
        _submit(run_files[name], files[name], name, attach)
    recs, resps = runs.synthetic_run(seed=7, skill=0.7, item_seed=0, scale=0.02)
    del recs["arena"]
    _submit(runs.write_run(run_root / "partial", "partial", recs, resps, data_source=REVISION),
            files.setdefault("partial", subs / "partial.json"), "Partial-7B", True)
    recs, resps = runs.synthetic_run(seed=8, scale=0.02)
    _submit(runs.write_run(run_root / "synth", "synth", recs, resps, synthetic=True, data_source="synthetic:sha256:ab"),
            files.setdefault("synthetic", subs / "synthetic.json"), "Synthetic-7B", True)
    doc = json.loads(files["Gamma-7B"].read_text())
    est = doc["subsets"]["cpsc-test"]["metrics"]["strict"]["f1"]
    est["value"] += 4.0  # inside its (widened) interval: only recomputation catches it
    est["hi"] += 4.0
    files["tampered"] = subs / "tampered.json"
    files["tampered"].write_text(json.dumps(doc))
    files["duplicate"] = subs / "zz_copy_of_alpha.json"
    shutil.copy(files["Alpha-7B"], files["duplicate"])
    files["broken"] = subs / "broken.json"
    files["broken"].write_text("{not json")
    # Alpha's own HTML report beside its submission, with a script the copy must not run.
    files["Alpha-7B"].with_suffix(".html").write_text(
        "<!DOCTYPE html><html><head><title>alpha report</title></head><body><h1>Alpha report</h1>"
        "<script>document.title = 'script ran'</script></body></html>")
    return {"subs": subs, "runs": run_files, "files": files, "base": base}


@pytest.fixture(scope="module")
def site(folder: dict) -> dict:
    out = folder["base"] / "site"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        assert cli.main(["leaderboard", "build", str(folder["subs"]), "--out", str(out), "--include-published",
                         "--resamples", str(BOARD_RESAMPLES), "--jobs", "1"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    by_model = {e["model"]: e for e in board["entries"]}
    return {"out": out, "board": board, "by_model": by_model}


class _Tables(HTMLParser):
    """Rows of every <table id=...> of a page: per row its attributes and (text, data-sort) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self._row = {"attrs": a, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [[], a.get("data-sort")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row["cells"].append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)


def _tables(path: Path) -> dict[str, list[dict]]:
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


def _oriented_mean(doc: dict, mode: str) -> float:
    vals = []
    for c in COLUMNS:
        metrics = doc["subsets"][c.subset]["metrics"]
        v = (metrics["judge"] if "judge" in metrics else metrics[mode])[c.metric]["value"]
        vals.append(100.0 - v if c.lower_is_better else v)
    return sum(vals) / len(vals)


def test_overview_numbers_are_the_submissions(site: dict, folder: dict) -> None:
    tables = _tables(site["out"] / "index.html")
    for mode in ("paper", "strict"):
        header, *rows = tables[f"board-{mode}"]
        titles = [t for t, _ in header["cells"]]
        entry_rows = {r["attrs"]["data-slug"]: r for r in rows if "data-slug" in r["attrs"]}
        assert len(entry_rows) == len(site["board"]["entries"]) == 7
        for name in FULL:
            e = site["by_model"][name]
            doc = json.loads(folder["files"][name].read_text())
            cells = dict(zip(titles, entry_rows[e["slug"]]["cells"]))
            for c in COLUMNS:
                metrics = doc["subsets"][c.subset]["metrics"]
                expected = (metrics["judge"] if "judge" in metrics else metrics[mode])[c.metric]["value"]
                text, sort = cells[c.title + (" ↓" if c.lower_is_better else "")]
                assert float(sort) == expected and text.rstrip("*≠") == f"{expected:.1f}", (name, mode, c.key)
            overall = float(cells[f"Overall ({mode})"][1])
            assert math.isclose(overall, _oriented_mean(doc, mode), abs_tol=1e-9), (name, mode)
    published = [r for r in tables["board-paper"][1:] if r["attrs"].get("class") == "published"]
    assert {r["cells"][1][0].split("PULSE paper")[0] for r in published} >= {"PULSE-7B", "GPT-4o", "Random"}
    assert all(r["cells"][0][0] == "published" for r in published)
    assert not any(r["attrs"].get("class") == "published" for r in tables["board-strict"][1:])


def test_exclusions_and_their_reasons(site: dict) -> None:
    excluded = {x["source"]: x["reasons"] for x in site["board"]["excluded"]}
    assert set(excluded) == {"tampered.json", "zz_copy_of_alpha.json", "synthetic.json", "broken.json"}
    assert any(r.startswith("cpsc-test strict f1: submitted") and "recomputed from the predictions" in r
               for r in excluded["tampered.json"])
    assert excluded["zz_copy_of_alpha.json"] == ["duplicate of m0.json (the same predictions_sha256)"]
    assert "synthetic data" in excluded["synthetic.json"][0]
    assert excluded["broken.json"][0].startswith("unreadable:")
    page = (site["out"] / "index.html").read_text()
    listed = {r["cells"][0][0] for r in _tables(site["out"] / "index.html")["excluded-table"][1:]}
    assert listed == set(excluded) and "cpsc-test strict f1: submitted" in page


def test_unverified_partial_and_not_comparable_entries_are_shown_unranked(site: dict) -> None:
    by = site["by_model"]
    unv, part, other = by["Unverified-7B"], by["Partial-7B"], by["OtherRev-7B"]
    assert unv["status"] == "unverified" and unv["rank"] is None and unv["unranked_reason"].startswith("unverified")
    assert part["verified"] and not part["complete"] and part["missing_subsets"] == ["arena"]
    assert part["rank"] is None and "arena: missing" in part["unranked_reason"]
    assert part["values"]["strict"]["arena/score"] is None  # missing, never 0
    assert other["rank"] is None and not other["comparable"]
    assert any("data revision" in p and OTHER_REVISION in p and REVISION in p for p in other["problems"])
    tables = _tables(site["out"] / "index.html")
    header, *rows = tables["board-strict"]
    titles = [t for t, _ in header["cells"]]
    row = next(r for r in rows if r["attrs"].get("data-slug") == part["slug"])
    cells = dict(zip(titles, row["cells"]))
    assert cells["Arena"] == ("missing", "") and cells["Rank"][0] == "–"
    assert "partial" in cells["Status"][0]
    assert cells["PTB AUC"][0].endswith("*")  # 42 of 2082 items
    row = next(r for r in rows if r["attrs"].get("data-slug") == unv["slug"])
    assert dict(zip(titles, row["cells"]))["Status"][0].startswith("unverified")


def test_ranks_and_ties_follow_the_paired_tests(site: dict) -> None:
    board, by = site["board"], site["by_model"]
    ranked = sorted((e for e in board["entries"] if e["ranked"]), key=lambda e: e["ranking"]["position"])
    assert {e["model"] for e in ranked} == {"Alpha-7B", "Beta-7B", "Gamma-7B", HOSTILE_NAME}
    alpha = board["alpha"]
    scores = [e["overall"]["strict"]["value"] for e in ranked]
    assert scores == sorted(scores, reverse=True)
    for e in ranked[1:]:  # the rule: tie with the group's leader iff its paired test is not significant
        r = e["ranking"]
        leader = next(x for x in ranked if x["slug"] == r["tested_against"])
        tied = r["vs_leader"]["p_value"] >= alpha
        assert (e["rank"] == leader["rank"]) == tied, e["model"]
        assert (r["leader"] == leader["slug"]) == tied
        assert r["vs_leader"]["test"] == "paired bootstrap"
    # equal skill ties, a 25-point skill gap does not
    assert [e["rank_label"] for e in ranked] == ["=1", "=1", "=3", "=3"]
    assert {ranked[0]["model"], ranked[1]["model"]} == {"Alpha-7B", "Beta-7B"}
    assert by["Gamma-7B"]["ranking"]["vs_top"]["p_value"] < alpha
    assert by["Alpha-7B"]["ranking"]["tied_with"] == [by["Beta-7B"]["slug"]]


def test_subset_tests_are_ecgbench_compare_s(site: dict, folder: dict, capsys: pytest.CaptureFixture) -> None:
    """The subset pages' differences against the top entry equal `ecgbench compare`'s strict rows."""
    board, by = site["board"], site["by_model"]
    slug_to_model = {e["slug"]: e["model"] for e in board["entries"]}
    for subset in ("ptb-test", "csn-test-no-cot"):
        top = slug_to_model[board["subsets"][subset]["top"]]
        other = next(m for m in ("Gamma-7B", "Beta-7B") if m != top)
        capsys.readouterr()
        assert cli.main(["compare", str(folder["runs"][top]), str(folder["runs"][other]), "--resamples",
                         str(BOARD_RESAMPLES), "--format", "json"]) == 0
        rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]
                if r["subset"] == subset and r["mode"] == "strict"}
        mine = by[other]["subsets"][subset]["vs_top"]
        assert set(mine) == set(rows)
        for metric, d in mine.items():
            for key in ("diff", "lo", "hi", "p_value"):
                assert math.isclose(d[key], rows[metric][key], rel_tol=0, abs_tol=1e-9), (subset, metric, key)
            assert d["test"] == rows[metric]["test"]
    gamma = by["Gamma-7B"]["subsets"]["csn-test-no-cot"]["vs_top"]["accuracy"]
    assert gamma["test"] == "McNemar exact"
    header, *rows = _tables(site["out"] / "subset-csn-test-no-cot.html")["subset-table"]
    cells = dict(zip([t for t, _ in header["cells"]], next(r for r in rows if r["attrs"].get("data-slug")
                                                             == by["Gamma-7B"]["slug"])["cells"]))
    assert cells["CSN Δ vs top"][0] == site_module.diff_text(gamma) and "McNemar exact" in cells["CSN Δ vs top"][0]


def test_subset_intervals_are_ecgbench_report_s(site: dict, folder: dict, capsys: pytest.CaptureFixture) -> None:
    """A verified entry's intervals are the board's own bootstrap: `ecgbench report`'s on the same run."""
    capsys.readouterr()
    assert cli.main(["report", str(folder["runs"]["Alpha-7B"]), "--format", "json", "--resamples",
                     str(BOARD_RESAMPLES), "--no-published"]) == 0
    report = json.loads(capsys.readouterr().out)["runs"][0]["subsets"]
    alpha = site["by_model"]["Alpha-7B"]
    for c in COLUMNS:
        for mode in ("paper", "strict"):
            mine, theirs = alpha["subsets"][c.subset]["metrics"][mode][c.metric], report[c.subset]["modes"][mode][c.metric]
            for key in ("value", "lo", "hi"):
                assert math.isclose(mine[key], theirs[key], abs_tol=1e-9), (c.key, mode, key)
    assert alpha["subsets"]["ptb-test"]["intervals"] == "board"
    header, *rows = _tables(site["out"] / "subset-ptb-test.html")["subset-table"]
    row = next(r for r in rows if r["attrs"].get("data-slug") == alpha["slug"])
    est = alpha["subsets"]["ptb-test"]["metrics"]["strict"]["f1"]
    assert dict(zip([t for t, _ in header["cells"]], row["cells"]))["PTB F1 strict [95% CI]"][0] == (
        f"{est['value']:.1f} [{est['lo']:.1f}, {est['hi']:.1f}]")


def test_credentials_and_hostile_names_do_not_reach_the_pages(site: dict) -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in site["out"].iterdir()}
    assert not [name for name, text in texts.items() if SECRET in text]
    assert site["by_model"]["Alpha-7B"]["model_args"] == "pretrained=org/alpha-7b,api_key=***"
    assert not [name for name, text in texts.items() if '<img src=x' in text and name.endswith(".html")]
    assert "&lt;img src=x" in texts["index.html"]
    assert all(str(site["out"].parent) not in text for text in texts.values())  # no local paths published


def test_check_says_where_an_entry_lands(site: dict, folder: dict, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    # the multi-process path (--jobs 2) gives the numbers of the in-process build
    assert cli.main(["leaderboard", "check", str(folder["files"]["Gamma-7B"]), "--against", str(folder["subs"]),
                     "--resamples", str(BOARD_RESAMPLES), "--jobs", "2", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["ranking"] == site["by_model"]["Gamma-7B"]["ranking"] and entry["rank_label"] == "=3"
    # a small board: Delta's folder; Gamma (checked from outside it) ties with Delta
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(folder["files"][HOSTILE_NAME], small / "delta.json")
    argv = ["--against", str(small), "--resamples", str(BOARD_RESAMPLES), "--jobs", "1"]
    assert cli.main(["leaderboard", "check", str(folder["files"]["Gamma-7B"]), *argv]) == 0
    out = capsys.readouterr().out
    assert "would rank =1 of 2 ranked entries" in out and f"ties with: {HOSTILE_NAME}" in out
    assert "csn-test-no-cot: rank" in out
    assert cli.main(["leaderboard", "check", str(folder["files"]["tampered"]), *argv]) == 1
    assert "cpsc-test strict f1: submitted" in capsys.readouterr().err
    assert cli.main(["leaderboard", "check", str(folder["files"]["Unverified-7B"]), *argv]) == 0
    assert "not ranked: unverified" in capsys.readouterr().out


def test_rebuild_removes_pages_of_entries_gone(site: dict, folder: dict, tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(folder["files"]["Beta-7B"], subs / "b.json")
    out = tmp_path / "site"
    out.mkdir()
    stale = out / "entry-old-0000000000.html"
    stale.write_text("old")
    (out / "leaderboard.json").write_text(json.dumps({"files": [stale.name, "../outside.html"]}))
    (tmp_path / "outside.html").write_text("not ours")
    assert cli.main(["leaderboard", "build", str(subs), "--out", str(out), "--resamples", "20", "--jobs", "1"]) == 0
    assert not stale.exists() and (tmp_path / "outside.html").exists()
    assert (out / f"entry-{site['by_model']['Beta-7B']['slug']}.html").exists()
    assert cli.main(["leaderboard", "build", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_browser_sorts_searches_and_opens_an_entry(site: dict, browser_page, screenshot) -> None:
    """Each step waits for the state its action brings (the header's new sort order, the search
    count, the pressed mode button, the new page's address), then checks it."""
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((site["out"] / "index.html").as_uri())
    screenshot(page, "leaderboard.png")

    table = page.locator("#board-paper")
    column = [c.title for c in COLUMNS].index("CPSC F1") + 7  # rank, model, status, date, versions, data, overall
    header = table.locator("th", has_text="CPSC F1")
    assert header.get_attribute("aria-sort") is None  # unsorted until clicked
    header.click()  # first click: best first
    page.wait_for_selector("#board-paper th[aria-sort=descending]:has-text('CPSC F1')")

    def column_values() -> list[str]:
        return page.eval_on_selector_all(
            "#board-paper tbody tr", f"rows => rows.map(r => r.cells[{column}].getAttribute('data-sort'))")

    values = column_values()
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers, reverse=True) and len(values) == 7 + len(site["board"]["published"]["rows"])
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # undefined values last
    header.click()
    page.wait_for_selector("#board-paper th[aria-sort=ascending]:has-text('CPSC F1')")
    numbers = [float(v) for v in column_values() if v]
    assert numbers == sorted(numbers)

    assert page.text_content("#search-count") == ""
    page.fill("#search", "gamma")
    page.wait_for_function("document.querySelector('#search-count').textContent.startsWith('1 of ')")
    visible = page.eval_on_selector_all("#board-paper tbody tr", "rows => rows.filter(r => !r.hidden).map(r => r.cells[1].innerText)")
    assert len(visible) == 1 and visible[0].startswith("Gamma-7B")
    page.fill("#search", "")
    page.wait_for_function("document.querySelector('#search-count').textContent === ''")
    assert page.get_attribute("button[data-mode=strict]", "aria-pressed") == "false"
    page.click("button[data-mode=strict]")
    page.wait_for_selector("button[data-mode=strict][aria-pressed=true]")
    assert page.is_visible("#board-strict") and not page.is_visible("#board-paper")
    screenshot(page, "leaderboard-strict.png")

    alpha = site["by_model"]["Alpha-7B"]
    page.click("#board-strict a:text-is('Alpha-7B')")
    page.wait_for_url(f"**/{site_module.entry_page(alpha['slug'])}")
    assert page.text_content("#entry-title") == "Alpha-7B"
    assert page.text_content("#model-args") == "pretrained=org/alpha-7b,api_key=***"
    assert "Tied with" in page.text_content("#standing")
    screenshot(page, "leaderboard-entry.png", full_page=True)
    page.click("#report-link")
    page.wait_for_url(f"**/{alpha['report']}")
    assert page.text_content("h1") == "Alpha report" and page.title() == "alpha report"  # its script did not run
    assert not errors
    assert all(u.startswith(("file:", "data:")) for u in requests), [u for u in requests if not u.startswith("file:")]
