"""Reading lmms-eval output folders of ECGBench runs (and writing synthetic ones for tests).

lmms-eval 0.7.3 with ``--output_path OUT --log_samples`` writes, per model,
``OUT/<model_sanitized>/<date_id>_results.json`` (aggregated metrics as ``"<metric>,none"``,
``configs[task].metadata`` with ``version`` and ``data_source``, ``versions``, ``n-samples``,
``config`` with model and model_args, ``lmms_eval_version``) and
``OUT/<model_sanitized>/<date_id>_samples_<task>.jsonl`` (one line per item; every metric name
maps to our per-item scoring record, see ``pulse_tasks.glue.hooks.process_results``).

A RUN argument may be the results JSON, a model folder or the output folder (every model folder
under it). In a folder, one run is the newest results file together with the older results files
of the same folder that ran the same model with the same model_args and gen_kwargs on the same
data: each older file adds the subsets the newer ones lack, so an evaluation split over several
lmms-eval calls (say ``ecgbench_auto`` now and the judged subsets later) reads as one run. A
results file named directly is read alone.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pulse_tasks.data.subsets import BY_TASK, SUBSETS, Subset
from pulse_tasks.results.summary import metric_names, metric_value
from pulse_tasks.scoring.answers import answer_space
from pulse_tasks.scoring.judge.rubrics import CRITERIA
from pulse_tasks.scoring.records import FAILED_PREFIXES, JUDGE_FAILED, JUDGE_OK

RESULTS_SUFFIX = "_results.json"  # lmms-eval: <date_id>_results.json
SAMPLES_INFIX = "_samples_"  # lmms-eval: <date_id>_samples_<task>.jsonl
METRIC_FILTER = ",none"  # lmms-eval keys aggregated metrics as "<metric>,<filter>"; we use no filter
SYNTHETIC_WORD = "synthetic"  # a data_source naming it (e.g. "synthetic:sha256:...") marks synthetic data
# pulse_tasks.data.synth names every item "synth-..."; real ECGBench ids never start so. A fallback for
# runs whose task metadata does not flag synthetic data (the generated local-copy tasks carry only a checksum).
SYNTH_ID_PREFIX = "synth-"
DATE_ID = "%Y%m%dT%H%M%S"  # our synthetic folders' date ids (lmms-eval uses %Y%m%d_%H%M%S; both sort by time)
# What must agree for results files of one model folder to be read as one run.
MERGE_KEYS = ("model", "model_args", "gen_kwargs")

logger = logging.getLogger(__name__)


class RunError(ValueError):
    """A RUN argument that is not an lmms-eval ECGBench output."""


@dataclass
class SubsetRun:
    """One ECGBench task of one run."""

    subset: Subset
    task: str
    version: Any  # the task's metadata.version (bumped whenever a prompt, parser or metric changes)
    data_source: str | None  # metadata.data_source: hub revision or checksum of the local copy
    metadata: dict[str, Any]
    aggregated: dict[str, float | None]  # lmms-eval's aggregated numbers, "auc_paper" -> value
    records: list[dict[str, Any]] | None  # per-item records from the samples file; None when absent
    responses: list[Any] | None  # the model's (filtered) response per record
    samples_file: Path | None
    n_samples: int | None  # lmms-eval's n-samples "effective"
    judge_added: int = 0  # judge records added afterwards by `ecgbench judge` (pulse_tasks.scoring.judge.attached)
    judge_file: Path | None = None  # the file they came from

    @property
    def strict_versions(self) -> set[int]:
        """The strict scoring versions this task was scored with: task metadata and records."""
        return strict_versions_of(self.metadata, self.records)


@dataclass
class Run:
    """One lmms-eval results file and its samples."""

    name: str
    results_file: Path
    model: str
    model_args: str  # credential-like values redacted (pulse_tasks.results.redaction); config holds the file's text
    lmms_eval_version: str | None
    date: str | None
    config: dict[str, Any]
    subsets: dict[str, SubsetRun] = field(default_factory=dict)  # by hub config name
    other_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. the gold-history arena
    synthetic: bool = False
    # The results files read into this run, newest first: more than one when a split evaluation
    # was merged (see the module docstring).
    parts: list[Path] = field(default_factory=list)

    @property
    def data_sources(self) -> set[str]:
        return {s.data_source for s in self.subsets.values() if s.data_source}


def strict_versions_of(metadata: Mapping[str, Any] | None, records: Sequence[Mapping[str, Any]] | None) -> set[int]:
    """Strict scoring versions named by task metadata and per-item records; a run that names
    none was scored before versions were recorded (``LEGACY_STRICT_VERSION``)."""
    from pulse_tasks.scoring.records import LEGACY_STRICT_VERSION, strict_version_of

    versions = {v for r in records or () if (v := strict_version_of(r, default=None)) is not None}
    if (metadata or {}).get("strict_version") is not None:
        versions.add(int(metadata["strict_version"]))
    return versions or {LEGACY_STRICT_VERSION}


# ----------------------------------------------------------------------------------------------
# Finding results files


def _results_in(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{RESULTS_SUFFIX}"))  # date ids sort by time


def find_results(path: str | Path) -> list[Path]:
    """The results files a RUN argument names (see the module docstring)."""
    p = Path(path)
    if p.is_file():
        if not p.name.endswith(RESULTS_SUFFIX):
            raise RunError(f"{p} is not an lmms-eval results file (*{RESULTS_SUFFIX})")
        return [p]
    if not p.is_dir():
        raise RunError(f"{p} does not exist")
    own = _results_in(p)
    if own:
        return [own[-1]]
    nested = [found[-1] for sub in sorted(x for x in p.iterdir() if x.is_dir()) if (found := _results_in(sub))]
    if not nested:
        raise RunError(f"no lmms-eval results (*{RESULTS_SUFFIX}) in {p} or its model folders; "
                       "run lmms-eval with --output_path and --log_samples")
    return nested


def find_result_sets(path: str | Path) -> list[list[Path]]:
    """Per run a RUN argument names, its candidate results files, newest first: a file named
    directly alone, else every results file of the model folder (load_runs decides what merges)."""
    p = Path(path)
    if p.is_file() or not p.is_dir():
        return [find_results(p)]
    own = _results_in(p)
    if own:
        return [own[::-1]]
    sets = [found[::-1] for sub in sorted(x for x in p.iterdir() if x.is_dir()) if (found := _results_in(sub))]
    if not sets:
        find_results(p)  # raises the "no lmms-eval results" error
    return sets


def _date_id(results_file: Path) -> str:
    return results_file.name[: -len(RESULTS_SUFFIX)]


def _record_of(line: Mapping[str, Any], spec: Subset) -> dict[str, Any] | None:
    for name in metric_names(spec):
        value = line.get(name)
        if isinstance(value, dict) and "id" in value:
            return value
    return None


def _response_of(line: Mapping[str, Any]) -> Any:
    from pulse_tasks.scoring.judge.attached import canonical_response  # lmms-eval's one-element lists unwrapped

    return canonical_response(line.get("filtered_resps", line.get("resps")))  # the arena keeps its two turns


def read_samples(path: Path, spec: Subset) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per-item records and responses from one samples file (lines without our record skipped)."""
    records, responses = [], []
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise RunError(f"{path}:{number}: not JSON ({exc})") from exc
            record = _record_of(line, spec)
            if record is not None:
                records.append(record)
                responses.append(_response_of(line))
    return records, responses


