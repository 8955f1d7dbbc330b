"""The orchestration layer: `ecgbench demo` and ECGBench Studio.

Both import the benchmark side (``pulse_tasks``: data, results, scoring records, reports) and the
model side (``pulse_models``: loader, generation); neither of those packages imports this one.
"""
