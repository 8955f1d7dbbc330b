"""The floors import one way: ``pulse_tasks`` (the benchmark) never reaches the model side, the
training recipe or the app above it, not even lazily or by an importlib string; inside it, the
sub-packages follow the data's path (data -> scoring -> results -> glue) and import only the ones
before them.

The `ecgbench` dispatcher that launches commands of every floor is ``pulse_app.cli`` (the top).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pulse_app import cli

ROOT = Path(__file__).resolve().parents[1]
# Installed names of the floors above pulse_tasks; `training` is the repository's name of pulse_training.
UPPER = ("pulse_app", "pulse_models", "pulse_training", "training")
# A string that names a module (or an entry point, module:attr) of an upper floor: what importlib,
# __import__ or a table of module names would be handed. Prose that mentions one is not matched.
MODULE_STRING = re.compile(rf"(?:{'|'.join(UPPER)})(?:\.\w+)*(?::\w+)?")


# pulse_tasks' sub-packages along the data's path: each imports only those before it (the glue, what
# lmms-eval calls, may import every one).
LAYERS = ("data", "scoring", "results", "glue")


def upper_floor_uses(source: str, package: str) -> list[tuple[int, str]]:
    """(line, what) for each import of an upper floor in ``source``, a module of ``package``
    (dotted, for relative imports): import statements anywhere (functions included), relative
    imports that climb out of the top package, and module-name strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in UPPER]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level > len(parts):  # `from ... import x` above the top package
                    found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module and node.module.split(".")[0] in UPPER:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.fullmatch(node.value):
            found.append((node.lineno, repr(node.value)))
    return found


def test_pulse_tasks_imports_no_upper_floor():
    offenders = []
    for path in sorted((ROOT / "pulse_tasks").rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}"
                      for line, what in upper_floor_uses(path.read_text(encoding="utf-8"), package)]
    assert not offenders, "pulse_tasks reaches a floor above it:\n" + "\n".join(offenders)


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for each import in ``source`` (functions included), a module of
    ``package``; ``from pulse_tasks import x`` counts as ``pulse_tasks.x`` and relative imports
    are resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if base in ("pulse_tasks", *(f"pulse_tasks.{x}" for x in LAYERS))
                       else base) for a in node.names]
    return found


def later_layer_uses(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) for each import in ``source`` (a module of ``package``, under a layer of
    LAYERS) of a pulse_tasks sub-package later on the data's path than its own."""
    own = LAYERS.index(package.split(".")[1])
    return [(line, module) for line, module in imported_modules(source, package)
            if module.split(".")[0] == "pulse_tasks" and len(module.split(".")) > 1
            and module.split(".")[1] in LAYERS and LAYERS.index(module.split(".")[1]) > own]


def test_pulse_tasks_is_laid_out_in_layers():
    top = sorted(p.name for p in (ROOT / "pulse_tasks").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert top == ["__init__.py", *sorted(LAYERS)], "every module of pulse_tasks belongs to one layer"
    offenders = []
    for path in sorted((ROOT / "pulse_tasks").rglob("*.py")):
        if path.parent == ROOT / "pulse_tasks":
            continue
        package = ".".join(path.relative_to(ROOT).parent.parts)
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}"
                      for line, what in later_layer_uses(path.read_text(encoding="utf-8"), package)]
    assert not offenders, "a layer of pulse_tasks imports one later on the data's path:\n" + "\n".join(offenders)


@pytest.mark.parametrize(("source", "package"), [
    ("from pulse_tasks.results.runs import load_runs", "pulse_tasks.scoring"),
    ("def f():\n    from pulse_tasks.glue import hooks\n", "pulse_tasks.results"),
    ("import pulse_tasks.scoring.metrics", "pulse_tasks.data"),
    ("from pulse_tasks import results", "pulse_tasks.scoring.judge"),
    ("from ...results import summary", "pulse_tasks.scoring.judge"),
    ("from ..glue.hooks import metric_names", "pulse_tasks.results"),
])
def test_the_layer_scan_finds_each_way_up(source, package):
    assert later_layer_uses(source, package), source


@pytest.mark.parametrize(("source", "package"), [
    ("from pulse_tasks.data.subsets import SUBSETS\nfrom pulse_tasks.scoring import metrics", "pulse_tasks.results"),
    ("from ..records import JUDGE_OK\nfrom . import cache", "pulse_tasks.scoring.judge"),
    ("from pulse_tasks.results import runs\nimport numpy", "pulse_tasks.glue"),
    ('"""Read back by pulse_tasks.results.runs."""', "pulse_tasks.scoring"),
])
def test_the_layer_scan_passes_imports_down_the_path(source, package):
    assert later_layer_uses(source, package) == []


@pytest.mark.parametrize("source", [
    "import pulse_models",
    "import pulse_app.studio as studio",
    "def f():\n    from pulse_models.ask import load\n",
    "from training import recipe",
    "from pulse_training.recipe import main",
    "import importlib\nimportlib.import_module('pulse_models.ask')",
    "__import__('pulse_app')",
    "TABLE = {'ask': ('pulse_models.ask', 'ask a model')}",
    "TARGET = 'pulse_app.cli:main'",
    "from .... import pulse_models",
])
def test_the_scan_finds_each_way_in(source):
    assert upper_floor_uses(source, "pulse_tasks.scoring.judge"), source


@pytest.mark.parametrize("source", [
    "from pulse_tasks.results import runs\nfrom . import metrics\nfrom .. import records",
    '"""Our entry point, `pulse_models.registry.register`, is imported by lmms-eval."""',
    "MODE = 'training data'\nimport trainer_utils",
])
def test_the_scan_passes_the_benchmarks_own_imports_and_prose(source):
    assert upper_floor_uses(source, "pulse_tasks.scoring.judge") == []


def test_console_script_is_the_top_floor_dispatcher():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["ecgbench"] == "pulse_app.cli:main"
    assert "pulse_app" in project["tool"]["setuptools"]["packages"]
    # Every command's module belongs to a floor the dispatcher may import.
    floors = {module.split(".")[0] for module, _ in cli.SUBCOMMANDS.values()}
    assert floors == {"pulse_tasks", "pulse_models", "pulse_app"}
