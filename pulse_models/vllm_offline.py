"""Greedy chat generation on vLLM for a list of image conversations, in one process (tests, bench).

    python -m pulse_models.vllm_offline SPEC.json OUT.json

SPEC: {"checkpoints": [dir, ...], "items": [{"image": path or null, "turns": [[question, answer
or null], ...]}, ...], "max_new_tokens": int, "engine": {LLM keyword arguments}, optionally
"extra_items": {dir: [item, ...]} sent to that checkpoint after the common items, or instead of
"items" "workloads": {name: {"items": [...], "max_new_tokens": int}} (one engine, several
workloads), and "ignore_eos": true (exactly max_new_tokens per item, for timing)}. Each item is
sent as OpenAI-style chat messages (the image as a PNG data URL on the first user message, as
lmms-eval's vllm model sends it); the last turn's answer is generated.

OUT: {"checkpoints": {dir: {"outputs": [{"prompt_token_ids", "token_ids", "text"}, ...],
"startup_s", "generate_s", "image_token_id", "workloads": {name: {"outputs", "generate_s"}}}},
"errors": {dir: message}}; a checkpoint vLLM refuses gets its error message instead of outputs
("outputs"/"generate_s" are the "items" workload's).

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 and the "uni" executor unless
the spec says otherwise): on a small CPU machine each extra vLLM process costs most of a minute
of imports.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# In-process engine core: set before vllm is imported.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def chat_messages(turns: list[list[Any]], image: Any | None) -> list[dict[str, Any]]:
    """[(question, answer), ..., (question, None)] -> chat messages, the image on the first turn
    (the layout `ecgbench ask --api-base` sends a server: ``pulse_models.served.chat_messages``)."""
    from pulse_models.served import chat_messages as served_messages
    from pulse_models.served import image_data_url

    return served_messages(turns, image_data_url(image) if image is not None else None)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    from vllm import LLM, SamplingParams

    engine = {"dtype": "float32", "gpu_memory_utilization": 0.15, "enforce_eager": True, "seed": 0,
              "distributed_executor_backend": "uni", **spec.get("engine", {})}
    ignore_eos = bool(spec.get("ignore_eos", False))
    out: dict[str, Any] = {"checkpoints": {}, "errors": {}}
    for ckpt in spec["checkpoints"]:
        workloads = dict(spec.get("workloads") or {})
        if "items" in spec:
            items = list(spec["items"]) + list(spec.get("extra_items", {}).get(str(ckpt), []))
            workloads["items"] = {"items": items, "max_new_tokens": spec.get("max_new_tokens", 32)}
        start = time.perf_counter()
        try:
            llm = LLM(model=str(ckpt), **engine)
        except Exception as exc:  # noqa: BLE001 - reported per checkpoint (tests check the message)
            out["errors"][str(ckpt)] = f"{type(exc).__name__}: {exc}"
            continue
        row: dict[str, Any] = {"startup_s": time.perf_counter() - start, "workloads": {},
                               "image_token_id": int(llm.llm_engine.model_config.hf_config.image_token_index)}
        for name, work in workloads.items():
            conversations = [chat_messages(it["turns"], it.get("image")) for it in work["items"]]
            params = SamplingParams(temperature=0.0, max_tokens=int(work["max_new_tokens"]), ignore_eos=ignore_eos)
            start = time.perf_counter()
            results = llm.chat(conversations, params, use_tqdm=False) if conversations else []
            row["workloads"][name] = {
                "generate_s": time.perf_counter() - start,
                "outputs": [{"prompt_token_ids": list(r.prompt_token_ids), "token_ids": list(r.outputs[0].token_ids),
                             "text": r.outputs[0].text} for r in results],
            }
        row.update(row["workloads"].get("items", {}))
        out["checkpoints"][str(ckpt)] = row
        del llm
        gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    Path(args[1]).write_text(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
