"""Training throughput: samples/s, tokens/s and MFU, measured in a Trainer callback.

The step loop only pops three counters the collator computed (merged tokens, their squares,
image tiles) into a `StepCounts`; this callback turns them into rates every N optimizer steps,
so no timing or logging code sits in the loop.

FLOPs follow the PaLM appendix-B convention used by most MFU numbers: 6 x parameters per
trained token (forward 2 + backward 4), plus 12 x layers x hidden x sequence per token for the
attention score/value matmuls; re-computation from gradient checkpointing is NOT counted (it is
the price of memory, not model work). The frozen CLIP tower costs only its forward (2 x params
per patch token, 4 x layers x hidden x patches for attention).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pulse_models.modeling import vision_layers_run

logger = logging.getLogger(__name__)

IMAGE_TOKENS_PER_TILE: int = 576  # 24 x 24 CLIP-L/14 patches of a 336 px tile, CLS dropped ("patch")
VIT_TOKENS_PER_TILE: int = 577  # the tower itself also runs the CLS token

# Dense bf16 peak per device (TFLOP/s) by a substring of torch.cuda.get_device_name(): the
# vendors' datasheet numbers without sparsity. MFU is left empty for unknown devices.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM / HBM3
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("L4", 121.0),
)


def peak_tflops_for(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def detect_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    return peak_tflops_for(torch.cuda.get_device_name())


def _as_dict(config: Any) -> dict[str, Any]:
    """PulseConfig keeps sub-configs as dicts; transformers configs are objects."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return config
    return config.to_dict() if hasattr(config, "to_dict") else vars(config)


def _encoder_layer_index(name: str) -> int | None:
    """3 for '...encoder.layers.3.mlp.fc1.weight', None for parameters outside the encoder layers."""
    parts = name.split(".")
    for a, b, c in zip(parts, parts[1:], parts[2:]):
        if a == "encoder" and b == "layers" and c.isdigit():
            return int(c)
    return None


@dataclass
class FlopModel:
    """The numbers the FLOP count needs, read off the shared model definition."""

    lm_params: int  # language model + lm_head, without the input embedding (a lookup, no matmul)
    lm_layers: int
    lm_hidden: int
    projector_params: int
    vision_params: int
    vision_layers: int
    vision_hidden: int
    vision_trainable: bool = False
    lm_head_params: int = 0  # the part of lm_params in the LM head (it may run on fewer positions)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> FlopModel:
        """Split parameters by name: `vision_tower`, projector, input embedding, the rest (LM).

        CLIP counts only the encoder layers the selected hidden state needs (PULSE's
        mm_vision_select_layer -2: 23 of 24, see PulseLlavaForCausalLM._select_layer_features);
        its post_layernorm touches only the unused pooled CLS token.
        """
        config = model.config
        text = _as_dict(getattr(config, "text_config", config))
        vision_cfg = _as_dict(getattr(config, "vision_config", None))
        n_vision = int(vision_cfg.get("num_hidden_layers", 0))
        select = getattr(config, "mm_vision_select_layer", None)
        used = n_vision if select is None else min(max(vision_layers_run(n_vision, select), 0), n_vision)
        lm = projector = vision = head = 0
        vision_trainable = False
        for name, p in model.named_parameters():
            n = p.numel() if p.numel() > 0 else int(getattr(p, "ds_numel", 0))  # ZeRO-3 keeps ds_numel
            if "vision_tower" in name:
                layer = _encoder_layer_index(name)
                if "post_layernorm" in name or (layer is not None and layer >= used):
                    continue  # never run (or, for post_layernorm, on one token of no use)
                vision += n
                vision_trainable |= p.requires_grad
            elif "mm_projector" in name or "multi_modal_projector" in name:
                projector += n
            elif "embed_tokens" in name:
                continue
            else:
                lm += n
                head += n if "lm_head" in name else 0
        return cls(
            lm_params=lm,
            lm_layers=int(text["num_hidden_layers"]),
            lm_hidden=int(text["hidden_size"]),
            projector_params=projector,
            vision_params=vision,
            vision_layers=used,
            vision_hidden=int(vision_cfg.get("hidden_size", 0)),
            vision_trainable=vision_trainable,
            lm_head_params=head,
        )

    def flops(self, *, tokens: float, sq_tokens: float, tiles: float, head_tokens: float | None = None) -> float:
        """Model FLOPs of one training step over a batch (tokens = merged LM tokens, summed;
        sq_tokens = sum of squared per-sample merged lengths; tiles = 336 px tiles through CLIP;
        head_tokens = positions the LM head ran on, when not all of them: the recipe's
        logits="supervised" forward runs it only where a supervised token is predicted)."""
        head = tokens if head_tokens is None else head_tokens
        lm = (6.0 * (self.lm_params - self.lm_head_params) * tokens + 6.0 * self.lm_head_params * head
              + 12.0 * self.lm_layers * self.lm_hidden * sq_tokens)
        image_tokens = tiles * IMAGE_TOKENS_PER_TILE
        projector = 6.0 * self.projector_params * image_tokens
        vit_tokens = tiles * VIT_TOKENS_PER_TILE
        mult, attn_mult = (6.0, 12.0) if self.vision_trainable else (2.0, 4.0)
        vision = mult * self.vision_params * vit_tokens + attn_mult * self.vision_layers * self.vision_hidden * (
            tiles * VIT_TOKENS_PER_TILE**2
        )
        return lm + projector + vision


