"""Inputs for the CPU smoke run: a tiny random checkpoint and a small ECGInstruct-style data set.

    python -m pulse_training.smoke runs/smoke     # then the launch line in configs/tiny.yaml

The data are LLaVA JSON records with small synthetic ECG-like images (pulse_models.testing),
single- and two-turn, with answers drawn from a few templates so a tiny model's loss falls
within a few dozen steps. `bad_records=True` adds one record per skip reason the recipe counts.
(pulse_tasks.data.synth.make_instruct renders real-looking ECGs but takes seconds per image on a
shared CPU, too slow for a test that must train in under a minute.)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

SMOKE_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((96, 64), (64, 64), (128, 48))  # (w, h): 2x1, 2x2-ish, 3x1 grids
RHYTHMS: tuple[str, ...] = ("sinus rhythm", "atrial fibrillation", "sinus tachycardia", "sinus bradycardia")
DATA_FILE = "instruct.json"


def _conversations(rng: random.Random, i: int) -> list[dict[str, str]]:
    rhythm = RHYTHMS[i % len(RHYTHMS)]
    turns = [
        {"from": "human", "value": "<image>\nWhat is the rhythm of this ECG?"},
        {"from": "gpt", "value": f"The ECG shows {rhythm}."},
    ]
    if i % 3 == 0:  # every third record is a two-turn dialogue, as ECGInstruct's
        turns += [
            {"from": "human", "value": "Is it normal?"},
            {"from": "gpt", "value": "Yes." if rhythm == "sinus rhythm" else "No."},
        ]
    return turns


def make_smoke_data(out_dir: str | Path, n: int = 32, seed: int = 0, bad_records: bool = False) -> Path:
    """Write `out_dir/instruct.json` + `out_dir/images/*.png`; returns the JSON path (image_folder = out_dir)."""
    from pulse_models.testing import make_ecg_like_image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(n):
        width, height = SMOKE_IMAGE_SIZES[i % len(SMOKE_IMAGE_SIZES)]
        rel = f"images/smoke-{i:04d}.png"
        make_ecg_like_image(width, height, seed=seed * 1000 + i).save(out / rel)
        records.append({"id": f"smoke-{i:04d}", "image": rel, "conversations": _conversations(rng, i)})
    if bad_records:
        (out / "images" / "corrupt.png").write_bytes(b"not a png")
        good = records[0]["conversations"]
        records += [
            {"id": "bad-missing-image", "image": "images/nowhere.png", "conversations": good},
            {"id": "bad-unreadable-image", "image": "images/corrupt.png", "conversations": good},
            {"id": "bad-no-assistant", "image": records[0]["image"], "conversations": good[:1]},
            {"id": "bad-no-image", "conversations": good},
            {"id": "bad-too-long", "image": records[0]["image"],
             "conversations": [good[0], {"from": "gpt", "value": "very long answer " * 400}]},
            {"id": "bad-malformed", "image": records[0]["image"], "conversations": [good[1], good[1]]},
        ]
    path = out / DATA_FILE
    path.write_text(json.dumps(records, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pulse_training.smoke OUT_DIR", file=sys.stderr)
        return 2
    from pulse_models.testing import make_tiny_original_checkpoint

    out = Path(argv[0])
    model = make_tiny_original_checkpoint(out / "model", merge_type="flat")
    data = make_smoke_data(out / "data", bad_records=True)
    print(f"model_name_or_path={model} data_path={data} image_folder={data.parent} output_dir={out / 'out'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
