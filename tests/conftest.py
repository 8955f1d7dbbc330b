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
