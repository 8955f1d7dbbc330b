"""Tiny random checkpoints for tests (no downloads): everyone's tests build models with these.

    make_tiny_tokenizer_dir(out_dir) -> Path        SentencePiece-only tokenizer.model (+ config)
    make_tiny_original_checkpoint(out_dir, merge_type="flat"|"spatial_unpad", seed=0,
                                  max_length=TINY_MAX_LENGTH, head_dim=None) -> Path
    make_tiny_clip_dir(out_dir, image_size=TINY_TILE, patch_size=TINY_PATCH, whole_clip=False,
                       image_mean=CLIP mean, shortest_edge=image_size) -> Path   a tower folder
    make_tiny_original_checkpoint(..., vision_tower=folder, tower_weights=True)   LLaVA's own
        layout: no vision_config key, mm_vision_tower names the folder (its config is read from there)
    make_tiny_hf_checkpoint(out_dir, seed=0) -> Path  (transformers llava_next + processor)
    make_ecg_like_image(width, height, seed=0) -> PIL.Image   a synthetic test image
    tiny_config(merge_type, max_length, head_dim=None) -> PulseConfig

Sizes: Llama hidden 32, 2 layers, 4 heads, vocab TINY_VOCAB; CLIP hidden 32, 2 layers, 32 px
tiles of 8 px patches (16 tokens per tile), pinpoints = the LLaVA-1.6 grid scaled to 32 px tiles.
``head_dim`` (e.g. 32, what vLLM's CPU attention needs at least) sets the Llama heads to
hidden // head_dim (one head of 32 at hidden 32).
The SentencePiece model is trained offline in well under a second and is deterministic.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

TINY_VOCAB = 400  # 256 byte-fallback pieces + 3 specials + ~140 merges
TINY_TILE = 32  # CLIP input side in pixels
TINY_PATCH = 8  # CLIP patch side -> 4x4 = 16 tokens per tile
TINY_MAX_LENGTH = 1024  # tokenizer_model_max_length of tiny checkpoints
TINY_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]  # LLaVA-1.6 grid / 10.5
_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions.",
    # No newline in the corpus: "\n" must stay a byte-fallback piece (<0x0A>), as in Llama's vocab.
    # "USER" only after "</s>": like Llama's vocab, "USER" becomes one piece and "▁USER" two
    # ("▁" + "USER"); LLaVA's label count (the -1 for later rounds) relies on that.
    "ASSISTANT: ok.</s>USER: What is the rhythm of this ECG? ASSISTANT: Sinus rhythm with a normal axis.</s>",
    "</s>USER: Which leads show ST elevation? Answer with the letter. A. II, III, aVF B. V1-V4 C. none D. I",
    "The ECG shows atrial fibrillation, left bundle branch block, first degree AV block, 0123456789.",
    "Please write a report: rate, rhythm, axis, intervals, hypertrophy, ischemia, conclusion.",
]
TOKENIZER_CONFIG: dict[str, Any] = {
    # As llava-v1.6-vicuna-7b's tokenizer_config.json (legacy false, pad = unk).
    "tokenizer_class": "LlamaTokenizer",
    "legacy": False,
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<unk>",
    "padding_side": "right",
    "clean_up_tokenization_spaces": False,
}


def _train_sentencepiece() -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20), model_writer=buf, vocab_size=TINY_VOCAB, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        character_coverage=1.0, minloglevel=2, allow_whitespace_only_pieces=True,
    )
    return buf.getvalue()


def make_tiny_tokenizer_dir(out_dir: str | Path, model_max_length: int = TINY_MAX_LENGTH) -> Path:
    """Write tokenizer.model (SentencePiece only, no tokenizer.json) + tokenizer_config.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(_train_sentencepiece())
    cfg = dict(TOKENIZER_CONFIG, model_max_length=model_max_length)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"})
    )
    return out


