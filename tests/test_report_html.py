"""The HTML report: a self-contained page with every section and embedded PNG plots.

Debian chromium is not installed here, so the page is checked structurally with html.parser:
section ids and headings, embedded images that decode as PNG, no external resources.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest

from pulse_app import cli
from pulse_tasks.results import html_report, report, runs

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = {"images": [], "headings": 0, "tables": 0}
        elif self.current and tag == "img":
            self.sections[self.current]["images"].append(a.get("src", ""))
        elif self.current and tag == "h2":
            self.sections[self.current]["headings"] += 1
        elif self.current and tag == "table":
            self.sections[self.current]["tables"] += 1
        for key in ("src", "href"):
            value = a.get(key) or ""
            if value and not value.startswith("data:"):
                self.external.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> _Page:
    root = tmp_path_factory.mktemp("html")
    recs, resps = runs.synthetic_run(seed=4, scale=0.02)
    del recs["mmmu-ecg"]
    runs.write_run(root, "synthetic-model", recs, resps, synthetic=True, data_source="synthetic:sha256:1")
    out = root / "report"
    assert cli.main(["report", str(root), "--format", "html", "--out", str(out), "--resamples", "50"]) == 0
    parser = _Page()
    parser.feed((out / f"{report.OUT_NAME}.html").read_text(encoding="utf-8"))
    return parser


def test_every_section_is_present_with_a_heading(page: _Page) -> None:
    assert list(page.sections) == list(html_report.SECTION_IDS)
    assert all(s["headings"] == 1 for s in page.sections.values())
    assert page.sections["scores"]["tables"] == 1 and page.sections["counts"]["tables"] == 1


def test_plots_are_embedded_png_images(page: _Page) -> None:
    expected = {"score-plots": 1, "per-class-f1": 3, "judge": 2}  # ptb/code15/cpsc; report and arena
    for section, n in expected.items():
        images = page.sections[section]["images"]
        assert len(images) == n, section
        for src in images:
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert page.external == []  # self-contained: nothing fetched from elsewhere


def test_page_labels_synthetic_data_and_missing_subsets(page: _Page) -> None:
    text = " ".join(page.text)
    assert report.SYNTHETIC_LABEL in text
    assert report.MISSING in text  # mmmu-ecg was left out of the run
    assert "PULSE-7B (published)" in text


def test_best_published_baseline_respects_direction() -> None:
    rows = report.published()["rows"]
    hl = next(c for c in report.COLUMNS if c.key == "cpsc-test/hamming_loss")
    f1 = next(c for c in report.COLUMNS if c.key == "cpsc-test/f1")
    assert html_report.best_published_baseline(rows, hl) == ("GPT-4o", 18.2)
    assert html_report.best_published_baseline(rows, f1) == ("LLaVA-1.6-Vicuna-7B", 19.7)
