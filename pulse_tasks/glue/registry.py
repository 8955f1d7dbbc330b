"""Where lmms-eval finds the ECGBench tasks, and which data they read.

The packaged task folder (`yaml_tasks/` in the repository, `pulse_yaml_tasks` once installed)
reads the hub copy `PULSE-ECG/ECGBench`. YAML has no way to choose the data at run time, so for a
local copy (`ECGBENCH_DATA=DIR`, or `--data DIR` on our commands) we write a generated copy of the
task folder whose tasks read normalized parquet files made from that copy (see
`pulse_tasks.data.sources.materialize`), keyed by the copy's fingerprint so it is built once.

`install_task_hook()` makes a plain `lmms-eval --tasks ecgbench_ptb` find our tasks: lmms-eval
imports its model registry (and so our entry point, `pulse_models.registry.register`) before it
builds its TaskManager, and the hook adds our folder to the TaskManager's include paths. That
wraps one lmms-eval 0.7 method; tests/test_lmms_eval_cli.py fails when it stops working, and the
documented fallback is `--include_path "$(ecgbench tasks --print-path)"`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import logging
import shutil
import sys
from importlib import resources
from pathlib import Path

from pulse_tasks.data.subsets import SUBSETS

log = logging.getLogger("ecgbench")

TASK_FOLDER = "ecgbench"  # sub-folder holding the YAMLs (lmms-eval searches include paths recursively)
TEMPLATE = "_default_template_yaml"
CACHE_ENV = "ECGBENCH_CACHE"  # where generated task folders and materialized data live
GENERATED_VERSION = "2"  # bump when the generated layout changes, so stale folders are rebuilt
PACKAGED_DATA_SOURCE = "hub:PULSE-ECG/ECGBench"  # what the packaged template records (no revision known)


def packaged_task_root() -> Path:
    """The folder to pass to lmms-eval's include path for the hub data (contains `ecgbench/`)."""
    return Path(str(resources.files("pulse_yaml_tasks")))


def cache_root() -> Path:
    """Root of our on-disk cache (generated task folders, materialized data)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ecgbench")
    return Path(base)


def task_root(data: str | os.PathLike | None = None) -> Path:
    """The include path serving the tasks for `data` (argument, else $ECGBENCH_DATA, else the hub)."""
    from pulse_tasks.data.sources import resolve_source

    source = resolve_source(data)
    if source.kind == "hub":
        return _hub_task_root(source)
    return _generated_task_root(source)


def _hub_task_root(source) -> Path:
    """Tasks reading the hub at one commit: a generated copy of the packaged folder whose results
    record ``data_source: hub:REPO@<commit>`` and whose loads are pinned to that commit. The
    packaged folder (no revision recorded) only when the commit cannot be resolved."""
    from pulse_tasks.data.sources import pin_revision
    from pulse_tasks.data.subsets import HUB_DATASET

    pinned = pin_revision(source)
    if pinned.revision is None and pinned.location == HUB_DATASET:
        log.warning("ECGBench: could not resolve the hub data's commit (offline, and not in the Hugging Face "
                    "cache); results will record data_source %r without a revision", PACKAGED_DATA_SOURCE)
        return packaged_task_root()
    fingerprint = pinned.fingerprint()
    root = _cached_task_root(fingerprint)
    if (root / "complete.json").exists():
        return root
    staging, folder = _staged_copy(root)
    template = folder / TEMPLATE
    text = template.read_text().replace(f"data_source: {json.dumps(PACKAGED_DATA_SOURCE)}",
                                        f"data_source: {json.dumps(fingerprint)}")
    text = text.replace(f"dataset_path: {HUB_DATASET}", f"dataset_path: {pinned.location}")
    # datasets.load_dataset(..., revision=...) through lmms-eval's dataset_kwargs: the data read is the data recorded.
    text += (f"# Generated for {fingerprint} (from the {HUB_DATASET} task templates).\n"
             f"dataset_kwargs:\n  revision: {json.dumps(pinned.revision or 'main')}\n")
    template.write_text(text)
    return _publish(staging, root, {"data_source": fingerprint})


def _generated_task_root(source) -> Path:
    from pulse_tasks.data.sources import is_synthetic, materialize

    fingerprint = source.fingerprint()
    key = _cache_key(fingerprint)
    root = cache_root() / "tasks" / key
    done = root / "complete.json"
    if done.exists():
        return root
    data_dir = cache_root() / "data" / key
    files = materialize(source, data_dir)
    staging, folder = _staged_copy(root)
    template = folder / TEMPLATE
    # Results carry where their data came from; synthetic copies say so, for every report.
    metadata = f"data_source: {json.dumps(fingerprint)}"
    if is_synthetic(source):
        metadata += "\n  synthetic: true"
    text = template.read_text().replace(f"data_source: {json.dumps(PACKAGED_DATA_SOURCE)}", metadata)
    template.write_text(text)
    present: set[str] = set()
    for task_yaml in sorted(folder.glob("ecgbench_*.yaml")):
        config = _dataset_name(task_yaml)
        if config is None:  # a group file
            continue
        path = files.get(config)
        if path is None:
            # A partial copy: a task without data must not silently fall back to the hub.
            task_yaml.unlink()
            continue
        present.add(task_yaml.stem)
        with task_yaml.open("a") as fh:
            fh.write(
                "# Generated for a local copy: normalized parquet made by pulse_tasks.data.sources.materialize.\n"
                "dataset_path: parquet\n"
                "dataset_name: null\n"
                "dataset_kwargs:\n"
                f"  data_files:\n    test: {json.dumps(str(Path(path).resolve()))}\n"
            )
    for group in ("ecgbench.yaml", "ecgbench_auto.yaml"):
        _drop_missing_from_group(folder / group, present)
    return _publish(staging, root, {"data_source": fingerprint, "subsets": sorted(files)})


def _cache_key(fingerprint: str) -> str:
    """Folder name of the generated tasks (and materialized data) for one data fingerprint."""
    # the packaged template is in the key: a new metadata.version/strict_version rebuilds the folder
    template_sha = hashlib.sha256((packaged_task_root() / TASK_FOLDER / TEMPLATE).read_bytes()).hexdigest()
    return hashlib.sha256(f"{GENERATED_VERSION}|{fingerprint}|{template_sha}".encode()).hexdigest()[:16]


def _cached_task_root(fingerprint: str) -> Path:
    return cache_root() / "tasks" / _cache_key(fingerprint)


def _staged_copy(root: Path) -> tuple[Path, Path]:
    """(staging folder, its task folder): a fresh copy of the packaged tasks beside ``root``."""
    staging = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    folder = staging / TASK_FOLDER
    shutil.copytree(packaged_task_root() / TASK_FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    return staging, folder


def _publish(staging: Path, root: Path, complete: dict) -> Path:
    """Mark ``staging`` complete and move it to ``root`` (atomic; a concurrent winner is kept)."""
    (staging / "complete.json").write_text(json.dumps(complete))
    if root.exists():  # another process finished first; keep its folder
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.replace(staging, root)
    return root


def _dataset_name(task_yaml: Path) -> str | None:
    for line in task_yaml.read_text().splitlines():
        if line.startswith("dataset_name:"):
            return line.split(":", 1)[1].strip()
    return None


def _drop_missing_from_group(path: Path, present: set[str]) -> None:
    lines = [
        line for line in path.read_text().splitlines()
        if not (line.strip().startswith("- ecgbench_") and line.strip()[2:] not in present)
    ]
    path.write_text("\n".join(lines) + "\n")


def is_our_task_root(path: str | os.PathLike) -> bool:
    """True when `path` is (or contains) an ECGBench task folder made by this package."""
    template = Path(path) / TASK_FOLDER / TEMPLATE
    return template.is_file() and "PULSE-ECG/ECGBench" in template.read_text()


def install_task_hook() -> None:
    """Make lmms-eval's TaskManager include our task folder (idempotent)."""
    from lmms_eval.tasks import TaskManager

    original = TaskManager.initialize_tasks
    if getattr(original, "_ecgbench_hook", False):
        return

    def initialize_tasks(self, include_path=None, include_defaults=True):
        paths = [] if include_path is None else ([include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path))
        if not any(is_our_task_root(p) for p in paths):
            from pulse_tasks.data.sources import resolve_source

            root = task_root()
            paths.append(str(root))
            if resolve_source().kind == "hub":
                warn_if_hub_unreachable()
        return original(self, include_path=paths, include_defaults=include_defaults)

    initialize_tasks._ecgbench_hook = True  # type: ignore[attr-defined]
    initialize_tasks.__wrapped__ = original  # type: ignore[attr-defined]
    TaskManager.initialize_tasks = initialize_tasks