def make_tiny_clip_dir(
    out_dir: str | Path, image_size: int = TINY_TILE, patch_size: int = TINY_PATCH, whole_clip: bool = False,
    image_mean: list[float] | None = None, shortest_edge: int | None = None, seed: int = 0,
) -> Path:
    """A random tiny CLIP tower folder as the hub ships one: config.json (a CLIPVisionConfig, or a
    whole CLIPConfig with ``whole_clip``, as openai/clip-vit-* are), model.safetensors and a
    CLIPImageProcessor preprocessor_config.json (resize ``shortest_edge``, crop ``image_size``)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    from pulse_models.configuration import CLIP_MEAN, CLIP_STD

    out = Path(out_dir)
    vision = dict(tiny_config().vision_config, image_size=image_size, patch_size=patch_size)
    torch.manual_seed(seed)
    if whole_clip:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                "vocab_size": 64, "projection_dim": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        model: Any = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    else:
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
    _spread_init(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": shortest_edge or image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(image_mean or CLIP_MEAN), image_std=list(CLIP_STD),
    ).save_pretrained(out)
    return out


def _scaled_pinpoints(tile: int) -> list[list[int]]:
    """TINY_PINPOINTS (the LLaVA-1.6 grid) for tiles of ``tile`` pixels."""
    return [[w // TINY_TILE * tile, h // TINY_TILE * tile] for w, h in TINY_PINPOINTS]


def tiny_config(merge_type: str = "flat", max_length: int = TINY_MAX_LENGTH,
                vision_tower: str | Path | None = None, head_dim: int | None = None) -> "Any":
    """The tiny PulseConfig; with ``vision_tower`` (a CLIP folder) the tower part is that folder's
    own config and preprocessing, read by resolve_vision_tower as a checkpoint naming it would."""
    from pulse_models.configuration import PulseConfig, resolve_vision_tower

    text = {
        "vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    if head_dim is not None:
        if text["hidden_size"] % head_dim:
            raise ValueError(f"head_dim {head_dim} does not divide the tiny hidden size {text['hidden_size']}")
        text["num_attention_heads"] = text["num_key_value_heads"] = text["hidden_size"] // head_dim
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": TINY_TILE, "patch_size": TINY_PATCH, "projection_dim": 16, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "num_channels": 3,
    }
    tower_name, preprocess = "openai/clip-vit-large-patch14-336", None
    if vision_tower is not None:
        tower_name = str(vision_tower)
        tower = resolve_vision_tower({"mm_vision_tower": tower_name})
        vision, preprocess = tower.vision_config, tower.image_preprocess
    return PulseConfig(
        text_config=text, vision_config=vision, mm_vision_tower=tower_name,
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        image_aspect_ratio="anyres", image_grid_pinpoints=_scaled_pinpoints(int(vision["image_size"])),
        mm_patch_merge_type=merge_type, tokenizer_model_max_length=max_length, image_preprocess=preprocess,
    )


def make_tiny_original_checkpoint(
    out_dir: str | Path, merge_type: str = "flat", seed: int = 0, max_length: int = TINY_MAX_LENGTH,
    vision_tower: str | Path | None = None, tower_weights: bool = True, head_dim: int | None = None,
) -> Path:
    """A random tiny LLaVA-1.6 checkpoint in the ORIGINAL format (config.json, model.safetensors,
    generation_config.json, and a SentencePiece-only tokenizer: tokenizer.model,
    tokenizer_config.json, special_tokens_map.json). ``model.image_newline`` is always written, as PULSE-7B
    ships it even with flat merging (the loader must report it unused, not fail).

    ``vision_tower``: a CLIP folder (make_tiny_clip_dir) the checkpoint names in ``mm_vision_tower``
    as the original code writes it: config.json then has no ``vision_config``/``image_preprocess``
    keys, the tower weights are the folder's (left out with ``tower_weights=False``)."""
    import torch
    from transformers import AutoTokenizer

    from pulse_models.checkpoint import save_original_format
    from pulse_models.modeling import PulseLlavaForCausalLM

    out = Path(out_dir)
    tok_dir = make_tiny_tokenizer_dir(out, model_max_length=max_length)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    model = PulseLlavaForCausalLM(tiny_config(merge_type, max_length, vision_tower, head_dim),
                                  attn_implementation="sdpa")
    _spread_init(model, seed)
    if vision_tower is not None:
        from transformers import CLIPVisionModel

        model.vision_tower.load_state_dict(CLIPVisionModel.from_pretrained(str(vision_tower)).state_dict())
    extra = {}
    if merge_type == "flat":
        extra["model.image_newline"] = torch.randn(model.config.hidden_size)
    save_original_format(model, tokenizer, out, extra_tensors=extra)
    if vision_tower is not None:
        _as_llava_wrote_it(out, tower_weights)
    # Ship the tokenizer as PULSE-7B does: tokenizer.model + config only, no tokenizer.json, so
    # every load goes through the SentencePiece conversion (the protobuf/sentencepiece pin).
    (out / "tokenizer.json").unlink(missing_ok=True)
    make_tiny_tokenizer_dir(out, model_max_length=max_length)
    return out


