"""Recipe configuration: PULSE's published settings, validation, DeepSpeed JSON as PULSE used it."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from pulse_training.config import TrainConfig, load_config, parse_overrides, plan_batch
from pulse_training.recipe import build_parser, main

REQUIRED = {"image_folder": "/data/images"}


def _shipped(name: str) -> dict:
    return json.loads((resources.files("pulse_training") / "configs" / name).read_text())


def test_pulse_7b_has_the_published_hyper_parameters():
    c = load_config("pulse_7b.yaml", REQUIRED)
    assert c.global_batch_size == 128 and c.gradient_accumulation_steps is None  # derived per launch
    for world, accum in ((8, 8), (32, 2)):  # PULSE's script on 8 GPUs; the paper's 32
        plan = plan_batch(c.global_batch_size, world, c.per_device_train_batch_size, c.gradient_accumulation_steps)
        assert (plan.gradient_accumulation_steps, plan.global_batch_size, plan.derived) == (accum, 128, True)
    assert (c.num_train_epochs, c.learning_rate, c.lr_scheduler_type) == (3.0, 2e-5, "cosine")
    assert (c.warmup_ratio, c.weight_decay, c.model_max_length) == (0.03, 0.0, 4096)
    assert c.bf16 and c.tf32 and c.gradient_checkpointing and c.group_by_modality_length
    assert c.attn_implementation == "auto" and c.deepspeed == "zero2.json"
    assert not c.unfreeze_mm_vision_tower and c.mm_patch_merge_type == "flat"


def test_zero2_json_is_pulses():
    ds = _shipped("zero2.json")
    z = ds["zero_optimization"]
    assert z == {
        "stage": 2, "allgather_partitions": True, "allgather_bucket_size": 2e8, "overlap_comm": False,
        "reduce_scatter": True, "reduce_bucket_size": 2e8, "contiguous_gradients": True,
    }
    assert ds["optimizer"] == {"type": "AdamW", "params": {k: "auto" for k in ("lr", "betas", "eps", "weight_decay")}}
    assert ds["bf16"]["enabled"] == ds["fp16"]["enabled"] == "auto"
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps"):
        assert ds[key] == "auto"


def test_zero3_and_cpu_smoke_json():
    assert _shipped("zero3.json")["zero_optimization"]["stage"] == 3
    assert _shipped("zero3.json")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    smoke = _shipped("zero2_cpu_smoke.json")
    assert "optimizer" not in smoke  # DeepSpeed's fused Adam would compile C++ on CPU
    assert smoke["zero_optimization"] == _shipped("zero2.json")["zero_optimization"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learnin_rate": "1e-5"}, "did you mean 'learning_rate'"),
        ({"vision_tower": "openai/clip"}, "read from the checkpoint"),
        ({"bf16": "perhaps"}, "expected bool"),
        ({"num_train_epochs": "three"}, "expected float"),
        ({"mm_patch_merge_type": "spatial"}, "expected one of"),
        ({"warmup_ratio": "1.5"}, "[0, 1)"),
        ({"mm_vision_tower_lr": "2e-6"}, "unfreeze_mm_vision_tower"),
        ({"gradient_checkpointing_every": "0"}, "expected 1 or more"),
        ({"image_folder": ""}, None),  # image_folder may be empty (absolute paths in records)
    ],
)
def test_overrides_are_validated(overrides, message):
    if message is None:
        load_config("pulse_7b.yaml", overrides)
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config("pulse_7b.yaml", {**REQUIRED, **overrides})


def test_overrides_use_pulse_names_and_types():
    c = load_config(
        "pulse_7b.yaml",
        parse_overrides(["learning_rate=1e-5", "num_train_epochs=1", "output_dir=/tmp/x", "data_path=/d.json",
                         "unfreeze_mm_vision_tower=true", "mm_vision_tower_lr=2e-6", "max_records=none",
                         "model_name_or_path=/ckpt"]),
    )
    assert (c.learning_rate, c.num_train_epochs, c.output_dir) == (1e-5, 1.0, "/tmp/x")
    assert c.unfreeze_mm_vision_tower and c.mm_vision_tower_lr == 2e-6 and c.max_records is None
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["learning_rate"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model_name_or_path: x\ndata_path: y\noutput_dir: z\nlearning_rat: 1.0e-5\n")
    with pytest.raises(ValueError, match=r"learning_rat.*bad\.yaml.*learning_rate"):
        load_config(cfg)


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["--config", "pulse_7b.yaml", "learnin_rate=1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    args = build_parser().parse_args(["--config", "tiny.yaml", "--inspect", "3", "a=b", "--local_rank=0"])
    assert (args.inspect, args.overrides) == (3, ["a=b"])


def test_every_field_is_documented_in_pulse_7b_or_has_a_default():
    # A config that sets nothing but the required keys is valid: every field has a default.
    TrainConfig(model_name_or_path="m", data_path="d", output_dir="o").validate()


def test_checkpointing_switch_name_follows_the_installed_transformers():
    """transformers renamed TrainingArguments.gradient_checkpointing to activation_checkpointing
    within 5.x (5.17, the GPU machines' version, has only the old name): the recipe asks the class."""
    import dataclasses

    from transformers import TrainingArguments

    from pulse_training.recipe import _checkpointing_field

    @dataclasses.dataclass
    class Before:
        gradient_checkpointing: bool = False

    @dataclasses.dataclass
    class After:
        gradient_checkpointing: bool = False  # kept as an alias next to the new name
        activation_checkpointing: bool = False

    assert _checkpointing_field(Before) == "gradient_checkpointing"
    assert _checkpointing_field(After) == "activation_checkpointing"
    assert _checkpointing_field(TrainingArguments) in {f.name for f in dataclasses.fields(TrainingArguments)}


@pytest.mark.parametrize("global_batch,world,per_device,explicit,want_accum,want_global,warns", [
    (128, 8, 2, None, 8, 128, False),
    (128, 32, 2, None, 2, 128, False),
    (128, 1, 4, None, 32, 128, False),
    (None, 4, 2, None, 1, 8, False),      # neither: accumulation 1
    (None, 4, 2, 3, 3, 24, False),        # explicit, no global batch to contradict
    (128, 8, 2, 8, 8, 128, False),        # explicit and consistent: no warning
    (128, 32, 2, 8, 8, 512, True),        # the old 32-GPU pitfall: explicit wins, warned
])
def test_plan_batch(global_batch, world, per_device, explicit, want_accum, want_global, warns):
    plan = plan_batch(global_batch, world, per_device, explicit)
    assert (plan.gradient_accumulation_steps, plan.global_batch_size) == (want_accum, want_global)
    assert plan.derived == (explicit is None and global_batch is not None)
    assert bool(plan.warning) == warns
    if warns:
        assert "512" in plan.warning and "global_batch_size=128" in plan.warning
    assert f"effective global batch {want_global} = {world} processes" in plan.describe()


@pytest.mark.parametrize("global_batch,world,per_device", [(128, 3, 2), (100, 8, 2), (6, 1, 4)])
def test_plan_batch_refuses_a_global_batch_that_does_not_divide(global_batch, world, per_device):
    with pytest.raises(ValueError, match=f"global_batch_size={global_batch} is not a multiple of {world} processes"):
        plan_batch(global_batch, world, per_device, None)


def test_non_dividing_global_batch_fails_before_loading(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    rc = main(["--config", "pulse_7b.yaml", "image_folder=/x", "model_name_or_path=/does/not/exist"])
    err = capsys.readouterr().err
    assert rc == 2 and "global_batch_size=128 is not a multiple of 3 processes x 2 per device = 6" in err
