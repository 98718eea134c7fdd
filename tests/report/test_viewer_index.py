"""The conversation viewer without a browser: the index of every kind of source, filters, search, facets,
side by side, what cannot be read, the JSON API over HTTP, and `userloop view`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.data.prepare import PrepareConfig, prepare
from userloop.errors import UserError
from userloop.report.viewer_index import PAGE_SIZE, Filters, load_index
from userloop.report.viewer_server import BadRequest, make_server, parse_list_request
from userloop.simulate.assistant_eval import evaluate_assistant
from userloop.simulate.runs import SimulationConfig, simulate
from userloop.simulate.scenarios import build_scenario_file
from userloop.testbed import generate, read_truth

# The simulated user opens, answers the assistant's first reply with "ok" (too short: the guardrails
# resample it, then fall back to it) and ends on the second reply; of the math problems the assistant
# solves the apples one (in both settings) and never the pencils one.
USER_SCRIPT = {"You are a user": "Please help me with this task today", "answer for you": "ok",
               "apples": "Tom has some apples and buys more of them",
               "Anything else": "<|endconversation|>", "*": "Please count the items for me"}
ASSISTANT_SCRIPT = {"Please help me": "Here is an answer for you.", "apples": "The answer is 7.",
                    "*": "Anything else I can do?"}
MATH = [{"id": "m1", "kind": "math", "intent": "(math-1) You want the total: Tom has 3 apples and buys 4 more.",
         "shards": ["Tom has 3 apples.", "He buys 4 more."], "full_prompt": "Tom has 3 apples and buys 4 more: how many?",
         "answer": "7"},
        {"id": "m2", "kind": "math", "intent": "(math-2) You want the number of pencils: 6 boxes of 2.",
         "shards": ["There are 6 boxes.", "Each has 2 pencils."], "full_prompt": "6 boxes of 2 pencils: how many?",
         "answer": "12"}]


def build_demo_like_folder(root: Path) -> Path:
    """A testbed (40 users), its prepared splits, an open-intent simulation and an evaluate-assistant run,
    with a demo manifest listing them (what `userloop demo` writes, on scripted models).

    Built in a thread of its own: the simulations start their own event loop, which cannot run in a thread
    where Playwright's (the browser fixture's) already runs."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_build_demo_like_folder, root).result()


