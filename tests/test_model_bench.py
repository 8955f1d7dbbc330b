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
