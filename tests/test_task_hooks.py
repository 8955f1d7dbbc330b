"""Task hooks, the YAML folder and the task registry, without running lmms-eval."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pulse_tasks.glue import hooks
from pulse_tasks.glue.registry import TASK_FOLDER, is_our_task_root, packaged_task_root, task_root
from pulse_tasks.data.subsets import BY_CONFIG, SUBSETS

YAML_DIR = packaged_task_root() / TASK_FOLDER


def _arena_doc() -> dict:
    return {"id": "a1", "subset": "arena", "image": Image.new("L", (8, 8)), "image_path": "arena/1.png",
            "questions": ["What rhythm?", "Why?"], "answers": ["Sinus rhythm.", "Regular P waves."], "gold_options": []}


def _load_yaml(path: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")
    return yaml.load(path.read_text(), Loader=Loader)


@pytest.mark.parametrize("spec", SUBSETS, ids=lambda s: s.task)
def test_yaml_matches_subset_table(spec):
    config = _load_yaml(YAML_DIR / f"{spec.task}.yaml")
    assert config["task"] == spec.task and config["dataset_name"] == spec.config
    assert [m["metric"] for m in config["metric_list"]] == list(hooks.metric_names(spec))
    utils = runpy.run_path(str(YAML_DIR / "utils.py"))
    for entry in config["metric_list"]:
        assert callable(utils[entry["aggregation"].split(".", 1)[1]])
        assert entry["higher_is_better"] is (entry["metric"] not in hooks.LOWER_IS_BETTER)
    assert callable(utils[config["process_docs"].split(".", 1)[1]])
    assert (config.get("output_type") == "generate_until_multi_round") is (spec.kind == "arena")


def test_groups_list_the_subsets():
    assert _load_yaml(YAML_DIR / "ecgbench.yaml")["task"] == [s.task for s in SUBSETS]
    auto = _load_yaml(YAML_DIR / "ecgbench_auto.yaml")["task"]
    assert auto == [s.task for s in SUBSETS if s.kind not in ("report", "arena")] and len(auto) == 7


def test_template_sets_reference_generation_and_explicit_until():
    template = _load_yaml(YAML_DIR / "_default_template_yaml")
    gen = template["generation_kwargs"]
    assert gen["max_new_tokens"] == 1024 and gen["temperature"] == 0 and gen["num_beams"] == 1
    assert gen["until"] == ["</s>"]  # without it lmms-eval would stop reports at the first blank line
    assert template["dataset_path"] == "PULSE-ECG/ECGBench"


def test_doc_to_text_and_visual_single_turn():
    doc = {**_arena_doc(), "subset": "csn-test-no-cot", "questions": ["Q?"], "answers": ["A"]}
    assert hooks.doc_to_text(doc) == "Q?"
    assert hooks.doc_to_text(doc, {"pre_prompt": "P: ", "post_prompt": " !"}) == "P: Q? !"
    (image,) = hooks.doc_to_visual(doc)
    assert image.mode == "RGB"
    messages = hooks.doc_to_messages(doc)
    assert [part["type"] for part in messages[0]["content"]] == ["image", "text"]


def test_multi_round_text_protocol_carries_own_answer():
    doc = _arena_doc()
    visuals, text, terminal, outputs, info = hooks.doc_to_text(doc, previous_output=["It is AF."], round_idx=1)
    assert not terminal and len(visuals) == 1
    assert "It is AF." in text and text.endswith("Next question: Why?")
    assert info["ecgbench_turns"] == [["What rhythm?", "It is AF."]] and info["question"] == "Why?"
    *_, terminal, _, _ = hooks.doc_to_text(doc, previous_output=["x", "y"], round_idx=2)
    assert terminal


def test_multi_round_messages_hold_full_history():
    doc = _arena_doc()
    messages, terminal, _, _ = hooks.doc_to_messages(doc, round_idx=1, previous_output=["It is AF."])
    assert not terminal
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0]["text"] == "It is AF."
    assert messages[0]["content"][0]["type"] == "image" and len(messages[2]["content"]) == 1
    assert hooks.doc_to_messages(doc, round_idx=2, previous_output=["a", "b"])[1] is True


def test_gold_history_variant_uses_gold_answers():
    import datasets

    base = datasets.Dataset.from_list([{k: v for k, v in _arena_doc().items() if k != "image"}])
    base = base.cast_column("image_path", datasets.Value("string"))
    doc = {**_arena_doc(), "turn": 1, "conversation_id": "a1", "id": "a1#turn2"}
    text = hooks.doc_to_text_gold_history(doc)
    assert "Sinus rhythm." in text and text.endswith("Why?")
    messages = hooks.doc_to_messages_gold_history(doc)
    assert messages[1]["content"][0]["text"] == "Sinus rhythm."
    record = hooks.process_results_gold_history(doc, ["Because."])["judge_score"]
    assert record["id"] == "a1" and record["turn"] == 1 and record["response"] == "Because."


def test_process_results_and_aggregation_round_trip():
    spec = BY_CONFIG["csn-test-no-cot"]
    docs = [{"id": f"d{i}", "subset": spec.config, "questions": ["Which? A. x B. y"], "answers": ["B. y"], "gold_options": []}
            for i in range(4)]
    outs = [hooks.process_results(d, [r]) for d, r in zip(docs, ["B", "A", "no idea", "B."])]
    assert set(outs[0]) == set(hooks.metric_names(spec))
    records = [o["accuracy_paper"] for o in outs]
    # paper: 2 right + 1 unparsed at expected credit 1/8 -> (2 + 0.125) / 4
    assert hooks.aggregate_metric(records, "accuracy_paper") == pytest.approx(100 * 2.125 / 4)
    assert hooks.aggregate_metric(records, "accuracy_strict") == pytest.approx(50.0)
    assert hooks.aggregate_metric(records, "unparsed") == 1


def test_multilabel_undefined_metric_is_nan_not_zero():
    spec = BY_CONFIG["ptb-test"]
    doc = {"id": "p", "subset": spec.config, "questions": ["Labels?"], "answers": ["NORM"], "gold_options": []}
    records = [hooks.process_results(doc, ["NORM"])["auc_paper"]]
    value = hooks.aggregate_metric(records, "auc_paper")
    assert value != value  # NaN: one class, constant gold -> AUC undefined


def test_generated_task_folder_for_local_copy(synth_json_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ECGBENCH_CACHE", str(tmp_path / "cache"))
    root = task_root(synth_json_dir)
    assert root != packaged_task_root() and is_our_task_root(root)
    ptb = (root / TASK_FOLDER / "ecgbench_ptb.yaml").read_text()
    assert "dataset_path: parquet" in ptb
    parquet = json.loads(ptb.split("\n    test: ", 1)[1].splitlines()[0])
    assert Path(parquet).is_file()
    template = (root / TASK_FOLDER / "_default_template_yaml").read_text()
    assert "sha256:" in template and "synthetic: true" in template
    assert task_root(synth_json_dir) == root  # built once, then reused


def test_partial_local_copy_drops_missing_tasks(synth_data_dir, tmp_path, monkeypatch):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(synth_data_dir, partial)
    shutil.rmtree(partial / "arena")
    monkeypatch.setenv("ECGBENCH_CACHE", str(tmp_path / "cache"))
    root = task_root(partial)
    folder = root / TASK_FOLDER
    assert not (folder / "ecgbench_arena.yaml").exists()
    assert not (folder / "ecgbench_arena_gold_history.yaml").exists()  # never silently read from the hub
    assert "ecgbench_arena" not in (folder / "ecgbench.yaml").read_text()


def test_hub_default_is_the_packaged_folder(monkeypatch):
    monkeypatch.delenv("ECGBENCH_DATA", raising=False)
    assert task_root() == packaged_task_root()


def test_judge_tasks_fail_fast_without_judge(monkeypatch):
    from pulse_tasks.scoring import judge

    from pulse_tasks.scoring.judge.settings import ENV_VARS

    for var in (*ENV_VARS, hooks.SKIP_JUDGE_CHECK_ENV):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(judge.JudgeNotConfiguredError):
        hooks._check_judge_configured(BY_CONFIG["arena"])
    monkeypatch.setenv(hooks.SKIP_JUDGE_CHECK_ENV, "1")
    hooks._check_judge_configured(BY_CONFIG["arena"])  # predict-only runs skip the check


def test_offline_hint_names_the_setting_when_the_hub_is_switched_off(monkeypatch, caplog):
    from pulse_tasks.glue.registry import warn_if_hub_unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level("WARNING", logger="ecgbench"):
        assert warn_if_hub_unreachable(["lmms_eval", "--tasks", "ecgbench_ptb"])
    assert "ECGBENCH_DATA" in caplog.text and "ecgbench data fetch" in caplog.text
    assert not warn_if_hub_unreachable(["lmms_eval", "--tasks", "mmmu_val"])  # not our run: silent


def test_offline_hint_when_the_hub_does_not_answer(monkeypatch, caplog):
    """Without the offline switches, a hub host that refuses connections gets the same hint
    (lmms-eval alone would retry for minutes and end in a bare RetryError); a host that answers,
    or a proxy we cannot see past, gets none."""
    import socket

    from pulse_tasks.glue.registry import PROXY_ENV_VARS, hub_unreachable_reason, warn_if_hub_unreachable

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", *PROXY_ENV_VARS):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{dead}")
    assert "127.0.0.1" in hub_unreachable_reason(timeout=1.0)
    with caplog.at_level("WARNING", logger="ecgbench"):
        assert warn_if_hub_unreachable(["lmms_eval", "--tasks", "ecgbench_ptb"])
    assert "looks unreachable" in caplog.text and "ECGBENCH_DATA" in caplog.text
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub_unreachable_reason(timeout=1.0) is None
        assert not warn_if_hub_unreachable(["lmms_eval", "--tasks", "ecgbench_ptb"])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_unreachable_reason(timeout=1.0) is None


def test_gold_history_yaml_hooks_exist():
    config = _load_yaml(YAML_DIR / "ecgbench_arena_gold_history.yaml")
    utils = runpy.run_path(str(YAML_DIR / "utils.py"))
    assert [m["metric"] for m in config["metric_list"]] == list(hooks.metric_names(BY_CONFIG["arena"]))
    for ref in [m["aggregation"] for m in config["metric_list"]] + [config["process_docs"], config["doc_to_text"],
                                                                   config["doc_to_messages"], config["process_results"]]:
        assert callable(utils[ref.split(".", 1)[1]]), ref
