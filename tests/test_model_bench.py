"""bench/eval_throughput.py runs end to end with --tiny on CPU (no timing claims): every setting
generates exactly the workload's new tokens, failed items are failures, outputs are compared over
every item timed."""

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
    # Compared over every item timed, not only the reference's; the forced count on every item.
    assert [r["compared_items"] for r in rows] == [r["n_items"] for r in rows] == [2, 4, 2, 2]
    assert all(r["mean_new_tokens"] == r["forced_new_tokens"] and r["wrong_length"] == 0 for r in rows)
    assert [r["forced_new_tokens"] for r in rows] == [16, 16, 8, 8]
    out = capsys.readouterr().out
    assert "n/a (not a GPU run)" in out and "EOS ignored" in out and "16.0 new tokens/item" in out


def test_cpu_without_tiny_refuses(capsys):
    sys.path.insert(0, str(BENCH))
    import eval_throughput
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert eval_throughput.main(["--device", "cpu"]) == 2


@pytest.mark.slow
def test_eval_throughput_phases_profile_and_budget(tmp_path):
    """The bounded device run's options: a phase split and kernel table of one batch, a time budget
    that skips the settings it has no time for, and JSON rewritten as results come in."""
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    out, prof = tmp_path / "bench.json", tmp_path / "prof.txt"
    assert eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=2",
                                 "--reference-items", "short=2", "--batch-sizes", "2", "--phases", "2",
                                 "--profile", str(prof), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    phases = data["phases"]
    assert phases["batch"] == 2 and phases["new_tokens"] == 16
    assert all(phases[k] > 0 for k in ("prepare_ms", "clip_splice_ms", "total_gpu_ms"))
    assert phases["total_gpu_ms"] >= phases["decode_ms"]
    assert "aten::" in prof.read_text()  # a real profiler table, not a placeholder
    assert data["meta"]["transformers"] and data["meta"]["wall_s"] > 0
    assert [r["setting"] for r in data["results"]] == ["reference", "adapter"] and not data["skipped"]

    spent = tmp_path / "spent.json"
    assert eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=2",
                                 "--reference-items", "short=2", "--batch-sizes", "2", "--time-budget", "0",
                                 "--json", str(spent)]) == 0
    data = json.loads(spent.read_text())
    assert data["results"] == []
    assert [(s["setting"], s["batch_size"]) for s in data["skipped"]] == [("reference", 1), ("adapter", 2)]


def test_bounded_run_order_measures_the_reference_and_dynamic_cache_first():
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    plan = eval_throughput.plan_settings(["short", "report"], {"short": 16, "report": 256}, {"short": 24, "report": 4},
                                         {"short": 128, "report": 64}, [32], ["dynamic", "static"], 8)
    assert [(w, s, b, c) for w, s, b, c, _, _ in plan] == [
        ("short", "reference", 1, "dynamic"), ("short", "adapter", 32, "dynamic"),
        ("report", "reference", 1, "dynamic"), ("report", "adapter", 32, "dynamic"),
        ("report", "adapter", 32, "static"), ("short", "adapter", 32, "static")]
    assert plan[0][4:] == (0, 24) and plan[1][4:] == (8, 128)  # the reference: inline preparation, its own count


