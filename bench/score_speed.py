"""Time paper+strict scoring of a full-size ECGBench run (all seven auto-scored subsets).

Builds synthetic normalized records at the published sizes (no images: scoring never reads them)
with plausible responses -- clean answers, reasoning with a final ``Answer:`` line, refusals,
failures, empty strings, quirk-triggering texts -- then times ``score_item`` on every item plus
one ``aggregate`` per subset, and exits non-zero when that takes longer than the budget.

    .venv/bin/python bench/score_speed.py            # full size, 2 s budget
    .venv/bin/python bench/score_speed.py --repeat 5 # best of five timings

The timing excludes building the synthetic set and importing the package (numpy included).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from pulse_tasks import metrics
from pulse_tasks.subsets import AUTO_SCORED, Subset

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


def time_scoring(items: list[tuple[Subset, dict, object]]) -> tuple[float, dict[str, dict]]:
    """Seconds to score every item and aggregate each subset, and the aggregates."""
    start = time.perf_counter()
    by_subset: dict[str, list[dict]] = {}
    subset_of: dict[str, Subset] = {}
    for sub, doc, response in items:
        by_subset.setdefault(sub.config, []).append(metrics.score_item(sub, doc, response))
        subset_of[sub.config] = sub
    results = {name: metrics.aggregate(subset_of[name], records) for name, records in by_subset.items()}
    return time.perf_counter() - start, results


def run_benchmark(repeat: int = 3, scale: float = 1.0) -> tuple[int, float]:
    """(number of items, best seconds over ``repeat`` timings) on the synthetic full-size set."""
    items = build_items(scale=scale)
    best = min(time_scoring(items)[0] for _ in range(max(1, repeat)))
    return len(items), best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings to take; the best is reported")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="fail above this many seconds")
    args = parser.parse_args(argv)
    n_items, seconds = run_benchmark(args.repeat)
    verdict = "ok" if seconds <= args.budget else "OVER BUDGET"
    print(f"items {n_items}  seconds {seconds:.3f}  budget {args.budget:.1f}  {verdict}")
    return 0 if seconds <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
