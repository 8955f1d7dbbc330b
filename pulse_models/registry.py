"""The `lmms_eval.models` entry point: our models, and our task folder.

lmms-eval calls `register()` when it imports its model registry, which the CLI does before it
builds its TaskManager. Keep this module import-light (no torch): if an entry point raises,
lmms-eval silently skips the ones after it.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ecgbench")

# model_id -> class path (simple interface: they take the image from doc_to_visual).
MODELS = {
    "pulse": "pulse_models.adapter.Pulse",
    "random_guess": "pulse_models.random_guess.RandomGuess",
}


def manifests() -> list:
    """ModelManifests for lmms-eval's registry."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=path) for name, path in MODELS.items()]


def register() -> list:
    """Entry point: register the task folder hook, return the model manifests."""
    try:
        from pulse_tasks.glue.registry import install_task_hook

        install_task_hook()
    except Exception as exc:  # never take lmms-eval's other plugins down with us
        log.warning("ECGBench tasks not auto-registered (%s); use --include_path \"$(ecgbench tasks --print-path)\"", exc)
    return manifests()
