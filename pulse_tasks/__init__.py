"""ECGBench, the benchmark: laid out along the data's path, each floor importing only the ones before it.

* ``data``: the subsets (``subsets``), where their items come from (``sources``: the hub, a local
  copy, normalized parquet) and synthetic stand-ins (``synth``); `ecgbench data` (``cli``).
* ``scoring``: one answer to one record -- parsing in paper and strict mode (``parsing``,
  ``strict``, ``statements``, ``negation``), the typed records (``records``), corpus metrics
  (``metrics``, ``bootstrap``), generation failures (``failures``), the LLM judge (``judge``),
  saved predictions files (``predictions``) and `ecgbench score` (``rescore``).
* ``results``: runs to what users read -- lmms-eval output folders (``runs``), the one subset
  summary (``summary``), the report (``report``, ``html_report``, ``report_cli``), paired
  comparisons (``compare``), submissions (``submission``), the leaderboard (``leaderboard``).
* ``glue``: what lmms-eval calls -- the task hooks (``hooks``) and the task registry (``registry``).

``tests/test_layering.py`` keeps the floors in that order (and this package below the model
side and the app).
"""
