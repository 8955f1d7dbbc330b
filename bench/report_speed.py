"""Time `ecgbench report` with intervals over a full-size synthetic run folder.

Builds an lmms-eval-shaped output folder (results json + one samples file per subset, as
lmms-eval 0.7.3 writes with --log_samples) holding all nine subsets at their published sizes
(11,247 items, judge records included), then times reading the folder, 1000-resample bootstrap
intervals for every metric of every subset, and the markdown rendering. Exits non-zero above
the budget. Pin the process to one core for the number the budget is about:

    taskset -c 0 .venv/bin/python bench/report_speed.py             # 1000 resamples, 10 s budget
    taskset -c 0 .venv/bin/python bench/report_speed.py --repeat 3  # best of three

The timing excludes building the folder and importing the package.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from pulse_tasks.data.subsets import FULL_SIZE
from pulse_tasks.results import report, report_cli, runs

BUDGET_S = 10.0  # a full report with intervals must stay interactive (issue: < 10 s on one core)
RESAMPLES = 1000  # the report's default
SEED = 0  # fixed synthetic run, so timings compare across machines and commits


def build_folder(root: Path, seed: int = SEED) -> Path:
    """A full-size synthetic run folder under ``root``; returns the results file."""
    records, responses = runs.synthetic_run(seed=seed, skill=0.7, scale=1.0)
    n = sum(len(r) for r in records.values())
    if n != FULL_SIZE:
        raise AssertionError(f"synthetic run has {n} items, expected {FULL_SIZE}")
    return runs.write_run(root, "bench-model", records, responses, synthetic=True,
                          data_source="synthetic:bench")


def time_report(path: Path, resamples: int = RESAMPLES, fmt: str = "md") -> float:
    """Seconds to read the run, bootstrap every metric and render the report."""
    start = time.perf_counter()
    rep = report.build_report(runs.load_runs([path]), resamples=resamples, seed=SEED)
    report_cli.render(rep, fmt)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timings to take; the best is reported")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="fail above this many seconds")
    parser.add_argument("--format", choices=report.FORMATS, default="md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_folder(Path(tmp))
        best = min(time_report(path, args.resamples, args.format) for _ in range(max(1, args.repeat)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    verdict = "ok" if best <= args.budget else "OVER BUDGET"
    print(f"items {FULL_SIZE}  resamples {args.resamples}  format {args.format}  cores {cores}  "
          f"seconds {best:.2f}  budget {args.budget:.1f}  {verdict}")
    return 0 if best <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
