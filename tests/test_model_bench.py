"""bench/eval_throughput.py runs end to end with --tiny on CPU (a smoke test, no timing claims)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_eval_throughput_tiny(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    out = tmp_path / "bench.json"
    code = eval_throughput.main(["--tiny", "--device", "cpu", "--items", "short=4,report=2", "--reference-items",
                                 "short=2,report=2", "--batch-sizes", "2", "--report-tokens", "8", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["results"]
    assert {(r["workload"], r["setting"]) for r in rows} == {("short", "reference"), ("short", "adapter"),
                                                             ("report", "reference"), ("report", "adapter")}
    assert all(r["identical_items"] == 1.0 and r["failed"] == 0 and r["items_per_s"] > 0 for r in rows)
    assert "n/a (not a GPU run)" in capsys.readouterr().out


def test_cpu_without_tiny_refuses(capsys):
    sys.path.insert(0, str(BENCH))
    import eval_throughput
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert eval_throughput.main(["--device", "cpu"]) == 2


@pytest.mark.slow
def test_eval_throughput_phases_profile_and_budget(tmp_path):
    """The bounded device run's options: a phase split and kernel table of one batch, a time budget
    that skips the settings it has no time for, and JSON rewritten as results come in."""
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    out, prof = tmp_path / "bench.json", tmp_path / "prof.txt"
    assert eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=2",
                                 "--reference-items", "short=2", "--batch-sizes", "2", "--phases", "2",
                                 "--profile", str(prof), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    phases = data["phases"]
    assert phases["batch"] == 2 and phases["new_tokens"] == 16
    assert all(phases[k] > 0 for k in ("prepare_ms", "clip_splice_ms", "total_gpu_ms"))
    assert phases["total_gpu_ms"] >= phases["decode_ms"]
    assert "aten::" in prof.read_text()  # a real profiler table, not a placeholder
    assert data["meta"]["transformers"] and data["meta"]["wall_s"] > 0
    assert [r["setting"] for r in data["results"]] == ["reference", "adapter"] and not data["skipped"]

    spent = tmp_path / "spent.json"
    assert eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=2",
                                 "--reference-items", "short=2", "--batch-sizes", "2", "--time-budget", "0",
                                 "--json", str(spent)]) == 0
    data = json.loads(spent.read_text())
    assert data["results"] == []
    assert [(s["setting"], s["batch_size"]) for s in data["skipped"]] == [("reference", 1), ("adapter", 2)]


def test_bounded_run_order_measures_the_reference_and_dynamic_cache_first():
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    plan = eval_throughput.plan_settings(["short", "report"], {"short": 16, "report": 256}, {"short": 24, "report": 4},
                                         {"short": 128, "report": 64}, [32], ["dynamic", "static"], 8)
    assert [(w, s, b, c) for w, s, b, c, _, _ in plan] == [
        ("short", "reference", 1, "dynamic"), ("short", "adapter", 32, "dynamic"),
        ("report", "reference", 1, "dynamic"), ("report", "adapter", 32, "dynamic"),
        ("report", "adapter", 32, "static"), ("short", "adapter", 32, "static")]
    assert plan[0][4:] == (0, 24) and plan[1][4:] == (8, 128)  # the reference: inline preparation, its own count
