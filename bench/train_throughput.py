"""Training-step throughput of the PULSE recipe on one GPU: samples/s and MFU.

    python bench/train_throughput.py                      # recipe settings, 8-layer 7B-width model
    python bench/train_throughput.py --sweep              # the levers: micro-batch x checkpointing x compile
    python bench/train_throughput.py --tiny               # CPU check of this script (tiny model, no MFU)
    python bench/train_throughput.py --settings 2+ckpt,2+ckpt/2,4,4+compile --time-budget 200 --json out.json
        # chosen settings (micro-batch [+ckpt[/N]] [+compile]; ckpt/2: every 2nd layer re-computed);
        # no new one starts after 200 s; the JSON
        # is rewritten after every setting (the bounded device run, bench/gpu_session.sh)
    python bench/train_throughput.py --recipe             # the recipe's real path (pulse_7b.yaml), below
    python bench/train_throughput.py --recipe --tiny      # the same on CPU: tiny model, tiny.yaml, gloo
    python bench/train_throughput.py --recipe --set gradient_checkpointing_every=2   # a recipe override

Model: the project's one LLaVA-1.6 definition (pulse_models.modeling.PulseLlavaForCausalLM) at
7B width (hidden 4096, 32 heads, MLP 11008, vocab 32000) cut to --layers decoder layers (8 fit an
80 GB card with room for micro-batch 4), with the full CLIP ViT-L/14-336 tower frozen and the
mlp2x_gelu projector, flat merging. Samples are ECG-sized: one 2x2 anyres image (base + 4 tiles
-> 2880 image tokens) and --text-tokens text tokens (~300, the last 60 supervised).

Step = forward + backward + optimizer step, as the recipe runs it (the LM head only at the
positions that predict a supervised token, logits="supervised"): bf16 autocast over fp32
master weights with fused AdamW (the memory layout of DeepSpeed's bf16 mode on one GPU), or
`--engine deepspeed` for DeepSpeed ZeRO-2 itself (world size 1). MFU counts model FLOPs only
(pulse_training.throughput.FlopModel: 6 x trainable params per token + attention, CLIP forward
only; checkpointing re-computation not counted) against the card's dense bf16 peak.

`--recipe` times the recipe's real path instead of this hand-written step on one pre-built batch:
`pulse_training.recipe.train` (PulseTrainer, DeepSpeed ZeRO-2, the recipe's Collator and data
loader workers, length grouping, the configured gradient checkpointing) on a random checkpoint
of the model above written to disk, over synthetic ECG records whose PNG images are on disk
(decoded and tiled by the loader every step). samples/s and MFU come from the recipe's own
ThroughputCallback (the same FlopModel, the collator's real token counts), one window per
optimizer step, the first --warmup steps left out. On a GPU the config is pulse_7b.yaml with
zero2.json less its optimizer block (the Trainer's fused torch AdamW, same maths, no C++/CUDA
build); with --tiny, tiny.yaml (DeepSpeed on the CPU accelerator, gloo). `--recipe-config` and
`--set key=value` change that.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pulse_models.configuration import CLIP_L_336_VISION_CONFIG, PulseConfig
from pulse_models.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from pulse_models.loading import choose_attn
from pulse_models.modeling import PulseLlavaForCausalLM
from pulse_training.throughput import FlopModel, detect_peak_tflops

# 7B LLaVA-1.6 (vicuna-7b) language-model width; depth is the --layers knob.
LLAMA_7B_WIDTH: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False,
}
DEFAULT_LAYERS = 8  # 1.9B parameters: fits an 80 GB H100 with micro-batch 4 and no checkpointing
ECG_IMAGE_SIZE = (2200, 1700)  # (w, h) of a 12-lead printout -> the 2x2 anyres grid (5 tiles, 2880 tokens)
DEFAULT_TEXT_TOKENS = 300  # ECGInstruct's typical question + answer length
SUPERVISED_TOKENS = 60  # answer tokens at the end of each sample
SYSTEM_PROMPT_TOKENS = 40  # llava_v1 system prompt + "USER:" before the image
TARGET_MFU = 0.50  # the recipe's goal on an H100 (PULSE's reported 3.0 samples/s/GPU implies ~44%)


@dataclass
class Setting:
    micro_batch: int = 2  # PULSE: 2 per GPU
    grad_ckpt: bool = True  # PULSE: on
    ckpt_every: int = 1  # with grad_ckpt: re-compute every N-th decoder layer (1 = all, PULSE)
    attn: str = "auto"  # flash_attention_2 when installed, else sdpa
    compile: bool = False  # torch.compile per decoder layer (regional)
    engine: str = "torch"  # torch (autocast + fused AdamW) or deepspeed (ZeRO-2, world size 1)


def build_config(layers: int, tiny: bool) -> PulseConfig:
    if tiny:
        from pulse_models.testing import tiny_config

        return tiny_config("flat", max_length=4096)
    return PulseConfig(
        text_config=dict(LLAMA_7B_WIDTH, num_hidden_layers=layers),
        vision_config=dict(CLIP_L_336_VISION_CONFIG),
        mm_projector_type="mlp2x_gelu",
        image_aspect_ratio="anyres",
        mm_patch_merge_type="flat",
        tokenizer_model_max_length=4096,
    )


def make_batch(config: PulseConfig, micro_batch: int, text_tokens: int, image_size: tuple[int, int],
               device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Random token ids with one image placeholder after the system prompt; answers supervised."""
    from pulse_models.image_processing import anyres_grid_shape

    gen = torch.Generator().manual_seed(seed)
    vocab = int(config.text_config["vocab_size"])
    cols, rows = anyres_grid_shape(image_size, config.image_grid_pinpoints, config.tile_size)
    tiles = 1 + cols * rows
    ids = torch.randint(3, vocab, (micro_batch, text_tokens), generator=gen)
    ids[:, 0] = 1  # BOS
    ids[:, min(SYSTEM_PROMPT_TOKENS, text_tokens // 4)] = IMAGE_TOKEN_INDEX  # after the system prompt (llava_v1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -SUPERVISED_TOKENS:] = ids[:, -SUPERVISED_TOKENS:]
    pixels = torch.randn(micro_batch, tiles, 3, config.tile_size, config.tile_size, generator=gen)
    merged = text_tokens - 1 + tiles * config.tokens_per_tile
    return {
        "input_ids": ids.to(device),
        "labels": labels.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "images": [p.to(device) for p in pixels],
        "image_sizes": [image_size] * micro_batch,
        "_merged": merged,
        "_tiles": tiles * micro_batch,
    }


def measure(setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.manual_seed(0)
    config = build_config(args.layers, args.tiny)
    attn = choose_attn(setting.attn, cuda=device.type == "cuda")  # the recipe's rule for auto
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute of CPU init at 2B
        model = PulseLlavaForCausalLM(config, attn_implementation=attn)
    model.freeze_vision_tower(True)  # the recipe's default
    if setting.grad_ckpt:
        model.gradient_checkpointing_enable({"use_reentrant": False}, every=setting.ckpt_every)
    if setting.compile:
        for layer in model.language_model.model.layers:
            layer.compile()
    model.train()
    use_bf16 = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    if setting.engine == "deepspeed":
        step_fn = _deepspeed_step_fn(model, params, setting, use_bf16)
    else:
        optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, fused=device.type == "cuda")

        def step_fn(batch: dict[str, Any], model: torch.nn.Module = model) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch, logits="supervised").loss  # as the recipe's PulseTrainer
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

    text_tokens = args.text_tokens if not args.tiny else 40
    image_size = ECG_IMAGE_SIZE if not args.tiny else (64, 48)
    batch = make_batch(config, setting.micro_batch, text_tokens, image_size, device)
    merged, tiles = batch.pop("_merged"), batch.pop("_tiles")
    flop_model = FlopModel.from_model(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step_fn(batch)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step_fn(batch)
    sync()
    elapsed = (time.perf_counter() - start) / args.steps
    mb = setting.micro_batch
    # The LM head runs on the positions predicting the last SUPERVISED_TOKENS tokens of every row.
    flops = flop_model.flops(tokens=mb * merged, sq_tokens=mb * merged**2, tiles=tiles,
                             head_tokens=mb * min(SUPERVISED_TOKENS, text_tokens - 1))
    peak = args.peak_tflops or (detect_peak_tflops() if device.type == "cuda" else None)
    result: dict[str, Any] = {
        **asdict(setting),
        "attn": attn,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "layers": int(config.text_config["num_hidden_layers"]),
        "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "merged_tokens_per_sample": merged,
        "step_s": round(elapsed, 4),
        "samples_per_s": round(mb / elapsed, 3),
        "tokens_per_s": round(mb * merged / elapsed, 1),
        "tflops": round(flops / elapsed / 1e12, 2),
        "mfu": round(flops / elapsed / 1e12 / peak, 4) if peak else None,
        "peak_tflops": peak,
        "max_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1) if device.type == "cuda" else None,
        "loss": round(float(loss.detach()), 4),
    }
    del model, batch, step_fn  # step_fn holds the model too: all three go before the next setting
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _deepspeed_step_fn(model: torch.nn.Module, params: list, setting: Setting, bf16: bool):
    """DeepSpeed ZeRO-2 as the recipe configures it (zero2.json), world size 1, torch AdamW."""
    try:
        import deepspeed
    except ImportError as exc:
        raise SystemExit("--engine deepspeed needs DeepSpeed: pip install 'ecgbench-lmms[train]'") from exc
    from importlib import resources

    _single_process_env()
    ds_config = json.loads((resources.files("pulse_training") / "configs" / "zero2.json").read_text())
    ds_config.pop("optimizer")  # a client torch AdamW: no C++ build, same maths
    ds_config.pop("fp16")
    ds_config.update(bf16={"enabled": bf16}, train_micro_batch_size_per_gpu=setting.micro_batch,
                     gradient_accumulation_steps=1, train_batch_size=setting.micro_batch)
    fused = torch.cuda.is_available()
    optimizer = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, fused=fused)
    ds_config["zero_allow_untested_optimizer"] = True
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)

    def step_fn(batch: dict[str, Any]) -> torch.Tensor:
        loss = engine(**batch, logits="supervised").loss
        engine.backward(loss)
        engine.step()
        return loss

    return step_fn


