"""`ecgbench-train data`: get ECGInstruct ready for the recipe, and know before a 32-GPU job starts.

    ecgbench-train data fetch --out DIR [--repo PULSE-ECG/ECGInstruct] [--revision R] [--jobs N]
    ecgbench-train data check DIR [--data-path JSON] [--image-folder F] [--fast] [--allow-missing] [--jobs N]

`fetch` downloads the JSON and the image shards (training/hubdata.py), extracts them in
parallel and ends with `check`. `check` runs the recipe's own start-up scan on every record with
a pool of processes (the same tokenizer, length limit and image check, from `--config` and
`key=value` overrides as the recipe takes them), prints what would be skipped with the first
examples of each reason, writes the scan's index where the recipe finds it (DIR/.ecgbench/index/)
and prints the exact `data_path=` / `image_folder=` arguments to train with. Exit status: 0 ready,
1 records would be skipped (unless `--allow-missing`; `fetch` also when a shard was corrupt or
had members refused), 2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hubdata

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
DEFAULT_CONFIG = "pulse_7b.yaml"
IMAGE_PROBE = 200  # records sampled to find which folder their image paths are relative to
PROGRESS_EVERY_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgbench-train data",
        description="Download, extract and check the ECGInstruct training data for the recipe.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    fetch = sub.add_parser("fetch", help="download the JSON and image shards, extract them, then check",
                           description="Download (resumable, through the Hugging Face cache; offline from a "
                                       "filled cache with HF_HUB_OFFLINE=1), extract the shards in parallel "
                                       "(skipping those already extracted), then run `data check`.")
    fetch.add_argument("--out", required=True, type=Path, help="destination folder")
    fetch.add_argument("--repo", default=hubdata.HUB_REPO, help=f"hub dataset (default {hubdata.HUB_REPO})")
    fetch.add_argument("--revision", default=None, help="hub branch, tag or commit (default: main)")
    fetch.add_argument("--no-check", action="store_true", help="stop after extracting")
    _check_options(fetch)

    check = sub.add_parser("check", help="check every record against the images; index it for the recipe",
                           description="Run the recipe's start-up scan on every record with a process pool, "
                                       "report what it would skip, save the index the recipe reuses.")
    check.add_argument("dir", type=Path, help="the data folder (as `data fetch` leaves it)")
    check.add_argument("--data-path", type=Path, default=None,
                       help="the records' JSON/JSONL (default: the one in DIR, ECGInstruct.json first)")
    check.add_argument("--image-folder", type=Path, default=None,
                       help="root of the records' image paths (default: found under DIR/images or DIR)")
    _check_options(check)
    return parser


def _check_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: every core)")
    parser.add_argument("--fast", action="store_true",
                        help="only stat the images (image_check=exists), no header read")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when records would be skipped (they are, and counted, in training)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"the recipe config the index is for (default {DEFAULT_CONFIG}): its tokenizer, "
                             "model_max_length and image_check decide what is skipped")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for the recipe")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `key=value` overrides may come anywhere (after DIR, between options): argparse's positional
    # list only takes them in one run, so leftovers that look like overrides join it.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *extra]
    try:
        if args.action == "fetch":
            return _fetch(args)
        return _check(args)
    except (hubdata.FetchError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"ecgbench-train data {args.action}: {exc}", file=sys.stderr)
        return EXIT_ERROR


# --------------------------------------------------------------------------- fetch


def _fetch(args: argparse.Namespace) -> int:
    report = hubdata.fetch(args.out, args.repo, args.revision, args.jobs, log=lambda m: print(m, flush=True))
    extracted = sum(1 for s in report.shards if s.status == "extracted")
    print(f"fetched {report.repo}@{report.commit}: {extracted} shard(s) extracted, "
          f"{sum(1 for s in report.shards if s.status == 'skipped')} already there")
    status = EXIT_OK
    for shard in report.corrupt:
        print(f"REFUSED shard {shard.shard}: corrupt ({shard.error}); its images are missing", flush=True)
        status = EXIT_PROBLEMS
    for shard, member, why in report.refused:
        print(f"REFUSED member {member!r} of {shard}: it would land outside {report.out / hubdata.IMAGE_DIR} "
              f"({why})", flush=True)
        status = EXIT_PROBLEMS
    if args.no_check:
        return status
    data_path = report.out / hubdata.DATA_FILE if (report.out / hubdata.DATA_FILE).is_file() else report.data_files[0]
    check_status = _run_check(report.out, data_path, None, args)
    return max(status, check_status)


# --------------------------------------------------------------------------- check


@dataclass
class CheckReport:
    data_path: Path
    image_folder: Path
    summary: Any  # data.ScanSummary
    index_path: Path | None
    config_args: list[str]  # what to pass to the recipe
    seconds: float
    workers: int
    distinct_images: int = 0
    shared_image_records: int = 0  # records whose image another record also uses (several questions per ECG)
    duplicate_members: dict[str, list[str]] = field(default_factory=dict)  # image -> shards shipping it
    fetch: dict[str, Any] = field(default_factory=dict)  # DIR/.ecgbench/fetch.json, when fetched

    @property
    def skipped(self) -> int:
        return sum(self.summary.skipped.values())


def find_data_file(folder: Path) -> Path:
    """The records file in a data folder: ECGInstruct.json first, else the only JSON/JSONL."""
    preferred = folder / hubdata.DATA_FILE
    if preferred.is_file():
        return preferred
    found = sorted(p for pattern in hubdata.DATA_PATTERNS for p in folder.glob(pattern) if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{folder} holds no {hubdata.DATA_FILE} or other *.json/*.jsonl records; "
                                "fetch it with `ecgbench-train data fetch --out DIR`, or pass --data-path")
    raise ValueError(f"{folder} holds several record files ({', '.join(p.name for p in found)}): pass --data-path")


def find_image_folder(folder: Path, records: Any) -> Path:
    """The folder the records' image paths resolve under: DIR/images (where `fetch` extracts), a single
    folder the shards wrap their members in, or DIR itself; the one most sampled images exist under."""
    images = folder / hubdata.IMAGE_DIR
    candidates = [images, folder]
    if images.is_dir():
        candidates += sorted(p for p in images.iterdir() if p.is_dir())
    sample = []
    for i in range(min(len(records), IMAGE_PROBE * 5)):
        record = records[i]
        if isinstance(record, dict) and record.get("image"):
            sample.append(str(record["image"]))
        if len(sample) >= IMAGE_PROBE:
            break
    if not sample:
        return images
    scores = [sum((c / rel).is_file() for rel in sample) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    return candidates[best] if scores[best] else images


def _progress_printer(label: str) -> Any:
    last = [0.0]
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            rate = done / max(now - start, 1e-9)
            print(f"{label}: {done}/{total} records ({rate:.0f}/s)", file=sys.stderr, flush=True)

    return progress


def run_check(folder: Path, data_path: Path | None = None, image_folder: Path | None = None, *,
              config_name: str = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None, fast: bool = False,
              jobs: int | None = None) -> CheckReport:
    """Scan every record as the recipe will (in a process pool), save the index, collect the report."""
    from . import data
    from .config import load_config
    from .recipe import scan_arguments, setup_tokenizer_and_model_config

    folder = folder.resolve()
    data_path = (data_path or find_data_file(folder)).resolve()
    records = data.load_records(str(data_path))
    image_folder = (image_folder or find_image_folder(folder, records)).resolve()
    forced = {"data_path": str(data_path), "image_folder": str(image_folder)}
    if fast:
        forced["image_check"] = "exists"
    config = load_config(config_name, {**(overrides or {}), **forced})
    if config.max_records is not None:
        records = records[: config.max_records]
    tokenizer, pulse_config = setup_tokenizer_and_model_config(config)
    scan_kwargs, key = scan_arguments(config, tokenizer, pulse_config)
    workers = max(1, jobs or hubdata.default_jobs())
    start = time.perf_counter()
    result = data.scan_parallel(records, workers=workers, progress=_progress_printer("check"), **scan_kwargs)
    seconds = time.perf_counter() - start
    index_path = data.save_index(data.data_index_path(str(data_path), key), key, *result)

    images = Counter(str(r["image"]) for r in records if isinstance(r, dict) and r.get("image"))
    shipped: dict[str, list[str]] = {}
    for marker in hubdata.read_markers(data_path.parent / hubdata.STATE_DIR):
        for member in marker.get("members", []):
            shipped.setdefault(member, []).append(marker["shard"])
    manifest_path = data_path.parent / hubdata.STATE_DIR / hubdata.MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    config_args = [f"data_path={data_path}", f"image_folder={image_folder}"] + (["image_check=exists"] if fast else [])
    return CheckReport(
        data_path=data_path, image_folder=image_folder, summary=result[2], index_path=index_path,
        config_args=config_args, seconds=seconds, workers=workers, distinct_images=len(images),
        shared_image_records=sum(n for n in images.values() if n > 1),
        duplicate_members={m: s for m, s in shipped.items() if len(s) > 1}, fetch=manifest,
    )


def format_report(report: CheckReport, config_name: str, overrides: list[str]) -> str:
    from .data import SKIP_REASONS

    s = report.summary
    rate = s.total / max(report.seconds, 1e-9)
    lines = [f"data_path:    {report.data_path} ({s.total} records)", f"image_folder: {report.image_folder}"]
    if report.fetch:
        lines.append(f"hub:          {report.fetch.get('repo')}@{report.fetch.get('commit')}")
    lines += ["", (f"records: {s.kept} of {s.total} kept, {report.skipped} would be skipped "
                   f"(scanned in {report.seconds:.1f} s, {rate:.0f} records/s, {report.workers} workers)")]
    for reason in SKIP_REASONS:
        n = s.skipped.get(reason, 0)
        examples = s.examples.get(reason, [])
        lines.append(f"  {reason:<18}{n:>8}" + (f"   e.g. {', '.join(examples)}" if n else ""))
    lines += ["", (f"images: {report.distinct_images} distinct referenced; {report.shared_image_records} records "
                   "share their image with another record (several conversations per ECG)")]
    dupes = report.duplicate_members
    shown = ", ".join(f"{m} ({' + '.join(sh)})" for m, sh in list(dupes.items())[:5])
    lines.append(f"  duplicate images (shipped by more than one shard, the last extracted copy kept): {len(dupes)}"
                 + (f"   e.g. {shown}" if dupes else ""))
    shards = report.fetch.get("shards", {})
    corrupt = [f"{name} ({info.get('error')})" for name, info in shards.items() if info.get("status") == "corrupt"]
    refused = [f"{name}: {m} ({why})" for name, info in shards.items() for m, why in info.get("refused", [])]
    if corrupt:
        lines.append(f"  corrupt shards (not extracted): {'; '.join(corrupt)}")
    if refused:
        lines.append(f"  refused archive members (outside the image folder): {'; '.join(refused)}")
    if report.index_path:
        lines += ["", f"index: {report.index_path} (the recipe reuses it with these inputs: no start-up scan)"]
    command = " ".join(["ecgbench-train", "--config", config_name, *overrides, *report.config_args])
    lines += ["", "train with:", f"  {' '.join(report.config_args)}", f"  e.g. {command}"]
    return "\n".join(lines)


def _run_check(folder: Path, data_path: Path | None, image_folder: Path | None, args: argparse.Namespace) -> int:
    from .config import parse_overrides

    overrides = parse_overrides(args.overrides)
    report = run_check(folder, data_path, image_folder, config_name=args.config, overrides=overrides,
                       fast=args.fast, jobs=args.jobs)
    print(format_report(report, args.config, args.overrides), flush=True)
    if report.skipped and not args.allow_missing:
        print(f"result: PROBLEMS: {report.skipped} of {report.summary.total} records would be skipped "
              "(see above; --allow-missing accepts that)")
        return EXIT_PROBLEMS
    print("result: OK" + (f" ({report.skipped} records will be skipped, allowed)" if report.skipped else ""))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise FileNotFoundError(f"{args.dir}: no such folder")
    return _run_check(args.dir, args.data_path, args.image_folder, args)
