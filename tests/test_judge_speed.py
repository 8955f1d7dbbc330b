"""Full-size judge throughput bound: 500 reports + 50 arena conversations at 200 ms per call < 15 s."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_full_size_judge_run_under_bound(monkeypatch: pytest.MonkeyPatch, bench_script) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "ECGBENCH_JUDGE_BASE_URL",
                 "ECGBENCH_JUDGE_MODEL", "ECGBENCH_JUDGE_CONCURRENCY", "ECGBENCH_JUDGE_MAX_CALLS"):
        monkeypatch.delenv(name, raising=False)
    bench = bench_script("judge_speed")
    result = bench.run_bench()
    assert result["calls"] == 550 and result["n_judged"] == 550 and result["n_failed"] == 0
    assert result["max_in_flight"] <= 16
    assert result["total_s"] < bench.BOUND_S, result
