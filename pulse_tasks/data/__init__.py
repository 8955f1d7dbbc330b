"""The benchmark's data: the nine subsets, where their items come from, synthetic stand-ins.

Imports nothing from ``scoring``, ``results`` or ``glue`` (``tests/test_layering.py``).
"""
