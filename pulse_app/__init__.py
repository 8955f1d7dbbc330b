"""The orchestration layer: the `ecgbench` dispatcher (``cli``), `ecgbench demo` and ECGBench Studio.

They import (or launch) the benchmark side (``pulse_tasks``: data, results, scoring records,
reports) and the model side (``pulse_models``: loader, generation); neither of those packages
imports this one.
"""
