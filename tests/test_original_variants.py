"""Original-format LLaVA checkpoints as users have them: tiny checkpoints whose config.json mirrors
the real ones (llava-v1.5-7b, llava-v1.6-vicuna-7b, PULSE-7B, linear/cls_patch/select-layer -1
variants, tied embeddings, rope_scaling, tokenizer.json-only, sharded, relative tower folder)
are loaded by ``load_pulse`` and must give the logits the ORIGINAL LLaVA computation gives.

The reference below is written from the original code's behaviour, not from our modules:
the PIL ``CLIPImageProcessor`` from the tower folder (``expand2square`` with the processor's mean colour
for "pad"), ``CLIPVisionModel(output_hidden_states=True).hidden_states[select_layer]`` (CLS
dropped for "patch"), the projector from the raw checkpoint tensors, ``unpad_image`` + newline for
spatial_unpad, and a ``LlamaConfig`` built from the whole config.json as ``LlavaConfig`` does.
Only the anyres tiling helpers and the prompt tokenisation are ours (both tested against
transformers/LLaVA elsewhere). Variants the original code cannot run, or that we do not
support, must fail with an error naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from pulse_models.checkpoint import CheckpointFormatError, save_original_format
from pulse_models.loading import load_pulse
from pulse_models.configuration import ConfigError, PulseConfig
from pulse_models.conversation import IMAGE_TOKEN_INDEX, build_prompt, tokenize_with_image
from pulse_models.testing import (
    _spread_init,
    make_ecg_like_image,
    make_tiny_clip_dir,
    make_tiny_tokenizer_dir,
    tiny_config,
)

TOWER = "clip-tower"  # folder name of the tiny CLIP tower, beside the checkpoints
SMALL_SHARD = 40_000  # bytes: splits the tiny model into several shards + index
IMAGE_WH = (300, 120)  # a wide, ECG-like image: anyres picks a 3x1 grid, pad adds rows
# Keys the real checkpoints carry that shape nothing here (LLaVA training metadata).
REAL_EXTRAS = {"freeze_mm_mlp_adapter": False, "tune_mm_mlp_adapter": False, "use_mm_proj": True,
               "mm_projector_lr": None, "tokenizer_padding_side": "right", "use_cache": True,
               "pretraining_tp": 1, "transformers_version": "4.36.2", "torch_dtype": "float16"}
# Keys only LLaVA-1.6 configs have.
V16_EXTRAS = {"image_crop_resolution": 224, "image_split_resolution": 224, "mm_vision_tower_lr": 2e-6,
              "unfreeze_mm_vision_tower": True}

# name -> (PulseConfig overrides, text overrides, config.json edits (None: delete key), layout options)
VARIANTS: dict[str, tuple[dict, dict, dict, dict]] = {
    # liuhaotian/llava-v1.5-7b: pad to square, mlp2x_gelu, no anyres keys, 2048 max length
    "llava-v1.5-7b": ({"image_aspect_ratio": "pad", "tokenizer_model_max_length": 2048},
                      {}, {"mm_patch_merge_type": None, "image_grid_pinpoints": None, **REAL_EXTRAS},
                      {"shards": True}),
    # LLaVA-1.5 pretrain-style: one Linear projector; no aspect/projector keys (the code's defaults)
    "llava-linear-defaults": ({"mm_projector_type": "linear", "image_aspect_ratio": "square"}, {},
                              {"mm_projector_type": None, "image_aspect_ratio": None,
                               "mm_patch_merge_type": None, "image_grid_pinpoints": None}, {}),
    # liuhaotian/llava-v1.6-vicuna-7b: anyres + spatial_unpad, tokenizer.json only
    "llava-v1.6-vicuna-7b": ({"mm_patch_merge_type": "spatial_unpad"}, {}, {**REAL_EXTRAS, **V16_EXTRAS},
                             {"tokenizer": "json"}),
    # PULSE-7B: anyres + flat, an unused model.image_newline, three shards + index, tower inside
    "PULSE-7B": ({}, {}, {**REAL_EXTRAS, **V16_EXTRAS}, {"shards": True, "newline": True}),
    # select_feature cls_patch keeps CLIP's CLS token; layer -1 is the last hidden state
    "cls_patch-layer-1": ({"mm_vision_select_feature": "cls_patch", "mm_vision_select_layer": -1,
                           "image_aspect_ratio": "pad"}, {}, {}, {}),
    "cls_patch-anyres-flat": ({"mm_vision_select_feature": "cls_patch"}, {}, {}, {}),
    # tied input/output embeddings (no lm_head.weight in the file) and linear rope scaling, as old configs write it
    "tied-rope_scaling": ({"image_aspect_ratio": "pad"},
                          {"tie_word_embeddings": True, "rope_scaling": {"type": "linear", "factor": 2.0}}, {},
                          {"drop_lm_head": True}),
    # mm_vision_tower a relative folder, tower weights not in the checkpoint (read from the folder)
    "relative-tower-no-tower-weights": ({"mm_patch_merge_type": "spatial_unpad"}, {}, {},
                                        {"relative": True, "tower_weights": False}),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("variants")
    make_tiny_clip_dir(base / TOWER, whole_clip=True)  # openai/clip-vit-* ship a whole CLIPConfig
    make_tiny_tokenizer_dir(base / "_tok")
    return base


def _build(root: Path, name: str) -> Path:
    """Write variant ``name`` as the original LLaVA code saves it (no vision_config key)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, CLIPVisionModel

    from pulse_models.modeling import PulseLlavaForCausalLM

    fields, text, edits, opts = VARIANTS[name]
    out = root / name
    if out.exists():
        return out
    tower = root / TOWER
    base = tiny_config(vision_tower=tower)
    cfg = dataclasses.replace(base, text_config={**base.text_config, **text}, **fields)
    torch.manual_seed(0)
    model = PulseLlavaForCausalLM(cfg)
    _spread_init(model, seed=len(name))
    model.vision_tower.load_state_dict(CLIPVisionModel.from_pretrained(str(tower)).state_dict())
    tokenizer = AutoTokenizer.from_pretrained(root / "_tok")
    extra = {"model.image_newline": torch.randn(cfg.hidden_size)} if opts.get("newline") else None
    save_original_format(model, tokenizer, out, max_shard_bytes=SMALL_SHARD if opts.get("shards") else 10**12,
                         extra_tensors=extra)
    config = json.loads((out / "config.json").read_text())
    config.pop("vision_config"), config.pop("image_preprocess")
    config["mm_vision_tower"] = f"../{TOWER}" if opts.get("relative") else str(tower)
    config["_name_or_path"] = f"./checkpoints/{name}"
    for key, value in edits.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (out / "config.json").write_text(json.dumps(config, indent=2))
    drop = (("model.vision_tower.",) if opts.get("tower_weights") is False else ()) + \
           (("lm_head.",) if opts.get("drop_lm_head") else ())
    if drop:
        for f in out.glob("*.safetensors"):
            t = load_file(str(f))
            save_file({k: v for k, v in t.items() if not k.startswith(drop)}, str(f), metadata={"format": "pt"})
    if opts.get("tokenizer") == "json":
        (out / "tokenizer.model").unlink()
    else:  # PULSE-7B and the liuhaotian repos: SentencePiece tokenizer.model, no tokenizer.json
        (out / "tokenizer.json").unlink(missing_ok=True)
    return out


