"""Original-layout checkpoints read as the original LLaVA code reads them: no `vision_config` key,
`mm_vision_tower` names a local tiny-CLIP folder whose own config.json / preprocessor_config.json
decide the tower and the image preprocessing (issue 14, item 1).

The checkpoints go through every way a user reaches them: `--model pulse` in the real lmms-eval
CLI (results file read back), `ecgbench ask`, `ecgbench-train --inspect`, and (in
tests/test_training_batch.py) short CPU training runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pulse_models.configuration import (
    CLIP_L_336_VISION_CONFIG,
    CLIP_STD,
    DEFAULT_VISION_TOWER,
    ConfigError,
    PulseConfig,
    resolve_vision_tower,
)
from pulse_models.testing import (
    TINY_VOCAB,
    make_ecg_like_image,
    make_tiny_clip_dir,
    make_tiny_original_checkpoint,
    tiny_config,
)

LAYOUTS = ("flat", "spatial_unpad")
TOWER_224 = {"image_size": 224, "patch_size": 56}  # LLaVA v1's CLIP-L/14 side, 4x4 patches per tile
TOWER_MEAN = [0.5, 0.5, 0.5]  # not CLIP's: shows the tower's own preprocessor_config.json is read
PINPOINTS_224 = [[224, 448], [448, 224], [448, 448], [672, 224], [224, 672]]  # the LLaVA-1.6 grid in 224 px tiles
TOWER_RESIZE = 240  # resize side above the crop: the base image is cropped, as CLIPImageProcessor does


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("towers")
    return {
        # a whole CLIPConfig (as openai/clip-vit-* ship) at 224 px with its own mean and resize
        "clip224": make_tiny_clip_dir(root / "clip224", whole_clip=True, image_mean=TOWER_MEAN,
                                      shortest_edge=TOWER_RESIZE, **TOWER_224),
        # a CLIPVisionConfig folder at the tiny default side
        "vision32": make_tiny_clip_dir(root / "vision32"),
    }


@pytest.fixture(scope="module")
def ckpts(towers, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tower-ckpts")
    out = {layout: make_tiny_original_checkpoint(root / layout, merge_type=layout, vision_tower=towers["clip224"])
           for layout in LAYOUTS}
    out["no_tower_weights"] = make_tiny_original_checkpoint(root / "slim", vision_tower=towers["vision32"],
                                                            tower_weights=False)
    return out


TEXT = tiny_config().text_config


def _original(**kw) -> dict:
    return {"model_type": "llava_llama", **TEXT, "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "pad", **kw}


# ---- resolution ------------------------------------------------------------------------------
def test_checkpoints_have_no_vision_config_key(ckpts):
    for path in ckpts.values():
        cfg = json.loads((path / "config.json").read_text())
        assert "vision_config" not in cfg and "image_preprocess" not in cfg and cfg["mm_vision_tower"]


def test_tower_folder_decides_config_and_preprocessing(towers):
    whole = resolve_vision_tower(_original(mm_vision_tower=str(towers["clip224"])))
    assert (whole.vision_config["image_size"], whole.vision_config["patch_size"]) == (224, 56)
    assert whole.image_preprocess == {"image_mean": TOWER_MEAN, "image_std": list(CLIP_STD),
                                      "shortest_edge": TOWER_RESIZE, "crop_size": 224}
    assert whole.config_from == str(towers["clip224"]) == whole.weights_from
    vision = resolve_vision_tower(_original(mm_vision_tower=str(towers["vision32"])))
    assert vision.vision_config["image_size"] == 32 and vision.image_preprocess["crop_size"] == 32


def test_relative_tower_folder_is_found_beside_the_checkpoint(towers, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # "vision32" could be a hub id: no download attempt here
    d = _original(mm_vision_tower="vision32")
    with pytest.raises(ConfigError, match="mm_vision_tower 'vision32'"):
        resolve_vision_tower(d)  # not a folder here, and no such hub repo in the (offline) cache
    assert resolve_vision_tower(d, checkpoint_dir=towers["vision32"].parent).config_from == str(towers["vision32"])


def test_our_vision_config_key_wins_over_the_folder(towers):
    ours = dict(tiny_config().vision_config, image_size=64)
    got = resolve_vision_tower(_original(mm_vision_tower=str(towers["vision32"]), vision_config=ours))
    assert got.vision_config == ours and got.config_from == "config.json vision_config"


def test_builtin_table_only_for_the_exact_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    got = resolve_vision_tower(_original(mm_vision_tower=DEFAULT_VISION_TOWER))
    assert got.vision_config == CLIP_L_336_VISION_CONFIG and got.config_from == "built-in"
    with pytest.raises(ConfigError) as err:
        resolve_vision_tower(_original(mm_vision_tower="openai/clip-vit-large-patch14"))
    msg = str(err.value)
    assert "mm_vision_tower 'openai/clip-vit-large-patch14'" in msg and "offline" in msg
    assert "vision_config" in msg and "huggingface-cli download openai/clip-vit-large-patch14" in msg


def test_hub_id_read_from_the_hub_cache_offline(towers, monkeypatch, tmp_path):
    """A hub id whose files are in the Hugging Face cache resolves with the hub switched off."""
    repo, sha = "someone/tiny-clip-224", "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        (snapshot / name).write_bytes((towers["clip224"] / name).read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    got = resolve_vision_tower(_original(mm_vision_tower=repo))
    assert got.config_from == f"hub:{repo}" and got.vision_config["image_size"] == 224
    assert got.image_preprocess["image_mean"] == TOWER_MEAN and got.weights_from == repo


def test_mm_hidden_size_is_checked_against_the_tower(towers):
    with pytest.raises(ConfigError, match=r"mm_hidden_size 1024 != vision hidden size 32 .*vision32"):
        PulseConfig.from_original_dict(_original(mm_vision_tower=str(towers["vision32"]), mm_hidden_size=1024))


def test_not_a_clip_tower_is_refused(tmp_path):
    (tmp_path / "siglip").mkdir()
    (tmp_path / "siglip" / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}))
    with pytest.raises(ConfigError, match="only CLIP towers"):
        resolve_vision_tower(_original(mm_vision_tower=str(tmp_path / "siglip")))


# ---- preprocessing ---------------------------------------------------------------------------
@pytest.mark.parametrize("aspect", ["anyres", "pad"])
def test_224_tower_is_preprocessed_at_224_as_clip_image_processor(towers, aspect):
    """Tiles, base image and normalisation follow the tower's preprocessor_config.json, as the
    original clip_encoder.py's CLIPImageProcessor does."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from pulse_models.image_processing import ImageProcessor, _expand_to_square

    cfg = PulseConfig.from_original_dict(_original(mm_vision_tower=str(towers["clip224"]), image_aspect_ratio=aspect,
                                                   image_grid_pinpoints=PINPOINTS_224))
    assert cfg.tile_size == 224
    img = make_ecg_like_image(500, 300, seed=4)
    pixels = ImageProcessor(cfg).preprocess(img).pixel_values
    clip = CLIPImageProcessorPil.from_pretrained(str(towers["clip224"]))
    if aspect == "anyres":
        assert pixels.shape == (5, 3, 224, 224)  # base + a 2x2 grid of 224 px tiles (448 x 448)
        base = img.resize((TOWER_RESIZE, TOWER_RESIZE))  # LLaVA: squashed to size["shortest_edge"], then cropped
    else:
        assert pixels.shape == (1, 3, 224, 224)
        base = _expand_to_square(img, TOWER_MEAN)
        assert base.getpixel((250, 10)) == (127, 127, 127)  # padded with the tower's mean colour
    want = torch.as_tensor(clip(base, return_tensors="np")["pixel_values"][0])
    assert torch.equal(pixels[0], want)


