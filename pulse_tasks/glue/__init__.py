"""The lmms-eval glue: the task hooks the YAML tasks name and the registry that finds the tasks.

The top floor of the benchmark: it may import ``data``, ``scoring`` and ``results``.
"""
