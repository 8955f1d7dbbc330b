"""`random_guess`: seeded uniform guesses inside each task's answer space.

The counterpart of the paper's "Random" row and the floor every real model must beat. Each item's
guess depends only on (seed, task, item id), so it is the same in any order, batch or shard.
"""

from __future__ import annotations

import hashlib
import random

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from pulse_tasks.data.subsets import BY_CONFIG
from pulse_tasks.scoring.answers import guess


def item_rng(seed: int, task: str, item_id: str) -> random.Random:
    """A generator seeded by (seed, task, id) alone."""
    digest = hashlib.sha256(f"{seed}|{task}|{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class RandomGuess(lmms):
    """lmms-eval model: `--model random_guess [--model_args seed=N]`."""

    def __init__(self, seed: int = 0, pretrained: str = "random_guess", **kwargs) -> None:
        super().__init__()
        self.seed = int(seed)
        self.pretrained = pretrained  # lmms-eval names the output folder after it

    def _guess_for(self, request: Instance, question: str) -> str:
        doc_id, task, split = request.arguments[-3:]
        doc = self.task_dict[task][split][doc_id]
        subset = BY_CONFIG.get(doc.get("subset", ""))  # normalized ECGBench docs name their subset
        rng = item_rng(self.seed, task, str(doc.get("id", doc_id)))
        if subset is None:  # not an ECGBench task: the only honest guess is an empty answer
            return ""
        return guess(subset, question, rng)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        return [self._guess_for(r, r.arguments[0]) for r in tqdm(requests, desc="random_guess", disable=self.rank != 0)]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        out = []
        for r in requests:
            doc_id, task, split = r.arguments[-3:]
            doc = self.task_dict[task][split][doc_id]
            turns = len(doc.get("questions") or [r.arguments[0]])
            out.append([self._guess_for(r, r.arguments[0]) for _ in range(turns)])
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("random_guess only generates text")
