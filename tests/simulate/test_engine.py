"""The lock-step engine with scripted models on both sides, and one run between two tiny hf models."""

import asyncio
import json

import pytest

from userloop.simulate.engine import derive_seed
from userloop.simulate.runs import SimulationConfig, read_records, simulate


def _by_key(out):
    records, _ = read_records(out / "conversations.jsonl")
    return {(r["scenario_id"], r["sample"]): r for r in records}


def _texts(record):
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_each_end_reason_and_inline_events(scripted, tmp_path):
    rows = scripted["rows"]
    config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"], n=2)
    result = simulate(config, tmp_path / "run")
    records = _by_key(tmp_path / "run")
    assert sorted(records) == sorted((s["id"], k) for s in rows for k in range(2))

    solved = records["m1", 0]
    assert (solved["end_reason"], solved["solved"], solved["user_turns"]) == ("solved", True, 2)
    assert [m["classification"] for m in solved["messages"] if m["role"] == "assistant"] == ["clarification", "answer_attempt"]
    assert solved["messages"][-1]["score"]["passed"] is True
    assert solved["messages"][0]["tokens"]["completion"] > 0 and solved["tokens"]["assistant"]["prompt"] > 0
    assert solved["intent"] == rows[0]["intent"] and solved["kind"] == "math" and solved["setting"] == "multi_turn"

    capped = records["m2", 1]  # the scenario's own cap (2) is below the run's (6)
    assert (capped["end_reason"], capped["solved"], capped["user_turns"]) == ("max_turns", False, 2)
    assert capped["messages"][-1]["score"]["passed"] is False

    ended = records["o1", 0]  # the user's <|endconversation|> alone is no message
    assert (ended["end_reason"], ended["solved"], ended["user_turns"]) == ("user_ended", None, 2)
    assert _texts(ended)[-1] == ("assistant", "Title: Sea. Waves roll.")

    failed = records["o2", 0]  # the assistant script has no reply for it: that conversation ends, the run goes on
    assert failed["end_reason"] == "error" and "no key matches" in failed["error"]
    assert [m["role"] for m in failed["messages"]] == ["user"]

    overall = result.summary["overall"]
    assert overall["end_reasons"] == {"user_ended": 2, "max_turns": 2, "solved": 2, "error": 2}
    assert overall["solved"]["solved"] == 2 and overall["solved"]["scored"] == 4
    assert result.summary["timings"]["conversations"] == 8


def test_single_turn_setting_sends_the_full_prompt(scripted, tmp_path):
    config = SimulationConfig(assistant=scripted["assistant"], user=None, scenarios=scripted["scenarios"])
    simulate(config, tmp_path / "run")
    records = _by_key(tmp_path / "run")
    assert _texts(records["m1", 0]) == [("user", scripted["rows"][0]["full_prompt"]),
                                        ("assistant", "That makes 3 + 4 = 7. The answer is 7.")]
    assert records["m1", 0]["end_reason"] == "solved" and records["m2", 0]["end_reason"] == "solved"
    assert records["o1", 0]["end_reason"] == "max_turns" and records["o1", 0]["solved"] is None
    assert all(r["user"] is None and r["setting"] == "single_turn" for r in records.values())


def test_concurrency_does_not_change_conversations(scripted, tmp_path):
    runs = {}
    for concurrency in (1, 3, 256):
        config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"],
                                  n=3, concurrency=concurrency)
        simulate(config, tmp_path / str(concurrency))
        runs[concurrency] = {key: (_texts(r), r["end_reason"], r["seed"]) for key, r in _by_key(tmp_path / str(concurrency)).items()}
    assert runs[1] == runs[3] == runs[256]
    assert runs[1]["m1", 2][2] == derive_seed(0, "m1", 2) != derive_seed(0, "m1", 1)


def test_code_scenario_scored_in_the_sandbox(tmp_path):
    scenario = {"id": "c1", "kind": "code", "intent": "(code-1) You want a Python function double(x) returning 2*x.",
                "full_prompt": "Write double(x) returning 2*x.", "entry_point": "double",
                "tests": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n"}
    (tmp_path / "user.json").write_text(json.dumps({"(code-1)": "Write a python function double for me please"}))
    (tmp_path / "assistant.json").write_text(json.dumps(["```python\ndef double(x):\n    return 2 * x\n```"]))
    config = SimulationConfig(assistant=f"scripted:{tmp_path / 'assistant.json'}", user=f"scripted:{tmp_path / 'user.json'}",
                              scenarios=str(tmp_path / "code.jsonl"))
    (tmp_path / "code.jsonl").write_text(json.dumps(scenario) + "\n")
    simulate(config, tmp_path / "run")
    [record] = _by_key(tmp_path / "run").values()
    assert record["end_reason"] == "solved", record["messages"][-1]
    assert record["messages"][-1]["classification"] == "answer_attempt"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from userloop.models import load_model
    from userloop.models.tiny import build_tiny_chat_model
    from userloop.userlm.template import build_userlm_lookalike

    root = tmp_path_factory.mktemp("tiny")
    user = build_userlm_lookalike(root / "user", hidden_size=32, layers=1)
    assistant = build_tiny_chat_model(root / "assistant", hidden_size=32, layers=1)
    return load_model(f"hf:{user}"), load_model(f"hf:{assistant}")


def test_tiny_hf_models_are_reproducible(tiny_models, scripted):
    """Two local models through the engine: bans enforced at generation, tokens counted, same seed same texts.
    (One sample per guardrail check keeps the random models' resampling short.)"""
    from userloop.models import GenerationParams
    from userloop.simulate.answer_check import score_reply
    from userloop.simulate.engine import SimulationEngine, pending_jobs
    from userloop.simulate.reply_kinds import RuleReplyClassifier
    from userloop.simulate.scenarios import load_scenarios
    from userloop.userlm.simulator import GuardrailConfig, UserSimulator

    user_model, assistant = tiny_models
    user = UserSimulator(user_model, GuardrailConfig(max_attempts=1, samples_per_call=1),
                         GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.8))
    jobs = pending_jobs(load_scenarios(scripted["scenarios"]), 1, set())

    async def run() -> list[dict]:
        engine = SimulationEngine(assistant, user, RuleReplyClassifier(), score_reply, seed=5, max_user_turns=2,
                                  assistant_params=GenerationParams(max_new_tokens=8))
        records: list[dict] = []
        try:
            await engine.run(jobs, records.append)
        finally:
            await user_model.aclose()
            await assistant.aclose()
        return records

    texts = []
    for _ in range(2):
        records = asyncio.run(run())
        assert len(records) == 4 and not any(r["end_reason"] == "error" for r in records)
        user_messages = [m for r in records for m in r["messages"] if m["role"] == "user"]
        assert all(m["tokens"]["completion"] > 0 for m in user_messages)
        assert any(e["action"] == "ban" for m in user_messages for e in m["events"])  # hf enforces the bans
        texts.append({(r["scenario_id"], r["sample"]): _texts(r) for r in records})
    assert texts[0] == texts[1]
