"""Records/s of the recipe's start-up scan by worker count (what `ecgbench-train data check` runs).

    python bench/scan_throughput.py                         # 120000 records, 1 and 2 workers
    python bench/scan_throughput.py --records 200000 --workers 1,2,4 --json out.json

The data are synthetic ECGInstruct records in the hub's layout (`mimic_v4/pNNNN/.../N-0.png`,
one to three turns with answers of 20-120 words, as ECGInstruct's), each pointing to its own
image file: hard links to a few ECG-sized (2200x1700) PNGs, so every record costs a real path
lookup and header read (`image_check=open`) while the set stays small on disk. The tokenizer is
the tiny test checkpoint's SentencePiece model (pulse_models.testing; the real Llama tokenizer
cannot be downloaded here); the scan is the recipe's own (`recipe.scan_arguments` +
`data.scan_parallel`), timed end to end: worker start-up (spawned processes import torch and
transformers), pickling the chunks, the scan, the merge. `serial` is `data.scan` in this process,
what one rank does without an index. The images are in the page cache after the first pass (the
first timed run is a warm-up pass over all of them). On a machine shared with other jobs the wall
time depends on them: each row also has the CPU seconds spent (this process and the pool's
workers) and records per CPU second, which the other jobs do not change much.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("sinus", "rhythm", "normal", "axis", "left", "ventricular", "hypertrophy", "ST", "depression", "inferior",
         "leads", "QRS", "duration", "prolonged", "PR", "interval", "atrial", "fibrillation", "premature",
         "complexes", "T", "wave", "inversion", "anterior", "right", "bundle", "branch", "block", "borderline",
         "ECG", "the", "is", "regular", "rate", "beats", "per", "minute")


def make_records(root: Path, n: int, seed: int = 0) -> Path:
    """n records + one hard-linked image file per record under root/images; returns the JSON path."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    bases = []
    for b in range(4):
        img = Image.new("RGB", (2200, 1700), "white")
        draw = ImageDraw.Draw(img)
        for x in range(0, 2200, 40):
            draw.line([(x, 0), (x, 1700)], fill=(255, 200, 200))
        draw.line([(0, 850 + b * 10), (2200, 860)], fill="black", width=3)
        path = root / f"base-{b}.png"
        img.save(path)
        bases.append(path)
    records = []
    for i in range(n):
        rel = f"mimic_v4/p{1000 + i // 1000}/p{10000000 + i}/s{40000000 + i}/{40000000 + i}-0.png"
        target = root / "images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(bases[i % len(bases)], target)
        turns = []
        for t in range(rng.choice((1, 1, 2, 3))):
            question = " ".join(rng.choices(WORDS, k=rng.randint(8, 30))) + "?"
            turns.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
            turns.append({"from": "gpt", "value": " ".join(rng.choices(WORDS, k=rng.randint(20, 120))) + "."})
        records.append({"id": f"synth-{i:07d}", "image": rel, "conversations": turns})
    path = root / "ECGInstruct.json"
    path.write_text(json.dumps(records))
    return path


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers, once it shut down)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=120_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts for scan_parallel")
    parser.add_argument("--no-serial", action="store_true", help="skip the in-process scan")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from pulse_training import data
    from pulse_training.config import load_config
    from pulse_training.recipe import scan_arguments, setup_tokenizer_and_model_config

    from pulse_models.testing import make_tiny_original_checkpoint

    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data_path = make_records(root, args.records)
        model = make_tiny_original_checkpoint(root / "model", merge_type="flat")
        print(f"built {args.records} records in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        config = load_config("tiny.yaml", {"model_name_or_path": str(model), "data_path": str(data_path),
                                           "image_folder": str(root / "images"), "image_check": "open",
                                           "model_max_length": "4096"})
        tokenizer, pulse_config = setup_tokenizer_and_model_config(config)
        kwargs, _key = scan_arguments(config, tokenizer, pulse_config)
        records = data.load_records(str(data_path))
        for rel in (r["image"] for r in records):  # warm the page cache: every run sees the same state
            (root / "images" / rel).stat()
        runs = []
        settings = ([] if args.no_serial else [("serial", 1)]) + [("pool", int(w)) for w in args.workers.split(",")]
        reference = None
        for mode, workers in settings:
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            if mode == "serial":
                result = data.scan(records, **kwargs)
            else:
                result = data.scan_parallel(records, workers=workers, **kwargs)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_before
            reference = reference or result
            assert result[0] == reference[0] and result[1] == reference[1], "worker counts disagree"
            row = {"mode": mode, "workers": workers, "records": len(records), "seconds": round(seconds, 1),
                   "records_per_s": round(len(records) / seconds), "ms_per_record": round(1000 * seconds / len(records), 3),
                   "cpu_s": round(cpu, 1), "records_per_cpu_s": round(len(records) / cpu),
                   "kept": result[2].kept, "load_avg_1m": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}
            runs.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
