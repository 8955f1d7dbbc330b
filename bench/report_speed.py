"""Time `ecgbench report` with intervals over a full-size synthetic run folder.

Builds an lmms-eval-shaped output folder (results json + one samples file per subset, as
lmms-eval 0.7.3 writes with --log_samples) holding all nine subsets at their published sizes
(11,247 items, judge records included), then times reading the folder, 1000-resample bootstrap
intervals for every metric of every subset, and the markdown rendering. Exits non-zero above
the budget. Pin the process to one core for the number the budget is about:

    taskset -c 0 .venv/bin/python bench/report_speed.py             # 1000 resamples, 10 s budget
    taskset -c 0 .venv/bin/python bench/report_speed.py --repeat 3  # best of three

The timing excludes building the folder and importing the package. The verdict is on the CPU
seconds of the reporting thread with numpy's BLAS held to it (the cost on one core, which other jobs
on the machine do not inflate); the wall seconds are printed beside them.
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


def time_report(path: Path, resamples: int = RESAMPLES, fmt: str = "md") -> tuple[float, float]:
    """(CPU seconds on one core, wall seconds) to read the run, bootstrap every metric and render the
    report; the CPU seconds are this thread's, with numpy's BLAS held to it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        wall, cpu = time.perf_counter(), time.thread_time()
        rep = report.build_report(runs.load_runs([path]), resamples=resamples, seed=SEED)
        report_cli.render(rep, fmt)
        return time.thread_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timings to take; the best is reported")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="fail above this many CPU seconds on one core")
    parser.add_argument("--format", choices=report.FORMATS, default="md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_folder(Path(tmp))
        timings = [time_report(path, args.resamples, args.format) for _ in range(max(1, args.repeat))]
    best, wall = min(t[0] for t in timings), min(t[1] for t in timings)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    verdict = "ok" if best <= args.budget else "OVER BUDGET"
    print(f"items {FULL_SIZE}  resamples {args.resamples}  format {args.format}  cores {cores}  "
          f"cpu seconds {best:.2f}  wall seconds {wall:.2f}  budget {args.budget:.1f}  {verdict}")
    return 0 if best <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
