"""PulseLlavaForCausalLM: LLaVA-1.6 (PULSE-7B) from transformers parts, no LLaVA code base.

    pixels [N_tiles, 3, 336, 336] --CLIPVisionModel (hidden_states[select_layer], drop CLS)-->
    [N_tiles, 576, 1024] --mm_projector (mlp2x_gelu)--> [N_tiles, 576, 4096]
    --merge (flat | spatial_unpad + image_newline)--> [n_img_tokens, 4096] per image
    --spliced into the text embeddings at IMAGE_TOKEN_INDEX, right-truncated to
    tokenizer_model_max_length, padded--> LlamaForCausalLM(inputs_embeds=...)

Submodule names (parameter keys) and the original checkpoint's names (see checkpoint.py):
    language_model.model.*   <-> model.{embed_tokens,layers.N,norm}.*
    language_model.lm_head.* <-> lm_head.*
    mm_projector.{0,2}.*     <-> model.mm_projector.{0,2}.*
    vision_tower.* (CLIPVisionModel; transformers 5 has no "vision_model." level)
                             <-> model.vision_tower.vision_tower.vision_model.*
    image_newline            <-> model.image_newline           (spatial_unpad only)

Public API (stable, used by training/, the adapter and bench/):
    PulseLlavaForCausalLM(config, attn_implementation="sdpa")
      .forward(input_ids, images=None, image_sizes=None, attention_mask=None, labels=None,
               padding_side="right", logits="all" | "supervised")
               -> PulseOutput(loss, logits, attention_mask, labels, n_truncated, logit_positions)
      .generate(input_ids, images, image_sizes, attention_mask=None, **generate_kwargs)
               -> LongTensor [B, new_tokens]  (only the generated ids, as LLaVA's generate)
      .prepare_inputs_embeds(...) -> MergedInputs     the splice, for callers that need it
      .image_features(images, image_sizes) -> list[Tensor [n_tokens_i, hidden]]
      .gradient_checkpointing_enable(gradient_checkpointing_kwargs=None, every=1) / _disable()
      .checkpointed_layers -> list[int]
      .freeze_vision_tower(frozen=True)   (frozen by default: LLaVA runs the tower under no_grad)
    MergedInputs, PulseOutput dataclasses.
    merge_tile_features(feats, image_size, config, image_newline) -> Tensor   one image's flat or
      spatial_unpad merge (also the vLLM model's, pulse_models/vllm_model.py)

``input_ids`` may be a LongTensor [B, T] (with ``attention_mask`` marking real tokens; either
padding side) or a list of per-sample id lists. ``images`` is a list with one tensor
[1 + tiles, 3, T, T] per image (or a stacked [N, 1+tiles, 3, T, T] tensor), consumed in the order
the IMAGE_TOKEN_INDEX placeholders appear across the batch; ``image_sizes`` the matching
(width, height) pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from pulse_models.configuration import PulseConfig
from pulse_models.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from pulse_models.image_processing import anyres_grid_shape, unpadded_feature_shape

logger = logging.getLogger(__name__)

# Attention kernels we accept; flash_attention_2 additionally needs the flash-attn package.
SUPPORTED_ATTN = ("sdpa", "eager", "flash_attention_2")


@dataclass
class MergedInputs:
    inputs_embeds: torch.Tensor  # [B, L, hidden], padding positions are zeros
    attention_mask: torch.Tensor  # [B, L] long, 1 = real token
    position_ids: torch.Tensor  # [B, L] long, 0.. over real tokens (0 at padding)
    labels: torch.Tensor | None  # [B, L] long, IGNORE_INDEX at image, padding and prompt positions
    truncated: list[bool] = field(default_factory=list)  # per sample: cut to tokenizer_model_max_length
    lengths: list[int] = field(default_factory=list)  # per sample: merged length before truncation


@dataclass
class PulseOutput:
    loss: torch.Tensor | None  # scalar mean cross-entropy over supervised tokens (labels given)
    logits: torch.Tensor  # [B, L, vocab]; [B, K, vocab] at logit_positions with logits="supervised"
    attention_mask: torch.Tensor  # [B, L] of the merged sequence
    labels: torch.Tensor | None  # [B, L] merged labels
    n_truncated: int  # samples right-truncated to tokenizer_model_max_length
    logit_positions: torch.Tensor | None = None  # logits="supervised": the positions ``logits`` are at

    def __getitem__(self, key: str) -> Any:  # dict-style access, as transformers outputs
        return getattr(self, key)


def vision_layers_run(num_layers: int, select_layer: int) -> int:
    """How many CLIP encoder layers hidden_states[select_layer] depends on (hidden_states[k] is
    the output of k layers, hidden_states[0] the embeddings): 23 for PULSE's -2 of 24. Out of
    range values come back out of [0, num_layers]; callers decide."""
    return select_layer if select_layer >= 0 else num_layers + 1 + select_layer


def build_projector(config: PulseConfig) -> nn.Module:
    """LLaVA's mm_projector: 'linear' or 'mlp2x_gelu' (Linear, GELU, Linear -> keys 0 and 2)."""
    if config.mm_projector_type == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    return nn.Sequential(
        nn.Linear(config.mm_hidden_size, config.hidden_size),
        nn.GELU(),
        nn.Linear(config.hidden_size, config.hidden_size),
    )


