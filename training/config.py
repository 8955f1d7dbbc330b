"""The recipe's configuration: one typed dataclass, read from YAML plus `key=value` overrides.

Key names follow PULSE's / LLaVA's training script (`model_name_or_path`, `data_path`,
`image_folder`, `model_max_length`, `mm_patch_merge_type`, `unfreeze_mm_vision_tower`,
`mm_vision_tower_lr`, `group_by_modality_length`, ...) so a PULSE launch line translates
one to one. Unknown keys are an error with the closest valid name suggested: a typo in a
7B run's config must fail before the model loads, not be ignored for 10 hours.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# Accepted values of the enumerated options (validated in `TrainConfig.validate`).
MERGE_TYPES: tuple[str, ...] = ("flat", "spatial_unpad")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "flash_attention_2", "sdpa", "eager")
RESUME_AUTO: str = "auto"  # resume_from_checkpoint=auto: the newest checkpoint-N in output_dir, if any
IMAGE_CHECKS: tuple[str, ...] = ("open", "exists", "none")

# Keys of PULSE's launch script that are fixed by the checkpoint or by this recipe: reported as
# such (rather than "unknown") so a pasted PULSE command line gets a useful answer.
FIXED_PULSE_KEYS: dict[str, str] = {
    "version": "the conversation template is always llava_v1 (pulse_models.conversation)",
    "vision_tower": "read from the checkpoint's config.json (mm_vision_tower)",
    "mm_projector_type": "read from the checkpoint's config.json (mlp2x_gelu)",
    "mm_vision_select_layer": "read from the checkpoint's config.json (-2)",
    "mm_use_im_start_end": "read from the checkpoint's config.json (false)",
    "mm_use_im_patch_token": "read from the checkpoint's config.json (false)",
    "image_aspect_ratio": "read from the checkpoint's config.json (anyres)",
    "lazy_preprocess": "preprocessing is always lazy (images are read per step)",
    "evaluation_strategy": "the recipe does not evaluate during training (use `ecgbench` on a checkpoint)",
    "per_device_eval_batch_size": "the recipe does not evaluate during training",
    "group_by_length": "use group_by_modality_length (PULSE's name; every ECGInstruct record has an image)",
    "warmup_steps": "use warmup_ratio (PULSE's name); it is passed to transformers as a float warmup_steps",
}


@dataclass
class TrainConfig:
    """Every option of `ecgbench-train`; the YAML files in training/configs set them."""

    # --- model ---
    model_name_or_path: str = ""  # original LLaVA-format or HF llava_next checkpoint folder / hub id
    mm_patch_merge_type: str | None = "flat"  # flat (PULSE) or spatial_unpad (LLaVA-1.6); None keeps the checkpoint's
    unfreeze_mm_vision_tower: bool = False  # PULSE froze CLIP; true trains it too
    mm_vision_tower_lr: float | None = None  # CLIP's own lr when unfrozen (None: learning_rate)
    attn_implementation: str = "auto"  # auto: flash_attention_2 when flash-attn is installed, else sdpa
    model_max_length: int = 4096  # merged (text + image) tokens; longer records are skipped, not truncated

    # --- data ---
    data_path: str = ""  # LLaVA JSON/JSONL file, or a hub dataset id (e.g. PULSE-ECG/ECGInstruct)
    image_folder: str = ""  # root of the records' relative image paths
    hub_split: str = "train"  # split read when data_path is a hub dataset id
    image_check: str = "open"  # start-up check: open (read the header), exists (stat only), none
    max_records: int | None = None  # use only the first N records (smoke runs, debugging)
    dataloader_num_workers: int = 4  # image decoding + anyres tiling off the training process

    # --- optimisation (PULSE: global batch 128 = 8 GPUs x 2 x 8) ---
    output_dir: str = "runs/pulse-7b"
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 2
    # Samples per optimizer step over all GPUs; accumulation = global / (world size x per-device batch).
    global_batch_size: int | None = None
    # None: derived from global_batch_size (1 without one); a value wins, with a warning if the global batch changes.
    gradient_accumulation_steps: int | None = None
    learning_rate: float = 2e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03  # fraction of the optimizer steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42

    # --- efficiency ---
    bf16: bool = True
    tf32: bool = True  # TF32 matmuls on Ampere+; ignored without CUDA
    gradient_checkpointing: bool = True
    gradient_checkpointing_every: int = 1  # 1: every decoder layer (PULSE); N: layers 0, N, 2N, ... (less re-computation)
    compile_layers: bool = False  # regional torch.compile of each decoder layer (fuses norms, SiLU gate, adds)
    compile_backend: str = "inductor"  # torch.compile backend for compile_layers
    group_by_modality_length: bool = True  # batches of similar length (less padding)
    deepspeed: str | None = "zero2.json"  # a file in training/configs or a path; None: plain DDP
    throughput_log_steps: int = 10  # samples/s, tokens/s, MFU every N optimizer steps
    peak_tflops: float | None = None  # per-device peak for MFU; None: looked up from the GPU name

    # --- logging and checkpoints ---
    logging_steps: int = 1
    save_strategy: str = "steps"
    save_steps: int = 1000
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None  # a checkpoint-N folder, or "auto" (newest in output_dir)
    report_to: str = "none"

    def validate(self) -> None:
        """Raise ValueError on values that would only fail later (or silently do the wrong thing)."""
        if self.mm_patch_merge_type is not None and self.mm_patch_merge_type not in MERGE_TYPES:
            raise ValueError(f"mm_patch_merge_type={self.mm_patch_merge_type!r}: expected one of {MERGE_TYPES}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={self.attn_implementation!r}: expected one of {ATTN_IMPLEMENTATIONS}")
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"image_check={self.image_check!r}: expected one of {IMAGE_CHECKS}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio}: expected a fraction in [0, 1)")
        for name in ("global_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected 1 or more")
        if self.gradient_checkpointing_every < 1:
            raise ValueError(f"gradient_checkpointing_every={self.gradient_checkpointing_every}: expected 1 or more")
        if self.mm_vision_tower_lr is not None and not self.unfreeze_mm_vision_tower:
            raise ValueError("mm_vision_tower_lr is set but the vision tower is frozen: set unfreeze_mm_vision_tower=true")
        for name in ("model_name_or_path", "data_path", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required (set it in the YAML or as {name}=...)")


@dataclass(frozen=True)
class BatchPlan:
    """How many samples one optimizer step sees, and how that number came about."""

    global_batch_size: int  # world_size x per_device_train_batch_size x gradient_accumulation_steps
    world_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    derived: bool  # True: accumulation computed from global_batch_size; False: given explicitly
    warning: str | None = None  # set when an explicit accumulation changes the configured global batch

    def describe(self) -> str:
        how = "derived from global_batch_size" if self.derived else "gradient_accumulation_steps as given"
        return (f"effective global batch {self.global_batch_size} = {self.world_size} processes x "
                f"{self.per_device_train_batch_size} per device x {self.gradient_accumulation_steps} "
                f"accumulation steps ({how})")


def plan_batch(global_batch_size: int | None, world_size: int, per_device: int,
               gradient_accumulation_steps: int | None) -> BatchPlan:
    """Gradient accumulation from the global batch, as PULSE's launch script computes it.

    An explicit ``gradient_accumulation_steps`` wins (the warning says when the global batch then
    differs from ``global_batch_size``); without either, accumulation is 1. ValueError when the
    global batch is not a multiple of world_size x per_device."""
    if world_size < 1 or per_device < 1:
        raise ValueError(f"world size {world_size} and per-device batch {per_device} must be 1 or more")
    per_step = world_size * per_device
    if gradient_accumulation_steps is not None:
        effective = per_step * gradient_accumulation_steps
        warning = None
        if global_batch_size is not None and effective != global_batch_size:
            warning = (f"gradient_accumulation_steps={gradient_accumulation_steps} overrides global_batch_size="
                       f"{global_batch_size}: the global batch is now {effective} ({world_size} x {per_device} x "
                       f"{gradient_accumulation_steps}); drop the override to keep {global_batch_size}")
        return BatchPlan(effective, world_size, per_device, gradient_accumulation_steps, False, warning)
    if global_batch_size is None:
        return BatchPlan(per_step, world_size, per_device, 1, False)
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a multiple of {world_size} processes x {per_device} "
            f"per device = {per_step}: change per_device_train_batch_size or global_batch_size, or set "
            "gradient_accumulation_steps=N explicitly")
    return BatchPlan(global_batch_size, world_size, per_device, global_batch_size // per_step, True)


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or command-line value to the field's type.

    PyYAML reads `2e-5` as a string (YAML 1.1 floats need a dot) and overrides arrive as
    strings, so both go through here.
    """
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            return None
        annotation = next(a for a in args if a is not type(None))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = typing.get_args(annotation)[0]
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected {getattr(annotation, '__name__', annotation)}") from None
    return value


