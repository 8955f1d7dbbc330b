"""PulseConfig: the architecture switches of an ORIGINAL-format LLaVA-1.6 checkpoint (PULSE-7B).

The original LLaVA repository stores one flat ``config.json``: a Llama config (``model_type``
``llava_llama``) plus ``mm_*`` fields. It does not store the CLIP vision config (LLaVA read it
from the hub id or folder in ``mm_vision_tower``). We keep the vision config in an extra
``vision_config`` key (and the tower's preprocessing in ``image_preprocess``) when we write
checkpoints (LLaVA tools ignore unknown keys); without them ``resolve_vision_tower`` reads the
tower's own config as the original code does: a local folder's ``config.json`` (CLIPVisionConfig
or the vision half of a CLIPConfig) and ``preprocessor_config.json``, a hub id through the hub
cache, or the built-in table for exactly ``openai/clip-vit-large-patch14-336``.

Public API (stable, used by training/ and the adapter):
    PulseConfig                         dataclass, validated in ``__post_init__``
    PulseConfig.from_original_dict(d, checkpoint_dir=None)   parse an original ``config.json`` dict
    resolve_vision_tower(d, checkpoint_dir=None) -> VisionTower   the tower's config, preprocessing, weights
    preprocess_from_processor_dict(d) -> dict    a preprocessor_config.json -> our ``image_preprocess``
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
import logging
import os
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
# The tower fields kept from a CLIP config (what shapes the tower; the rest is training metadata).
VISION_CONFIG_KEYS = tuple(CLIP_L_336_VISION_CONFIG) + ("attention_dropout",)
# model_type values of a CLIP tower's config.json (a whole CLIP model, or its vision half).
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
# CLIP's normalisation constants (openai/clip-vit-large-patch14-336 preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The tower's own preprocessing files, as the original clip_encoder.py reads them.
TOWER_CONFIG_FILE = "config.json"
TOWER_PREPROCESSOR_FILE = "preprocessor_config.json"
# Hugging Face switches that forbid network access (huggingface_hub reads them at import).
_OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
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


logger = logging.getLogger(__name__)


# ---- the vision tower's own config ---------------------------------------------------------------
@dataclass(frozen=True)
class VisionTower:
    """What ``mm_vision_tower`` resolves to."""

    vision_config: dict[str, Any]  # CLIPVisionConfig fields (VISION_CONFIG_KEYS)
    image_preprocess: dict[str, Any] | None  # image_mean/image_std/shortest_edge/crop_size; None: CLIP's at image_size
    config_from: str  # where vision_config came from: "config.json vision_config", a folder, "hub:<id>", "built-in"
    weights_from: str  # what CLIPVisionModel.from_pretrained gets when the checkpoint lacks the tower


def _hub_offline() -> bool:
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_ENV_VARS):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub always ships with transformers
        return False


def local_tower_dir(name: str, checkpoint_dir: str | Path | None = None) -> Path | None:
    """``mm_vision_tower`` as a local folder: as written (the original code's reading), else
    relative to the checkpoint folder; None when it names no folder (a hub id)."""
    candidates = [Path(name).expanduser()]
    if checkpoint_dir is not None and not Path(name).is_absolute():
        candidates.append(Path(checkpoint_dir) / name)
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def _hub_file(repo: str, filename: str, download: bool) -> Path | None:
    """A file of a hub repo from the local hub cache; downloaded only when ``download`` and the
    hub is not switched offline. None when it is neither cached nor downloadable."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub always ships with transformers
        return None
    try:
        cached = try_to_load_from_cache(repo, filename)
    except Exception:  # an id that is no valid repo name
        return None
    if isinstance(cached, str):
        return Path(cached)
    if not download or cached is not None or _hub_offline():  # cached non-None: "known to be absent"
        return None
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:
        logger.info("could not download %s from hub repo %s: %s", filename, repo, exc)
        return None


def _tower_config_from_file(config_file: Path, name: str) -> dict[str, Any]:
    """CLIPVisionConfig fields from a tower's config.json (a CLIPVisionConfig or a whole CLIPConfig)."""
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"mm_vision_tower {name!r}: cannot read {config_file}: {exc}") from exc
    if raw.get("model_type") not in CLIP_MODEL_TYPES:
        raise ConfigError(f"mm_vision_tower {name!r}: {config_file} has model_type {raw.get('model_type')!r}; "
                          f"only CLIP towers ({', '.join(CLIP_MODEL_TYPES)}) are supported, as in the original LLaVA")
    from transformers import CLIPVisionConfig

    # from_pretrained takes the vision half of a CLIPConfig, as the original clip_encoder.py relies on.
    cfg = CLIPVisionConfig.from_pretrained(str(config_file.parent)).to_dict()
    return {k: cfg[k] for k in VISION_CONFIG_KEYS if k in cfg}


