"""From a model's answer to a scoring or judge record, and from records to corpus metrics.

Imports ``data`` only, never ``results`` or ``glue`` (``tests/test_layering.py``).
"""
