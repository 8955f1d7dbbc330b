"""bench/gpu_session.sh, the prepared GPU call, rehearsed on the CPU with tiny models.

Device time is scarce (one lease, one command): a broken path, a missing PYTHONPATH entry or an
unwritten output file must show up here, not there. The budgets are set to 0 so that every
benchmark setting is skipped after start-up; what is checked is the plumbing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"env.txt", "gpu_tests.log", "eval.json", "eval.log", "train.json", "train.log"}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_session_rehearsal_writes_its_outputs(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, REHEARSE="1", PYTHON=sys.executable, OUT=str(out), EVAL_S="0", TRAIN_S="0", RECIPE_S="0",
               SESSION_S="300", PYTHONPATH="")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert EXPECTED <= {p.name for p in out.iterdir()}, log[-4000:]
    assert len(list(out.iterdir())) <= 8  # the device tool returns at most 8 files
    assert "torch " in (out / "env.txt").read_text()
    assert "pytest exit 0" in log and "eval exit 0" in log and "train exit 0" in log
    assert "all stages exited 0" in log and "FAILED" not in log
    eval_json = json.loads((out / "eval.json").read_text())
    assert eval_json["meta"]["tiny"] and eval_json["results"] == []
    assert {s["workload"] for s in eval_json["skipped"]} == {"short", "report"}
    assert all("time budget" in r["skipped"] for r in json.loads((out / "train.json").read_text()))
    if (out / "train_recipe.json").exists():  # with DeepSpeed installed: the recipe stage ran, and was skipped
        assert all("time budget" in r["skipped"] for r in json.loads((out / "train_recipe.json").read_text()))
        assert "recipe exit 0" in log


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_session_exits_nonzero_and_names_the_stages_that_failed(tmp_path):
    """A stage that fails (here: the training benchmark and the tests, through a PYTHON that refuses
    them) makes the whole session exit 1, while the others still run and write their outputs."""
    wrapper = tmp_path / "python"
    wrapper.write_text("#!/usr/bin/env bash\n"
                       'case " $* " in *bench/train_throughput.py*|*" -m pytest "*) echo "refused: $*" >&2; exit 3;; esac\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, REHEARSE="1", PYTHON=str(wrapper), OUT=str(out), EVAL_S="0", TRAIN_S="0", RECIPE_S="0",
               SESSION_S="300", PYTHONPATH="")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    assert "eval exit 0" in log and "train exit 3" in log and "pytest exit 3" in log
    assert "FAILED stages: train (3)" in log and "pytest (3)" in log.splitlines()[-1]
    assert json.loads((out / "eval.json").read_text())["meta"]["tiny"]  # the stage that worked still wrote
