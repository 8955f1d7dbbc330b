"""A small synthetic ECGBench (and ECGInstruct) for tests and offline demos.

Signals come from neurokit2's 12-lead simulator, drawn as a classic 3x4 printout plus a lead II
rhythm strip on grid paper. The simulated heart rate decides the rhythm (sinus bradycardia,
sinus rhythm, sinus tachycardia); the rates are far apart so the answer is visible in the picture.
Questions whose gold follows from the rate are "rhythm questions": their ids start with
``synth-rhythm-`` and ``synthetic.json`` lists them with the rhythm and rate.

Everything written here says it is synthetic: a README.txt and the ``synthetic.json`` marker.
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pulse_tasks.data.sources import (
    IMAGE_DIR,
    IMAGE_TOKEN,
    SYNTHETIC_MARKER,
    cache_dir,
    is_synthetic,
)
from pulse_tasks.data.subsets import BY_CONFIG, ECGQA_TAIL, SUBSETS, Subset

__all__ = [
    "RHYTHMS",
    "RHYTHM_NAMES",
    "is_synthetic",
    "make_ecgbench",
    "make_instruct",
    "render_ecg",
    "rhythm_of_rate",
    "simulate_ecg",
]

Rhythm = Literal["SB", "NORM", "ST"]
Layout = Literal["hub", "json"]

RHYTHMS: tuple[Rhythm, ...] = ("SB", "NORM", "ST")
# Centre rates far apart (7.5 / 12.5 / 21.7 beats per 10 s strip) so a tiny model can count them.
RHYTHM_RATES: dict[str, float] = {"SB": 45.0, "NORM": 75.0, "ST": 130.0}
RATE_JITTER = 0.06  # +-6 % time stretch per item: 42-48, 70-80, 122-138 bpm, classes never touch
BRADY_BELOW, TACHY_ABOVE = 60.0, 100.0  # the clinical sinus brady/tachy thresholds (bpm)
RHYTHM_NAMES: dict[str, str] = {"SB": "sinus bradycardia", "NORM": "sinus rhythm", "ST": "sinus tachycardia"}

SAMPLING_RATE = 100  # Hz; 2.5 s columns are ~125 px wide at the default size, 100 Hz is plenty
STRIP_SECONDS = 10.0  # a standard 12-lead printout shows 10 s
SIM_SECONDS = 12.0  # simulated length: room for a random window and a 6 % stretch
BASE_SEED = 0  # neurokit2 random_state of the base signals; checked to finish (some seeds make ecgsyn loop)
DEFAULT_IMAGE_SIZE = (512, 384)  # (width, height) px: small, but every beat stays visible
# The marker's "generator" value: this module's name before pulse_tasks was laid out in sub-packages, kept
# so that a synthetic copy's bytes (and so its sha256 fingerprint, the runs' data_source) do not change.
GENERATOR = "pulse_tasks.synth"
NOISE_MV = 0.015  # gaussian noise (mV) so that no two images are identical
WANDER_MV = 0.05  # baseline wander amplitude (mV), 0.15-0.35 Hz like breathing

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# The classic printout: three rows of four 2.5 s columns, then a 10 s lead II rhythm strip.
GRID_ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_STRIP_LEAD = "II"
PAPER_COLOURS = {"paper": (255, 243, 243), "minor": (250, 214, 214), "major": (236, 160, 160), "ink": (0, 0, 0)}

README_TEXT = """SYNTHETIC DATA - NOT ECGBench.

