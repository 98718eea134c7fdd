"""The report in headless Chromium: it opens from file://, every section is there, every chart renders with a
size, nothing is fetched from the network and no script fails. Saves test-artifacts/screenshots/report.png."""

import pytest
from report_helpers import demo_folder

from userloop.report import build_report
from userloop.report.html import SECTIONS


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    return build_report(demo_folder(tmp_path_factory.getbasetemp() / "report-demo"))


def test_report_renders_in_chromium(page, report_file, screenshots):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report_file.as_uri())
    page.wait_for_load_state("load")
    assert page.title() == "userloop demo report"
    assert page.locator("section h2").all_inner_texts() == [title for _, title in SECTIONS]
    charts = page.locator("svg.chart")
    assert charts.count() == 12
    for index in range(charts.count()):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150, (index, box)
        bars_or_lines = charts.nth(index).locator("rect, polyline")
        assert bars_or_lines.count() > 0
    assert page.locator(".problem").count() == 0
    assert [url for url in requests if not url.startswith("file://")] == []
    page.screenshot(path=str(screenshots / "report.png"), full_page=True)
    assert (screenshots / "report.png").stat().st_size > 10_000


def test_report_prints_without_javascript(browser, report_file):
    """The page needs no JavaScript: with scripts disabled it is the same page, and it prints."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(report_file.as_uri())
    assert page.locator("svg.chart").count() == 12
    assert len(page.pdf()) > 10_000
    context.close()
