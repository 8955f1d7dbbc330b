"""The one model factory: a checkpoint (folder or hub id) -> a model ready to answer questions.

    loaded = load_model("PULSE-ECG/PULSE-7B", dtype=None, device="cuda:0")   # -> LoadedModel
    item = loaded.engine.prepare([("What is the rhythm?", None)], loaded.engine.process_image(image))
    (out,) = loaded.engine.generate([item], GenSettings())

Every reader of a checkpoint comes here: the lmms-eval adapter (``pulse_models.adapter``, which
adds only lmms-eval's interface), `ecgbench ask` and Studio's Ask tab (``pulse_models.ask``), the
training recipe (``load_trainable``, ``load_tokenizer_and_config``, ``choose_attn``), export
(``load_pulse`` on CPU, ``load_hf_as_pulse``) and the vLLM plugin (``resolve_checkpoint_dir``,
``load_original_tokenizer``, ``tower_source``). Each rule is written once, here, in the order a
load takes them:

    check_options      dtype / conv_template / arena_history / attn_implementation names and the
                       flash-attn check (``require_attn``; no torch imported); ``choose_attn``
                       turns the recipe's "auto" into flash_attention_2 or sdpa
    locate             resolve_checkpoint_dir (a hub id is downloaded: configs, safetensors,
                       tokenizer; the repo's *.py only with trust_remote_code; *.bin only for repos
                       without safetensors) + detect_format -> Checkpoint(path, format)
    choose_device      one device for the whole model (no sharding)
    load_pulse         original LLaVA format -> PulseLlavaForCausalLM, tokenizer, ImageProcessor
    _load_hf           transformers image-text-to-text -> model and processor (safetensors; *.bin
                       weights only through transformers' weights_only load)
    load_model         all of the above, plus the engine (llava_v1 / vicuna_v1 / chat template)
    load_trainable     either format -> PulseLlavaForCausalLM on CPU (the recipe's model: an HF
                       llava_next folder through ``load_hf_as_pulse``), tokenizer, Checkpoint

torch and transformers are imported inside the functions that need them: ``check_options`` and
``locate`` of a local folder run without them (`ecgbench ask` checks its input before importing
torch). Weights are read from safetensors only; remote code runs only with trust_remote_code.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pulse_models.checkpoint import (
    FORMAT_HF,
    FORMAT_ORIGINAL,
    PROJECTOR_ONLY_FILE,
    SELECT_TO_HF,
    CheckpointFormatError,
    hf_to_ours_key,
    original_to_module_key,
    original_tokenizer_defaults,
    weight_files,
)
from pulse_models.configuration import (
    ORIGINAL_MODEL_TYPE,
    TOWER_PREPROCESSOR_FILE,
    PulseConfig,
    local_tower_dir,
    preprocess_from_processor_dict,
)

logger = logging.getLogger(__name__)

# ---- options ---------------------------------------------------------------------------------
# The names users give (`--model pulse` model_args, `ecgbench ask`/`studio` flags).
DTYPES = ("float16", "bfloat16", "float32", "auto")
CONV_TEMPLATES = ("auto", "llava_v1", "vicuna_v1", "chat_template")
HISTORY_MODES = ("standard", "reference")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
# The dtype the original format loads in when none (or "auto") is asked: the paper's.
ORIGINAL_DEFAULT_DTYPE = "float16"
FLASH_ATTN_INSTALL = "pip install 'ecgbench-lmms[flash]'"


def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable (found, not imported: it pulls in CUDA)."""
    return importlib.util.find_spec("flash_attn") is not None


def require_attn(attn_implementation: str) -> None:
    """ImportError with the install hint when flash_attention_2 is asked and flash-attn is missing."""
    if attn_implementation == "flash_attention_2" and not flash_attn_installed():
        raise ImportError(f"pulse: attn_implementation=flash_attention_2 needs flash-attn ({FLASH_ATTN_INSTALL}); "
                          "use sdpa otherwise")


def choose_attn(requested: str, cuda: bool | None = None) -> str:
    """The attention a training run uses: "auto" -> flash_attention_2 where the model runs on CUDA
    (``cuda``; None: whether CUDA is available) and flash-attn is installed, else sdpa (with a
    warning naming the install when CUDA is there); any other name as given."""
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        if flash_attn_installed():
            return "flash_attention_2"
        logger.warning("flash-attn is not installed (%s): using sdpa", FLASH_ATTN_INSTALL)
    return "sdpa"


