"""`ecgbench demo` as `make demo` runs it (about 3 minutes here): every artefact checked, and
the trained tiny model must beat random_guess on the synthetic rhythm questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_tasks.judge.settings import ENV_VARS as JUDGE_VARS

pytestmark = pytest.mark.slow



def test_demo_produces_every_artefact_and_learns_the_rhythm(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in JUDGE_VARS}
    env.update({"ECGBENCH_CACHE": str(tmp_path / "cache"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "ECGBENCH_DEMO_PORT": "29547"})
    ecgbench = Path(sys.executable).with_name("ecgbench")
    proc = subprocess.run([str(ecgbench), "demo", "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=1500)
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
    # learning, not only plumbing: the rhythm questions need the drawn signal
    rhythm = json.loads((out / "rhythm_questions.json").read_text())
    correct = {run: sum(ok for ok, _ in per_subset.values()) for run, per_subset in rhythm.items()}
    total = sum(n for _, n in rhythm["pulse"].values())
    assert total == sum(n for _, n in rhythm["random_guess"].values()) >= 100
    assert correct["pulse"] > correct["random_guess"], rhythm
    assert rhythm["pulse"]["code15-test"][0] > rhythm["random_guess"]["code15-test"][0], rhythm