def _build_demo_like_folder(root: Path) -> Path:
    generate(40, seed=3).write(root / "testbed")
    prepare([str(root / "testbed")], root / "prepared", PrepareConfig(workers=1))
    build_scenario_file(root / "open.jsonl", root / "prepared", split="train", limit=6)
    (root / "user.json").write_text(json.dumps(USER_SCRIPT))
    (root / "assistant.json").write_text(json.dumps(ASSISTANT_SCRIPT))
    user, assistant = f"scripted:{root / 'user.json'}", f"scripted:{root / 'assistant.json'}"
    simulate(SimulationConfig(user=user, assistant=assistant, scenarios=str(root / "open.jsonl"), n=2), root / "sims" / "open")
    (root / "math.jsonl").write_text("".join(json.dumps(row) + "\n" for row in MATH))
    evaluate_assistant(assistant, user, root / "math.jsonl", root / "sims" / "math", max_user_turns=2)
    manifest = {"version": 1, "paths": {"raw": "testbed", "prepared": "prepared", "simulations": {"open": "sims/open"},
                                        "evaluate_assistant": "sims/math"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return build_demo_like_folder(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def index(demo):
    return load_index([demo])


def by_source(index) -> dict[str, int]:
    return {s["label"]: s["conversations"] for s in index.overview()["sources"]}


def test_a_demo_folder_gives_its_prepared_splits_and_every_simulation_run(demo, index):
    counts = by_source(index)
    assert set(counts) == {"real: prepared (train)", "real: prepared (validation)", "real: prepared (test)",
                           "simulated: sims/open", "simulated: sims/math/multi_turn", "simulated: sims/math/single_turn"}
    assert counts["simulated: sims/open"] == 12 and counts["simulated: sims/math/single_turn"] == 2
    prepared = json.loads((demo / "prepared" / "report.json").read_text())
    assert sum(v for k, v in counts.items() if k.startswith("real")) == sum(
        s["conversations"] for s in prepared["splits"].values())
    overview = index.overview()
    assert overview["unreadable"] == 0 and overview["conversations"] == len(index.entries)


def test_testbed_conversations_carry_the_truth_and_simulated_ones_their_record(demo, index):
    _, truth = read_truth(demo / "testbed")
    real = [e for e in index.entries if e.origin == "real"]
    for entry in real:
        known = truth[entry.conversation_id]
        assert entry.intent == known["intent"]
        assert entry.outcome == {True: "solved", False: "failed", None: "unscored"}[known["solved"]]
    assert {e.ended for e in real} <= {"user satisfied", "user tolerated", "user gave up", "turn limit"}

    opened = [e for e in index.entries if e.source == "simulated: sims/open"]
    assert {(e.kind, e.outcome, e.ended) for e in opened} == {("open", "unscored", "user ended (<|endconversation|>)")}
    conversation = index.conversation(opened[0].key)
    ok_turn = next(m for m in conversation["messages"] if m["content"] == "ok")
    assert [e["action"] for e in ok_turn["events"]][-1] == "fallback" and "resample" in {e["action"] for e in ok_turn["events"]}
    assert all("classification" in m for m in conversation["messages"] if m["role"] == "assistant")
    # the open scenario was built from a real (train) conversation: the viewer knows which
    assert opened[0].source_conversation == opened[0].scenario
    assert any(e.conversation_id == opened[0].source_conversation for e in real)

    math = {(e.source, e.scenario): e for e in index.entries if e.kind == "math"}
    assert math[("simulated: sims/math/single_turn", "m1")].outcome == "solved"
    assert math[("simulated: sims/math/single_turn", "m2")].outcome == "failed"
    assert math[("simulated: sims/math/multi_turn", "m2")].outcome == "failed"
    scored = index.conversation(math[("simulated: sims/math/single_turn", "m1")].key)["messages"][-1]
    assert scored["score"]["passed"] is True


def test_filters_search_facets_and_paging(index):
    everything = index.search(Filters())
    assert everything["total"] == len(index.entries) and len(everything["items"]) == PAGE_SIZE
    assert everything["pages"] == -(-len(index.entries) // PAGE_SIZE)
    last = index.search(Filters(), page=everything["pages"])
    assert len(last["items"]) == len(index.entries) - PAGE_SIZE * (everything["pages"] - 1)
    with pytest.raises(UserError, match="page must be in 1.."):
        index.search(Filters(), page=everything["pages"] + 1)

    solved = index.search(Filters(outcome="solved"))
    assert 0 < solved["total"] < everything["total"] and all(i["outcome"] == "solved" for i in solved["items"])
    # a facet is counted over what every *other* filter keeps: the outcome dropdown still lists all outcomes
    assert dict(map(tuple, solved["facets"]["outcome"]["values"])) == dict(map(tuple, everything["facets"]["outcome"]["values"]))
    assert sum(c for _, c in solved["facets"]["source"]["values"]) == solved["total"]

    narrowed = index.search(Filters(kind="math", source="simulated: sims/math/multi_turn", outcome="failed"))
    assert [i["scenario"] for i in narrowed["items"]] == ["m2"]

    user = index.entries[0].user
    assert {i["user"] for i in index.search(Filters(user=user))["items"]} == {user}
    assert index.search(Filters(scenario=""))["total"] == sum(1 for e in index.entries if e.origin == "real")

    word = next(e for e in index.entries if e.origin == "real").messages[0]["content"].split()[-1]
    found = index.search(Filters(query=word.upper()))
    assert 0 < found["total"] < everything["total"]
    assert index.search(Filters(query=f"{word} zzzznotthere"))["total"] == 0


def test_side_by_side_shows_real_and_simulated_conversations_of_one_intent(index):
    simulated = next(e for e in index.entries if e.source == "simulated: sims/open")
    view = index.side_by_side(simulated.key)
    assert view["intent"] == simulated.intent
    assert view["simulated"]["conversations"][0]["key"] == simulated.key  # the open one first
    same_scenario = {e.key for e in index.entries if e.scenario == simulated.scenario}
    assert len(same_scenario) == 2 and same_scenario <= {c["key"] for c in view["simulated"]["conversations"]}
    assert view["real"]["total"] >= 1
    assert simulated.source_conversation in {c["conversation_id"] for c in view["real"]["conversations"]}
    real = index.by_key[view["real"]["conversations"][0]["key"]]
    back = index.side_by_side(real.key)
    assert simulated.key in {c["key"] for c in back["simulated"]["conversations"]}
    with pytest.raises(KeyError):
        index.side_by_side("999999")


def test_unreadable_records_are_counted_and_shown_never_dropped(demo, tmp_path):
    raw = tmp_path / "raw.jsonl"
    good = (demo / "testbed" / "conversations.jsonl").read_text().splitlines()[:3]
    raw.write_text("\n".join([good[0], "{not json", good[1], '{"unknown": 1}', good[2]]) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text((demo / "sims" / "open" / "run.json").read_text())
    records = (demo / "sims" / "open" / "conversations.jsonl").read_text().splitlines()
    broken = json.loads(records[1])
    del broken["messages"]
    (run / "conversations.jsonl").write_text("\n".join([records[0], json.dumps(broken), records[2]]) + "\n" + records[3][:40])

    index = load_index([raw, run])
    sources = {s["label"]: s for s in index.overview()["sources"]}
    assert sources["real: raw.jsonl"]["conversations"] == 3 and sources["real: raw.jsonl"]["unreadable"] == 2
    assert "2 unreadable lines" in sources["real: raw.jsonl"]["notes"][0]
    assert sources["simulated: run"]["conversations"] == 2 and sources["simulated: run"]["unreadable"] == 2
    assert any("torn last line" in note for note in sources["simulated: run"]["notes"])
    assert any("record without 'messages'" in note for note in sources["simulated: run"]["notes"])
    assert index.overview()["unreadable"] == 4

    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "run.json").write_text((demo / "sims" / "open" / "run.json").read_text())
    (edited / "conversations.jsonl").write_text(records[0] + "\nnot a record\n")
    index = load_index([edited, raw])
    [source] = [s for s in index.overview()["sources"] if s["label"] == "simulated: edited"]
    assert source["conversations"] == 0 and source["unreadable"] == 2 and "not a conversation record" in source["notes"][0]


def test_paths_that_hold_no_conversations_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_index([tmp_path / "missing"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="no supported files"):
        load_index([tmp_path / "notes"])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no conversations"):
        load_index([tmp_path / "empty.jsonl"])
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "manifest.json").write_text('{"version": 99}')
    with pytest.raises(UserError, match="manifest version"):
        load_index([tmp_path / "demo"])


def test_real_logs_from_shared_data(shared_data):
    index = load_index([shared_data / "oasst" / "en_100_tree.jsonl", shared_data / "wildchat" / "sample.jsonl"])
    counts = by_source(index)
    assert counts["real: en_100_tree.jsonl"] >= 100 and counts["real: sample.jsonl"] == 30
    assert {e.outcome for e in index.entries} == {"unscored"}
    assert {e.ended for e in index.entries} <= {"last turn: user", "last turn: assistant"}
    assert index.search(Filters(ended="last turn: assistant"))["total"] > 0
    oasst = next(e for e in index.entries if e.source == "real: en_100_tree.jsonl")
    assert index.search(Filters(query=oasst.messages[0]["content"][:30]))["total"] >= 1


# ---------------------------------------------------------------------- HTTP API
def get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


@pytest.fixture(scope="module")
def server(index):
    server = make_server(index, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_json_api(server, index):
    status, _, overview = get(f"{server}/api/overview")
    assert status == 200 and overview["conversations"] == len(index.entries)
    status, _, page = get(f"{server}/api/conversations?outcome=failed&kind=math&page=1")
    assert status == 200 and page["total"] == 2 and {i["scenario"] for i in page["items"]} == {"m2"}
    key = page["items"][0]["key"]
    status, _, conversation = get(f"{server}/api/conversations/{key}")
    assert status == 200 and conversation["messages"][0]["role"] == "user"
    status, _, pair = get(f"{server}/api/conversations/{key}/side-by-side")
    assert status == 200 and pair["simulated"]["total"] >= 1
    assert get(f"{server}/api/conversations?scenario=%28none%29")[2]["total"] == overview["real"]
    for bad, reason in (("colour=red", "unknown parameter 'colour'"), ("page=0", "page must be"),
                        ("page=x", "page must be"), ("kind=a&kind=b", "more than once"), ("page=999", "page must be in")):
        status, _, body = get(f"{server}/api/conversations?{bad}")
        assert status == 400 and reason in body["error"], (bad, body)
    assert get(f"{server}/api/conversations/999999")[0] == 404
    assert get(f"{server}/nothing-here")[0] == 404


def test_the_page_is_served_with_no_outside_resources(server):
    with urllib.request.urlopen(f"{server}/", timeout=10) as response:
        html = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert response.status == 200 and "<title>userloop viewer</title>" in html
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http://" not in html and "https://" not in html and ".innerHTML" not in html and "insertAdjacentHTML" not in html


def test_parse_list_request():
    filters, page = parse_list_request("source=real%3A+x&q=hello+world&page=3&ended=")
    assert (filters.source, filters.query, filters.ended, page) == ("real: x", "hello world", None, 3)
    with pytest.raises(BadRequest):
        parse_list_request("sort=asc")


def test_a_port_in_use_is_one_line(index, server):
    port = int(server.rsplit(":", 1)[1])
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}.*choose another --port"):
        make_server(index, port)
    with pytest.raises(UserError, match="--port must be in 0..65535"):
        make_server(index, 70000)


# ---------------------------------------------------------------------- CLI
def test_view_command_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["view", str(tmp_path / "missing"), "--no-open"])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {tmp_path / 'missing'}: no such file or folder"
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--port", "-1", "--no-open"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --port must be in 0..65535, got -1"


def test_view_command_serves_until_ctrl_c(demo):
    process = subprocess.Popen([sys.executable, "-m", "userloop.cli", "view", str(demo / "sims"), "--port", "0", "--no-open"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, process.stderr.read() if process.poll() is not None else "")
        url = line[line.index("http://"):].split()[0].rstrip(";")
        assert "16 conversations" in line
        status, _, overview = get(f"{url}api/overview")
        assert status == 200 and overview["simulated"] == 16
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()      # never leave a server behind
            raise
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