def check_options(dtype: str | None = None, conv_template: str = "auto", arena_history: str = "standard",
                  attn_implementation: str = "sdpa") -> None:
    """ValueError (ImportError for a missing flash-attn) naming the first option out of range."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"pulse: dtype {dtype!r} not in {DTYPES}")
    if conv_template not in CONV_TEMPLATES:
        raise ValueError(f"pulse: conv_template {conv_template!r} not in {CONV_TEMPLATES}")
    if arena_history not in HISTORY_MODES:
        raise ValueError(f"pulse: arena_history must be standard or reference, not {arena_history!r}")
    require_attn(attn_implementation)


def _check_template_for_format(conv_template: str, fmt: str) -> None:
    if fmt == FORMAT_ORIGINAL and conv_template == "chat_template":
        raise ValueError("pulse: the original LLaVA format has no chat template; use conv_template=llava_v1")
    if fmt != FORMAT_ORIGINAL and conv_template == "vicuna_v1":
        raise ValueError("pulse: conv_template=vicuna_v1 is for original LLaVA checkpoints; HF models take "
                         "auto, chat_template or llava_v1")


# ---- where the checkpoint is and what it is ---------------------------------------------------
class NotACheckpoint(CheckpointFormatError):
    """``locate`` found no checkpoint to read (a wrong path, a failed download, an unknown or
    unsupported layout): nothing was loaded, the input is what to fix. Errors while loading a
    located checkpoint (missing weights, pickled weights) are plain CheckpointFormatErrors."""


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
        raise NotACheckpoint(f"{p} is a file, not a checkpoint directory")
    text = str(path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise NotACheckpoint(f"checkpoint directory {text!r} does not exist")
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
        raise NotACheckpoint(f"{text!r} is not a local directory and the hub download failed: {exc}") from exc


def detect_format(path: str | Path, weights: bool = True) -> str:
    """"llava_original" (LLaVA repository format) or "hf" (transformers image-text-to-text)."""
    p = Path(path)
    if not p.is_dir():
        raise NotACheckpoint(f"checkpoint directory {p} does not exist")
    cfg_path = p / "config.json"
    found = sorted(x.name for x in p.iterdir())[:12]
    if not cfg_path.exists():
        raise NotACheckpoint(f"{p} has no config.json (found: {found})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise NotACheckpoint(f"{cfg_path} is not valid JSON: {exc}") from exc
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type == ORIGINAL_MODEL_TYPE or "mm_vision_tower" in cfg or "LlavaLlamaForCausalLM" in archs:
        if model_type not in (ORIGINAL_MODEL_TYPE, "llama", None):
            raise NotACheckpoint(
                f"{p}: original LLaVA checkpoint with model_type {model_type!r} (architectures {archs}); "
                f"only the Llama variant ({ORIGINAL_MODEL_TYPE}, prompts in the llava_v1 or vicuna_v1 template) is "
                "supported: other text models (llava_mistral with its mistral_instruct template, llava_mpt, ...) "
                "are not implemented; use the transformers conversion of the model (e.g. "
                "llava-hf/llava-v1.6-mistral-7b-hf) with --model pulse, which reads HF checkpoints"
            )
        if not weights:  # configs and tokenizer only (resolve_checkpoint_dir(weights=False))
            return FORMAT_ORIGINAL
        if not list(p.glob("*.safetensors")) and (p / PROJECTOR_ONLY_FILE).is_file():
            raise NotACheckpoint(
                f"{p}: holds {PROJECTOR_ONLY_FILE} and no language model weights, the output of LLaVA's pretrain "
                "(projector-only) stage; the original code loads it only with --model-base <the LLM>. We do not "
                "merge it: evaluate the finetuned checkpoint, or train from the base checkpoint instead"
            )
        if not list(p.glob("*.safetensors")):
            hint = pickled_weights_hint(p) if list(p.glob("*.bin")) else "weights are only read from safetensors"
            raise NotACheckpoint(
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
    raise NotACheckpoint(
        f"{p}: unknown checkpoint format (model_type {model_type!r}, architectures {archs}, files {found}); "
        f"expected an original LLaVA checkpoint (model_type {ORIGINAL_MODEL_TYPE!r}) or a transformers "
        "image-text-to-text model"
    )



class Checkpoint(NamedTuple):
    """A local checkpoint folder and its format (FORMAT_ORIGINAL or FORMAT_HF)."""

    path: Path
    format: str


def locate(path: str | Path | Checkpoint, trust_remote_code: bool = False, weights: bool = True) -> Checkpoint:
    """The checkpoint folder (a hub id downloaded) and its format; a Checkpoint is returned as is,
    so a caller that located it once passes it on without a second resolution."""
    if isinstance(path, Checkpoint):
        return path
    folder = resolve_checkpoint_dir(path, trust_remote_code=trust_remote_code, weights=weights)
    return Checkpoint(folder, detect_format(folder, weights=weights))


# ---- dtype and device ------------------------------------------------------------------------
_DTYPE_NAMES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
                "bf16": "bfloat16", "float32": "float32", "fp32": "float32", "float": "float32"}


def torch_dtype(dtype: Any) -> Any:
    """A torch.dtype from a torch.dtype or a name (float16/fp16/half, bfloat16/bf16, float32/fp32/float)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r} not in {sorted(_DTYPE_NAMES)}")
    return getattr(torch, _DTYPE_NAMES[dtype])