def _single_process_env() -> None:
    """The launcher's variables for a one-process DeepSpeed / torch.distributed job (kept when set)."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:  # a free port: a fixed one collides with other jobs on the machine
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)


# ----------------------------------------------------------------------------- --recipe

RECIPE_IMAGES = 8  # distinct PNG scans on disk, reused by the records (writing 2200x1700 PNGs is slow)
TINY_TEXT_TOKENS = 120  # --tiny: text tokens per sample (the llava_v1 system prompt alone is about 80)
TINY_IMAGE_SIZE = (64, 48)  # --tiny: (w, h) -> a 2x1 grid of the tiny model's 32 px tiles
WORDS = "rhythm rate axis interval hypertrophy ischemia conclusion lead wave segment".split()


def _text_of(tokenizer: Any, n_tokens: int, offset: int) -> str:
    """Words from WORDS until the text is ``n_tokens`` tokens long (without BOS)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words), add_special_tokens=False).input_ids) < n_tokens:
        words.append(WORDS[(offset + len(words)) % len(WORDS)])
    return " ".join(words)


def write_ecg_records(out_dir: Path, n: int, tokenizer: Any, image_size: tuple[int, int], text_tokens: int,
                      answer_tokens: int) -> Path:
    """LLaVA JSON records (one "<image>" question, one answer of about ``answer_tokens`` tokens,
    about ``text_tokens`` text tokens in all with the llava_v1 template) and RECIPE_IMAGES
    ECG-like PNGs of ``image_size``; returns the JSON path (its folder is the image_folder)."""
    from pulse_models.conversation import tokenize_conversation
    from pulse_models.testing import make_ecg_like_image

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for k in range(RECIPE_IMAGES):
        make_ecg_like_image(*image_size, seed=k).save(out_dir / "images" / f"ecg-{k}.png")

    def conversation(question: str, answer: str) -> list[dict[str, str]]:
        return [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}]

    # The llava_v1 template's length with this tokenizer, measured once: ids (with the one image
    # placeholder, as make_batch counts them) then come to about text_tokens.
    question_tokens = max(1, text_tokens - answer_tokens - SYSTEM_PROMPT_TOKENS)
    probe, _, _ = tokenize_conversation(conversation(_text_of(tokenizer, question_tokens, 0),
                                                     _text_of(tokenizer, answer_tokens, 1)), tokenizer, max_length=10**6)
    question_tokens = max(1, question_tokens - (len(probe) - text_tokens))
    texts = [conversation(_text_of(tokenizer, question_tokens, k), _text_of(tokenizer, answer_tokens, 3 * k + 1))
             for k in range(RECIPE_IMAGES)]
    records = [{"id": f"bench-{i:05d}", "image": f"images/ecg-{i % RECIPE_IMAGES}.png",
                "conversations": texts[i % len(texts)]} for i in range(n)]
    path = out_dir / "records.json"
    path.write_text(json.dumps(records))
    return path