# ---- loading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_pulse_takes_the_tower_from_the_checkpoint(ckpts, towers, layout):
    from transformers import CLIPVisionModel

    from pulse_models.loading import load_pulse

    model, _tok, processor, cfg = load_pulse(ckpts[layout], dtype="float32", device="cpu")
    assert model.load_report.vision_tower_from == "checkpoint" and processor.tile == 224
    folder = CLIPVisionModel.from_pretrained(str(towers["clip224"])).state_dict()
    assert all(torch.equal(v, folder[k]) for k, v in model.vision_tower.state_dict().items())


def test_tower_weights_from_the_folder_when_the_checkpoint_lacks_them(ckpts, towers):
    from pulse_models.loading import load_pulse

    model, *_ = load_pulse(ckpts["no_tower_weights"], dtype="float32", device="cpu")
    assert model.load_report.vision_tower_from == str(towers["vision32"])


# ---- the ways users reach it -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lmms_eval_cli_model_pulse(layout, ckpts, synth_data_dir, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "ECGBENCH_DATA": str(synth_data_dir), "HF_HUB_OFFLINE": "1"}
    args = f"pretrained={ckpts[layout]},dtype=float32,device=cpu,max_new_tokens=4"
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "pulse", "--model_args", args,
                           "--tasks", "ecgbench_csn", "--limit", "2", "--output_path", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(out.rglob("*_results.json"))
    assert results, proc.stderr[-3000:]  # lmms-eval exits 0 on a model that fails to load: read the file
    data = json.loads(results[-1].read_text())
    assert data["results"]["ecgbench_csn"]["accuracy_paper,none"] is not None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ecgbench_ask(layout, ckpts, tmp_path, capsys):
    from pulse_app.cli import main

    image = tmp_path / "ecg.png"
    make_ecg_like_image(300, 120, seed=5).save(image)
    rc = main(["ask", "Rhythm?", "--model", str(ckpts[layout]), "--image", str(image),
               "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "4", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    record = json.loads(out.splitlines()[-1])
    assert record["image"]["grid"]["tile_size"] == 224
    assert record["format"] == "llava_original" and record["tokens"]["image"] > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_inspect(layout, ckpts, tmp_path, capsys):
    from pulse_training.recipe import main
    from pulse_training.smoke import make_smoke_data

    data_path = make_smoke_data(tmp_path / "data", n=4)
    rc = main(["--config", "tiny.yaml", "--inspect", "1", f"model_name_or_path={ckpts[layout]}",
               f"data_path={data_path}", f"image_folder={data_path.parent}", f"mm_patch_merge_type={layout}",
               f"output_dir={tmp_path / 'out'}"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 1
    assert all(0 <= t < TINY_VOCAB for t in json.loads(lines[0])["input_ids"] if t >= 0)


# The short CPU training run on such a checkpoint: tests/test_training_batch.py (world sizes 1 and 2).
