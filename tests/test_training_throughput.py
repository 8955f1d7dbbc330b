"""Throughput accounting: the FLOP model on the real 7B-width definition, the callback, the bench script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pulse_training.throughput import FlopModel, StepCounts, ThroughputCallback, peak_tflops_for

REPO = Path(__file__).resolve().parents[1]


def _bench_module():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import train_throughput
    finally:
        sys.path.pop(0)
    return train_throughput


def test_flops_of_the_7b_width_bench_model():
    from pulse_models.modeling import PulseLlavaForCausalLM

    bench = _bench_module()
    with torch.device("meta"):
        model = PulseLlavaForCausalLM(bench.build_config(layers=8, tiny=False))
    fm = FlopModel.from_model(model)
    # 8 x (4 x 4096^2 + 3 x 4096 x 11008) + lm_head 4096 x 32000 (+ norms): 1.75 B
    assert fm.lm_params == pytest.approx(8 * (4 * 4096**2 + 3 * 4096 * 11008) + 4096 * 32000, rel=1e-3)
    # CLIP: the 23 of 24 layers that mm_vision_select_layer -2 runs (one layer: 12.6 M parameters)
    assert (fm.lm_layers, fm.lm_hidden, fm.vision_layers, fm.vision_hidden) == (8, 4096, 23, 1024)
    assert fm.vision_params == pytest.approx(303e6 - 12.6e6, rel=0.02) and not fm.vision_trainable
    merged = 300 - 1 + 5 * 576  # one ECG sample: 2880 image + 299 text tokens
    per_sample = fm.flops(tokens=merged, sq_tokens=merged**2, tiles=5)
    lm_only = 6 * fm.lm_params * merged + 12 * 8 * 4096 * merged**2
    assert lm_only == pytest.approx(37.5e12, rel=0.02)  # the figure behind the measured MFU table
    assert per_sample == pytest.approx(lm_only + 2.3e12, rel=0.02)  # + projector (trained) + CLIP forward
    # The LM head (4096 x 32000) on the 60 positions that predict a supervised token, not all 3179.
    assert fm.lm_head_params == 4096 * 32000
    head_only = fm.flops(tokens=merged, sq_tokens=merged**2, tiles=5, head_tokens=60)
    assert per_sample - head_only == pytest.approx(6 * 4096 * 32000 * (merged - 60))


def test_peak_lookup():
    assert peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops_for("cpu") is None


def test_counts_are_popped_before_the_model_sees_them():
    counts = StepCounts()
    batch = {"input_ids": torch.zeros(2, 5), "num_merged_tokens": torch.tensor(10),
             "num_merged_sq": torch.tensor(50), "num_image_tiles": torch.tensor(4)}
    counts.add(batch)
    assert set(batch) == {"input_ids"}
    counts.add_head_tokens(6)
    assert counts.take() == (2, {"num_merged_tokens": 10.0, "num_merged_sq": 50.0, "num_image_tiles": 4.0,
                                 "num_head_tokens": 6.0})
    assert counts.take() == (0, {"num_merged_tokens": 0.0, "num_merged_sq": 0.0, "num_image_tiles": 0.0,
                                 "num_head_tokens": 0.0})


def test_callback_reports_every_n_steps(tmp_path):
    fm = FlopModel(lm_params=1000, lm_layers=1, lm_hidden=10, projector_params=0, vision_params=0,
                   vision_layers=0, vision_hidden=0)
    counts = StepCounts()
    cb = ThroughputCallback(counts, fm, every=2, peak_tflops=1e-9)
    args = SimpleNamespace(world_size=1, output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, log_history=[], is_world_process_zero=True)
    cb.on_train_begin(args, state, None)
    for step in (1, 2):
        counts.add({"input_ids": torch.zeros(4, 3), "num_merged_tokens": torch.tensor(40),
                    "num_merged_sq": torch.tensor(400), "num_image_tiles": torch.tensor(0)})
        state.global_step = step
        cb.on_step_end(args, state, None)
    (record,) = cb.history
    assert record["step"] == 2 and record["samples_per_s"] > 0 and "mfu" in record
    assert json.loads((tmp_path / "throughput.jsonl").read_text())["step"] == 2
    assert state.log_history[-1]["throughput"] == record


def test_bench_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--tiny", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["samples_per_s"] > 0 and result["mfu"] is None  # no invented peak on CPU
    assert result["grad_ckpt"] and result["micro_batch"] == 2  # the recipe's settings by default


def test_bench_settings_spec_and_time_budget(tmp_path):
    bench = _bench_module()
    args = SimpleNamespace(attn="sdpa", engine="torch")
    got = [(s.micro_batch, s.grad_ckpt, s.ckpt_every, s.compile)
           for s in bench.parse_settings("2+ckpt, 4 ,1+compile+ckpt,2+ckpt/3", args)]
    assert got == [(2, True, 1, False), (4, False, 1, False), (1, True, 1, True), (2, True, 3, False)]
    for bad in ("2+fast", "zero", "0", "2+ckpt/0", "2+ckpt/x", "2+ckpt+ckpt/2"):
        with pytest.raises(SystemExit) as exc:
            bench.parse_settings(bad, args)
        assert exc.value.code == 2
    # Settings the budget leaves no time for are listed as skipped, and the JSON is there regardless.
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--tiny", "--settings",
                           "2,1+ckpt", "--time-budget", "0", "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["micro_batch"], r["grad_ckpt"]) for r in rows] == [(2, False), (1, True)]
    assert all("time budget" in r["skipped"] for r in rows)


@pytest.mark.slow
def test_recipe_mode_times_the_recipes_real_path_on_a_tiny_model(tmp_path):
    """--recipe --tiny: pulse_training.recipe.train with tiny.yaml (DeepSpeed ZeRO-2 on the CPU,
    gloo), ECG records with PNGs on disk, the configured checkpointing; the figure combines the
    recipe callback's per-step windows after the warm-up ones."""
    out = tmp_path / "recipe.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("MASTER_PORT", None)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--recipe", "--tiny",
                           "--warmup", "1", "--steps", "2", "--set", "gradient_checkpointing_every=2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())
    assert (r["mode"], r["recipe_config"], r["deepspeed"], r["zero_stage"]) == ("recipe", "tiny.yaml",
                                                                               "zero2_cpu_smoke.json", 2)
    assert (r["grad_ckpt"], r["ckpt_every"], r["micro_batch"], r["world_size"]) == (True, 2, 2, 1)
    assert r["records"] == 3 * 2 and "data: 6/6 records kept" in proc.stdout + proc.stderr  # read from disk
    assert [w["step"] for w in r["windows"]] == [1, 2, 3] and r["timed_steps"] == 2 == r["warmup_steps"] + 1
    timed = [w for w in r["windows"] if w["step"] > 1]
    seconds = sum(w["elapsed_s"] for w in timed)
    assert r["samples_per_s"] == pytest.approx(sum(w["samples"] for w in timed) / seconds, rel=2e-3)
    assert r["step_s"] == pytest.approx(seconds / 2, abs=1e-4)  # both rounded to 4 decimals
    assert r["mfu"] is None and r["peak_tflops"] is None and r["loss"] > 0  # no invented CPU peak


