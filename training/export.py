"""Between the original LLaVA format (what the recipe saves) and transformers' `llava_next`.

    python -m pulse_training.export CHECKPOINT OUT_DIR [--dtype bfloat16]

Export writes a `LlavaNextForConditionalGeneration` + `LlavaNextProcessor` folder that
`AutoModelForImageTextToText` / `AutoProcessor` load. transformers implements only the
`spatial_unpad` merge, so a `flat` checkpoint (PULSE-7B's setting) cannot be exported faithfully
and is refused; train with `mm_patch_merge_type=spatial_unpad` to get an exportable model.

The other direction (`load_hf_as_pulse`, `pulse_config_from_hf`) lets the recipe start from an
HF-format LLaVA-1.6 (e.g. llava-hf/llava-v1.6-vicuna-7b-hf); it is the loader's
(`pulse_models.loading`, through which the recipe reads every checkpoint) and is re-exported here.

HF conventions that differ from LLaVA's: grid pinpoints are (height, width); the image is a
real `<image>` token in the vocabulary (added here, its embedding row set to the mean so the
new logit is unremarkable); the projector is `multi_modal_projector.linear_1/linear_2` (the
name mapping, both ways, is `pulse_models.checkpoint`'s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from pulse_models.checkpoint import SELECT_TO_HF, hf_to_ours_key, ours_to_hf_key
from pulse_models.loading import load_hf_as_pulse, pulse_config_from_hf

# The HF -> ours direction and the name mapping, kept importable from here.
__all__ = ["ExportError", "export_hf", "hf_config_from_pulse", "hf_to_ours_key", "load_hf_as_pulse", "main",
           "ours_to_hf_key", "pulse_config_from_hf"]

IMAGE_TOKEN = "<image>"


class ExportError(ValueError):
    """A checkpoint whose architecture transformers' llava_next cannot express."""


def _check_exportable(config: Any) -> None:
    if config.mm_patch_merge_type != "spatial_unpad":
        raise ExportError(
            f"mm_patch_merge_type={config.mm_patch_merge_type!r}: transformers' llava_next implements only "
            "spatial_unpad, so this model would see different image tokens there; train with "
            "mm_patch_merge_type=spatial_unpad to export"
        )
    if config.image_aspect_ratio != "anyres":
        raise ExportError(f"image_aspect_ratio={config.image_aspect_ratio!r}: llava_next needs anyres")
    if config.mm_projector_type != "mlp2x_gelu":
        raise ExportError(f"mm_projector_type={config.mm_projector_type!r}: llava_next has the mlp2x_gelu projector only")


def hf_config_from_pulse(config: Any, image_token_index: int, vocab_size: int) -> Any:
    """LlavaNextConfig equivalent to a PulseConfig (spatial_unpad only)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    _check_exportable(config)
    text = {k: v for k, v in config.text_config.items() if k != "initializer_range"}
    text["vocab_size"] = vocab_size
    return LlavaNextConfig(
        text_config=LlamaConfig(**text).to_dict(),
        vision_config=CLIPVisionConfig(**config.vision_config).to_dict(),
        image_token_index=image_token_index,
        image_grid_pinpoints=[[h, w] for w, h in config.image_grid_pinpoints],  # HF: (height, width)
        vision_feature_layer=config.mm_vision_select_layer,
        vision_feature_select_strategy=SELECT_TO_HF[config.mm_vision_select_feature],
        projector_hidden_act="gelu",
        image_seq_length=config.tokens_per_tile,
        tie_word_embeddings=bool(config.text_config.get("tie_word_embeddings", False)),
    )


def export_hf(checkpoint: str | Path, out_dir: str | Path, dtype: str | torch.dtype = "bfloat16") -> Path:
    """Original-format checkpoint -> HF llava_next model + processor in out_dir."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor

    from pulse_models.loading import load_pulse
    from pulse_models.testing import HF_VICUNA_CHAT_TEMPLATE

    model, tokenizer, _processor, config = load_pulse(checkpoint, dtype=dtype, device="cpu")
    _check_exportable(config)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab = max(len(tokenizer), int(config.text_config["vocab_size"]))
    hf_config = hf_config_from_pulse(config, image_token_index, vocab)
    with torch.device("meta"):
        hf_model = LlavaNextForConditionalGeneration(hf_config)
    state = {ours_to_hf_key(k): v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[key] = _grow_rows(state[key], vocab)
    hf_model.load_state_dict(state, strict=True, assign=True)
    out = Path(out_dir)
    hf_model.save_pretrained(out)
    pre = config.preprocess  # the tower's own resize/crop/mean/std (resolve_vision_tower)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": pre["shortest_edge"]}, crop_size={"height": pre["crop_size"], "width": pre["crop_size"]},
        image_grid_pinpoints=hf_config.image_grid_pinpoints, image_mean=list(pre["image_mean"]),
        image_std=list(pre["image_std"]),
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=int(config.vision_config["patch_size"]),
        vision_feature_select_strategy=hf_config.vision_feature_select_strategy,
        chat_template=HF_VICUNA_CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the CLS token CLIP adds per tile (the "default" strategy drops it)
    )
    processor.save_pretrained(out)
    return out


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Vocabulary rows for added tokens: the mean row (neither likely nor unlikely as a logit)."""
    if weight.shape[0] >= rows:
        return weight
    extra = weight.float().mean(0, keepdim=True).expand(rows - weight.shape[0], -1).to(weight.dtype)
    return torch.cat([weight, extra], dim=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pulse_training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="original-format checkpoint folder (a recipe output or checkpoint-N)")
    parser.add_argument("out_dir", help="where the HF llava_next model and processor go")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    args = parser.parse_args(argv)
    try:
        out = export_hf(args.checkpoint, args.out_dir, args.dtype)
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
