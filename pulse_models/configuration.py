"""PulseConfig: the architecture switches of an ORIGINAL-format LLaVA-1.6 checkpoint (PULSE-7B).

The original LLaVA repository stores one flat ``config.json``: a Llama config (``model_type``
``llava_llama``) plus ``mm_*`` fields. It does not store the CLIP vision config (LLaVA read it
from the hub id in ``mm_vision_tower``). We keep the vision config in an extra ``vision_config``
key when we write checkpoints (LLaVA tools ignore unknown keys) and otherwise fall back to the
known config of ``openai/clip-vit-large-patch14-336``, so loading needs no hub access.

Public API (stable, used by training/ and the adapter):
    PulseConfig                         dataclass, validated in ``__post_init__``
    PulseConfig.from_original_dict(d)   parse an original ``config.json`` dict
    PulseConfig.to_original_dict()      the dict ``save_original_format`` writes
    PulseConfig.llama_config(attn)      transformers ``LlamaConfig`` for the language model
    PulseConfig.clip_config(attn)       transformers ``CLIPVisionConfig`` for the tower
    PulseConfig.tokens_per_tile, .grid_pinpoints_wh   derived sizes
    ConfigError                         raised for any invalid/unsupported switch

This module imports no torch/transformers at module top.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The LLaVA-1.6 default anyres resolutions, (width, height) pairs in pixels.
DEFAULT_GRID_PINPOINTS: list[list[int]] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# PULSE-7B's vision tower (the hub id stays in the config; its weights ship inside the checkpoint).
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"
# Config of openai/clip-vit-large-patch14-336's vision half, so no hub access is needed to build it.
CLIP_L_336_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}
# Llama fields copied from an original config.json into LlamaConfig (the rest are LLaVA's).
_LLAMA_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "attention_bias", "attention_dropout", "mlp_bias", "head_dim",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
    "pretraining_tp",
)

SUPPORTED_PROJECTORS = ("linear", "mlp2x_gelu")
SUPPORTED_SELECT_FEATURES = ("patch", "cls_patch")
SUPPORTED_ASPECT_RATIOS = ("anyres", "pad", "square")
SUPPORTED_MERGE_TYPES = ("flat", "spatial_unpad")
ORIGINAL_MODEL_TYPE = "llava_llama"
ORIGINAL_ARCHITECTURE = "LlavaLlamaForCausalLM"


class ConfigError(ValueError):
    """An original-format config with a missing, invalid or unsupported architecture switch."""


@dataclass
class PulseConfig:
    """Everything that shapes the LLaVA-1.6 model; field names follow the original config.json."""

    # Llama language-model config as a plain dict (vocab 32000, hidden 4096, 32 layers for 7B).
    text_config: dict[str, Any]
    # CLIP vision config as a plain dict; defaults to CLIP ViT-L/14-336's.
    vision_config: dict[str, Any] = field(default_factory=lambda: dict(CLIP_L_336_VISION_CONFIG))
    # Hub id or local path of the CLIP tower; weights load from here only if the checkpoint lacks them.
    mm_vision_tower: str = DEFAULT_VISION_TOWER
    # "mlp2x_gelu": Linear(mm_hidden, hidden) -> GELU -> Linear(hidden, hidden); "linear": one Linear.
    mm_projector_type: str = "mlp2x_gelu"
    # Which CLIP hidden state feeds the projector (-2: second-to-last layer).
    mm_vision_select_layer: int = -2
    # "patch" drops the CLS token (576 tokens per 336px tile); "cls_patch" keeps it.
    mm_vision_select_feature: str = "patch"
    # "anyres": base image + tiles on a pinpoint grid; "pad": expand to square; "square": plain resize.
    image_aspect_ratio: str = "anyres"
    # Candidate anyres resolutions as [width, height] pairs (multiples of the tile size).
    image_grid_pinpoints: list[list[int]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_GRID_PINPOINTS))
    # "flat": base + tile tokens concatenated; "spatial_unpad": grid, padding removed, row newlines.
    mm_patch_merge_type: str = "flat"
    # Merged (text + image) sequences are right-truncated to this length before the forward pass.
    tokenizer_model_max_length: int = 4096
    # Unused by PULSE (both false); kept so round-trips preserve them. True is rejected.
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    # Every other key of the original config.json, preserved verbatim for save/round-trip.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first unsupported or inconsistent switch."""
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key not in self.text_config:
                raise ConfigError(f"text config lacks '{key}'")
        for key in ("hidden_size", "num_hidden_layers", "image_size", "patch_size"):
            if key not in self.vision_config:
                raise ConfigError(f"vision config lacks '{key}'")
        if self.mm_projector_type not in SUPPORTED_PROJECTORS:
            raise ConfigError(f"mm_projector_type '{self.mm_projector_type}' not in {SUPPORTED_PROJECTORS}")
        if self.mm_vision_select_feature not in SUPPORTED_SELECT_FEATURES:
            raise ConfigError(
                f"mm_vision_select_feature '{self.mm_vision_select_feature}' not in {SUPPORTED_SELECT_FEATURES}"
            )
        if self.image_aspect_ratio not in SUPPORTED_ASPECT_RATIOS:
            raise ConfigError(f"image_aspect_ratio '{self.image_aspect_ratio}' not in {SUPPORTED_ASPECT_RATIOS}")
        if self.mm_patch_merge_type not in SUPPORTED_MERGE_TYPES:
            raise ConfigError(f"mm_patch_merge_type '{self.mm_patch_merge_type}' not in {SUPPORTED_MERGE_TYPES}")
        if self.mm_patch_merge_type == "spatial_unpad" and self.image_aspect_ratio != "anyres":
            raise ConfigError("mm_patch_merge_type 'spatial_unpad' needs image_aspect_ratio 'anyres'")
        if self.mm_use_im_start_end or self.mm_use_im_patch_token:
            raise ConfigError("mm_use_im_start_end / mm_use_im_patch_token are not supported (LLaVA-1.6 uses neither)")
        n_layers = int(self.vision_config["num_hidden_layers"])
        if not -n_layers - 1 <= self.mm_vision_select_layer <= n_layers:
            raise ConfigError(f"mm_vision_select_layer {self.mm_vision_select_layer} outside a {n_layers}-layer tower")
        if self.tokenizer_model_max_length <= 0:
            raise ConfigError("tokenizer_model_max_length must be positive")
        tile = self.tile_size
        if self.image_aspect_ratio == "anyres":
            if not self.image_grid_pinpoints:
                raise ConfigError("image_aspect_ratio 'anyres' needs image_grid_pinpoints")
            for wh in self.image_grid_pinpoints:
                if len(wh) != 2 or wh[0] % tile or wh[1] % tile or min(wh) <= 0:
                    raise ConfigError(f"grid pinpoint {wh} is not a positive multiple of the tile size {tile}")
        if self.vision_config["image_size"] % self.vision_config["patch_size"]:
            raise ConfigError("vision image_size must be a multiple of patch_size")

    # ---- derived sizes ----------------------------------------------------------------------
    @property
    def tile_size(self) -> int:
        """Side of one CLIP input tile in pixels (336 for PULSE)."""
        return int(self.vision_config["image_size"])

    @property
    def patches_per_side(self) -> int:
        """CLIP patches per tile side (24 for 336/14)."""
        return self.tile_size // int(self.vision_config["patch_size"])

    @property
    def tokens_per_tile(self) -> int:
        """Image tokens one tile contributes (576 for PULSE; +1 with cls_patch)."""
        return self.patches_per_side**2 + (1 if self.mm_vision_select_feature == "cls_patch" else 0)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def mm_hidden_size(self) -> int:
        return int(self.vision_config["hidden_size"])

    @property
    def grid_pinpoints_wh(self) -> list[tuple[int, int]]:
        """Pinpoints as (width, height) tuples."""
        return [(int(w), int(h)) for w, h in self.image_grid_pinpoints]

    # ---- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_original_dict(cls, d: dict[str, Any]) -> "PulseConfig":
        """Parse an original LLaVA ``config.json`` dict (Llama keys + mm_* keys)."""
        d = dict(d)
        pinpoints = d.pop("image_grid_pinpoints", None)
        if isinstance(pinpoints, str):  # some LLaVA configs store the list as a Python literal
            import ast

            pinpoints = ast.literal_eval(pinpoints)
        vision_tower = d.pop("mm_vision_tower", None) or d.pop("vision_tower", None)
        if vision_tower is None:
            raise ConfigError("config.json has no 'mm_vision_tower': not an original LLaVA checkpoint")
        vision_config = d.pop("vision_config", None) or dict(CLIP_L_336_VISION_CONFIG)
        text_config = {k: d.pop(k) for k in _LLAMA_KEYS if k in d}
        kwargs: dict[str, Any] = {}
        for name in (
            "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature", "image_aspect_ratio",
            "mm_patch_merge_type", "tokenizer_model_max_length", "mm_use_im_start_end", "mm_use_im_patch_token",
        ):
            if name in d and d[name] is not None:
                kwargs[name] = d.pop(name)
        # LLaVA's own defaults when a field is absent: linear projector, square images, flat merge.
        kwargs.setdefault("mm_projector_type", "linear")
        kwargs.setdefault("image_aspect_ratio", "square")
        if kwargs["image_aspect_ratio"] == "anyres":
            kwargs["image_grid_pinpoints"] = pinpoints or copy.deepcopy(DEFAULT_GRID_PINPOINTS)
        elif pinpoints:
            kwargs["image_grid_pinpoints"] = pinpoints
        hidden = d.get("mm_hidden_size")
        if hidden is not None and int(hidden) != int(vision_config["hidden_size"]):
            raise ConfigError(f"mm_hidden_size {hidden} != vision hidden size {vision_config['hidden_size']}")
        return cls(text_config=text_config, vision_config=dict(vision_config), mm_vision_tower=vision_tower,
                   extra=d, **kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PulseConfig":
        return cls.from_original_dict(json.loads(Path(path).read_text()))

    def to_original_dict(self) -> dict[str, Any]:
        """The original-format config.json content (plus our ``vision_config`` key)."""
        d: dict[str, Any] = dict(self.extra)
        d.update(self.text_config)
        d.update(
            model_type=ORIGINAL_MODEL_TYPE,
            architectures=[ORIGINAL_ARCHITECTURE],
            mm_vision_tower=self.mm_vision_tower,
            mm_hidden_size=self.mm_hidden_size,
            mm_projector_type=self.mm_projector_type,
            mm_vision_select_layer=self.mm_vision_select_layer,
            mm_vision_select_feature=self.mm_vision_select_feature,
            image_aspect_ratio=self.image_aspect_ratio,
            image_grid_pinpoints=self.image_grid_pinpoints,
            mm_patch_merge_type=self.mm_patch_merge_type,
            tokenizer_model_max_length=self.tokenizer_model_max_length,
            mm_use_im_start_end=self.mm_use_im_start_end,
            mm_use_im_patch_token=self.mm_use_im_patch_token,
            vision_config=self.vision_config,
        )
        return d

    # ---- transformers configs (lazy imports) ------------------------------------------------
    def llama_config(self, attn_implementation: str = "sdpa") -> Any:
        """transformers.LlamaConfig for the language model."""
        from transformers import LlamaConfig

        cfg = LlamaConfig(**self.text_config)
        cfg._attn_implementation = attn_implementation
        return cfg

    def clip_config(self, attn_implementation: str = "sdpa") -> Any:
        """transformers.CLIPVisionConfig for the vision tower."""
        from transformers import CLIPVisionConfig

        cfg = CLIPVisionConfig(**self.vision_config)
        # flash-attention-2 is a language-model choice; CLIP tiles are fixed-size, sdpa is fine.
        cfg._attn_implementation = "sdpa" if attn_implementation == "flash_attention_2" else attn_implementation
        return cfg
