"""Shared pytest fixtures: a small synthetic ECGBench, built once per test session; the page tests'
browser and screenshot folder; the bench/ scripts as modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SYNTH_PER_SUBSET = 4  # items per subset: every rhythm class appears, a session builds it in seconds
SYNTH_IMAGE_SIZE = (320, 240)  # small images keep parquet files and model inputs tiny
SYNTH_SEED = 0
BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script("score_speed")``: that bench/ script loaded as a module (bench/ holds scripts,
    not a package, so tests load them by path)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def synth_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ECGBench in hub layout (`<config>/test-00000-of-00001.parquet`), read-only by convention."""
    from pulse_tasks.data.synth import make_ecgbench

    return make_ecgbench(tmp_path_factory.mktemp("ecgbench-hub"), per_subset=SYNTH_PER_SUBSET, layout="hub",
                         seed=SYNTH_SEED, image_size=SYNTH_IMAGE_SIZE)


@pytest.fixture(scope="session")
def synth_json_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same synthetic ECGBench in JSON layout (`<config>.json` + `images/`), read-only by convention."""
    from pulse_tasks.data.synth import make_ecgbench

    return make_ecgbench(tmp_path_factory.mktemp("ecgbench-json"), per_subset=SYNTH_PER_SUBSET, layout="json",
                         seed=SYNTH_SEED, image_size=SYNTH_IMAGE_SIZE)


# Chromium flags for a closed network: without the background-networking switches Chromium keeps
# trying Google's hosts; --no-sandbox because tests run as root in CI.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# `make screenshots` sets this to docs/ to refresh the README's images; a plain test run writes its
# screenshots under each test's temp folder and leaves the work tree as it was.
SCREENSHOTS_ENV = "ECGBENCH_SCREENSHOTS"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def system_chromium() -> str | None:
    """Debian's Chromium (apt packages chromium + chromium-driver); never a downloaded browser build."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless system Chromium driven by Playwright; skipped where none is installed, an error under CI."""
    path = system_chromium()
    if path is None:
        if os.environ.get("CI") or os.environ.get(SCREENSHOTS_ENV):
            pytest.fail("Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
        pytest.skip("no system Chromium (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium_browser):
    """A fresh page (own context: no shared cookies or storage) at a 1280x900 viewport."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(tmp_path: Path):
    """``screenshot(page, "name.png", **options)``: a PNG of the page in $ECGBENCH_SCREENSHOTS, else
    under the test's temp folder; returns its path (checked to be a non-empty PNG)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, **options) -> Path:
        path = folder / name
        page.screenshot(path=str(path), **options)
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        return path

    return take


# ---------------------------------------------------------------------------- the work tree stays clean
# Tests write under their temp folders only: a run that leaves anything new or changed in the checkout
# (a screenshot in docs/, a results/ folder, an edited file) fails, naming the paths. Caches that any
# Python or pytest run writes are left out.
REPO_ROOT = Path(__file__).resolve().parents[1]
TREE_NOISE = ("__pycache__", ".pytest_cache", ".ruff_cache", ".venv", ".wtsite", ".egg-info")
_tree_before: dict[str, tuple[float, int]] | None = None


def tree_state(root: Path = REPO_ROOT) -> dict[str, tuple[float, int]] | None:
    """{path: (mtime, size)} of what git reports as modified, untracked or ignored under ``root``
    (caches left out); None outside a git work tree or without git."""
    import subprocess

    try:
        proc = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--ignored"], cwd=root, check=False,
                              capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    state = {}
    for entry in proc.stdout.decode(errors="replace").split("\0"):
        path = entry[3:]
        if not path or any(part in path for part in TREE_NOISE):
            continue
        try:
            st = (root / path).stat()
            state[path] = (st.st_mtime, st.st_size)
        except OSError:  # deleted
            state[path] = (-1.0, -1)
    return state


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    global _tree_before
    if not _is_xdist_worker(session.config):
        _tree_before = tree_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_xdist_worker(session.config) or _tree_before is None:
        return
    after = tree_state() or {}
    allowed = Path(os.environ[SCREENSHOTS_ENV]).resolve() if os.environ.get(SCREENSHOTS_ENV) else None
    changed = sorted(p for p, st in after.items() if _tree_before.get(p) != st
                     and not (allowed and (REPO_ROOT / p).resolve().is_relative_to(allowed)))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("the tests changed the work tree (tests write under their temp folders; README "
                   "screenshots come from `make screenshots`): " + ", ".join(changed[:20]))
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", "the work tree changed", red=True)
            reporter.write_line(message, red=True)
        else:
            print(message)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