Written by pulse_tasks.data.synth ({what}). ECG signals simulated with neurokit2, drawn as 12-lead
printouts; questions imitate the ECGBench/ECGInstruct prompt styles. Rhythm questions (ids
starting with "synth-rhythm-") have gold answers that follow from the simulated heart rate
(<60 bpm sinus bradycardia, >100 bpm sinus tachycardia, otherwise sinus rhythm); other gold
answers are random. Scores on this data say nothing about a model's ECG skills.
"""

DISTRACTORS = (
    "Atrial fibrillation", "Atrial flutter", "First degree AV block", "Left bundle branch block",
    "Right bundle branch block", "Premature ventricular contractions", "ST-segment elevation",
    "Left ventricular hypertrophy", "T wave inversion",
)
RHYTHM_QUESTION_CONFIGS = ("code15-test", "ecgqa-test", "csn-test-no-cot", "g12-test-no-cot", "mmmu-ecg")


def rhythm_of_rate(heart_rate: float) -> Rhythm:
    """Sinus bradycardia below 60 bpm, tachycardia above 100 bpm, else sinus rhythm."""
    if heart_rate < BRADY_BELOW:
        return "SB"
    return "ST" if heart_rate > TACHY_ABOVE else "NORM"


# ----------------------------------------------------------------------------------------------
# Signals


@functools.cache
def _base_signal(rhythm: Rhythm) -> np.ndarray:
    """One simulated 12-lead signal per rhythm (shape (12, SIM_SECONDS*SAMPLING_RATE), mV).

    neurokit2 takes seconds per call (plus 2 s to import), so items reuse these three, varied by
    stretch/window/noise, and they are cached on disk (keyed by the neurokit2 version).
    """
    cached = _base_cache_path(rhythm)
    if cached is not None and cached.is_file():
        try:
            return np.load(cached)
        except (OSError, ValueError):
            pass  # a damaged cache file is simply recomputed
    try:
        import neurokit2 as nk
    except ImportError as exc:
        raise ImportError("synthetic ECGs need neurokit2: pip install 'neurokit2>=0.2.7'") from exc
    frame = nk.ecg_simulate(duration=SIM_SECONDS, sampling_rate=SAMPLING_RATE, heart_rate=RHYTHM_RATES[rhythm],
                            method="multileads", random_state=BASE_SEED)
    signal = frame[list(LEAD_NAMES)].to_numpy(dtype=np.float64).T.copy()
    if cached is not None:
        try:  # a failed cache write never fails the caller
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, signal)
            tmp.replace(cached)
        except OSError:
            pass
    return signal


def _base_cache_path(rhythm: Rhythm) -> Path | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        nk_version = version("neurokit2")
    except PackageNotFoundError:
        return None
    name = (f"ecgsyn-{rhythm}-{RHYTHM_RATES[rhythm]:g}bpm-{SAMPLING_RATE}hz-{SIM_SECONDS:g}s-"
            f"seed{BASE_SEED}-nk{nk_version}.npy")
    return cache_dir() / "signals" / name


def simulate_ecg(rhythm: Rhythm, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A 10 s 12-lead signal (shape (12, 1000) at 100 Hz, mV) and its heart rate in bpm."""
    base = _base_signal(rhythm)
    stretch = 1.0 + rng.uniform(-RATE_JITTER, RATE_JITTER)  # >1 compresses time: faster rate
    n_out = int(STRIP_SECONDS * SAMPLING_RATE)
    span = STRIP_SECONDS * stretch * SAMPLING_RATE  # base samples covered by the 10 s window
    start = rng.uniform(0.0, base.shape[1] - 1 - span)
    positions = start + np.arange(n_out) * stretch
    grid = np.arange(base.shape[1])
    signal = np.stack([np.interp(positions, grid, lead) for lead in base])
    t = np.arange(n_out) / SAMPLING_RATE
    wander = WANDER_MV * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * t + rng.uniform(0, 2 * np.pi))
    signal = signal * rng.uniform(0.85, 1.15) + wander + rng.normal(0.0, NOISE_MV, signal.shape)
    return signal, RHYTHM_RATES[rhythm] * stretch


# ----------------------------------------------------------------------------------------------
# Drawing


def render_ecg(signal: np.ndarray, size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
               sampling_rate: int = SAMPLING_RATE, ink_width: int = 1) -> Any:
    """Draw a (12, n) mV signal as a 3x4 printout + lead II rhythm strip; returns a PIL RGB image.

    Paper speed 25 mm/s and 10 mm/mV, with the millimetre size set by the image width.
    ``ink_width`` (pixels) thickens the traces: a bold print keeps the rhythm visible after a
    model downsamples the page to a few dozen pixels (the demo's tiny model sees about 64x64).
    """
    from PIL import Image, ImageDraw

    width, height = size
    margin = max(2, width // 100)
    px_per_s = (width - 2 * margin) / STRIP_SECONDS
    px_per_mm = px_per_s / 25.0  # 25 mm/s
    px_per_mv = 10.0 * px_per_mm  # 10 mm/mV
    row_h = (height - 2 * margin) / 4.0
    img = Image.new("RGB", size, PAPER_COLOURS["paper"])
    draw = ImageDraw.Draw(img)
    # grid: 1 mm minor lines only where they stay apart (>= 3 px), 5 mm major lines always
    for step, colour in ((1, PAPER_COLOURS["minor"]), (5, PAPER_COLOURS["major"])):
        spacing = step * px_per_mm
        if spacing < 3:
            continue
        for x in np.arange(margin, width - margin + 1e-6, spacing):
            draw.line([(x, margin), (x, height - margin)], fill=colour)
        for y in np.arange(margin, height - margin + 1e-6, spacing):
            draw.line([(margin, y), (width - margin, y)], fill=colour)
    n = signal.shape[1]
    per_col = round(STRIP_SECONDS / 4 * sampling_rate)
    index = {name: i for i, name in enumerate(LEAD_NAMES)}
    ink = PAPER_COLOURS["ink"]
    rows = [(leads, False) for leads in GRID_ROWS] + [((RHYTHM_STRIP_LEAD,), True)]
    for r, (leads, full) in enumerate(rows):
        baseline = margin + row_h * (r + 0.6)  # a little below the middle: R waves point up
        for c, lead in enumerate(leads):
            lo, hi = (0, n) if full else (c * per_col, min(n, (c + 1) * per_col))
            t = np.arange(lo, hi) / sampling_rate
            xs = margin + t * px_per_s
            ys = np.clip(baseline - signal[index[lead], lo:hi] * px_per_mv, margin, height - margin)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=ink, width=ink_width)
            x0 = margin + lo / sampling_rate * px_per_s
            draw.text((x0 + 2, margin + row_h * r + 1), lead, fill=ink)
            if c:  # short separator tick between columns, as on printed ECGs
                draw.line([(x0, baseline - 0.3 * px_per_mv), (x0, baseline + 0.3 * px_per_mv)], fill=ink)
    return img


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Questions (hub-style conversations)


