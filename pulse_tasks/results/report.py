"""`ecgbench report`: the paper-layout table of one or more lmms-eval runs, with intervals.

One row per run and scoring mode (paper, strict), the columns of the paper's tables 3 and 4
(in-domain: PTB-XL AUC/F1/HL, report score, CODE-15 AUC/F1/HL, ECG-QA; out-of-domain: CPSC
AUC/F1/HL, CSN, G12, MMMU-ECG, arena), every number with its 95% bootstrap interval (items
resampled, corpus metrics recomputed on each resample, seeded), the counts that qualify it
(unparsed, invalid, generation and judge failures) and the published rows for reference.

    ecgbench report OUT/pulse-7b [OUT/other ...] --format md|csv|json|html --out DIR

A subset a run lacks shows as "missing", a metric that is undefined on the data as "undefined":
neither is ever a 0. Runs on synthetic data are labelled SYNTHETIC DATA in every format.

This module builds the report as plain data and renders markdown, CSV and JSON; the HTML page is
``pulse_tasks.results.html_report`` (which imports this module) and the command line with its format
dispatch is ``pulse_tasks.results.report_cli`` (which imports both).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

from pulse_tasks.scoring import bootstrap
from pulse_tasks.scoring.records import MISSING
from pulse_tasks.results.runs import Run, SubsetRun
from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.results.summary import summarize_subset

REPORT_SCHEMA = "ecgbench-report-v1"  # bumped whenever the JSON layout below changes
FORMATS = ("md", "csv", "json", "html")
SYNTHETIC_LABEL = "SYNTHETIC DATA"  # printed wherever a synthetic run appears: its numbers mean nothing
GENERATION_FAILURES_LABEL = "GENERATION FAILURES"  # banner on subsets over pulse_tasks.scoring.failures.FAILURE_THRESHOLD
# MISSING ("missing", pulse_tasks.scoring.records): the run has no such subset
UNDEFINED = "undefined"  # the subset ran but the metric is undefined on its items (e.g. no gold positives)
NO_INTERVAL_MARK = "†"  # a number without interval: the run kept no samples file (no --log_samples)
DECIMALS = 1  # the paper prints one decimal
EXIT_INPUT_ERROR = 2  # same code argparse uses for a bad command line
OUT_NAME = "ecgbench_report"  # file stem under --out
# Count columns of the counts table: record key -> header.
COUNT_KEYS = {"unparsed": "unparsed", "invalid": "invalid", "failed": "gen. failed", "missing": "missing",
              "judge_failed": "judge failed", "judge_skipped": "judge skipped"}
_ABSENT = object()  # marks a count that does not apply (blank), unlike an unknown one ("n/a")


@dataclass(frozen=True)
class Column:
    """One column of the paper's table."""

    subset: str  # hub config name
    metric: str  # "auc", "f1", "hamming_loss", "accuracy" or "score" (judged subsets)
    title: str

    @property
    def key(self) -> str:
        return f"{self.subset}/{self.metric}"

    @property
    def lower_is_better(self) -> bool:
        return self.metric in bootstrap.LOWER_IS_BETTER

    @property
    def domain(self) -> str:
        return BY_CONFIG[self.subset].domain


