"""The ECGBench report as one self-contained HTML page (plots embedded as base64 PNG).

Sections: scores table (paper layout), score plots with intervals against the published PULSE-7B
and the best published baseline, per-class F1 of the multi-label subsets, judge sub-scores,
counts, run details and the published rows' caveats. Built from ``report.build_report``'s data
only. Plots use matplotlib's object API (``Figure`` + Agg), so no global pyplot state is touched.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

from pulse_tasks.results import report as rp
from pulse_tasks.data.subsets import BY_CONFIG, JUDGED

DPI = 110  # sharp enough on screen, small enough to embed (~50-150 kB per plot)
PANEL_COLUMNS = 5  # score panels per row: the 15 paper columns make a 3 x 5 grid
PAPER_MARKER, STRICT_MARKER = "o", "s"
PULSE_MODEL = "PULSE-7B"  # the published row produced with the reference settings
NON_BASELINES = frozenset({PULSE_MODEL, "Random"})  # rows that are not "baselines" for the best-baseline marker
SECTION_IDS = ("scores", "score-plots", "per-class-f1", "judge", "counts", "runs", "published")
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th:first-child,td:first-child,td:nth-child(2){text-align:left}
tr.published td{color:#666;font-style:italic}
.banner{background:#b00020;color:#fff;padding:.6em 1em;font-weight:bold;font-size:1.2em}
.missing{color:#b00020}
img{max-width:100%}
"""


def _pyplot_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure; ImportError with an install hint when matplotlib is absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency; the hint is for slim installs
        raise ImportError("the HTML report needs matplotlib: pip install 'matplotlib>=3.8'") from exc
    return Figure(**kwargs)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def best_published_baseline(rows: Sequence[dict[str, Any]], column: rp.Column) -> tuple[str, float] | None:
    """(model, value) of the best published baseline in one column (lowest for HL)."""
    cands = [(r["model"], r["values"][column.key]) for r in rows
             if r["model"] not in NON_BASELINES and column.key in r["values"]]
    if not cands:
        return None
    pick = min if column.lower_is_better else max
    return pick(cands, key=lambda mv: mv[1])


def _errorbar(ax: Any, y: float, est: dict[str, Any] | None, marker: str, color: str, label: str | None) -> None:
    if not est or est.get("value") is None:
        return
    v, lo, hi = est["value"], est.get("lo"), est.get("hi")
    xerr = [[v - lo], [hi - v]] if lo is not None and hi is not None else None
    ax.errorbar([v], [y], xerr=xerr, fmt=marker, color=color, capsize=3, label=label,
                mfc="none" if marker == STRICT_MARKER else color)


