"""What ECGBench Studio shows, as plain functions (no Gradio, no browser): tested on their own.

Explore joins the per-item scoring records of several runs (lmms-eval output folders read with
``pulse_tasks.results.runs.load_runs``, so split evaluations merge as in ``ecgbench report``) by item id,
filters and pages them, and builds the item view: question turns, gold, each run's answer, its
paper and strict labels, the strict explanation (``record["explain"]``, when the scorer wrote one),
the judge's status, score, criteria and explanations. Everything model-written is HTML-escaped
before it is put in a page.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse_tasks.results.redaction import redact_model_args
from pulse_tasks.results.runs import Run, RunError, load_runs
from pulse_tasks.scoring.records import (  # noqa: F401 -- the outcome words and record questions, defined once there
    ABSENT,
    CORRECT,
    FAILED,
    INVALID,
    MISSING,
    MODES,
    WRONG,
    is_correct,
    is_judged,
    judge_failed,
    judge_score,
    judged_record,
    kind_of,
    outcome,
    score_record,
)

PAGE_SIZE = 20  # table rows per page: a screenful with thumbnails
THUMB_WIDTH = 120  # px: enough to tell a 12-lead printout from a rhythm strip
THUMB_QUALITY = 70  # JPEG quality of thumbnails: ~4-8 kB each, a page of them stays light
QUESTION_CHARS = 160  # table cells show the question's start; the item view shows all of it


# ----------------------------------------------------------------------------------------------
# Loading runs


@dataclass
class LoadedRuns:
    """The runs found under the --results paths, and one message per path that could not be read."""

    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_results(paths: Iterable[str | Path]) -> LoadedRuns:
    """Every run under ``paths`` (split runs merged); unreadable paths become messages, not errors."""
    good, errors = [], []
    for p in paths:
        try:
            load_runs([p])
        except (RunError, OSError, ValueError) as exc:
            errors.append(f"{p}: {exc}")
            continue
        good.append(p)
    try:
        runs = load_runs(good) if good else []
    except (RunError, OSError, ValueError) as exc:  # a file changed between the two reads
        return LoadedRuns([], errors + [str(exc)])
    return LoadedRuns(runs, errors)


def subsets_of(runs: Sequence[Run]) -> list[str]:
    """Subsets present in at least one run, in the paper's table order."""
    from pulse_tasks.results.report import SUBSET_ORDER

    have = {name for run in runs for name in run.subsets}
    return [name for name in SUBSET_ORDER if name in have]


def run_facts(run: Run) -> dict[str, Any]:
    """What the page says about a run; model_args with credential-like values redacted."""
    return {"name": run.name, "model": run.model, "model_args": redact_model_args(run.model_args),
            "results_files": [str(p) for p in (run.parts or [run.results_file])],
            "lmms_eval_version": run.lmms_eval_version, "synthetic": run.synthetic,
            "subsets": sorted(run.subsets)}


# ----------------------------------------------------------------------------------------------
# One record (the record questions, is_correct / outcome / judge_score / judge_failed, are
# pulse_tasks.scoring.records')


def label_text(value: Any) -> str:
    """A parsed answer as text: a letter, a label list joined, '(none)' for nothing parsed."""
    if value is None or value == [] or value == "":
        return "(none)"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def response_turns(response: Any) -> list[str]:
    """A run's response as a list of turns (the arena keeps one answer per turn)."""
    if response is None:
        return []
    if isinstance(response, (list, tuple)):
        return [str(r) for r in response]
    return [str(response)]


# ----------------------------------------------------------------------------------------------
# Items across runs


@dataclass
class Cell:
    """One run's record and response for one item."""

    record: dict[str, Any] | None
    response: Any = None


@dataclass
class ItemRow:
    """One item of a subset, with every run's cell (run name -> cell)."""

    id: str
    subset: str
    cells: dict[str, Cell]
    doc: dict[str, Any] | None = None  # the normalized ECGBench doc (questions, answers) when the data is at hand

    def record(self, run: str) -> dict[str, Any] | None:
        cell = self.cells.get(run)
        return cell.record if cell else None

    @property
    def questions(self) -> list[str]:
        return [str(q) for q in (self.doc or {}).get("questions") or []]

    @property
    def answers(self) -> list[str]:
        return [str(a) for a in (self.doc or {}).get("answers") or []]


