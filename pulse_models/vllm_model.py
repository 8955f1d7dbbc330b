"""PULSE-7B / original LLaVA-1.6 checkpoints on vLLM (registered by pulse_models.vllm_plugin).

    PulseLlavaForVllm        vLLM's LLaVA-NeXT model with the original weight names, the
                             checkpoint's own mm_patch_merge_type (flat or spatial_unpad,
                             ``merge_tile_features``, shared with PulseLlavaForCausalLM) and the
                             tower from ``mm_vision_tower`` when the checkpoint lacks it
    PulseLlavaMultiModalProcessor   pixel values from our ImageProcessor (the ``pulse`` adapter's
                             preprocessing, bit for bit) and ``num_image_tokens`` placeholders
    PulseLlavaTokenizer      vLLM tokenizer mode ``pulse_llava``: ``load_original_tokenizer`` (the
                             original LlamaTokenizer defaults), LLaVA's per-chunk tokenisation
                             around ``<image>`` (``tokenize_with_image``) and the llava_v1 chat
                             template (``LLAVA_V1_CHAT_TEMPLATE``)

Needs vLLM (``pip install 'ecgbench-lmms[vllm]'``); imported by vLLM only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.model_executor.models.llava_next import LlavaNextForConditionalGeneration
from vllm.model_executor.models.utils import AutoWeightsLoader
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageProcessorItems, ImageSize, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.tokenizers.protocol import TokenizerLike

from pulse_models.checkpoint import original_to_module_key, weight_files
from pulse_models.configuration import PulseConfig
from pulse_models.conversation import (
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    llava_v1_chat_template,
    tokenize_with_image,
)
from pulse_models.image_processing import ImageProcessor, num_image_tokens
from pulse_models.loading import load_original_tokenizer, resolve_checkpoint_dir, tower_source
from pulse_models.modeling import merge_tile_features
from pulse_models.vllm_config import PulseLlavaVllmConfig

# Our module names (PulseLlavaForCausalLM) -> vLLM's LLaVA-NeXT module names.
_PROJECTOR_NAMES = {"mm_projector.0.": "multi_modal_projector.linear_1.",
                    "mm_projector.2.": "multi_modal_projector.linear_2."}


def vllm_weight_name(original_name: str) -> str | None:
    """An original checkpoint tensor name -> the vLLM parameter name (None: not a weight we use).
    Through ``original_to_module_key``, the name mapping the ``pulse`` loader uses."""
    key = original_to_module_key(original_name, clip_has_vision_model=True)
    if key is None:
        return None
    for ours, theirs in _PROJECTOR_NAMES.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key  # vision_tower.vision_model.*, image_newline, language_model.{model,lm_head}.*


# ---- processing ----------------------------------------------------------------------------------
class PulseLlavaProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> PulseLlavaVllmConfig:
        return self.ctx.get_hf_config(PulseLlavaVllmConfig)

    def pulse_config(self) -> PulseConfig:
        cfg = getattr(self, "_pulse_config", None)
        if cfg is None:
            cfg = self._pulse_config = self.get_hf_config().pulse_config()
        return cfg

    def image_processor(self) -> ImageProcessor:
        proc = getattr(self, "_image_processor", None)
        if proc is None:
            proc = self._image_processor = ImageProcessor(self.pulse_config())
        return proc

    def get_hf_processor(self, **kwargs: object) -> Any:
        raise NotImplementedError("original LLaVA checkpoints have no HF processor; images go through "
                                  "pulse_models.image_processing.ImageProcessor")

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return num_image_tokens((image_width, image_height), self.pulse_config())

    def get_image_size_with_most_features(self) -> ImageSize:
        cfg = self.pulse_config()
        sizes = cfg.grid_pinpoints_wh if cfg.image_aspect_ratio == "anyres" else [(cfg.tile_size, cfg.tile_size)]
        w, h = max(sizes, key=lambda wh: num_image_tokens(wh, cfg))
        return ImageSize(width=w, height=h)

    def get_max_image_tokens(self) -> int:
        size = self.get_image_size_with_most_features()
        return self.get_num_image_tokens(image_width=size.width, image_height=size.height)


class PulseLlavaDummyInputsBuilder(BaseDummyInputsBuilder[PulseLlavaProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int],
                          mm_options: Mapping[str, MultiModalDummyOptions] | None = None) -> Any:
        size = self.info.get_image_size_with_most_features()
        return {"image": self._get_dummy_images(width=size.width, height=size.height,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=(mm_options or {}).get("image"))}


class PulseLlavaMultiModalProcessor(BaseMultiModalProcessor[PulseLlavaProcessingInfo]):
    def _get_hf_mm_text(self, mm_counts: Mapping[str, int]) -> str | None:
        return None  # the prompt is tokenised by PulseLlavaTokenizer, not by a processor

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        images = hf_data.get("images") or []
        if not isinstance(images, (list, tuple)):
            images = [images]
        proc = self.info.image_processor()
        outs = [proc.preprocess(image) for image in images]
        return BatchFeature({
            "pixel_values": [o.pixel_values for o in outs],  # [1 + tiles, 3, T, T] each
            "image_sizes": torch.tensor([list(o.image_size) for o in outs], dtype=torch.long).reshape(-1, 2),
        })

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values": MultiModalFieldConfig.batched("image"),
                "image_sizes": MultiModalFieldConfig.batched("image", keep_on_cpu=True)}

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", ImageProcessorItems)
            size = images.get_image_size(item_idx)
            return [image_token_id] * self.info.get_num_image_tokens(image_width=size.width,
                                                                     image_height=size.height)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


# ---- model -------------------------------------------------------------------------------------
@MULTIMODAL_REGISTRY.register_processor(PulseLlavaMultiModalProcessor, info=PulseLlavaProcessingInfo,
                                        dummy_inputs=PulseLlavaDummyInputsBuilder)
class PulseLlavaForVllm(LlavaNextForConditionalGeneration):
    """LLaVA-1.6 as the original code runs it, on vLLM's CLIP, projector and Llama."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.pulse_config = self.config.pulse_config()
        self.checkpoint = vllm_config.model_config.model
        if self.pulse_config.mm_patch_merge_type != "spatial_unpad":
            del self.image_newline  # flat merging has none (PULSE-7B still ships an unused one)
            self.image_newline = None

    def _process_image_input(self, image_input: Any) -> list[torch.Tensor]:
        if image_input["type"] == "image_embeds":
            return image_input["data"]
        per_image = self._process_image_pixels(image_input)
        sizes = image_input["image_sizes"].tolist()
        return [merge_tile_features(feats, (int(w), int(h)), self.pulse_config, self.image_newline)
                for feats, (w, h) in zip(per_image, sizes)]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        seen_tower: list[bool] = [False]

        def mapped(items: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in items:
                key = vllm_weight_name(name)
                if key is None or (key == "image_newline" and self.image_newline is None):
                    continue  # e.g. PULSE-7B's unused model.image_newline with flat merging
                seen_tower[0] = seen_tower[0] or key.startswith("vision_tower.")
                yield key, tensor

        loaded = AutoWeightsLoader(self).load_weights(mapped(weights))
        if not seen_tower[0]:
            loaded |= AutoWeightsLoader(self).load_weights(self._tower_weights())
        return loaded

    def _tower_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The CLIP weights of ``mm_vision_tower`` (a local folder, or a hub id), as the original
        code loads them when the checkpoint does not hold the tower."""
        from safetensors import safe_open

        # The loader's rule for where the tower lies (a local folder, else the hub id, downloaded).
        folder = resolve_checkpoint_dir(tower_source(self.pulse_config, resolve_checkpoint_dir(self.checkpoint)))
        for f in weight_files(folder):
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for key in sf.keys():  # noqa: SIM118 - safe_open handles have keys(), no __iter__
                    # CLIPVisionModel / CLIPModel files: vision_model.* (text_model.* etc. not used)
                    if key.startswith("vision_model."):
                        yield "vision_tower." + key, sf.get_tensor(key)


# ---- tokenizer ---------------------------------------------------------------------------------
def image_prompt_ids(tokenizer: Any, text: str, add_special_tokens: bool, image_token_id: int) -> list[int]:
    """A prompt's ids as the original code builds them: ``tokenize_with_image`` (chunks around
    ``<image>`` tokenised on their own) with ``image_token_id`` where IMAGE_TOKEN_INDEX was. A
    leading BOS string (what a chat template writes) stands for the tokenizer's own BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        text, add_special_tokens = text[len(bos):], True
    ids = tokenize_with_image(text, tokenizer)
    if not add_special_tokens and ids and ids[0] == tokenizer.bos_token_id:
        ids = ids[1:]
    return [image_token_id if i == IMAGE_TOKEN_INDEX else i for i in ids]