def _unknown_key_error(key: str, where: str) -> ValueError:
    if key in FIXED_PULSE_KEYS:
        return ValueError(f"{key} ({where}) is not a recipe option: {FIXED_PULSE_KEYS[key]}")
    close = difflib.get_close_matches(key, list(_field_types()), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown config key {key!r} ({where}){hint}")


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["learning_rate=1e-5", "output_dir=/x"]` -> dict (values stay strings, typed later)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        out[key.strip().lstrip("-")] = value
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, else a file shipped in pulse_training/configs (`tiny.yaml`, `zero2.json`)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    shipped = resources.files("pulse_training") / "configs" / str(path)
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(f"config {path}: not a file and not one of the shipped configs in pulse_training/configs")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config, apply overrides, coerce types, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(resolve_config_path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of option: value")
        raw.update({k: (v, str(path)) for k, v in loaded.items()})
    raw.update({k: (v, "command line") for k, v in (overrides or {}).items()})
    types_by_name = _field_types()
    values: dict[str, Any] = {}
    for key, (value, where) in raw.items():
        if key not in types_by_name:
            raise _unknown_key_error(key, where)
        values[key] = _coerce(key, value, types_by_name[key])
    config = TrainConfig(**values)
    config.validate()
    return config


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict (saved with the run as run_config.yaml)."""
    return dataclasses.asdict(config)
