"""Judge throughput: a full-size synthetic run (500 reports + 50 arena conversations) against the
loopback chat-completions server with an artificial latency per call.

    .venv/bin/python bench/judge_speed.py [--latency 0.2] [--concurrency 16] [--reports 500] [--arena 50]

Prints one JSON object (wall seconds per subset and in total, calls, max calls in flight). The
real ``openai`` client, retries, semaphore and record building all run; the cache is off so every
item is a call. The bound asserted by tests/test_judge_speed.py: under 15 s at 200 ms latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake server lives with the tests

from judge_server import FakeJudgeServer

from pulse_tasks.scoring import judge

LATENCY_S = 0.2  # a typical GPT-4o time-to-full-reply for ~150 output tokens is higher; 200 ms isolates our overhead
BOUND_S = 15.0  # the acceptance bound for the full-size run
N_REPORTS, N_ARENA = 500, 50  # full ECGBench sizes of ptb-test-report and arena


def synthetic(n_reports: int, n_arena: int) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], list[list[str]]]:
    """Docs and responses shaped like the real subsets (report ~60 words, arena two turns)."""
    gold = ("Sinus rhythm. Left axis deviation. Inferior myocardial infarction, age undetermined. "
            "Non-specific ST-T changes in lateral leads. QRS duration 96 ms, QT normal.")
    reports = [{"id": f"ptb-{i:05d}", "questions": ["Interpret this ECG and write a report."], "answers": [gold]}
               for i in range(n_reports)]
    report_resps = [f"Item {i}: sinus rhythm, left axis deviation, possible old inferior infarction. "
                    f"SCORES={i % 11},{(i * 3) % 11},{(i * 7) % 11}" for i in range(n_reports)]
    arena = [{"id": f"arena-{i:03d}", "questions": ["What is the rhythm?", "What would you do next?"],
              "answers": ["Atrial flutter with 2:1 block.", "Rate control and anticoagulation assessment."]}
             for i in range(n_arena)]
    arena_resps = [[f"Conversation {i}: atrial flutter. SCORES=7,6,8", "Rate control."] for i in range(n_arena)]
    return reports, report_resps, arena, arena_resps


def run_bench(latency_s: float = LATENCY_S, concurrency: int = 16, n_reports: int = N_REPORTS,
              n_arena: int = N_ARENA) -> dict[str, Any]:
    """Judge both subsets against a fresh fake server; timings and counts."""
    reports, report_resps, arena, arena_resps = synthetic(n_reports, n_arena)
    with FakeJudgeServer(latency_s=latency_s, max_requests=2 * (n_reports + n_arena) + 10, lifetime_s=300) as srv:
        settings = dataclasses.replace(  # cache off: every item is a call
            judge.settings_from_env(base_url=srv.url, api_key=srv.api_key, concurrency=concurrency), cache_path=None)
        judge.reset_runtimes()
        t0 = time.perf_counter()
        rep = judge.judge_items("ptb-test-report", reports, report_resps, settings)
        t1 = time.perf_counter()
        arn = judge.judge_items("arena", arena, arena_resps, settings)
        t2 = time.perf_counter()
        calls, max_in_flight = srv.count, srv.max_in_flight
    agg_rep, agg_arn = judge.aggregate(rep), judge.aggregate(arn)
    judge.reset_runtimes()
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "latency_s": latency_s, "concurrency": concurrency, "items": n_reports + n_arena,
        "report_s": round(t1 - t0, 2), "arena_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
        "items_per_s": round((n_reports + n_arena) / (t2 - t0), 1),
        "ideal_s": round(((n_reports + concurrency - 1) // concurrency + (n_arena + concurrency - 1) // concurrency)
                         * latency_s, 2),
        "calls": calls, "max_in_flight": max_in_flight,
        "n_judged": agg_rep["n_judged"] + agg_arn["n_judged"], "n_failed": agg_rep["n_failed"] + agg_arn["n_failed"],
        "bound_s": BOUND_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=LATENCY_S, help="seconds the fake server waits per call")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reports", type=int, default=N_REPORTS)
    parser.add_argument("--arena", type=int, default=N_ARENA)
    args = parser.parse_args(argv)
    result = run_bench(args.latency, args.concurrency, args.reports, args.arena)
    print(json.dumps(result))
    return 0 if result["total_s"] < BOUND_S and result["n_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
