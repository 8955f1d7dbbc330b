"""`ecgbench report` on the command line: the format dispatch and the options.

``pulse_tasks.results.report`` builds the report as plain data and renders markdown, CSV and JSON;
``pulse_tasks.results.html_report`` renders the HTML page from the same data and imports ``report``.
This module imports both, so neither of them imports the other back (no import circle).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pulse_tasks.scoring import bootstrap
from pulse_tasks.results.html_report import render_html
from pulse_tasks.results.report import (
    EXIT_INPUT_ERROR,
    FORMATS,
    OUT_NAME,
    SYNTHETIC_LABEL,
    build_report,
    render_csv,
    render_json,
    render_markdown,
)
from pulse_tasks.results.runs import RunError, load_runs


def render(report: dict[str, Any], fmt: str) -> str:
    """The report in one of FORMATS."""
    if fmt == "md":
        return render_markdown(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="lmms-eval output: a *_results.json, a model folder (newest results) or an output folder")
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument("--out", metavar="DIR", help=f"write {OUT_NAME}.<format> into DIR instead of printing it")
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples for the intervals (default {bootstrap.DEFAULT_RESAMPLES}; 0: none)")
    parser.add_argument("--seed", type=int, default=bootstrap.DEFAULT_SEED, help="bootstrap seed")
    parser.add_argument("--no-published", action="store_true", help="leave out the paper's published rows")


def run(args: argparse.Namespace) -> int:
    if args.resamples < 0:
        print("ecgbench report: --resamples must be >= 0", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        runs = load_runs(args.runs)
    except RunError as exc:
        print(f"ecgbench report: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    report = build_report(runs, args.resamples, args.seed, include_published=not args.no_published)
    try:
        text = render(report, args.format)
    except ImportError as exc:
        print(f"ecgbench report: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{OUT_NAME}.{args.format}"
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}" + (f" ({SYNTHETIC_LABEL})" if report["synthetic"] else ""))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
