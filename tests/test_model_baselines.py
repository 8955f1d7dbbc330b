"""The baseline matrix: six HF image-text-to-text families through ``--model pulse`` (CPU, tiny, no hub).

Each family is a tiny random checkpoint with its real processor class and a chat template in its
layout (pulse_models.testing_hf). The ``pulse`` adapter is built from the model_args string, as
the lmms-eval CLI builds it, and driven with lmms-eval Instances; its answers must equal plain
transformers (``processor.apply_chat_template(..., tokenize=True)`` + greedy ``model.generate``,
one item at a time) for single-turn items at batch 1 and 4 and for the two-turn arena, whose
second prompt carries the model's own first answer. ``ecgbench ask --json`` must report the
image-token count the processor produced.
"""

from __future__ import annotations

import json

import pytest
from lmms_eval.api.instance import Instance

from pulse_models.testing import make_ecg_like_image
from pulse_models.testing_hf import BASELINES, make_tiny_baseline

MAX_NEW = 8  # enough tokens for answers to differ between items; decoding dominates the CPU time
# (width, height): wide, tall, square and tiny images give different tile counts / token grids.
SIZES = [(100, 60), (40, 90), (64, 64), (20, 20)]
QUESTIONS = ["What is the rhythm?", "Which leads show ST elevation?", "Report.", "Is this normal?"]
FOLLOW_UP = "Explain your answer."
GEN = {"max_new_tokens": MAX_NEW, "temperature": 0, "do_sample": False}


def _docs() -> list[dict]:
    return [{"image": make_ecg_like_image(*size, seed=i), "questions": [QUESTIONS[i], FOLLOW_UP]}
            for i, size in enumerate(SIZES)]


DOCS = _docs()


def _doc_to_visual(doc: dict) -> list:
    return [doc["image"]]


def _doc_to_text(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None):
    """pulse_tasks.glue.hooks' multi-round contract: the next question in info["question"]."""
    if round_idx >= len(doc["questions"]):
        return None, None, True, previous_output, previous_round_info
    question = doc["questions"][round_idx]
    return [doc["image"]], question, False, previous_output, {"question": question}


def _adapter(path, batch_size: int):
    from pulse_models.adapter import Pulse

    model = Pulse.create_from_arg_string(f"pretrained={path},dtype=float32,device_map=cpu,max_new_tokens={MAX_NEW}",
                                         {"batch_size": batch_size, "device": None})
    model.task_dict = {"t": {"test": DOCS}}
    return model


