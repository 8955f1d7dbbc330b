"""`ecgbench leaderboard`: build the static leaderboard site, or check where a submission lands.

    ecgbench leaderboard build SUBMISSIONS_DIR --out site/ [--include-published]
    ecgbench leaderboard check SUBMISSION --against SUBMISSIONS_DIR [--json]

`build` validates every *.json under SUBMISSIONS_DIR (as `ecgbench validate` does), leaves out
invalid, synthetic and duplicate files with their reasons, ranks the rest (see the ranking rules
on the site and in README) and writes index.html, one page per subset and per entry, and
leaderboard.json. A `NAME.html` beside `NAME.json` (the entry's `ecgbench report --format html`)
is linked from the entry's page. `check` prints where SUBMISSION would land and which entries it
ties with; it exits 1 when the board would refuse it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from pulse_tasks.scoring import bootstrap
from pulse_tasks.results.compare import ALPHA

EXIT_REFUSED = 1  # check: the board would leave the submission out
EXIT_INPUT_ERROR = 2  # unreadable input or a bad command line (argparse uses 2 too)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples of the paired tests and intervals (default {bootstrap.DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=bootstrap.DEFAULT_SEED, help="bootstrap seed")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level of a rank difference (default {ALPHA})")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes that validate submissions in parallel (default: one per core)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `build` and `check` actions."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="validate every submission in SUBMISSIONS_DIR and write the static site")
    build.add_argument("submissions", metavar="SUBMISSIONS_DIR", help="folder of `ecgbench submit` files (searched recursively)")
    build.add_argument("--out", required=True, metavar="DIR", help="where to write the site (index.html, ...)")
    build.add_argument("--include-published", action="store_true",
                       help="show the paper's published rows (marked published, never ranked)")
    _common(build)
    check = sub.add_parser("check", help="print where SUBMISSION would land on the board and which entries it ties with")
    check.add_argument("submission", metavar="SUBMISSION", help="submission JSON written by `ecgbench submit`")
    check.add_argument("--against", required=True, metavar="SUBMISSIONS_DIR", help="the board's submissions folder")
    check.add_argument("--json", action="store_true", help="print the entry (or the reasons it is left out) as JSON")
    _common(check)


def _board(files: list[Path], args: argparse.Namespace, **kwargs: Any) -> dict[str, Any]:
    from pulse_tasks.results.leaderboard import board

    jobs = args.jobs if args.jobs is not None else board.default_jobs()
    return board.build_board(files, resamples=args.resamples, seed=args.seed, alpha=args.alpha, jobs=jobs, **kwargs)


def _input_problem(args: argparse.Namespace, folder: str) -> str | None:
    if args.resamples < 1:
        return "--resamples must be >= 1 (the paired tests need resamples)"
    if not 0 < args.alpha < 1:
        return "--alpha must be between 0 and 1"
    if not Path(folder).is_dir():
        return f"{folder} is not a folder"
    return None


def run_build(args: argparse.Namespace) -> int:
    from pulse_tasks.results.leaderboard import board, site

    problem = _input_problem(args, args.submissions)
    files = board.find_submissions(args.submissions, skip=Path(args.out)) if problem is None else []
    if problem is None and not files:
        problem = f"no *.json submission files under {args.submissions}"
    if problem:
        print(f"ecgbench leaderboard build: {problem}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    result = _board(files, args, include_published=args.include_published, root=args.submissions)
    site.write_site(result, args.out)
    c = result["counts"]
    print(f"wrote {Path(args.out) / site.INDEX}: {c['entries']} entries ({c.get('ranked', 0)} ranked, "
          f"{c.get('unverified', 0)} unverified, {c.get('partial', 0)} partial, {c.get('not comparable', 0)} not comparable); "
          f"{c['excluded']} of {c['files']} file(s) excluded")
    for x in result["excluded"]:
        print(f"  excluded {x['source']}: {x['reasons'][0]}" + (f" (+{len(x['reasons']) - 1} more)" if len(x["reasons"]) > 1 else ""))
    return 0


def _standing(entry: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    from pulse_tasks.results.leaderboard.board import RANK_MODE
    from pulse_tasks.results.leaderboard.site import diff_text
    from pulse_tasks.results.report import format_estimate

    names = {e["slug"]: e["model"] for e in result["entries"]}
    n_ranked = result["counts"].get("ranked", 0)
    state = [entry["status"], "complete" if entry["complete"] else "partial"]
    lines = [f"{entry['model']} ({entry['source']}): {', '.join(state)}"]
    overall = format_estimate(entry["overall"][RANK_MODE]) if entry["overall"][RANK_MODE]["value"] is not None else "undefined"
    if entry["ranked"]:
        r = entry["ranking"]
        lines.append(f"would rank {entry['rank_label']} of {n_ranked} ranked entries ({RANK_MODE} overall score {overall})")
        lines.append("ties with: " + (", ".join(names[s] for s in r["tied_with"]) or "none"))
        if r["tested_against"]:
            verdict = "a tie" if r["leader"] != entry["slug"] else "significant: it leads its own group"
            lines.append(f"against the leader above it, {names[r['tested_against']]}: {diff_text(r['vs_leader'])} ({verdict})")
        if r["vs_top"] and r["vs_top"] != r["vs_leader"]:
            top = next(e["model"] for e in result["entries"] if e["ranked"] and e["ranking"]["position"] == 1)
            lines.append(f"against the top entry {top}: {diff_text(r['vs_top'])}")
    else:
        lines.append(f"not ranked: {entry['unranked_reason']}")
        lines.append(f"{RANK_MODE} overall score: {overall}")
    for name, sub in entry["subsets"].items():
        if sub["rank"] is not None:
            ties = ", ".join(names[s] for s in sub["ranking"]["tied_with"])
            lines.append(f"  {name}: rank {sub['rank_label']} of {result['subsets'][name]['n_ranked']}"
                         + (f" (ties with {ties})" if ties else ""))
        else:
            why = ("not comparable: " + "; ".join(sub["problems"]) if sub["problems"]
                   else "partial subset" if not sub["complete"] else "unverified" if not entry["verified"] else "not ranked")
            lines.append(f"  {name}: {why}")
    lines += [f"  {name}: missing" for name in entry["missing_subsets"]]
    return lines


def run_check(args: argparse.Namespace) -> int:
    from pulse_tasks.results.leaderboard import board

    problem = _input_problem(args, args.against)
    if problem is None and not Path(args.submission).is_file():
        problem = f"{args.submission} does not exist"
    if problem:
        print(f"ecgbench leaderboard check: {problem}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    files = board.find_submissions(args.against)
    result = _board(files, args, candidate=args.submission, root=args.against)
    entry = board.find_entry(result, args.submission)
    if entry is None:
        reasons = next(x["reasons"] for x in result["excluded"] if x["file"] == str(Path(args.submission)))
        if args.json:
            print(json.dumps({"file": args.submission, "excluded": True, "reasons": reasons}, indent=1))
        else:
            print(f"REFUSED: {args.submission} would not be on the board:", file=sys.stderr)
            for reason in reasons:
                print(f"  - {reason}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(entry, indent=1, ensure_ascii=False, allow_nan=False))
    else:
        print("\n".join(_standing(entry, result)))
    return 0


def run(args: argparse.Namespace) -> int:
    return run_build(args) if args.action == "build" else run_check(args)
