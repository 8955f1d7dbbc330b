"""`ecgbench compare A B`: which differences between two runs are real.

Per subset and metric: B - A over the shared items, with a paired bootstrap interval (the same
resampled items for both runs) and a two-sided p-value; accuracy with 0/1 outcomes uses
McNemar's exact test instead (paper-mode accuracy with the fractional credit of unparsed
answers keeps the bootstrap p-value). One verdict per row.

Two runs are comparable only on the same items, data and scoring: the command refuses, naming
every difference, when a shared subset's item ids, data source (hub data: its recorded commit;
``--allow-revision-mismatch`` lets two revisions of the same hub dataset through, with a
warning), task version, strict scoring version (``pulse_tasks.scoring.strict.STRICT_VERSION``, from task
metadata and records) or judge (model, rubric version, rubric hash) differ, or when a run kept no
per-item samples.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Mapping

from pulse_tasks.scoring import bootstrap
from pulse_tasks.results.runs import Run, RunError, SubsetRun, load_runs
from pulse_tasks.data.subsets import SUBSETS

ALPHA = 0.05  # per-row significance level of the verdicts
EXIT_REFUSED = 2  # incomparable runs or a bad command line (argparse uses 2 too)
MAX_LISTED_IDS = 3  # example ids named when item sets differ
JUDGE_FIELDS = ("model", "rubric_version", "rubric_sha")  # what makes two judge scores comparable
FORMATS = ("md", "json")


class IncomparableRuns(ValueError):
    """Runs whose items, data or scoring differ; ``problems`` says which."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def judge_identity(ident: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a judge identity (``judge.aggregate``'s "judge") that decides whether two judge
    scores are comparable; records that mixed judges compare with nothing."""
    if "mixed" in ident:
        return {"mixed": True}
    return {k: ident.get(k) for k in JUDGE_FIELDS}


def _judge_identity(sr: SubsetRun) -> dict[str, Any] | None:
    if not sr.subset.judged or not sr.records:
        return None
    from pulse_tasks.scoring import judge

    return judge_identity(judge.aggregate(sr.records).get("judge") or {})


def _ids(sr: SubsetRun) -> list[str]:
    return [str(r.get("id")) for r in sr.records or []]


def _examples(ids: set[str]) -> str:
    shown = sorted(ids)[:MAX_LISTED_IDS]
    more = f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
    return ", ".join(shown) + more


def _versions(sr: SubsetRun) -> str:
    return "+".join(str(v) for v in sorted(sr.strict_versions))


REVISION_FLAG = "--allow-revision-mismatch"  # compare runs on different revisions of the same hub data


def revision_mismatch(source_a: str | None, source_b: str | None) -> bool:
    """True when two data sources are the same hub dataset at different (or unrecorded) revisions."""
    from pulse_tasks.data.sources import parse_hub_source

    hub_a, hub_b = parse_hub_source(source_a), parse_hub_source(source_b)
    return hub_a is not None and hub_b is not None and hub_a[0] == hub_b[0] and hub_a[1] != hub_b[1]


def compatibility_problems(a: Run, b: Run, allow_revision_mismatch: bool = False) -> list[str]:
    """Every reason the two runs cannot be compared (empty when they can); hub data at another
    revision is one, unless ``allow_revision_mismatch``."""
    problems: list[str] = []
    shared = [s.config for s in SUBSETS if s.config in a.subsets and s.config in b.subsets]
    if not shared:
        problems.append(f"the runs share no ECGBench subset (A: {', '.join(a.subsets) or 'none'}; "
                        f"B: {', '.join(b.subsets) or 'none'})")
    for name in shared:
        sa, sb = a.subsets[name], b.subsets[name]
        if sa.data_source != sb.data_source:
            if not revision_mismatch(sa.data_source, sb.data_source):
                problems.append(f"{name}: data source differs (A {sa.data_source!r}, B {sb.data_source!r})")
            elif not allow_revision_mismatch:
                problems.append(f"{name}: hub data revision differs (A {sa.data_source!r}, B {sb.data_source!r}); "
                                f"{REVISION_FLAG} compares them anyway")
        if str(sa.version) != str(sb.version):
            problems.append(f"{name}: task/scoring version differs (A {sa.version!r}, B {sb.version!r})")
        if not sa.subset.judged and sa.strict_versions != sb.strict_versions:
            problems.append(f"{name}: strict scoring version differs (A {_versions(sa)}, B {_versions(sb)}); "
                            "score both with the same ecgbench-lmms release")
        for side, sr in (("A", sa), ("B", sb)):
            if sr.records is None:
                problems.append(f"{name}: run {side} has no samples file (rerun lmms-eval with --log_samples)")
            elif len(set(_ids(sr))) != len(sr.records):
                problems.append(f"{name}: run {side} repeats item ids")
        if sa.records is None or sb.records is None:
            continue
        ia, ib = set(_ids(sa)), set(_ids(sb))
        if ia != ib:
            parts = []
            if ia - ib:
                parts.append(f"{len(ia - ib)} only in A ({_examples(ia - ib)})")
            if ib - ia:
                parts.append(f"{len(ib - ia)} only in B ({_examples(ib - ia)})")
            problems.append(f"{name}: item sets differ: {'; '.join(parts)}")
        ja, jb = _judge_identity(sa), _judge_identity(sb)
        if ja != jb:
            problems.append(f"{name}: judge or rubric differs (A {ja}, B {jb})")
    return problems


def _aligned(sa: SubsetRun, sb: SubsetRun) -> tuple[list[dict], list[dict]]:
    order = {rid: i for i, rid in enumerate(_ids(sa))}
    b_sorted = sorted(sb.records or [], key=lambda r: order[str(r.get("id"))])
    return list(sa.records or []), b_sorted


def verdict(metric: str, diff: float | None, p: float | None, alpha: float = ALPHA) -> str:
    """One line: which run is better, or that the data cannot tell."""
    if diff is None or p is None:
        return "undefined on these items"
    if p >= alpha:
        return f"no detectable difference (p={p:.3g})"
    lower_better = metric in bootstrap.LOWER_IS_BETTER
    b_better = diff < 0 if lower_better else diff > 0
    return f"{'B' if b_better else 'A'} better (p={p:.3g})"


def compare_runs(a: Run, b: Run, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED, alpha: float = ALPHA,
                 allow_revision_mismatch: bool = False) -> dict[str, Any]:
    """Rows of B - A per shared subset, mode and metric; IncomparableRuns when they differ.
    ``data_revisions_differ`` in the result lists the subsets compared across hub revisions."""
    problems = compatibility_problems(a, b, allow_revision_mismatch)
    if problems:
        raise IncomparableRuns(problems)
    rows: list[dict[str, Any]] = []
    for spec in SUBSETS:
        if spec.config not in a.subsets or spec.config not in b.subsets:
            continue
        ra, rb = _aligned(a.subsets[spec.config], b.subsets[spec.config])
        cols_a, cols_b = bootstrap.item_columns(spec, ra), bootstrap.item_columns(spec, rb)
        diffs = bootstrap.paired_differences(cols_a, cols_b, spec.config, resamples, seed)
        for mode, by_metric in diffs.items():
            for metric, d in by_metric.items():
                if metric.startswith(bootstrap.PER_CLASS_PREFIX) or (mode == "judge" and metric != bootstrap.JUDGE_KEY):
                    continue  # per-class and per-criterion rows would multiply the false alarms
                rows.append({"subset": spec.config, "mode": mode, "metric": metric, "n": len(ra),
                             **asdict(d), "verdict": verdict(metric, d.diff, d.p_value, alpha)})
    only = {"A": [n for n in a.subsets if n not in b.subsets], "B": [n for n in b.subsets if n not in a.subsets]}
    revisions = [n for n in a.subsets if n in b.subsets
                 and revision_mismatch(a.subsets[n].data_source, b.subsets[n].data_source)]
    return {"a": {"name": a.name, "results_file": str(a.results_file), "synthetic": a.synthetic},
            "b": {"name": b.name, "results_file": str(b.results_file), "synthetic": b.synthetic},
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": bootstrap.CONFIDENCE},
            "alpha": alpha, "rows": rows, "only_in": only, "data_revisions_differ": revisions}


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "undefined"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def _p_text(p: float | None, test: str, resamples: int) -> str:
    if p is None:
        return "n/a"
    floor = 1.0 / (resamples + 1)  # the smallest bootstrap p-value this many resamples can give
    if test == "paired bootstrap" and p <= floor * (1 + 1e-9):
        return f"< {2 * floor:.2g}"
    return f"{p:.3g}"


def render_markdown(result: dict[str, Any]) -> str:
    from pulse_tasks.results.report import SYNTHETIC_LABEL

    a, b = result["a"], result["b"]
    out = ["# ECGBench compare: B - A", "", f"A: {a['name']} (`{a['results_file']}`)  ",
           f"B: {b['name']} (`{b['results_file']}`)", ""]
    if a["synthetic"] or b["synthetic"]:
        out += [f"> **{SYNTHETIC_LABEL}**: a compared run was scored on synthetic data.", ""]
    if result.get("data_revisions_differ"):
        out += [f"> **Different hub data revisions** ({REVISION_FLAG}): "
                f"{', '.join(result['data_revisions_differ'])}.", ""]
    bs = result["bootstrap"]
    out += [f"Differences x100 on the shared items with {bs['confidence']:.0%} paired bootstrap intervals "
            f"({bs['resamples']} resamples, seed {bs['seed']}); p-values two-sided (McNemar's exact test where "
            f"both runs' per-item outcomes are 0/1). Verdicts at alpha = {result['alpha']} per row, not corrected "
            f"for the {len(result['rows'])} rows: expect about {result['alpha'] * len(result['rows']):.1f} false "
            "alarm(s) among them. HL is lower-better.", ""]
    out += ["| subset | mode | metric | n | A | B | B - A [95% CI] | p | test | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = f"{_num(r['diff'], True)} [{_num(r['lo'], True)}, {_num(r['hi'], True)}]"
        p = _p_text(r["p_value"], r["test"], bs["resamples"])
        test = r["test"] + (f" ({r['discordant'][0]} vs {r['discordant'][1]} discordant)" if r["discordant"] else "")
        out.append(f"| {r['subset']} | {r['mode']} | {r['metric']} | {r['n']} | {_num(r['a'])} | {_num(r['b'])} "
                   f"| {ci} | {p} | {test} | {r['verdict']} |")
    for side, names in result["only_in"].items():
        if names:
            out.append(f"\nOnly in {side} (not compared): {', '.join(names)}.")
    return "\n".join(out) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="baseline run (results json or model folder)")
    parser.add_argument("b", metavar="B", help="candidate run (results json or model folder)")
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=bootstrap.DEFAULT_SEED, help="bootstrap seed")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level of the verdicts (default {ALPHA})")
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument(REVISION_FLAG, action="store_true",
                        help="compare runs scored on different revisions of the same hub data (refused by default)")


def _one_run(arg: str) -> Run:
    found = load_runs([arg])
    if len(found) != 1:
        raise RunError(f"{arg} holds {len(found)} runs ({', '.join(r.name for r in found)}); name one model folder "
                       "or results file")
    return found[0]


def run(args: argparse.Namespace) -> int:
    if args.resamples < 1:
        print("ecgbench compare: --resamples must be >= 1", file=sys.stderr)
        return EXIT_REFUSED
    try:
        a, b = _one_run(args.a), _one_run(args.b)
        result = compare_runs(a, b, args.resamples, args.seed, args.alpha, args.allow_revision_mismatch)
    except RunError as exc:
        print(f"ecgbench compare: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except IncomparableRuns as exc:
        print("ecgbench compare: refusing to compare these runs:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_REFUSED
    if result["data_revisions_differ"]:
        print(f"ecgbench compare: warning: {', '.join(result['data_revisions_differ'])} compared across hub data "
              f"revisions ({REVISION_FLAG})", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(render_markdown(result))
    return 0
