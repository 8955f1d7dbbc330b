"""vLLM reads original LLaVA-1.6 checkpoints through our plugin (pulse_models/vllm_plugin.py) and
generates what the `pulse` adapter generates: `make test-vllm` runs this file in .venv-vllm
(vLLM's CPU build); elsewhere it is skipped.

Tiny random checkpoints in the original layout (flat, spatial_unpad, a tower folder named by
mm_vision_tower), head_dim 32 (vLLM's CPU attention needs at least 32), fp32 on the CPU.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` creates .venv-vllm with it")

from pulse_models.conversation import IMAGE_TOKEN, build_prompt, tokenize_with_image
from pulse_models.testing import (
    make_ecg_like_image,
    make_tiny_clip_dir,
    make_tiny_original_checkpoint,
)
from pulse_tasks.glue.hooks import SKIP_JUDGE_CHECK_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HEAD_DIM = 32
MAX_NEW = 16
# Several sizes and aspects: square, wide, tall, smaller than a tile, ECG-like 4:3 and very wide.
IMAGE_SIZES = [(32, 32), (100, 60), (60, 100), (47, 93), (320, 240), (400, 90)]
QUESTIONS = ["What is the rhythm of this ECG?", "Which leads show ST elevation? Answer with the letter.",
             "Please write a report: rate, rhythm, axis, intervals."]
VLLM_ENGINE = {"max_model_len": 2048, "max_num_seqs": 8}
# The synthetic ECGBench's nine tasks, as `--tasks ecgbench` runs them.
LMMS_VLLM_ARGS = ("dtype=float32,gpu_memory_utilization=0.15,max_model_len=4096,enforce_eager=True,"
                  "distributed_executor_backend=uni")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-ckpts")
    tower = make_tiny_clip_dir(root / "clip-tower", whole_clip=True, seed=3)
    return {
        "flat": make_tiny_original_checkpoint(root / "flat", merge_type="flat", seed=0, head_dim=HEAD_DIM),
        "spatial_unpad": make_tiny_original_checkpoint(root / "unpad", merge_type="spatial_unpad", seed=1,
                                                       head_dim=HEAD_DIM),
        # LLaVA's own layout: the tower's config and weights only in the folder mm_vision_tower names.
        "tower_folder": make_tiny_original_checkpoint(root / "tower", merge_type="flat", seed=2, head_dim=HEAD_DIM,
                                                      vision_tower=tower, tower_weights=False),
    }


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("vllm-images")
    out = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        path = root / f"img{i}.png"
        make_ecg_like_image(w, h, seed=i).save(path)
        out.append({"image": str(path), "turns": [[QUESTIONS[i % len(QUESTIONS)], None]]})
    return out


def _run_vllm(spec: dict, tmp_path: Path) -> dict:
    """pulse_models.vllm_offline in a fresh process (vLLM binds its CPU threads for the process)."""
    spec_file, out_file = tmp_path / "spec.json", tmp_path / "out.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "pulse_models.vllm_offline", str(spec_file), str(out_file)],
                          check=False, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_file.read_text())


def _pulse_reference(ckpt: Path, item: dict) -> tuple[list[int], list[int], int]:
    """(prompt ids with IMAGE_TOKEN_INDEX, greedy new ids, image tokens) from the pulse model."""
    import torch

    from pulse_models.engine import first_user_text

    model, tok, proc, _ = _load(ckpt)
    turns = [(q, a) for q, a in item["turns"]]
    turns[0] = (first_user_text(turns[0][0], True), turns[0][1])
    ids = tokenize_with_image(build_prompt(turns), tok)
    image = proc.preprocess(item["image"])
    with torch.no_grad():
        new = model.generate(torch.tensor([ids]), images=[image.pixel_values], image_sizes=[image.image_size],
                             max_new_tokens=MAX_NEW, do_sample=False, num_beams=1)
    return ids, new[0].tolist(), proc.num_image_tokens(image.image_size)


_LOADED: dict[str, tuple] = {}


def _load(ckpt: Path) -> tuple:
    from pulse_models.loading import load_pulse

    if str(ckpt) not in _LOADED:
        _LOADED[str(ckpt)] = load_pulse(ckpt, dtype="float32", device="cpu")
    return _LOADED[str(ckpt)]


def _strip_eos(ids: list[int], eos: int = 2) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def _second_turns(ckpt: Path, items: list[dict]) -> list[dict]:
    """Arena-like second turns: the history holds the model's own greedy first answer."""
    tok = _load(ckpt)[1]
    out = []
    for item in items[:3]:
        answer = tok.decode(_strip_eos(_pulse_reference(ckpt, item)[1]), skip_special_tokens=True).strip()
        assert answer, "empty first answer: the test needs a non-empty history"
        # as lmms-eval's vllm model hands it back: vLLM's text keeps the first piece's space ("▁c" -> " c")
        out.append({"image": item["image"], "turns": [[item["turns"][0][0], " " + answer], ["And the heart rate?", None]]})
    return out