def _single(model) -> list[str]:
    reqs = [Instance("generate_until", (d["questions"][0], dict(GEN), _doc_to_visual, i, "t", "test"), idx=0,
                     metadata={"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(DOCS)]
    return model.generate_until(reqs)


def _arena(model) -> list[list[str]]:
    reqs = [Instance("generate_until_multi_round",
                     (d["questions"][0], dict(GEN), _doc_to_visual, _doc_to_text, i, "t", "test"), idx=0,
                     metadata={"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(DOCS)]
    return model.generate_until_multi_round(reqs)


def _load_plain(path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval(), AutoProcessor.from_pretrained(path)


def plain_conversation(model, processor, image, questions: list[str]) -> list[str]:
    """Every round of one conversation about ``image`` with nothing of ours in between: the chat
    template renders the messages, greedy generate answers, the answer joins the history."""
    import torch

    messages: list[dict] = []
    answers: list[str] = []
    for r, question in enumerate(questions):
        content = ([{"type": "image", "image": image}] if r == 0 else []) + [{"type": "text", "text": question}]
        messages.append({"role": "user", "content": content})
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
        answer = processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        answers.append(answer)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return answers


@pytest.fixture(scope="module", params=BASELINES, ids=BASELINES)
def baseline(request, tmp_path_factory):
    """(arch, checkpoint dir, plain-transformers answers [doc][round]): one model built per family."""
    path = make_tiny_baseline(request.param, tmp_path_factory.mktemp(request.param), seed=1)
    model, processor = _load_plain(path)
    reference = [plain_conversation(model, processor, d["image"], d["questions"]) for d in DOCS]
    # A matrix that compares empty strings would pass for any adapter: outputs must say something.
    assert all(r[0] for r in reference) and len({r[0] for r in reference}) > 1, reference
    return request.param, path, reference


def test_single_turn_equals_transformers_at_batch_1_and_4(baseline):
    _arch, path, reference = baseline
    first = [r[0] for r in reference]
    one = _adapter(path, 1)
    assert one.format == "hf"
    assert _single(one) == first
    four = _adapter(path, 4)
    assert _single(four) == first
    assert four.stats["failed"] == 0


def test_two_turn_arena_equals_transformers(baseline):
    _arch, path, reference = baseline
    assert _arena(_adapter(path, 4)) == reference


def test_ask_reports_the_image_token_count(baseline, tmp_path, capsys):
    from transformers import AutoConfig, AutoProcessor

    from pulse_app.cli import main

    _arch, path, reference = baseline
    image = tmp_path / "ecg.png"
    DOCS[0]["image"].save(image)
    rc = main(["ask", "--model", str(path), "--image", str(image), "--json", QUESTIONS[0],
               "--dtype", "float32", "--device", "cpu", "--max-new-tokens", str(MAX_NEW)])
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and rec["answer"] == reference[0][0]
    processor = AutoProcessor.from_pretrained(path)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": DOCS[0]["image"]}, {"type": "text", "text": QUESTIONS[0]}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    image_id = AutoConfig.from_pretrained(path).image_token_id
    n_image = int((inputs["input_ids"] == image_id).sum())
    assert n_image > 0
    assert rec["tokens"]["image"] == n_image
    assert rec["tokens"]["image"] + rec["tokens"]["text"] == inputs["input_ids"].shape[1]


@pytest.mark.slow
def test_lmms_eval_cli_runs_a_baseline_family(synth_data_dir, tmp_path):
    """The real ``lmms-eval --model pulse`` on one family (Idefics3: template-written BOS, image
    splitting, pixel_attention_mask) over a letter subset and the two-turn arena, results read back."""
    import glob
    import os
    import subprocess
    import sys
    from pathlib import Path

    from judge_server import FakeJudgeServer, marker_responder

    from pulse_tasks.data.sources import load_subset
    from pulse_tasks.glue.hooks import doc_to_visual

    path = make_tiny_baseline("idefics3", tmp_path / "idefics3", seed=1)
    out = tmp_path / "results"
    with FakeJudgeServer(marker_responder, api_key="sk-matrix-test", lifetime_s=600) as judge:
        env = {**os.environ, "OPENAI_API_KEY": "sk-matrix-test", "OPENAI_BASE_URL": judge.url,
               "ECGBENCH_DATA": str(synth_data_dir), "ECGBENCH_JUDGE_CACHE": str(tmp_path / "judge.sqlite"),
               "ECGBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "lmms_eval", "--model", "pulse",
             "--model_args", f"pretrained={path},dtype=float32,device_map=cpu", "--batch_size", "2",
             "--gen_kwargs", f"max_new_tokens={MAX_NEW}", "--tasks", "ecgbench_csn,ecgbench_arena", "--limit", "2",
             "--output_path", str(out), "--log_samples"],
            check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert results, proc.stderr[-3000:]
    folder = Path(results[0]).parent
    samples = {task: [json.loads(line) for line in Path(f).read_text().splitlines()]
               for task in ("ecgbench_csn", "ecgbench_arena")
               for f in glob.glob(str(folder / f"*_samples_{task}.jsonl"))}
    assert sorted(samples) == ["ecgbench_arena", "ecgbench_csn"] and all(len(v) == 2 for v in samples.values())
    arena = [s["filtered_resps"] for s in samples["ecgbench_arena"]]
    assert all(len(r) >= 2 and all(a and not a.startswith("[ECGBENCH") for a in r) for r in arena), arena
    # The letter subset's answers equal plain transformers on the same prompt and image.
    docs = load_subset("csn-test-no-cot", synth_data_dir)
    model, processor = _load_plain(path)
    for sample in samples["ecgbench_csn"]:
        image = doc_to_visual(docs[int(sample["doc_id"])])[0]
        assert sample["filtered_resps"] == plain_conversation(model, processor, image, [sample["input"]])[0]
