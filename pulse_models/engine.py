"""Batched generation engines shared by the lmms-eval adapter and bench/eval_throughput.py.

One item = a conversation (user turns with earlier answers) about one optional image. Engines
turn items into model inputs and generate a batch of them with left padding, returning one
``GenOutput`` per item (text, token ids, truncation flag). The adapter adds lmms-eval plumbing
(request order, failure texts, progress); the benchmark times exactly this code.

    OriginalEngine(model, tokenizer, image_processor, history_mode="standard")   PULSE format
    HFEngine(model, processor)        any transformers image-text-to-text model + chat template
    GenSettings                        max_new_tokens, temperature, top_p, num_beams, until, cache,
                                       min_new_tokens (benchmarks: EOS ignored until then)
    engine.process_image(image) -> processed image (pixels + size; reusable across turns)
    engine.prepare(turns, processed_image_or_None) -> PreparedItem (raises ImageLoadError / ValueError)
    engine.generate(prepared_items, settings) -> list[GenOutput]
    WorkItem, run_batches(engine, items, settings, batch_size, prefetch_workers, progress)
        -> list[GenOutput | str]: the loop the adapter and the benchmark share: items are prepared
        (image decode + anyres preprocessing + tokenisation) in a thread pool one batch ahead of
        the GPU, batches that fail are retried item by item, failures become FAILED_PREFIX texts.

``turns`` is [(user_text, answer or None), ...] with the last answer None; the image goes in
front of the first user turn ("<image>\\n" + text), as the reference did.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from pulse_models.conversation import (
    IMAGE_TOKEN,
    SYSTEMS,
    build_prompt,
    tokenize_with_image,
)
from pulse_tasks.scoring.records import FAILED_MARKER as FAILED_PREFIX  # noqa: F401 -- a failed item's response (re-exported)
from pulse_tasks.scoring.records import failed_text

logger = logging.getLogger(__name__)

# The reference protocol: greedy decoding, one beam, up to 1024 new tokens.
REFERENCE_MAX_NEW_TOKENS = 1024
# With a static KV cache, prompts are left-padded to a multiple of this: the cache and the
# compiled decode graph then keep one shape across batches instead of recompiling per length.
STATIC_CACHE_BUCKET = 64
# Threads preparing the next batch: PIL resampling and numpy release the GIL, and anyres
# preprocessing of a 2200x1700 scan costs ~50-130 ms of CPU, more than a GPU item at batch 16.
DEFAULT_PREFETCH_WORKERS = 8


@dataclass(frozen=True)
class GenSettings:
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS  # new tokens per item (EOS stops earlier)
    temperature: float = 0.0  # 0 -> greedy (do_sample False)
    top_p: float | None = None  # nucleus sampling, only with temperature > 0
    num_beams: int = 1  # beam search width
    until: tuple[str, ...] = ()  # stop strings applied to the decoded text (cut at the first)
    cache_implementation: str | None = None  # e.g. "static" (fixed-shape KV cache) on GPU
    # > 0: EOS is suppressed until this many new tokens exist (transformers' min_new_tokens).
    # The adapter never sets it (EOS stops answers); bench/eval_throughput.py sets it to
    # max_new_tokens so every item does the workload's full decode.
    min_new_tokens: int = 0

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
        if self.min_new_tokens > 0:
            kw["min_new_tokens"] = self.min_new_tokens
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

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, history_mode: str = "standard",
                 conv_template: str = "llava_v1") -> None:
        if history_mode not in ("standard", "reference"):
            raise ValueError(f"history_mode must be 'standard' or 'reference', not {history_mode!r}")
        if conv_template not in SYSTEMS:
            raise ValueError(f"conv_template must be one of {sorted(SYSTEMS)}, not {conv_template!r}")
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.history_mode = history_mode
        self.conv_template, self.system = conv_template, SYSTEMS[conv_template]
        # Fast tokenizers mutate their truncation state per call ("Already borrowed" across threads).
        self._tok_lock = threading.Lock()
        self.eos_ids = _eos_ids(tokenizer.eos_token_id, model.language_model.generation_config.eos_token_id)

    def prompt(self, turns: Sequence[tuple[str, str | None]], has_image: bool) -> str:
        turns = [(first_user_text(turns[0][0], has_image), turns[0][1]), *turns[1:]]
        return build_prompt(turns, history_mode=self.history_mode, system=self.system)

    def process_image(self, image: Any) -> Any:
        """PIL/path/bytes -> ProcessedImage (pixel_values [1+tiles,3,T,T], image_size); pinned
        host memory when the model is on CUDA, so the copy to the GPU overlaps."""
        processed = self.image_processor.preprocess(image)
        if self.model.device.type == "cuda":
            processed.pixel_values = processed.pixel_values.pin_memory()
        return processed

    def prepare(self, turns: Sequence[tuple[str, str | None]], image: Any | None) -> PreparedItem:
        """``image``: a ProcessedImage (from process_image) or None for a text-only prompt."""
        pixel_values = image_size = None
        n_img = 0
        if image is not None:
            pixel_values, image_size = image.pixel_values, image.image_size
            n_img = self.image_processor.num_image_tokens(image_size)
        with self._tok_lock:
            ids = tokenize_with_image(self.prompt(turns, image is not None), self.tokenizer)
        return PreparedItem(ids, pixel_values, image_size, len(ids) - (1 if image is not None else 0) + n_img)

    def generate(self, items: Sequence[PreparedItem], settings: GenSettings, streamer: Any = None) -> list[GenOutput]:
        import torch

        images = [it.pixel_values for it in items if it.pixel_values is not None]
        sizes = [it.image_size for it in items if it.pixel_values is not None]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out, merged = self.model.generate(
                [it.input_ids for it in items], images or None, sizes or None, return_merged=True,
                pad_to_multiple_of=STATIC_CACHE_BUCKET if settings.cache_implementation == "static" else None,
                pad_token_id=pad, eos_token_id=sorted(self.eos_ids), streamer=streamer, **settings.generate_kwargs(),
            )
        with self._tok_lock:
            decoded = _decode_rows(self.tokenizer, out, self.eos_ids, settings.until)
        return [GenOutput(text, ids, trunc, length)
                for (text, ids), trunc, length in zip(decoded, merged.truncated, merged.lengths)]


class HFEngine:
    """Generation with any transformers image-text-to-text model through its processor's chat template."""

    def __init__(self, model: Any, processor: Any, history_mode: str = "standard") -> None:
        self.model, self.processor = model, processor
        self.history_mode = history_mode  # only used by the llava_v1 fallback (no chat template)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"
        self._tok_lock = threading.Lock()
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
            return build_prompt([(first_user_text(turns[0][0], has_image), turns[0][1]), *turns[1:]],
                                history_mode=self.history_mode)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def process_image(self, image: Any) -> Any:
        """PIL/path/bytes -> RGB PIL image (the processor does the rest in generate)."""
        from pulse_models.image_processing import load_image

        return load_image(image)

    def prepare(self, turns: Sequence[tuple[str, str | None]], image: Any | None) -> PreparedItem:
        img = image
        with self._tok_lock:
            text = self.prompt(turns, img is not None)
            n = len(self.tokenizer(text, add_special_tokens=self._add_special_tokens(text)).input_ids)
        return PreparedItem([], None, img.size if img is not None else None, n, extra={"text": text, "image": img})

    def _add_special_tokens(self, text: str) -> bool:
        """False when the rendered chat template already starts with the BOS (Gemma 3, Idefics3,
        Llama 3 templates write it): the tokenizer would add a second one. The rule
        ``processor.apply_chat_template(tokenize=True)`` applies, so prompts match plain transformers."""
        bos = getattr(self.tokenizer, "bos_token", None)
        return not (bos and text.startswith(bos))

    def processor_inputs(self, items: Sequence[PreparedItem]) -> Any:
        """The processor's batch (input_ids, attention_mask, pixel_values and whatever else the
        family needs: image_grid_thw, pixel_attention_mask, image_sizes, ...) on the host, left-padded."""
        texts = [it.extra["text"] for it in items]
        images = [it.extra["image"] for it in items if it.extra["image"] is not None]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": "left",
                                  "add_special_tokens": self._add_special_tokens(texts[0])}
        if images:
            if len(images) != len(items):
                raise ValueError("a batch mixes items with and without images")
            # One list of images per prompt: the form processor.apply_chat_template passes for a batch.
            kwargs["images"] = [[img] for img in images]
        with self._tok_lock:
            return self.processor(**kwargs)

    def generate(self, items: Sequence[PreparedItem], settings: GenSettings, streamer: Any = None) -> list[GenOutput]:
        import torch

        inputs = self.processor_inputs(items)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.model.device, dtype) if v.is_floating_point() else v.to(self.model.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, pad_token_id=pad, streamer=streamer, **settings.generate_kwargs())
        new = out[:, inputs["input_ids"].shape[1]:]
        with self._tok_lock:
            decoded = _decode_rows(self.tokenizer, new, self.eos_ids, settings.until)
        n_prompt = inputs["attention_mask"].sum(dim=1).tolist()
        return [GenOutput(text, ids, False, int(n)) for (text, ids), n in zip(decoded, n_prompt)]