def _size(value: Any, key: str) -> int:
    """An int side from a preprocessor size field (int, {"shortest_edge": n} or {"height", "width"})."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"preprocessor {key} {value!r} is not a size")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if "height" in value and "width" in value:
            if int(value["height"]) != int(value["width"]):
                raise ConfigError(f"preprocessor {key} {value} is not square; CLIP tiles are square")
            return int(value["height"])
    raise ConfigError(f"preprocessor {key} {value!r} is not a size")


def preprocess_from_processor_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A CLIPImageProcessor ``preprocessor_config.json`` -> our ``image_preprocess`` dict (the
    fields LLaVA's image path uses: resize side, crop side, mean, std)."""
    crop = _size(d.get("crop_size", d.get("size")), "crop_size")
    shortest = _size(d.get("size", crop), "size") if d.get("do_resize", True) else crop
    if not d.get("do_center_crop", True):
        crop = shortest
    mean = list(d.get("image_mean", CLIP_MEAN)) if d.get("do_normalize", True) else [0.0, 0.0, 0.0]
    std = list(d.get("image_std", CLIP_STD)) if d.get("do_normalize", True) else [1.0, 1.0, 1.0]
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"preprocessor image_mean/image_std {mean}/{std} need three channels")
    return {"image_mean": [float(x) for x in mean], "image_std": [float(x) for x in std],
            "shortest_edge": shortest, "crop_size": crop}