# ---- the original computation ---------------------------------------------------------------
def _unpad_image(tensor: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """llava/model/llava_arch.py unpad_image on a [C, H, W] feature map; size is (width, height)."""
    original_width, original_height = original_size
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return tensor[:, padding: current_height - padding, :]
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding: current_width - padding]


def _reference_logits(ckpt: Path, image, prompt_ids: list[int]) -> torch.Tensor:
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    # the PIL CLIPImageProcessor the original code ran (transformers 5's default class is torchvision's)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from pulse_models.image_processing import divide_to_patches, resize_and_pad_image, select_best_resolution

    cfg = json.loads((ckpt / "config.json").read_text())
    tower_dir = (ckpt / cfg["mm_vision_tower"]).resolve()
    weights: dict[str, torch.Tensor] = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    proc = CLIPImageProcessorPil.from_pretrained(str(tower_dir))
    aspect = cfg.get("image_aspect_ratio")
    if aspect == "pad":  # llava/mm_utils.py expand2square + the processor
        w, h = image.size
        canvas = Image.new(image.mode, (max(w, h),) * 2, tuple(int(x * 255) for x in proc.image_mean))
        canvas.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
        pieces = [canvas]
    elif aspect == "anyres":  # process_anyres_image
        best = select_best_resolution(image.size, cfg["image_grid_pinpoints"])
        side = proc.size["shortest_edge"]
        pieces = [image.resize((side, side))] + divide_to_patches(resize_and_pad_image(image, best),
                                                                  proc.crop_size["height"])
    else:
        pieces = [image]
    pixels = torch.cat([proc(p, return_tensors="pt")["pixel_values"] for p in pieces])
    clip = CLIPVisionModel.from_pretrained(str(tower_dir)).eval()
    with torch.no_grad():
        feats = clip(pixels, output_hidden_states=True).hidden_states[cfg.get("mm_vision_select_layer", -1)]
        if cfg.get("mm_vision_select_feature", "patch") == "patch":
            feats = feats[:, 1:]
        if cfg.get("mm_projector_type", "linear") == "linear":
            feats = torch.nn.functional.linear(feats, weights["model.mm_projector.weight"],
                                               weights["model.mm_projector.bias"])
        else:
            x = torch.nn.functional.linear(feats, weights["model.mm_projector.0.weight"],
                                           weights["model.mm_projector.0.bias"])
            feats = torch.nn.functional.linear(torch.nn.functional.gelu(x), weights["model.mm_projector.2.weight"],
                                               weights["model.mm_projector.2.bias"])
    merge = cfg.get("mm_patch_merge_type", "flat")
    if aspect != "anyres":
        image_feature = feats[0]
    elif merge == "flat":
        image_feature = feats.flatten(0, 1)
    else:
        pps = proc.crop_size["height"] // clip.config.patch_size
        best = select_best_resolution(image.size, cfg["image_grid_pinpoints"])
        cols, rows = best[0] // proc.crop_size["height"], best[1] // proc.crop_size["height"]
        grid = feats[1:].view(rows, cols, pps, pps, -1).permute(4, 0, 2, 1, 3).contiguous()
        grid = _unpad_image(grid.flatten(1, 2).flatten(2, 3), image.size)
        newline = weights["model.image_newline"]
        grid = torch.cat((grid, newline[:, None, None].expand(*grid.shape[:-1], 1)), dim=-1)
        image_feature = torch.cat((feats[0], grid.flatten(1, 2).transpose(0, 1)), dim=0)
    lm_config = LlamaConfig.from_dict({k: v for k, v in cfg.items() if k != "model_type"})
    lm = LlamaForCausalLM(lm_config).eval()
    lm_weights = {k: v for k, v in weights.items() if not k.startswith(("model.mm_projector", "model.vision_tower",
                                                                         "model.image_newline"))}
    missing, unexpected = lm.load_state_dict(lm_weights, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if lm_config.tie_word_embeddings else set())
    if lm_config.tie_word_embeddings:
        lm.tie_weights()
    pos = prompt_ids.index(IMAGE_TOKEN_INDEX)
    embed = lm.get_input_embeddings()
    with torch.no_grad():
        embeds = torch.cat([embed(torch.tensor(prompt_ids[:pos])), image_feature,
                            embed(torch.tensor(prompt_ids[pos + 1:]))])[None]
        return lm(inputs_embeds=embeds).logits[0]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_loads_and_matches_the_original_computation(root, name):
    ckpt = _build(root, name)
    assert "vision_config" not in json.loads((ckpt / "config.json").read_text())
    model, tokenizer, processor, _ = load_pulse(ckpt, dtype="float32", device="cpu")
    image = make_ecg_like_image(*IMAGE_WH, seed=3)
    ids = tokenize_with_image(build_prompt([("<image>\nWhat is the rhythm?", None)]), tokenizer)
    expected = _reference_logits(ckpt, image, ids)
    px = processor.preprocess(image)
    with torch.no_grad():
        out = model(input_ids=[ids], images=[px.pixel_values], image_sizes=[px.image_size])
    assert out.logits.shape[1] == expected.shape[0] == len(ids) - 1 + processor.num_image_tokens(IMAGE_WH)
    torch.testing.assert_close(out.logits[0], expected, rtol=1e-4, atol=1e-4)
    new = model.generate([ids], images=[px.pixel_values], image_sizes=[px.image_size], max_new_tokens=1,
                         do_sample=False)
    assert new[0, 0].item() == expected[-1].argmax().item()
    opts = VARIANTS[name][3]
    if opts.get("tower_weights") is False:
        assert model.load_report.vision_tower_from == str((root / TOWER).resolve())
    if opts.get("shards"):
        assert len(model.load_report.files) > 1 and (ckpt / "model.safetensors.index.json").is_file()


