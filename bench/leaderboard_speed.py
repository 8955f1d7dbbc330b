"""Time `ecgbench leaderboard build` over 50 full-size submissions with attached predictions.

Writes N submissions (default 50) of all nine subsets at their published sizes (11,247 items
each, judge records included, every prediction attached: ~5 MB of JSON apiece), each from its own
lmms-eval-shaped run folder on the same items, through ``submission.build_submission`` as `ecgbench
submit` does; then times the real command in a fresh process (interpreter start, imports,
validation with every metric recomputed, the board's 1000-resample paired tests, all pages):

    .venv/bin/python bench/leaderboard_speed.py                  # 50 submissions, 30 s budget
    .venv/bin/python bench/leaderboard_speed.py --dir /tmp/lb    # keep (and reuse) the submissions
    .venv/bin/python bench/leaderboard_speed.py --jobs 1         # one process

Writing the submissions (~2-3 s each) is not timed. Prints wall and CPU seconds (the CPU time
says what the wall time would be on an idle machine when other users share the cores) and the
1-minute load average. Exits non-zero above the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pulse_tasks.data.subsets import FULL_SIZE
from pulse_tasks.results import runs, submission

BUDGET_S = 30.0  # issue 17: a board of 50 full-size submissions builds in under 30 s on the dev machine
N_SUBMISSIONS = 50
SUBMIT_RESAMPLES = 100  # the submitted intervals are not re-derived by the build; fewer keeps setup short
SKILLS = (0.45, 0.55, 0.62, 0.68, 0.72, 0.75, 0.78, 0.80, 0.82, 0.85)  # a spread of ranks and ties
REVISION = "hub:PULSE-ECG/ECGBench@3f9a1c2e"  # not synthetic-flagged: the board refuses synthetic runs


def write_submissions(folder: Path, n: int) -> list[Path]:
    """``n`` complete submissions with attached predictions in ``folder`` (existing ones kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            path = folder / f"model-{i:02d}.json"
            out.append(path)
            if path.exists():
                continue
            recs, resps = runs.synthetic_run(seed=i + 1, skill=SKILLS[i % len(SKILLS)], item_seed=0)
            run_file = runs.write_run(Path(tmp) / f"m{i}", f"model-{i:02d}", recs, resps, data_source=REVISION)
            doc = submission.build_submission(runs.load_run(run_file), f"Model {i:02d}", attach_predictions=True,
                                              resamples=SUBMIT_RESAMPLES)
            if sum(e["n"] for e in doc["subsets"].values()) != FULL_SIZE:
                raise AssertionError("a benchmark submission must hold every item")
            path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return out


def time_build(folder: Path, out: Path, jobs: int | None, resamples: int | None) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, worker processes included) of `ecgbench leaderboard
    build` in a fresh process, and its first output line."""
    cmd = [sys.executable, "-m", "pulse_app.cli", "leaderboard", "build", str(folder), "--out", str(out)]
    cmd += ["--jobs", str(jobs)] if jobs is not None else []
    cmd += ["--resamples", str(resamples)] if resamples is not None else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, proc.stdout.strip().splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_SUBMISSIONS, help="submissions to build from")
    parser.add_argument("--dir", type=Path, help="keep the submissions here (reused when present)")
    parser.add_argument("--jobs", type=int, help="passed to the build (default: one per core)")
    parser.add_argument("--resamples", type=int, help="passed to the build (default: 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="timings to take; the best is reported")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="fail above this many seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp) / "submissions"
        setup = time.perf_counter()
        files = write_submissions(folder, args.n)
        setup = time.perf_counter() - setup
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        timings = [time_build(folder, Path(tmp) / "site", args.jobs, args.resamples) for _ in range(max(1, args.repeat))]
    best, cpu, summary = min(timings)
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    verdict = "ok" if best <= args.budget else "OVER BUDGET"
    print(f"submissions {len(files)}  items each {FULL_SIZE}  json {size_mb:.0f} MB  cores {cores}  "
          f"jobs {args.jobs or 'default'}  seconds {best:.1f} (all: {', '.join(f'{t[0]:.1f}' for t in timings)})  "
          f"cpu {cpu:.1f} s  load average {load:.1f}  budget {args.budget:.0f}  {verdict}  (setup {setup:.0f} s)\n"
          f"  {summary}")
    return 0 if best <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
