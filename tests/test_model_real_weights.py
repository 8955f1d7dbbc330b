"""PULSE-7B itself (real weights): runs only where PULSE_7B_DIR names a local copy and a GPU exists.

    PULSE_7B_DIR=/path/to/PULSE-7B pytest -m gpu tests/test_model_real_weights.py
"""

from __future__ import annotations

import os

import pytest
import torch

PULSE_DIR = os.environ.get("PULSE_7B_DIR")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not PULSE_DIR, reason="set PULSE_7B_DIR to a local PULSE-7B checkpoint"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_pulse_7b_loads_flat_and_answers():
    from pulse_models.engine import GenSettings, OriginalEngine, WorkItem, run_batches
    from pulse_models.loading import detect_format, load_pulse
    from pulse_models.testing import make_ecg_like_image

    assert detect_format(PULSE_DIR) == "llava_original"
    model, tok, ip, cfg = load_pulse(PULSE_DIR, dtype="float16", device="cuda")
    assert cfg.mm_patch_merge_type == "flat" and cfg.tokens_per_tile == 576
    assert model.load_report.vision_tower_from == "checkpoint"
    assert len(tok) == 32000 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    engine = OriginalEngine(model, tok, ip)
    items = [WorkItem(i, [("What is the heart rhythm in this ECG image?", None)],
                      (lambda i=i: make_ecg_like_image(2200, 1700, seed=i))) for i in range(4)]
    one = run_batches(engine, items, GenSettings(max_new_tokens=32), batch_size=1, prefetch_workers=0)
    four = run_batches(engine, items, GenSettings(max_new_tokens=32), batch_size=4)
    assert all(o.text for o in one) and all(o.n_prompt_tokens > 2880 for o in one)
    assert sum(a.token_ids == b.token_ids for a, b in zip(one, four)) >= 3
