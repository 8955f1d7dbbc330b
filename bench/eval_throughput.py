"""Evaluation throughput of the `pulse` adapter's generation loop on a LLaVA-1.6-7B-shaped model.

What it measures (one GPU, random weights, nothing downloaded):
  * model: PulseLlavaForCausalLM with PULSE-7B's shape (Vicuna-7B Llama + CLIP ViT-L/14-336 +
    mlp2x_gelu, flat merging, anyres) built on the fly with random weights, or an existing
    original-format checkpoint (--checkpoint DIR); --write-checkpoint DIR saves the random model in
    the original format and reloads it through pulse_models.loading.load_pulse first.
  * items: synthetic 2200x1700 PNG scans (-> 2x2 anyres grid -> 2880 image tokens) with prompts of
    about 120 text tokens, decoded and preprocessed by the adapter's own code.
  * workloads: "short" (16 new tokens) and "report" (256 new tokens), greedy.
  * settings: the reference protocol (batch 1, inline preparation, dynamic KV cache) and the
    adapter's candidates (batch sizes x KV cache kinds, preparation prefetched by a thread pool),
    all through pulse_models.engine.run_batches, the loop the adapter runs.
  * every timed setting generates exactly the workload's new tokens per item: EOS is ignored
    (GenSettings.min_new_tokens = max_new_tokens; the adapter's default stops at EOS), so random
    weights that would stop early cannot shorten the work timed; an item with another count is
    an error.
  * --vllm: the same items on vLLM through our plugin (pulse_models.vllm_offline in a subprocess,
    every item of a workload submitted at once, ignore_eos), items/s and agreement with the
    reference's greedy ids; skipped (the JSON's "vllm" entry says why) where vllm is not importable.
  * output: items/s (generated items only: a failed item is not done), mean new tokens per item,
    peak GPU memory, and agreement of greedy token ids with the reference over every item timed
    (identical items, identical tokens): the candidates' items cycle through the reference's
    distinct prompts, so each timed item has the batch-1 output of its prompt to match; targets
    on an H100: >= 12 items/s short, >= 2.5 items/s report, >= 99% identical greedy outputs. A
    failed item, a wrong new-token count or a setting that raised turns the workload's verdict
    to FAIL and the exit status to 1.

    python bench/eval_throughput.py                          # on a GPU (about 15 minutes on an H100)
    python bench/eval_throughput.py --tiny                   # CPU smoke run with a tiny random model
    python bench/eval_throughput.py --batch-sizes 16,32 --caches dynamic,static --json out.json
    python bench/eval_throughput.py --time-budget 300 --phases 32 --profile prof.txt --json out.json
        # a bounded run (bench/gpu_session.sh): no new setting starts after 300 s, the JSON is
        # rewritten after every setting, plus a per-phase split and a kernel table of one batch

Numbers go to docs/performance.md with the card and the date.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Targets on one H100 (the reference protocol measured 1.55 and 0.13 items/s on the same card).
TARGETS = {"short": 12.0, "report": 2.5}
TARGET_AGREEMENT = 0.99
# Vicuna-7B v1.5 (llava-v1.6-vicuna-7b / PULSE-7B) language-model shape.
VICUNA_7B = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    "pad_token_id": 0, "tie_word_embeddings": False,
}
# A 12-lead scan at 200 dpi is about this size; it selects the 672x672 grid (2880 tokens, flat).
SCAN_SIZE = (2200, 1700)
TARGET_TEXT_TOKENS = 120  # text tokens per prompt around the image (system + question + roles)
# Weight init std of the random model (transformers' Llama default initializer_range).
INIT_STD = 0.02
# The vLLM setting's name in the results (pulse_models.vllm_offline, all items of a workload at once).
VLLM_SETTING = "vllm"


@dataclass
class Result:
    workload: str
    setting: str
    batch_size: int
    cache: str
    prefetch: int
    n_items: int
    seconds: float
    items_per_s: float
    peak_mem_gib: float | None
    mean_new_tokens: float  # over the generated items; equals forced_new_tokens unless something is wrong
    forced_new_tokens: int = 0  # the workload's new tokens, EOS ignored (min_new_tokens = max_new_tokens)
    identical_items: float | None = None  # share of all items timed with the reference's exact token ids
    identical_tokens: float | None = None  # share of token positions equal to the reference
    compared_items: int = 0  # items the identical shares are over (all items timed)
    failed: int = 0  # items that came back as failure texts (not counted in items_per_s)
    wrong_length: int = 0  # generated items whose new-token count is not forced_new_tokens
    failures: list[str] = field(default_factory=list)  # the first failure texts, for the log
    outputs: list[list[int]] = field(default_factory=list, repr=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny random model on CPU (smoke test of this script)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, help="float16 (default on GPU) | bfloat16 | float32 (default on CPU)")
    p.add_argument("--attn", default="sdpa", help="sdpa | flash_attention_2 (needs flash-attn) | eager")
    p.add_argument("--checkpoint", default=None, help="an original-format checkpoint instead of random weights")
    p.add_argument("--write-checkpoint", default=None, help="save the random model here and reload it via load_pulse")
    p.add_argument("--workloads", default="short,report")
    p.add_argument("--short-tokens", type=int, default=16)
    p.add_argument("--report-tokens", type=int, default=256)
    p.add_argument("--items", type=str, default=None, help="items per candidate setting, e.g. short=256,report=64")
    p.add_argument("--reference-items", type=str, default=None, help="items for batch-1 reference, e.g. short=64,report=16")
    p.add_argument("--batch-sizes", default=None, help="candidate batch sizes (default 16,32; tiny 2,4)")
    p.add_argument("--caches", default="dynamic,static", help="KV cache kinds to try: dynamic,static")
    p.add_argument("--prefetch-workers", type=int, default=None, help="adapter setting (default engine's)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up batches per setting (default 1)")
    p.add_argument("--compile-layers", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile each decoder layer of the language model (regional compilation, as the "
                        "recipe's compile_layers; backend default inductor) before every setting, the reference "
                        "included: an experiment for the prefill's elementwise time, not an adapter option yet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write all results here (rewritten after every setting)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: no new setting starts once this much time has passed (the one running finishes)")
    p.add_argument("--phases", type=int, default=None, metavar="BATCH",
                   help="also split one short batch of this size into preparation, CLIP+splice, prefill and decode")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="with --phases: write torch.profiler's kernel table of that batch's prefill here")
    p.add_argument("--vllm", action="store_true",
                   help="also time vLLM (our plugin, pulse_models.vllm_offline in a subprocess) on the same prompts "
                        "and images, all items at once; skipped when vllm is not importable")
    p.add_argument("--vllm-python", default=sys.executable, help="the interpreter with vLLM (default this one)")
    p.add_argument("--vllm-args", default=None,
                   help='JSON of LLM() arguments for the vLLM setting (default GPU: {"gpu_memory_utilization": 0.4, '
                        '"max_model_len": 4096}; CPU: the in-process engine at 0.15 of RAM)')
    return p.parse_args(argv)


def _counts(spec: str | None, default: dict[str, int]) -> dict[str, int]:
    out = dict(default)
    for part in (spec or "").split(","):
        if part.strip():
            k, v = part.split("=")
            out[k.strip()] = int(v)
    return out


def build_model(args: argparse.Namespace, device: Any, dtype: Any, tmp: Path) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image_processor); random 7B-shaped unless --checkpoint or --tiny."""
    import torch
    from transformers import AutoTokenizer

    from pulse_models.checkpoint import save_original_format
    from pulse_models.loading import load_pulse
    from pulse_models.configuration import CLIP_L_336_VISION_CONFIG, PulseConfig
    from pulse_models.image_processing import ImageProcessor
    from pulse_models.modeling import PulseLlavaForCausalLM
    from pulse_models.testing import make_tiny_original_checkpoint, make_tiny_tokenizer_dir

    if args.tiny:
        # head_dim 32 with --vllm: vLLM's CPU attention needs at least 32 (the tiny default is 8)
        path = make_tiny_original_checkpoint(tmp / "tiny", merge_type="flat", seed=args.seed,
                                             head_dim=32 if args.vllm else None)
        model, tok, ip, _ = load_pulse(path, dtype=dtype, device=device, attn_implementation=args.attn)
        return model, tok, ip
    if args.checkpoint:
        model, tok, ip, _ = load_pulse(args.checkpoint, dtype=dtype, device=device, attn_implementation=args.attn)
        return model, tok, ip
    # The prompt ids only need to be valid ids: the tiny SentencePiece tokenizer (ids < 400) serves.
    tok = AutoTokenizer.from_pretrained(make_tiny_tokenizer_dir(tmp / "tok", model_max_length=4096))
    cfg = PulseConfig(text_config=dict(VICUNA_7B), vision_config=dict(CLIP_L_336_VISION_CONFIG),
                      mm_projector_type="mlp2x_gelu", image_aspect_ratio="anyres", mm_patch_merge_type="flat",
                      tokenizer_model_max_length=4096)
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = PulseLlavaForCausalLM(cfg, attn_implementation=args.attn)
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if prm.dim() == 1 and "norm" in name:  # RMSNorm / LayerNorm: identity at init
                prm.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                prm.normal_(0.0, INIT_STD, generator=gen)
    model.eval()
    print(f"built random 7B-shaped model in {time.perf_counter() - t0:.1f}s "
          f"({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters)", flush=True)
    if args.write_checkpoint:
        out = save_original_format(model, tok, args.write_checkpoint)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        model, tok, ip, _ = load_pulse(out, dtype=dtype, device=device, attn_implementation=args.attn)
        return model, tok, ip
    return model, tok, ImageProcessor(cfg)


