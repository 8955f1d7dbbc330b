"""The leaderboard as static, self-contained HTML pages (inline CSS and JS, no network at view time).

Pages: ``index.html`` (overview in paper and strict mode, ranking rules, exclusions),
``subset-<config>.html`` (one per subset, 95% intervals and paired tests against the subset's top
entry), ``entry-<slug>.html`` (one per entry: settings, redacted model_args, judge, versions),
``entry-<slug>-report.html`` (the entry's own HTML report when ``NAME.html`` sits beside
``NAME.json``), and ``leaderboard.json`` (the board's data). Templates are Jinja2 with
autoescaping on: every string on the pages comes from untrusted submission files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from pulse_tasks.scoring import bootstrap
from pulse_tasks.results.leaderboard.board import RANK_MODE
from pulse_tasks.results.report import MISSING, NO_INTERVAL_MARK, UNDEFINED, format_estimate

BOARD_FILE = "leaderboard.json"
INDEX = "index.html"
# Our pages: inline style and script only; nothing is fetched (works from file:// and any static host).
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
# An attached report is the submitter's file: no script at all, nothing fetched (its plots are data: URIs).
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MAX_REPORT_BYTES = 50_000_000  # a report with plots is ~1-5 MB; larger files are not copied
PARTIAL_MARK = "*"  # a subset with fewer items than the published one
NOT_COMPARABLE_MARK = "≠"  # a subset scored on other data, versions or judge than the board's reference
DECIMALS = 1  # the paper prints one decimal


def entry_page(slug: str) -> str:
    return f"entry-{slug}.html"


def report_page(slug: str) -> str:
    return f"entry-{slug}-report.html"


def subset_page(subset: str) -> str:
    return f"subset-{subset}.html"


# ----------------------------------------------------------------------------------------------
# Template helpers (filters)


def num(x: float | None) -> str:
    return UNDEFINED if x is None else f"{x:.{DECIMALS}f}"


def cell_text(est: Mapping[str, Any] | None) -> str:
    """A value without its interval: 'missing', 'undefined' or '82.4'."""
    if est is None:
        return MISSING
    return num(est.get("value"))


def sort_key(est: Mapping[str, Any] | float | None) -> str:
    """data-sort of a numeric cell: the number, or '' (sorted last) when missing or undefined."""
    value = est.get("value") if isinstance(est, Mapping) else est
    return "" if value is None else repr(float(value))


def diff_text(d: Mapping[str, Any] | None) -> str:
    """'-3.1 [-4.0, -2.2], p=0.001 (McNemar exact)'."""
    if not d or d.get("diff") is None:
        return ""
    ci = f" [{d['lo']:+.{DECIMALS}f}, {d['hi']:+.{DECIMALS}f}]" if d.get("lo") is not None else ""
    p = "n/a" if d.get("p_value") is None else f"{d['p_value']:.3g}"
    return f"{d['diff']:+.{DECIMALS}f}{ci}, p={p} ({d['test']})"


def kv_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={kv_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(kv_text(v) for v in value) or "none"
    return "none" if value is None else str(value)


@lru_cache(maxsize=1)
def _env() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - jinja2 is a dependency (lmms-eval and torch need it too)
        raise ImportError("the leaderboard site needs jinja2: pip install 'jinja2>=3.1'") from exc
    env = jinja2.Environment(loader=jinja2.PackageLoader("pulse_tasks.results.leaderboard", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, cell=cell_text, est=format_estimate, sortkey=sort_key, diff=diff_text, kv=kv_text)
    env.globals.update(entry_page=entry_page, subset_page=subset_page, report_page=report_page, INDEX=INDEX,
                       RANK_MODE=RANK_MODE, MODES=bootstrap.MODES, PARTIAL_MARK=PARTIAL_MARK, MISSING=MISSING,
                       NOT_COMPARABLE_MARK=NOT_COMPARABLE_MARK, NO_INTERVAL_MARK=NO_INTERVAL_MARK, CSP=CSP)
    return env


def _asset(name: str) -> Any:
    from markupsafe import Markup  # jinja2's own dependency

    return Markup(resources.files("pulse_tasks.results.leaderboard").joinpath("templates", name).read_text(encoding="utf-8"))


def render_page(template: str, board: Mapping[str, Any], **context: Any) -> str:
    """One page of the site."""
    env = _env()
    return env.get_template(template).render(board=board, css=_asset("site.css"), js=_asset("site.js"),
                                             entries_by_slug={e["slug"]: e for e in board["entries"]}, **context)


# ----------------------------------------------------------------------------------------------
# Writing the site


def attach_report(source: Path, dest: Path) -> bool:
    """Copy the submitter's HTML report with a no-script, no-network policy put in front; False
    when it is missing or too large."""
    if not source.is_file() or source.stat().st_size > MAX_REPORT_BYTES:
        return False
    text = source.read_text(encoding="utf-8", errors="replace")
    # A <meta> before <html> lands in the parsed <head>: the policy holds for the whole document.
    dest.write_text(f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">\n{text}', encoding="utf-8")
    return True


def _previous_files(out: Path) -> list[str]:
    try:
        old = json.loads((out / BOARD_FILE).read_text(encoding="utf-8"))
        return [f for f in old.get("files", []) if isinstance(f, str) and "/" not in f and "\\" not in f]
    except (OSError, ValueError, AttributeError):
        return []


def public_board(board: Mapping[str, Any]) -> dict[str, Any]:
    """The board without the maintainer's local paths ("file"; "source" names the file instead)."""
    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "file"} for r in rows]

    return {**board, "entries": strip(board["entries"]), "excluded": strip(board["excluded"])}


def write_site(board: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write every page and leaderboard.json into ``out_dir``; files of an earlier build that are
    not rewritten (entries gone since) are removed. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = set(_previous_files(out))
    pages: dict[str, str] = {}
    for e in board["entries"]:
        source = Path(e["file"]).with_suffix(".html")
        e["report"] = report_page(e["slug"]) if attach_report(source, out / report_page(e["slug"])) else None
    pages[INDEX] = render_page("index.html.j2", board)
    for name, info in board["subsets"].items():
        pages[subset_page(name)] = render_page("subset.html.j2", board, subset=name, info=info)
    for e in board["entries"]:
        pages[entry_page(e["slug"])] = render_page("entry.html.j2", board, entry=e)
    written = []
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    written += [out / e["report"] for e in board["entries"] if e["report"]]
    board["files"] = sorted({p.name for p in written} | {BOARD_FILE})
    (out / BOARD_FILE).write_text(json.dumps(public_board(board), indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                                  encoding="utf-8")
    written.append(out / BOARD_FILE)
    for name in stale - set(board["files"]):
        (out / name).unlink(missing_ok=True)
    return written
