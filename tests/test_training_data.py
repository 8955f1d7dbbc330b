"""ECGInstruct data for the recipe: skip counting, llava_v1 label masks token by token, --inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pulse_models.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from pulse_training import data
from pulse_training.config import load_config
from pulse_training.recipe import main, setup_data, setup_tokenizer_and_model_config
from pulse_training.smoke import make_smoke_data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from pulse_models.testing import make_tiny_original_checkpoint

    root = tmp_path_factory.mktemp("training_data")
    model = make_tiny_original_checkpoint(root / "model", merge_type="flat")
    data_path = make_smoke_data(root / "data", n=12, bad_records=True)
    overrides = {"model_name_or_path": str(model), "data_path": str(data_path),
                 "image_folder": str(data_path.parent), "output_dir": str(root / "out")}
    return overrides


@pytest.fixture(scope="module")
def prepared(inputs):
    config = load_config("tiny.yaml", inputs)
    tokenizer, pulse_config = setup_tokenizer_and_model_config(config)
    dataset, summary = setup_data(config, tokenizer, pulse_config)
    return config, tokenizer, pulse_config, dataset, summary


def test_bad_records_are_skipped_and_counted(prepared):
    _config, _tok, _cfg, dataset, summary = prepared
    d = summary.to_dict()
    assert (d["total"], d["kept"], d["skipped_total"]) == (18, 12, 6)
    assert d["skipped"] == {
        "malformed": 1, "no_assistant_turn": 1, "no_image": 1, "missing_image": 1,
        "unreadable_image": 1, "label_mismatch": 0, "too_long": 1,
    }
    assert d["skipped_examples"]["too_long"] == ["bad-too-long"]
    assert len(dataset) == 12 and all(dataset.record_id(i).startswith("smoke-") for i in range(12))


def _supervised_runs(input_ids, labels):
    runs, current = [], []
    for token, label in zip(input_ids, labels):
        assert label in (IGNORE_INDEX, token)  # a supervised label is always the input token itself
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_two_turn_masks_token_by_token(prepared):
    _config, tokenizer, _cfg, dataset, _summary = prepared
    item = dataset.text_item(0)  # smoke-0000: two turns
    ids, labels = item["input_ids"], item["labels"]
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and ids[0] == tokenizer.bos_token_id
    runs = _supervised_runs(ids, labels)
    # Only the two answers and their closing </s> are supervised; system, user turns, image, BOS are not.
    assert [tokenizer.decode(r) for r in runs] == ["The ECG shows sinus rhythm.</s>", "Yes.</s>"]
    assert labels[-1] == tokenizer.eos_token_id
    first = labels.index(next(l for l in labels if l != IGNORE_INDEX))
    # The first supervised token follows "ASSISTANT:" exactly.
    image_at = ids.index(IMAGE_TOKEN_INDEX)
    assert all(l == IGNORE_INDEX for l in labels[:first])
    assert tokenizer.decode(ids[image_at + 1 : first]).strip() == "What is the rhythm of this ECG? ASSISTANT:"
    # The second user turn is unsupervised, token by token.
    second_user = tokenizer.decode(ids[first + len(runs[0]) : len(ids) - len(runs[1])])
    assert second_user.strip() == "USER: Is it normal? ASSISTANT:"
    assert all(l == IGNORE_INDEX for l in labels[first + len(runs[0]) : len(ids) - len(runs[1])])


def test_single_turn_masks(prepared):
    _config, tokenizer, _cfg, dataset, _summary = prepared
    item = dataset.text_item(1)  # smoke-0001: one turn
    runs = _supervised_runs(item["input_ids"], item["labels"])
    assert [tokenizer.decode(r) for r in runs] == ["The ECG shows atrial fibrillation.</s>"]


def test_items_and_collator(prepared):
    _config, tokenizer, pulse_config, dataset, _summary = prepared
    items = [dataset[i] for i in range(3)]
    tile = pulse_config.tile_size
    for it in items:
        assert it["pixel_values"].shape[1:] == (3, tile, tile)
        assert it["merged_length"] == len(it["input_ids"]) - 1 + it["pixel_values"].shape[0] * 16  # flat, 16/tile
    batch = data.Collator(pad_token_id=0)(items)
    longest = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, longest)
    assert batch["attention_mask"].sum().item() == sum(len(it["input_ids"]) for it in items)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert batch["num_merged_tokens"].item() == sum(it["merged_length"] for it in items)
    assert batch["num_image_tiles"].item() == sum(it["pixel_values"].shape[0] for it in items)
    assert len(batch["images"]) == len(batch["image_sizes"]) == 3


def test_unreadable_image_at_step_time_falls_back(prepared, tmp_path):
    import shutil

    _config, _tok, _cfg, dataset, _summary = prepared
    folder = tmp_path / "images_copy"
    shutil.copytree(dataset.image_folder, folder)
    first = data.image_path(dataset.records[dataset.kept[0]], str(folder))
    first.write_bytes(b"truncated")  # broke after the start-up check
    flaky = data.InstructDataset(
        dataset.records, dataset.kept, dataset.lengths, image_folder=str(folder),
        tokenize_fn=dataset.tokenize_fn, process_image_fn=dataset.process_image_fn,
    )
    assert torch.equal(flaky[0]["input_ids"], dataset[1]["input_ids"])  # the neighbour, not a crash
    gone = data.InstructDataset(
        dataset.records, dataset.kept, dataset.lengths, image_folder=str(tmp_path / "unmounted"),
        tokenize_fn=dataset.tokenize_fn, process_image_fn=dataset.process_image_fn,
    )
    with pytest.raises(RuntimeError, match="is it mounted"):
        gone[0]


def test_jsonl_and_max_records(tmp_path, prepared):
    _config, _tok, _cfg, dataset, _summary = prepared
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in dataset.records[:5]) + "\n")
    assert len(data.load_records(str(path))) == 5
    assert len(data.load_records(str(path), max_records=2)) == 2


def test_inspect_prints_json_lines_and_trains_nothing(inputs, capsys):
    overrides = [f"{k}={v}" for k, v in inputs.items()]
    assert main(["--config", "tiny.yaml", "--inspect", "2", *overrides]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["id"] for line in lines] == ["smoke-0000", "smoke-0001"]
    assert set(lines[0]) == {"id", "input_ids", "labels"}
    assert IGNORE_INDEX in lines[0]["labels"] and IMAGE_TOKEN_INDEX in lines[0]["input_ids"]
    assert "2/2 records kept" in captured.err  # the scan stops once it has the records to show
    assert not (Path(inputs["output_dir"]) / "trainer_state.json").exists()


def test_scan_is_cached_per_inputs(inputs, tmp_path):
    out = tmp_path / "run"
    config = load_config("tiny.yaml", {**inputs, "output_dir": str(out)})
    tokenizer, pulse_config = setup_tokenizer_and_model_config(config)
    first, summary = setup_data(config, tokenizer, pulse_config)
    assert (out / data.INDEX_FILE).exists()
    again, summary2 = setup_data(config, tokenizer, pulse_config)
    assert (again.kept, again.lengths, summary2.to_dict()) == (first.kept, first.lengths, summary.to_dict())
    saved = json.loads((out / data.INDEX_FILE).read_text())
    saved["kept"] = saved["kept"][:3]
    saved["lengths"] = saved["lengths"][:3]
    (out / data.INDEX_FILE).write_text(json.dumps(saved))
    assert len(setup_data(config, tokenizer, pulse_config)[0]) == 3  # the cache is what a resumed run uses
    other = load_config("tiny.yaml", {**inputs, "output_dir": str(out), "image_check": "exists"})
    # Other inputs: scanned again (a stat-only check cannot see the corrupt image, so it is kept).
    assert len(setup_data(other, tokenizer, pulse_config)[0]) == len(first) + 1


def test_slices_scanned_apart_and_merged_equal_one_scan(prepared):
    """What each rank (or pool worker) does with its slice, merged, is the scan of the whole."""
    config, tokenizer, pulse_config, dataset, _summary = prepared
    from pulse_training.recipe import scan_arguments

    kwargs, _key = scan_arguments(config, tokenizer, pulse_config)
    records = dataset.records
    whole = data.scan(records, **kwargs)
    for parts in (2, 3, 7):
        bounds = [data.slice_bounds(len(records), parts, p) for p in range(parts)]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(records)
        merged = data.merge_scans([data.scan(records[a:b], offset=a, **kwargs) for a, b in bounds])
        assert (merged[0], merged[1], merged[2].to_dict()) == (whole[0], whole[1], whole[2].to_dict())