def make_items(n: int, tokenizer: Any, tiny: bool, seed: int) -> list[Any]:
    """WorkItems: PNG scans (decoded by the engine) and questions padded to ~120 text tokens."""
    from pulse_models.conversation import build_prompt, tokenize_with_image
    from pulse_models.engine import WorkItem
    from pulse_models.testing import make_ecg_like_image

    size = (100, 60) if tiny else SCAN_SIZE
    base = "What is the rhythm of this ECG? Answer with the letter. A. sinus B. atrial fibrillation C. flutter"
    words = "rate axis intervals hypertrophy ischemia conclusion".split()
    pngs = []
    for s in range(min(n, 8)):  # 8 distinct scans, reused: encoding 2200x1700 PNGs is slow
        buf = io.BytesIO()
        make_ecg_like_image(*size, seed=seed + s).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    items = []
    for i in range(n):
        q = base
        target = TARGET_TEXT_TOKENS + (i % 7) - 3  # 117..123: realistic small length spread
        while len(tokenize_with_image(build_prompt([("<image>\n" + q, None)]), tokenizer)) - 1 < target:
            q += " " + words[(i + len(q)) % len(words)]
        png = pngs[i % len(pngs)]
        items.append(WorkItem(key=i, turns=[(q, None)], load_image=(lambda b=png: b)))
    return items