COUNT_KEYS: tuple[str, ...] = ("num_merged_tokens", "num_merged_sq", "num_image_tiles")


@dataclass
class StepCounts:
    """Running per-rank totals since the last report (filled by the trainer, read by the callback)."""

    samples: int = 0
    values: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in COUNT_KEYS})
    head_tokens: float = 0.0  # positions the LM head ran on (reported by the trainer after each forward)

    def add(self, inputs: dict[str, Any]) -> None:
        """Pop the collator's counters out of a batch (the model must not see them)."""
        for key in COUNT_KEYS:
            value = inputs.pop(key, None)
            if value is not None:
                self.values[key] += float(value)
        if "input_ids" in inputs:
            self.samples += int(inputs["input_ids"].shape[0])

    def add_head_tokens(self, n: float) -> None:
        self.head_tokens += float(n)

    def take(self) -> tuple[int, dict[str, float]]:
        """(samples, the collator's counters + "num_head_tokens") since the last take; resets."""
        out = (self.samples, {**self.values, "num_head_tokens": self.head_tokens})
        self.samples = 0
        self.values = {k: 0.0 for k in COUNT_KEYS}
        self.head_tokens = 0.0
        return out


def _all_reduce_sum(values: list[float]) -> list[float]:
    """Sum over ranks (every rank calls the callback, so the collective is safe)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


class ThroughputCallback(TrainerCallback):
    """Every `every` optimizer steps: samples/s, tokens/s, TFLOP/s per device and MFU.

    Written to the log, to trainer_state.json's log_history and to throughput.jsonl.
    """

    def __init__(self, counts: StepCounts, flop_model: FlopModel, *, every: int, peak_tflops: float | None) -> None:
        self.counts = counts
        self.flop_model = flop_model
        self.every = max(1, every)
        self.peak_tflops = peak_tflops
        self._t0: float | None = None
        self.history: list[dict[str, float]] = []

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, **kwargs):
        self._sync()
        self.counts.take()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every != 0 or self._t0 is None:
            return
        self._sync()
        now = time.perf_counter()
        elapsed, self._t0 = now - self._t0, now
        samples, values = self.counts.take()
        samples_all, tokens, sq, tiles, head = _all_reduce_sum(
            [float(samples), values["num_merged_tokens"], values["num_merged_sq"], values["num_image_tiles"],
             values["num_head_tokens"]]
        )
        world = max(1, args.world_size)
        flops = self.flop_model.flops(tokens=tokens, sq_tokens=sq, tiles=tiles, head_tokens=head or None)
        tflops_per_device = flops / elapsed / world / 1e12
        record: dict[str, float] = {
            "step": state.global_step,
            "samples_per_s": round(samples_all / elapsed, 3),
            "samples_per_s_per_device": round(samples_all / elapsed / world, 3),
            "tokens_per_s": round(tokens / elapsed, 1),
            "tflops_per_device": round(tflops_per_device, 2),
            # The window's raw sizes: rates of several windows combine as sums of these.
            "elapsed_s": round(elapsed, 4),
            "samples": int(samples_all),
        }
        if self.peak_tflops:
            record["mfu"] = round(tflops_per_device / self.peak_tflops, 4)
        self.history.append(record)
        state.log_history.append({"throughput": record, "step": state.global_step})
        if state.is_world_process_zero:
            logger.warning("throughput %s", json.dumps(record))
            with (Path(args.output_dir) / "throughput.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