def write_random_checkpoint(out_dir: Path, layers: int, tiny: bool, device: torch.device) -> Path:
    """The bench model (7B width, ``layers`` decoder layers; --tiny: the test model) with random
    weights, in the original LLaVA format the recipe loads (bf16 on a GPU: half the bytes)."""
    from pulse_models.testing import make_tiny_original_checkpoint, make_tiny_tokenizer_dir

    if tiny:
        return make_tiny_original_checkpoint(out_dir, merge_type="flat")
    from transformers import AutoTokenizer

    from pulse_models.checkpoint import save_original_format

    # Token ids only need to be valid: the tiny SentencePiece tokenizer (ids < 400) serves.
    tokenizer = AutoTokenizer.from_pretrained(make_tiny_tokenizer_dir(out_dir / "tokenizer", model_max_length=4096))
    torch.manual_seed(0)
    with torch.device(device):
        model = PulseLlavaForCausalLM(build_config(layers, tiny=False), attn_implementation="sdpa")
    model.to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    save_original_format(model, tokenizer, out_dir)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out_dir


def combine_windows(windows: list[dict[str, Any]], peak: float | None) -> dict[str, Any]:
    """One figure from the callback's per-step windows: sums of samples, seconds and FLOPs, not a
    mean of rates (a slow step weighs by its time)."""
    seconds = sum(w["elapsed_s"] for w in windows)
    samples = sum(w["samples"] for w in windows)
    tflops = sum(w["tflops_per_device"] * w["elapsed_s"] for w in windows) / seconds
    return {
        "timed_steps": len(windows),
        "step_s": round(seconds / len(windows), 4),
        "samples_per_s": round(samples / seconds, 3),
        "tokens_per_s": round(sum(w["tokens_per_s"] * w["elapsed_s"] for w in windows) / seconds, 1),
        "tflops": round(tflops, 2),
        "mfu": round(tflops / peak, 4) if peak else None,
        "peak_tflops": peak,
    }


