"""`ecgbench demo` as `make demo` runs it: every artefact checked, and the trained tiny model must
beat random_guess on the synthetic rhythm questions.

Two runs of the same pipeline. Every test run (`make test`) runs it at small sizes (20 training
steps, 4 items per subset): every artefact, in about a minute. The demo's defaults (3000 CPU
training steps, 3 to 8 minutes alone and far more on busy cores) are the `long` test: left out
of a plain `pytest` / `make test` (pyproject's addopts), run by `make test-long`, which `.ci/run`
runs beside `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_tasks.scoring.judge.settings import ENV_VARS as JUDGE_VARS

pytestmark = pytest.mark.slow

SMALL = {"per_subset": 4, "instruct": 64, "train_steps": 20}  # the pipeline, not the learning
RHYTHM_SUBSETS = 5  # subsets whose every synthetic item is a rhythm question (pulse_tasks.data.synth)


def _demo(tmp_path: Path, *args: str, timeout: int) -> tuple[Path, str]:
    from test_training_recipe import _free_port  # a fixed port collides with another test run on the machine

    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in JUDGE_VARS}
    env.update({"ECGBENCH_CACHE": str(tmp_path / "cache"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "ECGBENCH_DEMO_PORT": str(_free_port())})
    ecgbench = Path(sys.executable).with_name("ecgbench")
    proc = subprocess.run([str(ecgbench), "demo", "--out", str(out), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return out, proc.stdout


def _check_artefacts(out: Path, stdout: str) -> dict[str, dict[str, list[int]]]:
    """Every artefact of the four steps; returns rhythm_questions.json."""
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
    assert "Synthetic rhythm questions" in stdout and "ecgbench studio --results" in stdout
    return json.loads((out / "rhythm_questions.json").read_text())


def _totals(rhythm: dict) -> tuple[dict[str, int], int]:
    correct = {run: sum(ok for ok, _ in per_subset.values()) for run, per_subset in rhythm.items()}
    total = sum(n for _, n in rhythm["pulse"].values())
    assert total == sum(n for _, n in rhythm["random_guess"].values())
    return correct, total


def test_demo_produces_every_artefact(tmp_path):
    """The whole pipeline at small sizes: data, recipe training, both lmms-eval runs, report,
    compare, the rhythm table and the Studio command."""
    out, stdout = _demo(tmp_path, "--per-subset", str(SMALL["per_subset"]), "--instruct",
                        str(SMALL["instruct"]), "--train-steps", str(SMALL["train_steps"]), timeout=1500)
    assert f"max_steps={SMALL['train_steps']}" in stdout
    rhythm = _check_artefacts(out, stdout)
    _, total = _totals(rhythm)
    assert total == RHYTHM_SUBSETS * SMALL["per_subset"]


@pytest.mark.long
def test_demo_defaults_learn_the_rhythm(tmp_path):
    """The demo as shipped (defaults): learning, not only plumbing: the rhythm questions need the
    drawn signal, and the trained tiny model beats random_guess on them."""
    # 3000 steps ran at 1.5 samples/s on cores shared with four test suites: 67 minutes of training
    out, stdout = _demo(tmp_path, timeout=7200)
    rhythm = _check_artefacts(out, stdout)
    correct, total = _totals(rhythm)
    assert total >= 100
    assert correct["pulse"] > correct["random_guess"], rhythm
    assert rhythm["pulse"]["code15-test"][0] > rhythm["random_guess"]["code15-test"][0], rhythm