@pytest.mark.slow
def test_new_tokens_are_forced_and_failed_items_fail_the_verdict(tmp_path, monkeypatch, capsys):
    """A model that always emits EOS first (all logits equal, greedy picks id 0, declared an EOS id)
    would stop every item after one token: the timed settings still generate all 16. One prompt's
    image is unreadable: its items are failures, not done items, and the verdict turns to FAIL."""
    sys.path.insert(0, str(BENCH))
    import eval_throughput
    import torch

    from pulse_models.engine import GenOutput, GenSettings, OriginalEngine, run_batches

    built = {}

    def eos_first_model(*args, **kwargs):
        model, tok, ip = real_build(*args, **kwargs)
        with torch.no_grad():
            model.language_model.model.norm.weight.zero_()  # hidden state 0 -> every logit 0 -> argmax id 0
        model.language_model.generation_config.eos_token_id = [tok.eos_token_id, 0]
        built.update(model=model, tok=tok, ip=ip)
        return model, tok, ip

    def one_unreadable(n, *args, **kwargs):
        items = real_items(n, *args, **kwargs)
        items[1].load_image = lambda: b"not a png"
        return items

    real_build, real_items = eval_throughput.build_model, eval_throughput.make_items
    monkeypatch.setattr(eval_throughput, "build_model", eos_first_model)
    monkeypatch.setattr(eval_throughput, "make_items", one_unreadable)
    out = tmp_path / "bench.json"
    code = eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=6",
                                 "--reference-items", "short=3", "--batch-sizes", "3", "--json", str(out)])
    assert code == 1
    data = json.loads(out.read_text())
    ref, cand = data["results"]
    assert (ref["failed"], cand["failed"]) == (1, 2)  # prompt 1 is item 1 and item 4 of the candidate
    assert ref["mean_new_tokens"] == cand["mean_new_tokens"] == 16.0 and cand["wrong_length"] == 0
    assert cand["items_per_s"] == pytest.approx(4 / cand["seconds"])  # failed items are not done items
    assert cand["identical_items"] == pytest.approx(4 / 6) and cand["compared_items"] == 6
    assert "image" in cand["failures"][0].lower() or "input error" in cand["failures"][0]
    (summary,) = data["summary"]
    assert summary["verdict"].startswith("FAIL (") and "1 of 3 items failed" in summary["verdict"]
    assert "FAIL (" in capsys.readouterr().out
    # The adapter's default settings (no min_new_tokens) still stop at EOS: one token per item.
    engine = OriginalEngine(built["model"], built["tok"], built["ip"])
    items = eval_throughput.cycle_items(real_items(2, built["tok"], True, 0), 2)
    outs = run_batches(engine, items, GenSettings(max_new_tokens=16), 2, 0)
    assert all(isinstance(o, GenOutput) and o.token_ids == [0] for o in outs)


def test_agreement_is_over_every_item_timed():
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    ref = [[1, 2], [3, 4]]
    # items 0..4 repeat prompts 0, 1, 0, 1, 0; item 3 differs in one token, item 4 failed (no ids)
    assert eval_throughput.agreement(ref, [[1, 2], [3, 4], [1, 2], [3, 9], []]) == (pytest.approx(3 / 5),
                                                                                     pytest.approx(7 / 10))
    assert eval_throughput.agreement(ref, []) == (0.0, 0.0)
    assert eval_throughput.agreement([], [[1]]) == (0.0, 0.0)  # no reference output: nothing is identical
    assert eval_throughput.agreement([[]], [[]]) == (0.0, 0.0)  # a failed item never matches a failed reference


@pytest.mark.slow
def test_compile_layers_compiles_every_decoder_layer_and_outputs_stay_identical(tmp_path):
    """--compile-layers BACKEND: each decoder layer runs through torch.compile (here dynamo with the
    eager backend, so no C++ build on the CPU); batched outputs still equal batch 1's and the JSON
    says the run was compiled."""
    sys.path.insert(0, str(BENCH))
    import eval_throughput
    import torch

    compiled: list[str] = []
    real_compile = torch.nn.Module.compile

    def spy(self, *args, **kwargs):
        compiled.append(kwargs.get("backend"))
        return real_compile(self, *args, **kwargs)

    out = tmp_path / "bench.json"
    torch.nn.Module.compile = spy
    try:
        code = eval_throughput.main(["--tiny", "--device", "cpu", "--workloads", "short", "--items", "short=4",
                                     "--reference-items", "short=2", "--batch-sizes", "2", "--compile-layers",
                                     "eager", "--json", str(out)])
    finally:
        torch.nn.Module.compile = real_compile
        torch._dynamo.reset()
    assert code == 0
    data = json.loads(out.read_text())
    assert data["meta"]["compile_layers"] == "eager"
    assert compiled and set(compiled) == {"eager"}
    assert all(r["identical_items"] == 1.0 and r["failed"] == 0 for r in data["results"])


def test_eval_throughput_vllm_setting_skipped_without_vllm(tmp_path):
    """--vllm where vllm is not importable (the device machine): the adapter settings run, the vLLM
    setting is skipped with its reason in the JSON, and the exit status stays 0."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is importable here: tests/test_vllm_plugin.py runs the setting")
    sys.path.insert(0, str(BENCH))
    import eval_throughput

    out = tmp_path / "bench.json"
    assert eval_throughput.main(["--tiny", "--device", "cpu", "--vllm", "--workloads", "short", "--items", "short=2",
                                 "--reference-items", "short=2", "--batch-sizes", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "not importable" in data["vllm"]["skipped"]
    assert [r["setting"] for r in data["results"]] == ["reference", "adapter"]