def _as_llava_wrote_it(out: Path, tower_weights: bool) -> None:
    """Drop our vision_config/image_preprocess keys (and, unless ``tower_weights``, the CLIP
    weights) so the checkpoint is what the original LLaVA code saves."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("vision_config", None)
    cfg.pop("image_preprocess", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if not tower_weights:
        weights = load_file(str(out / "model.safetensors"))
        save_file({k: v for k, v in weights.items() if not k.startswith("model.vision_tower.")},
                  str(out / "model.safetensors"), metadata={"format": "pt"})


def _spread_init(model: Any, seed: int) -> None:
    """Re-initialise every weight with a fixed generator and a large std: random logits are then
    well separated, so greedy outputs do not flip on rounding noise (batch-1 vs batch-N tests)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name and p.dim() == 1:
                continue  # keep LayerNorm/RMSNorm weights at 1
            fan_in = p.shape[-1] if p.dim() > 1 else 32
            p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5))


def make_ecg_like_image(width: int, height: int, seed: int = 0) -> "Any":
    """A deterministic RGB image with grid lines and a trace (not a real ECG)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.full((height, width, 3), 250, dtype=np.uint8)
    arr[:: max(1, height // 8), :, 1:] = 180
    arr[:, :: max(1, width // 8), 1:] = 180
    xs = np.arange(width)
    ys = (height / 2 + (height / 4) * np.sin(xs / max(1, width) * 12 + seed)).astype(int).clip(0, height - 1)
    arr[ys, xs] = 0
    noise = rng.integers(0, 30, size=arr.shape, dtype=np.uint8)
    return Image.fromarray(arr - np.minimum(arr, noise))


# Chat template of the llava-hf vicuna models (one image placeholder "<image>").
HF_VICUNA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }} "
    "{% elif message['role'] == 'user' %}USER: {% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}"
    "{% endif %}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_tiny_hf_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A random tiny transformers ``llava_next`` checkpoint with its processor (chat template,
    "<image>" added token, image processor), loadable by AutoModelForImageTextToText/AutoProcessor."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    out = Path(out_dir)
    tok_dir = make_tiny_tokenizer_dir(out / "_tok")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    cfg = tiny_config("spatial_unpad")
    text = dict(cfg.text_config, vocab_size=len(tokenizer))
    config = LlavaNextConfig(
        text_config=LlamaConfig(**text).to_dict(),
        vision_config=CLIPVisionConfig(**cfg.vision_config).to_dict(),
        image_token_index=image_token_id,
        image_grid_pinpoints=[[h, w] for w, h in TINY_PINPOINTS],  # HF: (height, width)
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    _spread_init(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TINY_TILE}, crop_size={"height": TINY_TILE, "width": TINY_TILE},
        image_grid_pinpoints=[[h, w] for w, h in TINY_PINPOINTS],
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=TINY_PATCH,
        vision_feature_select_strategy="default", chat_template=HF_VICUNA_CHAT_TEMPLATE, image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's CLS, which the "default" strategy then drops
    )
    processor.save_pretrained(out)
    import shutil

    # llava-hf repositories ship tokenizer.json and the SentencePiece tokenizer.model side by side.
    shutil.copyfile(tok_dir / "tokenizer.model", out / "tokenizer.model")
    shutil.rmtree(out / "_tok", ignore_errors=True)
    return out
