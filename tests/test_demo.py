"""A reduced `ecgbench demo`: the same four steps at toy sizes, every artefact checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_tasks.judge.settings import ENV_VARS as JUDGE_VARS

pytestmark = pytest.mark.slow



def test_reduced_demo_produces_every_artefact(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in JUDGE_VARS}
    env.update({"ECGBENCH_CACHE": str(tmp_path / "cache"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "ECGBENCH_DEMO_PORT": "29547"})
    ecgbench = Path(sys.executable).with_name("ecgbench")
    proc = subprocess.run([str(ecgbench), "demo", "--out", str(out), "--per-subset", "4", "--instruct", "24",
                           "--train-steps", "4"], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    stdout = proc.stdout

    # 1. data, labelled synthetic
    assert "SYNTHETIC DATA" in stdout
    assert (out / "data" / "ecgbench" / "csn-test-no-cot").is_dir()
    assert json.loads((out / "data" / "instruct" / "ecginstruct.json").read_text())
    # 2. training ran through the recipe and left an original-format checkpoint
    assert "[2/4] train" in stdout and "loss" in (out / "logs" / "train.log").read_text()
    checkpoint = out / "checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config.get("model_type") == "llava_llama"
    assert list(checkpoint.glob("*.safetensors"))
    # 3. both runs through the lmms-eval CLI; the judged subsets were skipped with the reason
    assert "ptb-test-report and arena skipped: no judge configured" in stdout
    summary = json.loads((out / "demo.json").read_text())
    assert summary["synthetic"] is True and summary["judged"] is False
    for name in ("pulse", "random_guess"):
        results = json.loads(Path(summary["results"][name]).read_text())["results"]
        assert {"ecgbench_ptb", "ecgbench_csn", "ecgbench_ecgqa", "ecgbench_mmmu"} <= set(results)
        assert "ecgbench_arena" not in results
    # 4. report and compare
    assert "# ECGBench report" in stdout and "PULSE-7B (published)" in stdout
    assert "# ECGBench compare" in stdout
    html = next((out / "report").glob("*.html")).read_text()
    assert "SYNTHETIC DATA" in html and "data:image/png;base64," in html
