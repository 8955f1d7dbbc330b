"""Fine-tune LLaVA-1.6 on ECGInstruct (the PULSE recipe): `ecgbench-train --config FILE [key=value ...]`.

One file, read top to bottom: `setup_model` -> `setup_data` -> `setup_trainer` -> `train` ->
`save`. The step loop is transformers' Trainer driving DeepSpeed (ZeRO-2 by default, as PULSE);
this file adds only what the Trainer cannot know:

- the model is the project's one LLaVA-1.6 definition (`pulse_models`), not a `PreTrainedModel`,
  so the loss is read from its output (its LM head run only where a supervised token is
  predicted: ``logits="supervised"``) and checkpoints are written in the ORIGINAL LLaVA format
  (`pulse_models.checkpoint.save_original_format`), which the `pulse` adapter loads as is (the
  model is built by the same loader, `pulse_models.loading`);
- batches carry throughput counters that are popped before the forward pass and turned into
  samples/s, tokens/s and MFU by `throughput.ThroughputCallback` (never in the step loop);
- length grouping uses the merged (text + image) lengths the start-up data scan computed;
- an unfrozen vision tower may get its own learning rate.

Launch lines (one node, several nodes, CPU smoke run) are in the configs' headers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .config import (
    RESUME_AUTO,
    BatchPlan,
    TrainConfig,
    load_config,
    parse_overrides,
    plan_batch,
    resolve_config_path,
    to_dict,
)

logger = logging.getLogger("pulse_training")

DEEPSPEED_HINT = "DeepSpeed is needed for deepspeed=...: pip install 'ecgbench-lmms[train]' (or set deepspeed=null)"


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgbench-train",
        description="Fine-tune LLaVA-1.6 on ECGInstruct with DeepSpeed (the PULSE recipe).",
        epilog="Overrides use the config's key names, e.g. learning_rate=1e-5 output_dir=runs/x. "
               "Training data: `ecgbench-train data fetch --out DIR` downloads and extracts ECGInstruct, "
               "`ecgbench-train data check DIR` checks and indexes it (see `ecgbench-train data --help`).",
    )
    parser.add_argument("--config", required=True, help="YAML file, or a shipped one: pulse_7b.yaml, tiny.yaml")
    parser.add_argument(
        "--inspect",
        type=int,
        metavar="N",
        default=None,
        help="print the first N records after preprocessing as JSON lines {id, input_ids, labels} and exit",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    # `deepspeed --module` / torch.distributed.launch pass --local_rank; the env var carries the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:  # `ecgbench-train data fetch|check ...`; every other line is a training run
        from .data_cli import main as data_main

        return data_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
    except (ValueError, FileNotFoundError) as exc:
        print(f"ecgbench-train: {exc}", file=sys.stderr)
        return 2
    if args.inspect is not None:
        return inspect(config, args.inspect)
    try:
        batch_plan(config)  # a global batch the launch cannot reach fails before anything loads
    except ValueError as exc:
        print(f"ecgbench-train: {exc}", file=sys.stderr)
        return 2
    train(config)
    close_process_group()
    return 0


# --------------------------------------------------------------------------- setup


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup_tokenizer_and_model_config(config: TrainConfig) -> tuple[Any, Any]:
    """Tokenizer and PulseConfig (merge type and max length as configured) without loading weights
    (either checkpoint format: ``pulse_models.loading.load_tokenizer_and_config``)."""
    from pulse_models.loading import load_tokenizer_and_config

    tokenizer, pulse_config, _checkpoint = load_tokenizer_and_config(config.model_name_or_path)
    if config.mm_patch_merge_type is not None:
        pulse_config.mm_patch_merge_type = config.mm_patch_merge_type
    pulse_config.tokenizer_model_max_length = config.model_max_length
    pulse_config.validate()
    return tokenizer, pulse_config


def apply_merge_type(model: Any, merge_type: str | None, checkpoint_dir: Path) -> None:
    """Switch the model to the configured merge type after loading.

    spatial_unpad needs `image_newline`: taken from the checkpoint when it ships one (PULSE-7B
    does, unused under flat), else initialised as LLaVA does (randn / sqrt(hidden)).
    """
    if merge_type is None or merge_type == model.config.mm_patch_merge_type:
        return
    model.config.mm_patch_merge_type = merge_type
    if merge_type == "flat":
        model.image_newline = None
        return
    hidden = model.config.hidden_size
    weight = _read_tensor(checkpoint_dir, "model.image_newline")
    if weight is None:
        logger.warning("mm_patch_merge_type=spatial_unpad: no image_newline in the checkpoint, initialising it")
        weight = torch.randn(hidden) / hidden**0.5
    model.image_newline = torch.nn.Parameter(weight.to(model.dtype))


def _read_tensor(checkpoint_dir: Path, name: str) -> torch.Tensor | None:
    from safetensors import safe_open

    for f in sorted(checkpoint_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            if name in sf.keys():
                return sf.get_tensor(name)
    return None


def setup_model(config: TrainConfig, dtype: torch.dtype) -> tuple[Any, Any]:
    """The shared model definition from an original- or HF-format checkpoint, on CPU (the loader's
    ``load_trainable``: located and built in one call); CLIP frozen by default."""
    from pulse_models.loading import choose_attn, load_trainable

    attn = choose_attn(config.attn_implementation)
    (path, fmt), model, tokenizer = load_trainable(config.model_name_or_path, dtype=dtype, attn_implementation=attn)
    apply_merge_type(model, config.mm_patch_merge_type, path)
    model.config.tokenizer_model_max_length = config.model_max_length
    model.freeze_vision_tower(not config.unfreeze_mm_vision_tower)
    if config.gradient_checkpointing:
        # Enabled here, not via TrainingArguments: the Trainer only knows PreTrainedModel's hook names.
        model.gradient_checkpointing_enable({"use_reentrant": False}, every=config.gradient_checkpointing_every)
        logger.info("activation checkpointing: %d of %d decoder layers", len(model.checkpointed_layers),
                    len(model.language_model.model.layers))
    if config.compile_layers:
        # Regional compilation: one graph per decoder layer, compiled once and reused by all 32
        # (identical shapes and code), instead of one whole-model graph that the image splice breaks.
        for layer in model.language_model.model.layers:
            layer.compile(backend=config.compile_backend)
        logger.info("torch.compile (%s) of each decoder layer", config.compile_backend)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("model: %s (%s), attention %s, %.1fM/%.1fM parameters trainable", config.model_name_or_path, fmt,
                attn, trainable / 1e6, total / 1e6)
    return model, tokenizer


def scan_arguments(config: TrainConfig, tokenizer: Any, pulse_config: Any) -> tuple[dict[str, Any], str]:
    """`data.scan`'s keyword arguments (all picklable: `data check` sends them to pool workers) and
    the index key: everything the scan's result depends on. `ecgbench-train data check` and the
    recipe both call this, so an index one writes is the index the other finds."""
    from pulse_models.conversation import IMAGE_TOKEN_INDEX

    from . import data

    kwargs = {
        "image_folder": config.image_folder,
        "tokenize_fn": _Tokenize(tokenizer, config.model_max_length),
        "image_tokens_fn": _ImageTokens(pulse_config),
        "image_token_id": IMAGE_TOKEN_INDEX,
        "max_length": config.model_max_length,
        "image_check": config.image_check,
    }
    local = data.is_local_data(config.data_path)
    key = data.scan_key(
        data_path=str(Path(config.data_path).resolve()) if local else config.data_path, hub_split=config.hub_split,
        image_folder=str(Path(config.image_folder).resolve()) if config.image_folder else "",
        image_check=config.image_check, max_records=config.max_records, max_length=config.model_max_length,
        merge_type=pulse_config.mm_patch_merge_type, pinpoints=pulse_config.image_grid_pinpoints,
        tile=pulse_config.tile_size, tokenizer=[type(tokenizer).__name__, len(tokenizer)],
    )
    return kwargs, key


def setup_data(config: TrainConfig, tokenizer: Any, pulse_config: Any,
               stop_after_kept: int | None = None) -> tuple[Any, Any]:
    """Load the records, check every one once (skips counted), wrap the kept ones lazily."""
    from pulse_models.image_processing import ImageProcessor

    from . import data

    records = data.load_records(config.data_path, hub_split=config.hub_split, max_records=config.max_records)
    scan_kwargs, key = scan_arguments(config, tokenizer, pulse_config)
    if stop_after_kept is not None:
        kept, lengths, summary = data.scan(records, stop_after_kept=stop_after_kept, **scan_kwargs)
    else:
        kept, lengths, summary = _indexed_scan(config, records, scan_kwargs, key)
    dataset = data.InstructDataset(
        records,
        kept,
        lengths,
        image_folder=config.image_folder,
        tokenize_fn=scan_kwargs["tokenize_fn"],
        process_image_fn=_ProcessImage(ImageProcessor(pulse_config)),
    )
    return dataset, summary


# The scan's collective timeout assumes at most this long per record on a rank (0.82 ms measured
# on a warm page cache, docs/performance.md; x60 for cold network storage), and never less than
# torch.distributed's default 30 minutes.
SCAN_SECONDS_PER_RECORD_BOUND = 0.05
SCAN_MIN_TIMEOUT_S = 1800.0


def scan_timeout_s(records_per_rank: int) -> float:
    return max(SCAN_MIN_TIMEOUT_S, records_per_rank * SCAN_SECONDS_PER_RECORD_BOUND)


def _indexed_scan(config: TrainConfig, records: Any, scan_kwargs: dict[str, Any], key: str) -> Any:
    """The scan's result: a saved index with this key (the run folder's, then the one `data check`
    wrote beside the data), else a fresh scan split across the ranks, saved for next time.

    Rank 0 looks for the index and broadcasts where it is (every rank then reads it); without one,
    each rank scans its slice of the records and the slices are gathered on a gloo group whose
    timeout covers the slowest rank's slice, not the 30-minute default a 1.16M-record scan on
    rank 0 alone overran."""
    from . import data

    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    candidates = [Path(config.output_dir) / data.INDEX_FILE]
    beside_data = data.data_index_path(config.data_path, key)
    if beside_data is not None:
        candidates.append(beside_data)
    found: list[Any] = [None]
    if rank == 0:
        found[0] = next((str(p) for p in candidates if data.load_index(p, key) is not None), None)
    if distributed:
        dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        result = data.load_index(found[0], key)
        if result is None:  # rank 0 read it a moment ago: a filesystem that differs between nodes
            raise RuntimeError(f"rank {rank}: cannot read the data index {found[0]} that rank 0 found")
        logger.info("data: reusing the index %s (no scan)", found[0])
        if rank == 0 and Path(found[0]) != candidates[0]:
            data.save_index(candidates[0], key, *result)  # the run folder keeps what it trained on
        return result
    start, stop = data.slice_bounds(len(records), world, rank)
    logger.info("data: no index for these inputs, scanning %d records%s", len(records),
                f" on {world} ranks ({stop - start} each)" if distributed else "")
    if not distributed:
        result = data.scan(records, **scan_kwargs)
    else:
        import datetime

        timeout = scan_timeout_s(stop - start)
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
        part = data.scan([records[i] for i in range(start, stop)], offset=start, **scan_kwargs)
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, part, group=group)
        dist.destroy_process_group(group)
        result = data.merge_scans(parts)
    if rank == 0:
        for where in candidates:
            data.save_index(where, key, *result)
    return result


ECG_TYPICAL_SIZE: tuple[int, int] = (2200, 1700)  # a 12-lead printout's aspect; picks the 2x2 anyres grid


class _Tokenize:
    """Picklable `conversations -> (input_ids, labels, info)` for dataloader workers."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, conversations: list[dict]) -> tuple[list[int], list[int], dict]:
        from pulse_models.conversation import tokenize_conversation

        return tokenize_conversation(conversations, self.tokenizer, max_length=self.max_length)