@dataclass
class WorkItem:
    """One generation: ``turns`` plus where its image comes from."""

    key: Any  # identifies the item in logs (lmms-eval doc id)
    turns: list[tuple[str, str | None]]
    load_image: Callable[[], Any] | None = None  # returns PIL/path/bytes (may raise); None = no image
    processed: Any = None  # engine.process_image output, filled on first use and reused by later turns


def _prepare_one(engine: Any, item: WorkItem) -> PreparedItem | str:
    try:
        if item.processed is None and item.load_image is not None:
            raw = item.load_image()
            item.processed = engine.process_image(raw) if raw is not None else None
        return engine.prepare(item.turns, item.processed)
    except Exception as exc:  # noqa: BLE001 - unreadable image, bad prompt: recorded, the run goes on
        logger.error("pulse: cannot prepare item %s: %s: %s", item.key, type(exc).__name__, exc)
        return failed_text(f"input error: {type(exc).__name__}: {exc}")


def _generate_batch(engine: Any, prepared: list[PreparedItem | str], settings: GenSettings,
                    keys: Sequence[Any]) -> list[GenOutput | str]:
    """Generate one batch; a failing batch is retried item by item (one bad item cannot fail its
    neighbours, and an out-of-memory batch still finishes)."""
    todo = [i for i, p in enumerate(prepared) if isinstance(p, PreparedItem)]
    results: list[GenOutput | str] = list(prepared)  # type: ignore[arg-type]
    if not todo:
        return results
    try:
        for i, out in zip(todo, engine.generate([prepared[i] for i in todo], settings)):
            results[i] = out
        return results
    except Exception as exc:  # noqa: BLE001
        if len(todo) == 1:
            logger.error("pulse: generation failed for item %s: %s", keys[todo[0]], exc)
            results[todo[0]] = failed_text(f"generation error: {type(exc).__name__}: {exc}")
            return results
        logger.warning("pulse: batch of %d failed (%s: %s); retrying items one by one", len(todo), type(exc).__name__, exc)
        _empty_cuda_cache()
    for i in todo:
        try:
            results[i] = engine.generate([prepared[i]], settings)[0]
        except Exception as exc:  # noqa: BLE001
            logger.error("pulse: generation failed for item %s: %s", keys[i], exc)
            results[i] = failed_text(f"generation error: {type(exc).__name__}: {exc}")
            _empty_cuda_cache()
    return results


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _chunks(items: Sequence[WorkItem], n: int) -> Iterator[list[WorkItem]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def run_batches(
    engine: Any,
    items: Sequence[WorkItem],
    settings: GenSettings,
    batch_size: int,
    prefetch_workers: int = DEFAULT_PREFETCH_WORKERS,
    progress: Callable[[int], None] | None = None,
) -> list[GenOutput | str]:
    """Generate ``items`` in order, ``batch_size`` at a time; preparation of batch k+1 overlaps
    generation of batch k when ``prefetch_workers`` > 0. Returns GenOutput or a failure text per item."""
    batches = list(_chunks(items, max(1, batch_size)))
    results: list[GenOutput | str] = []
    if prefetch_workers <= 0:
        for batch in batches:
            prepared = [_prepare_one(engine, it) for it in batch]
            results += _generate_batch(engine, prepared, settings, [it.key for it in batch])
            if progress:
                progress(len(batch))
        return results
    with ThreadPoolExecutor(max_workers=prefetch_workers, thread_name_prefix="pulse-prep") as pool:
        def submit(batch: list[WorkItem]) -> list[Future]:
            return [pool.submit(_prepare_one, engine, it) for it in batch]

        pending = submit(batches[0]) if batches else []
        for k, batch in enumerate(batches):
            prepared = [f.result() for f in pending]
            pending = submit(batches[k + 1]) if k + 1 < len(batches) else []
            results += _generate_batch(engine, prepared, settings, [it.key for it in batch])
            if progress:
                progress(len(batch))
    return results