def score_plots(rep: dict[str, Any]) -> str:
    """One panel per paper column: each run's paper/strict value with its interval, and the
    published PULSE-7B and best baseline as vertical lines."""
    runs = rep["runs"]
    rows = (rep.get("published") or {}).get("rows", [])
    pulse = next((r for r in rows if r["model"] == PULSE_MODEL), None)
    n_rows = -(-len(rp.COLUMNS) // PANEL_COLUMNS)
    fig = _pyplot_figure(figsize=(3.2 * PANEL_COLUMNS, 0.5 * max(2, len(runs)) * n_rows + 1.6 * n_rows))
    axes = fig.subplots(n_rows, PANEL_COLUMNS, squeeze=False)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for k, column in enumerate(rp.COLUMNS):
        ax = axes[k // PANEL_COLUMNS][k % PANEL_COLUMNS]
        for i, run in enumerate(runs):
            first = k == 0
            _errorbar(ax, i + 0.15, rp.cell(run, column, "paper"), PAPER_MARKER, colors[i],
                      f"{rp.run_label(run)} paper" if first else None)
            _errorbar(ax, i - 0.15, rp.cell(run, column, "strict"), STRICT_MARKER, colors[i],
                      f"{rp.run_label(run)} strict" if first else None)
            if rp.cell(run, column, "paper") is None:
                ax.text(0.5, i, rp.MISSING, transform=ax.get_yaxis_transform(), ha="center", va="center",
                        color="#b00020", fontsize=8)
        if pulse and column.key in pulse["values"]:
            ax.axvline(pulse["values"][column.key], color="k", ls="--", lw=1,
                       label=f"{PULSE_MODEL} (published)" if k == 0 else None)
        best = best_published_baseline(rows, column)
        if best:
            ax.axvline(best[1], color="grey", ls=":", lw=1.2, label="best published baseline" if k == 0 else None)
            ax.text(best[1], 1.0, best[0], transform=ax.get_xaxis_transform(), fontsize=6, rotation=0,
                    ha="center", va="bottom", color="grey")
        arrow = "↓" if column.lower_is_better else "↑"
        ax.set_title(f"{column.title} {arrow}", fontsize=9, pad=10)
        ax.set_yticks(range(len(runs)))
        ax.set_yticklabels([r["name"] for r in runs] if k % PANEL_COLUMNS == 0 else [], fontsize=7)
        ax.set_ylim(-0.7, len(runs) - 0.3)
        ax.tick_params(axis="x", labelsize=7)
    for k in range(len(rp.COLUMNS), n_rows * PANEL_COLUMNS):
        axes[k // PANEL_COLUMNS][k % PANEL_COLUMNS].set_visible(False)
    fig.legend(loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.02 - 0.02 * len(runs)))
    fig.tight_layout()
    return _img(fig, "ECGBench scores with 95% intervals against published results")


def _bars(ax: Any, labels: list[str], series: list[tuple[str, list[dict[str, Any] | None]]]) -> None:
    width = 0.8 / max(1, len(series))
    for s, (name, ests) in enumerate(series):
        xs, vals, err_lo, err_hi = [], [], [], []
        for j, est in enumerate(ests):
            if est is None or est.get("value") is None:
                continue
            xs.append(j + (s - (len(series) - 1) / 2) * width)
            vals.append(est["value"])
            err_lo.append(est["value"] - est["lo"] if est.get("lo") is not None else 0.0)
            err_hi.append(est["hi"] - est["value"] if est.get("hi") is not None else 0.0)
        ax.bar(xs, vals, width, yerr=[err_lo, err_hi], capsize=2, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.tick_params(axis="y", labelsize=7)


def per_class_plots(rep: dict[str, Any]) -> list[str]:
    """Per multi-label subset: per-class F1 (paper and strict) with intervals, one bar per run."""
    images = []
    for name in rp.SUBSET_ORDER:
        spec = BY_CONFIG[name]
        if spec.rule.family != "multilabel" or not any(name in r["subsets"] for r in rep["runs"]):
            continue
        fig = _pyplot_figure(figsize=(10, 3))
        axes = fig.subplots(1, 2, squeeze=False)[0]
        for ax, mode in zip(axes, ("paper", "strict")):
            labels = list(spec.labels)
            series = []
            for run in rep["runs"]:
                per_class = (run["subsets"].get(name) or {}).get("per_class_f1", {}).get(mode, {})
                series.append((rp.run_label(run), [per_class.get(c) for c in labels]))
            _bars(ax, labels, series)
            ax.set_title(f"{spec.title}: per-class F1, {mode} mode", fontsize=9)
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        images.append(_img(fig, f"{spec.title} per-class F1"))
    return images


def judge_plots(rep: dict[str, Any]) -> list[str]:
    """Per judged subset: criterion scores with intervals per run (and the published breakdown)."""
    breakdown = (rep.get("published") or {}).get("judge_breakdown", {})
    images = []
    for name in (s.config for s in JUDGED):
        present = [r for r in rep["runs"] if r["subsets"].get(name, {}).get("criteria")]
        if not present:
            continue
        labels: list[str] = []
        for r in present:
            labels += [c for c in r["subsets"][name]["criteria"] if c not in labels]
        labels.append("overall")
        series = [(rp.run_label(r), [r["subsets"][name]["criteria"].get(c) for c in labels[:-1]]
                   + [r["subsets"][name]["modes"]["paper"]["score"]]) for r in present]
        for model, subs in breakdown.items():
            if name in subs:
                vals = [{"value": subs[name].get(c), "lo": None, "hi": None} if c in subs[name] else None
                        for c in labels[:-1]] + [{"value": subs[name].get("score"), "lo": None, "hi": None}]
                series.append((f"{model} (published)", vals))
        fig = _pyplot_figure(figsize=(6, 3))
        ax = fig.subplots()
        _bars(ax, labels, series)
        ax.set_title(f"{'Report' if name == 'ptb-test-report' else 'Arena'} judge sub-scores (0-100)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        images.append(_img(fig, f"{name} judge sub-scores"))
    return images


def _table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for cls, cells in rows:
        tds = "".join(f'<td class="missing">{html.escape(c)}</td>' if c == rp.MISSING else f"<td>{html.escape(c)}</td>"
                      for c in cells)
        body.append(f'<tr class="{cls}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _markdown_table(md: str, title: str) -> list[list[str]]:
    """Rows of the markdown table under ``## title`` (the md renderer is the single source of cells)."""
    lines = md.splitlines()
    start = lines.index(f"## {title}")
    rows, seen = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            seen = True
            if not line.startswith("|---"):
                rows.append([c.strip().replace("\\|", "|") for c in line.strip()[1:-1].split(" | ")])
        elif seen:
            break
    return rows


def render_html(rep: dict[str, Any]) -> str:
    """The whole report page."""
    md = rp.render_markdown(rep)
    b = rep["bootstrap"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>ECGBench report</title>',
             f"<style>{STYLE}</style></head><body>", "<h1>ECGBench report</h1>"]
    if rep["synthetic"]:
        parts.append(f'<p class="banner">{rp.SYNTHETIC_LABEL}: at least one run was scored on synthetic data; '
                     "its numbers say nothing about ECG skill.</p>")
    for line in rep.get("failure_banners", []):
        parts.append(f'<p class="banner">{rp.GENERATION_FAILURES_LABEL}: {html.escape(line)}</p>')
    parts.append(f"<p>Values x100 with {b['confidence']:.0%} percentile bootstrap intervals over items "
                 f"({b['resamples']} resamples, seed {b['seed']}). HL is lower-better. "
                 f"<em>{rp.MISSING}</em>: the run has no such subset; <em>{rp.UNDEFINED}</em>: undefined on its items; "
                 f"{rp.NO_INTERVAL_MARK}: no interval (no samples file, or --resamples 0).</p>")

    scores = _markdown_table(md, "Scores (paper layout)")
    rows = [("published" if r[1] == "published" else "run", r) for r in scores[1:]]
    parts += ['<section id="scores"><h2>Scores (paper layout)</h2>',
              "<p>In-domain: PTB-XL, Report, CODE-15%, ECG-QA. Out-of-domain: CPSC 2018, CSN, G12EC, MMMU-ECG, Arena.</p>",
              _table(scores[0], rows), "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in rep["modes"].values())
              + "</ul></section>"]
    parts += ['<section id="score-plots"><h2>Scores against published results</h2>',
              "<p>Filled circle: paper mode; hollow square: strict mode; bars: 95% intervals. Dashed: published "
              "PULSE-7B; dotted: best published baseline (its own settings).</p>", score_plots(rep), "</section>"]
    pcs = per_class_plots(rep)
    parts += ['<section id="per-class-f1"><h2>Per-class F1 (multi-label subsets)</h2>',
              *(pcs or ["<p>No multi-label subset in these runs.</p>"]), "</section>"]
    jps = judge_plots(rep)
    parts += ['<section id="judge"><h2>Judge sub-scores</h2>', *(jps or ["<p>No judged subset in these runs.</p>"])]
    if jps:
        judge_rows = _markdown_table(md, "Judge sub-scores")
        parts.append(_table(judge_rows[0], [("run", r) for r in judge_rows[1:]]))
    parts.append("</section>")
    counts = _markdown_table(md, "Counts")
    parts += ['<section id="counts"><h2>Counts</h2>', _table(counts[0], [("run", r) for r in counts[1:]]), "</section>"]
    parts += ['<section id="runs"><h2>Runs</h2><ul>']
    for r in rep["runs"]:
        versions = ", ".join(sorted({f"{s['task']}={s['version']}" for s in r["subsets"].values()}))
        parts.append(f"<li><b>{html.escape(rp.run_label(r))}</b>: model <code>{html.escape(r['model'])}</code>, "
                     f"model_args <code>{html.escape(r['model_args'])}</code>, lmms-eval "
                     f"<code>{html.escape(str(r['lmms_eval_version']))}</code>, data "
                     f"<code>{html.escape(', '.join(r['data_sources']) or 'unknown')}</code>, task versions "
                     f"{html.escape(versions)}; missing: {html.escape(', '.join(r['missing_subsets']) or 'none')}; "
                     f"results <code>{html.escape(', '.join(r.get('results_files') or [r['results_file']]))}</code>"
                     + "".join(f"; judge records added afterwards ({html.escape(name)}): {sub['judge_added']['n']} "
                               f"from <code>{html.escape(str(sub['judge_added']['file']))}</code>"
                               for name, sub in r["subsets"].items() if (sub.get("judge_added") or {}).get("n"))
                     + "</li>")
    parts.append("</ul></section>")
    pub = rep.get("published")
    parts.append('<section id="published"><h2>Published rows</h2>')
    if pub:
        parts.append(f"<p>Source: {html.escape(pub['source'])}.</p><ul>"
                     + "".join(f"<li>{html.escape(c)}</li>" for c in pub["caveats"])
                     + "".join(f"<li>{html.escape(r['model'])}: {html.escape(r['caveat'])}</li>"
                               for r in pub["rows"] if r.get("reference_settings")) + "</ul>")
    else:
        parts.append("<p>Left out (--no-published).</p>")
    parts += ["</section>", "</body></html>"]
    return "\n".join(parts) + "\n"