@pytest.fixture(scope="module")
def vllm_runs(checkpoints, items, tmp_path_factory) -> dict:
    """One vLLM process, one engine per checkpoint (the slow part: imports and engine start)."""
    tmp = tmp_path_factory.mktemp("vllm-run")
    unpad = str(checkpoints["spatial_unpad"])
    return _run_vllm({"checkpoints": [str(p) for p in checkpoints.values()], "items": items,
                      "extra_items": {unpad: _second_turns(checkpoints["spatial_unpad"], items)},
                      "max_new_tokens": MAX_NEW, "engine": VLLM_ENGINE}, tmp)


def test_greedy_outputs_and_image_tokens_equal_pulse(checkpoints, items, vllm_runs):
    assert not vllm_runs["errors"], vllm_runs["errors"]
    for name, ckpt in checkpoints.items():
        run = vllm_runs["checkpoints"][str(ckpt)]
        image_id = run["image_token_id"]
        for item, out in zip(items, run["outputs"]):
            ids, new, n_image = _pulse_reference(ckpt, item)
            where = f"{name}, image {item['image']}"
            # the same prompt: text ids identical, the one placeholder expanded to the merge type's count
            assert out["prompt_token_ids"].count(image_id) == n_image, where
            k = ids.index(-200)
            assert out["prompt_token_ids"] == ids[:k] + [image_id] * n_image + ids[k + 1:], where
            assert _strip_eos(out["token_ids"]) == _strip_eos(new), where
    # the merge types differ in their counts (spatial_unpad adds newline tokens and unpads)
    flat = vllm_runs["checkpoints"][str(checkpoints["flat"])]["outputs"]
    unpad = vllm_runs["checkpoints"][str(checkpoints["spatial_unpad"])]["outputs"]
    assert [len(o["prompt_token_ids"]) for o in flat] != [len(o["prompt_token_ids"]) for o in unpad[:len(flat)]]


def test_second_turn_carries_the_models_own_first_answer(checkpoints, items, vllm_runs):
    """The arena's round 2 as lmms-eval's vllm model sends it: the history holds round 1's answer."""
    ckpt = checkpoints["spatial_unpad"]
    run = vllm_runs["checkpoints"][str(ckpt)]
    second = _second_turns(ckpt, items)
    outputs = run["outputs"][len(items):]
    assert len(outputs) == len(second)
    tok, image_id = _load(ckpt)[1], run["image_token_id"]
    for item, out in zip(second, outputs):
        answer = item["turns"][0][1].strip()  # the pulse adapter keeps its answers stripped
        ids, new, n_image = _pulse_reference(ckpt, {**item, "turns": [[item["turns"][0][0], answer],
                                                                      item["turns"][1]]})
        answer_ids = tok(" " + answer, add_special_tokens=False).input_ids
        text_ids = [i for i in out["prompt_token_ids"] if i != image_id]
        assert any(text_ids[j:j + len(answer_ids)] == answer_ids for j in range(len(text_ids))), \
            "the first answer is not in the second turn's prompt"
        k = ids.index(-200)
        assert out["prompt_token_ids"] == ids[:k] + [image_id] * n_image + ids[k + 1:]
        assert _strip_eos(out["token_ids"]) == _strip_eos(new)


def test_wrong_merge_type_and_missing_tower_fail_clearly(checkpoints, tmp_path):
    """vLLM stops at its config stage with the reader's message (no engine is started)."""
    import shutil

    from vllm import LLM

    bad_merge = tmp_path / "bad-merge"
    shutil.copytree(checkpoints["flat"], bad_merge)
    cfg = json.loads((bad_merge / "config.json").read_text())
    cfg["mm_patch_merge_type"] = "spatial_flat"
    (bad_merge / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match=r"mm_patch_merge_type 'spatial_flat' not in \('flat', 'spatial_unpad'\)"):
        LLM(model=str(bad_merge), **VLLM_ENGINE)

    no_tower = tmp_path / "no-tower"
    shutil.copytree(checkpoints["tower_folder"], no_tower)
    cfg = json.loads((no_tower / "config.json").read_text())
    cfg["mm_vision_tower"] = str(tmp_path / "moved-away-clip")
    (no_tower / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match=r"mm_vision_tower '.*moved-away-clip'.*no local folder of that name"):
        LLM(model=str(no_tower), **VLLM_ENGINE)


# ---------------------------------------------------------------- through lmms-eval


