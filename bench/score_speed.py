"""Time paper+strict scoring of a full-size ECGBench run (all seven auto-scored subsets).

Two sets, each at the published sizes (10,697 items; no images: scoring never reads them):

* ``synthetic`` -- short plausible responses: clean answers, reasoning with a final ``Answer:``
  line, refusals, failures, empty strings, quirk-triggering texts;
* ``real`` -- real model answers resampled to the full size (seeded, with replacement):
  ``bench/data/fastvlm-code15-test.jsonl.gz`` (a fine-tuned FastVLM-1.5B's code15 answers, about
  1,100 characters each: answer line, long rationale, loops, mojibake) for the multi-label subsets
  and ``bench/data/llm-ecgqa-answers.jsonl.gz`` (large general models' ECG-QA reasoning, about
  1,300 characters) for ECG-QA; the letter subsets, whose real answers are not shared, draw from
  both files (1,779 answers); bench/data/README.md gives the sources.

It times ``score_item`` on every item plus one ``aggregate`` per subset, and exits non-zero when
either set takes longer than the budget.

    .venv/bin/python bench/score_speed.py                 # both sets, full size, 2 s budget
    .venv/bin/python bench/score_speed.py --set real      # only the real-length answers
    .venv/bin/python bench/score_speed.py --repeat 5      # best of five timings

The timing excludes building the sets and importing the package (numpy included). The budget is
about one core, so the verdict is on the CPU seconds of the scoring thread (BLAS held to that thread):
what scoring costs whatever else the machine runs; the wall seconds are printed beside them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

from pulse_tasks.data.subsets import AUTO_SCORED, Subset
from pulse_tasks.scoring import metrics, strict

BUDGET_S = 2.0  # the scoring of a full run must stay interactive (brief: < 2 s on one core)
SEED = 0  # fixed synthetic set, so timings compare across runs

ECGQA_OPTIONS = ("yes", "no", "none", "not sure", "sinus rhythm", "atrial fibrillation",
                 "left bundle branch block", "Inferior myocardial infarction", "T wave inversion")
ONLY = "Only answer based on the given Options without any explanation."


def _letter_response(rng: random.Random, gold: str, letters: str) -> str:
    letter = gold if rng.random() < 0.6 else rng.choice(letters)
    return rng.choice([
        letter,
        f"{letter}. Sinus bradycardia",
        f"The ECG shows a regular rhythm with narrow QRS complexes.\nAnswer: {letter}",
        f"Step by step: the PR interval is prolonged. The correct option is {letter}.",
        "I cannot determine the answer from this image.",
        "",
        "[ECGBENCH_GENERATION_FAILED: CUDA out of memory]",
    ])


def _label_response(rng: random.Random, labels: tuple[str, ...], gold: list[str]) -> str:
    chosen = sorted(set(gold[: rng.randint(0, len(gold))] + rng.sample(labels, rng.randint(0, 2))))
    return rng.choice([
        ", ".join(chosen),
        "The ECG shows an ABNORMAL pattern with STD and AFL. Answer: " + "; ".join(chosen),
        "Findings: " + " and ".join(chosen) + ". No acute MI.",
        "",
    ])


def build_items(subsets: tuple[Subset, ...] = AUTO_SCORED, seed: int = SEED,
                scale: float = 1.0) -> list[tuple[Subset, dict, object]]:
    """(subset, normalized doc, response) triples at the published sizes (times ``scale``)."""
    rng = random.Random(seed)
    items = []
    for sub in subsets:
        for i in range(max(1, round(sub.n_items * scale))):
            doc = {"id": f"{sub.config}-{i}", "subset": sub.config, "gold_options": []}
            if sub.kind == "letter":
                gold = rng.choice(sub.letters)
                doc.update(questions=["Which diagnosis fits? A. ... B. ..."], answers=[f"{gold}. Diagnosis"])
                response: object = _letter_response(rng, gold, sub.letters)
            elif sub.kind == "ecgqa":
                options = rng.sample(ECGQA_OPTIONS, 4)
                gold_options = options[: rng.randint(1, 2)]
                doc.update(questions=[f"Which findings are present? Options: {', '.join(options)}. {ONLY}"],
                           answers=[", ".join(gold_options)], gold_options=gold_options)
                response = rng.choice([", ".join(gold_options), rng.choice(options), "none of them", ""])
            else:
                if sub.config == "code15-test":
                    specific = rng.sample(sub.labels[2:], rng.randint(0, 2))  # after NORM, ABNORMAL
                    gold_labels = ["NORM"] if rng.random() < 0.4 else ["ABNORMAL", *specific]
                else:
                    gold_labels = rng.sample(sub.labels, rng.randint(1, 3))
                doc.update(questions=["What are the diagnostic labels?"], answers=["; ".join(gold_labels)])
                response = _label_response(rng, sub.labels, gold_labels)
            if rng.random() < 0.002:
                response = None  # a missing prediction
            items.append((sub, doc, response))
    return items


DATA = Path(__file__).parent / "data"
REAL_FILES = {"multilabel": "fastvlm-code15-test.jsonl.gz", "text": "llm-ecgqa-answers.jsonl.gz"}
LETTER_PROMPT = ("Which of the following best describes this ECG?\nA. Sinus rhythm\nB. Atrial fibrillation\n"
                 "C. Sinus bradycardia\nD. Sinus tachycardia\nE. Left bundle branch block\nF. Right bundle branch "
                 "block\nG. First degree AV block\nH. Premature ventricular contractions\n"
                 "Answer with the option's letter from the given choices directly.")
MULTILABEL_PROMPTS = {
    "ptb-test": ("Determine the appropriate class for the ECG image: NORM(normal ECG), MI(myocardial infarction), "
                 "STTC(ST/T change), CD(conduction disturbance), HYP(hypertrophy). The last line of your response "
                 "should be of the following format: 'Answer: $CLASS(;CLASS)'."),
    "cpsc-test": ("Determine the appropriate class for the ECG image: NORM(normal), AF(atrial fibrillation), "
                  "I-AVB(first-degree atrioventricular block), LBBB(left bundle branch block), RBBB(right bundle "
                  "branch block), PAC(premature atrial contraction), PVC(premature ventricular contraction), "
                  "STD(ST-segment depression), STE(ST-segment elevation). The last line of your response should be "
                  "of the following format: 'Answer: $CLASS(;CLASS)'."),
}


def _real_answers(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def build_real_items(subsets: tuple[Subset, ...] = AUTO_SCORED, seed: int = SEED,
                     scale: float = 1.0) -> list[tuple[Subset, dict, object]]:
    """(subset, doc, response) triples at the published sizes, the responses real answers."""
    rng = random.Random(seed)
    code15, ecgqa = _real_answers(REAL_FILES["multilabel"]), _real_answers(REAL_FILES["text"])
    pool = code15 + ecgqa
    items = []
    for sub in subsets:
        for i in range(max(1, round(sub.n_items * scale))):
            doc = {"id": f"{sub.config}-{i}", "subset": sub.config, "gold_options": []}
            if sub.kind == "ecgqa":
                row = rng.choice(ecgqa)
                doc.update(questions=[row["prompt"]], answers=["yes"], gold_options=["yes"])
            elif sub.kind == "letter":
                row = rng.choice(pool)  # no letter-subset answers are shared: any real answer, either file
                doc.update(questions=[LETTER_PROMPT], answers=[f"{rng.choice(sub.letters)}. Diagnosis"])
            else:
                row = rng.choice(code15)
                prompt = row["prompt"] if sub.config == "code15-test" else MULTILABEL_PROMPTS[sub.config]
                doc.update(questions=[prompt], answers=["NORM" if rng.random() < 0.4 else "; ".join(sub.labels[1:3])])
            items.append((sub, doc, row["text"]))
    return items


SETS = {"synthetic": build_items, "real": build_real_items}


def time_scoring(items: list[tuple[Subset, dict, object]]) -> tuple[float, float, dict[str, dict]]:
    """(CPU seconds on one core, wall seconds, aggregates) of scoring every item and aggregating each
    subset. The CPU seconds are this thread's, with numpy's BLAS held to it: the cost on one core,
    which a busy machine does not inflate as it does the wall time. Strict mode's caches of what it
    read from answers start empty (as in a fresh run), so a repeat does not time cache hits of the
    previous one."""
    from threadpoolctl import threadpool_limits

    strict.clear_caches()
    with threadpool_limits(limits=1):
        wall, cpu = time.perf_counter(), time.thread_time()
        by_subset: dict[str, list[dict]] = {}
        subset_of: dict[str, Subset] = {}
        for sub, doc, response in items:
            by_subset.setdefault(sub.config, []).append(metrics.score_item(sub, doc, response))
            subset_of[sub.config] = sub
        results = {name: metrics.aggregate(subset_of[name], records) for name, records in by_subset.items()}
        return time.thread_time() - cpu, time.perf_counter() - wall, results


def run_benchmark(repeat: int = 3, scale: float = 1.0, which: str = "synthetic") -> tuple[int, float, float]:
    """(number of items, best CPU seconds, best wall seconds over ``repeat`` timings) on one full-size set."""
    items = SETS[which](scale=scale)
    timings = [time_scoring(items)[:2] for _ in range(max(1, repeat))]
    return len(items), min(t[0] for t in timings), min(t[1] for t in timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings to take; the best is reported")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="fail above this many CPU seconds on one core")
    parser.add_argument("--set", choices=(*SETS, "both"), default="both", dest="which",
                        help="short synthetic answers, real-length answers, or both (default)")
    args = parser.parse_args(argv)
    ok = True
    for which in (SETS if args.which == "both" else (args.which,)):
        n_items, seconds, wall = run_benchmark(args.repeat, which=which)
        verdict = "ok" if seconds <= args.budget else "OVER BUDGET"
        ok &= seconds <= args.budget
        print(f"{which:9s}  items {n_items}  cpu seconds {seconds:.3f}  wall seconds {wall:.3f}  "
              f"budget {args.budget:.1f}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