@dataclass(frozen=True)
class SynthItem:
    """One synthetic item before it is written in a layout."""

    id: str
    config: str
    image_path: str  # relative, e.g. "cpsc-test/synth-cpsc-test-0001.png"
    png: bytes
    conversations: list[dict[str, Any]]  # hub style ({from, value}; arena {question, answer})
    rhythm: Rhythm
    heart_rate: float
    rhythm_question: bool  # gold follows from the drawn rate


def _letter_options(rng: np.random.Generator, rhythm: Rhythm, k: int) -> tuple[list[str], str]:
    """k options: the three rhythm names plus distractors, shuffled; returns (options, gold letter)."""
    names = [RHYTHM_NAMES[r].capitalize() for r in RHYTHMS]
    extra = [str(d) for d in rng.choice(DISTRACTORS, size=k - len(names), replace=False)]
    options = names + extra
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    gold = "ABCDEFGH"[options.index(RHYTHM_NAMES[rhythm].capitalize())]
    return options, gold


def _turns(question: Any, answer: Any) -> list[dict[str, Any]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def _report(rhythm: Rhythm, rate: float) -> str:
    name = RHYTHM_NAMES[rhythm]
    return (f"{name.capitalize()} at a rate of about {rate:.0f} bpm. P waves precede every QRS complex; "
            "PR interval and QRS duration are within normal limits. No ST-segment or T-wave changes. "
            f"Diagnosis: {name}" + ("." if rhythm == "NORM" else ", otherwise normal ECG."))


def _random_labels(rng: np.random.Generator, labels: tuple[str, ...]) -> str:
    count = int(rng.integers(1, 3))
    return "; ".join(str(x) for x in rng.choice(labels, size=count, replace=False))


def conversations_for(sub: Subset, rhythm: Rhythm, rate: float,
                      rng: np.random.Generator) -> tuple[list[dict[str, Any]], bool]:
    """Hub-style conversations in the subset's prompt style, and whether the gold follows from the rate."""
    name = RHYTHM_NAMES[rhythm]
    config = sub.config
    if config == "ptb-test":
        q = ("Which of the following diagnostic classes does this ECG belong to? "
             f"Options: {', '.join(sub.labels)}. List every class that applies, separated by ';'.")
        gold = "NORM" if rhythm == "NORM" else _random_labels(rng, sub.labels[1:])
        return _turns(q, gold), False
    if config == "cpsc-test":
        q = ("Identify the abnormalities shown in this 12-lead ECG. Choose from: "
             f"{', '.join(sub.labels)}. List every label that applies, separated by ';'.")
        gold = "NORM" if rhythm == "NORM" else _random_labels(rng, sub.labels[1:])
        return _turns(q, gold), False
    if config == "code15-test":
        q = ("Is this ECG normal or abnormal? If abnormal, name the findings from: 1dAVb, RBBB, LBBB, SB, ST, AF. "
             "End your reply with 'Answer:' followed by NORM or the findings.")
        return _turns(q, rhythm), True  # NORM, SB or ST: each is a code15 label name
    if config == "ptb-test-report":
        q = ("Please write a clinical report for this 12-lead ECG image, covering the rhythm, "
             "the waveform and the diagnosis.")
        return _turns(q, _report(rhythm, rate)), False
    if config == "ecgqa-test":
        if rng.random() < 0.5:
            asked = RHYTHMS[int(rng.integers(0, len(RHYTHMS)))]
            q = f"Does this ECG show {RHYTHM_NAMES[asked]}?\nOptions: yes, no, not sure. {ECGQA_TAIL}"
            gold = ["yes" if asked == rhythm else "no"]
        else:
            options = [RHYTHM_NAMES[r] for r in RHYTHMS] + ["atrial fibrillation"]
            options = [options[i] for i in rng.permutation(len(options))]
            q = f"Which rhythm does this ECG show?\nOptions: {', '.join(options)}. {ECGQA_TAIL}"
            gold = [name]
        return _turns([q], gold), True  # ecgqa stores every value as a list of strings
    if config in ("csn-test-no-cot", "g12-test-no-cot"):
        options, letter = _letter_options(rng, rhythm, len(sub.letters))
        listed = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))
        q = ("What is the most likely diagnosis based on this ECG?\n" f"{listed}\n"
             "Answer with the option's letter from the given choices directly.")
        return _turns(q, f"{letter}. {options[ord(letter) - 65]}"), True
    if config == "mmmu-ecg":
        options, letter = _letter_options(rng, rhythm, len(sub.letters))
        listed = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
        q = ("A patient presents for a routine check-up. Which rhythm does this ECG show?\n" f"{listed}\n"
             "Answer the question step by step, then give the final answer on the last line "
             "in the form 'Answer: X', where X is the option letter.")
        return _turns(q, letter), True
    if config == "arena":
        first = (f"The ECG shows {name} at about {rate:.0f} bpm, with a P wave before every QRS complex "
                 "and normal intervals.")
        second = {"SB": "If the patient has symptoms such as dizziness, review medications and consider "
                        "further work-up; asymptomatic sinus bradycardia usually needs no treatment.",
                  "NORM": "No treatment is needed for the rhythm itself; correlate with the clinical picture.",
                  "ST": "Look for a cause such as fever, pain, anaemia, dehydration or hyperthyroidism and "
                        "treat the cause rather than the rate."}[rhythm]
        return [{"question": "What is the heart rate and rhythm in this ECG?", "answer": first},
                {"question": "Based on your answer, what should be done next?", "answer": second}], False
    raise ValueError(f"no synthetic question template for {config!r}")  # pragma: no cover - table is complete