def measure_recipe(args: argparse.Namespace, started: float) -> dict[str, Any]:
    """Train ``--warmup + --steps`` optimizer steps through pulse_training.recipe.train and time
    the last --steps of them from the recipe's throughput log."""
    from pulse_training.config import load_config, plan_batch, resolve_config_path
    from pulse_training.recipe import resolve_deepspeed, train
    from transformers import AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name = args.recipe_config or ("tiny.yaml" if args.tiny else "pulse_7b.yaml")
    base: dict[str, Any] = {"mode": "recipe", "recipe_config": name, "overrides": list(args.set or [])}
    work = Path(tempfile.mkdtemp(prefix="train_recipe_"))
    try:
        model_dir = write_random_checkpoint(work / "model", args.layers, args.tiny, device)
        overrides = {
            "model_name_or_path": str(model_dir), "data_path": str(work / "data" / "records.json"),
            "image_folder": str(work / "data"), "output_dir": str(work / "run"),
            "max_steps": str(args.warmup + args.steps),
            "throughput_log_steps": "1",  # one window per optimizer step: the warm-up ones are left out
            "save_strategy": "no", "report_to": "none",
        }
        own_ds = str(work / "zero2_torch_adamw.json")
        if not args.tiny:
            # zero2.json less its optimizer block: the Trainer's fused torch AdamW (no C++/CUDA build).
            ds = json.loads(resolve_config_path("zero2.json").read_text())
            ds.pop("optimizer")
            Path(own_ds).write_text(json.dumps(ds))
            overrides["deepspeed"] = own_ds
        if args.peak_tflops:
            overrides["peak_tflops"] = str(args.peak_tflops)
        for item in args.set or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--set {item!r}: expected key=value")
            overrides[key] = value
        config = load_config(name, overrides)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        text_tokens = TINY_TEXT_TOKENS if args.tiny else args.text_tokens
        answer_tokens = min(SUPERVISED_TOKENS, text_tokens // 4)
        # Enough records for every step without a second epoch (a new epoch restarts the loader
        # workers). The samples per optimizer step come from the recipe's own batch plan: reading
        # config.gradient_accumulation_steps (None when derived from global_batch_size) once gave
        # 12 records for 6 steps of 64 accumulation, so every timed "step" was a whole epoch with
        # its loader restart (17.6% MFU on an H200, 2026-12-04, against 33% compute-only).
        per_step = plan_batch(config.global_batch_size, 1, config.per_device_train_batch_size,
                              config.gradient_accumulation_steps).global_batch_size
        n_records = per_step * (args.warmup + args.steps)
        image_size = TINY_IMAGE_SIZE if args.tiny else ECG_IMAGE_SIZE
        write_ecg_records(work / "data", n_records, tokenizer, image_size, text_tokens, answer_tokens)
        base.update(records=n_records, image_size=list(image_size), text_tokens=text_tokens)
        if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
            return {**base, "skipped": f"time budget {args.time_budget:.0f}s spent (after writing the inputs)"}
        _single_process_env()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = train(config)
        windows = [json.loads(line) for line in (work / "run" / "throughput.jsonl").read_text().splitlines()]
        timed = [w for w in windows if w["step"] > args.warmup]
        if len(timed) != args.steps:
            raise RuntimeError(f"expected {args.steps} timed steps in throughput.jsonl, found {len(timed)}")
        peak = config.peak_tflops or detect_peak_tflops()  # as the recipe's callback
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        ds_config = resolve_deepspeed(config)
        return {
            **base,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "deepspeed": "zero2.json less its optimizer block" if config.deepspeed == own_ds else config.deepspeed,
            "zero_stage": ds_config["zero_optimization"]["stage"] if ds_config else None,
            "micro_batch": trainer.args.per_device_train_batch_size,
            "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
            "world_size": trainer.args.world_size,
            "grad_ckpt": config.gradient_checkpointing,
            "ckpt_every": config.gradient_checkpointing_every,
            "compile": config.compile_layers,
            "bf16": config.bf16,
            "attn": choose_attn(config.attn_implementation),
            "dataloader_num_workers": config.dataloader_num_workers,
            "layers": len(trainer.model.language_model.model.layers),
            "params_b": round(sum(p.numel() for p in trainer.model.parameters()) / 1e9, 3),
            "warmup_steps": args.warmup,
            **combine_windows(timed, peak),
            "max_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1) if device.type == "cuda" else None,
            "loss": losses[-1] if losses else None,
            "windows": windows,  # every optimizer step's window from throughput.jsonl, warm-up ones included
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_settings(spec: str, args: argparse.Namespace) -> list[Setting]:
    """``2+ckpt,2+ckpt/2,2,4+compile`` -> micro-batch 2 with checkpointing of every layer, of every
    2nd layer, without; 4 compiled without."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        mb, *flags = part.split("+")
        every = [f for f in flags if f == "ckpt" or (f.startswith("ckpt/") and f[5:].isdigit() and int(f[5:]) >= 1)]
        unknown = set(flags) - {"compile", *every}
        if not mb.isdigit() or int(mb) < 1 or unknown or len(every) > 1:
            print(f"--settings: cannot read {part!r} (want MICRO_BATCH[+ckpt[/N]][+compile], e.g. 2+ckpt or 2+ckpt/2)",
                  file=sys.stderr)
            raise SystemExit(2)
        out.append(Setting(micro_batch=int(mb), grad_ckpt=bool(every),
                           ckpt_every=int(every[0][5:]) if every and "/" in every[0] else 1, attn=args.attn,
                           compile="compile" in flags, engine=args.engine))
    return out


def settings_to_run(args: argparse.Namespace) -> list[Setting]:
    if args.settings:
        return parse_settings(args.settings, args)
    if not args.sweep:
        return [Setting(micro_batch=args.micro_batch, grad_ckpt=not args.no_grad_ckpt, attn=args.attn,
                        compile=args.compile, engine=args.engine)]
    batches = (1, 2) if args.tiny else (1, 2, 4)
    return [Setting(micro_batch=mb, grad_ckpt=gc_, attn=args.attn, compile=comp, engine=args.engine)
            for gc_, comp, mb in itertools.product((True, False), (False, True), batches)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=DEFAULT_LAYERS, help="decoder layers of the 7B-width model")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--no-grad-ckpt", action="store_true", help="turn gradient checkpointing off (a lever)")
    parser.add_argument("--attn", default="auto", choices=("auto", "flash_attention_2", "sdpa", "eager"))
    parser.add_argument("--compile", action="store_true", help="torch.compile each decoder layer (a lever)")
    parser.add_argument("--engine", default="torch", choices=("torch", "deepspeed"))
    parser.add_argument("--text-tokens", type=int, default=DEFAULT_TEXT_TOKENS)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (allocator, autotuning, compile)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the card's dense bf16 peak")
    parser.add_argument("--sweep", action="store_true", help="micro-batch x checkpointing x compile grid")
    parser.add_argument("--settings", default=None,
                        help="comma-separated MICRO_BATCH[+ckpt[/N]][+compile], e.g. 2+ckpt,2+ckpt/2,4+compile "
                             "(ckpt/N: re-compute every N-th layer; instead of --sweep)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: no new setting starts once this much time has passed (--recipe: "
                             "checked at start and again before training, after writing its inputs)")
    parser.add_argument("--recipe", action="store_true",
                        help="time the recipe's real path (pulse_training.recipe.train: PulseTrainer, DeepSpeed "
                             "ZeRO-2, collator and data loader over ECG records with images on disk) instead of "
                             "the compute-only step; --steps timed optimizer steps after --warmup")
    parser.add_argument("--recipe-config", default=None,
                        help="with --recipe: the recipe YAML (default pulse_7b.yaml; tiny.yaml with --tiny)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="with --recipe: a recipe config override (repeatable), e.g. gradient_checkpointing=false")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, no MFU")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (after every setting)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.tiny:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        print("no CUDA GPU: run on a GPU, or pass --tiny to check the script on CPU", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # the recipe's tf32 switch
        torch.backends.cudnn.allow_tf32 = True
    if args.recipe:
        return run_recipe(args, started)
    results = []
    for setting in settings_to_run(args):
        if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
            result = {**asdict(setting), "skipped": f"time budget {args.time_budget:.0f}s spent"}
        else:
            try:
                result = measure(setting, args)  # frees its model and cache when it returns
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory, a compile failure: record it, go on
                oom = isinstance(exc, torch.OutOfMemoryError)
                result = {**asdict(setting), "error": "out of memory" if oom else f"{type(exc).__name__}: {exc}"[:500]}
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        results.append(result)
        print(json.dumps(result), flush=True)
        _write(args.json, results)
    best = max((r for r in results if r.get("mfu")), key=lambda r: r["mfu"], default=None)
    if best:
        verdict = "meets" if best["mfu"] >= TARGET_MFU else "below"
        print(f"best MFU {best['mfu']:.1%} ({verdict} the {TARGET_MFU:.0%} target): {json.dumps(best)}")
    return 1 if any("error" in r for r in results) else 0


def _write(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")


def run_recipe(args: argparse.Namespace, started: float) -> int:
    """--recipe: one measurement; the JSON says "running" until it is replaced by the result."""
    if args.time_budget is not None and time.perf_counter() - started > args.time_budget:
        result: dict[str, Any] = {"mode": "recipe", "skipped": f"time budget {args.time_budget:.0f}s spent"}
    else:
        _write(args.json, [{"mode": "recipe", "status": "running"}])
        try:
            result = measure_recipe(args, started)
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, the exit status says it failed
            oom = isinstance(exc, torch.OutOfMemoryError)
            result = {"mode": "recipe", "error": "out of memory" if oom else f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result), flush=True)
    _write(args.json, [result])
    if result.get("mfu"):
        verdict = "meets" if result["mfu"] >= TARGET_MFU else "below"
        print(f"recipe MFU {result['mfu']:.1%} ({verdict} the {TARGET_MFU:.0%} target)")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