def choose_device(device: Any = None, device_map: Any = None) -> Any:
    """One device for the whole model (no multi-GPU sharding): ``device_map`` if given, else
    ``device``; none or "auto" = cuda (the current CUDA device) if present, else cpu."""
    import torch

    choice = device_map if device_map not in (None, "") else device
    if isinstance(choice, dict):
        raise ValueError("dict device_map is not supported: the model loads on one device")
    if choice in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


# ---- original LLaVA format -------------------------------------------------------------------
@dataclass
class LoadReport:
    unused: list[str] = field(default_factory=list)  # checkpoint tensors the model does not use
    vision_tower_from: str = "checkpoint"  # or the mm_vision_tower id/path it was loaded from
    files: list[str] = field(default_factory=list)  # safetensors files read


def tower_source(config: PulseConfig, checkpoint_dir: str | Path) -> str:
    """Where the CLIP weights come from when the checkpoint lacks them: the local folder
    ``mm_vision_tower`` names (as written or beside the checkpoint), else the hub id itself."""
    local = local_tower_dir(config.mm_vision_tower, checkpoint_dir)  # the folder resolve_vision_tower read
    return str(local) if local else config.mm_vision_tower


def load_pulse(
    path: str | Path | Checkpoint,
    dtype: Any = ORIGINAL_DEFAULT_DTYPE,
    device: Any = None,
    device_map: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Any, Any, PulseConfig]:
    """Load an original-format checkpoint (a folder, hub id or ``locate``'s Checkpoint) ->
    (PulseLlavaForCausalLM in eval mode, tokenizer, ImageProcessor, PulseConfig). The vision
    tower comes from the checkpoint, else from ``tower_source`` (hub id or local CLIP directory)."""
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import GenerationConfig

    from pulse_models.image_processing import ImageProcessor
    from pulse_models.modeling import PulseLlavaForCausalLM

    p, fmt = locate(path)
    if fmt != FORMAT_ORIGINAL:
        raise CheckpointFormatError(f"{p} is a {fmt!r} checkpoint; load_pulse reads the original LLaVA format")
    require_attn(attn_implementation)
    config = PulseConfig.from_json_file(p / "config.json")
    weights_dtype, dev = torch_dtype(dtype), choose_device(device, device_map)
    with init_empty_weights(include_buffers=False):
        model = PulseLlavaForCausalLM(config, attn_implementation=attn_implementation)
    wanted = dict(model.named_parameters())
    clip_nested = hasattr(model.vision_tower, "vision_model")
    report = LoadReport()
    state: dict[str, Any] = {}
    for f in weight_files(p):
        report.files.append(f.name)
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            for name in sf.keys():
                key = original_to_module_key(name, clip_nested)
                if key is None or key not in wanted:
                    report.unused.append(name)
                    continue
                state[key] = sf.get_tensor(name).to(device=dev, dtype=weights_dtype)
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

        source = tower_source(config, p)
        logger.info("vision tower not in checkpoint; loading it from %s", source)
        tower = CLIPVisionModel.from_pretrained(source, dtype=weights_dtype,
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


# ---- transformers llava_next onto our model (the recipe's start from an HF checkpoint) ----------
# HF conventions that differ from LLaVA's: grid pinpoints are (height, width); the projector is
# multi_modal_projector.linear_1/linear_2 (the name mapping is pulse_models.checkpoint's).
_HF_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act", "bos_token_id",
                 "eos_token_id", "pad_token_id", "tie_word_embeddings", "rope_theta", "rope_parameters")