PROXY_ENV_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
HUB_PROBE_TIMEOUT_S = 3.0


def hub_unreachable_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached, or None when it answers (or cannot be judged from here).

    A TCP connection to HF_ENDPOINT's host (default huggingface.co:443), nothing sent: lmms-eval
    reads the hub itself and, without a network, fails only after minutes of retries with a bare
    RetryError. Behind a proxy a direct connection says nothing, so no probe is made then.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in PROXY_ENV_VARS):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme != "http" else 80)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port} did not answer ({type(exc).__name__}: {exc})"
    return None


def warn_if_hub_unreachable(argv: list[str] | None = None) -> bool:
    """Log our one-paragraph offline hint when an ECGBench run would need the hub but may not reach it.

    lmms-eval reads the hub copy itself and, offline, fails with a bare retry error; our loader's
    message names the setting and the command. Only said for command lines naming our tasks: when
    the Hugging Face offline switches are on (a cached copy still loads, hence a warning), or when
    the hub's host does not answer a connection (``hub_unreachable_reason``).
    """
    from pulse_tasks.data.sources import hub_offline, offline_message
    from pulse_tasks.data.subsets import HUB_DATASET

    argv = sys.argv if argv is None else argv
    if not any("ecgbench" in arg for arg in argv):
        return False
    if hub_offline():
        reason = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and ECGBENCH_DATA is not; this only works if the hub copy is already cached"
    else:
        unreachable = hub_unreachable_reason()
        if unreachable is None:
            return False
        reason = f"the hub looks unreachable: {unreachable}; this only works if the hub copy is already cached"
    log.warning(offline_message(HUB_DATASET, "ecgbench", reason))
    return True


# ---------------------------------------------------------------- `ecgbench tasks`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="local ECGBench copy (default: $ECGBENCH_DATA, else the hub)")
    parser.add_argument("--print-path", action="store_true", help="print only the include path")


def run(args: argparse.Namespace) -> int:
    root = task_root(args.data)
    if args.print_path:
        print(root)
        return 0
    print(json.dumps({
        "include_path": str(root),
        "tasks": [s.task for s in SUBSETS] + ["ecgbench_arena_gold_history"],
        "groups": {"ecgbench": "all nine", "ecgbench_auto": "the seven scored without a judge"},
        "usage": f"lmms-eval --include_path {root} --tasks ecgbench ...",
    }, indent=2))
    return 0
