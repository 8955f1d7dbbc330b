"""The leaderboard as plain data: validated entries, exclusions, comparability, ranks and ties.

Every submission file is validated as `ecgbench validate` does (schema, completeness, predictions
hash, metrics and counts recomputed from attached predictions). Invalid files, synthetic-data
runs and duplicates are excluded with their reasons; the rest are entries. An entry is *ranked*
when it is verified (predictions attached), complete (nine subsets at full size) and comparable
(task and scoring versions, data revision, judge and item ids those of the board's reference:
per subset the most common among the verified entries). Ranking uses strict mode (``RANK_MODE``) and
the overall score, the mean of the paper's 15 columns (Hamming loss as 100 - HL). Entries are
tested in score order against the leader of the tie group above them (the top entry first)
with a paired bootstrap on the shared items (McNemar's exact test for 0/1 accuracies on the
subset pages, as `ecgbench compare` does); a difference that is not significant is a tie.

``build_board`` returns the whole board as a JSON-serialisable dict (written as
``leaderboard.json`` beside the pages); ``RULES`` are the ranking rules the site prints.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pulse_tasks.scoring import bootstrap
from pulse_tasks.results import submission
from pulse_tasks.results.compare import ALPHA, judge_identity
from pulse_tasks.results.redaction import redact_model_args
from pulse_tasks.results.report import COLUMNS, SUBSET_ORDER, Column, published
from pulse_tasks.results.runs import is_synthetic_source
from pulse_tasks.data.subsets import BY_CONFIG, JUDGED
from pulse_tasks.results.summary import summarize_subset

BOARD_SCHEMA = "ecgbench-leaderboard-v1"  # bump when the layout of leaderboard.json changes
# Strict mode ranks: paper mode gives unparsed letters chance credit and matches labels as
# substrings, so a model that lists every label or answers nothing is not penalised.
RANK_MODE = "strict"
# Scoring fields that do not change a number (where the code came from, which modes it wrote);
# any other field (say a strict-scoring version) must agree for two entries to be comparable.
SCORING_NOT_IDENTITY = frozenset({"package", "package_version", "modes"})
JUDGED_NAMES = frozenset(s.config for s in JUDGED)
SLUG_CHARS = 40  # model-name part of an entry's page name; a hash suffix keeps it unique
SLUG_HASH = 10  # hex digits of predictions_sha256 in the slug
MAX_REASONS = 12  # validation errors listed per excluded file (the rest are counted)

VERIFIED, UNVERIFIED, PUBLISHED = "verified", "unverified", "published"

RULES: tuple[str, ...] = (
    "Every submission is validated as `ecgbench validate` does: schema, completeness flags, the "
    "predictions hash, and every metric and count recomputed from the attached predictions. Invalid "
    "files are listed under Excluded with the reasons; runs on synthetic data and duplicates (the same "
    "predictions_sha256 as another entry: the verified, then the earliest, one is kept) are refused.",
    f"Ranking mode is {RANK_MODE}: unparsed, empty or failed answers are wrong and the full label "
    "vocabularies count. The paper-mode view shows the paper's scoring for comparison with the paper.",
    "Overall score: the mean of the paper's 15 columns in the ranking mode, Hamming loss counted as "
    "100 - HL, the Report and Arena judge scores as they are. Its 95% interval is a percentile bootstrap "
    "over items (every subset's items resampled; the corpus metrics recomputed on each resample).",
    "Ranked entries are verified (predictions attached and recomputed), complete (all nine subsets at "
    "their full size) and comparable: on every subset the same task version, scoring version, data "
    "revision, judge (model, rubric version, rubric hash) and item ids as the board's reference (per "
    "subset, the most common among the verified full-size entries). Every other entry is shown unranked "
    "with the reason: unverified, partial (missing subsets are listed and never counted as 0) or not comparable.",
    "Ties: ranked entries are sorted by overall score; the top entry leads the first group. Each next "
    "entry is compared with the leader of the current group by a paired bootstrap of the overall-score "
    "difference on the same resampled items; p >= alpha means a tie (the same rank), otherwise the entry "
    "leads a new group whose rank is 1 + the number of entries above it. The tests are two-sided and "
    "not corrected for the number of comparisons.",
    "Subset pages rank each subset on its own score (the mean of its columns in the ranking mode, HL as "
    "100 - HL; accuracy subsets: the accuracy, tested with McNemar's exact test) among the entries with "
    "that subset verified, at full size and comparable, with the same tie rule.",
    "Entries with equal scores are listed by earlier submission date, then name; that order is not a rank.",
    "Published rows are the paper's numbers (paper mode only, no intervals, each baseline with its own "
    "settings): marked published and never ranked.",
)


# ----------------------------------------------------------------------------------------------
# One submission file (runs in a worker process: returns small, picklable results)


@dataclass
class SubsetDraws:
    """One complete subset of a verified entry, items in sorted-id order."""

    ids_sha: str  # sha256 of the sorted item ids: paired tests need the same items
    point: dict[str, dict[str, float | None]]  # mode -> column metric -> full-sample value
    draws: dict[str, dict[str, np.ndarray]]  # mode -> column metric -> (resamples,) bootstrap values
    outcomes: dict[str, np.ndarray] = field(default_factory=dict)  # accuracy subsets: mode -> per-item credit


@dataclass
class Loaded:
    """What a worker learnt from one file."""

    file: str
    doc: dict[str, Any] | None  # the submission without its predictions (None: unreadable)
    errors: list[str]  # non-empty: the file is excluded
    notes: list[str]  # validate's notes (what was and was not checked)
    verified: bool = False
    samples: dict[str, SubsetDraws] = field(default_factory=dict)


@lru_cache(maxsize=len(SUBSET_ORDER))
def _weights(n: int, resamples: int, seed: int, subset: str) -> np.ndarray:
    """The resample matrix of one subset: the same for every entry, so differences are paired."""
    return bootstrap.resample_weights(n, resamples, np.random.default_rng(bootstrap.subset_seed(seed, subset)))


def _column_metrics(subset: str) -> list[str]:
    return [c.metric for c in COLUMNS if c.subset == subset]


def subset_draws(subset: str, records: Sequence[Mapping[str, Any]], resamples: int, seed: int) -> SubsetDraws:
    """Full-sample values and bootstrap draws of the subset's table columns, in both modes."""
    recs = sorted(records, key=lambda r: str(r.get("id")))
    ids = [str(r.get("id")) for r in recs]
    s = summarize_subset(BY_CONFIG[subset], recs, resamples, seed, weights=_weights(len(recs), resamples, seed, subset),
                         keep_draws=True)
    draws = s.draws or {}
    return SubsetDraws(hashlib.sha256("\n".join(ids).encode()).hexdigest(),
                       {mode: {m: e.value for m, e in metrics.items()} for mode, metrics in s.modes.items()},
                       {mode: {m: draws[mode][m] for m in metrics} for mode, metrics in s.modes.items()},
                       s.outcomes)


