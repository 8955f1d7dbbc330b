"""The transformers config class vLLM gets for ``model_type: llava_llama`` (original LLaVA-1.6).

vLLM reads config.json through ``AutoConfig``; this class parses the flat original dict with
``PulseConfig.from_original_dict`` (the reader the ``pulse`` adapter uses: the tower config and
preprocessing from ``mm_vision_tower`` via ``resolve_vision_tower``, every switch validated) and
exposes what vLLM's LLaVA-NeXT parts read: ``text_config`` (LlamaConfig), ``vision_config``
(CLIPVisionConfig), ``vision_feature_layer``, ``vision_feature_select_strategy``,
``image_token_index`` and ``image_grid_pinpoints``. The original dict is kept in
``original_config`` (``pulse_config()`` rebuilds the PulseConfig from it in any process).

Imports transformers only (vLLM's plugin loader imports it in every process).
"""

from __future__ import annotations

from typing import Any

try:  # transformers 5 name; 4.x spelled it PretrainedConfig
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover
    from transformers import PretrainedConfig as _BaseConfig

from pulse_models.configuration import (
    ORIGINAL_ARCHITECTURE,
    ORIGINAL_MODEL_TYPE,
    ConfigError,
    PulseConfig,
)

# Keys transformers adds to a config dict that are not part of the checkpoint's config.json.
_HF_INTERNAL_KEYS = ("_name_or_path", "name_or_path", "transformers_version", "_commit_hash",
                     "_attn_implementation_autoset", "return_unused_kwargs", "original_config",
                     "checkpoint_dir")


def _pulse_from(original: dict[str, Any], checkpoint_dir: str | None) -> PulseConfig:
    cfg = PulseConfig.from_original_dict(original, checkpoint_dir=checkpoint_dir)
    if cfg.mm_projector_type != "mlp2x_gelu":
        raise ConfigError(f"mm_projector_type {cfg.mm_projector_type!r}: the vLLM path implements LLaVA-1.6's "
                          "mlp2x_gelu projector only; use --model pulse for this checkpoint")
    return cfg


class PulseLlavaVllmConfig(_BaseConfig):
    """An original LLaVA-1.6 config.json, shaped for vLLM's LLaVA-NeXT model parts."""

    model_type = ORIGINAL_MODEL_TYPE
    # There is no meaningful default instance (the config is the checkpoint's): transformers then
    # skips building one to diff against.
    has_no_defaults_at_init = True

    def __init__(self, **kwargs: Any) -> None:
        checkpoint_dir = kwargs.pop("checkpoint_dir", None) or kwargs.get("_name_or_path") or kwargs.get("name_or_path")
        original = kwargs.pop("original_config", None)
        blank = not kwargs and not original
        if original is None:
            original = {k: v for k, v in kwargs.items() if k not in _HF_INTERNAL_KEYS}
        for key in ("text_config", "vision_config", "image_token_index", "vision_feature_layer",
                    "vision_feature_select_strategy", "projector_hidden_act", "multimodal_projector_bias"):
            kwargs.pop(key, None)  # derived below (a re-created config carries them from to_dict)
        kwargs.setdefault("architectures", [ORIGINAL_ARCHITECTURE])
        super().__init__(**kwargs)
        self.original_config = dict(original)
        self.checkpoint_dir = str(checkpoint_dir) if checkpoint_dir else None
        if blank:
            return  # the blank instance transformers builds to diff against defaults
        pulse = _pulse_from(self.original_config, self.checkpoint_dir)
        self.text_config = pulse.llama_config()
        self.vision_config = pulse.clip_config()
        self.vision_feature_layer = pulse.mm_vision_select_layer
        # "patch" drops CLIP's CLS token ("default" in vLLM/transformers), "cls_patch" keeps it ("full").
        self.vision_feature_select_strategy = "default" if pulse.mm_vision_select_feature == "patch" else "full"
        # The image placeholder id: one past the vocabulary, so no text token can ever be taken for
        # it (vLLM masks out-of-vocabulary multimodal ids before the embedding lookup).
        self.image_token_index = int(pulse.text_config["vocab_size"])
        self.image_grid_pinpoints = pulse.image_grid_pinpoints
        self.mm_patch_merge_type = pulse.mm_patch_merge_type
        self.projector_hidden_act = "gelu"  # mlp2x_gelu: Linear, GELU, Linear
        self.multimodal_projector_bias = True
        self.tie_word_embeddings = bool(pulse.text_config.get("tie_word_embeddings", False))

    def pulse_config(self) -> PulseConfig:
        """The PulseConfig this config was read as (validated again; cheap)."""
        return _pulse_from(self.original_config, self.checkpoint_dir)
