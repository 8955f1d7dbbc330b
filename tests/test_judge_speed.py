"""Full-size judge throughput bound: 500 reports + 50 arena conversations at 200 ms per call < 15 s."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "judge_speed.py"


@pytest.mark.slow
def test_full_size_judge_run_under_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "ECGBENCH_JUDGE_BASE_URL",
                 "ECGBENCH_JUDGE_MODEL", "ECGBENCH_JUDGE_CONCURRENCY", "ECGBENCH_JUDGE_MAX_CALLS"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("judge_speed", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run_bench()
    assert result["calls"] == 550 and result["n_judged"] == 550 and result["n_failed"] == 0
    assert result["max_in_flight"] <= 16
    assert result["total_s"] < bench.BOUND_S, result
