"""From scored runs to what users read: runs, the subset summary, reports, comparisons,
submissions and the leaderboard.

Imports ``data`` and ``scoring``, never ``glue`` (``tests/test_layering.py``).
"""
