"""Read and write ORIGINAL-format LLaVA checkpoints (PULSE-7B) with safetensors only.

Public API (stable, used by training/ and the adapter):
    detect_format(path) -> "llava_original" | "hf"     (CheckpointFormatError naming what was found)
    resolve_checkpoint_dir(path_or_hub_id, trust_remote_code=False) -> Path   (hub: *.py only when trusted)
    load_pulse(path, dtype="float16", device=None, device_map=None, attn_implementation="sdpa")
        -> (model, tokenizer, image_processor, config)
    load_original_tokenizer(path, config=None)   the tokenizer, with the original LlamaTokenizer's
        defaults (add_bos_token, add_eos_token, legacy) for what tokenizer_config.json leaves out
    save_original_format(model, tokenizer, out_dir, max_shard_bytes=..., extra_tensors=None) -> Path
    original_to_module_key(name) / module_to_original_key(name)   weight-name mapping
    LoadReport (model.load_report after load_pulse): unused and filled-in weights

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse_models.configuration import ORIGINAL_MODEL_TYPE, PulseConfig, local_tower_dir

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
# Files from a checkpoint worth copying when re-saving (the tokenizer's SentencePiece model etc.).
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


class CheckpointFormatError(ValueError):
    """A path that is not a checkpoint we can load; the message names what was found."""


@dataclass
class LoadReport:
    unused: list[str] = field(default_factory=list)  # checkpoint tensors the model does not use
    vision_tower_from: str = "checkpoint"  # or the mm_vision_tower id/path it was loaded from
    files: list[str] = field(default_factory=list)  # safetensors files read


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


# ---- format detection --------------------------------------------------------------------------
# What a checkpoint needs from the hub: configs, safetensors weights, tokenizer, chat templates.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja")
# The repo's own modelling/processing code: fetched only with trust_remote_code (it will be run).
REMOTE_CODE_PATTERNS = ("*.py",)
# Pickled PyTorch weights: fetched only for repos without safetensors; transformers reads them
# with torch.load(weights_only=True) (tensors only, no code runs) or refuses them.
PICKLE_PATTERNS = ("*.bin",)


def pickled_weights_hint(path: str | Path) -> str:
    """What to do with a checkpoint whose weights are only pickled ``*.bin`` files."""
    return (f"convert {path}'s *.bin weights to safetensors, e.g. per file: python -c \"import torch; "
            "from safetensors.torch import save_file; save_file(torch.load('pytorch_model.bin', weights_only=True), "
            "'model.safetensors', metadata={'format': 'pt'})\" (sharded: one call per shard, and rename the index "
            "to model.safetensors.index.json with .safetensors file names); if weights_only=True refuses a file, "
            "it holds more than tensors: load it with weights_only=False only if you trust its source")


def pickled_weights_error(path: str | Path, exc: BaseException) -> CheckpointFormatError:
    """The error for *.bin weights that torch.load(weights_only=True) refused (no code was run)."""
    reason = next((line for line in str(exc).splitlines() if "GLOBAL" in line), type(exc).__name__)
    return CheckpointFormatError(f"{path}: its pickled *.bin weights hold more than tensors and were not loaded "
                                 f"(torch.load weights_only=True: {reason.strip()}); {pickled_weights_hint(path)}")


def resolve_checkpoint_dir(path: str | Path, trust_remote_code: bool = False, weights: bool = True) -> Path:
    """A local directory, or a hub id downloaded: configs, safetensors, tokenizer files; the repo's
    ``*.py`` code with ``trust_remote_code``; ``*.bin`` weights only when it has no safetensors.
    ``weights=False`` fetches configs and tokenizer only (a data check needs no 14 GB download)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointFormatError(f"{p} is a file, not a checkpoint directory")
    text = str(path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise CheckpointFormatError(f"checkpoint directory {text!r} does not exist")
    patterns = list(HUB_PATTERNS) + (list(REMOTE_CODE_PATTERNS) if trust_remote_code else [])
    if not weights:
        patterns = [p for p in patterns if p != "*.safetensors"]
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(text, allow_patterns=patterns))
        if weights and not any(local.glob("*.safetensors")):
            logger.info("%s ships no safetensors; fetching its *.bin weights (loaded with weights_only=True)", text)
            local = Path(snapshot_download(text, allow_patterns=patterns + list(PICKLE_PATTERNS)))
        return local
    except Exception as exc:
        raise CheckpointFormatError(f"{text!r} is not a local directory and the hub download failed: {exc}") from exc