def _lmms_eval(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lmms-eval")
    return subprocess.run([str(exe), *args], check=False, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=1800)


def _samples(out: Path) -> dict[str, dict]:
    results = sorted(glob.glob(str(out / "**" / "*_results.json"), recursive=True))
    assert results, f"lmms-eval wrote no results file under {out}"
    samples: dict[str, dict] = {}
    for path in glob.glob(str(Path(results[-1]).parent / "*_samples_*.jsonl")):
        task = Path(path).stem.split("_samples_", 1)[1]
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                samples[f"{task}/{row['doc_id']}"] = row
    return samples


def _answers(row: dict) -> list[str]:
    """A samples row's answers (one, or the arena's two), stripped as the scorers read them."""
    flat: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        else:
            flat.append(str(x).strip())

    walk(row.get("filtered_resps", row.get("resps")))
    return flat


def _writes_text(ckpt: Path) -> Path:
    """The checkpoint with its LM-head rows of SentencePiece byte pieces (<0x..>) zeroed, so greedy
    answers are valid UTF-8 text, as a trained model's are. Random weights otherwise emit runs of
    byte pieces that are no UTF-8, which vLLM's streaming detokenizer and transformers' decode
    render differently (the token ids are the same: the direct tests above compare ids)."""
    from safetensors.torch import load_file, save_file

    tok = _load(ckpt)[1]
    weights = load_file(str(ckpt / "model.safetensors"))
    pieces = tok.convert_ids_to_tokens(list(range(weights["lm_head.weight"].shape[0])))
    byte_ids = [i for i, piece in enumerate(pieces) if piece and piece.startswith("<0x")]
    assert byte_ids, "the tiny tokenizer has byte-fallback pieces"
    weights["lm_head.weight"][byte_ids] = 0.0
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return ckpt


def test_lmms_eval_vllm_model_equals_pulse(tmp_path_factory, synth_data_dir, tmp_path):
    """`lmms-eval --model vllm` on all nine tasks (the arena's two turns included) writes the
    greedy answers `--model pulse` writes, on at least 95% of the items (fp32, CPU)."""
    # Judged subsets deferred (no judge here) through the hooks' switch: lmms-eval's --predict_only
    # swaps in its own process_results, which fails on the arena's two answers.
    env = {"ECGBENCH_DATA": str(synth_data_dir), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "ECGBENCH_CACHE": str(tmp_path / "cache"), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           SKIP_JUDGE_CHECK_ENV: "1"}
    ckpt = _writes_text(make_tiny_original_checkpoint(tmp_path_factory.mktemp("text") / "flat", merge_type="flat",
                                                      seed=4, head_dim=HEAD_DIM))
    common = ["--tasks", "ecgbench", "--log_samples", "--gen_kwargs", f"max_new_tokens={MAX_NEW}"]
    vllm_out, pulse_out = tmp_path / "vllm", tmp_path / "pulse"
    proc = _lmms_eval(["--model", "vllm", "--model_args", f"model={ckpt},{LMMS_VLLM_ARGS},max_new_tokens={MAX_NEW}",
                       "--output_path", str(vllm_out), *common], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = _lmms_eval(["--model", "pulse", "--model_args", f"pretrained={ckpt},dtype=float32,device_map=cpu", "--batch_size", "4",
                       "--output_path", str(pulse_out), *common], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ours, theirs = _samples(vllm_out), _samples(pulse_out)
    assert set(ours) == set(theirs) and len(ours) >= 30, (sorted(ours), sorted(theirs))
    tasks = {key.split("/")[0] for key in ours}
    assert len(tasks) == 9, tasks
    arena = [k for k in ours if k.startswith("ecgbench_arena/")]
    assert arena and all(len(_answers(ours[k])) == 2 for k in arena), "the arena's second round is missing"
    equal = sum(_answers(ours[k]) == _answers(theirs[k]) for k in ours)
    assert equal / len(ours) >= 0.95, [(k, _answers(ours[k]), _answers(theirs[k])) for k in ours
                                       if _answers(ours[k]) != _answers(theirs[k])][:5]
    assert all(IMAGE_TOKEN not in a for k in ours for a in _answers(ours[k]))


# ---------------------------------------------------------------- the benchmark's vLLM setting


def test_bench_vllm_setting_runs_the_same_items(tmp_path):
    """bench/eval_throughput.py --vllm: the reference's prompts and scans on vLLM, exactly the
    workload's new tokens, items/s and agreement with the batch-1 reference (tiny, CPU)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import eval_throughput

    out = tmp_path / "bench.json"
    code = eval_throughput.main(["--tiny", "--device", "cpu", "--vllm", "--items", "short=4,report=2",
                                 "--reference-items", "short=2,report=1", "--batch-sizes", "2", "--report-tokens", "8",
                                 "--json", str(out)])
    data = json.loads(out.read_text())
    assert code == 0, data
    rows = {(r["workload"], r["setting"]): r for r in data["results"]}
    for workload, n, new in (("short", 4, 16), ("report", 2, 8)):
        r = rows[(workload, "vllm")]
        assert r["n_items"] == r["compared_items"] == n and r["items_per_s"] > 0
        assert r["mean_new_tokens"] == r["forced_new_tokens"] == new and r["wrong_length"] == 0
        assert r["identical_items"] == 1.0, r
    assert data["vllm"]["startup_s"] > 0
