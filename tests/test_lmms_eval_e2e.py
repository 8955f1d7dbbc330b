"""lmms-eval itself over the synthetic ECGBench: in process and through the CLI, simple and chat models.

The CLI exits 0 even when tasks are not found, so every check reads the results files.
The judged subsets are judged by the loopback fake judge (tests/judge_server.py) through the
real openai client; it also plays the chat model for lmms-eval's `openai` adapter.
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lmms_eval.api.model import lmms

from pulse_tasks.glue.hooks import metric_names
from pulse_tasks.scoring.strict import STRICT_VERSION
from pulse_tasks.data.subsets import BY_CONFIG, BY_TASK, SUBSETS
from judge_server import FakeJudgeServer, Reply, completion, marker_responder

pytestmark = pytest.mark.slow

ALL_TASKS = [s.task for s in SUBSETS]
API_KEY = "sk-e2e-test-key-4242424242"
# Model answers the fake server gives to lmms-eval's openai chat adapter (not to the judge).
CHAT_MODEL_ANSWER = "Answer: A. NORM, sinus rhythm"


def model_or_judge(request: dict, n: int) -> Reply:
    """Judge requests (our rubric in the system message) get scores; model requests an answer."""
    system = " ".join(str(m.get("content", "")) for m in request.get("messages", []) if m.get("role") == "system")
    if "Score" in system or "score" in system:
        return marker_responder(request, n)
    return Reply(body=completion(CHAT_MODEL_ANSWER))


@pytest.fixture(scope="module")
def fake_server():
    with FakeJudgeServer(model_or_judge, api_key=API_KEY, lifetime_s=600) as server:
        yield server


@pytest.fixture()
def judge_env(fake_server, tmp_path, monkeypatch):
    env = {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake_server.url,
        "ECGBENCH_JUDGE_CACHE": str(tmp_path / "judge.sqlite"),
        "ECGBENCH_CACHE": str(tmp_path / "ecgbench_cache"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _result_files(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    results = sorted(glob.glob(str(out / "**" / "*_results.json"), recursive=True))
    assert results, f"lmms-eval wrote no results file under {out}"
    data = json.loads(Path(results[-1]).read_text())
    samples: dict[str, list[dict]] = {}
    for path in glob.glob(str(Path(results[-1]).parent / "*_samples_*.jsonl")):
        task = Path(path).stem.split("_samples_", 1)[1]
        samples[task] = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return data, samples


def _check_task_results(results: dict, task: str, *, expect_judged: bool) -> None:
    assert task in results, f"{task} missing from results: {sorted(results)}"
    spec = BY_TASK[task] if task in BY_TASK else BY_CONFIG["arena"]
    row = results[task]
    for metric in metric_names(spec):
        assert f"{metric},none" in row, f"{task} lacks {metric}: {sorted(row)}"
    if spec.kind in ("report", "arena"):
        score = row["judge_score,none"]
        if expect_judged:
            assert score == pytest.approx(100.0), f"{task}: fake judge gives 10/10 but score is {score}"
            assert row["judge_failed,none"] == 0
    else:
        key = "auc_paper,none" if spec.kind == "multilabel" else "accuracy_paper,none"
        value = row[key]
        assert isinstance(value, float) and (math.isnan(value) or 0.0 <= value <= 100.0)


# ---------------------------------------------------------------- in process


def test_in_process_simple_model_all_nine(synth_data_dir, judge_env, tmp_path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from pulse_tasks.glue.registry import task_root

    manager = TaskManager(include_path=str(task_root(synth_data_dir)))
    out = simple_evaluate(model="random_guess", model_args="seed=0", tasks=ALL_TASKS, task_manager=manager,
                          log_samples=True, batch_size=1)
    for task in ALL_TASKS:
        _check_task_results(out["results"], task, expect_judged=True)
    # the per-item records are what the samples keep
    sample = out["samples"]["ecgbench_csn"][0]
    record = sample["accuracy_paper"]
    assert record["subset"] == "csn-test-no-cot" and record["id"]
    assert record["strict_version"] == STRICT_VERSION and record["explain"]["mode"] == "strict"
    metadata = out["configs"]["ecgbench_csn"]["metadata"]
    assert metadata["data_source"].startswith("sha256:") and metadata["synthetic"] is True
    assert metadata["strict_version"] == STRICT_VERSION  # the template's, in the generated local-data copy


class OracleChat(lmms):
    """A chat model that checks the messages it gets and answers with the gold answer of each turn."""

    is_simple = False

    def __init__(self) -> None:
        super().__init__()
        self.seen_messages: list = []

    def _answer(self, messages: list[dict], doc: dict, turn: int) -> str:
        first = messages[0]["content"]
        assert first[0]["type"] == "image", "the image must come first"
        assert first[-1]["type"] == "text" and first[-1]["text"] == doc["questions"][0]
        if turn:
            # the history holds the model's own earlier answers, then the next question
            assert messages[1]["role"] == "assistant"
            assert messages[-1]["content"][-1]["text"] == doc["questions"][turn]
        self.seen_messages.append(messages)
        return doc["answers"][turn]

    def generate_until(self, requests):
        out = []
        for r in requests:
            _ctx, doc_to_messages, _gen, doc_id, task, split = r.arguments
            doc = self.task_dict[task][split][doc_id]
            out.append(self._answer(doc_to_messages(doc), doc, 0))
        return out

    def generate_until_multi_round(self, requests):
        out = []
        for r in requests:
            _ctx, doc_to_messages, _gen, doc_id, task, split = r.arguments
            doc = self.task_dict[task][split][doc_id]
            turns: list[str] = []
            round_idx, info = 0, None
            while True:
                if round_idx == 0:
                    messages = doc_to_messages(doc)
                else:
                    messages, terminal, _prev, info = doc_to_messages(
                        doc, round_idx=round_idx, previous_output=list(turns), previous_round_info=info)
                    if terminal:
                        break
                turns.append(self._answer(messages, doc, round_idx))
                round_idx += 1
            out.append(turns)
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError


def test_in_process_chat_model_scores_gold_answers_perfectly(synth_data_dir, judge_env):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from pulse_tasks.glue.registry import task_root

    manager = TaskManager(include_path=str(task_root(synth_data_dir)))
    model = OracleChat()
    out = simple_evaluate(model=model, tasks=ALL_TASKS, task_manager=manager, log_samples=True)
    results = out["results"]
    for task in ALL_TASKS:
        _check_task_results(results, task, expect_judged=True)
    # gold answers through the chat path score perfectly in both modes
    for task in ("ecgbench_csn", "ecgbench_g12", "ecgbench_mmmu", "ecgbench_ecgqa"):
        assert results[task]["accuracy_paper,none"] == pytest.approx(100.0), task
        assert results[task]["accuracy_strict,none"] == pytest.approx(100.0), task
    for task in ("ecgbench_ptb", "ecgbench_cpsc", "ecgbench_code15"):
        assert results[task]["f1_strict,none"] == pytest.approx(100.0), task
        assert results[task]["hamming_loss_strict,none"] == pytest.approx(0.0), task
    arena_rounds = [m for m in model.seen_messages if len(m) > 1]
    assert arena_rounds, "the arena's second round never reached the model"


# ---------------------------------------------------------------- CLI


def _lmms_eval(args: list[str], env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", *args], env=full_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    return proc


def test_cli_simple_model_finds_tasks_without_include_path(synth_data_dir, judge_env, tmp_path):
    """Plain `lmms-eval --tasks ecgbench`: the entry point registers the task folder and the data."""
    out = tmp_path / "results"
    env = {**judge_env, "ECGBENCH_DATA": str(synth_data_dir)}
    proc = _lmms_eval(["--model", "random_guess", "--model_args", "seed=1", "--tasks", "ecgbench",
                       "--output_path", str(out), "--log_samples"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, samples = _result_files(out)
    for task in ALL_TASKS:
        _check_task_results(data["results"], task, expect_judged=True)
        assert samples.get(task), f"no samples for {task}"
    assert data["configs"]["ecgbench_ptb"]["metadata"]["data_source"].startswith("sha256:")


def test_cli_chat_model_without_multi_round(synth_data_dir, judge_env, fake_server, tmp_path):
    """lmms-eval's openai chat adapter (no multi-round support) on every subset, arena as gold history."""
    out = tmp_path / "results"
    env = {**judge_env, "ECGBENCH_DATA": str(synth_data_dir)}
    tasks = "ecgbench_auto,ecgbench_ptb_report,ecgbench_arena_gold_history"
    model_args = f"model_version=fake-vlm,base_url={fake_server.url},api_key={API_KEY},num_concurrent=2"
    proc = _lmms_eval(["--model", "openai", "--model_args", model_args, "--tasks", tasks,
                       "--output_path", str(out), "--log_samples"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, samples = _result_files(out)
    for task in [s.task for s in SUBSETS if s.task != "ecgbench_arena"] + ["ecgbench_arena_gold_history"]:
        _check_task_results(data["results"], task, expect_judged=True)
    # the fake model's answer "Answer: A. NORM, ..." parses to letter A everywhere
    csn = samples["ecgbench_csn"][0]["accuracy_paper"]
    assert csn["paper"] == "A" and csn["status"] == "ok"
    assert API_KEY not in json.dumps(data), "the API key leaked into the results file"


def test_cli_missing_task_is_visible_in_results_not_exit_code(tmp_path):
    """lmms-eval exits 0 for an unknown task; only the missing results file shows it."""
    out = tmp_path / "results"
    proc = _lmms_eval(["--model", "random_guess", "--tasks", "ecgbench_does_not_exist", "--output_path", str(out)],
                      {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert not glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert proc.returncode == 0 or "not found" in (proc.stderr + proc.stdout).lower()