def item_rows(runs: Sequence[Run], subset: str, docs: Mapping[str, dict[str, Any]] | None = None) -> list[ItemRow]:
    """Items of ``subset`` in the order the runs list them (first run first), joined by id."""
    rows: dict[str, ItemRow] = {}
    for run in runs:
        sr = run.subsets.get(subset)
        if sr is None or sr.records is None:
            continue
        responses = sr.responses or [None] * len(sr.records)
        for record, response in zip(sr.records, responses):
            item_id = str(record.get("id", ""))
            row = rows.get(item_id)
            if row is None:
                row = rows[item_id] = ItemRow(item_id, subset, {}, (docs or {}).get(item_id))
            row.cells[run.name] = Cell(record, response)
    return list(rows.values())


@dataclass(frozen=True)
class Filters:
    """The Explore filters; an empty Filters keeps every row."""

    wrong_in: str | None = None  # run A: keep items it got wrong ...
    right_in: str | None = None  # ... and run B got right
    mode: str = "strict"  # which scoring mode decides right/wrong
    unparsed: bool = False  # some run's answer was unparsed in paper mode
    invalid: bool = False  # some run's answer was invalid in strict mode
    failed: bool = False  # some run's generation failed
    judge_failed: bool = False  # some run's judge call failed
    text: str = ""  # case-insensitive search in id, question, gold and answers


def _searchable(row: ItemRow) -> str:
    parts = [row.id, *row.questions, *row.answers]
    for cell in row.cells.values():
        parts += response_turns(cell.response)
        if cell.record and not is_judged(cell.record):
            parts.append(label_text(score_record(cell.record).gold))
    return "\n".join(parts).lower()


def matches(row: ItemRow, f: Filters) -> bool:
    """Whether ``row`` passes every filter that is set."""
    if f.wrong_in and is_correct(row.record(f.wrong_in), f.mode) is not False:
        return False
    if f.right_in and is_correct(row.record(f.right_in), f.mode) is not True:
        return False
    records = [c.record for c in row.cells.values() if c.record is not None]
    scored = [score_record(r) for r in records if not is_judged(r)]
    if f.unparsed and not any(r.unparsed for r in scored):
        return False
    if f.invalid and not any(r.invalid for r in scored):
        return False
    if f.failed and not any(r.failed for r in scored):
        return False
    if f.judge_failed and not any(judge_failed(r) for r in records):
        return False
    text = f.text.strip().lower()
    return not text or text in _searchable(row)


def filter_rows(rows: Iterable[ItemRow], f: Filters) -> list[ItemRow]:
    return [row for row in rows if matches(row, f)]


@dataclass(frozen=True)
class Page:
    rows: list[ItemRow]
    number: int  # 1-based, clamped to [1, count]
    count: int  # pages (at least 1, also when nothing matched)
    total: int  # rows over all pages


