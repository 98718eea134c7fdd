"""The conversation viewer in headless Chromium: the list, a filter, a text search, one conversation with
its inline events, real vs simulated side by side, and conversation text shown as text (never as HTML)."""

from __future__ import annotations

import json
import threading

import pytest
from test_viewer_index import build_demo_like_folder  # the same demo-like folder as the index tests

from userloop.report.viewer_index import Filters, load_index
from userloop.report.viewer_server import make_server

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b>bold?</b>'


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """The index of a demo-like folder plus a chat file with HTML in it, served on a free port."""
    root = tmp_path_factory.mktemp("viewer-browser")
    demo = build_demo_like_folder(root / "demo")
    hostile = root / "hostile.jsonl"
    hostile.write_text(json.dumps({"id": "hostile-1", "messages": [{"role": "user", "content": HOSTILE},
                                                                    {"role": "assistant", "content": "</div><script>x</script>"}]}) + "\n")
    index = load_index([demo, hostile])
    server = make_server(index, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield index, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def wait_for_count(page, total: int) -> None:
    page.wait_for_function("text => document.getElementById('count').textContent === text", arg=f"{total:,} conversations")


def test_list_filter_search_conversation_and_side_by_side(viewer, page, screenshots):
    index, url = viewer
    page.goto(url)
    wait_for_count(page, len(index.entries))
    assert page.locator("tr.row").count() == 50
    assert "unreadable records" in page.locator("#overview-text").inner_text()
    page.screenshot(path=str(screenshots / "viewer-list.png"))

    # a filter narrows the list
    failed = index.search(Filters(outcome="failed"))["total"]
    page.select_option("#filter-outcome", "failed")
    wait_for_count(page, failed)
    outcomes = page.locator("tr.row td:nth-child(3)").all_inner_texts()
    assert len(outcomes) == min(failed, 50) and set(outcomes) == {"failed"}

    # a text search narrows it further
    page.click("#clear")
    wait_for_count(page, len(index.entries))
    page.fill("#search", "pencils")
    pencils = index.search(Filters(query="pencils"))["total"]
    assert 0 < pencils < len(index.entries)
    wait_for_count(page, pencils)

    # a simulated conversation opens with its turns and its guardrail events in place
    page.click("#clear")
    page.select_option("#filter-source", "simulated: sims/open")
    wait_for_count(page, index.search(Filters(source="simulated: sims/open"))["total"])
    page.locator("tr.row").first.click()
    page.wait_for_selector("#conversation .message")
    key = page.locator("#conversation").get_attribute("data-key")
    conversation = index.conversation(key)
    assert page.locator("#conversation .message").count() == len(conversation["messages"])
    events = page.locator("#conversation .event.guardrail").all_inner_texts()
    assert any("resample" in e for e in events) and any("fallback" in e for e in events)
    assert "user ended (<|endconversation|>)" in page.locator("#conversation .event.end").last.inner_text()
    # the resample events stand just before the user turn they were drawn for
    order = page.locator("#conversation > .message, #conversation > .event").evaluate_all(
        "nodes => nodes.map(n => n.classList.contains('message') ? n.querySelector('.content').textContent : 'event')")
    assert order[order.index("ok") - 1] == "event"
    page.screenshot(path=str(screenshots / "viewer-conversation.png"))

    # real and simulated conversations of the same intent side by side
    page.click("#side-by-side-button")
    page.wait_for_selector("#side-simulated .card")
    pair = index.side_by_side(key)
    assert page.locator("#side-real .card").count() == len(pair["real"]["conversations"]) >= 1
    assert page.locator("#side-simulated .card").count() == len(pair["simulated"]["conversations"]) >= 1
    assert page.locator("#side-simulated .card.current").get_attribute("data-key") == key
    page.screenshot(path=str(screenshots / "viewer-side-by-side.png"), full_page=True)
    page.click("#back")
    page.wait_for_selector("#conversation .message")


def test_conversation_text_is_shown_as_text(viewer, page):
    _, url = viewer
    page.goto(url)
    page.fill("#search", "pwned")
    wait_for_count(page, 1)
    page.locator("tr.row").first.click()
    page.wait_for_selector("#conversation .message")
    contents = page.locator("#conversation .content").all_inner_texts()
    assert contents == [HOSTILE, "</div><script>x</script>"]
    assert page.locator("#conversation img, #conversation b, #conversation script").count() == 0
    assert page.title() == "userloop viewer"
