"""lmms-eval model ``pulse``: PULSE-7B (original LLaVA format) or any HF image-text-to-text model.

    lmms-eval --model pulse --model_args pretrained=PULSE-ECG/PULSE-7B,batch_size=8 --tasks ecgbench
    accelerate launch --num_processes 8 -m lmms_eval --model pulse --model_args pretrained=DIR ...

Model args: ``pretrained`` (directory or hub id), ``dtype`` (float16 default for the PULSE
format, "auto" for HF models; float32/bfloat16 accepted), ``attn_implementation`` (sdpa;
flash_attention_2 needs flash-attn), ``batch_size``, ``device``/``device_map`` (one device per
process; data parallel via accelerate), ``conv_template`` (auto -> llava_v1 for the PULSE format,
the processor's chat template otherwise; llava_v1 forces the LLaVA layout on HF models too;
vicuna_v1, original format only: LLaVA-1.5's eval conv_mode, llava_v1 with its "user" system prompt),
``arena_history`` (standard | reference: the layout PULSE's arena script produced; applies to
llava_v1 prompts, a chat template renders history its own way), ``trust_remote_code`` (false), ``max_new_tokens``/
``temperature``/``top_p``/``num_beams`` (defaults; the task's generation_kwargs and --gen_kwargs
win), ``cache_implementation`` (e.g. static on GPU), ``prefetch_workers`` (threads preparing the
next batch's images and prompts while the GPU generates; 0 = inline).

Failures never stop a run: an unreadable image or a failed generation gives that item the text
``[ECGBENCH_GENERATION_FAILED] <reason>`` (the scorer counts it invalid) and a log line with its
doc id. Prompts right-truncated to tokenizer_model_max_length are logged and counted; the count
is printed at the end of every generate call (``self.stats``).

The checkpoint is loaded by ``pulse_models.loading.load_model`` (option checks, hub download,
format detection, dtype and device rules, model, tokenizer and engine), the loader `ecgbench ask`
and Studio use too; this module adds only lmms-eval's interface (model args, data parallelism,
request batching, logging). torch/transformers are imported by the loader, inside ``Pulse.__init__``.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from lmms_eval.api.model import lmms

from pulse_models.engine import (
    DEFAULT_PREFETCH_WORKERS,
    FAILED_PREFIX,
    GenOutput,
    GenSettings,
    WorkItem,
    failed_text,
    run_batches,
)

logger = logging.getLogger("pulse_models.adapter")

__all__ = ["Pulse", "FAILED_PREFIX", "failed_text"]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class Pulse(lmms):
    """The ``pulse`` lmms-eval model (simple interface: generate_until, generate_until_multi_round)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "PULSE-ECG/PULSE-7B",
        dtype: str | None = None,
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        device: str | None = None,
        device_map: str | None = None,
        conv_template: str = "auto",
        arena_history: str = "standard",
        trust_remote_code: bool | str = False,
        max_new_tokens: int | str = 1024,
        temperature: float | str = 0.0,
        top_p: float | str | None = None,
        num_beams: int | str = 1,
        cache_implementation: str | None = None,
        prefetch_workers: int | str = DEFAULT_PREFETCH_WORKERS,
        # Accepted and ignored: lmms-eval's evaluator passes max_batch_size (its --max_batch_size flag,
        # for batch_size=auto, which pulse does not offer) to every model whenever it is set.
        max_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"pulse: unknown model args {sorted(kwargs)}")
        from accelerate import Accelerator

        from pulse_models.loading import load_model

        if not str(batch_size).isdigit():
            raise ValueError(f"pulse: batch_size must be a positive integer, not {batch_size!r}")
        self.batch_size_per_gpu = max(1, int(batch_size))
        self.prefetch_workers = max(0, int(prefetch_workers))
        self.pretrained = pretrained
        self.defaults = GenSettings(
            max_new_tokens=int(max_new_tokens), temperature=float(temperature),
            top_p=float(top_p) if top_p not in (None, "", "None") else None, num_beams=int(num_beams),
            cache_implementation=cache_implementation or None,
        )

        accelerator = Accelerator()
        self.accelerator = accelerator
        if accelerator.num_processes > 1:  # one replica per process: cuda:LOCAL_RANK or cpu
            device, device_map = accelerator.device, None
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        else:
            self._rank, self._world_size = 0, 1
        # Option checks, checkpoint resolution and format, dtype/device rules, model and engine:
        # the one loader (pulse_models.loading), as `ecgbench ask` and Studio use it.
        loaded = load_model(pretrained, dtype=dtype, attn_implementation=attn_implementation, device=device,
                            device_map=device_map, conv_template=conv_template, arena_history=arena_history,
                            trust_remote_code=_as_bool(trust_remote_code))
        self._device, self.format = loaded.device, loaded.format
        self._model, self._tokenizer, self._config = loaded.model, loaded.tokenizer, loaded.config
        self.engine: Any = loaded.engine
        self.max_length = loaded.max_length
        self.stats = {"items": 0, "failed": 0, "truncated": 0, "seconds": 0.0}
        if self.rank == 0:
            logger.info("pulse: loaded %s (%s) on %s, batch size %d, world size %d", pretrained, self.format,
                        self._device, self.batch_size_per_gpu, self.world_size)

    # ---- lmms-eval properties -----------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def config(self) -> Any:
        return self._config

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> Any:
        return self._device

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.eos_token_id

    def clean(self) -> None:
        """Free the model before lmms-eval scores (the engine holds references to it too)."""
        self.engine = None
        super().clean()

    # ---- helpers --------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _load_visual(self, doc_to_visual: Any, task: str, split: str, doc_id: int) -> Any:
        """The item's first visual (PIL image, path or bytes) or None; runs in a prefetch thread."""
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else []
        if isinstance(visuals, (list, tuple)):
            visuals = [v for v in visuals if v is not None]
            if len(visuals) > 1:
                logger.warning("pulse: %d visuals for doc %s; using the first (one image per prompt)", len(visuals), doc_id)
            return visuals[0] if visuals else None
        return visuals

    def _record(self, out: GenOutput | str, doc_id: Any) -> str:
        self.stats["items"] += 1
        if isinstance(out, str):
            self.stats["failed"] += 1
            return out
        if out.truncated:
            self.stats["truncated"] += 1
            logger.warning("pulse: prompt of doc %s right-truncated (%d merged tokens > %s)", doc_id,
                           out.n_prompt_tokens, self.max_length)
        return out.text

    def _progress(self, total: int, desc: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, disable=(self.rank != 0), desc=desc, unit="item", dynamic_ncols=True)

    def _report(self, start: float, n: int) -> None:
        elapsed = time.perf_counter() - start
        self.stats["seconds"] += elapsed
        msg = (f"pulse: {n} requests in {elapsed:.1f}s ({n / max(elapsed, 1e-9):.2f} items/s) on rank {self.rank}; "
               f"run totals: {self.stats['failed']} failed, {self.stats['truncated']} prompts truncated "
               f"to {self.max_length} tokens")
        logger.info(msg)
        if self.rank == 0 or self.stats["truncated"] or self.stats["failed"]:
            print(msg, flush=True)

    def _sort_key(self, args: tuple) -> tuple[int, str]:
        # Longest prompts first (padding waste is smallest, OOMs show early); images assumed alike.
        return -len(self._tokenizer(args[0]).input_ids), args[0]

    def _batches(self, items: list[WorkItem], settings: GenSettings, progress: Any = None) -> list[GenOutput | str]:
        return run_batches(self.engine, items, settings, self.batch_size, self.prefetch_workers, progress)

    # ---- lmms-eval API ----------------------------------------------------------------------------
    def loglikelihood(self, requests: list) -> list:
        raise NotImplementedError("pulse: loglikelihood is not supported (ECGBench only generates)")

    def generate_until(self, requests: list) -> list[str]:
        from lmms_eval import utils

        if not requests:
            return []
        start = time.perf_counter()
        collator = utils.Collator([r.args for r in requests], self._sort_key, grouping=True)
        pbar = self._progress(len(requests), "pulse generating")
        results: list[str] = []
        # n=0: one chunk per generation-settings group, longest prompts first; run_batches batches it.
        for group in collator.get_batched(n=0, batch_fn=None):
            contexts, gen_kwargs, doc_to_visuals, doc_ids, tasks, splits = zip(*group)
            settings = GenSettings.from_gen_kwargs(dict(gen_kwargs[0]), self.defaults)
            items = [WorkItem(doc_ids[k], [(contexts[k], None)],
                              partial(self._load_visual, doc_to_visuals[k], tasks[k], splits[k], doc_ids[k]))
                     for k in range(len(group))]
            outs = self._batches(items, settings, pbar.update)
            for ctx, gk, out, doc_id in zip(contexts, gen_kwargs, outs, doc_ids):
                text = self._record(out, doc_id)
                results.append(text)
                self.cache_hook.add_partial("generate_until", (ctx, gk), text)
        pbar.close()
        self._report(start, len(requests))
        return collator.get_original(results)

    def generate_until_multi_round(self, requests: list) -> list[list[str]]:
        """Multi-turn items (the arena): round r's prompt carries the model's own earlier answers.

        Round 0 uses the request context; later rounds ask the task's doc_to_text(doc,
        previous_output=..., round_idx=r, previous_round_info=...) for (visuals, text, terminal,
        outputs, info). The next question is ``info["question"]`` when the task provides it
        (pulse_tasks.glue.hooks does), else ``text``. The round-0 image stays attached to the first turn
        (preprocessed once). Returns one list of answers (one per round) per request; a failed
        round ends that item's conversation with a FAILED_PREFIX text.
        """
        from lmms_eval import utils

        if not requests:
            return []
        start = time.perf_counter()
        collator = utils.Collator([r.args for r in requests], self._sort_key, grouping=True)
        pbar = self._progress(len(requests), "pulse generating (multi-round)")
        results: list[list[str]] = []
        for group in collator.get_batched(n=0, batch_fn=None):
            contexts, gen_kwargs, doc_to_visuals, doc_to_texts, doc_ids, tasks, splits = zip(*group)
            settings = GenSettings.from_gen_kwargs(dict(gen_kwargs[0]), self.defaults)
            n = len(group)
            items = [WorkItem(doc_ids[k], [(contexts[k], None)],
                              partial(self._load_visual, doc_to_visuals[k], tasks[k], splits[k], doc_ids[k]))
                     for k in range(n)]
            questions: list[list[str]] = [[contexts[k]] for k in range(n)]
            answers: list[list[str]] = [[] for _ in range(n)]
            infos: list[Any] = [None] * n
            active = list(range(n))
            round_idx = 0
            while active:
                if round_idx > 0:
                    active = [k for k in active if self._next_turn(k, round_idx, doc_to_texts[k], tasks[k], splits[k],
                                                                   doc_ids[k], questions, answers, infos)]
                    if not active:
                        break
                for k in active:
                    items[k].turns = list(zip(questions[k], answers[k])) + [(questions[k][-1], None)]
                outs = self._batches([items[k] for k in active], settings)
                still = []
                for k, out in zip(active, outs):
                    answers[k].append(self._record(out, doc_ids[k]))
                    if not isinstance(out, str):
                        still.append(k)
                active = still
                round_idx += 1
            for k in range(n):
                results.append(answers[k])
                self.cache_hook.add_partial("generate_until_multi_round", (contexts[k], gen_kwargs[k]), answers[k])
            pbar.update(n)
        pbar.close()
        self._report(start, len(requests))
        return collator.get_original(results)

    def _next_turn(self, k: int, round_idx: int, doc_to_text: Any, task: str, split: str, doc_id: Any,
                   questions: list[list[str]], answers: list[list[str]], infos: list[Any]) -> bool:
        """Ask the task for round ``round_idx`` of item k; False when its conversation is over."""
        try:
            _, text, terminal, _, info = doc_to_text(self._doc(task, split, doc_id), previous_output=list(answers[k]),
                                                     round_idx=round_idx, previous_round_info=infos[k])
        except Exception as exc:  # noqa: BLE001 - recorded as this round's answer
            logger.error("pulse: doc_to_text failed for doc %s round %d: %s", doc_id, round_idx, exc)
            answers[k].append(failed_text(f"doc_to_text error: {type(exc).__name__}: {exc}"))
            return False
        if terminal:
            return False
        infos[k] = info
        question = info.get("question") if isinstance(info, dict) else None
        questions[k].append(question if question is not None else text)
        return True