def paginate(rows: Sequence[ItemRow], number: int, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` (1-based; out-of-range numbers clamp to the first/last page)."""
    if size < 1:
        raise ValueError("page size must be at least 1")
    count = max(1, -(-len(rows) // size))
    number = min(max(1, int(number)), count)
    start = (number - 1) * size
    return Page(list(rows[start:start + size]), number, count, len(rows))


# ----------------------------------------------------------------------------------------------
# The strict explanation (#13's record["explain"]) and the judge


def explain_segments(explain: Mapping[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The explained region cut into (text, span or None) pieces, spans in order of ``start``.

    Spans with offsets outside the region or overlapping an earlier span are left out of the
    highlighting (they are still listed by the item view)."""
    region = str(explain.get("region") or "")
    pieces: list[tuple[str, dict[str, Any] | None]] = []
    at = 0
    spans = sorted((s for s in explain.get("spans") or [] if isinstance(s, Mapping)),
                   key=lambda s: (s.get("start") if isinstance(s.get("start"), int) else -1))
    for span in spans:
        start, end = span.get("start"), span.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and at <= start <= end <= len(region)):
            continue
        if start > at:
            pieces.append((region[at:start], None))
        pieces.append((region[start:end], dict(span)))
        at = end
    if at < len(region):
        pieces.append((region[at:], None))
    return pieces


def explain_html(explain: Mapping[str, Any] | None) -> str:
    """The strict reading of an answer: the region read, each span (label, negated, trigger),
    the labels kept and why the answer was invalid; a note when the record carries none."""
    if not explain:
        return '<p class="muted">No strict explanation in this record (written before the scorer recorded one).</p>'
    out = [f'<p>Strict reading ({html.escape(str(explain.get("mode", "strict")))} mode) of the region:</p>',
           '<blockquote class="region">']
    for text, span in explain_segments(explain):
        if span is None:
            out.append(html.escape(text))
            continue
        cls = "span negated" if span.get("negated") else "span"
        title = f'{span.get("label")}' + (" (negated)" if span.get("negated") else "")
        out.append(f'<mark class="{cls}" title="{html.escape(title)}">{html.escape(text)}</mark>')
    out.append("</blockquote>")
    spans = [s for s in explain.get("spans") or [] if isinstance(s, Mapping)]
    if spans:
        out.append("<table><tr><th>text</th><th>label</th><th>negated</th><th>trigger</th><th>source</th></tr>")
        for s in spans:
            out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                s.get("text", ""), s.get("label", ""), "yes" if s.get("negated") else "no",
                s.get("trigger") or "", s.get("source", ""))) + "</tr>")
        out.append("</table>")
    out.append(f'<p>Labels kept: <b>{html.escape(label_text(explain.get("labels")))}</b></p>')
    if explain.get("invalid_reason"):
        out.append(f'<p class="bad">Invalid: {html.escape(str(explain["invalid_reason"]))}</p>')
    return "".join(out)


def judge_html(record: Mapping[str, Any]) -> str:
    """Judge status, score, per-criterion scores and explanations, and the error when it failed."""
    status = judged_record(record).status
    score = judge_score(record)
    out = [f'<p>Judge: <b>{html.escape(status)}</b>' + (f", score <b>{score:.1f}</b>" if score is not None else "")
           + "</p>"]
    identity = record.get("judge") or {}
    if isinstance(identity, Mapping) and identity.get("model"):
        out.append(f'<p class="muted">judge model {html.escape(str(identity.get("model")))}, rubric '
                   f'{html.escape(str(identity.get("rubric_version", "?")))}</p>')
    criteria = record.get("criteria") or {}
    explanations = record.get("explanations") or {}
    if criteria or explanations:
        out.append("<table><tr><th>criterion</th><th>score</th><th>explanation</th></tr>")
        for name in dict.fromkeys([*criteria, *explanations]):
            out.append(f"<tr><td>{html.escape(str(name))}</td><td>{html.escape(str(criteria.get(name, '')))}</td>"
                       f"<td>{html.escape(str(explanations.get(name, '')))}</td></tr>")
        out.append("</table>")
    if record.get("error"):
        out.append(f'<p class="bad">Judge error: {html.escape(str(record["error"]))}</p>')
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Page fragments (HTML strings; the app puts them into gr.HTML)


def thumbnail_uri(image: Any, width: int = THUMB_WIDTH) -> str:
    """A small JPEG data URI of a PIL image (thumbnails travel inside the table's HTML)."""
    img = image.convert("RGB")
    img.thumbnail((width, width * 4))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def table_html(page: Page, runs: Sequence[str], thumbnails: Mapping[str, str] | None = None,
               mode: str = "strict") -> str:
    """The paged items table: thumbnail, id, question, gold, and per run answer, paper and strict
    labels, outcome (or judge status and score)."""
    head = "".join(f'<th colspan="4">{html.escape(r)}</th>' for r in runs)
    sub = "".join("<th>answer</th><th>paper</th><th>strict</th><th>outcome</th>" for _ in runs)
    out = ['<table class="items"><thead><tr><th rowspan="2">image</th><th rowspan="2">id</th>'
           f'<th rowspan="2">question</th><th rowspan="2">gold</th>{head}</tr><tr>{sub}</tr></thead><tbody>']
    for row in page.rows:
        thumb = (thumbnails or {}).get(row.id)
        img = f'<img class="thumb" alt="ECG {html.escape(row.id)}" src="{thumb}">' if thumb else ""
        question = row.questions[0] if row.questions else ""
        if len(question) > QUESTION_CHARS:
            question = question[:QUESTION_CHARS] + "..."
        first = next((c.record for c in row.cells.values() if c.record), None) or {}
        gold = row.answers[0] if row.answers and is_judged(first) else label_text(score_record(first).gold if first else None)
        cells = []
        for name in runs:
            cell = row.cells.get(name)
            rec = cell.record if cell else None
            answer = " / ".join(response_turns(cell.response)) if cell else ""
            if rec is None:
                cells.append(f'<td colspan="4" class="muted">{ABSENT}</td>')
                continue
            scored = None if is_judged(rec) else score_record(rec)
            res = outcome(rec, mode)
            cls = {CORRECT: "good", WRONG: "bad", INVALID: "bad", FAILED: "bad", MISSING: "bad"}.get(res, "")
            cells.append(f"<td>{html.escape(answer[:QUESTION_CHARS])}</td>"
                         f"<td>{'' if scored is None else html.escape(label_text(scored.paper))}</td>"
                         f"<td>{'' if scored is None else html.escape(label_text(scored.strict))}</td>"
                         f'<td class="{cls}">{html.escape(res)}</td>')
        out.append(f'<tr data-id="{html.escape(row.id)}"><td>{img}</td><td>{html.escape(row.id)}</td>'
                   f"<td>{html.escape(question)}</td><td>{html.escape(gold)}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    if not page.rows:
        out.append('<p class="muted">No item matches these filters.</p>')
    return "".join(out)


def item_html(row: ItemRow, runs: Sequence[str]) -> str:
    """The item view (beside the full-size image): every turn with its gold answer, then per run
    the answer(s), paper and strict labels, outcome, strict explanation and judge."""
    out = [f'<h3>{html.escape(row.subset)} / {html.escape(row.id)}</h3>']
    questions, answers = row.questions, row.answers
    if questions:
        for i, q in enumerate(questions):
            gold = answers[i] if i < len(answers) else ""
            out.append(f'<div class="turn"><p><b>Turn {i + 1} question</b></p><pre>{html.escape(q)}</pre>'
                       f'<p><b>Gold</b></p><pre>{html.escape(gold)}</pre></div>')
    else:
        out.append('<p class="muted">Question and gold text are not at hand (the run\'s data is not available '
                   "here: start Studio with --data).</p>")
    for name in runs:
        cell = row.cells.get(name)
        out.append(f'<div class="run"><h4>{html.escape(name)}</h4>')
        if cell is None or cell.record is None:
            out.append(f'<p class="muted">{ABSENT}</p></div>')
            continue
        rec = cell.record
        for i, turn in enumerate(response_turns(cell.response), start=1):
            out.append(f'<p><b>Answer{f" (turn {i})" if len(response_turns(cell.response)) > 1 else ""}</b></p>'
                       f'<pre class="answer">{html.escape(turn)}</pre>')
        if is_judged(rec):
            out.append(judge_html(rec))
        else:
            sr = score_record(rec)
            out.append(f"<p>gold: <b>{html.escape(label_text(sr.gold))}</b>"
                       + (f" (strict gold: {html.escape(label_text(sr.gold_strict))})"
                          if "gold_strict" in rec else "") + "</p>")
            out.append(f"<p>paper: <b>{html.escape(label_text(sr.paper))}</b> ({outcome(rec, 'paper')})"
                       f"{' unparsed' if sr.unparsed else ''}; strict: "
                       f"<b>{html.escape(label_text(sr.strict))}</b> ({outcome(rec, 'strict')})</p>")
            out.append(explain_html(sr.explain))
        out.append("</div>")
    return "".join(out)


def corpus_html(runs: Sequence[Run], subset: str, resamples: int, seed: int = 0) -> str:
    """The subset's corpus numbers per run and mode with 95% bootstrap intervals (as the report)."""
    from pulse_tasks.results import report

    out = ["<table class=\"corpus\"><tr><th>run</th><th>mode</th><th>n</th>"]
    results = [(run, report.subset_result(run.subsets[subset], resamples, seed)) for run in runs if subset in run.subsets]
    metrics = list(dict.fromkeys(k for _, r in results for k in r["modes"]["paper"]))
    out += [f"<th>{html.escape(m)}</th>" for m in metrics] + ["<th>counts</th></tr>"]
    for run, r in results:
        counts = ", ".join(f"{k} {v}" for k, v in (r.get("counts") or {}).items() if v not in (None, 0, 0.0))
        for mode in MODES:
            label = run.name + (f" ({report.SYNTHETIC_LABEL})" if run.synthetic else "")
            out.append(f"<tr><td>{html.escape(label)}</td><td>{mode}</td><td>{r['n']}</td>"
                       + "".join(f"<td>{html.escape(report.format_estimate(r['modes'][mode].get(m)))}</td>"
                                 for m in metrics)
                       + f"<td>{html.escape(counts) if mode == 'paper' else ''}</td></tr>")
    out.append("</table>")
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Questions and images from the run's data source


def data_source_for(data: str | None, runs: Sequence[Run]) -> tuple[Any | None, str]:
    """(the ECGBench source to read questions and images from, a note for the page).

    ``--data`` first, then $ECGBENCH_DATA, then the hub (its local cache) when the runs read the
    hub; a run on a local copy without --data has no images here, and the note says so."""
    import os

    from pulse_tasks.data import sources as ecg_data

    try:
        if data or os.environ.get(ecg_data.ENV_VAR):
            src = ecg_data.resolve_source(data)
            return src, f"questions and images from {src.location}"
    except ecg_data.DataError as exc:
        return None, str(exc)
    sources = {s for run in runs for s in run.data_sources}
    if sources and all(str(s).startswith("hub:") for s in sources):
        return ecg_data.resolve_source("hub"), "questions and images from the hub copy (local cache)"
    if not runs:
        return None, ""
    return None, ("these runs read a local ECGBench copy: start Studio with --data DIR (that copy) to see "
                  "questions and images")


class ItemData:
    """Questions (no image bytes) and images of the items, each subset read once and kept."""

    def __init__(self, source: Any | None) -> None:
        self.source = source
        self._docs: dict[str, dict[str, dict[str, Any]]] = {}
        self._images: dict[str, tuple[Any, dict[str, int]]] = {}
        self._thumbs: dict[tuple[str, str], str] = {}
        self.errors: dict[str, str] = {}  # subset -> why its data could not be read

    def docs(self, subset: str) -> dict[str, dict[str, Any]]:
        if self.source is None:
            return {}
        if subset not in self._docs:
            from pulse_tasks.data import sources as ecg_data

            try:
                self._docs[subset] = {d["id"]: d for d in ecg_data.load_records(subset, self.source)}
            except Exception as exc:  # noqa: BLE001 - any unreadable copy: a message in the page
                self.errors[subset] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                self._docs[subset] = {}
        return self._docs[subset]

    def image(self, subset: str, item_id: str) -> Any | None:
        """The item's image as PIL, or None when the data is not at hand."""
        if self.source is None:
            return None
        if subset not in self._images:
            from pulse_tasks.data import sources as ecg_data

            try:
                ds = ecg_data.load_subset(subset, self.source, check_images=False)
                self._images[subset] = (ds, {str(i): n for n, i in enumerate(ds["id"])})
            except Exception as exc:  # noqa: BLE001
                self.errors[subset] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                self._images[subset] = (None, {})
        ds, index = self._images[subset]
        if ds is None or item_id not in index:
            return None
        try:
            return ds[index[item_id]]["image"]
        except Exception as exc:  # noqa: BLE001 - one broken image must not break the page
            self.errors[subset] = f"image of {item_id}: {type(exc).__name__}: {exc}"
            return None

    def thumbnail(self, subset: str, item_id: str) -> str | None:
        key = (subset, item_id)
        if key not in self._thumbs:
            img = self.image(subset, item_id)
            if img is None:
                return None
            self._thumbs[key] = thumbnail_uri(img)
        return self._thumbs[key]
