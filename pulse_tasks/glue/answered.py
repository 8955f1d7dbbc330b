"""An lmms-eval-shaped run without lmms-eval: a function answers the items of a local ECGBench
copy and the task hooks score them, as lmms-eval would call them.

For tests, benchmarks and demos that need a real run folder of plausible answers
(``pulse_tasks.results.runs.write_run`` writes the folder from records). It lives with the glue
because it runs the task hooks; the results floor below it reads what it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pulse_tasks.data import sources as ecg_data
from pulse_tasks.data.subsets import SUBSETS, Subset, get_subset
from pulse_tasks.glue.hooks import process_results
from pulse_tasks.results.runs import write_run


def write_answered_run(out_dir: str | Path, model: str, data: str | Path, answer: Callable[[Subset, dict], Any],
                       subsets: Iterable[str] | None = None, **write_kwargs: Any) -> Path:
    """An lmms-eval-shaped run of ``answer(spec, doc) -> response`` over the auto-scored subsets of
    a local ECGBench copy, every item scored by the task hook lmms-eval calls
    (``hooks.process_results``); ``write_kwargs`` go to ``runs.write_run``. Returns the results file."""
    names = list(subsets) if subsets is not None else [s.config for s in SUBSETS if not s.judged]
    records: dict[str, list[dict[str, Any]]] = {}
    responses: dict[str, list[Any]] = {}
    for name in names:
        spec = get_subset(name)
        docs = ecg_data.load_records(name, data)
        resps = [answer(spec, doc) for doc in docs]
        records[name] = [next(iter(process_results(doc, [r]).values())) for doc, r in zip(docs, resps)]
        responses[name] = resps
    write_kwargs.setdefault("data_source", f"local:{Path(data).name}")
    return write_run(out_dir, model, records, responses, **write_kwargs)
