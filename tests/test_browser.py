"""The page tests' browser: Debian's Chromium under Playwright renders a local page and runs its script."""

from __future__ import annotations


def test_system_chromium_renders_a_local_page(browser_page, tmp_path):
    page_file = tmp_path / "page.html"
    page_file.write_text("<html><body><p id=out>static</p>"
                         "<script>document.getElementById('out').textContent = 'scripted'</script></body></html>")
    browser_page.goto(page_file.as_uri())
    assert browser_page.text_content("#out") == "scripted"