_HF_VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                   "patch_size", "projection_dim", "hidden_act", "layer_norm_eps", "num_channels")


def pulse_config_from_hf(path_or_config: Any) -> PulseConfig:
    """PulseConfig of an HF llava_next checkpoint folder (or LlavaNextConfig); CheckpointFormatError
    for another model type. A folder's preprocessor_config.json gives the image resize/crop/mean/std."""
    from transformers import AutoConfig

    hf = path_or_config
    preprocess = None
    if isinstance(path_or_config, (str, Path)):
        hf = AutoConfig.from_pretrained(path_or_config)
        processor_file = Path(path_or_config) / TOWER_PREPROCESSOR_FILE
        if processor_file.is_file():  # the exported resize/crop/mean/std (training reads images with them)
            preprocess = preprocess_from_processor_dict(json.loads(processor_file.read_text()))
    if hf.model_type != "llava_next":
        raise CheckpointFormatError(
            f"model_type {hf.model_type!r}: only llava_next (LLaVA-1.6) HF checkpoints are supported")
    select = {v: k for k, v in SELECT_TO_HF.items()}[hf.vision_feature_select_strategy]
    text = hf.text_config.to_dict()
    vision = hf.vision_config.to_dict()
    return PulseConfig(
        text_config={k: text[k] for k in _HF_TEXT_KEYS if text.get(k) is not None},
        vision_config={k: vision[k] for k in _HF_VISION_KEYS if k in vision},
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=int(hf.vision_feature_layer),
        mm_vision_select_feature=select,
        image_aspect_ratio="anyres",
        image_grid_pinpoints=[[w, h] for h, w in hf.image_grid_pinpoints],  # back to (width, height)
        mm_patch_merge_type="spatial_unpad",
        image_preprocess=preprocess,
    )


