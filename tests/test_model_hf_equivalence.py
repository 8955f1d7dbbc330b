"""Our spatial_unpad path equals transformers' LlavaNext on the same weights and pixels.

transformers implements only spatial_unpad; with the weights copied over, the same pixels and the
image placeholder expanded to our image-token count, both models must give the same logits. This
pins the grid re-assembly, unpadding, image_newline placement and the splice position.
"""

from __future__ import annotations

import pytest
import torch

from pulse_models.loading import load_pulse
from pulse_models.conversation import IMAGE_TOKEN_INDEX, build_prompt, tokenize_with_image
from pulse_models.testing import TINY_PINPOINTS, make_ecg_like_image, make_tiny_original_checkpoint

HF_IMAGE_TOKEN = 5  # any id: LlavaNext overwrites the embeddings at these positions


def _hf_key(name: str) -> str:
    if name.startswith("vision_tower."):
        return "model." + name
    if name.startswith("mm_projector."):
        return name.replace("mm_projector.0", "model.multi_modal_projector.linear_1").replace(
            "mm_projector.2", "model.multi_modal_projector.linear_2")
    if name == "image_newline":
        return "model.image_newline"
    if name.startswith("language_model.model."):
        return "model.language_model." + name[len("language_model.model."):]
    if name.startswith("language_model.lm_head."):
        return name[len("language_model."):]
    raise KeyError(name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    path = make_tiny_original_checkpoint(tmp_path_factory.mktemp("unpad"), merge_type="spatial_unpad", seed=3)
    ours, tok, ip, cfg = load_pulse(path, dtype="float32", device="cpu", attn_implementation="eager")
    hf_cfg = LlavaNextConfig(
        text_config=LlamaConfig(**cfg.text_config).to_dict(),
        vision_config=CLIPVisionConfig(**cfg.vision_config).to_dict(),
        image_token_index=HF_IMAGE_TOKEN, image_grid_pinpoints=[[h, w] for w, h in TINY_PINPOINTS],
        vision_feature_layer=cfg.mm_vision_select_layer, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    hf_cfg._attn_implementation = "eager"
    hf = LlavaNextForConditionalGeneration(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict({_hf_key(k): v for k, v in ours.state_dict().items()
                                              if "rotary" not in k and not k.endswith("position_ids")}, strict=False)
    assert not unexpected and all("rotary" in k or k.endswith("position_ids") for k in missing)
    return ours, hf, tok, ip


@pytest.mark.parametrize("size", [(100, 60), (40, 90), (20, 20), (64, 64), (120, 40)])
def test_spatial_unpad_logits_match_llava_next(pair, size):
    ours, hf, tok, ip = pair
    ids = tokenize_with_image(build_prompt([("<image>\nWhat is the rhythm?", None)]), tok)
    p = ip.preprocess(make_ecg_like_image(*size, seed=1))
    n_img = ip.num_image_tokens(p.image_size)
    k = ids.index(IMAGE_TOKEN_INDEX)
    hf_ids = torch.tensor([ids[:k] + [HF_IMAGE_TOKEN] * n_img + ids[k + 1:]])
    with torch.no_grad():
        ref = hf(input_ids=hf_ids, pixel_values=p.pixel_values[None], image_sizes=torch.tensor([[size[1], size[0]]]),
                 attention_mask=torch.ones_like(hf_ids)).logits
        mine = ours([ids], [p.pixel_values], [p.image_size]).logits
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)
