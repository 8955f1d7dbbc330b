"""Batched generation engines shared by the lmms-eval adapter and bench/eval_throughput.py.

One item = a conversation (user turns with earlier answers) about one optional image. Engines
turn items into model inputs and generate a batch of them with left padding, returning one
``GenOutput`` per item (text, token ids, truncation flag). The adapter adds lmms-eval plumbing
(request order, failure texts, progress); the benchmark times exactly this code.

    OriginalEngine(model, tokenizer, image_processor, history_mode="standard")   PULSE format
    HFEngine(model, processor)        any transformers image-text-to-text model + chat template
    GenSettings                        max_new_tokens, temperature, top_p, num_beams, until, cache
    engine.prepare(turns, image) -> prepared item (raises ImageLoadError / ValueError)
    engine.generate(prepared_items, settings) -> list[GenOutput]

``turns`` is [(user_text, answer or None), ...] with the last answer None; the image goes in
front of the first user turn ("<image>\\n" + text), as the reference did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from pulse_models.conversation import IMAGE_TOKEN, build_prompt, tokenize_with_image

logger = logging.getLogger(__name__)

# The reference protocol: greedy decoding, one beam, up to 1024 new tokens.
REFERENCE_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS  # new tokens per item (EOS stops earlier)
    temperature: float = 0.0  # 0 -> greedy (do_sample False)
    top_p: float | None = None  # nucleus sampling, only with temperature > 0
    num_beams: int = 1  # beam search width
    until: tuple[str, ...] = ()  # stop strings applied to the decoded text (cut at the first)
    cache_implementation: str | None = None  # e.g. "static" (fixed-shape KV cache) on GPU

    @classmethod
    def from_gen_kwargs(cls, gen_kwargs: dict[str, Any], defaults: "GenSettings") -> "GenSettings":
        """lmms-eval generation_kwargs (task YAML / --gen_kwargs) over the adapter defaults."""
        until = gen_kwargs.get("until", defaults.until) or ()
        if isinstance(until, str):
            until = (until,)
        temperature = float(gen_kwargs.get("temperature", defaults.temperature) or 0.0)
        if gen_kwargs.get("do_sample") is False:
            temperature = 0.0
        top_p = gen_kwargs.get("top_p", defaults.top_p)
        return cls(
            max_new_tokens=int(gen_kwargs.get("max_new_tokens", defaults.max_new_tokens)),
            temperature=temperature,
            top_p=float(top_p) if top_p is not None else None,
            num_beams=int(gen_kwargs.get("num_beams", defaults.num_beams) or 1),
            until=tuple(until),
            cache_implementation=gen_kwargs.get("cache_implementation", defaults.cache_implementation),
        )

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "use_cache": True}
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature)
            if self.top_p is not None:
                kw["top_p"] = self.top_p
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.cache_implementation:
            kw["cache_implementation"] = self.cache_implementation
        return kw


@dataclass
class GenOutput:
    text: str  # decoded answer, special tokens skipped, stripped, cut at `until`
    token_ids: list[int]  # generated ids up to and including the first EOS
    truncated: bool = False  # the prompt was right-truncated to tokenizer_model_max_length
    n_prompt_tokens: int = 0  # merged prompt length (text + image tokens) before truncation


@dataclass
class PreparedItem:
    input_ids: list[int]  # llava_v1 ids with IMAGE_TOKEN_INDEX where the image goes
    pixel_values: Any = None  # [1 + tiles, 3, T, T] or None (text only)
    image_size: tuple[int, int] | None = None  # (width, height)
    n_tokens: int = 0  # merged length estimate (sorting / batching)
    extra: dict[str, Any] = field(default_factory=dict)


def first_user_text(text: str, has_image: bool) -> str:
    """Put the image in front of the first question, as the reference script did."""
    if not has_image:
        return text.replace(IMAGE_TOKEN, "").strip()
    if IMAGE_TOKEN in text:
        text = text.replace(IMAGE_TOKEN, "").strip()
    return IMAGE_TOKEN + "\n" + text


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """Cut at the earliest stop string (empty strings ignored)."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _decode_rows(tokenizer: Any, rows: Any, eos_ids: set[int], until: Sequence[str]) -> list[tuple[str, list[int]]]:
    out = []
    for row in rows.tolist():
        ids: list[int] = []
        for t in row:
            ids.append(t)
            if t in eos_ids:
                break
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        out.append((cut_at_stop(text, until).strip(), ids))
    return out


