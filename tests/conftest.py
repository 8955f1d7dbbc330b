"""Shared pytest fixtures: a small synthetic ECGBench, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_PER_SUBSET = 4  # items per subset: every rhythm class appears, a session builds it in seconds
SYNTH_IMAGE_SIZE = (320, 240)  # small images keep parquet files and model inputs tiny
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synth_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic ECGBench in hub layout (`<config>/test-00000-of-00001.parquet`), read-only by convention."""
    from pulse_tasks.synth import make_ecgbench

    return make_ecgbench(tmp_path_factory.mktemp("ecgbench-hub"), per_subset=SYNTH_PER_SUBSET, layout="hub",
                         seed=SYNTH_SEED, image_size=SYNTH_IMAGE_SIZE)


@pytest.fixture(scope="session")
def synth_json_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same synthetic ECGBench in JSON layout (`<config>.json` + `images/`), read-only by convention."""
    from pulse_tasks.synth import make_ecgbench

    return make_ecgbench(tmp_path_factory.mktemp("ecgbench-json"), per_subset=SYNTH_PER_SUBSET, layout="json",
                         seed=SYNTH_SEED, image_size=SYNTH_IMAGE_SIZE)


# Chromium flags for a closed network: without the background-networking switches Chromium keeps
# trying Google's hosts; --no-sandbox because tests run as root in CI.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def system_chromium() -> str | None:
    """Debian's Chromium (apt packages chromium + chromium-driver); never a downloaded browser build."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless system Chromium driven by Playwright; skipped where none is installed, an error under CI."""
    import os

    path = system_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium and chromium-driver through apt")
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