def _fresh(items: list[Any]) -> list[Any]:
    """Copies of the WorkItems without their cached pixels: every timing decodes its images."""
    return [type(it)(it.key, list(it.turns), it.load_image) for it in items]


def cycle_items(distinct: list[Any], n: int) -> list[Any]:
    """n WorkItems going round ``distinct`` (the reference's prompts); item i repeats prompt
    i % len(distinct), so its reference output is the reference's output for that prompt."""
    return [type(it)(i, list(it.turns), it.load_image) for i, it in
            ((i, distinct[i % len(distinct)]) for i in range(n))]


# Failure texts kept per setting in the results (the count is always complete).
KEPT_FAILURES = 3


def run_setting(engine: Any, items: list[Any], workload: str, name: str, batch: int, cache: str, prefetch: int,
                max_new: int, warmup: int, device: Any) -> Result:
    """Time run_batches over ``items`` with exactly ``max_new`` new tokens per item (EOS ignored)."""
    import torch

    from pulse_models.engine import GenOutput, GenSettings, run_batches

    settings = GenSettings(max_new_tokens=max_new, min_new_tokens=max_new, temperature=0.0, num_beams=1,
                           cache_implementation=None if cache == "dynamic" else cache)
    fresh = _fresh(items)
    if warmup:
        run_batches(engine, fresh[: batch * warmup], settings, batch, prefetch)
        fresh = _fresh(items)
    cuda = torch.cuda.is_available() and str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    outs = run_batches(engine, fresh, settings, batch, prefetch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    done = [o.token_ids for o in outs if isinstance(o, GenOutput)]
    failures = [o for o in outs if not isinstance(o, GenOutput)]
    return Result(workload, name, batch, cache, prefetch, len(items), seconds, len(done) / seconds,
                  torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  sum(len(x) for x in done) / max(1, len(done)), forced_new_tokens=max_new, failed=len(failures),
                  wrong_length=sum(len(x) != max_new for x in done), failures=[str(f)[:300] for f in failures[:KEPT_FAILURES]],
                  outputs=[o.token_ids if isinstance(o, GenOutput) else [] for o in outs])


def agreement(ref: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    """(identical items, identical tokens) of ``other`` against the reference output of each of
    its items (item i is prompt i % len(ref), see cycle_items); over ALL of ``other``, so a
    failed item (no ids) or a missing reference output counts as different."""
    if not other:
        return 0.0, 0.0
    expected = [ref[i % len(ref)] if ref else [] for i in range(len(other))]
    same_items = sum(e == o and bool(o) for e, o in zip(expected, other)) / len(other)
    tok_total = tok_same = 0
    for e, o in zip(expected, other):
        tok_total += max(len(e), len(o), 1)
        tok_same += sum(a == b for a, b in zip(e, o))
    return same_items, tok_same / tok_total


def measure_phases(engine: Any, items: list[Any], batch: int, max_new: int, device: Any,
                   profile: str | None = None) -> dict[str, float]:
    """Where one batch's time goes, in ms per item: CPU preparation (decode, anyres, tokenisation),
    CLIP + projector + splice, prefill (generate 1 token), decode (N tokens minus prefill)."""
    import torch

    from pulse_models.engine import GenSettings, _prepare_one

    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    work = _fresh(items[:batch])
    t0 = time.perf_counter()
    prepared = [_prepare_one(engine, it) for it in work]
    prep = time.perf_counter() - t0
    failed = [p for p in prepared if isinstance(p, str)]
    if failed:
        raise RuntimeError(f"phase split: {len(failed)} items failed to prepare: {failed[0]}")
    model = engine.model
    pixels = [p.pixel_values for p in prepared]
    sizes = [p.image_size for p in prepared]

    def merge() -> None:
        with torch.inference_mode():
            model.prepare_inputs_embeds([p.input_ids for p in prepared], pixels, sizes, padding_side="left")

    def gen(n: int) -> None:  # exactly n new tokens (EOS ignored), as the timed settings
        engine.generate(prepared, GenSettings(max_new_tokens=n, min_new_tokens=n))

    def timed(fn: Any, *a: Any) -> float:
        fn(*a)  # warm-up (allocator, cuBLAS heuristics)
        sync()
        t = time.perf_counter()
        fn(*a)
        sync()
        return time.perf_counter() - t

    splice = timed(merge)
    prefill = timed(gen, 1)
    full = timed(gen, max_new)
    n = len(prepared)
    out = {"batch": n, "new_tokens": max_new, "prepare_ms": 1e3 * prep / n, "clip_splice_ms": 1e3 * splice / n,
           "prefill_ms": 1e3 * max(prefill - splice, 0.0) / n, "decode_ms": 1e3 * max(full - prefill, 0.0) / n,
           "total_gpu_ms": 1e3 * full / n}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=acts) as prof:
            gen(1)
            sync()
        table = None
        # torch renamed cuda_time_total to device_time_total (the old name is an alias for a while).
        for key in (["device_time_total", "cuda_time_total"] if cuda else ["cpu_time_total"]):
            try:
                table = prof.key_averages().table(sort_by=key, row_limit=30)
                break
            except (AttributeError, KeyError, ValueError):
                continue
        Path(profile).write_text(f"prefill of one batch of {n} (generate 1 new token)\n{table}\n")
    return out


def plan_settings(workloads: list[str], tokens: dict[str, int], ref_n: dict[str, int], items_n: dict[str, int],
                  batch_sizes: list[int], caches: list[str], prefetch: int) -> list[tuple[str, str, int, str, int, int]]:
    """(workload, setting, batch, cache, prefetch, items) in the order they run. Under a time
    budget the order decides what is measured: every workload's reference and dynamic-cache
    settings first, then the other caches (the static cache's first batch compiles the decode
    step), longest workload first, where decoding weighs most."""
    plan = [step for w in workloads for step in
            [(w, "reference", 1, "dynamic", 0, ref_n[w])]
            + [(w, "adapter", b, "dynamic", prefetch, items_n[w]) for b in batch_sizes if "dynamic" in caches]]
    plan += [(w, "adapter", b, c, prefetch, items_n[w]) for c in caches if c != "dynamic"
             for w in sorted(workloads, key=lambda w: -tokens[w]) for b in batch_sizes]
    return plan


def _write_json(path: str | None, meta: dict[str, Any], results: list[Result], extra: dict[str, Any]) -> None:
    if not path:
        return
    rows = [{k: v for k, v in asdict(r).items() if k != "outputs"} for r in results]
    Path(path).write_text(json.dumps({"meta": meta, "results": rows, **extra}, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pulse_models.engine import DEFAULT_PREFETCH_WORKERS, OriginalEngine, _empty_cuda_cache

    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: a 7B model on CPU is not a throughput measurement; use --tiny for a smoke run",
              file=sys.stderr)
        return 2
    tiny = args.tiny
    items_n = _counts(args.items, {"short": 8, "report": 4} if tiny else {"short": 256, "report": 64})
    ref_n = _counts(args.reference_items, {"short": 4, "report": 2} if tiny else {"short": 64, "report": 16})
    if min(ref_n.values()) < 1:  # the other settings' items go round the reference's prompts
        print("--reference-items: every workload needs at least 1", file=sys.stderr)
        return 2
    tokens = {"short": args.short_tokens, "report": args.report_tokens if not tiny else min(args.report_tokens, 32)}
    batch_sizes = [int(x) for x in (args.batch_sizes or ("2,4" if tiny else "16,32")).split(",")]
    caches = [c for c in args.caches.split(",") if c]
    if tiny or device.type != "cuda":
        caches = [c for c in caches if c == "dynamic"] or ["dynamic"]  # static cache: GPU setting
    prefetch = DEFAULT_PREFETCH_WORKERS if args.prefetch_workers is None else args.prefetch_workers
    warmup = 1 if args.warmup is None else args.warmup

    def over_budget() -> bool:
        return args.time_budget is not None and time.perf_counter() - started > args.time_budget

    with tempfile.TemporaryDirectory() as tmp:
        model, tok, ip = build_model(args, device, dtype, Path(tmp))
        if args.compile_layers:
            # One graph per decoder layer, shared by all of them (the recipe's compile_layers); the
            # image splice stays eager. Prompt lengths vary, so dynamo marks the sequence dynamic
            # after its first recompile; the warm-up batch of each setting absorbs the compiles.
            for layer in model.language_model.model.layers:
                layer.compile(backend=args.compile_layers)
        engine = OriginalEngine(model, tok, ip)
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        print(f"device: {card}; dtype {dtype}; attn {args.attn}; tiny={tiny}", flush=True)
        import transformers

        meta = {"device": card, "dtype": str(dtype), "attn": args.attn, "tiny": tiny,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                "transformers": transformers.__version__, "time_budget_s": args.time_budget,
                "compile_layers": args.compile_layers}
        results: list[Result] = []
        extra: dict[str, Any] = {"skipped": [], "errors": []}
        workloads = [w for w in args.workloads.split(",") if w]
        # The reference's prompts, distinct; every other setting cycles through them (cycle_items).
        distinct = {w: make_items(ref_n[w], tok, tiny, args.seed) for w in workloads}
        n_img = ip.num_image_tokens(SCAN_SIZE if not tiny else (100, 60))
        print(f"items: {n_img} image + ~{TARGET_TEXT_TOKENS} text tokens; exactly "
              + ", ".join(f"{w} {tokens[w]}" for w in workloads)
              + " new tokens per item (EOS ignored: min_new_tokens = max_new_tokens; the adapter stops at EOS)",
              flush=True)
        if args.phases and "short" in workloads:
            try:
                extra["phases"] = measure_phases(engine, cycle_items(distinct["short"], args.phases), args.phases,
                                                 tokens["short"], device, args.profile)
                print("  phases of one short batch (ms per item): " + ", ".join(
                    f"{k} {v:.1f}" for k, v in extra["phases"].items() if k.endswith("_ms")), flush=True)
            except Exception as exc:  # noqa: BLE001 - e.g. OOM: report, go on with the settings
                extra["phases"] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  phases: failed ({type(exc).__name__}: {exc})", flush=True)
            _write_json(args.json, meta, results, extra)
        plan = plan_settings(workloads, tokens, ref_n, items_n, batch_sizes, caches, prefetch)
        refs: dict[str, Result] = {}
        for workload, name, b, cache, pf, n in plan:
            label = f"  {workload:6s} {name:9s} batch {b:3d} cache {cache:7s}"
            step = {"workload": workload, "setting": name, "batch_size": b, "cache": cache}
            if over_budget():
                extra["skipped"].append(step)
                print(f"{label}: skipped (time budget {args.time_budget:.0f}s spent)", flush=True)
                continue
            if name != "reference" and workload not in refs:
                extra["errors"].append({**step, "error": "its reference did not run"})
                print(f"{label}: not run (its reference did not run)", flush=True)
                continue
            try:
                r = run_setting(engine, cycle_items(distinct[workload], n), workload, name, b, cache, pf,
                                tokens[workload], warmup, device)
            except Exception as exc:  # noqa: BLE001 - e.g. OOM at a large batch: report, go on
                extra["errors"].append({**step, "error": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"{label}: failed ({type(exc).__name__}: {exc})", flush=True)
                _empty_cuda_cache()
                _write_json(args.json, meta, results, extra)
                continue
            if name == "reference":
                refs[workload] = r
            r.identical_items, r.identical_tokens = agreement(refs[workload].outputs, r.outputs)
            r.compared_items = len(r.outputs)
            results.append(r)
            _print(r)
            _write_json(args.json, meta, results, extra)
        if args.vllm:
            run_vllm_setting(args, model, tok, distinct, items_n, tokens, refs, Path(tmp), device, dtype,
                             results, extra, started)
            _write_json(args.json, meta, results, extra)
        extra["summary"] = summarise(results, extra["errors"], device.type == "cuda" and not tiny)
        meta["wall_s"] = round(time.perf_counter() - started, 1)
        _write_json(args.json, meta, results, extra)
    return 1 if any(v["verdict"].startswith("FAIL (") for v in extra["summary"]) or extra["errors"] else 0


def vllm_available(python: str) -> bool:
    """Whether ``python`` can import vllm (looked up, not imported: that takes most of a minute)."""
    import subprocess

    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], check=False, capture_output=True).returncode == 0


def vllm_workloads(distinct: dict[str, list[Any]], items_n: dict[str, int], tokens: dict[str, int],
                   images: Path) -> dict[str, Any]:
    """pulse_models.vllm_offline's workloads: the adapter settings' items (item i is the reference's
    prompt i % len, as cycle_items), their PNG scans written once to ``images``."""
    images.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for workload, prompts in distinct.items():
        rows = []
        for i in range(items_n[workload]):
            item = prompts[i % len(prompts)]
            png = images / f"{workload}-{i % len(prompts)}.png"
            if not png.exists():
                png.write_bytes(item.load_image())
            rows.append({"image": str(png), "turns": [[q, a] for q, a in item.turns]})
        out[workload] = {"items": rows, "max_new_tokens": tokens[workload]}
    return out


def run_vllm_setting(args: argparse.Namespace, model: Any, tok: Any, distinct: dict[str, list[Any]],
                     items_n: dict[str, int], tokens: dict[str, int], refs: dict[str, Result], tmp: Path,
                     device: Any, dtype: Any, results: list[Result], extra: dict[str, Any], started: float) -> None:
    """The vLLM setting: the same prompts and PNG scans as the adapter's settings, exactly the
    workload's new tokens (ignore_eos), every item of a workload submitted at once (vLLM batches
    continuously); items/s over the generate call and agreement with the reference's greedy
    token ids. Skipped, with the reason in the JSON's "vllm" entry, when vllm is not importable or
    less than a minute of the time budget is left."""
    import subprocess

    step = {"setting": VLLM_SETTING}
    if not vllm_available(args.vllm_python):
        extra["vllm"] = {"skipped": f"vllm is not importable by {args.vllm_python}"}
        print(f"  vllm: skipped (vllm is not importable by {args.vllm_python}; pip install 'ecgbench-lmms[vllm]')",
              flush=True)
        return
    left = None if args.time_budget is None else args.time_budget - (time.perf_counter() - started)
    if left is not None and left < 60:
        extra["vllm"] = {"skipped": "time budget spent"}
        print("  vllm: skipped (time budget spent)", flush=True)
        return
    from pulse_models.checkpoint import save_original_format

    ckpt = str(tmp / "tiny") if args.tiny else (args.checkpoint or args.write_checkpoint)
    if not ckpt:  # the random 7B model: vLLM reads it from disk, in the original format
        ckpt = str(save_original_format(model, tok, tmp / "vllm-checkpoint"))
    on_gpu = str(device).startswith("cuda")
    engine = json.loads(args.vllm_args) if args.vllm_args else (
        {"gpu_memory_utilization": 0.4, "max_model_len": 4096, "enforce_eager": False,
         "distributed_executor_backend": None} if on_gpu else {"max_model_len": 4096})
    engine.setdefault("dtype", str(dtype).replace("torch.", ""))
    spec = {"checkpoints": [ckpt], "workloads": vllm_workloads(distinct, items_n, tokens, tmp / "vllm-images"),
            "ignore_eos": True, "engine": engine}
    (tmp / "vllm-spec.json").write_text(json.dumps(spec))
    out_file = tmp / "vllm-out.json"
    try:
        proc = subprocess.run([args.vllm_python, "-m", "pulse_models.vllm_offline", str(tmp / "vllm-spec.json"),
                               str(out_file)], check=False, capture_output=True, text=True, cwd=str(ROOT),
                              timeout=None if left is None else max(60.0, left))
    except subprocess.TimeoutExpired:
        extra["errors"].append({**step, "error": "timed out"})
        print("  vllm: timed out", flush=True)
        return
    out = json.loads(out_file.read_text()) if proc.returncode == 0 and out_file.exists() else None
    if out is None or out["errors"]:
        error = (str(out["errors"]) if out else proc.stderr)[-500:]
        extra["errors"].append({**step, "error": error})
        print(f"  vllm: failed ({error})", flush=True)
        return
    run = out["checkpoints"][ckpt]
    extra["vllm"] = {"startup_s": run["startup_s"], "engine": engine}
    print(f"  vllm: engine started in {run['startup_s']:.1f}s", flush=True)
    for workload, res in run["workloads"].items():
        ids = [o["token_ids"] for o in res["outputs"]]
        n, secs = len(ids), res["generate_s"]
        r = Result(workload, VLLM_SETTING, n, "paged", 0, n, secs, n / secs if secs else 0.0, None,
                   sum(len(x) for x in ids) / max(1, n), forced_new_tokens=tokens[workload],
                   wrong_length=sum(len(x) != tokens[workload] for x in ids), outputs=ids)
        if workload in refs:
            r.identical_items, r.identical_tokens = agreement(refs[workload].outputs, r.outputs)
            r.compared_items = n
        results.append(r)
        _print(r)


def _print(r: Result) -> None:
    mem = f"{r.peak_mem_gib:.1f} GiB" if r.peak_mem_gib is not None else "n/a"
    print(f"  {r.workload:6s} {r.setting:9s} batch {r.batch_size:3d} cache {r.cache:7s} prefetch {r.prefetch}: "
          f"{r.items_per_s:7.2f} items/s  ({r.n_items} items, {r.seconds:.1f}s, {r.mean_new_tokens:.1f} new tokens/item, "
          f"peak {mem}, identical over all {r.compared_items} items {100 * (r.identical_items or 0):.1f}%, "
          f"tokens {100 * (r.identical_tokens or 0):.1f}%, failed {r.failed}, wrong length {r.wrong_length})",
          flush=True)
    for text in r.failures:
        print(f"      failed item: {text}", flush=True)


def _faults(rows: list[Result], errors: list[dict[str, Any]]) -> list[str]:
    """What makes a workload's measurement untrustworthy: failed items, wrong new-token counts,
    settings that raised or could not run."""
    out = [f"{r.setting} batch {r.batch_size} cache {r.cache}: {r.failed} of {r.n_items} items failed"
           for r in rows if r.failed]
    out += [f"{r.setting} batch {r.batch_size} cache {r.cache}: {r.wrong_length} items without exactly "
            f"{r.forced_new_tokens} new tokens" for r in rows if r.wrong_length]
    out += [f"{e['setting']} batch {e['batch_size']} cache {e['cache']}: {e['error']}" for e in errors]
    return out


def summarise(results: list[Result], errors: list[dict[str, Any]], on_gpu: bool) -> list[dict[str, Any]]:
    """One verdict per workload, printed and returned for the JSON. FAIL (...) when anything
    failed; otherwise PASS/FAIL against the H100 targets on a GPU run, n/a elsewhere."""
    print("\n== summary")
    out = []
    for workload in dict.fromkeys([r.workload for r in results] + [e["workload"] for e in errors]):
        rows = [r for r in results if r.workload == workload]
        faults = _faults(rows, [e for e in errors if e["workload"] == workload])
        ref = next((r for r in rows if r.setting == "reference"), None)
        # the adapter's candidates (the vLLM setting is reported on its own line)
        clean = [r for r in rows if r.setting not in ("reference", VLLM_SETTING) and not r.failed and not r.wrong_length]
        ok = [r for r in clean if (r.identical_items or 0) >= TARGET_AGREEMENT] or clean
        best = max(ok, key=lambda r: r.items_per_s, default=None)
        target = TARGETS.get(workload)
        if faults:
            verdict = f"FAIL ({'; '.join(faults)})"
        elif ref is None or best is None:
            verdict = "n/a (nothing to compare)"
        elif not on_gpu:
            verdict = "n/a (not a GPU run)"
        else:
            verdict = "PASS" if best.items_per_s >= target and (best.identical_items or 0) >= TARGET_AGREEMENT \
                else "FAIL"
        row: dict[str, Any] = {"workload": workload, "verdict": verdict}
        if ref is not None and best is not None:
            row.update(reference_items_per_s=ref.items_per_s, best_batch_size=best.batch_size, best_cache=best.cache,
                       best_items_per_s=best.items_per_s, speedup=best.items_per_s / ref.items_per_s,
                       identical_items=best.identical_items, compared_items=best.compared_items,
                       mean_new_tokens=best.mean_new_tokens, peak_mem_gib=best.peak_mem_gib)
            print(f"  {workload}: reference {ref.items_per_s:.2f} items/s -> best batch {best.batch_size} "
                  f"cache {best.cache}: {best.items_per_s:.2f} items/s ({row['speedup']:.1f}x), "
                  f"{best.mean_new_tokens:.1f} new tokens/item, identical {100 * (best.identical_items or 0):.1f}% "
                  f"of all {best.compared_items} items, peak "
                  f"{best.peak_mem_gib if best.peak_mem_gib is not None else 'n/a'} GiB; "
                  f"H100 target >= {target} items/s and >= {100 * TARGET_AGREEMENT:.0f}% identical: {verdict}")
        else:
            print(f"  {workload}: {verdict}")
        out.append(row)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
