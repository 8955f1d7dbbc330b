"""`ecgbench submit` and `ecgbench validate`: leaderboard submissions (schema submission-v1).

A submission names the model and its settings, the data source, the task and scoring versions,
the judge (model, rubric version and hash) of the judged subsets, the lmms-eval version, and per
subset the metrics with their bootstrap intervals and counts; ``predictions_sha256`` commits to
the per-item predictions (response and scoring record of every item), which
``--attach-predictions`` also includes.

``validate`` checks the schema, that one strict scoring version (``pulse_tasks.scoring.strict``) scored
every subset and attached record, that all nine subsets are present at their full sizes (otherwise
the submission is partial and must say so), and, when predictions are attached, that they match
the hash and reproduce every submitted metric and count. A tampered metric or prediction exits 1
with the reason.

    ecgbench submit OUT/pulse-7b --out submission.json --model-name PULSE-7B --attach-predictions
    ecgbench validate submission.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import re
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from pulse_tasks.scoring import bootstrap
from pulse_tasks.scoring.records import (
    JUDGE_DEFERRED,
    LEGACY_STRICT_VERSION,
    judged_record,
    strict_version_of,
)
from pulse_tasks.results.runs import Run, RunError, load_runs
from pulse_tasks.data.subsets import BY_CONFIG, JUDGED, SUBSETS, Subset
from pulse_tasks.results.summary import summarize_subset

SCHEMA_VERSION = "ecgbench-submission-v1"  # bump with a new schemas/submission-vN.json when the layout changes
SCHEMA_FILE = "submission-v1.json"
PACKAGE = "ecgbench-lmms"  # the distribution whose scoring code produced the numbers
TOLERANCE = 1e-6  # recomputed metrics must match to float round-off (JSON keeps ~17 digits)
EXIT_INVALID = 1  # the submission is wrong (schema, hash, metrics)
EXIT_INPUT_ERROR = 2  # unreadable input or bad command line (argparse uses 2 too)
SETTINGS_KEYS = ("batch_size", "gen_kwargs", "random_seed", "numpy_seed", "torch_seed", "limit", "device")  # what changes outputs


# ----------------------------------------------------------------------------------------------
# Schema checking (jsonschema when installed, else a small checker of the keywords our schema uses)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The packaged JSON schema of submission-v1."""
    return json.loads(resources.files("pulse_tasks.results").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8"))


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def schema_errors(instance: Any, node: Mapping[str, Any] | None = None, root: Mapping[str, Any] | None = None,
                  path: str = "$") -> list[str]:
    """Violations of the schema's keywords (type, const, enum, pattern, minLength, minimum, maximum,
    required, properties, additionalProperties, propertyNames, items, $ref)."""
    root = root or schema()
    node = root if node is None else node
    if "$ref" in node:
        return schema_errors(instance, _resolve(node["$ref"], dict(root)), root, path)
    errors: list[str] = []
    types = node.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_type_ok(instance, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(instance).__name__}"]
    if "const" in node and instance != node["const"]:
        errors.append(f"{path}: must be {node['const']!r}")
    if "enum" in node and instance not in node["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {node['enum']}")
    if isinstance(instance, str):
        if "pattern" in node and not re.search(node["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {node['pattern']}")
        if len(instance) < node.get("minLength", 0):
            errors.append(f"{path}: shorter than {node['minLength']}")
    if _type_ok(instance, "number"):
        if "minimum" in node and instance < node["minimum"]:
            errors.append(f"{path}: below {node['minimum']}")
        if "maximum" in node and instance > node["maximum"]:
            errors.append(f"{path}: above {node['maximum']}")
    if isinstance(instance, dict):
        errors += [f"{path}: missing {key!r}" for key in node.get("required", []) if key not in instance]
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key, value in instance.items():
            if "propertyNames" in node:
                errors += schema_errors(key, node["propertyNames"], root, f"{path} key {key!r}")
            if key in props:
                errors += schema_errors(value, props[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(value, extra, root, f"{path}.{key}")
    if isinstance(instance, list) and "items" in node:
        for i, item in enumerate(instance):
            errors += schema_errors(item, node["items"], root, f"{path}[{i}]")
    return errors


def validate_schema(instance: Any) -> list[str]:
    """Schema violations: jsonschema's when it is installed, else the built-in checker's."""
    try:
        import jsonschema
    except ImportError:
        return schema_errors(instance)
    validator = jsonschema.Draft202012Validator(schema())
    return [f"$.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


# ----------------------------------------------------------------------------------------------
# Predictions and their hash


def predictions_of(run: Run) -> list[dict[str, Any]]:
    """Every item's response and scoring record, in subset-table order then record order."""
    items = []
    for spec in SUBSETS:
        sr = run.subsets.get(spec.config)
        if sr is None or sr.records is None:
            continue
        for record, response in zip(sr.records, sr.responses or [None] * len(sr.records)):
            items.append({"subset": spec.config, "id": str(record.get("id")), "response": response, "record": record})
    return items


def predictions_sha256(items: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the prediction list."""
    canonical = json.dumps(list(items), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------
# Metrics of one subset (what submit writes and validate recomputes)


def subset_entry(config: str, records: list[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """n, expected size, metrics with intervals, judge criteria and counts of one subset."""
    spec = BY_CONFIG[config]
    s = summarize_subset(spec, records, resamples, seed)
    entry: dict[str, Any] = {"n": s.n, "expected_n": spec.n_items, "complete": s.complete}
    if spec.judged:  # one score: the judge has no paper/strict modes
        entry["metrics"] = {"judge": s.table()[bootstrap.MODES[0]]}
        entry["criteria"] = {k: v.to_dict() for k, v in s.criteria.items()}
    else:
        entry["metrics"] = s.table()
    entry["counts"] = s.counts
    return entry


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def _strict_version_entry(spec: Subset, versions: set[int]) -> dict[str, int]:
    return {} if spec.judged else {"strict_version": min(versions)}


def _run_strict_version(run: Run) -> int:
    """The one strict scoring version of a run; RunError when its subsets mix versions."""
    from pulse_tasks.scoring.strict import STRICT_VERSION

    by_subset = {name: sr.strict_versions for name, sr in run.subsets.items() if not sr.subset.judged}
    found = set().union(*by_subset.values()) if by_subset else {STRICT_VERSION}
    if len(found) > 1:
        detail = "; ".join(f"{n}: {'+'.join(map(str, sorted(v)))}" for n, v in by_subset.items())
        raise RunError(f"the run mixes strict scoring versions ({detail}); score it again with one ecgbench-lmms release")
    return found.pop()


def strict_version_problems(doc: Mapping[str, Any]) -> list[str]:
    """Why a submission mixes strict scoring versions (tasks, scoring, attached records)."""
    declared = (doc.get("scoring") or {}).get("strict_version", LEGACY_STRICT_VERSION)
    problems = [f"{name}: strict scoring version {entry.get('strict_version', LEGACY_STRICT_VERSION)}, "
                f"the submission's is {declared}"
                for name, entry in (doc.get("tasks") or {}).items()
                if not BY_CONFIG[name].judged
                and entry.get("strict_version", LEGACY_STRICT_VERSION) != declared]
    mixed = sorted({(item.get("subset"), version) for item in doc.get("predictions") or ()
                    if (item.get("record") or {}).get("kind") is not None  # judge records carry no kind
                    and (version := strict_version_of(item["record"])) not in (None, declared)}, key=str)
    problems += [f"{subset}: attached records scored with strict version {v}, the submission's is {declared}"
                 for subset, v in mixed]
    return problems


def completeness(subsets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why a submission is partial: missing subsets and subsets below their published size."""
    reasons = [f"{s.config}: missing" for s in SUBSETS if s.config not in subsets]
    reasons += [f"{s.config}: {subsets[s.config]['n']} of {s.n_items} items" for s in SUBSETS
                if s.config in subsets and subsets[s.config]["n"] != s.n_items]
    return reasons


def build_submission(run: Run, model_name: str | None = None, attach_predictions: bool = False,
                     resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED,
                     created: str | None = None) -> dict[str, Any]:
    """The submission document of one run (every subset needs its samples file)."""
    lacking = [name for name, sr in run.subsets.items() if sr.records is None]
    if lacking:
        raise RunError(f"no samples file for {', '.join(lacking)}: rerun lmms-eval with --log_samples")
    subsets = {s.config: subset_entry(s.config, run.subsets[s.config].records or [], resamples, seed)
               for s in SUBSETS if s.config in run.subsets}
    judges = {}
    for name in (s.config for s in JUDGED):
        if name in run.subsets:
            from pulse_tasks.scoring import judge

            judges[name] = judge.aggregate(run.subsets[name].records or []).get("judge") or {}
    items = predictions_of(run)
    reasons = completeness(subsets)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": created or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"name": model_name or run.model, "lmms_eval_model": run.model, "model_args": run.model_args,
                  "settings": {k: run.config.get(k) for k in SETTINGS_KEYS if k in run.config}},
        "data": {"sources": sorted(run.data_sources), "synthetic": run.synthetic},
        "tasks": {name: {"task": sr.task, "version": sr.version, "data_source": sr.data_source,
                         **_strict_version_entry(sr.subset, sr.strict_versions)}
                  for name, sr in run.subsets.items()},
        "scoring": {"package": PACKAGE, "package_version": _package_version(), "modes": list(bootstrap.MODES),
                    "strict_version": _run_strict_version(run)},
        "judge": judges,
        "lmms_eval_version": run.lmms_eval_version,
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": bootstrap.CONFIDENCE},
        "complete": not reasons,
        "partial_reasons": reasons,
        "subsets": subsets,
        "predictions_sha256": predictions_sha256(items),
    }
    if attach_predictions:
        doc["predictions"] = items
    return doc


# ----------------------------------------------------------------------------------------------
# Validation


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=TOLERANCE)


def _estimates(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """'paper f1' / 'judge score' / 'criterion Rhythm' -> estimate."""
    out = {f"{mode} {key}": est for mode, ks in (entry.get("metrics") or {}).items() for key, est in ks.items()}
    out.update({f"criterion {key}": est for key, est in (entry.get("criteria") or {}).items()})
    return out


def _metric_mismatches(name: str, submitted: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    problems = []
    if recomputed.get("error"):
        problems.append(f"{name}: predictions cannot be scored ({recomputed['error']})")
    flat_sub, flat_re = _estimates(submitted), _estimates(recomputed)
    for label in sorted(set(flat_sub) | set(flat_re)):
        if label not in flat_re:
            problems.append(f"{name} {label}: submitted but not computable from the predictions")
        elif label not in flat_sub:
            problems.append(f"{name} {label}: missing from the submission")
        elif not _close(flat_sub[label]["value"], flat_re[label]["value"]):
            problems.append(f"{name} {label}: submitted {flat_sub[label]['value']}, "
                            f"recomputed from the predictions {flat_re[label]['value']}")
    for key in sorted(set(submitted.get("counts") or {}) | set(recomputed.get("counts") or {})):
        a, b = (submitted.get("counts") or {}).get(key), (recomputed.get("counts") or {}).get(key)
        if not _close(a, b):
            problems.append(f"{name} count {key}: submitted {a}, recomputed {b}")
    if submitted.get("n") != recomputed.get("n"):
        problems.append(f"{name}: submitted n={submitted.get('n')}, {recomputed.get('n')} predictions attached")
    return problems


def _interval_problems(name: str, entry: Mapping[str, Any]) -> list[str]:
    problems = []
    estimates = [(f"{m} {k}", e) for m, ks in (entry.get("metrics") or {}).items() for k, e in ks.items()]
    estimates += [(k, e) for k, e in (entry.get("criteria") or {}).items()]
    for label, e in estimates:
        v, lo, hi = e.get("value"), e.get("lo"), e.get("hi")
        if v is not None and lo is not None and hi is not None and not (lo - TOLERANCE <= v <= hi + TOLERANCE):
            problems.append(f"{name} {label}: value {v} outside its interval [{lo}, {hi}]")
    return problems


REVISION_FLAG = "--allow-revision-mismatch"  # accept subsets scored on different revisions of the hub data


def revision_problems(tasks: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(mixed, unrecorded): hub datasets whose subsets name more than one revision, and subsets
    scored on hub data without a recorded commit."""
    from pulse_tasks.data.sources import is_commit, parse_hub_source

    by_repo: dict[str, dict[str | None, list[str]]] = {}
    unrecorded = []
    for name, task in sorted(tasks.items()):
        hub = parse_hub_source(task.get("data_source"))
        if hub is None:
            continue
        by_repo.setdefault(hub[0], {}).setdefault(hub[1], []).append(name)
        if not is_commit(hub[1]):
            unrecorded.append(name)
    mixed = [f"hub:{repo}: " + "; ".join(f"@{rev or '(none recorded)'} for {', '.join(names)}"
                                         for rev, names in sorted(revs.items(), key=lambda kv: str(kv[0])))
             for repo, revs in sorted(by_repo.items()) if len(revs) > 1]
    return mixed, unrecorded


def validate_submission(doc: Any, allow_revision_mismatch: bool = False) -> tuple[list[str], list[str]]:
    """(errors, notes): errors make the submission invalid; notes say what was (not) checked.
    Subsets scored on different revisions of the hub data are an error unless
    ``allow_revision_mismatch``."""
    errors = validate_schema(doc)
    if errors:
        return errors, []
    notes: list[str] = []
    mixed, unrecorded = revision_problems(doc["tasks"])
    for line in mixed:
        if allow_revision_mismatch:
            notes.append(f"MIXED DATA REVISIONS ({REVISION_FLAG}): {line}")
        else:
            errors.append(f"subsets scored on different revisions of the hub data: {line} ({REVISION_FLAG} accepts it)")
    if unrecorded:
        notes.append(f"hub data revision not recorded for {', '.join(unrecorded)} (results from before revisions "
                     "were recorded, or the commit could not be resolved)")
    subsets = doc["subsets"]
    for name, entry in subsets.items():
        expected = BY_CONFIG[name].n_items
        if entry["expected_n"] != expected:
            errors.append(f"{name}: expected_n {entry['expected_n']} but the subset has {expected} items")
        if entry["complete"] != (entry["n"] == expected):
            errors.append(f"{name}: 'complete' is {entry['complete']} with {entry['n']} of {expected} items")
        errors += _interval_problems(name, entry)
    reasons = completeness(subsets)
    if doc["complete"] != (not reasons):
        errors.append(f"'complete' is {doc['complete']} but: {'; '.join(reasons) or 'all nine subsets are full size'}")
    if reasons:
        notes.append("PARTIAL submission: " + "; ".join(reasons))
    if set(doc["tasks"]) != set(subsets):
        errors.append("'tasks' and 'subsets' name different subsets")
    errors += strict_version_problems(doc)
    if doc["data"]["synthetic"]:
        notes.append("SYNTHETIC DATA: scored on synthetic data; not a leaderboard entry")
    items = doc.get("predictions")
    if items is None:
        notes.append("predictions not attached: hash not verified, metrics not recomputed")
        return errors, notes
    if predictions_sha256(items) != doc["predictions_sha256"]:
        errors.append("predictions do not match predictions_sha256 (edited after submission?)")
    by_subset: dict[str, list[dict[str, Any]]] = {}
    for i, item in enumerate(items):
        rec = item["record"]
        if str(rec.get("id")) != item["id"] or rec.get("subset") != item["subset"]:
            errors.append(f"predictions[{i}]: record id/subset {rec.get('id')!r}/{rec.get('subset')!r} "
                          f"do not match the item {item['id']!r}/{item['subset']!r}")
        by_subset.setdefault(item["subset"], []).append(rec)
    for name in sorted(set(by_subset) | set(subsets)):
        if name not in subsets:
            errors.append(f"{name}: predictions attached but no metrics submitted")
            continue
        recomputed = _recompute(name, by_subset.get(name, []))
        submitted, note = _legacy_counts(name, subsets[name], recomputed)
        notes += [note] if note else []
        errors += _metric_mismatches(name, submitted, recomputed)
    if not errors:
        notes.append(f"predictions verified: hash matches; metrics and counts of {len(subsets)} subset(s) recomputed")
    return errors, notes


def _recompute(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Point metrics and counts from records (no resampling: intervals are not re-derived)."""
    try:
        entry = subset_entry(name, records, resamples=0, seed=0)
    except (KeyError, TypeError, ValueError) as exc:
        return {"n": len(records), "metrics": {}, "counts": {}, "error": str(exc)}
    if BY_CONFIG[name].judged:
        entry["deferred"] = sum(1 for r in records if judged_record(r).status == JUDGE_DEFERRED)
    return entry


def _legacy_counts(name: str, submitted: Mapping[str, Any], recomputed: dict[str, Any]
                   ) -> tuple[Mapping[str, Any], str | None]:
    """Submissions written before ``judge_skipped`` counted deferred items (pulse_tasks.results.summary)
    submitted the budget-skipped items alone: accepted, with a note."""
    deferred = recomputed.pop("deferred", 0)
    counts = submitted.get("counts") or {}
    skipped = (recomputed.get("counts") or {}).get("judge_skipped")
    if not deferred or skipped is None or not _close(counts.get("judge_skipped"), skipped - deferred):
        return submitted, None
    return ({**submitted, "counts": {**counts, "judge_skipped": skipped}},
            f"{name}: judge_skipped {counts['judge_skipped']} leaves out the {deferred} deferred item(s) "
            "(written before deferred items were counted as skipped): accepted")


# ----------------------------------------------------------------------------------------------
# Command line


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="lmms-eval output: results json or model folder (one run)")
    parser.add_argument("--out", required=True, metavar="FILE", help="where to write the submission JSON")
    parser.add_argument("--model-name", help="display name of the model (default: lmms-eval's model name)")
    parser.add_argument("--attach-predictions", action="store_true",
                        help="include every item's response and scoring record (lets validate recompute the metrics)")
    parser.add_argument("--resamples", type=int, default=bootstrap.DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=bootstrap.DEFAULT_SEED, help="bootstrap seed")
    parser.add_argument("--allow-failures", action="store_true",
                        help="submit even when more than 5%% of a subset's generations failed or were empty")


def failed_subsets(run: Run) -> list[str]:
    """Messages for the subsets whose generations failed too often (pulse_tasks.scoring.failures)."""
    from pulse_tasks.scoring.failures import summarize_responses

    out = []
    for spec in SUBSETS:
        sr = run.subsets.get(spec.config)
        if sr is None or sr.records is None or sr.responses is None:
            continue
        summary = summarize_responses(spec.config, [r.get("id") for r in sr.records], sr.responses)
        if summary.over_threshold:
            out.append(summary.message())
    return out


def run_submit(args: argparse.Namespace) -> int:
    try:
        found = load_runs([args.run])
        if len(found) != 1:
            raise RunError(f"{args.run} holds {len(found)} runs; name one model folder or results file")
        doc = build_submission(found[0], args.model_name, args.attach_predictions, args.resamples, args.seed)
        failures = failed_subsets(found[0])
        if failures and not getattr(args, "allow_failures", False):
            raise RunError("refusing to submit: too many failed generations (fix the run, or pass "
                           "--allow-failures to submit anyway):\n  " + "\n  ".join(failures))
        for line in failures:
            print(f"ecgbench submit: warning: {line}", file=sys.stderr)
    except RunError as exc:
        print(f"ecgbench submit: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    errors = validate_schema(doc)
    if errors:  # our own writer broke the schema: a bug, never hand out such a file
        print("ecgbench submit: internal error, the submission breaks its schema:\n  " + "\n  ".join(errors), file=sys.stderr)
        return EXIT_INVALID
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    status = "complete" if doc["complete"] else "PARTIAL (" + "; ".join(doc["partial_reasons"]) + ")"
    label = " SYNTHETIC DATA" if doc["data"]["synthetic"] else ""
    print(f"wrote {out}: {status}{label}; predictions sha256 {doc['predictions_sha256'][:16]}...")
    return 0


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", metavar="SUBMISSION", help="submission JSON written by `ecgbench submit`")
    parser.add_argument("--require-complete", action="store_true", help="fail (exit 1) on a partial submission")
    parser.add_argument(REVISION_FLAG, action="store_true",
                        help="accept subsets scored on different revisions of the hub data (an error by default)")


def _load(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_validate(args: argparse.Namespace) -> int:
    try:
        doc = _load(args.submission)
    except (OSError, ValueError) as exc:
        print(f"ecgbench validate: cannot read {args.submission}: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    errors, notes = validate_submission(doc, args.allow_revision_mismatch)
    for note in notes:
        print(note)
    if args.require_complete and not errors and not doc.get("complete"):
        errors.append("partial submission (--require-complete)")
    if errors:
        print(f"INVALID: {args.submission}", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return EXIT_INVALID
    print(f"valid: {args.submission}")
    return 0

