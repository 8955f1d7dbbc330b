"""Between the original LLaVA format (what the recipe saves) and transformers' `llava_next`.

    python -m pulse_training.export CHECKPOINT OUT_DIR [--dtype bfloat16]

Export writes a `LlavaNextForConditionalGeneration` + `LlavaNextProcessor` folder that
`AutoModelForImageTextToText` / `AutoProcessor` load. transformers implements only the
`spatial_unpad` merge, so a `flat` checkpoint (PULSE-7B's setting) cannot be exported faithfully
and is refused; train with `mm_patch_merge_type=spatial_unpad` to get an exportable model.

The other direction (`load_hf_as_pulse`) lets the recipe start from an HF-format LLaVA-1.6
(e.g. llava-hf/llava-v1.6-vicuna-7b-hf): transformers reads the files (any of its key layouts),
then parameters are renamed onto the shared definition.

HF conventions that differ from LLaVA's: grid pinpoints are (height, width); the image is a
real `<image>` token in the vocabulary (added here, its embedding row set to the mean so the
new logit is unremarkable); the projector is `multi_modal_projector.linear_1/linear_2`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

IMAGE_TOKEN = "<image>"
# Parameter renames, ours (PulseLlavaForCausalLM) -> transformers 5 LlavaNextForConditionalGeneration.
_OURS_TO_HF: tuple[tuple[str, str], ...] = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("image_newline", "model.image_newline"),
)
# LLaVA's mm_vision_select_feature <-> HF's vision_feature_select_strategy.
_SELECT_TO_HF: dict[str, str] = {"patch": "default", "cls_patch": "full"}


class ExportError(ValueError):
    """A checkpoint whose architecture transformers' llava_next cannot express."""


def ours_to_hf_key(name: str) -> str:
    for ours, hf in _OURS_TO_HF:
        if name.startswith(ours):
            return hf + name[len(ours):]
    raise KeyError(f"parameter {name!r} has no llava_next name")


def hf_to_ours_key(name: str) -> str | None:
    for ours, hf in _OURS_TO_HF:
        if name.startswith(hf):
            return ours + name[len(hf):]
    return None


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
        vision_feature_select_strategy=_SELECT_TO_HF[config.mm_vision_select_feature],
        projector_hidden_act="gelu",
        image_seq_length=config.tokens_per_tile,
        tie_word_embeddings=bool(config.text_config.get("tie_word_embeddings", False)),
    )


def pulse_config_from_hf(path_or_config: Any) -> Any:
    """PulseConfig of an HF llava_next checkpoint folder (or LlavaNextConfig)."""
    from transformers import AutoConfig

    from pulse_models.configuration import PulseConfig

    from pulse_models.configuration import TOWER_PREPROCESSOR_FILE, preprocess_from_processor_dict

    hf = path_or_config
    preprocess = None
    if isinstance(path_or_config, (str, Path)):
        hf = AutoConfig.from_pretrained(path_or_config)
        processor_file = Path(path_or_config) / TOWER_PREPROCESSOR_FILE
        if processor_file.is_file():  # the exported resize/crop/mean/std (training reads images with them)
            preprocess = preprocess_from_processor_dict(json.loads(processor_file.read_text()))
    if hf.model_type != "llava_next":
        raise ExportError(f"model_type {hf.model_type!r}: only llava_next (LLaVA-1.6) HF checkpoints are supported")
    select = {v: k for k, v in _SELECT_TO_HF.items()}[hf.vision_feature_select_strategy]
    text = hf.text_config.to_dict()
    vision = hf.vision_config.to_dict()
    keep_text = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act", "bos_token_id",
                 "eos_token_id", "pad_token_id", "tie_word_embeddings", "rope_theta", "rope_parameters")
    keep_vision = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                   "patch_size", "projection_dim", "hidden_act", "layer_norm_eps", "num_channels")
    return PulseConfig(
        text_config={k: text[k] for k in keep_text if text.get(k) is not None},
        vision_config={k: vision[k] for k in keep_vision if k in vision},
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=int(hf.vision_feature_layer),
        mm_vision_select_feature=select,
        image_aspect_ratio="anyres",
        image_grid_pinpoints=[[w, h] for h, w in hf.image_grid_pinpoints],  # back to (width, height)
        mm_patch_merge_type="spatial_unpad",
        image_preprocess=preprocess,
    )


def load_hf_as_pulse(path: str | Path, dtype: torch.dtype = torch.float32,
                     attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """(PulseLlavaForCausalLM, tokenizer) from an HF llava_next folder."""
    from transformers import AutoTokenizer, LlavaNextForConditionalGeneration

    from pulse_models.modeling import PulseLlavaForCausalLM

    hf_model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype)
    config = pulse_config_from_hf(hf_model.config)
    model = PulseLlavaForCausalLM(config, attn_implementation=attn_implementation).to(dtype)
    state = {}
    for name, tensor in hf_model.state_dict().items():
        ours = hf_to_ours_key(name)
        if ours is not None:
            state[ours] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ExportError(f"{path}: HF weights do not map onto the model (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    model.freeze_vision_tower(True)
    return model, AutoTokenizer.from_pretrained(path)


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
