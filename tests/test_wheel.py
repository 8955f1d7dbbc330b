"""The installed wheel, not only the editable checkout: contents, top-level names, and a real run.

Extensionless `_default_template_yaml` files are easy to lose from a wheel, and the task hook
must find the YAMLs inside site-packages. The wheel is installed (without dependencies) into a
fresh virtual environment that borrows this environment's third-party packages.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_TOP_LEVEL = {"pulse_app", "pulse_tasks", "pulse_models", "pulse_training", "pulse_yaml_tasks"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked files: an in-tree build/ folder could carry stale modules.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    (path,) = glob.glob(str(out / "*.whl"))
    return Path(path)


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == EXPECTED_TOP_LEVEL
    assert "pulse_yaml_tasks/ecgbench/_default_template_yaml" in names
    assert "pulse_yaml_tasks/ecgbench/utils.py" in names
    for task in ("ecgbench_ptb", "ecgbench_arena", "ecgbench_arena_gold_history", "ecgbench", "ecgbench_auto"):
        assert f"pulse_yaml_tasks/ecgbench/{task}.yaml" in names
    assert any(n.startswith("pulse_training/configs/") and n.endswith(".yaml") for n in names)
    assert any(n.startswith("pulse_tasks/scoring/judge/rubrics/") for n in names)
    for template in ("base.html.j2", "index.html.j2", "subset.html.j2", "entry.html.j2", "site.css", "site.js"):
        assert f"pulse_tasks/results/leaderboard/templates/{template}" in names  # the leaderboard site's templates
    # Every file of the benchmark's layers ships: each sub-package (data, scoring, results, glue and
    # those below them) must be listed in pyproject.toml, and its data files (published.json,
    # schemas/, rubrics, templates) in package-data.
    tracked = subprocess.run(["git", "ls-files", "pulse_tasks"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.split()
    assert "pulse_tasks/results/published.json" in tracked and "pulse_tasks/results/schemas/submission-v1.json" in tracked
    assert sorted(set(tracked) - set(names)) == []
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[lmms_eval.models]" in text and "pulse_models.registry:register" in text
    assert "pulse_app/cli.py" in names and "ecgbench = pulse_app.cli:main" in text  # the console script


@pytest.mark.slow
def test_installed_wheel_runs_lmms_eval(wheel, synth_data_dir, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv_site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    # The wheel first, then this environment's third-party packages (without its editable finder:
    # .pth files of a path added this way are not processed).
    borrowed = [p for p in site.getsitepackages() if "site-packages" in p]
    Path(venv_site, "zz_borrowed.pth").write_text("\n".join([str(target), *borrowed]) + "\n")
    python = venv / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import pulse_yaml_tasks, pulse_tasks; print(pulse_yaml_tasks.__file__); print(pulse_tasks.__file__)"],
                           check=True, capture_output=True, text=True, timeout=120, cwd=tmp_path).stdout
    assert all(line.startswith(str(target)) for line in where.split()), where

    out = tmp_path / "results"
    env = {**os.environ, "ECGBENCH_DATA": str(synth_data_dir), "ECGBENCH_CACHE": str(tmp_path / "cache"),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(python), "-m", "lmms_eval", "--model", "random_guess", "--tasks", "ecgbench_auto",
                           "--output_path", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    results = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert results, proc.stderr[-3000:]
    data = json.loads(Path(results[0]).read_text())
    assert {"ecgbench_ptb", "ecgbench_csn", "ecgbench_ecgqa"} <= set(data["results"])