def detect_format(path: str | Path, weights: bool = True) -> str:
    """"llava_original" (LLaVA repository format) or "hf" (transformers image-text-to-text)."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointFormatError(f"checkpoint directory {p} does not exist")
    cfg_path = p / "config.json"
    found = sorted(x.name for x in p.iterdir())[:12]
    if not cfg_path.exists():
        raise CheckpointFormatError(f"{p} has no config.json (found: {found})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointFormatError(f"{cfg_path} is not valid JSON: {exc}") from exc
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type == ORIGINAL_MODEL_TYPE or "mm_vision_tower" in cfg or "LlavaLlamaForCausalLM" in archs:
        if model_type not in (ORIGINAL_MODEL_TYPE, "llama", None):
            raise CheckpointFormatError(
                f"{p}: original LLaVA checkpoint with model_type {model_type!r} (architectures {archs}); "
                f"only the Llama variant ({ORIGINAL_MODEL_TYPE}, prompts in the llava_v1 or vicuna_v1 template) is "
                "supported: other text models (llava_mistral with its mistral_instruct template, llava_mpt, ...) "
                "are not implemented; use the transformers conversion of the model (e.g. "
                "llava-hf/llava-v1.6-mistral-7b-hf) with --model pulse, which reads HF checkpoints"
            )
        if not weights:  # configs and tokenizer only (resolve_checkpoint_dir(weights=False))
            return FORMAT_ORIGINAL
        if not list(p.glob("*.safetensors")) and (p / PROJECTOR_ONLY_FILE).is_file():
            raise CheckpointFormatError(
                f"{p}: holds {PROJECTOR_ONLY_FILE} and no language model weights, the output of LLaVA's pretrain "
                "(projector-only) stage; the original code loads it only with --model-base <the LLM>. We do not "
                "merge it: evaluate the finetuned checkpoint, or train from the base checkpoint instead"
            )
        if not list(p.glob("*.safetensors")):
            hint = pickled_weights_hint(p) if list(p.glob("*.bin")) else "weights are only read from safetensors"
            raise CheckpointFormatError(
                f"{p}: original LLaVA config but no *.safetensors weights (found: {found}); {hint}"
            )
        return FORMAT_ORIGINAL
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        hf_types = set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    except Exception:  # pragma: no cover - very old/new transformers
        hf_types = {"llava", "llava_next", "llava_onevision"}
    if model_type in hf_types:
        return FORMAT_HF
    raise CheckpointFormatError(
        f"{p}: unknown checkpoint format (model_type {model_type!r}, architectures {archs}, files {found}); "
        f"expected an original LLaVA checkpoint (model_type {ORIGINAL_MODEL_TYPE!r}) or a transformers "
        "image-text-to-text model"
    )


# ---- loading -----------------------------------------------------------------------------------
def _dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype {dtype!r} not in {sorted(names)}")
    return names[dtype]


def _device(device: Any, device_map: Any) -> Any:
    """One device for the whole model (no multi-GPU sharding): device_map 'auto' = cuda:0 if present."""
    import torch

    choice = device if device not in (None, "") else device_map
    if isinstance(choice, dict):
        raise ValueError("dict device_map is not supported: the model loads on one device")
    if choice in (None, "", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _weight_files(p: Path) -> list[Path]:
    index = p / SAFE_INDEX
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [p / n for n in names]
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise CheckpointFormatError(f"{p} has no *.safetensors weight files")
    return files


def load_pulse(
    path: str | Path,
    dtype: Any = "float16",
    device: Any = None,
    device_map: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any, Any, PulseConfig]:
    """Load an original-format checkpoint -> (PulseLlavaForCausalLM in eval mode, tokenizer,
    ImageProcessor, PulseConfig). The vision tower comes from the checkpoint, else from
    ``config.mm_vision_tower`` (hub id or local CLIP directory)."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import GenerationConfig

    from pulse_models.image_processing import ImageProcessor
    from pulse_models.modeling import PulseLlavaForCausalLM

    p = resolve_checkpoint_dir(path)
    fmt = detect_format(p)
    if fmt != FORMAT_ORIGINAL:
        raise CheckpointFormatError(f"{p} is a {fmt!r} checkpoint; load_pulse reads the original LLaVA format")
    if attn_implementation == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ImportError("attn_implementation=flash_attention_2 needs flash-attn: pip install 'ecgbench-lmms[flash]'")
    config = PulseConfig.from_json_file(p / "config.json")
    torch_dtype, dev = _dtype(dtype), _device(device, device_map)
    with init_empty_weights(include_buffers=False):
        model = PulseLlavaForCausalLM(config, attn_implementation=attn_implementation)
    wanted = dict(model.named_parameters())
    clip_nested = hasattr(model.vision_tower, "vision_model")
    report = LoadReport()
    state: dict[str, Any] = {}
    for f in _weight_files(p):
        report.files.append(f.name)
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            for name in sf.keys():
                key = original_to_module_key(name, clip_nested)
                if key is None or key not in wanted:
                    report.unused.append(name)
                    continue
                state[key] = sf.get_tensor(name).to(device=dev, dtype=torch_dtype)
    missing = [k for k in wanted if k not in state]
    vision_missing = [k for k in missing if k.startswith("vision_tower.")]
    other_missing = [k for k in missing if not k.startswith("vision_tower.")]
    tie = bool(config.text_config.get("tie_word_embeddings", False))
    if tie and "language_model.lm_head.weight" in other_missing:
        other_missing.remove("language_model.lm_head.weight")
        state["language_model.lm_head.weight"] = state["language_model.model.embed_tokens.weight"]
    if other_missing:
        hint = ""
        if (p / PROJECTOR_ONLY_FILE).is_file() and any(k.startswith("mm_projector.") for k in other_missing):
            hint = (f"; {PROJECTOR_ONLY_FILE} beside them is not read (a pickle the original code loads only with "
                    "--model-base): save the projector's tensors into the safetensors under model.mm_projector.*")
        raise CheckpointFormatError(f"{p}: weights missing from the checkpoint: {other_missing[:8]}"
                                    f"{' ...' if len(other_missing) > 8 else ''}{hint}")
    if vision_missing and len(vision_missing) != sum(k.startswith("vision_tower.") for k in wanted):
        raise CheckpointFormatError(f"{p}: vision tower only partly present; missing {vision_missing[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    if vision_missing:
        from transformers import CLIPVisionModel

        local = local_tower_dir(config.mm_vision_tower, p)  # the folder resolve_vision_tower read
        source = str(local) if local else config.mm_vision_tower
        logger.info("vision tower not in checkpoint; loading it from %s", source)
        tower = CLIPVisionModel.from_pretrained(source, dtype=torch_dtype,
                                                attn_implementation=model.vision_tower.config._attn_implementation)
        model.vision_tower = tower.to(dev)
        model.vision_tower.requires_grad_(False)
        report.vision_tower_from = source
    model.to(dev)
    if report.unused:
        logger.info("unused checkpoint weights (expected e.g. model.image_newline with flat merging): %s",
                    report.unused[:8])
    gen_cfg = p / "generation_config.json"
    if gen_cfg.exists():
        gen = GenerationConfig.from_pretrained(p)
        # LLaVA configs carry max_length = model length; every call here sets max_new_tokens, and
        # transformers warns on each call when both are set. Keep the library default instead.
        gen.max_length = GenerationConfig().max_length
        model.language_model.generation_config = gen
    model.eval()
    model.load_report = report
    tokenizer = load_original_tokenizer(p, config)
    return model, tokenizer, ImageProcessor(config), config


def original_tokenizer_defaults(tokenizer_config: dict[str, Any]) -> dict[str, Any]:
    """The switches the original code's slow ``LlamaTokenizer`` assumes when a checkpoint's
    tokenizer_config.json leaves them out (transformers 5's tokenizer would add no BOS and use
    legacy=False instead): only the keys the file lacks."""
    return {k: v for k, v in ORIGINAL_TOKENIZER_DEFAULTS.items() if k not in tokenizer_config}


def load_original_tokenizer(path: str | Path, config: PulseConfig | None = None) -> Any:
    """The tokenizer of an original-format checkpoint, read with the original code's defaults for
    what its tokenizer_config.json does not say (``original_tokenizer_defaults``)."""
    from transformers import AutoTokenizer

    p = Path(path)
    cfg_file = p / "tokenizer_config.json"
    try:
        tok_cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise CheckpointFormatError(f"{cfg_file} is not valid JSON: {exc}") from exc
    defaults = original_tokenizer_defaults(tok_cfg)
    if defaults:
        logger.info("%s sets no %s; using the original LlamaTokenizer's %s", cfg_file, sorted(defaults), defaults)
    # config= keeps AutoTokenizer from parsing our llava_llama config.json (a misleading warning).
    llama = (config or PulseConfig.from_json_file(p / "config.json")).llama_config()
    return AutoTokenizer.from_pretrained(p, config=llama, **defaults)


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
