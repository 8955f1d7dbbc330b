"""Tiny random HF image-text-to-text baselines for tests (no downloads): the baseline matrix.

    BASELINES                                      the architecture names, in matrix order
    make_tiny_baseline(arch, out_dir, seed=0) -> Path
        a random tiny checkpoint of ``arch`` saved with its REAL processor class (image
        processor, video processor where the processor has one), a byte-level BPE tokenizer
        trained here with ``tokenizers`` carrying the family's special tokens, and a chat template
        in the family's layout; loadable by AutoModelForImageTextToText / AutoProcessor.

Sizes: text hidden 32, 2 layers, 4 heads (head dim 8); vision hidden 32, 1 layer, 8 px patches (4 px
for the Qwen family, whose images are resized to multiples of patch x merge); 32 px tiles or
at most 32x32 px images, so an image becomes 4-88 embeddings (Gemma 3 always 4; LLaVA-OneVision
most: base tile + anyres tiles + newlines). Chat templates are written
here after each family's published prompt layout (roles, turn markers, where the image goes,
the BOS the template writes itself); they are not copies of the hub files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulse_models.testing import _CORPUS, _spread_init

BPE_VOCAB = 360  # 256 byte symbols + ~100 merges: short prompts, enough ids for varied random outputs
TEXT = {  # shared tiny decoder (Llama / Qwen2 / Gemma 3 field names)
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}
QWEN_PATCH = 4  # Qwen2-VL patch side; images resize to multiples of patch * merge (8 px)
QWEN_MAX_PIXELS = 32 * 32  # at most (32/4)^2 / 2^2 = 16 image tokens per image
TILE = 32  # SigLIP / InternViT / Idefics3 input side in pixels
PATCH = 8  # their patch side: (32/8)^2 = 16 patches per tile

# ---- chat templates (the layouts of the families' instruct checkpoints) -------------------------
# A content list may hold {"type": "image"} and {"type": "text", "text": ...} parts; plain strings too.
_PARTS = ("{% if message['content'] is string %}{{ message['content'] }}{% else %}"
          "{% for part in message['content'] %}{% if part['type'] == 'image' %}IMAGE"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}")

# Qwen2-VL / Qwen2.5-VL: ChatML with a default system turn; the image as vision_start/pad/end.
QWEN_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n" + _PARTS.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-OneVision (Qwen2 decoder): ChatML, images first in the turn, then the text on a new line.
LLAVA_OV_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Idefics3: the template writes the BOS itself; "User:<image>text<end_of_utterance>\nAssistant:".
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is not string and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    + _PARTS.replace("IMAGE", "<image>") + "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# Gemma 3: "<bos><start_of_turn>user\n<start_of_image>text<end_of_turn>\n<start_of_turn>model\n".
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n" + _PARTS.replace("IMAGE", "<start_of_image>").replace(
        "{{ part['text'] }}", "{{ part['text'] | trim }}")
    + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# InternVL 3 (Qwen2 decoder): ChatML with its own system line; "<IMG_CONTEXT>\n" before the text
# (the processor expands it to <img> + image_seq_length contexts per tile + </img>).
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are InternVL, a multimodal assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n" + _PARTS.replace("IMAGE", "<IMG_CONTEXT>\n")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_bpe_tokenizer(specials: list[str], bos: str | None = None, **named: str) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the tiny corpus in well under a second.

    ``specials`` become special added tokens (ids after the learned vocabulary, so the byte
    alphabet keeps ids 0-255); with ``bos`` the tokenizer prepends it, as Llama-3 and Gemma
    tokenizers do. ``named`` sets bos_token/eos_token/pad_token/... and model-specific names
    (e.g. ``image_token="<image_soft_token>"``) as tokenizer attributes.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tok.add_special_tokens(specials)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    standard = {k: named.pop(k) for k in list(named) if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=TEXT["max_position_embeddings"],
                                   model_specific_special_tokens=named or None, **standard)


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _text(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    return dict(TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra)


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def _qwen_vl(version: str) -> tuple[Any, Any]:
    """Qwen2-VL ("2") or Qwen2.5-VL ("2.5"): M-RoPE decoder, native-resolution ViT with 2x2 merging."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tok = train_bpe_tokenizer(_QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    image_id, video_id, start_id = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>")
    # head dim 8 -> 4 rotary frequencies split over (time, height, width)
    text = _text(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})
    vision = {"depth": 1, "num_heads": 4, "patch_size": QWEN_PATCH, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3}
    sizes = {"min_pixels": 8 * 8, "max_pixels": QWEN_MAX_PIXELS, "patch_size": QWEN_PATCH, "merge_size": 2,
             "temporal_patch_size": 2}
    if version == "2":
        from transformers import (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLProcessor,
        )

        config = Qwen2VLConfig(text_config=text, vision_config=dict(vision, embed_dim=32, hidden_size=32,
                                                                     mlp_ratio=2),
                               image_token_id=image_id, video_token_id=video_id, vision_start_token_id=start_id)
        model_cls, proc_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
        )

        config = Qwen2_5_VLConfig(
            text_config=text, vision_config=dict(vision, hidden_size=32, intermediate_size=64, out_hidden_size=32,
                                                 window_size=16, fullatt_block_indexes=[0]),
            image_token_id=image_id, video_token_id=video_id, vision_start_token_id=start_id)
        model_cls, proc_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    processor = proc_cls(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tok,
                         video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=QWEN_VL_TEMPLATE)
    return model_cls(config), processor