# ----------------------------------------------------------------------------------------------
# Writing


def _item(sub: Subset, index: int, seed: int, size: tuple[int, int], stream: int, ink_width: int = 1) -> SynthItem:
    # one generator per item: items do not depend on how many others are made
    rng = np.random.default_rng([seed, stream, SUBSETS.index(sub), index])
    rhythm = RHYTHMS[(index + SUBSETS.index(sub)) % len(RHYTHMS)]  # balanced classes in every subset
    signal, rate = simulate_ecg(rhythm, rng)
    conversations, rhythm_question = conversations_for(sub, rhythm, rate, rng)
    prefix = "synth-rhythm" if rhythm_question else "synth"
    item_id = f"{prefix}-{sub.config}-{index:04d}"
    png = _png_bytes(render_ecg(signal, size, ink_width=ink_width))
    return SynthItem(item_id, sub.config, f"{sub.config}/{item_id}.png", png,
                     conversations, rhythm, round(rate, 1), rhythm_question)


def _write_markers(out: Path, what: str, meta: dict[str, Any]) -> None:
    (out / "README.txt").write_text(README_TEXT.format(what=what))
    (out / SYNTHETIC_MARKER).write_text(json.dumps({"synthetic": True, "generator": GENERATOR, **meta},
                                                   indent=1, sort_keys=True))


def _conversation_features(sub: Subset) -> Any:
    from datasets import List, Value

    if sub.rule.qa_turns:
        return List({"question": Value("string"), "answer": Value("string")})
    value = List(Value("string")) if sub.rule.gold_options else Value("string")
    return List({"from": Value("string"), "value": value})


def _write_hub(out: Path, sub: Subset, items: list[SynthItem]) -> None:
    from datasets import Dataset, Features, Image, Value

    features = Features({"id": Value("string"), "image_path": Value("string"), "image": Image(),
                         "conversations": _conversation_features(sub)})
    ds = Dataset.from_dict({
        "id": [i.id for i in items], "image_path": [i.image_path for i in items],
        "image": [{"bytes": i.png, "path": Path(i.image_path).name} for i in items],
        "conversations": [i.conversations for i in items],
    }, features=features)
    folder = out / sub.config
    folder.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "test-00000-of-00001.parquet"))