# The paper's column order (tables 3 and 4): in-domain first, then out-of-domain.
COLUMNS: tuple[Column, ...] = (
    Column("ptb-test", "auc", "PTB AUC"), Column("ptb-test", "f1", "PTB F1"),
    Column("ptb-test", "hamming_loss", "PTB HL"), Column("ptb-test-report", "score", "Report"),
    Column("code15-test", "auc", "CODE AUC"), Column("code15-test", "f1", "CODE F1"),
    Column("code15-test", "hamming_loss", "CODE HL"), Column("ecgqa-test", "accuracy", "ECG-QA"),
    Column("cpsc-test", "auc", "CPSC AUC"), Column("cpsc-test", "f1", "CPSC F1"),
    Column("cpsc-test", "hamming_loss", "CPSC HL"), Column("csn-test-no-cot", "accuracy", "CSN"),
    Column("g12-test-no-cot", "accuracy", "G12"), Column("mmmu-ecg", "accuracy", "MMMU"),
    Column("arena", "score", "Arena"),
)
SUBSET_ORDER: tuple[str, ...] = tuple(dict.fromkeys(c.subset for c in COLUMNS))  # the nine, in table order
MODE_NOTES = {
    "paper": "paper mode: the reference scoring, made deterministic (an unparsed letter earns the expected 1/k credit)",
    "strict": "strict mode: strict parsers; unparsed, empty or failed answers are wrong; full label vocabularies",
}