def test_recipe_mode_budget_and_failure_exit_status(tmp_path):
    bench = _bench_module()
    out = tmp_path / "recipe.json"
    assert bench.main(["--recipe", "--tiny", "--time-budget", "0", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert "time budget" in r["skipped"]
    # A bad recipe override fails the measurement: recorded, and the exit status says so.
    assert bench.main(["--recipe", "--tiny", "--set", "no_such_key=1", "--json", str(out)]) == 1
    (r,) = json.loads(out.read_text())
    assert "unknown config key 'no_such_key'" in r["error"]


def test_combine_windows_weighs_steps_by_their_time():
    bench = _bench_module()
    windows = [{"elapsed_s": 1.0, "samples": 2, "tflops_per_device": 100.0, "tokens_per_s": 10.0},
               {"elapsed_s": 3.0, "samples": 2, "tflops_per_device": 50.0, "tokens_per_s": 2.0}]
    got = bench.combine_windows(windows, peak=500.0)
    assert got["samples_per_s"] == 1.0 and got["step_s"] == 2.0 and got["timed_steps"] == 2
    assert got["tflops"] == pytest.approx(62.5) and got["mfu"] == pytest.approx(0.125)
    assert got["tokens_per_s"] == 4.0 and bench.combine_windows(windows, peak=None)["mfu"] is None