def test_tokenizer_json_only_equals_sentencepiece(root):
    """tokenizer.json alone (no tokenizer.model) tokenises the llava_v1 prompt as tokenizer.model
    does; both tokenizer_config.json files were written by save_original_format (our export)."""
    from pulse_models.loading import load_original_tokenizer

    prompt = build_prompt([("<image>\nWhich leads show ST elevation?", "V1-V4"), ("And the rhythm?", None)])
    by_json = load_original_tokenizer(_build(root, "llava-v1.6-vicuna-7b"))
    by_sp = load_original_tokenizer(_build(root, "PULSE-7B"))
    assert not (root / "llava-v1.6-vicuna-7b" / "tokenizer.model").exists()
    assert not (root / "PULSE-7B" / "tokenizer.json").exists()
    ids = tokenize_with_image(prompt, by_sp)
    assert ids[0] == by_sp.bos_token_id and tokenize_with_image(prompt, by_json) == ids


@pytest.mark.parametrize("missing", ["add_bos_token", "legacy"])
def test_tokenizer_config_silent_on_a_switch_reads_as_the_original_llama_tokenizer(root, tmp_path, missing):
    """The original code's slow LlamaTokenizer adds BOS and uses legacy=True when
    tokenizer_config.json does not say; transformers 5 alone would add no BOS / use legacy=False."""
    from pulse_models.loading import load_original_tokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(_build(root, "PULSE-7B"), ckpt)
    cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["legacy"] is False  # what our export writes
    cfg.pop(missing)
    (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_original_tokenizer(ckpt)
    ids = tok("ok.</s>USER: x").input_ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert ids[0] == tok.bos_token_id
    after_eos = pieces[pieces.index("</s>") + 1]
    # legacy=True: text after a special token gets SentencePiece's "▁" prefix again
    assert after_eos == ("▁" if missing == "legacy" else "USER"), pieces


# ---- variants that must fail, naming the field ---------------------------------------------------
def _edited_copy(root: Path, name: str, source: str, **edits) -> Path:
    out = root / name
    if not out.exists():
        shutil.copytree(_build(root, source), out)
    config = json.loads((out / "config.json").read_text())
    config.update(edits)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def test_llava_v16_mistral_is_refused_naming_model_type(root):
    ckpt = _edited_copy(root, "llava-v1.6-mistral-7b", "llava-v1.6-vicuna-7b", model_type="llava_mistral",
                        architectures=["LlavaMistralForCausalLM"])
    with pytest.raises(CheckpointFormatError, match=r"model_type 'llava_mistral'.*mistral_instruct"):
        load_pulse(ckpt, dtype="float32", device="cpu")


def test_cls_patch_with_spatial_unpad_is_refused(root):
    """The original code reshapes each tile's tokens into a square grid: 1 + P*P tokens cannot be."""
    ckpt = _edited_copy(root, "cls_patch-spatial_unpad", "llava-v1.6-vicuna-7b", mm_vision_select_feature="cls_patch")
    with pytest.raises(ConfigError, match="mm_vision_select_feature 'cls_patch'.*spatial_unpad"):
        PulseConfig.from_json_file(ckpt / "config.json")


def test_projector_only_pretrain_output_is_refused_naming_the_file(root):
    """LLaVA's pretrain stage writes config.json + mm_projector.bin and no language model: the
    original code needs --model-base for it; we say so instead of suggesting a .bin conversion."""
    ckpt = root / "llava-v1.5-7b-pretrain"
    ckpt.mkdir(exist_ok=True)
    shutil.copy(_build(root, "llava-v1.5-7b") / "config.json", ckpt / "config.json")
    torch.save({"model.mm_projector.0.weight": torch.zeros(2, 2)}, ckpt / "mm_projector.bin")
    with pytest.raises(CheckpointFormatError, match=r"mm_projector\.bin.*model-base"):
        load_pulse(ckpt, dtype="float32", device="cpu")


def test_llm_weights_with_a_separate_mm_projector_bin_name_it(root, tmp_path):
    """Language model in safetensors, projector only in mm_projector.bin: never unpickled, and the
    error says which tensors are missing and why the .bin was not read."""
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "split-projector"
    shutil.copytree(_build(root, "llava-v1.5-7b"), ckpt)
    projector = {}
    for f in ckpt.glob("*.safetensors"):
        t = load_file(str(f))
        projector.update({k: v for k, v in t.items() if k.startswith("model.mm_projector.")})
        save_file({k: v for k, v in t.items() if k not in projector}, str(f), metadata={"format": "pt"})
    torch.save(projector, ckpt / "mm_projector.bin")
    with pytest.raises(CheckpointFormatError, match=r"mm_projector\.0\.weight.*mm_projector\.bin beside them is not read"):
        load_pulse(ckpt, dtype="float32", device="cpu")


@pytest.mark.slow
def test_lmms_eval_cli_on_llava_v15(root, synth_data_dir, tmp_path):
    """One real lmms-eval CLI run: llava-v1.5-7b's layout (pad, sharded, 2048 tokens) through --model pulse."""
    import os
    import subprocess
    import sys

    out = tmp_path / "results"
    env = {**os.environ, "ECGBENCH_DATA": str(synth_data_dir), "HF_HUB_OFFLINE": "1"}
    args = f"pretrained={_build(root, 'llava-v1.5-7b')},dtype=float32,device=cpu,max_new_tokens=4"
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "pulse", "--model_args", args,
                           "--tasks", "ecgbench_csn", "--limit", "2", "--gen_kwargs", "max_new_tokens=4", "--log_samples",
                           "--output_path", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(out.rglob("*_results.json"))
    assert results, proc.stderr[-3000:]  # lmms-eval exits 0 when the model fails to load: read the file
    data = json.loads(results[-1].read_text())
    assert data["results"]["ecgbench_csn"]["accuracy_paper,none"] is not None
    samples = [json.loads(line) for f in out.rglob("*ecgbench_csn*.jsonl") for line in f.read_text().splitlines()]
    assert len(samples) == 2 and all(s["filtered_resps"] for s in samples)


@pytest.mark.parametrize("template", ["auto", "vicuna_v1"])
def test_conv_template_vicuna_v1_through_ecgbench_ask(root, tmp_path, capsys, template):
    """auto: llava_v1 ("curious human"); vicuna_v1, LLaVA-1.5's eval conv_mode: "curious user"."""
    from pulse_app.cli import main
    from pulse_models import ask, loading
    from pulse_models.conversation import SYSTEM, VICUNA_V1_SYSTEM

    assert ask.CONV_TEMPLATES is loading.CONV_TEMPLATES  # one list: the loader's, which the adapter checks
    image = tmp_path / "ecg.png"
    make_ecg_like_image(*IMAGE_WH, seed=5).save(image)
    rc = main(["ask", "Rhythm?", "--model", str(_build(root, "llava-v1.5-7b")), "--image", str(image),
               "--conv-template", template, "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "2",
               "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    record = json.loads(out.splitlines()[-1])
    want = {"auto": ("llava_v1", SYSTEM), "vicuna_v1": ("vicuna_v1", VICUNA_V1_SYSTEM)}[template]
    assert record["template"] == want[0] and record["prompt"].startswith(want[1] + " USER: <image>\nRhythm?")


def test_bin_only_checkpoint_is_refused_and_the_printed_conversion_works(root, tmp_path):
    """liuhaotian/llava-v1.5-7b ships pytorch_model-*.bin shards + pytorch_model.bin.index.json.
    We refuse pickles with a conversion recipe; following it gives the same model."""
    from safetensors.torch import load_file, save_file

    source = _build(root, "llava-v1.5-7b")
    ckpt = tmp_path / "llava-v1.5-7b-bin"
    shutil.copytree(source, ckpt, ignore=shutil.ignore_patterns("*.safetensors", "model.safetensors.index.json"))
    index = json.loads((source / "model.safetensors.index.json").read_text())
    for f in sorted(set(index["weight_map"].values())):
        torch.save(load_file(str(source / f)), ckpt / f.replace("model-", "pytorch_model-").replace(".safetensors", ".bin"))
    bin_map = {k: v.replace("model-", "pytorch_model-").replace(".safetensors", ".bin") for k, v in index["weight_map"].items()}
    (ckpt / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": index["metadata"], "weight_map": bin_map}))
    with pytest.raises(CheckpointFormatError, match=r"no \*\.safetensors.*weights_only=True.*one call per shard"):
        load_pulse(ckpt, dtype="float32", device="cpu")
    # the message's recipe: per shard save_file(torch.load(..., weights_only=True)), index renamed
    for f in sorted(ckpt.glob("pytorch_model-*.bin")):
        save_file(torch.load(f, weights_only=True), str(f.with_suffix(".safetensors")), metadata={"format": "pt"})
        f.unlink()
    (ckpt / "pytorch_model.bin.index.json").rename(ckpt / "model.safetensors.index.json")
    idx = json.loads((ckpt / "model.safetensors.index.json").read_text())
    idx["weight_map"] = {k: v.replace(".bin", ".safetensors") for k, v in idx["weight_map"].items()}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(idx))
    converted, *_ = load_pulse(ckpt, dtype="float32", device="cpu")
    original, *_ = load_pulse(source, dtype="float32", device="cpu")
    a, b = converted.state_dict(), original.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
