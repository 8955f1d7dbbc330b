"""`ecgbench data`: fetch, check, synthesize or materialize ECGBench copies.

    ecgbench data fetch --out DIR [--subsets ptb-test ...] [--revision REV]
    ecgbench data check DIR [--json] [--fast] [--strict]
    ecgbench data synth --out DIR [--per-subset N] [--layout hub|json] [--seed S]
    ecgbench data instruct --out DIR [--n N] [--seed S]
    ecgbench data materialize --out DIR [--data SRC] [--subsets ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pulse_tasks.data import sources as data
from pulse_tasks.data.subsets import (
    FULL_SIZE,
    HUB_DATASET,
    SUBSETS,
    UnknownSubsetError,
    get_subset,
)

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2  # 1: the data has problems; 2: the command could not run


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 512x384, got {text!r}") from exc
    if width < 64 or height < 48:
        raise argparse.ArgumentTypeError("images smaller than 64x48 cannot show a 12-lead ECG")
    return width, height


def _subset_names(names: list[str] | None) -> list[str] | None:
    return [get_subset(n).config for n in names] if names else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `fetch`, `check`, `synth`, `instruct` and `materialize` sub-commands."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    fetch = sub.add_parser("fetch", help="mirror the hub copy into DIR (hub layout; needs network)")
    fetch.add_argument("--out", required=True, type=Path, help="destination folder")
    fetch.add_argument("--subsets", nargs="+", metavar="SUBSET", help="only these subsets (config or task names)")
    fetch.add_argument("--revision", default=None, help="hub branch, tag or commit (default: main)")
    fetch.add_argument("--repo", default=HUB_DATASET, help=f"hub dataset repo (default: {HUB_DATASET})")

    check = sub.add_parser("check", help="validate a local copy: counts, schema, every image")
    check.add_argument("dir", type=Path, help="the local copy (hub or JSON layout)")
    check.add_argument("--subsets", nargs="+", metavar="SUBSET", help="only these subsets")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--fast", action="store_true", help="read image headers only (no full decode)")
    check.add_argument("--strict", action="store_true", help="also fail on absent or partial subsets")

    synth = sub.add_parser("synth", help="write a small synthetic ECGBench (for tests and demos)")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--per-subset", type=int, default=8, help="items per subset (default 8)")
    synth.add_argument("--layout", choices=("hub", "json"), default="hub")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=_image_size, default=None, metavar="WxH", help="default 512x384")

    instruct = sub.add_parser("instruct", help="write a small synthetic ECGInstruct (LLaVA JSON + images/)")
    instruct.add_argument("--out", required=True, type=Path)
    instruct.add_argument("--n", type=int, default=64, help="number of records (default 64)")
    instruct.add_argument("--seed", type=int, default=0)
    instruct.add_argument("--image-size", type=_image_size, default=None, metavar="WxH", help="default 512x384")

    mat = sub.add_parser("materialize", help="write normalized parquet per subset, images embedded")
    mat.add_argument("--out", required=True, type=Path)
    mat.add_argument("--data", default=None, help=f"source folder or 'hub' (default: ${data.ENV_VAR}, else the hub)")
    mat.add_argument("--subsets", nargs="+", metavar="SUBSET")


def run(args: argparse.Namespace) -> int:
    """Run one `ecgbench data` action; returns the exit status."""
    actions = {"fetch": _fetch, "check": _check, "synth": _synth, "instruct": _instruct, "materialize": _materialize}
    try:
        return actions[args.action](args)
    except (UnknownSubsetError, data.DataError, data.DataUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def fetch(out: Path, subsets: list[str] | None = None, revision: str | None = None,
          repo: str = HUB_DATASET) -> Path:
    """Mirror the hub dataset (hub layout) into ``out``; raises DataUnavailableError when offline."""
    configs = _subset_names(subsets) or [s.config for s in SUBSETS]
    reason = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    if data.hub_offline():
        raise data.DataUnavailableError(data.offline_message(repo, ", ".join(configs), reason))
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ImportError("fetching needs huggingface_hub: pip install huggingface_hub") from exc
    patterns = [f"{c}/*" for c in configs] + ["README.md"]
    try:
        snapshot_download(repo, repo_type="dataset", revision=revision, local_dir=str(out), allow_patterns=patterns)
    except Exception as exc:  # only network failures get the offline message
        if data.is_connection_error(exc):
            raise data.DataUnavailableError(
                data.offline_message(repo, ", ".join(configs), f"{type(exc).__name__}: {exc}")) from exc
        raise
    return out


def _fetch(args: argparse.Namespace) -> int:
    out = fetch(args.out, args.subsets, args.revision, args.repo)
    print(f"fetched {args.repo}@{args.revision or 'main'} into {out}")
    print(f"next: ecgbench data check {out}   and   export {data.ENV_VAR}={out.resolve()}")
    return EXIT_OK


def format_report(report: data.CheckReport) -> str:
    """The readable summary printed by `data check`."""
    lines = [f"ECGBench copy: {report.source}" + ("   [SYNTHETIC]" if report.synthetic else ""),
             f"fingerprint:   {report.fingerprint}", "",
             f"{'subset':<18}{'status':<10}{'items':>7} / published"]
    for s in report.subsets:
        lines.append(f"{s.config:<18}{s.status:<10}{s.n:>7} / {s.expected}")
    total = sum(s.n for s in report.subsets)
    problems = [p for s in report.subsets for p in s.problems]
    if problems:
        lines += ["", f"problems ({len(problems)}):"] + [f"  - {p}" for p in problems]
    kind = "synthetic copy" if report.synthetic else ("complete copy" if report.complete else "partial copy")
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    lines += ["", f"result: {verdict} ({kind}, {total} of {FULL_SIZE} published items)"]
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    report = data.check_source(args.dir, _subset_names(args.subsets), decode=not args.fast)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    if not report.ok:
        return EXIT_PROBLEMS
    if args.strict and not report.complete:
        print("strict: some subsets are absent or not at their published size", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from pulse_tasks.data.synth import DEFAULT_IMAGE_SIZE, make_ecgbench

    out = make_ecgbench(args.out, per_subset=args.per_subset, layout=args.layout, seed=args.seed,
                        image_size=args.image_size or DEFAULT_IMAGE_SIZE)
    print(f"wrote a SYNTHETIC ECGBench ({args.per_subset} items per subset, {args.layout} layout) to {out}")
    print(f"use it with: export {data.ENV_VAR}={out.resolve()}")
    return EXIT_OK


def _instruct(args: argparse.Namespace) -> int:
    from pulse_tasks.data.synth import DEFAULT_IMAGE_SIZE, make_instruct

    path = make_instruct(args.out, n=args.n, seed=args.seed, image_size=args.image_size or DEFAULT_IMAGE_SIZE)
    print(f"wrote a SYNTHETIC ECGInstruct ({args.n} records) to {path} (images under {path.parent / data.IMAGE_DIR})")
    return EXIT_OK


def _materialize(args: argparse.Namespace) -> int:
    written = data.materialize(args.data, args.out, _subset_names(args.subsets))
    for config, path in written.items():
        print(f"{config:<18}{path}")
    return EXIT_OK
