"""Tool calls shown inline in the conversation viewer (headless Chromium): each call and its result before the
assistant's reply, a failed call marked, and the task's score."""

from __future__ import annotations

import threading

import pytest
from test_viewer_tools import build_tool_run

from userloop.report.viewer_index import load_index
from userloop.report.viewer_server import make_server


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    index = load_index([build_tool_run(tmp_path_factory.mktemp("viewer-tools"))])
    server = make_server(index, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield index, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_tool_calls_appear_inline_before_the_reply(viewer, page, screenshots):
    _, url = viewer
    page.goto(url)
    page.wait_for_selector("tr.row")
    page.locator("tr.row").first.click()
    page.wait_for_selector("#conversation .message")
    order = page.locator("#conversation > .message, #conversation > .tool").evaluate_all(
        "nodes => nodes.map(n => n.classList.contains('tool') ? 'tool' : n.classList[1])")
    assert order == ["user", "tool", "tool", "tool", "assistant"]
    tools = page.locator("#conversation > .tool").all_inner_texts()
    assert tools[0].startswith('tool call get_order {"order_id":"#W7947"}') and '"status": "pending"' in tools[0]
    assert page.locator("#conversation > .tool.failed").count() == 1 and "unknown tool 'refund'" in tools[2]
    assert page.locator("#conversation .event.guardrail").count() == 0  # tool events are not guardrail lines
    assert "task: solved" in page.locator("#conversation .event.score").last.inner_text()
    page.screenshot(path=str(screenshots / "viewer-tool-calls.png"))