def _write_json(out: Path, sub: Subset, items: list[SynthItem]) -> None:
    rows = []
    for item in items:
        target = out / IMAGE_DIR / item.image_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.png)
        conversations = [dict(t) for t in item.conversations]
        if not sub.rule.qa_turns:  # older JSON copies keep LLaVA's placeholder in the first question
            first = conversations[0]["value"]
            conversations[0]["value"] = ([f"{IMAGE_TOKEN}\n{first[0]}", *first[1:]] if isinstance(first, list)
                                         else f"{IMAGE_TOKEN}\n{first}")
        rows.append({"id": item.id, "image": item.image_path, "conversations": conversations})
    (out / f"{sub.config}.json").write_text(json.dumps(rows, indent=1))


def make_ecgbench(out_dir: str | os.PathLike[str], per_subset: int = 4, layout: Layout = "hub", seed: int = 0,
                  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, ink_width: int = 1) -> Path:
    """Write a synthetic ECGBench (all nine subsets, ``per_subset`` items each) and return its folder.

    ``layout="hub"``: ``<config>/test-00000-of-00001.parquet``; ``"json"``: ``<config>.json`` + images/.
    """
    if layout not in ("hub", "json"):
        raise ValueError(f"layout must be 'hub' or 'json', not {layout!r}")
    if per_subset < 1:
        raise ValueError("per_subset must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items_meta: dict[str, dict[str, Any]] = {}
    for sub in SUBSETS:
        items = [_item(sub, i, seed, tuple(image_size), stream=0, ink_width=ink_width) for i in range(per_subset)]
        (_write_hub if layout == "hub" else _write_json)(out, sub, items)
        for it in items:
            items_meta[it.id] = {"subset": sub.config, "rhythm": it.rhythm, "heart_rate": it.heart_rate,
                                 "rhythm_question": it.rhythm_question}
    _write_markers(out, f"synthetic ECGBench, {layout} layout", {
        "kind": "ecgbench", "layout": layout, "seed": seed, "per_subset": per_subset,
        "image_size": list(image_size), "ink_width": ink_width, "rhythm_rates": RHYTHM_RATES, "items": items_meta})
    return out


INSTRUCT_FILE = "ecginstruct.json"  # LLaVA-style conversation list, images under images/
# Templates cycled through by make_instruct: the rhythm questions of the benchmark plus reports and dialogues.
INSTRUCT_TEMPLATES = ("code15-test", "csn-test-no-cot", "ecgqa-test", "mmmu-ecg", "g12-test-no-cot",
                      "ptb-test-report", "arena")


def _llava_conversations(conversations: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Hub-style turns -> LLaVA turns, the image placeholder in the first human turn."""
    turns: list[dict[str, str]] = []
    for turn in conversations:
        if "question" in turn:
            turns += [{"from": "human", "value": turn["question"]}, {"from": "gpt", "value": turn["answer"]}]
            continue
        value = turn["value"]
        if isinstance(value, list):  # ecgqa: question a one-element list, gold the option list
            value = "\n".join(value) if turn["from"] == "human" else ", ".join(value)
        turns.append({"from": turn["from"], "value": value})
    turns[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{turns[0]['value']}"}
    return turns


def make_instruct(out_dir: str | os.PathLike[str], n: int = 64, seed: int = 0,
                  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, ink_width: int = 1) -> Path:
    """Write a synthetic ECGInstruct (LLaVA JSON + images/) and return the JSON file's path.

    Rhythm questions use the synthetic ECGBench's prompts and answer styles; arena-style records
    are two-turn. Images differ from make_ecgbench's (separate random stream).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out_dir)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    records, meta = [], {}
    for i in range(n):
        sub = BY_CONFIG[INSTRUCT_TEMPLATES[i % len(INSTRUCT_TEMPLATES)]]
        item = _item(sub, i, seed, tuple(image_size), stream=1, ink_width=ink_width)
        item_id = item.id.replace("synth", "synth-train", 1)
        image_rel = f"train/{item_id}.png"
        target = out / IMAGE_DIR / image_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.png)
        records.append({"id": item_id, "image": image_rel, "conversations": _llava_conversations(item.conversations)})
        meta[item_id] = {"template": sub.config, "rhythm": item.rhythm, "heart_rate": item.heart_rate,
                         "rhythm_question": item.rhythm_question}
    path = out / INSTRUCT_FILE
    path.write_text(json.dumps(records, indent=1))
    _write_markers(out, "synthetic ECGInstruct, LLaVA JSON", {"kind": "ecginstruct", "seed": seed, "n": n,
                                                             "image_size": list(image_size), "items": meta})
    return path
