"""`ecgbench demo`: the whole pipeline, offline, on synthetic data (or the real thing with overrides).

Steps, each a real command of this project:
  1. synthesize ECGBench and ECGInstruct (pulse_tasks.data.synth);
  2. train a tiny PULSE-architecture model with the recipe (`ecgbench-train`, tiny.yaml, DeepSpeed
     ZeRO-2 on the CPU) from a tiny random LLaVA-1.6 checkpoint;
  3. evaluate it with the real `lmms-eval` CLI (`--model pulse`), and the `random_guess` floor;
  4. `ecgbench report` and `ecgbench compare` over the two runs (markdown printed, HTML written).
It ends by printing the one `ecgbench studio` command that opens ECGBench Studio on its output.

With `--model` (a checkpoint or hub id) steps 1-2 are skipped; with `--data` the synthetic
ECGBench is replaced by that copy. The judged subsets run when a judge is configured and are
reported as skipped (with the reason) otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Demo sizes: large enough that the rhythm questions show learning, small enough for 2 CPU cores.
DEMO_PER_SUBSET = 24  # synthetic ECGBench items per subset (120 rhythm questions in all)
DEMO_INSTRUCT = 1500  # synthetic ECGInstruct training records
DEMO_TRAIN_STEPS = 3000  # optimizer steps: 400 teach the answer formats, ~3000 the rhythm too
RHYTHM_ID_PREFIX = "synth-rhythm-"  # synthetic items whose gold follows from the drawn heart rate
DEMO_IMAGE_SIZE = (320, 240)  # small images: the tiny model's anyres tiles stay cheap
# Bold traces: the tiny model sees the page at about 64x64 px, where 1 px traces fade out and it
# cannot learn the rhythm (measured: stuck at the class-entropy loss; 4 px traces are learned).
DEMO_INK_WIDTH = 4
JUDGED_TASKS = ("ecgbench_ptb_report", "ecgbench_arena")
# On a CPU the protocol's 1024 new tokens would dominate the demo; synthetic answers are short.
CPU_MAX_NEW_TOKENS = 32


class DemoError(RuntimeError):
    """A pipeline step failed; the message names the step and its log."""


def _step(n: int, title: str) -> float:
    print(f"\n=== [{n}/4] {title}", flush=True)
    return time.monotonic()


def _done(start: float) -> None:
    print(f"    done in {time.monotonic() - start:.0f} s", flush=True)


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run one pipeline command, streaming its output to the terminal and to `log`."""
    print("    $ " + " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if _worth_showing(line):
                print("    " + line.rstrip()[:160], flush=True)
        code = proc.wait()
    if code != 0:
        raise DemoError(f"`{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}` failed (exit {code}); see {log}")


def _worth_showing(line: str) -> bool:
    # Progress and results, not lmms-eval's per-request debug noise.
    keys = ("loss", "samples/s", "%|", "|  ", "Error", "error", "skipped", "ecgbench_", "throughput")
    return any(k in line for k in keys)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def judge_configured() -> tuple[bool, str]:
    """Whether a judge is configured, and the reason when it is not."""
    from pulse_tasks.scoring import judge

    try:
        judge.check_configured(judge.settings_from_env())
    except judge.JudgeNotConfiguredError as exc:
        return False, str(exc).splitlines()[0]
    return True, ""


def _results_file(out: Path) -> Path:
    from pulse_tasks.results.runs import RunError, find_results

    try:
        return find_results(out)[-1]
    except RunError as exc:  # lmms-eval exits 0 even on errors: its missing results say it
        raise DemoError(f"lmms-eval wrote no results ({exc}); see the log") from None


def synthesize(out: Path, per_subset: int, n_instruct: int) -> tuple[Path, Path]:
    """Step 1: synthetic ECGBench and ECGInstruct."""
    from pulse_tasks.data.synth import make_ecgbench, make_instruct

    bench = make_ecgbench(out / "data" / "ecgbench", per_subset=per_subset, layout="hub", seed=0,
                          image_size=DEMO_IMAGE_SIZE, ink_width=DEMO_INK_WIDTH)
    instruct = make_instruct(out / "data" / "instruct", n=n_instruct, seed=1, image_size=DEMO_IMAGE_SIZE,
                             ink_width=DEMO_INK_WIDTH)
    print(f"    synthetic ECGBench: {bench} ({per_subset} items per subset)\n    synthetic ECGInstruct: {instruct}")
    return bench, instruct


def train(out: Path, instruct: Path, steps: int) -> Path:
    """Step 2: the recipe with tiny.yaml from a tiny random LLaVA-1.6 checkpoint."""
    from pulse_models.testing import make_tiny_original_checkpoint

    base = make_tiny_original_checkpoint(out / "base_model", merge_type="flat", seed=0)
    data_json = instruct if instruct.is_file() else next(iter(sorted(instruct.glob("*.json"))))
    output_dir = out / "checkpoint"
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": os.environ.get("ECGBENCH_DEMO_PORT", "29533")}
    _run([_bin("ecgbench-train"), "--config", "tiny.yaml", f"model_name_or_path={base}", f"data_path={data_json}",
          f"image_folder={data_json.parent / 'images'}", f"output_dir={output_dir}", f"max_steps={steps}",
          "save_steps=1000000", "unfreeze_mm_vision_tower=true"], out / "logs" / "train.log", env)
    return output_dir


def evaluate(out: Path, model: str, data: Path | None, tasks: str, on_gpu: bool) -> dict[str, Path]:
    """Step 3: lmms-eval CLI for the model and for random_guess; returns the results files."""
    env = {"ECGBENCH_DATA": str(data)} if data else {}
    model_args = f"pretrained={model}" + ("" if on_gpu else ",dtype=float32,device_map=cpu")
    runs = {}
    for name, args in (("pulse", ["--model", "pulse", "--model_args", model_args, "--batch_size", "8" if on_gpu else "4"]),
                       ("random_guess", ["--model", "random_guess", "--model_args", "seed=0"])):
        target = out / "results" / name
        extra = ["--process_docs_parallel", "16"] if any(t in tasks for t in JUDGED_TASKS) or tasks == "ecgbench" else []
        if not on_gpu:
            extra += ["--gen_kwargs", f"max_new_tokens={CPU_MAX_NEW_TOKENS}"]
        _run([sys.executable, "-m", "lmms_eval", *args, "--tasks", tasks, "--output_path", str(target), "--log_samples", *extra],
             out / "logs" / f"eval_{name}.log", env)
        runs[name] = _results_file(target)
    return runs


def rhythm_accuracy(results_file: Path) -> dict[str, tuple[int, int]]:
    """(strictly correct, n) per subset over the synthetic rhythm questions of one run."""
    from pulse_app.views import is_correct
    from pulse_tasks.results.runs import load_run

    out = {}
    for config, sub in load_run(results_file).subsets.items():
        rhythm = [r for r in (sub.records or []) if str(r.get("id", "")).startswith(RHYTHM_ID_PREFIX)]
        if rhythm:
            out[config] = (sum(bool(is_correct(r, "strict")) for r in rhythm), len(rhythm))
    return out


def print_rhythm_table(runs: dict[str, Path]) -> dict[str, dict[str, tuple[int, int]]]:
    """The questions a model can only answer by reading the drawn signal: learning, not plumbing."""
    table = {name: rhythm_accuracy(path) for name, path in runs.items()}
    subsets = sorted({s for per_run in table.values() for s in per_run})
    print("\nSynthetic rhythm questions (gold follows from the simulated heart rate), strict mode:")
    print("| subset | " + " | ".join(table) + " |\n|---|" + "---|" * len(table))
    for subset in subsets + ["all"]:
        cells = []
        for per_run in table.values():
            ok, n = (sum(v[0] for v in per_run.values()), sum(v[1] for v in per_run.values())) if subset == "all" \
                else per_run.get(subset, (0, 0))
            cells.append(f"{ok}/{n} ({100 * ok / n:.0f}%)" if n else "-")
        print(f"| {subset} | " + " | ".join(cells) + " |")
    return table


def report(out: Path, runs: dict[str, Path]) -> None:
    """Step 4: paper-layout table, HTML page and the paired comparison."""
    from pulse_app.cli import main as ecgbench

    base, model = str(runs["random_guess"]), str(runs["pulse"])
    ecgbench(["report", base, model, "--format", "md"])
    ecgbench(["report", base, model, "--format", "html", "--out", str(out / "report")])
    print(f"    HTML report: {out / 'report'}")
    ecgbench(["compare", base, model])
    if all(rhythm_accuracy(path) for path in runs.values()):
        rhythm = print_rhythm_table(runs)
        (out / "rhythm_questions.json").write_text(json.dumps(rhythm, indent=2))


def studio_command(runs: dict[str, Path], model: str, data: Path | None, on_gpu: bool) -> str:
    """The one command that opens ECGBench Studio on this demo's runs (results files by name; the
    baseline first, so it is run A) with its model and data: offline, local paths only."""
    import shlex

    folders = [str(runs[name].parent) for name in ("random_guess", "pulse") if name in runs]
    parts = ["ecgbench", "studio", "--results", *folders, "--model", model]
    if data is not None:
        parts += ["--data", str(data)]
    if not on_gpu:  # as the demo's evaluation: float32 on the CPU, short answers
        parts += ["--dtype", "float32", "--device-map", "cpu", "--max-new-tokens", str(CPU_MAX_NEW_TOKENS)]
    return " ".join(shlex.quote(p) for p in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="folder for data, checkpoint, results, report (default demo_out)")
    parser.add_argument("--model", help="evaluate this checkpoint or hub id instead of training the tiny one")
    parser.add_argument("--data", help="ECGBench copy to evaluate on instead of the synthetic one ('hub' for the hub)")
    parser.add_argument("--tasks", default="ecgbench", help="lmms-eval tasks (default: ecgbench, the nine)")
    parser.add_argument("--judge-model", help="judge model for the two free-text subsets (sets ECGBENCH_JUDGE_MODEL)")
    parser.add_argument("--per-subset", type=int, default=DEMO_PER_SUBSET, help="synthetic items per subset")
    parser.add_argument("--instruct", type=int, default=DEMO_INSTRUCT, help="synthetic training records")
    parser.add_argument("--train-steps", type=int, default=DEMO_TRAIN_STEPS, help="optimizer steps of the tiny recipe")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.judge_model:
        os.environ["ECGBENCH_JUDGE_MODEL"] = args.judge_model
    tasks = args.tasks
    judged, reason = judge_configured()
    if not judged:
        wanted = [t for t in tasks.split(",")]
        if "ecgbench" in wanted or any(t in JUDGED_TASKS for t in wanted):
            tasks = ",".join(sorted({"ecgbench_auto" if t == "ecgbench" else t for t in wanted} - set(JUDGED_TASKS)))
            print(f"NOTE: ptb-test-report and arena skipped: no judge configured ({reason})", flush=True)
    synthetic = args.data is None
    if synthetic:
        print("SYNTHETIC DATA: every number below comes from synthetic ECGs, not from ECGBench.", flush=True)
    try:
        import torch

        on_gpu = torch.cuda.is_available()
        start = _step(1, "data")
        bench, instruct = synthesize(out, args.per_subset, args.instruct) if (synthetic or not args.model) else (None, None)
        data = bench if synthetic else (None if args.data == "hub" else Path(args.data))
        _done(start)
        start = _step(2, "train (DeepSpeed ZeRO-2, tiny.yaml)")
        if args.model:
            model = args.model
            print(f"    skipped: evaluating {model}")
        else:
            model = str(train(out, instruct, args.train_steps))
        _done(start)
        start = _step(3, f"evaluate with lmms-eval: {tasks}")
        runs = evaluate(out, model, data, tasks, on_gpu)
        _done(start)
        start = _step(4, "report and compare")
        report(out, runs)
        _done(start)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    (out / "demo.json").write_text(json.dumps({"model": model, "data": str(data or "hub"), "tasks": tasks,
                                               "synthetic": synthetic, "judged": judged,
                                               "results": {k: str(v) for k, v in runs.items()}}, indent=2))
    print(f"\nOpen ECGBench Studio on these results (needs the [app] extra):\n    {studio_command(runs, model, data, on_gpu)}",
          flush=True)
    return 0