def with_image_prompts(tokenizer: Any, image_token_id: int, source: str) -> Any:
    """``tokenizer`` whose ``__call__``/``encode`` tokenise prompts as ``image_prompt_ids``."""
    from transformers import BatchEncoding

    base = tokenizer.__class__
    bos = tokenizer.bos_token

    class PulseLlavaPromptTokenizer(base):  # type: ignore[misc, valid-type]
        def _ours(self, text: Any, args: tuple) -> bool:
            return isinstance(text, str) and not args and (IMAGE_TOKEN in text or bool(bos and text.startswith(bos)))

        def __call__(self, text: Any = None, *args: Any, add_special_tokens: bool = True, **kwargs: Any) -> Any:
            if not self._ours(text, args):
                return super().__call__(text, *args, add_special_tokens=add_special_tokens, **kwargs)
            ids = image_prompt_ids(self, text, add_special_tokens, image_token_id)
            enc: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if kwargs.get("return_offsets_mapping"):
                enc["offset_mapping"] = [(0, 0)] * len(ids)
            return BatchEncoding(enc)

        def encode(self, text: Any, *args: Any, add_special_tokens: bool = True, **kwargs: Any) -> Any:
            if not self._ours(text, args):
                return super().encode(text, *args, add_special_tokens=add_special_tokens, **kwargs)
            return image_prompt_ids(self, text, add_special_tokens, image_token_id)

        def __reduce__(self) -> Any:  # copy/pickle: the plain tokenizer, wrapped again on the other side
            plain = base.__new__(base)
            plain.__dict__.update(self.__dict__)
            return with_image_prompts, (plain, image_token_id, source)

    PulseLlavaPromptTokenizer.__name__ = f"PulseLlava{base.__name__}"
    tokenizer.__class__ = PulseLlavaPromptTokenizer
    return tokenizer