def _eos_ids(*candidates: Any) -> set[int]:
    ids: set[int] = set()
    for c in candidates:
        if c is None:
            continue
        if isinstance(c, int):
            ids.add(c)
        else:
            ids.update(int(x) for x in c)
    return ids


class OriginalEngine:
    """Generation with PulseLlavaForCausalLM (original LLaVA checkpoint format)."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, history_mode: str = "standard") -> None:
        if history_mode not in ("standard", "reference"):
            raise ValueError(f"history_mode must be 'standard' or 'reference', not {history_mode!r}")
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.history_mode = history_mode
        self.eos_ids = _eos_ids(tokenizer.eos_token_id, model.language_model.generation_config.eos_token_id)

    def prompt(self, turns: Sequence[tuple[str, str | None]], has_image: bool) -> str:
        turns = [(first_user_text(turns[0][0], has_image), turns[0][1]), *turns[1:]]
        return build_prompt(turns, history_mode=self.history_mode)

    def prepare(self, turns: Sequence[tuple[str, str | None]], image: Any | None) -> PreparedItem:
        pixel_values = image_size = None
        n_img = 0
        if image is not None:
            processed = self.image_processor.preprocess(image)
            pixel_values, image_size = processed.pixel_values, processed.image_size
            n_img = self.image_processor.num_image_tokens(image_size)
        ids = tokenize_with_image(self.prompt(turns, image is not None), self.tokenizer)
        return PreparedItem(ids, pixel_values, image_size, len(ids) - (1 if image is not None else 0) + n_img)

    def generate(self, items: Sequence[PreparedItem], settings: GenSettings) -> list[GenOutput]:
        import torch

        images = [it.pixel_values for it in items if it.pixel_values is not None]
        sizes = [it.image_size for it in items if it.pixel_values is not None]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out, merged = self.model.generate(
                [it.input_ids for it in items], images or None, sizes or None, return_merged=True,
                pad_token_id=pad, eos_token_id=sorted(self.eos_ids), **settings.generate_kwargs(),
            )
        decoded = _decode_rows(self.tokenizer, out, self.eos_ids, settings.until)
        return [GenOutput(text, ids, trunc, length)
                for (text, ids), trunc, length in zip(decoded, merged.truncated, merged.lengths)]


class HFEngine:
    """Generation with any transformers image-text-to-text model through its processor's chat template."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model, self.processor = model, processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos_ids = _eos_ids(self.tokenizer.eos_token_id, gen_eos)

    def prompt(self, turns: Sequence[tuple[str, str | None]], has_image: bool) -> str:
        messages: list[dict[str, Any]] = []
        for i, (user, answer) in enumerate(turns):
            content: list[dict[str, Any]] = []
            if i == 0 and has_image:
                content.append({"type": "image"})
            content.append({"type": "text", "text": user.replace(IMAGE_TOKEN, "").strip()})
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        if getattr(self.processor, "chat_template", None) is None:
            # No chat template shipped: the llava_v1 layout, which LLaVA-1.6 vicuna models expect.
            return build_prompt([(first_user_text(turns[0][0], has_image), turns[0][1]), *turns[1:]])
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prepare(self, turns: Sequence[tuple[str, str | None]], image: Any | None) -> PreparedItem:
        from pulse_models.image_processing import load_image

        img = load_image(image) if image is not None else None
        text = self.prompt(turns, img is not None)
        n = len(self.tokenizer(text).input_ids)
        return PreparedItem([], None, img.size if img is not None else None, n, extra={"text": text, "image": img})

    def generate(self, items: Sequence[PreparedItem], settings: GenSettings) -> list[GenOutput]:
        import torch

        texts = [it.extra["text"] for it in items]
        images = [it.extra["image"] for it in items if it.extra["image"] is not None]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            if len(images) != len(items):
                raise ValueError("a batch mixes items with and without images")
            kwargs["images"] = images
        inputs = self.processor(**kwargs)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.model.device, dtype) if v.is_floating_point() else v.to(self.model.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, pad_token_id=pad, **settings.generate_kwargs())
        new = out[:, inputs["input_ids"].shape[1]:]
        decoded = _decode_rows(self.tokenizer, new, self.eos_ids, settings.until)
        n_prompt = inputs["attention_mask"].sum(dim=1).tolist()
        return [GenOutput(text, ids, False, int(n)) for (text, ids), n in zip(decoded, n_prompt)]
