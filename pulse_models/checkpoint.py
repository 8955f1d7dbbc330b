"""The ORIGINAL LLaVA checkpoint format on disk (PULSE-7B): weight names, files, writing (safetensors only).

Reading a checkpoint (hub download, format detection, building the model) is
``pulse_models.loading``; this module holds what both reading and writing need:
    FORMAT_ORIGINAL / FORMAT_HF, CheckpointFormatError (the message names what was found)
    original_to_module_key(name) / module_to_original_key(name)   weight-name mapping
    ours_to_hf_key(name) / hf_to_ours_key(name)   the same for transformers' llava_next (HF) layout;
        SELECT_TO_HF: mm_vision_select_feature <-> vision_feature_select_strategy
    weight_files(folder) -> [safetensors file]   (the index's shards, else every *.safetensors)
    original_tokenizer_defaults(tokenizer_config)   the original LlamaTokenizer's add_bos_token,
        add_eos_token, legacy for what tokenizer_config.json leaves out
    save_original_format(model, tokenizer, out_dir, max_shard_bytes=..., extra_tensors=None) -> Path

Weight names in the original format:
    model.embed_tokens.*, model.layers.N.*, model.norm.*, lm_head.*          (Llama)
    model.mm_projector.0/2.{weight,bias}                                    (projector)
    model.vision_tower.vision_tower.vision_model.*                          (CLIP)
    model.image_newline                                                     (spatial_unpad)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT_ORIGINAL = "llava_original"
FORMAT_HF = "hf"
# Shard size for saving: 5 GB, the size LLaVA/transformers use for 7B checkpoints.
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
SAFE_INDEX = "model.safetensors.index.json"
_VISION_PREFIX = "model.vision_tower.vision_tower."
_PROJECTOR_PREFIX = "model.mm_projector."
_NEWLINE = "model.image_newline"
# What the original code's slow LlamaTokenizer (transformers 4.x, use_fast=False) does when
# tokenizer_config.json omits the key: BOS added, no EOS, legacy handling of text after special tokens.
ORIGINAL_TOKENIZER_DEFAULTS = {"add_bos_token": True, "add_eos_token": False, "legacy": True}
# Written by LLaVA's pretrain stage (projector only, no language model): a torch pickle.
PROJECTOR_ONLY_FILE = "mm_projector.bin"


class CheckpointFormatError(ValueError):
    """A path that is not a checkpoint we can load; the message names what was found."""


# ---- name mapping ------------------------------------------------------------------------------
# transformers 5 CLIPVisionModel holds embeddings/encoder directly (older versions under "vision_model.").
_CLIP_INNER = "vision_model."


def original_to_module_key(name: str, clip_has_vision_model: bool = False) -> str | None:
    """Original checkpoint name -> PulseLlavaForCausalLM parameter name (None: not ours)."""
    if name.startswith(_VISION_PREFIX):
        rest = name[len(_VISION_PREFIX):]
        if not clip_has_vision_model and rest.startswith(_CLIP_INNER):
            rest = rest[len(_CLIP_INNER):]
        return "vision_tower." + rest
    if name.startswith(_PROJECTOR_PREFIX):
        return "mm_projector." + name[len(_PROJECTOR_PREFIX):]
    if name == _NEWLINE:
        return "image_newline"
    if name.startswith("lm_head.") or name.startswith("model."):
        return "language_model." + name
    return None


def module_to_original_key(name: str) -> str:
    """PulseLlavaForCausalLM parameter name -> original checkpoint name."""
    if name.startswith("vision_tower."):
        rest = name[len("vision_tower."):]
        if not rest.startswith(_CLIP_INNER):
            rest = _CLIP_INNER + rest
        return _VISION_PREFIX + rest
    if name.startswith("mm_projector."):
        return _PROJECTOR_PREFIX + name[len("mm_projector."):]
    if name == "image_newline":
        return _NEWLINE
    if name.startswith("language_model."):
        return name[len("language_model."):]
    raise KeyError(f"parameter {name!r} has no original-format name")


# Parameter renames, ours (PulseLlavaForCausalLM) -> transformers 5 LlavaNextForConditionalGeneration.
OURS_TO_HF: tuple[tuple[str, str], ...] = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("image_newline", "model.image_newline"),
)
# LLaVA's mm_vision_select_feature <-> HF's vision_feature_select_strategy.
SELECT_TO_HF: dict[str, str] = {"patch": "default", "cls_patch": "full"}


def ours_to_hf_key(name: str) -> str:
    """PulseLlavaForCausalLM parameter name -> llava_next (HF) parameter name."""
    for ours, hf in OURS_TO_HF:
        if name.startswith(ours):
            return hf + name[len(ours):]
    raise KeyError(f"parameter {name!r} has no llava_next name")


def hf_to_ours_key(name: str) -> str | None:
    """llava_next (HF) parameter name -> PulseLlavaForCausalLM parameter name (None: not ours)."""
    for ours, hf in OURS_TO_HF:
        if name.startswith(hf):
            return ours + name[len(hf):]
    return None


# ---- files -----------------------------------------------------------------------------------
def weight_files(p: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (the index's shards, else every *.safetensors)."""
    index = p / SAFE_INDEX
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [p / n for n in names]
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise CheckpointFormatError(f"{p} has no *.safetensors weight files")
    return files