def _synthetic_reasons(doc: Mapping[str, Any], items: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Why the entry was scored on synthetic data (the flag, a data source's name, or item ids)."""
    if doc["data"]["synthetic"]:
        return ["scored on synthetic data (data.synthetic): not a leaderboard entry"]
    sources = [t.get("data_source") for t in doc["tasks"].values()]
    named = [s for s in sources if s and is_synthetic_source(s)]
    if named:
        return [f"scored on synthetic data (data source {named[0]!r}): not a leaderboard entry"]
    if items and is_synthetic_source(None, None, [i["record"] for i in items]):
        return ["scored on synthetic data (every item id is a synthetic one): not a leaderboard entry"]
    return []


def load_submission(path: str, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                    seed: int = bootstrap.DEFAULT_SEED) -> Loaded:
    """Read, validate and (when predictions are attached) bootstrap one submission file."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the products are thin (resamples x items @ items x labels) and the files are
    # already spread over one process per core; threaded BLAS only spins (measured: ~2.7x the CPU).
    with threadpool_limits(limits=1):
        return _load_submission(path, resamples, seed)


def _load_submission(path: str, resamples: int, seed: int) -> Loaded:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Loaded(path, None, [f"unreadable: {exc}"], [])
    errors, notes = submission.validate_submission(doc)
    items = doc.pop("predictions", None) if isinstance(doc, dict) else None
    if errors:
        shown = errors[:MAX_REASONS] + ([f"... and {len(errors) - MAX_REASONS} more"] if len(errors) > MAX_REASONS else [])
        return Loaded(path, doc if isinstance(doc, dict) else None, shown, notes)
    refused = _synthetic_reasons(doc, items)
    if refused:
        return Loaded(path, doc, refused, notes)
    loaded = Loaded(path, doc, [], notes, verified=items is not None)
    if items is not None:
        by_subset: dict[str, list[Mapping[str, Any]]] = {}
        for item in items:
            by_subset.setdefault(item["subset"], []).append(item["record"])
        for name, records in by_subset.items():
            if len(records) == BY_CONFIG[name].n_items and resamples > 0:  # partial subsets are never paired
                loaded.samples[name] = subset_draws(name, records, resamples, seed)
    return loaded


def load_all(paths: Sequence[str], resamples: int, seed: int, jobs: int) -> list[Loaded]:
    """``load_submission`` of every file, in ``jobs`` processes (1: in this process)."""
    if jobs <= 1 or len(paths) < 2:
        out = [load_submission(p, resamples, seed) for p in paths]
        _weights.cache_clear()  # ~90 MB of resample matrices
        return out
    # spawn, not fork: the caller may hold threads (a browser driver, a judge pool) that fork would copy mid-state.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(paths)), mp_context=ctx) as pool:
        return list(pool.map(load_submission, paths, repeat(resamples), repeat(seed)))


def default_jobs() -> int:
    """One worker per usable core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------
# Scores


def oriented(value: Any, column: Column) -> Any:
    """A column value with higher = better (100 - HL); works on floats and arrays."""
    return bootstrap.SCALE - value if column.lower_is_better else value


def mean_score(values: Mapping[str, float | None], columns: Sequence[Column]) -> float | None:
    """Mean of the oriented column values; None when a column is missing or undefined."""
    picked = [values.get(c.key) for c in columns]
    if any(v is None for v in picked):
        return None
    return float(sum(oriented(v, c) for v, c in zip(picked, columns)) / len(columns))


def _mean_draws(samples: Mapping[str, SubsetDraws], columns: Sequence[Column], mode: str
                ) -> tuple[float | None, np.ndarray] | None:
    """(point, draws) of the mean oriented score over ``columns``; None when a subset has no draws."""
    if any(c.subset not in samples for c in columns):
        return None
    point = mean_score({c.key: samples[c.subset].point[mode][c.metric] for c in columns}, columns)
    draws = np.mean([oriented(samples[c.subset].draws[mode][c.metric], c) for c in columns], axis=0)
    return point, draws


def _interval(draws: np.ndarray | None) -> tuple[float | None, float | None]:
    return bootstrap.percentile_interval(draws) if draws is not None else (None, None)


def _diff_dict(d: bootstrap.PairedDifference) -> dict[str, Any]:
    out = asdict(d)
    out["discordant"] = list(d.discordant) if d.discordant else None
    return out


# ----------------------------------------------------------------------------------------------
# Comparability


def subset_identity(doc: Mapping[str, Any], subset: str) -> dict[str, Any]:
    """What must agree for two entries' numbers on one subset to be comparable."""
    task = doc["tasks"].get(subset) or {}
    ident: dict[str, Any] = {"task version": task.get("version"), "data revision": task.get("data_source"),
                             "scoring": {k: v for k, v in sorted(doc["scoring"].items()) if k not in SCORING_NOT_IDENTITY}}
    if subset in JUDGED_NAMES:
        ident["judge"] = judge_identity(doc["judge"].get(subset) or {})
    return ident


def _key(ident: Mapping[str, Any]) -> str:
    return json.dumps(ident, sort_keys=True, default=str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def identity_differences(ident: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    """'data revision X (the board's: Y)' for every field that differs."""
    return [f"{k} {_text(ident.get(k))} (the board's: {_text(reference.get(k))})"
            for k in sorted(set(ident) | set(reference)) if ident.get(k) != reference.get(k)]


def _most_common(keys: Sequence[tuple[str, str]]) -> str | None:
    """The most common key; ties go to the key of the newest entry. ``keys``: (key, created)."""
    if not keys:
        return None
    counts = Counter(k for k, _ in keys)
    top = max(counts.values())
    return max((created, k) for k, created in keys if counts[k] == top)[1]


# ----------------------------------------------------------------------------------------------
# Ranking


@dataclass
class Candidate:
    """An entry in one ranking (overall or one subset)."""

    slug: str
    name: str
    created: str
    score: float
    draws: np.ndarray
    outcomes: tuple[np.ndarray, ...] | None = None  # accuracy: per-item credit, for McNemar


def rank_with_ties(cands: Sequence[Candidate], alpha: float = ALPHA) -> dict[str, dict[str, Any]]:
    """slug -> {rank, position, leader (of its tie group), tested_against (the leader it was compared
    with; None for the top entry), vs_leader (that test), vs_top, tied_with} (RULES: the tie rule)."""
    order = sorted(cands, key=lambda c: (-c.score, c.created, c.name, c.slug))
    out: dict[str, dict[str, Any]] = {}
    if not order:
        return out
    top = order[0]
    leader, rank = top, 1
    groups: dict[str, list[str]] = {top.slug: []}
    for position, c in enumerate(order, start=1):
        vs_top = vs_leader = tested_against = None
        if c is not top:
            tested_against = leader.slug
            vs_leader = bootstrap.paired_difference(leader.score, c.score, leader.draws, c.draws, _pair(leader, c))
            vs_top = vs_leader if leader is top else bootstrap.paired_difference(
                top.score, c.score, top.draws, c.draws, _pair(top, c))
            if vs_leader.p_value is not None and vs_leader.p_value < alpha:
                leader, rank = c, position
                groups[c.slug] = []
        groups[leader.slug].append(c.slug)
        out[c.slug] = {"rank": rank, "position": position, "leader": leader.slug, "tested_against": tested_against,
                       "vs_leader": _diff_dict(vs_leader) if vs_leader else None,
                       "vs_top": _diff_dict(vs_top) if vs_top else None}
    for members in groups.values():
        for slug in members:
            out[slug]["tied_with"] = [m for m in members if m != slug]
    return out


def _pair(a: Candidate, b: Candidate) -> tuple[np.ndarray, np.ndarray] | None:
    return (a.outcomes[0], b.outcomes[0]) if a.outcomes is not None and b.outcomes is not None else None


def rank_label(rank: int | None, tied: bool) -> str:
    """'3', '=3' (tied with others) or '' (unranked)."""
    if rank is None:
        return ""
    return f"={rank}" if tied else str(rank)


# ----------------------------------------------------------------------------------------------
# Entries


def slugify(name: str, sha: str) -> str:
    """A file-name-safe, unique page name: the model name and a piece of the predictions hash."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:SLUG_CHARS].strip("-") or "entry"
    return f"{base}-{sha[:SLUG_HASH]}"


def _estimate(doc_subset: Mapping[str, Any], mode: str, metric: str) -> dict[str, Any]:
    metrics = doc_subset.get("metrics") or {}
    block = metrics.get("judge") if "judge" in metrics else metrics.get(mode)
    est = (block or {}).get(metric)
    return dict(est) if est else {"value": None, "lo": None, "hi": None}


def _versions_text(doc: Mapping[str, Any]) -> str:
    """'ecgbench-lmms 0.1.0; tasks v1' (task versions per subset when they differ; extra scoring fields)."""
    sc = doc["scoring"]
    versions = {name: t.get("version") for name, t in doc["tasks"].items()}
    distinct = sorted({_text(v) for v in versions.values()})
    tasks = (f"tasks v{distinct[0]}" if len(distinct) == 1 else
             "tasks " + ", ".join(f"{n} v{_text(v)}" for n, v in versions.items()))
    extra = [f"{k} {_text(v)}" for k, v in sorted(sc.items()) if k not in SCORING_NOT_IDENTITY]
    return "; ".join([f"{sc.get('package')} {sc.get('package_version') or '?'}", tasks, *extra])


def _entry(loaded: Loaded, slug: str, root: str | Path | None) -> dict[str, Any]:
    doc = loaded.doc or {}
    model = doc["model"]
    values = {mode: {c.key: (_estimate(doc["subsets"][c.subset], mode, c.metric) if c.subset in doc["subsets"] else None)
                     for c in COLUMNS} for mode in bootstrap.MODES}
    subsets = {}
    for name in SUBSET_ORDER:
        sub = doc["subsets"].get(name)
        if sub is None:
            continue
        subsets[name] = {"n": sub["n"], "expected_n": sub["expected_n"], "complete": sub["complete"],
                         "counts": sub.get("counts") or {}, "criteria": sub.get("criteria") or {},
                         "metrics": {mode: {m: _estimate(sub, mode, m) for m in _column_metrics(name)}
                                     for mode in bootstrap.MODES},
                         "identity": subset_identity(doc, name), "comparable": True, "problems": [],
                         "rank": None, "rank_label": "", "ranking": None, "vs_top": {}, "intervals": "submission"}
    return {
        "slug": slug, "file": loaded.file, "source": shown_path(loaded.file, root), "model": model["name"], "lmms_eval_model": model["lmms_eval_model"],
        "model_args": redact_model_args(model["model_args"]), "settings": redact_model_args(model.get("settings") or {}),
        "created": doc["created"], "date": doc["created"][:10], "lmms_eval_version": doc["lmms_eval_version"],
        "scoring": doc["scoring"], "versions": _versions_text(doc),
        "task_versions": {n: t.get("version") for n, t in doc["tasks"].items()},
        "data_revisions": sorted(doc["data"]["sources"]) or sorted({t.get("data_source") or "unknown"
                                                                   for t in doc["tasks"].values()}),
        "judge": {n: redact_model_args(j) for n, j in doc["judge"].items()},
        "bootstrap": doc["bootstrap"], "predictions_sha256": doc["predictions_sha256"],
        "status": VERIFIED if loaded.verified else UNVERIFIED, "verified": loaded.verified,
        "complete": doc["complete"], "partial_reasons": doc["partial_reasons"],
        "missing_subsets": [n for n in SUBSET_ORDER if n not in doc["subsets"]],
        "notes": loaded.notes, "values": values, "subsets": subsets,
        # a partial entry has no overall score: a missing subset is never a 0, a short one not the benchmark
        "overall": {mode: {"value": mean_score({k: (e or {}).get("value") for k, e in values[mode].items()}, COLUMNS)
                           if doc["complete"] else None, "lo": None, "hi": None} for mode in bootstrap.MODES},
        "comparable": True, "problems": [], "ranked": False, "unranked_reason": None,
        "rank": None, "rank_label": "", "ranking": None, "report": None,
    }


def _board_intervals(entry: dict[str, Any], samples: Mapping[str, SubsetDraws]) -> None:
    """Intervals of a verified entry's complete subsets from the board's own resamples (the same
    settings for every entry; submitted intervals are not recomputed by validation)."""
    for name, s in samples.items():
        sub = entry["subsets"][name]
        for mode in bootstrap.MODES:
            for m in _column_metrics(name):
                lo, hi = bootstrap.percentile_interval(s.draws[mode][m])
                for est in (sub["metrics"][mode][m], entry["values"][mode][f"{name}/{m}"]):
                    est["lo"], est["hi"] = lo, hi
        sub["intervals"] = "board"


def _published_rows() -> list[dict[str, Any]]:
    pub = published()
    rows = []
    for row in pub["rows"]:
        values = {c.key: row["values"].get(c.key) for c in COLUMNS}
        rows.append({"model": row["model"], "status": PUBLISHED, "reference_settings": row.get("reference_settings", False),
                     "caveat": row.get("caveat", ""), "values": values, "overall_paper": mean_score(values, COLUMNS)})
    return rows


# ----------------------------------------------------------------------------------------------
# The board


def find_submissions(folder: str | Path, skip: Path | None = None) -> list[Path]:
    """Every *.json file under ``folder`` (sorted), except those under ``skip`` (the site itself)."""
    root = Path(folder)
    found = sorted(p for p in root.rglob("*.json") if p.is_file())
    if skip is not None:
        skip = skip.resolve()
        found = [p for p in found if skip not in p.resolve().parents]
    return found


def _build_time() -> str:
    """Now, or SOURCE_DATE_EPOCH (reproducible builds) when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch and epoch.isdigit()
            else dt.datetime.now(dt.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def shown_path(file: str, root: str | Path | None) -> str:
    """The file as the site names it: relative to the submissions folder (a maintainer's own
    paths are not published), else its name."""
    path = Path(file)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _exclude(loaded: Loaded, reasons: list[str], root: str | Path | None) -> dict[str, Any]:
    model = (loaded.doc or {}).get("model") if isinstance(loaded.doc, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return {"file": loaded.file, "source": shown_path(loaded.file, root),
            "model": name if isinstance(name, str) else None, "reasons": reasons}


def _references(entries: Sequence[dict[str, Any]], samples: Mapping[str, Mapping[str, SubsetDraws]]
                ) -> dict[str, dict[str, Any]]:
    """Per subset: the board's reference identity and item-id hash, the most common among the
    verified full-size entries (else among all full-size ones, else among all)."""
    refs: dict[str, dict[str, Any]] = {}
    for name in SUBSET_ORDER:
        holders = [e for e in entries if name in e["subsets"]]
        full = [e for e in holders if e["subsets"][name]["complete"]]
        full = [e for e in full if e["verified"]] or full or holders  # verified entries vote first
        key = _most_common([(_key(e["subsets"][name]["identity"]), e["created"]) for e in full])
        if key is None:
            continue
        same = [e for e in full if _key(e["subsets"][name]["identity"]) == key]
        ids = _most_common([(samples[e["slug"]][name].ids_sha, e["created"]) for e in same
                            if name in samples.get(e["slug"], {})])
        refs[name] = {"identity": json.loads(key), "ids_sha": ids}
    return refs


def _mark_comparability(entry: dict[str, Any], refs: Mapping[str, dict[str, Any]],
                        samples: Mapping[str, SubsetDraws]) -> None:
    for name, sub in entry["subsets"].items():
        ref = refs[name]
        problems = identity_differences(sub["identity"], ref["identity"])
        if not problems and name in samples and ref["ids_sha"] and samples[name].ids_sha != ref["ids_sha"]:
            problems.append("item ids differ from the other entries' items")
        sub["problems"], sub["comparable"] = problems, not problems
        entry["problems"] += [f"{name}: {p}" for p in problems]
    entry["comparable"] = not entry["problems"]


def grouped_problems(entry: Mapping[str, Any]) -> str:
    """The entry's comparability problems, each once, with the subsets it concerns."""
    by_text: dict[str, list[str]] = {}
    for name, sub in entry["subsets"].items():
        for problem in sub["problems"]:
            by_text.setdefault(problem, []).append(name)
    return "; ".join(f"{text} on {'every subset' if len(names) == len(SUBSET_ORDER) else ', '.join(names)}"
                     for text, names in by_text.items())


def _unranked_reason(entry: dict[str, Any]) -> str | None:
    if not entry["verified"]:
        return "unverified: no predictions attached, so the numbers were not recomputed and cannot be paired"
    if not entry["complete"]:
        return "partial: " + "; ".join(entry["partial_reasons"])
    if not entry["comparable"]:
        return "not comparable: " + grouped_problems(entry)
    if entry["overall"][RANK_MODE]["value"] is None:
        return "overall score undefined (a metric is undefined on the entry's items)"
    return None


def _attach_ranking(target: dict[str, Any], ranking: Mapping[str, dict[str, Any]], slug: str) -> None:
    r = ranking[slug]
    target["rank"], target["ranking"] = r["rank"], r
    target["rank_label"] = rank_label(r["rank"], bool(r["tied_with"]))


def _rank_overall(entries: list[dict[str, Any]], samples: Mapping[str, Mapping[str, SubsetDraws]],
                  alpha: float) -> None:
    cands = []
    for e in entries:
        e["unranked_reason"] = _unranked_reason(e)
        s = samples.get(e["slug"], {})
        for mode in bootstrap.MODES:  # intervals of both overall scores; only RANK_MODE ranks
            got = _mean_draws(s, COLUMNS, mode) if e["verified"] and e["complete"] else None
            if got is not None:
                e["overall"][mode]["lo"], e["overall"][mode]["hi"] = _interval(got[1])
        if e["unranked_reason"] is None:
            point, draws = _mean_draws(s, COLUMNS, RANK_MODE)
            cands.append(Candidate(e["slug"], e["model"], e["created"], point, draws))
    ranking = rank_with_ties(cands, alpha)
    for e in entries:
        if e["slug"] in ranking:
            e["ranked"] = True
            _attach_ranking(e, ranking, e["slug"])


def _rank_subsets(entries: list[dict[str, Any]], samples: Mapping[str, Mapping[str, SubsetDraws]],
                  alpha: float) -> dict[str, dict[str, Any]]:
    """Per subset: rank its entries on the subset score; per metric, each entry against the subset's top."""
    pages: dict[str, dict[str, Any]] = {}
    for name in SUBSET_ORDER:
        columns = [c for c in COLUMNS if c.subset == name]
        cands, by_slug = [], {}
        for e in entries:
            sub = e["subsets"].get(name)
            s = samples.get(e["slug"], {}).get(name)
            if sub is None or not (e["verified"] and sub["complete"] and sub["comparable"] and s is not None):
                continue
            got = _mean_draws({name: s}, columns, RANK_MODE)
            if got is None or got[0] is None:
                continue
            outcomes = (s.outcomes[RANK_MODE],) if RANK_MODE in s.outcomes else None
            cands.append(Candidate(e["slug"], e["model"], e["created"], got[0], got[1], outcomes))
            by_slug[e["slug"]] = s
        ranking = rank_with_ties(cands, alpha)
        top = next((slug for slug, r in ranking.items() if r["position"] == 1), None)
        for e in entries:
            if e["slug"] not in ranking:
                continue
            sub = e["subsets"][name]
            _attach_ranking(sub, ranking, e["slug"])
            if e["slug"] == top:
                continue
            t, s = by_slug[top], by_slug[e["slug"]]
            for m in _column_metrics(name):
                outcomes = ((t.outcomes[RANK_MODE], s.outcomes[RANK_MODE]) if RANK_MODE in s.outcomes else None)
                sub["vs_top"][m] = _diff_dict(bootstrap.paired_difference(
                    t.point[RANK_MODE][m], s.point[RANK_MODE][m], t.draws[RANK_MODE][m], s.draws[RANK_MODE][m], outcomes))
        pages[name] = {"top": top, "n_ranked": len(ranking)}
    return pages


def _order(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked entries by position, then the others by overall score (undefined last), then name."""
    def key(e: dict[str, Any]) -> tuple:
        score = e["overall"][RANK_MODE]["value"]
        return (not e["ranked"], e["ranking"]["position"] if e["ranked"] else 0,
                -score if score is not None else math.inf, e["model"], e["slug"])
    return sorted(entries, key=key)


def build_board(files: Iterable[str | Path], *, include_published: bool = False,
                resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED,
                alpha: float = ALPHA, jobs: int = 1, candidate: str | Path | None = None,
                root: str | Path | None = None) -> dict[str, Any]:
    """The whole board from submission files (``root``: their folder, for the names shown).
    ``candidate`` (`check`) wins over its duplicates."""
    paths = [str(p) for p in dict.fromkeys(str(Path(f)) for f in files)]
    if candidate is not None and str(Path(candidate)) not in paths:
        paths.append(str(Path(candidate)))
    loaded = load_all(paths, resamples, seed, jobs)
    excluded = [_exclude(x, x.errors, root) for x in loaded if x.errors]
    valid = [x for x in loaded if not x.errors]
    # Duplicates: the same predictions twice (say once without, once with them attached).
    def precedence(x: Loaded) -> tuple[bool, bool, str, str]:  # the candidate, then verified, then earliest
        return (candidate is None or str(Path(x.file)) != str(Path(candidate)), not x.verified, x.doc["created"], x.file)

    kept: dict[str, Loaded] = {}
    for x in sorted(valid, key=precedence):
        sha = x.doc["predictions_sha256"]
        if sha in kept:
            excluded.append(_exclude(x, [f"duplicate of {shown_path(kept[sha].file, root)} (the same predictions_sha256)"], root))
        else:
            kept[sha] = x
    entries, samples = [], {}
    for x in sorted(kept.values(), key=lambda x: x.file):
        slug = slugify(x.doc["model"]["name"], x.doc["predictions_sha256"])
        entries.append(_entry(x, slug, root))
        _board_intervals(entries[-1], x.samples)
        samples[slug] = x.samples
    refs = _references(entries, samples)
    for e in entries:
        _mark_comparability(e, refs, samples[e["slug"]])
    _rank_overall(entries, samples, alpha)
    pages = _rank_subsets(entries, samples, alpha)
    entries = _order(entries)
    status = Counter("ranked" if e["ranked"] else ("unverified" if not e["verified"] else
                     ("partial" if not e["complete"] else "not comparable" if not e["comparable"] else "unranked"))
                     for e in entries)
    return {
        "schema": BOARD_SCHEMA, "built": _build_time(), "package_version": submission._package_version(),
        "rank_mode": RANK_MODE, "alpha": alpha,
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": bootstrap.CONFIDENCE},
        "columns": [{"key": c.key, "subset": c.subset, "metric": c.metric, "title": c.title,
                     "lower_is_better": c.lower_is_better} for c in COLUMNS],
        "subsets": {name: {"title": BY_CONFIG[name].title, "kind": BY_CONFIG[name].kind,
                           "n_items": BY_CONFIG[name].n_items, "domain": BY_CONFIG[name].domain,
                           "reference": refs.get(name), **pages.get(name, {"top": None, "n_ranked": 0})}
                    for name in SUBSET_ORDER},
        "counts": {"files": len(paths), "entries": len(entries), "excluded": len(excluded), **status},
        "entries": entries,
        "excluded": sorted(excluded, key=lambda x: x["file"]),
        "published": ({"source": published()["source"], "caveats": published()["caveats"], "rows": _published_rows()}
                      if include_published else None),
        "rules": list(RULES),
    }


def find_entry(board: Mapping[str, Any], file: str | Path) -> dict[str, Any] | None:
    """The entry built from ``file`` (None when it was excluded)."""
    target = str(Path(file))
    return next((e for e in board["entries"] if e["file"] == target), None)
