"""anyres grid choice, image-token counts and pixel equality with transformers' PIL processors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_models.configuration import DEFAULT_GRID_PINPOINTS, DEFAULT_VISION_TOWER, ConfigError, PulseConfig
from pulse_models.image_processing import (
    ImageLoadError,
    ImageProcessor,
    anyres_grid_shape,
    load_image,
    num_image_tokens,
    select_best_resolution,
)
from pulse_models.testing import make_ecg_like_image

TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}

# (width, height) -> best pinpoint (w, h), flat tokens, spatial_unpad tokens (PULSE sizes: 336/14).
GRID_TABLE = [
    ((2200, 1700), (672, 672), 2880, 2438),  # typical landscape 12-lead scan
    ((1000, 500), (672, 336), 1728, 1752),  # 2:1 landscape
    ((1500, 500), (1008, 336), 2304, 2328),  # 3:1 rhythm strip
    ((700, 1200), (672, 672), 2880, 1968),  # portrait
    ((400, 1300), (336, 1008), 2304, 2232),  # tall portrait
    ((50, 40), (336, 672), 1728, 1076),  # tiny: every pinpoint keeps all pixels -> least waste
    ((336, 336), (336, 672), 1728, 1176),  # exactly one tile
]


@pytest.mark.parametrize("size,best,flat,unpad", GRID_TABLE)
def test_grid_choice_and_token_counts(size, best, flat, unpad):
    assert select_best_resolution(size, DEFAULT_GRID_PINPOINTS) == best
    cols, rows = anyres_grid_shape(size, DEFAULT_GRID_PINPOINTS, 336)
    assert (cols * 336, rows * 336) == best
    assert num_image_tokens(size, merge_type="flat") == flat == 576 * (1 + cols * rows)
    assert num_image_tokens(size, merge_type="spatial_unpad") == unpad


@pytest.mark.parametrize("size,best,flat,unpad", GRID_TABLE)
def test_unpad_counts_match_transformers(size, best, flat, unpad):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    proc = LlavaNextProcessor.__new__(LlavaNextProcessor)  # only the counting helpers are used
    proc.image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=[[h, w] for w, h in DEFAULT_GRID_PINPOINTS])
    proc.patch_size, proc.num_additional_image_tokens = 14, 0
    w, h = size
    assert proc._get_number_of_features(h, w, 336, 336) == unpad


@pytest.mark.parametrize("size", [(2200, 1700), (700, 1200), (1500, 500), (50, 40)])
def test_pixels_equal_transformers_pil_processors(size):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    cfg = PulseConfig(text_config=TEXT)
    ip = ImageProcessor(cfg)
    img = make_ecg_like_image(*size, seed=3)
    out = ip.preprocess(img)
    cols, rows = anyres_grid_shape(size, DEFAULT_GRID_PINPOINTS, 336)
    assert out.pixel_values.shape == (1 + cols * rows, 3, 336, 336) and out.pixel_values.dtype == torch.float32
    assert out.image_size == size
    hf = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                    image_grid_pinpoints=[[h, w] for w, h in DEFAULT_GRID_PINPOINTS])
    theirs = torch.as_tensor(np.asarray(hf(img, return_tensors="np")["pixel_values"][0]))
    assert torch.equal(out.pixel_values, theirs[: out.pixel_values.shape[0]])
    clip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    per_tile = torch.stack([torch.as_tensor(clip(t, return_tensors="np")["pixel_values"][0]) for t in ip.tiles(img)])
    assert torch.equal(out.pixel_values, per_tile)


def test_load_image_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError):
        load_image(bad)
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "missing.png")
    assert load_image(make_ecg_like_image(20, 10).convert("L")).mode == "RGB"


def test_config_validation():
    with pytest.raises(ConfigError):
        PulseConfig(text_config=TEXT, mm_patch_merge_type="spatial")
    with pytest.raises(ConfigError):
        PulseConfig(text_config=TEXT, mm_projector_type="mlp3x_gelu")
    with pytest.raises(ConfigError):
        PulseConfig(text_config=TEXT, image_grid_pinpoints=[[300, 600]])
    with pytest.raises(ConfigError):
        PulseConfig.from_original_dict({"model_type": "llava_llama", **TEXT})  # no mm_vision_tower
    cfg = PulseConfig.from_original_dict({"model_type": "llava_llama", **TEXT, "mm_vision_tower": DEFAULT_VISION_TOWER,
                                          "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "anyres",
                                          "image_grid_pinpoints": str(DEFAULT_GRID_PINPOINTS), "foo": 1})
    assert cfg.mm_patch_merge_type == "flat" and cfg.tokens_per_tile == 576 and cfg.extra["foo"] == 1
    again = PulseConfig.from_original_dict(cfg.to_original_dict())
    assert again.to_original_dict() == cfg.to_original_dict()


@pytest.mark.parametrize("aspect", ["pad", "square"])
def test_non_anyres_modes(aspect):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from pulse_models.image_processing import _expand_to_square

    cfg = PulseConfig(text_config=TEXT, image_aspect_ratio=aspect)
    img = make_ecg_like_image(500, 300, seed=2)
    out = ImageProcessor(cfg).preprocess(img)
    assert out.pixel_values.shape == (1, 3, 336, 336) and num_image_tokens(out.image_size, cfg) == 576
    src = _expand_to_square(img) if aspect == "pad" else img
    assert _expand_to_square(img).size == (500, 500)
    clip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert torch.equal(out.pixel_values[0], torch.as_tensor(clip(src, return_tensors="np")["pixel_values"][0]))
