"""`ecgbench`: one console script, one sub-command per job.

Each sub-command lives in its own module that defines
``add_arguments(parser: argparse.ArgumentParser) -> None`` and ``run(args) -> int``.
Modules are imported only when their sub-command runs, so `ecgbench --help` stays fast and
needs no torch.

The dispatcher lives on the top floor because its commands come from every floor (the benchmark's
``pulse_tasks``, the model side's ``pulse_models``, this package's demo and Studio); the floors below
never launch one above them (``tests/test_layering.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("pulse_tasks.data.cli", "fetch, check, synthesize or materialize ECGBench data (fetch | check | synth | instruct | materialize)"),
    "score": ("pulse_tasks.scoring.rescore", "rescore saved predictions of one subset (paper and strict modes)"),
    "judge": ("pulse_tasks.scoring.judge.cli", "LLM-judge saved report/arena predictions, or estimate the cost"),
    "report": ("pulse_tasks.results.report_cli", "paper-layout table of one or more lmms-eval runs, with intervals"),
    "compare": ("pulse_tasks.results.compare", "paired comparison of two runs: which differences are real"),
    "submit": ("pulse_tasks.results.submission", "write a leaderboard submission JSON from a run"),
    "validate": ("pulse_tasks.results.submission", "validate a leaderboard submission JSON"),
    "leaderboard": ("pulse_tasks.results.leaderboard.cli", "build the static leaderboard site from submissions, or check where one lands (build | check)"),
    "ask": ("pulse_models.ask", "ask a model about one ECG image"),
    "tasks": ("pulse_tasks.glue.registry", "print the lmms-eval task folder (for --include_path) and the task names"),
    "demo": ("pulse_app.demo", "run the whole pipeline offline on synthetic data"),
    "studio": ("pulse_app.studio", "web app: ask a model about an ECG, browse and compare runs item by item"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return argparse.ArgumentParser(
        prog="ecgbench",
        description="ECGBench for lmms-eval: data, scoring, judging, reports and the PULSE model.",
        epilog=f"commands:\n{lines}\n\nRun `ecgbench COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ecgbench` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("command", nargs="?", choices=list(SUBCOMMANDS), metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        top.parse_args(argv[:1])  # argparse prints the valid choices and exits 2
    name = argv[0]
    module_name, help_ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"ecgbench {name}", description=help_)
    # Modules serving two commands (submit/validate) pick their parser by name.
    add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{name}", None) or module.run
    add(parser)
    args = parser.parse_args(argv[1:])
    return int(run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