def read_sample_media(path: Path, spec: Subset) -> dict[str, list[str]]:
    """Item id -> the image references lmms-eval (0.7+) logged for it (``input_media``: paths as
    the doc named them, or ``data:`` URIs); items without any are left out. Read only by
    viewers, which decide which of them they may open (``pulse_app.access``)."""
    media: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            if '"input_media"' not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # read_samples reports bad lines; a viewer just has no image for them
            record = _record_of(line, spec)
            refs = line.get("input_media")
            if record is not None and isinstance(refs, list):
                media[str(record["id"])] = [r for r in refs if isinstance(r, str)]
    return media


def is_synthetic_source(data_source: str | None, metadata: Mapping[str, Any] | None = None,
                        records: list[dict[str, Any]] | None = None) -> bool:
    """True when the task metadata marks the data as synthetic (flag or data_source name), or
    when every item id is one of pulse_tasks.data.synth's."""
    if metadata and metadata.get(SYNTHETIC_WORD):
        return True
    if data_source and SYNTHETIC_WORD in str(data_source).lower():
        return True
    return bool(records) and all(str(r.get("id", "")).startswith(SYNTH_ID_PREFIX) for r in records or [])


def _aggregated(task_results: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in task_results.items():
        if not key.endswith(METRIC_FILTER) or "_stderr" in key:
            continue
        out[key[: -len(METRIC_FILTER)]] = value if isinstance(value, (int, float)) else None
    return out


def load_run(results_file: str | Path, name: str | None = None) -> Run:
    """Read one results file and the samples files written beside it."""
    path = Path(results_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or "results" not in data:
        raise RunError(f"{path} has no 'results': not an lmms-eval results file")
    from pulse_tasks.results.redaction import redact_model_args

    config = data.get("config") or {}
    date_id = _date_id(path)
    # lmms-eval leaves the model folder name empty when model_args names no model (e.g. random_guess).
    label = str(data.get("model_name_sanitized") or config.get("model") or path.parent.name)
    run = Run(name=name or f"{label}@{date_id}", results_file=path,
              model=str(config.get("model") or path.parent.name), model_args=str(redact_model_args(str(config.get("model_args") or ""))),
              lmms_eval_version=data.get("lmms_eval_version"), date=data.get("date"), config=config, parts=[path])
    configs, versions, n_samples = data.get("configs") or {}, data.get("versions") or {}, data.get("n-samples") or {}
    # group_subtasks lists every task, a group with its members and a lone task with none.
    groups = set(data.get("groups") or {}) | {g for g, members in (data.get("group_subtasks") or {}).items() if members}
    for task, task_results in (data.get("results") or {}).items():
        if task in groups:  # the ecgbench / ecgbench_auto group rows aggregate nothing of ours
            continue
        meta = dict((configs.get(task) or {}).get("metadata") or {})
        spec = BY_TASK.get(task)
        if spec is None:
            if task.startswith("ecgbench"):
                run.other_tasks[task] = {"aggregated": _aggregated(task_results), "metadata": meta}
            continue
        samples = path.with_name(f"{date_id}{SAMPLES_INFIX}{task}.jsonl")
        records, responses = read_samples(samples, spec) if samples.exists() else (None, None)
        added, judge_file = 0, None
        if records is not None and spec.judged:
            records, added, judge_file = _with_added_judge_records(samples, records, responses or [])
        run.subsets[spec.config] = SubsetRun(
            subset=spec, task=task, version=versions.get(task, meta.get("version")),
            data_source=meta.get("data_source"), metadata=meta, aggregated=_aggregated(task_results),
            records=records, responses=responses, samples_file=samples if samples.exists() else None,
            n_samples=(n_samples.get(task) or {}).get("effective"), judge_added=added, judge_file=judge_file)
    if not run.subsets and not run.other_tasks:
        raise RunError(f"{path} holds no ECGBench task (ecgbench_*)")
    run.synthetic = any(is_synthetic_source(s.data_source, s.metadata, s.records) for s in run.subsets.values())
    return run


def _with_added_judge_records(samples: Path, records: list[dict[str, Any]],
                              responses: list[Any]) -> tuple[list[dict[str, Any]], int, Path | None]:
    """The samples' judge records with those `ecgbench judge` added afterwards in place of unjudged ones."""
    from pulse_tasks.scoring.judge.attached import apply_attached, attached_path, read_attached

    path = attached_path(samples)
    if path is None or not path.exists():
        return records, 0, None
    merged, added, mismatched = apply_attached(records, responses, read_attached(path))
    if mismatched:
        logger.warning("%s: %d added judge records judged other responses than %s (another run?), ignored: %s",
                       path, len(mismatched), samples.name, ", ".join(mismatched[:5]))
    return merged, added, path if added else None


def _merge_identity(results_file: Path) -> tuple[tuple[str, ...], set[str]] | None:
    """(the MERGE_KEYS values, the task names) of a results file, read without its samples
    files; None when it cannot be read."""
    try:
        data = json.loads(results_file.read_text(encoding="utf-8"))
        config = data.get("config") or {}
        return tuple(str(config.get(k) or "") for k in MERGE_KEYS), set(data.get("results") or {})
    except (OSError, ValueError, AttributeError):
        return None


def merge_older(run: Run, older: Sequence[Path]) -> Run:
    """Add to ``run`` the subsets (and other ECGBench tasks) it lacks from ``older`` results files
    (newest first) of the same model, model_args, gen_kwargs and data; ``run.parts`` lists the
    files used. Files that differ are left out, with a log line saying why."""
    settings = tuple(str(run.config.get(k) or "") for k in MERGE_KEYS)  # as _merge_identity reads them
    run.parts = [run.results_file]
    for path in older:
        if len(run.subsets) == len(SUBSETS):
            break
        other = _merge_identity(path)
        if other is None or other[0] != settings:
            logger.info("not merged into %s: %s ran other settings (%s)", run.name, path, ", ".join(MERGE_KEYS))
            continue
        have = {sr.task for sr in run.subsets.values()} | set(run.other_tasks)
        if not (other[1] - have):
            continue
        try:
            part = load_run(path)
        except RunError as exc:
            logger.warning("not merged into %s: %s", run.name, exc)
            continue
        if run.data_sources and part.data_sources and part.data_sources != run.data_sources:
            logger.warning("not merged into %s: %s read other data (%s, not %s)", run.name, path,
                           sorted(part.data_sources), sorted(run.data_sources))
            continue
        added = False
        for name, sr in part.subsets.items():
            if name not in run.subsets:
                run.subsets[name], added = sr, True
        for task, body in part.other_tasks.items():
            if task not in run.other_tasks:
                run.other_tasks[task], added = body, True
        if added:
            run.parts.append(path)
            run.synthetic = run.synthetic or part.synthetic
    return run


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run named by the RUN arguments, split evaluations merged (see the module docstring);
    names made unique (model folder, then date id)."""
    runs = [merge_older(load_run(files[0]), files[1:]) for p in paths for files in find_result_sets(p)]
    labels = [run.name.rpartition("@")[0] for run in runs]
    for run, label in zip(runs, labels):
        if labels.count(label) == 1:
            run.name = label
    return runs


# ----------------------------------------------------------------------------------------------
# Writing lmms-eval-shaped folders (tests, benchmarks, demos)


def write_run(out_dir: str | Path, model: str, records: Mapping[str, list[dict[str, Any]]],
              responses: Mapping[str, list[Any]] | None = None, *, data_source: str = "hub:PULSE-ECG/ECGBench@main",
              version: Any = 1, date_id: str = "20260101T000000", synthetic: bool = False,
              strict_version: int | None = None,
              lmms_eval_version: str = "main@00000000", model_args: str | None = None) -> Path:
    """Write ``OUT/<model>/<date_id>_results.json`` and one samples file per subset, as lmms-eval
    0.7.3 does with --log_samples; aggregated numbers are the ones the task hooks report
    (``summary.metric_value``). Returns the results file. ``strict_version`` (default: the current
    one) goes into every task's metadata. ``pulse_tasks.glue.answered.write_answered_run`` writes
    one from a function that answers the items of a local copy, scored by the task hooks."""
    from pulse_tasks.data.subsets import get_subset
    from pulse_tasks.scoring.strict import STRICT_VERSION

    folder = Path(out_dir) / model.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    results, configs, versions, n_samples = {}, {}, {}, {}
    for name, recs in records.items():
        spec = get_subset(name)
        names = metric_names(spec)
        results[spec.task] = {"alias": spec.task, **{f"{m}{METRIC_FILTER}": metric_value(recs, m) for m in names},
                              **{f"{m}_stderr{METRIC_FILTER}": "N/A" for m in names}}
        meta = {"version": version, "data_source": data_source,
                "strict_version": STRICT_VERSION if strict_version is None else strict_version}
        if synthetic:
            meta[SYNTHETIC_WORD] = True
        configs[spec.task] = {"task": spec.task, "dataset_name": spec.config, "metadata": meta}
        versions[spec.task] = version
        n_samples[spec.task] = {"original": len(recs), "effective": len(recs)}
        resps = (responses or {}).get(name) or [None] * len(recs)
        with (folder / f"{date_id}{SAMPLES_INFIX}{spec.task}.jsonl").open("w", encoding="utf-8") as fh:
            for i, (rec, resp) in enumerate(zip(recs, resps)):
                line = {"doc_id": i, "target": str(rec.get("gold", "")), "filtered_resps": [resp],
                        **{m: rec for m in names}}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    data = {"results": results, "group_subtasks": {}, "configs": configs, "versions": versions,
            "n-samples": n_samples,
            "config": {"model": model, "model_args": model_args if model_args is not None else f"pretrained={model}",
                       "batch_size": "1", "gen_kwargs": "", "random_seed": 0},
            "lmms_eval_version": lmms_eval_version, "date": date_id, "model_name": model,
            "model_name_sanitized": folder.name}
    path = folder / f"{date_id}{RESULTS_SUFFIX}"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# Synthetic items ------------------------------------------------------------------------------

JUDGE_IDENTITY = {"model": "gpt-4o-2024-08-06", "provider": "openai", "host": "api.openai.com",
                  "rubric_version": "ecgbench-judge-v1", "rubric_sha": "0123456789abcdef",
                  "temperature": 0.0, "response_format": "json_object"}  # a fixed, plausible judge for fixtures


def _synthetic_doc(spec: Subset, i: int, rng: random.Random) -> dict[str, Any]:
    """One synthetic normalized doc (no image: scoring never reads it)."""
    example = answer_space(spec).example
    assert example is not None, f"{spec.config} is judged: its synthetic items are judge records"
    return {"id": f"{spec.config}-{i:05d}", "subset": spec.config, "gold_options": [], **example(spec, rng)}


def _judge_record(spec: Subset, i: int, rng: random.Random, skill: float) -> dict[str, Any]:
    criteria = CRITERIA[spec.kind]  # type: ignore[index]  # judged kinds only
    base = {"id": f"{spec.config}-{i:05d}", "subset": spec.config, "judge": dict(JUDGE_IDENTITY),
            "explanations": {}, "raw": None, "error": None, "cached": False}
    if rng.random() < 0.04:
        return {**base, "status": JUDGE_FAILED, "score": None, "criteria": {}, "error": "synthetic judge failure"}
    scores = {c: float(min(10, max(0, round(rng.gauss(10 * skill, 2.5))))) for c in criteria}
    return {**base, "status": JUDGE_OK, "criteria": scores, "score": sum(scores.values()) / len(scores) * 10.0}


def synthetic_run(seed: int = 0, skill: float = 0.7, scale: float = 1.0,
                  subsets: Iterable[Subset] = SUBSETS, item_seed: int | None = None
                  ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Any]]]:
    """Records and responses of a synthetic run over every subset (``scale`` x the full sizes).

    Items (ids, gold answers) depend only on ``item_seed`` (default ``seed``) so two runs with
    different ``seed``/``skill`` share their items and can be compared.
    """
    from pulse_tasks.scoring.metrics import score_item

    records: dict[str, list[dict[str, Any]]] = {}
    responses: dict[str, list[Any]] = {}
    for spec in subsets:
        n = max(1, round(spec.n_items * scale))
        item_rng = random.Random(f"{item_seed if item_seed is not None else seed}:{spec.config}")
        answer_rng = random.Random(f"answers:{seed}:{spec.config}")
        recs, resps = [], []
        for i in range(n):
            if spec.judged:
                rec = _judge_record(spec, i, answer_rng, skill)
                resp: Any = answer_space(spec).respond(spec, {}, answer_rng, True)
            else:
                doc = _synthetic_doc(spec, i, item_rng)
                resp = _answer_for(spec, doc, answer_rng, skill)
                rec = score_item(spec, doc, resp)
            recs.append({**rec, "subset": spec.config, "id": f"{spec.config}-{i:05d}"})
            resps.append(resp)
        records[spec.config], responses[spec.config] = recs, resps
    return records, responses


def _answer_for(spec: Subset, doc: Mapping[str, Any], rng: random.Random, skill: float) -> str:
    """A response to ``doc``: right with probability ``skill``, else a plausible wrong answer."""
    right = rng.random() < skill
    if rng.random() < 0.01:
        return f"{FAILED_PREFIXES[0]}: synthetic failure]"
    return answer_space(spec).respond(spec, doc, rng, right)