def load_hf_as_pulse(path: str | Path | Checkpoint, dtype: Any = "float32",
                     attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """(PulseLlavaForCausalLM on CPU, vision tower frozen; tokenizer) from an HF llava_next
    checkpoint (a folder, hub id or ``locate``'s Checkpoint): transformers reads the files (any of
    its key layouts), then the parameters are renamed onto the shared definition."""
    from transformers import AutoTokenizer, LlavaNextForConditionalGeneration

    from pulse_models.modeling import PulseLlavaForCausalLM

    p, fmt = locate(path)
    if fmt != FORMAT_HF:
        raise CheckpointFormatError(f"{p} is a {fmt!r} checkpoint; load_hf_as_pulse reads HF llava_next")
    require_attn(attn_implementation)
    weights_dtype = torch_dtype(dtype)
    hf_model = LlavaNextForConditionalGeneration.from_pretrained(p, dtype=weights_dtype)
    config = pulse_config_from_hf(hf_model.config)
    model = PulseLlavaForCausalLM(config, attn_implementation=attn_implementation).to(weights_dtype)
    state = {}
    for name, tensor in hf_model.state_dict().items():
        ours = hf_to_ours_key(name)
        if ours is not None:
            state[ours] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointFormatError(f"{p}: HF weights do not map onto the model (missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]})")
    model.freeze_vision_tower(True)
    return model, AutoTokenizer.from_pretrained(p)


class Trainable(NamedTuple):
    """A checkpoint loaded for training: PulseLlavaForCausalLM on CPU and its tokenizer."""

    checkpoint: Checkpoint
    model: Any
    tokenizer: Any


def load_trainable(path: str | Path | Checkpoint, dtype: Any = "float32",
                   attn_implementation: str = "sdpa") -> Trainable:
    """The recipe's model from either format, located once: the original LLaVA format through
    ``load_pulse``, an HF llava_next folder through ``load_hf_as_pulse``. On CPU: the Trainer /
    DeepSpeed moves it, so every rank's GPU peak stays low until then."""
    found = locate(path)
    if found.format == FORMAT_HF:
        model, tokenizer = load_hf_as_pulse(found, dtype=dtype, attn_implementation=attn_implementation)
    else:
        model, tokenizer, _processor, _config = load_pulse(found, dtype=dtype, device="cpu",
                                                           attn_implementation=attn_implementation)
    return Trainable(found, model, tokenizer)


def load_tokenizer_and_config(path: str | Path | Checkpoint) -> tuple[Any, PulseConfig, Checkpoint]:
    """(tokenizer, PulseConfig, Checkpoint) of either format without its weights (a hub id is
    fetched without them): what the recipe's data scan needs before the model loads."""
    from transformers import AutoTokenizer

    found = locate(path, weights=False)
    if found.format == FORMAT_HF:
        return AutoTokenizer.from_pretrained(found.path), pulse_config_from_hf(found.path), found
    config = PulseConfig.from_json_file(found.path / "config.json")
    return load_original_tokenizer(found.path, config), config, found


# ---- transformers image-text-to-text ---------------------------------------------------------
def _load_hf(path: Path, dtype: str, device: Any, attn_implementation: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, processor) of an HF checkpoint; pickled *.bin weights
    that torch.load(weights_only=True) refuses are a CheckpointFormatError saying what to convert."""
    import pickle

    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype if dtype == "auto" else torch_dtype(dtype), attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        ).to(device).eval()
    except pickle.UnpicklingError as exc:  # *.bin weights: transformers' weights_only load refused them
        raise pickled_weights_error(path, exc) from exc
    return model, AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)


# ---- the factory -----------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A checkpoint loaded for answering: ``engine`` prepares prompts and images and generates
    (``pulse_models.engine``); ``tokenizer`` is the text tokenizer, ``config`` the PulseConfig
    (original format) or the transformers config, ``max_length`` the merged prompt limit."""

    checkpoint: Checkpoint
    model: Any
    tokenizer: Any
    config: Any
    engine: Any
    max_length: int | None
    device: Any

    @property
    def format(self) -> str:
        return self.checkpoint.format

    @property
    def path(self) -> Path:
        return self.checkpoint.path


def load_model(
    checkpoint: str | Path | Checkpoint,
    dtype: str | None = None,
    attn_implementation: str = "sdpa",
    device: Any = None,
    device_map: Any = None,
    conv_template: str = "auto",
    arena_history: str = "standard",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """The model, tokenizer/processor and engine of a checkpoint, as `--model pulse` loads it.

    ``dtype``: None or "auto" = float16 for the original format, transformers' "auto" for HF
    models. ``conv_template``: auto = llava_v1 for the original format, the processor's chat
    template for HF models (llava_v1 forces the LLaVA layout there; vicuna_v1 is original-only).
    ``arena_history``: the llava_v1 multi-turn layout. Options are checked, and a folder
    located (NotACheckpoint otherwise), before torch is imported."""
    check_options(dtype, conv_template, arena_history, attn_implementation)
    found = locate(checkpoint, trust_remote_code=trust_remote_code)  # NotACheckpoint names what was found
    _check_template_for_format(conv_template, found.format)
    dev = choose_device(device, device_map)  # torch from here on
    from pulse_models.engine import HFEngine, OriginalEngine

    if found.format == FORMAT_ORIGINAL:
        model, tokenizer, image_processor, config = load_pulse(
            found, dtype=dtype if dtype not in (None, "auto") else ORIGINAL_DEFAULT_DTYPE, device=dev,
            attn_implementation=attn_implementation,
        )
        engine: Any = OriginalEngine(model, tokenizer, image_processor, history_mode=arena_history,
                                     conv_template="llava_v1" if conv_template == "auto" else conv_template)
        return LoadedModel(found, model, tokenizer, config, engine, config.tokenizer_model_max_length, dev)
    model, processor = _load_hf(found.path, dtype or "auto", dev, attn_implementation, trust_remote_code)
    if conv_template == "llava_v1":
        processor.chat_template = None  # HFEngine then uses the llava_v1 layout
    engine = HFEngine(model, processor, history_mode=arena_history)
    return LoadedModel(found, model, processor.tokenizer, model.config, engine,
                       getattr(processor.tokenizer, "model_max_length", None), dev)