def original_tokenizer_defaults(tokenizer_config: dict[str, Any]) -> dict[str, Any]:
    """The switches the original code's slow ``LlamaTokenizer`` assumes when a checkpoint's
    tokenizer_config.json leaves them out (transformers 5's tokenizer would add no BOS and use
    legacy=False instead): only the keys the file lacks."""
    return {k: v for k, v in ORIGINAL_TOKENIZER_DEFAULTS.items() if k not in tokenizer_config}


# ---- saving ------------------------------------------------------------------------------------
def save_original_format(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    extra_tensors: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, safetensors shard(s) (+ index) with original names, tokenizer files
    (including the SentencePiece tokenizer.model) and generation_config.json.

    ``model`` may be wrapped (DDP/DeepSpeed ``.module``); only rank-0 callers should call this.
    ``extra_tensors`` adds raw original-name tensors (tests use it to mimic PULSE's unused
    ``model.image_newline``)."""
    from safetensors.torch import save_file

    inner = getattr(model, "module", model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Any] = {}
    for name, t in inner.state_dict().items():
        if name.endswith(".position_ids") or "rotary_emb" in name:
            continue  # non-weights (buffers) are rebuilt at load time
        tensors[module_to_original_key(name)] = t.detach().to("cpu").contiguous()
    for name, t in (extra_tensors or {}).items():
        tensors.setdefault(name, t.detach().to("cpu").contiguous())
    if tensors.get("lm_head.weight") is not None and tensors.get("model.embed_tokens.weight") is not None:
        if tensors["lm_head.weight"].data_ptr() == tensors["model.embed_tokens.weight"].data_ptr():
            tensors["lm_head.weight"] = tensors["lm_head.weight"].clone()  # safetensors refuses shared storage
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    for old in list(out.glob("model*.safetensors")) + [out / SAFE_INDEX]:
        old.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata={"format": "pt"})
            for name, t in shard.items():
                weight_map[name] = fname
                total += t.numel() * t.element_size()
        (out / SAFE_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                 indent=2))
    cfg = inner.config.to_original_dict()
    cfg["torch_dtype"] = str(next(inner.parameters()).dtype).replace("torch.", "")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    lm_cfg = inner.language_model.config
    gen = {"bos_token_id": lm_cfg.bos_token_id, "eos_token_id": lm_cfg.eos_token_id,
           "pad_token_id": lm_cfg.pad_token_id, "max_length": inner.config.tokenizer_model_max_length}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    _save_tokenizer(tokenizer, out)
    return out


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    """tokenizer.save_pretrained plus the SentencePiece tokenizer.model LLaVA tools need."""
    if tokenizer is None:
        logger.warning("save_original_format: no tokenizer given; %s has weights and config only", out)
        return
    sp_model = tokenizer.init_kwargs.get("vocab_file") or getattr(tokenizer, "vocab_file", None)
    src_dir = Path(getattr(tokenizer, "name_or_path", "") or ".")
    if (out / "tokenizer.model").exists() and not sp_model:
        sp_model = str(out / "tokenizer.model")
    tokenizer.save_pretrained(out)
    _keep_tokenizer_switches(tokenizer, out / "tokenizer_config.json")
    candidate = Path(sp_model) if sp_model else src_dir / "tokenizer.model"
    if candidate.exists() and candidate.resolve() != (out / "tokenizer.model").resolve():
        shutil.copyfile(candidate, out / "tokenizer.model")
    if not (out / "tokenizer.model").exists():
        logger.warning("no SentencePiece tokenizer.model found to copy; original LLaVA tools need one")


def _keep_tokenizer_switches(tokenizer: Any, cfg_file: Path) -> None:
    """Write add_bos_token/add_eos_token/legacy into tokenizer_config.json: transformers 5's
    save_pretrained leaves them out, and a reader of tokenizer.model alone (the original code,
    or us) would otherwise fall back to other defaults (no BOS in transformers 5, legacy=True
    in the original code)."""
    if not cfg_file.is_file():
        return
    cfg = json.loads(cfg_file.read_text())
    for key in ORIGINAL_TOKENIZER_DEFAULTS:
        value = getattr(tokenizer, key, None)
        if isinstance(value, bool) and key not in cfg:
            cfg[key] = value
    cfg_file.write_text(json.dumps(cfg, indent=2))