class _ImageTokens:
    """Picklable `(width, height) | None -> image tokens`; without a header check (image_check=exists|none)
    the ECG-typical 2x2 grid is assumed."""

    def __init__(self, pulse_config: Any) -> None:
        self.pulse_config = pulse_config

    def __call__(self, size: tuple[int, int] | None) -> int:
        from pulse_models.image_processing import num_image_tokens

        return num_image_tokens(size or ECG_TYPICAL_SIZE, self.pulse_config)


class _ProcessImage:
    """Picklable `PIL image -> (pixels [1 + tiles, 3, T, T], (width, height))`."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Any) -> tuple[torch.Tensor, tuple[int, int]]:
        processed = self.processor.preprocess(image)
        return processed.pixel_values, tuple(processed.image_size)


def resolve_deepspeed(config: TrainConfig) -> dict | None:
    """The DeepSpeed JSON as a dict (a shipped name or a path); None for plain DDP."""
    if not config.deepspeed:
        return None
    try:
        import deepspeed  # noqa: F401
    except ImportError as exc:
        raise ImportError(DEEPSPEED_HINT) from exc
    ds_config = json.loads(resolve_config_path(config.deepspeed).read_text())
    if config.mm_vision_tower_lr is not None and "optimizer" in ds_config:
        raise ValueError(
            "mm_vision_tower_lr needs the Trainer's optimizer (per-group learning rates), but the DeepSpeed "
            f"config {config.deepspeed} builds its own from an 'optimizer' block: remove that block"
        )
    return ds_config


def _checkpointing_field(arguments_class: type) -> str:
    """TrainingArguments' name for the checkpointing switch: ``activation_checkpointing`` in recent
    transformers 5 releases, ``gradient_checkpointing`` before (5.17, on the GPU machines, has only that)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(arguments_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


BATCH_FILE = "batch.json"  # the run folder's record of the effective global batch and how it was reached


def batch_plan(config: TrainConfig) -> BatchPlan:
    """The batch plan for this launch: world size from WORLD_SIZE (set by torchrun/deepspeed; 1 alone)."""
    return plan_batch(config.global_batch_size, int(os.environ.get("WORLD_SIZE", "1")),
                      config.per_device_train_batch_size, config.gradient_accumulation_steps)


def training_arguments(config: TrainConfig, ds_config: dict | None, plan: BatchPlan | None = None) -> Any:
    """PULSE's hyper-parameters as transformers TrainingArguments."""
    from transformers import TrainingArguments
    from transformers.utils import is_torch_tf32_available

    tf32 = config.tf32 if is_torch_tf32_available() else None  # TF32 is an Ampere+ CUDA switch
    plan = plan or batch_plan(config)
    args = TrainingArguments(
        **{_checkpointing_field(TrainingArguments): False},  # enabled on the model itself in setup_model
        output_dir=config.output_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        bf16=config.bf16,
        tf32=tf32,
        deepspeed=ds_config,
        logging_steps=config.logging_steps,
        save_strategy=config.save_strategy,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        dataloader_num_workers=config.dataloader_num_workers,
        remove_unused_columns=False,  # batches hold images and counters, not model kwargs only
        train_sampling_strategy="group_by_length" if config.group_by_modality_length else "random",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    if args.world_size != plan.world_size:
        raise ValueError(f"WORLD_SIZE={plan.world_size} but the process group has {args.world_size} processes; "
                         "launch with torchrun or deepspeed so both agree")
    return args


def make_trainer_class() -> type:
    """The Trainer subclass (built lazily so importing this module stays light)."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from .throughput import StepCounts

    class PulseTrainer(Trainer):
        """Trainer + the four things the LLaVA-1.6 model needs (see the module docstring)."""

        # The model returns a per-micro-batch mean (as LLaVA's): the Trainer divides by accumulation.
        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, recipe_config: TrainConfig, tokenizer: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.recipe_config = recipe_config
            self.tokenizer = tokenizer
            self.step_counts = StepCounts()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.step_counts.add(inputs)  # pops the collator's counters
            # The LM head only where a supervised token is predicted: the same loss and gradients
            # without the fp32 logits of ~3000 image and prompt positions per sample.
            outputs = model(**inputs, logits="supervised")
            self.step_counts.add_head_tokens(outputs.logits.shape[0] * outputs.logits.shape[1])
            return (outputs.loss, outputs) if return_outputs else outputs.loss

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            # Lengths from the start-up scan: the default would decode every image to measure it.
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=dataset.lengths
            )

        def create_optimizer(self, model=None):
            lr = self.recipe_config.mm_vision_tower_lr
            if self.optimizer is not None or lr is None:
                return super().create_optimizer(model)
            opt_model = model if model is not None else self.model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups: dict[tuple[bool, bool], list] = {}
            for name, p in opt_model.named_parameters():
                if p.requires_grad:
                    groups.setdefault(("vision_tower" in name, name in decay), []).append(p)
            param_groups = [
                {
                    "params": params,
                    "weight_decay": self.args.weight_decay if is_decay else 0.0,
                    **({"lr": lr} if is_vision else {}),
                }
                for (is_vision, is_decay), params in groups.items()
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
            return self.optimizer

        def _save(self, output_dir=None, state_dict=None):
            """Original LLaVA format (config.json, safetensors, tokenizer): the `pulse` adapter loads it."""
            from pulse_models.checkpoint import save_original_format

            output_dir = output_dir or self.args.output_dir
            if not self.args.should_save:
                return
            # Under ZeRO-3 only the gathered state_dict holds whole weights; ZeRO-2 gives the same.
            model = self.model if state_dict is None else _StateDictView(self.model, state_dict)
            save_original_format(model, self.tokenizer, output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    return PulseTrainer


class _StateDictView:
    """The model as save_original_format reads it, with weights from a given state_dict."""

    def __init__(self, model: Any, state_dict: dict[str, torch.Tensor]) -> None:
        self._model = model
        self._state = {k.removeprefix("module."): v for k, v in state_dict.items()}
        self.config = model.config
        self.language_model = model.language_model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def parameters(self) -> Any:
        return iter(self._state.values())


# --------------------------------------------------------------------------- entry points


def _setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if _is_main_process() else logging.WARNING,
    )


def inspect(config: TrainConfig, n: int) -> int:
    """Print the first n kept records as JSON lines {id, input_ids, labels}; no model weights load."""
    _setup_logging()
    tokenizer, pulse_config = setup_tokenizer_and_model_config(config)
    dataset, summary = setup_data(config, tokenizer, pulse_config, stop_after_kept=n)
    print(summary.format() + " (scan stopped after the records shown)", file=sys.stderr)
    for i in range(min(n, len(dataset))):
        print(json.dumps(dataset.text_item(i)))
    return 0


def resolve_resume(config: TrainConfig) -> str | None:
    if config.resume_from_checkpoint != RESUME_AUTO:
        return config.resume_from_checkpoint
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
    logger.info("resume_from_checkpoint=auto: %s", last or "no checkpoint yet, starting fresh")
    return last


def train(config: TrainConfig) -> Any:
    """Set up, train, save. Returns the Trainer (tests read its state)."""
    from .data import Collator, write_summary
    from .throughput import FlopModel, ThroughputCallback, detect_peak_tflops

    _setup_logging()
    plan = batch_plan(config)  # before anything loads: a non-dividing global batch fails here
    if plan.warning and _is_main_process():
        logger.warning(plan.warning)
    ds_config = resolve_deepspeed(config)
    # TrainingArguments first: it initialises the process group DeepSpeed and the sampler use.
    args = training_arguments(config, ds_config, plan)
    if args.process_index == 0:
        print(plan.describe(), flush=True)
    dtype = torch.bfloat16 if config.bf16 else torch.float32

    model, tokenizer = setup_model(config, dtype)
    dataset, summary = setup_data(config, tokenizer, model.config)
    if args.should_save:
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_summary(summary, out)
        (out / "run_config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
        (out / BATCH_FILE).write_text(json.dumps(dataclasses.asdict(plan), indent=2) + "\n")
    if args.process_index == 0:
        print(summary.format(), flush=True)  # at start, not hours in: what was skipped and why
    if len(dataset) == 0:
        raise ValueError(f"no trainable records in {config.data_path} (see {config.output_dir}/data_summary.json)")

    trainer_cls = make_trainer_class()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=Collator(pad_token_id=_pad_id(tokenizer)),
        processing_class=None,  # a tokenizer here would make the Trainer edit PulseConfig as a HF config
        recipe_config=config,
        tokenizer=tokenizer,
    )
    peak = config.peak_tflops or detect_peak_tflops()
    trainer.add_callback(
        ThroughputCallback(trainer.step_counts, FlopModel.from_model(model), every=config.throughput_log_steps,
                           peak_tflops=peak)
    )
    trainer.train(resume_from_checkpoint=resolve_resume(config))
    trainer.save_model(config.output_dir)
    trainer.save_state()
    return trainer


def close_process_group() -> None:
    """Leave the process group together and destroy it while the interpreter is still whole.

    Without this every rank exits with its group alive, at its own moment (rank 0 is still saving
    when the others finish), and the group is torn down during interpreter finalization: gloo's
    worker threads still hold work objects (DDP's gradient all-reduces) whose tensors reference
    Python objects, and releasing them then can abort the process (SIGABRT, exit -6: seen once
    in the 2-process gloo test; PyTorch 2.14 registers no exit handler for it). A barrier first,
    so no rank destroys the group while another may still use it. Called after a successful run
    only: after a failure the launcher stops the other ranks."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
    logger.info("process group closed")


def _pad_id(tokenizer: Any) -> int:
    """LLaVA-1.6 vicuna pads with <unk> (id 0); fall back to it when the tokenizer has no pad."""
    for value in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if value is not None:
            return int(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