class PulseLlavaTokenizer(TokenizerLike):
    """vLLM tokenizer mode ``pulse_llava`` (see the module docstring)."""

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *args: Any, **kwargs: Any) -> Any:
        from vllm.tokenizers.hf import get_cached_tokenizer

        path = resolve_checkpoint_dir(path_or_repo_id)
        config = PulseLlavaVllmConfig.from_pretrained(path) if kwargs.get("config") is None else kwargs["config"]
        tokenizer = load_original_tokenizer(path, config.pulse_config())
        if kwargs.get("truncation_side"):
            tokenizer.truncation_side = kwargs["truncation_side"]
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = llava_v1_chat_template()
        image_token_id = int(config.image_token_index)
        if len(tokenizer) <= image_token_id:
            # vLLM refuses prompt ids above the tokenizer's largest id: "<image>" as an added special
            # token makes the placeholder id (one past the model's vocabulary) a known one.
            from transformers import AddedToken

            tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        tokenizer = with_image_prompts(tokenizer, image_token_id, str(path_or_repo_id))
        return get_cached_tokenizer(tokenizer)


__all__ = [
    "PulseLlavaForVllm",
    "PulseLlavaMultiModalProcessor",
    "PulseLlavaTokenizer",
    "image_prompt_ids",
    "vllm_weight_name",
]