def merge_tile_features(feats: torch.Tensor, image_size: tuple[int, int], config: PulseConfig,
                        image_newline: torch.Tensor | None) -> torch.Tensor:
    """One image's projected tile features [1 + tiles, P*P, H] -> its merged sequence [n_tokens, H]
    (LLaVA's mm_patch_merge_type branch: flat, or spatial_unpad with ``image_newline`` [H]).
    Shared by PulseLlavaForCausalLM and the vLLM model (pulse_models.vllm_model)."""
    if config.mm_patch_merge_type == "flat":
        return feats.flatten(0, 1)
    # spatial_unpad
    if image_newline is None:
        raise ValueError("mm_patch_merge_type 'spatial_unpad' needs the checkpoint's model.image_newline")
    if feats.shape[0] == 1:
        return torch.cat([feats[0], image_newline[None].to(feats.dtype)], dim=0)
    base, tiles = feats[0], feats[1:]
    pps = config.patches_per_side
    cols, rows = anyres_grid_shape(image_size, config.image_grid_pinpoints, config.tile_size)
    if cols * rows != tiles.shape[0]:
        raise ValueError(f"image of size {image_size} expects {cols}x{rows} tiles, got {tiles.shape[0]}")
    grid = tiles.view(rows, cols, pps, pps, -1)  # [rows, cols, P, P, H]
    grid = grid.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)  # [H, rows*P, cols*P]
    kept_h, kept_w = unpadded_feature_shape(grid.shape[1], grid.shape[2], image_size)
    top, left = (grid.shape[1] - kept_h) // 2, (grid.shape[2] - kept_w) // 2
    grid = grid[:, top : top + kept_h, left : left + kept_w]
    newline = image_newline[:, None, None].to(grid.dtype).expand(grid.shape[0], kept_h, 1)
    grid = torch.cat([grid, newline], dim=-1)  # [H, kept_h, kept_w + 1]
    return torch.cat([base, grid.flatten(1, 2).transpose(0, 1)], dim=0)


