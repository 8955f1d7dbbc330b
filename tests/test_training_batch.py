"""The global batch on any process count: the real entry point at world size 1 and 2 (torchrun,
gloo on the CPU) with the same global_batch_size derives different accumulation, takes the same
number of optimizer steps over the same data, prints the effective global batch and writes it
to batch.json (issue 14, item 4). The 2-process run ends by closing its process group
(`recipe.close_process_group`): without it a rank once aborted at exit in gloo's teardown.

The model is an original-layout checkpoint without a `vision_config` key whose `mm_vision_tower`
is a 224-px tiny-CLIP folder (issue 14, item 1): the saved checkpoint carries the tower's config
and preprocessing, so it loads without the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_training_recipe import _entry_point, _free_port  # the recipe tests' launcher helpers

GLOBAL_BATCH = 8  # 2 per device: accumulation 4 alone, 2 with two processes
RECORDS = 16  # two optimizer steps of 8 samples at either world size
TOWER_MEAN = [0.5, 0.5, 0.5]  # the tower folder's own preprocessing, not CLIP's


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from pulse_models.testing import make_tiny_clip_dir, make_tiny_original_checkpoint
    from pulse_training.smoke import make_smoke_data

    root = tmp_path_factory.mktemp("training_batch")
    data_path = make_smoke_data(root / "data", n=RECORDS)
    tower = make_tiny_clip_dir(root / "clip224", image_size=224, patch_size=56, whole_clip=True,
                               image_mean=TOWER_MEAN, shortest_edge=240)
    model = make_tiny_original_checkpoint(root / "model", vision_tower=tower)
    return {"model_name_or_path": str(model), "data_path": str(data_path),
            "image_folder": str(data_path.parent), "global_batch_size": str(GLOBAL_BATCH),
            "gradient_accumulation_steps": "null", "per_device_train_batch_size": "2", "max_steps": "-1",
            "num_train_epochs": "1", "save_steps": "100", "deepspeed": "null", "throughput_log_steps": "100"}


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_global_batch_is_kept_at_any_world_size(world, inputs, tmp_path):
    out = tmp_path / "out"
    overrides = [f"{k}={v}" for k, v in {**inputs, "output_dir": str(out)}.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if world == 1:
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        cmd = [*_entry_point(), "--config", "tiny.yaml", *overrides]
    else:  # torchrun sets RANK/WORLD_SIZE; the Trainer picks gloo on the CPU
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "pulse_training.recipe", "--config", "tiny.yaml", *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    if world > 1:  # the ranks left together and destroyed the group before exiting (no gloo abort at exit)
        assert "process group closed" in proc.stderr, proc.stderr[-4000:]
    accum = GLOBAL_BATCH // (world * 2)
    line = f"effective global batch {GLOBAL_BATCH} = {world} processes x 2 per device x {accum} accumulation steps"
    assert proc.stdout.count(line) == 1, proc.stdout[-2000:]  # printed once, by rank 0
    plan = json.loads((out / "batch.json").read_text())
    assert plan == {"global_batch_size": GLOBAL_BATCH, "world_size": world, "per_device_train_batch_size": 2,
                    "gradient_accumulation_steps": accum, "derived": True, "warning": None}
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == RECORDS // GLOBAL_BATCH  # each optimizer step saw the global batch
    saved = json.loads((out / "config.json").read_text())
    assert saved["vision_config"]["image_size"] == 224 and saved["image_preprocess"]["image_mean"] == TOWER_MEAN
    if world == 1:
        from pulse_models.loading import load_pulse

        _model, _tok, processor, _cfg = load_pulse(out, dtype="float32", device="cpu")
        assert processor.tile == 224 and processor.mean == tuple(TOWER_MEAN)