def _llava_onevision() -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP + 2-layer MLP + Qwen2, anyres tiles with image_newline."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tok = train_bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
                              eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pinpoints = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]  # (height, width)
    config = LlavaOnevisionConfig(
        text_config=dict(_text(tok), model_type="qwen2"),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 4, "image_size": TILE, "patch_size": PATCH},
        image_token_index=_ids(tok, "<image>")[0], video_token_index=_ids(tok, "<video>")[0],
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False,
    )
    size = {"height": TILE, "width": TILE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tok, video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(TILE // PATCH) ** 2, vision_feature_select_strategy="full", chat_template=LLAVA_OV_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    return LlavaOnevisionForConditionalGeneration(config), processor


def _idefics3() -> tuple[Any, Any]:
    """Idefics3: SigLIP-style encoder, pixel-shuffle connector, Llama-3 decoder, image splitting."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = train_bpe_tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<fake_token_around_image>", "<image>",
                               "<end_of_utterance>", "<global-img>", *grid],
                              bos="<|begin_of_text|>", bos_token="<|begin_of_text|>",
                              eos_token="<end_of_utterance>", pad_token="<|end_of_text|>")
    scale = 2  # pixel shuffle: (32/8)^2 / 2^2 = 4 embeddings per 32 px tile
    config = Idefics3Config(
        text_config=dict(_text(tok), model_type="llama"),
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "image_size": TILE, "patch_size": PATCH},
        image_token_id=_ids(tok, "<image>")[0], scale_factor=scale, tie_word_embeddings=False,
    )
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE},
                                             do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=(TILE // PATCH) ** 2 // scale**2, chat_template=IDEFICS3_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


def _gemma3() -> tuple[Any, Any]:
    """Gemma 3: SigLIP + average-pooled projection to a fixed token count, Gemma 3 decoder."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    tok = train_bpe_tokenizer(["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                               "<end_of_image>", "<image_soft_token>"],
                              bos="<bos>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                              boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    boi, eoi, soft = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    tokens_per_image = 4  # 4x4 patches average-pooled to 2x2
    config = Gemma3Config(
        text_config=dict(_text(tok), head_dim=8, sliding_window=64, query_pre_attn_scalar=8),
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": TILE, "patch_size": PATCH, "vision_use_head": False},
        mm_tokens_per_image=tokens_per_image, boi_token_index=boi, eoi_token_index=eoi, image_token_index=soft,
        tie_word_embeddings=False,
    )
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": TILE, "width": TILE}),
                                tokenizer=tok, image_seq_length=tokens_per_image, chat_template=GEMMA3_TEMPLATE)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 instruct stops at <end_of_turn> as well as <eos>.
    model.generation_config.eos_token_id = _ids(tok, "<eos>", "<end_of_turn>")
    return model, processor


def _internvl() -> tuple[Any, Any]:
    """InternVL 3 (transformers-native): InternViT + pixel shuffle + MLP + Qwen2, dynamic 32 px tiles."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tok = train_bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                               "<video>"],
                              eos_token="<|im_end|>", pad_token="<|endoftext|>", start_image_token="<img>",
                              end_image_token="</img>", context_image_token="<IMG_CONTEXT>", video_token="<video>")
    config = InternVLConfig(
        text_config=dict(_text(tok), model_type="qwen2"),
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": [TILE, TILE], "patch_size": [PATCH, PATCH]},
        image_token_id=_ids(tok, "<IMG_CONTEXT>")[0], downsample_ratio=0.5, projector_hidden_act="gelu",
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False,
    )
    size = {"height": TILE, "width": TILE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=4),
        tokenizer=tok, video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=(TILE // PATCH) ** 2 // 4, chat_template=INTERNVL_TEMPLATE,
    )
    return InternVLForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "qwen2_vl": lambda: _qwen_vl("2"),
    "qwen2_5_vl": lambda: _qwen_vl("2.5"),
    "llava_onevision": _llava_onevision,
    "idefics3": _idefics3,
    "gemma3": _gemma3,
    "internvl": _internvl,
}
BASELINES: tuple[str, ...] = tuple(_BUILDERS)


def make_tiny_baseline(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build, spread-initialise (well separated greedy logits) and save one tiny baseline."""
    import torch

    if arch not in _BUILDERS:
        raise ValueError(f"unknown baseline {arch!r}; choose one of {BASELINES}")
    torch.manual_seed(seed)
    model, processor = _BUILDERS[arch]()
    _spread_init(model, seed)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