def _preprocess_file(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        return preprocess_from_processor_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the tower's {path}: {exc}") from exc


def resolve_vision_tower(d: dict[str, Any], checkpoint_dir: str | Path | None = None) -> VisionTower:
    """The vision tower an original ``config.json`` dict ``d`` names, read as the original LLaVA
    code reads it. One function for the adapter, ``ecgbench ask``, the recipe and export.

    Config: our ``vision_config`` key; else ``mm_vision_tower``'s own ``config.json`` (a local
    folder, as written or relative to ``checkpoint_dir``; a hub id from the hub cache, downloaded
    only when the hub is not offline); the built-in CLIP-L/336 table only for exactly
    ``openai/clip-vit-large-patch14-336``. Preprocessing: our ``image_preprocess`` key; else the
    tower's ``preprocessor_config.json`` where there is one; else None (CLIP's mean/std at the
    tower's image size, which is what CLIP-L/336 ships). Raises ConfigError, naming the field and
    what to do, for an id whose config cannot be found."""
    name = d.get("mm_vision_tower") or d.get("vision_tower")
    if not name:
        raise ConfigError("config.json has no 'mm_vision_tower': not an original LLaVA checkpoint")
    name = str(name)
    local = local_tower_dir(name, checkpoint_dir)
    weights_from = str(local) if local else name
    preprocess = dict(d["image_preprocess"]) if d.get("image_preprocess") else None
    if d.get("vision_config"):
        vision, source = dict(d["vision_config"]), "config.json vision_config"
        if preprocess is None and local is not None:
            preprocess = _preprocess_file(local / TOWER_PREPROCESSOR_FILE)
        elif preprocess is None and name != DEFAULT_VISION_TOWER:
            preprocess = _preprocess_file(_hub_file(name, TOWER_PREPROCESSOR_FILE, download=False))
        return VisionTower(vision, preprocess, source, weights_from)
    if local is not None:
        if not (local / TOWER_CONFIG_FILE).is_file():
            raise ConfigError(f"mm_vision_tower {name!r} is a folder without {TOWER_CONFIG_FILE}: point it at a "
                              "CLIP folder (config.json, preprocessor_config.json, weights) or add a "
                              "'vision_config' key (CLIPVisionConfig fields) to the checkpoint's config.json")
        vision = _tower_config_from_file(local / TOWER_CONFIG_FILE, name)
        if preprocess is None:
            preprocess = _preprocess_file(local / TOWER_PREPROCESSOR_FILE)
        return VisionTower(vision, preprocess, str(local), weights_from)
    if name == DEFAULT_VISION_TOWER:
        return VisionTower(dict(CLIP_L_336_VISION_CONFIG), preprocess, "built-in", weights_from)
    config_file = _hub_file(name, TOWER_CONFIG_FILE, download=True)
    if config_file is None:
        raise ConfigError(
            f"mm_vision_tower {name!r} in config.json: no local folder of that name and its {TOWER_CONFIG_FILE} is "
            f"not in the Hugging Face cache{' (offline mode is on)' if _hub_offline() else ' and could not be downloaded'}. "
            f"Fix one of: download it (huggingface-cli download {name} {TOWER_CONFIG_FILE} {TOWER_PREPROCESSOR_FILE}); "
            "set mm_vision_tower to a local CLIP folder; or add a 'vision_config' key (the tower's CLIPVisionConfig "
            "fields: hidden_size, image_size, patch_size, num_hidden_layers, ...) to the checkpoint's config.json"
        )
    vision = _tower_config_from_file(config_file, name)
    if preprocess is None:
        preprocess = _preprocess_file(_hub_file(name, TOWER_PREPROCESSOR_FILE, download=True))
    return VisionTower(vision, preprocess, f"hub:{name}", weights_from)


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
    # The tower's image preprocessing (image_mean, image_std, shortest_edge, crop_size, as its
    # preprocessor_config.json); None: CLIP's mean/std, resize and crop at the tower's image_size.
    image_preprocess: dict[str, Any] | None = None
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
        if self.mm_patch_merge_type == "spatial_unpad" and self.mm_vision_select_feature == "cls_patch":
            # LLaVA views each tile's tokens as a P x P grid; 1 + P*P tokens are not one (its code fails there).
            raise ConfigError("mm_vision_select_feature 'cls_patch' cannot go with mm_patch_merge_type "
                              "'spatial_unpad' (the CLS token does not fit the tile's patch grid)")
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
        pre = self.preprocess
        if pre["crop_size"] != tile:
            raise ConfigError(f"image preprocessing crops to {pre['crop_size']} px but the vision tower takes "
                              f"{tile} px images (vision_config image_size)")
        if pre["shortest_edge"] < pre["crop_size"]:
            raise ConfigError(f"image preprocessing resizes to {pre['shortest_edge']} px, below its "
                              f"{pre['crop_size']} px crop")

    # ---- derived sizes ----------------------------------------------------------------------
    @property
    def tile_size(self) -> int:
        """Side of one CLIP input tile in pixels (336 for PULSE)."""
        return int(self.vision_config["image_size"])

    @property
    def preprocess(self) -> dict[str, Any]:
        """image_mean, image_std, shortest_edge, crop_size the image path uses."""
        if self.image_preprocess is not None:
            missing = [k for k in ("image_mean", "image_std", "shortest_edge", "crop_size") if k not in self.image_preprocess]
            if missing:
                raise ConfigError(f"image_preprocess lacks {missing}")
            return preprocess_from_processor_dict(
                {"size": self.image_preprocess["shortest_edge"], "crop_size": self.image_preprocess["crop_size"],
                 "image_mean": self.image_preprocess["image_mean"], "image_std": self.image_preprocess["image_std"]})
        return {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "shortest_edge": self.tile_size,
                "crop_size": self.tile_size}

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
    def from_original_dict(cls, d: dict[str, Any], checkpoint_dir: str | Path | None = None) -> "PulseConfig":
        """Parse an original LLaVA ``config.json`` dict (Llama keys + mm_* keys); the vision tower
        comes from ``resolve_vision_tower`` (``checkpoint_dir``: where relative tower folders lie)."""
        tower = resolve_vision_tower(d, checkpoint_dir)
        d = dict(d)
        pinpoints = d.pop("image_grid_pinpoints", None)
        if isinstance(pinpoints, str):  # some LLaVA configs store the list as a Python literal
            import ast

            pinpoints = ast.literal_eval(pinpoints)
        vision_tower = d.pop("mm_vision_tower", None) or d.pop("vision_tower", None)
        d.pop("vision_config", None)
        d.pop("image_preprocess", None)
        vision_config = tower.vision_config
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
            raise ConfigError(f"mm_hidden_size {hidden} != vision hidden size {vision_config['hidden_size']} "
                              f"(vision config from {tower.config_from})")
        return cls(text_config=text_config, vision_config=dict(vision_config), mm_vision_tower=vision_tower,
                   image_preprocess=tower.image_preprocess, extra=d, **kwargs)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PulseConfig":
        """Parse a checkpoint's config.json (relative tower folders are looked up beside it too)."""
        return cls.from_original_dict(json.loads(Path(path).read_text()), checkpoint_dir=Path(path).parent)

    def to_original_dict(self) -> dict[str, Any]:
        """The original-format config.json content (plus our ``vision_config`` and
        ``image_preprocess`` keys, so a checkpoint reads the same without its tower folder)."""
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
            image_preprocess=self.preprocess,
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
