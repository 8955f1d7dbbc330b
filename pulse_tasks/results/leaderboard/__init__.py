"""The ECGBench leaderboard: a static site built from validated submissions.

``board`` turns a folder of ``ecgbench submit`` files into plain data (validated entries,
exclusions with reasons, comparability, ranks and ties from paired tests); ``site`` renders that
data as self-contained HTML pages; ``cli`` is `ecgbench leaderboard build | check`.
"""
