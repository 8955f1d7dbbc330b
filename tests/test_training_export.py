"""Export of a recipe checkpoint to transformers' llava_next, and starting the recipe from one."""

from __future__ import annotations

import pytest
import torch

from pulse_models.conversation import IMAGE_TOKEN_INDEX, build_prompt, tokenize_with_image
from pulse_training.export import ExportError, export_hf, load_hf_as_pulse, main

SIZES = [(128, 64), (100, 60), (64, 96)]  # (w, h): exact 2x1 grid, padded grid, portrait


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pulse_models.loading import load_pulse
    from pulse_models.testing import make_tiny_original_checkpoint

    root = tmp_path_factory.mktemp("export")
    original = make_tiny_original_checkpoint(root / "orig", merge_type="spatial_unpad")
    hf_dir = export_hf(original, root / "hf", dtype="float32")
    return original, hf_dir, load_pulse(original, dtype="float32", device="cpu")


@pytest.mark.parametrize("size", SIZES)
def test_exported_model_computes_the_same_logits(exported, size):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pulse_models.testing import make_ecg_like_image

    _original, hf_dir, (ours, tokenizer, processor, _config) = exported
    hf = AutoModelForImageTextToText.from_pretrained(hf_dir).eval()
    hf_processor = AutoProcessor.from_pretrained(hf_dir)
    image = make_ecg_like_image(*size, seed=1)
    prompt = build_prompt([("<image>\nWhat is the rhythm of this ECG?", None)])
    ids = tokenize_with_image(prompt, tokenizer)
    pixels = processor.preprocess(image)
    with torch.no_grad():
        ours_logits = ours(input_ids=[ids], images=[pixels.pixel_values], image_sizes=[pixels.image_size]).logits[0]
    n_image = ours_logits.shape[0] - (len(ids) - 1)
    # The exported processor expands <image> to as many tokens as the model produces features.
    hf_inputs = hf_processor(images=image, text=prompt, return_tensors="pt")
    assert int((hf_inputs["input_ids"] == hf.config.image_token_index).sum()) == n_image
    # Same token ids (LLaVA's per-chunk tokenisation) and pixels: the same logits.
    at = ids.index(IMAGE_TOKEN_INDEX)
    hf_ids = ids[:at] + [hf.config.image_token_index] * n_image + ids[at + 1 :]
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor([hf_ids]), pixel_values=pixels.pixel_values[None],
                       image_sizes=torch.tensor([[size[1], size[0]]])).logits[0]
    torch.testing.assert_close(hf_logits[:, : ours_logits.shape[1]], ours_logits, rtol=1e-4, atol=1e-4)


def test_hf_checkpoint_loads_back_onto_the_shared_definition(exported):
    _original, hf_dir, (ours, _tok, _proc, config) = exported
    model, tokenizer = load_hf_as_pulse(hf_dir)
    assert model.config.mm_patch_merge_type == "spatial_unpad"
    assert model.config.image_grid_pinpoints == config.image_grid_pinpoints
    before, after = ours.state_dict(), model.state_dict()
    for key, tensor in before.items():
        assert torch.equal(tensor, after[key][: tensor.shape[0]]), key  # vocab grew by <image>
    assert "<image>" in tokenizer.get_vocab()


def test_recipe_starts_from_an_hf_checkpoint(exported, tmp_path):
    from pulse_training.config import load_config
    from pulse_training.recipe import setup_model, setup_tokenizer_and_model_config

    _original, hf_dir, _loaded = exported
    config = load_config("tiny.yaml", {"model_name_or_path": str(hf_dir), "data_path": "x.json",
                                       "output_dir": str(tmp_path), "mm_patch_merge_type": "flat"})
    model, _tok = setup_model(config, torch.float32)
    assert model.config.mm_patch_merge_type == "flat" and model.image_newline is None
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    _tok2, pulse_config = setup_tokenizer_and_model_config(config)
    assert pulse_config.mm_patch_merge_type == "flat"


def test_flat_checkpoints_are_refused(tmp_path, capsys):
    from pulse_models.testing import make_tiny_original_checkpoint

    flat = make_tiny_original_checkpoint(tmp_path / "flat", merge_type="flat")
    with pytest.raises(ExportError, match="spatial_unpad"):
        export_hf(flat, tmp_path / "out")
    assert main([str(flat), str(tmp_path / "out2")]) == 2
    assert "only spatial_unpad" in capsys.readouterr().err