@lru_cache(maxsize=1)
def published() -> dict[str, Any]:
    """The published rows of the paper (pulse_tasks/results/published.json) with their caveats."""
    return json.loads(resources.files("pulse_tasks.results").joinpath("published.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------
# Building the report (plain data; every renderer reads only this)


def _est(value: Any) -> dict[str, float | None]:
    v = value if isinstance(value, (int, float)) and math.isfinite(value) else None
    return {"value": None if v is None else float(v), "lo": None, "hi": None}


def _from_aggregated(sr: SubsetRun) -> dict[str, Any]:
    """A subset without a samples file: lmms-eval's aggregated numbers, no intervals."""
    agg = sr.aggregated
    out: dict[str, Any] = {"intervals": False}
    if sr.subset.judged:
        score = _est(agg.get("judge_score"))
        out["modes"] = {"paper": {"score": score}, "strict": {"score": score}}
        out["criteria"] = {k: _est(v) for k, v in agg.items() if k != "judge_score" and not k.startswith("judge_")}
        out["counts"] = {"judge_failed": agg.get("judge_failed"), "judge_skipped": agg.get("judge_skipped")}
    else:
        out["modes"] = {m: {k: _est(agg.get(f"{k}_{m}")) for k in sr.subset.rule.metrics} for m in bootstrap.MODES}
        out["counts"] = {"unparsed": agg.get("unparsed"), "invalid_rate": agg.get("invalid_rate")}
    return out


def _from_records(sr: SubsetRun, resamples: int, seed: int) -> dict[str, Any]:
    s = summarize_subset(sr.subset, sr.records or [], resamples, seed)
    out: dict[str, Any] = {"intervals": resamples > 0, "modes": s.table()}
    if sr.subset.judged:
        out["criteria"] = {k: v.to_dict() for k, v in s.criteria.items()}
        out["counts"] = s.counts
        out["judge"] = s.aggregate.get("judge") or {}
        out["judge_added"] = {"n": sr.judge_added, "file": str(sr.judge_file) if sr.judge_file else None}
        return out
    out["counts"] = {**s.counts, "invalid_rate": s.aggregate["invalid_rate"]}
    if s.per_class:
        out["per_class_f1"] = {m: {c: e.to_dict() for c, e in classes.items()} for m, classes in s.per_class.items()}
        out["auc_nan_classes"] = s.aggregate["auc_nan_classes"]
        out["f1_undefined_classes"] = s.aggregate["f1_undefined_classes"]
    return out


def subset_result(sr: SubsetRun, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                  seed: int = bootstrap.DEFAULT_SEED) -> dict[str, Any]:
    """One subset of one run: values with intervals per mode, counts, per-class F1 / judge criteria."""
    body = _from_aggregated(sr) if sr.records is None else _from_records(sr, resamples, seed)
    n = len(sr.records) if sr.records is not None else sr.n_samples
    return {"subset": sr.subset.config, "task": sr.task, "n": n, "expected_n": sr.subset.n_items,
            "complete": n == sr.subset.n_items, "version": sr.version, "data_source": sr.data_source,
            "samples_file": str(sr.samples_file) if sr.samples_file else None,
            "generation_failures": generation_failures(sr), **body}


def generation_failures(sr: SubsetRun) -> dict[str, Any] | None:
    """Failed or empty generations of a subset (pulse_tasks.scoring.failures); None without a samples file."""
    if sr.records is None or sr.responses is None:
        return None
    from pulse_tasks.scoring.failures import summarize_responses

    return summarize_responses(sr.subset.config, [r.get("id") for r in sr.records], sr.responses).to_dict()


def failure_banners(report: dict[str, Any]) -> list[str]:
    """One line per run and subset whose generations failed too often (shown above every table)."""
    lines = []
    for r in report["runs"]:
        for name, sub in r["subsets"].items():
            f = sub.get("generation_failures")
            if f and f["over_threshold"]:
                lines.append(f"{r['name']} / {name}: {f['failed']} of {f['n']} generations failed or were empty "
                             f"({f['rate']:.0%}); its numbers mostly measure the failures. "
                             f"First failed ids: {', '.join(f['first_ids'])}")
    return lines


def _merged_note(r: dict[str, Any]) -> str:
    """', merged with the older results files ...' for a run read from several lmms-eval calls."""
    older = [f for f in r.get("results_files", []) if f != r["results_file"]]
    return f", merged with the older results {', '.join(f'`{f}`' for f in older)}" if older else ""


def run_summary(run: Run, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                seed: int = bootstrap.DEFAULT_SEED) -> dict[str, Any]:
    """Everything the report says about one run."""
    subsets = {name: subset_result(sr, resamples, seed) for name, sr in run.subsets.items()}
    return {"name": run.name, "results_file": str(run.results_file),
            "results_files": [str(p) for p in (run.parts or [run.results_file])], "model": run.model,
            "model_args": run.model_args, "lmms_eval_version": run.lmms_eval_version, "date": run.date,
            "synthetic": run.synthetic, "data_label": SYNTHETIC_LABEL if run.synthetic else None,
            "data_sources": sorted(run.data_sources),
            "subsets": subsets,
            "missing_subsets": [name for name in SUBSET_ORDER if name not in subsets],
            "other_tasks": run.other_tasks}


def build_report(runs: Sequence[Run], resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED, include_published: bool = True) -> dict[str, Any]:
    """The whole report as plain data (what --format json prints)."""
    pub = published()
    return {
        "schema": REPORT_SCHEMA,
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": bootstrap.CONFIDENCE,
                      "method": "percentile bootstrap over items; corpus metrics recomputed per resample"},
        "columns": [{"key": c.key, "subset": c.subset, "metric": c.metric, "title": c.title,
                     "domain": c.domain, "lower_is_better": c.lower_is_better} for c in COLUMNS],
        "synthetic": any(r.synthetic for r in runs),
        "warning": (f"{SYNTHETIC_LABEL}: at least one run was scored on synthetic data"
                    if any(r.synthetic for r in runs) else None),
        "runs": (summaries := [run_summary(r, resamples, seed) for r in runs]),
        "failure_banners": failure_banners({"runs": summaries}),
        "published": ({"source": pub["source"], "caveats": pub["caveats"], "rows": pub["rows"],
                       "judge_breakdown": pub.get("judge_breakdown", {})} if include_published else None),
        "modes": MODE_NOTES,
    }


# ----------------------------------------------------------------------------------------------
# Rendering


def cell(run: dict[str, Any], column: Column, mode: str) -> dict[str, Any] | None:
    """The estimate of one table cell, or None when the run lacks the subset."""
    sub = run["subsets"].get(column.subset)
    if sub is None:
        return None
    return sub["modes"][mode].get(column.metric) or {"value": None, "lo": None, "hi": None}


def _num(x: float | None) -> str:
    return f"{x:.{DECIMALS}f}"


def format_estimate(est: dict[str, Any] | None) -> str:
    """'82.4 [80.1, 84.0]'; 'missing' / 'undefined'; a dagger when there is no interval."""
    if est is None:
        return MISSING
    if est.get("value") is None:
        return UNDEFINED
    if est.get("lo") is None or est.get("hi") is None:
        return f"{_num(est['value'])}{NO_INTERVAL_MARK}"
    return f"{_num(est['value'])} [{_num(est['lo'])}, {_num(est['hi'])}]"


def run_label(run: dict[str, Any]) -> str:
    return f"{run['name']} ({SYNTHETIC_LABEL})" if run["synthetic"] else run["name"]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def _count(value: Any) -> str:
    if value is _ABSENT:  # the count does not apply to this kind of subset
        return ""
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def render_markdown(report: dict[str, Any]) -> str:
    """The report as GitHub markdown."""
    b = report["bootstrap"]
    out = ["# ECGBench report", ""]
    if report["synthetic"]:
        out += [f"> **{SYNTHETIC_LABEL}**: at least one run below was scored on synthetic data; "
                "its numbers say nothing about ECG skill.", ""]
    for line in report.get("failure_banners", []):
        out += [f"> **{GENERATION_FAILURES_LABEL}**: {line}", ""]
    out += [f"Values x100 with {b['confidence']:.0%} percentile bootstrap intervals over items "
            f"({b['resamples']} resamples, seed {b['seed']}; corpus metrics recomputed on every resample). "
            "HL (Hamming loss) is lower-better; everything else higher-better. "
            f"`{MISSING}`: the run has no such subset; `{UNDEFINED}`: the metric is undefined on the run's items; "
            f"`{NO_INTERVAL_MARK}`: no interval (no samples file: lmms-eval's number; or --resamples 0).", "",
            "In-domain: PTB-XL (AUC, F1, HL), Report, CODE-15% (AUC, F1, HL), ECG-QA. "
            "Out-of-domain: CPSC 2018 (AUC, F1, HL), CSN, G12EC, MMMU-ECG, Arena.", "",
            "## Scores (paper layout)", ""]
    header = ["run", "mode", *(c.title for c in COLUMNS)]
    rows = [[run_label(r), mode, *(format_estimate(cell(r, c, mode)) for c in COLUMNS)]
            for r in report["runs"] for mode in bootstrap.MODES]
    pub = report.get("published")
    if pub:
        for row in pub["rows"]:
            rows.append([f"{row['model']} (published)", "published",
                         *(_num(row["values"][c.key]) if c.key in row["values"] else MISSING for c in COLUMNS)])
    out += _md_table(header, rows) + [""]
    out += [f"- {text}" for text in report["modes"].values()]
    out += ["- Report and Arena are LLM-judge scores: one number per run, shown in both modes.", ""]

    out += ["## Counts", "", "Items scored against the published subset size; unparsed (paper mode), invalid "
            "(strict mode: unparsed, empty or failed), generation failures, missing predictions, judge failures.", ""]
    count_rows = []
    for r in report["runs"]:
        for c in SUBSET_ORDER:
            sub = r["subsets"].get(c)
            if sub is None:
                count_rows.append([run_label(r), c, MISSING, "", "", "", "", "", ""])
                continue
            k = sub["counts"]
            n = "n/a" if sub["n"] is None else str(sub["n"])
            size = f"{n} / {sub['expected_n']}" + ("" if sub["complete"] else " (partial)")
            count_rows.append([run_label(r), c, size, *(_count(k.get(key, _ABSENT)) for key in COUNT_KEYS)])
    out += _md_table(["run", "subset", "items", *COUNT_KEYS.values()], count_rows) + [""]

    judge_rows = [[run_label(r), name, crit, format_estimate(est)]
                  for r in report["runs"] for name, sub in r["subsets"].items() for crit, est in sub.get("criteria", {}).items()]
    if judge_rows:
        out += ["## Judge sub-scores", "", "Criterion means over judged items (0-10 scale x10), with intervals.", ""]
        out += _md_table(["run", "subset", "criterion", "score"], judge_rows) + [""]
        if pub and pub.get("judge_breakdown"):
            for model, subs in pub["judge_breakdown"].items():
                for name, crits in subs.items():
                    out.append(f"Published {model} {name}: " + ", ".join(f"{k} {v}" for k, v in crits.items()) + ".")
            out.append("")

    pc_rows = []
    for r in report["runs"]:
        for name, sub in r["subsets"].items():
            for mode, classes in sub.get("per_class_f1", {}).items():
                for label, est in classes.items():
                    pc_rows.append([run_label(r), name, mode, label, format_estimate(est)])
    if pc_rows:
        out += ["## Per-class F1", "", "Paper mode lists the classes seen in the gold labels; strict mode the full vocabulary.", ""]
        out += _md_table(["run", "subset", "mode", "class", "F1"], pc_rows) + [""]

    out += ["## Runs", ""]
    for r in report["runs"]:
        out.append(f"- **{run_label(r)}**: model `{r['model']}`, model_args `{r['model_args']}`, "
                   f"lmms-eval `{r['lmms_eval_version']}`, data {', '.join(f'`{d}`' for d in r['data_sources']) or 'unknown'}, "
                   f"results `{r['results_file']}`{_merged_note(r)}.")
        versions = sorted({f"{s['task']}={s['version']}" for s in r["subsets"].values()})
        out.append(f"  - task versions: {', '.join(versions) or 'none'}")
        for name, sub in r["subsets"].items():
            if sub.get("judge"):
                j = sub["judge"]
                out.append(f"  - judge ({name}): {j.get('model')} via {j.get('provider')}, rubric "
                           f"{j.get('rubric_version')} sha {j.get('rubric_sha')}")
            added = sub.get("judge_added") or {}
            if added.get("n"):
                out.append(f"  - judge records added afterwards ({name}): {added['n']} by `ecgbench judge`, "
                           f"from `{added['file']}`")
        if r["missing_subsets"]:
            out.append(f"  - missing subsets: {', '.join(r['missing_subsets'])}")
        for task, info in r["other_tasks"].items():
            score = info["aggregated"].get("judge_score")
            out.append(f"  - also ran `{task}` (not the paper's protocol, not in the table): "
                       f"judge_score {_num(score) + NO_INTERVAL_MARK if score is not None else UNDEFINED}")
    out.append("")
    if pub:
        out += ["## Published rows", "", f"Source: {pub['source']}. Marked `(published)` in the table.", ""]
        out += [f"- {c}" for c in pub["caveats"]]
        out += [f"- {row['model']}: {row['caveat']}" for row in pub["rows"] if row.get("reference_settings")]
        out.append("")
    return "\n".join(out)


def render_csv(report: dict[str, Any]) -> str:
    """One row per run and mode (and per published row): value, lo, hi for every column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["run", "mode", "synthetic", "kind"]
    for c in COLUMNS:
        header += [c.key, f"{c.key}:lo", f"{c.key}:hi"]
    writer.writerow(header)

    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    for r in report["runs"]:
        for mode in bootstrap.MODES:
            row = [r["name"], mode, SYNTHETIC_LABEL if r["synthetic"] else "", "run"]
            for c in COLUMNS:
                est = cell(r, c, mode)
                row += [MISSING, "", ""] if est is None else (
                    [UNDEFINED, "", ""] if est["value"] is None else [fmt(est["value"]), fmt(est["lo"]), fmt(est["hi"])])
            writer.writerow(row)
    pub = report.get("published")
    for row in (pub or {}).get("rows", []):
        line = [row["model"], "published", "", "published"]
        for c in COLUMNS:
            v = row["values"].get(c.key)
            line += [MISSING if v is None else fmt(v), "", ""]
        writer.writerow(line)
    return buf.getvalue()


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