class PulseLlavaForCausalLM(nn.Module):
    """CLIPVisionModel + mm_projector + LlamaForCausalLM, merged as LLaVA-1.6 does."""

    def __init__(self, config: PulseConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        from transformers import CLIPVisionModel, LlamaForCausalLM

        if attn_implementation not in SUPPORTED_ATTN:
            raise ValueError(f"attn_implementation {attn_implementation!r} not in {SUPPORTED_ATTN}")
        self.config = config
        self.attn_implementation = attn_implementation
        self.vision_tower = CLIPVisionModel(config.clip_config(attn_implementation))
        self.mm_projector = build_projector(config)
        self.language_model = LlamaForCausalLM(config.llama_config(attn_implementation))
        if config.mm_patch_merge_type == "spatial_unpad":
            # LLaVA initialises it as randn / sqrt(hidden); the checkpoint overwrites it.
            self.image_newline = nn.Parameter(torch.randn(config.hidden_size) / config.hidden_size**0.5)
        else:
            self.image_newline = None
        self.vision_tower_trainable = False
        self.vision_tower.requires_grad_(False)

    # ---- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.language_model.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.model.embed_tokens.weight.dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def freeze_vision_tower(self, frozen: bool = True) -> None:
        """Frozen (default): the tower runs under no_grad, as LLaVA's CLIPVisionTower."""
        self.vision_tower_trainable = not frozen
        self.vision_tower.requires_grad_(not frozen)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, every: int = 1) -> None:
        """Activation checkpointing of the decoder layers: all of them (``every=1``) or every
        ``every``-th one (layers 0, every, 2*every, ...), which trades memory for less re-computation."""
        if every < 1:
            raise ValueError(f"every={every}: expected 1 or more")
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        lm = self.language_model
        if hasattr(lm, "activation_checkpointing_enable"):
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers 5 releases before the rename (5.17 has only gradient_checkpointing_*)
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # transformers' GradientCheckpointingLayer reads a per-layer switch: turn some back off.
        for i, layer in enumerate(lm.model.layers):
            layer.gradient_checkpointing = i % every == 0

    @property
    def checkpointed_layers(self) -> list[int]:
        """Indices of the decoder layers that are re-computed in the backward pass."""
        return [i for i, layer in enumerate(self.language_model.model.layers)
                if getattr(layer, "gradient_checkpointing", False)]

    def gradient_checkpointing_disable(self) -> None:
        lm = self.language_model
        if hasattr(lm, "activation_checkpointing_disable"):
            lm.activation_checkpointing_disable()
        else:  # before the rename, as above
            lm.gradient_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.language_model, "is_gradient_checkpointing", False))

    # ---- vision -----------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, T] -> projected tile features [N, tokens_per_tile, hidden]."""
        tower_dtype = next(self.vision_tower.parameters()).dtype
        with torch.set_grad_enabled(self.vision_tower_trainable and torch.is_grad_enabled()):
            feats = self._select_layer_features(pixel_values.to(self.device, tower_dtype))  # [N, 1 + P*P, 1024]
            if self.config.mm_vision_select_feature == "patch":
                feats = feats[:, 1:]  # drop CLS -> [N, P*P, 1024]
        proj_dtype = self.mm_projector[0].weight.dtype if isinstance(self.mm_projector, nn.Sequential) else self.mm_projector.weight.dtype
        return self.mm_projector(feats.to(proj_dtype))  # [N, P*P, hidden]

    def _select_layer_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP's hidden state number ``mm_vision_select_layer`` (LLaVA's ``hidden_states[select]``).

        Computed by running only the encoder layers it depends on and reading the encoder's
        output, instead of running all of them with ``output_hidden_states``: PULSE's -2 leaves
        out the unused last layer (1/24 of CLIP) and the 25 stored hidden states (at batch 32,
        160 tiles x 577 x 1024 each: about 4.7 GB in fp16). The result is the same tensor.
        """
        encoder = getattr(self.vision_tower, "encoder", None) or self.vision_tower.vision_model.encoder
        layers = encoder.layers
        n = len(layers)
        select = self.config.mm_vision_select_layer
        k = vision_layers_run(n, select)
        if not 1 <= k <= n:  # the embeddings themselves (k = 0), or out of range: the plain path
            return self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[select]
        if k == n:
            return self.vision_tower(pixel_values).last_hidden_state
        encoder.layers = layers[:k]  # a ModuleList view of the same modules (weights untouched)
        try:
            return self.vision_tower(pixel_values).last_hidden_state
        finally:
            encoder.layers = layers

    def image_features(
        self, images: Sequence[torch.Tensor] | torch.Tensor, image_sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """One merged feature sequence [n_tokens, hidden] per image (flat or spatial_unpad)."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = [images]
        images = list(images)
        if len(images) != len(image_sizes):
            raise ValueError(f"{len(images)} images but {len(image_sizes)} image sizes")
        if not images:
            return []
        splits = [int(x.shape[0]) for x in images]
        # Copy each image's tiles first (pinned tensors copy asynchronously), then one CLIP call for
        # all tiles of the batch.
        on_device = [x.to(self.device, non_blocking=True) for x in images]
        feats = self.encode_images(torch.cat(on_device, dim=0))  # [sum tiles, P*P, hidden]
        per_image = torch.split(feats, splits, dim=0)
        return [self._merge_tiles(f, tuple(size)) for f, size in zip(per_image, image_sizes)]

    def _merge_tiles(self, feats: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """[1 + tiles, P*P, H] -> [n_tokens, H] (LLaVA's mm_patch_merge_type branch)."""
        return merge_tile_features(feats, image_size, self.config, self.image_newline)

    # ---- splicing ---------------------------------------------------------------------------
    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor | Sequence[Sequence[int]],
        images: Sequence[torch.Tensor] | torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | Sequence[Sequence[int]] | None = None,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
    ) -> MergedInputs:
        """Splice image features at IMAGE_TOKEN_INDEX, right-truncate, pad to a batch (optionally
        to a multiple of ``pad_to_multiple_of``, so fixed-shape caches/compiled graphs repeat)."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        ids_list = _to_lists(input_ids, attention_mask)
        labels_list = _to_lists(labels, attention_mask) if labels is not None else None
        n_placeholders = sum(ids.count(IMAGE_TOKEN_INDEX) for ids in ids_list)
        if images is None or n_placeholders == 0:
            feats: list[torch.Tensor] = []
        else:
            if isinstance(images, torch.Tensor) and images.dim() == 5:
                images = list(images)
            feats = self.image_features(images, image_sizes or [])
        if len(feats) != n_placeholders:
            raise ValueError(f"{n_placeholders} image placeholders but {len(feats)} images")

        embed = self.get_input_embeddings()
        max_len = self.config.tokenizer_model_max_length
        seqs, labs, truncated, lengths = [], [], [], []
        img_iter = iter(feats)
        for b, ids in enumerate(ids_list):
            ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
            text_emb = embed(ids_t.clamp(min=0))  # [T, H]; placeholder rows replaced below
            pieces, lab_pieces, start = [], [], 0
            lab_t = torch.tensor(labels_list[b], dtype=torch.long, device=self.device) if labels_list else None
            for pos in (ids_t == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
                img = next(img_iter).to(text_emb.dtype)
                pieces += [text_emb[start:pos], img]
                if lab_t is not None:
                    lab_pieces += [lab_t[start:pos], lab_t.new_full((img.shape[0],), IGNORE_INDEX)]
                start = pos + 1
            pieces.append(text_emb[start:])
            seq = torch.cat(pieces, dim=0)  # [L_b, H]
            lengths.append(int(seq.shape[0]))
            truncated.append(seq.shape[0] > max_len)
            seqs.append(seq[:max_len])
            if lab_t is not None:
                lab_pieces.append(lab_t[start:])
                labs.append(torch.cat(lab_pieces)[:max_len])

        batch, width = len(seqs), max(s.shape[0] for s in seqs)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        hidden = seqs[0].shape[1]
        embeds = seqs[0].new_zeros((batch, width, hidden))
        mask = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        pos_ids = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        out_labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=self.device) if labs else None
        for b, seq in enumerate(seqs):
            n = seq.shape[0]
            sl = slice(width - n, width) if padding_side == "left" else slice(0, n)
            embeds[b, sl] = seq
            mask[b, sl] = 1
            pos_ids[b, sl] = torch.arange(n, device=self.device)
            if out_labels is not None:
                out_labels[b, sl] = labs[b]
        n_trunc = sum(truncated)
        if n_trunc:
            logger.warning("%d of %d sequences right-truncated to %d tokens", n_trunc, batch, max_len)
        return MergedInputs(embeds, mask, pos_ids, out_labels, truncated, lengths)

    # ---- forward / generate -----------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | Sequence[Sequence[int]],
        images: Sequence[torch.Tensor] | torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | Sequence[Sequence[int]] | None = None,
        padding_side: str = "right",
        logits: str = "all",
        **kwargs: Any,
    ) -> PulseOutput:
        """Training/scoring forward; loss = mean CE over labels != IGNORE_INDEX (shifted by the LM).

        ``logits="supervised"`` (with labels; what the training recipe uses) applies the LM head
        only at the positions that predict a supervised token in some row of the batch (about 60
        of ~3200 in an ECG sample) and returns those logits [B, K, vocab] with their positions in
        ``logit_positions``: the same loss and gradients without the 32000-way fp32 logits of
        every image and prompt position. ``"all"``: logits at every position.
        """
        if logits not in ("all", "supervised"):
            raise ValueError(f"logits must be 'all' or 'supervised', not {logits!r}")
        merged = self.prepare_inputs_embeds(input_ids, images, image_sizes, attention_mask, labels, padding_side)
        if logits == "supervised" and merged.labels is not None:
            return self._supervised_forward(merged, **kwargs)
        out = self.language_model(
            inputs_embeds=merged.inputs_embeds,
            attention_mask=merged.attention_mask,
            position_ids=merged.position_ids,
            labels=merged.labels,
            use_cache=False,
            **kwargs,
        )
        return PulseOutput(out.loss, out.logits, merged.attention_mask, merged.labels, sum(merged.truncated))

    def _supervised_forward(self, merged: MergedInputs, **kwargs: Any) -> PulseOutput:
        """The decoder over every position, the LM head and loss only where a token is predicted
        that is supervised: position t predicts t + 1, so t is kept when labels[:, t + 1] is set
        in any row; the others would only add IGNORE_INDEX terms to the loss."""
        lm = self.language_model
        hidden = lm.model(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask,
                          position_ids=merged.position_ids, use_cache=False, **kwargs).last_hidden_state
        targets_all = merged.labels[:, 1:]
        positions = (targets_all != IGNORE_INDEX).any(dim=0).nonzero().flatten()  # [K]
        logits = lm.lm_head(hidden[:, positions])  # [B, K, vocab]
        targets = targets_all[:, positions]
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                           ignore_index=IGNORE_INDEX)
        return PulseOutput(loss, logits, merged.attention_mask, merged.labels, sum(merged.truncated),
                           logit_positions=positions)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | Sequence[Sequence[int]],
        images: Sequence[torch.Tensor] | torch.Tensor | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        attention_mask: torch.Tensor | None = None,
        return_merged: bool = False,
        pad_to_multiple_of: int | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, MergedInputs]:
        """Left-padded batched generation on inputs_embeds; returns only the new token ids [B, N]."""
        merged = self.prepare_inputs_embeds(input_ids, images, image_sizes, attention_mask, None, "left",
                                            pad_to_multiple_of)
        generate_kwargs.setdefault("pad_token_id", self.language_model.config.pad_token_id
                                   if self.language_model.config.pad_token_id is not None
                                   else self.language_model.config.eos_token_id)
        out = self.language_model.generate(
            inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask, **generate_kwargs
        )
        return (out, merged) if return_merged else out


def _to_lists(ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | None) -> list[list[int]]:
    """Per-sample id lists with padding removed (mask 0 positions dropped, either side)."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 1:
            ids = ids[None]
        if attention_mask is None:
            return [row.tolist() for row in ids]
        return [row[m.bool()].tolist() for row, m in zip(ids, attention_mask.to(ids.device))]
    return [list(x) for x in ids]
