"""The lock-step engine with scripted models on both sides, and one run between two tiny hf models."""

import asyncio
import json

import pytest

from userloop.simulate.engine import derive_seed
from userloop.simulate.records import SimulatedConversation
from userloop.simulate.runs import SimulationConfig, read_records, simulate


def _by_key(out):
    records, _ = read_records(out / "conversations.jsonl")
    return {r.key: r for r in records}


def _texts(record):
    return [(m.role, m.content) for m in record.messages]


def test_each_end_reason_and_inline_events(scripted, tmp_path):
    rows = scripted["rows"]
    config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"], n=2)
    result = simulate(config, tmp_path / "run")
    records = _by_key(tmp_path / "run")
    assert sorted(records) == sorted((s["id"], k) for s in rows for k in range(2))

    solved = records["m1", 0]
    assert (solved.end_reason, solved.solved, solved.n_user_turns) == ("solved", True, 2)
    assert [m.classification for m in solved.messages if m.role == "assistant"] == ["clarification", "answer_attempt"]
    assert solved.messages[-1].score.passed is True
    assert solved.messages[0].tokens.completion > 0 and solved.tokens["assistant"].prompt > 0
    assert solved.intent == rows[0]["intent"] and solved.kind == "math" and solved.setting == "multi_turn"

    capped = records["m2", 1]  # the scenario's own cap (2) is below the run's (6)
    assert (capped.end_reason, capped.solved, capped.n_user_turns) == ("max_turns", False, 2)
    assert capped.messages[-1].score.passed is False

    ended = records["o1", 0]  # the user's <|endconversation|> alone is no message
    assert (ended.end_reason, ended.solved, ended.n_user_turns) == ("user_ended", None, 2)
    assert _texts(ended)[-1] == ("assistant", "Title: Sea. Waves roll.")

    failed = records["o2", 0]  # the assistant script has no reply for it: that conversation ends, the run goes on
    assert failed.end_reason == "error" and "no key matches" in failed.error
    assert [m.role for m in failed.messages] == ["user"]

    overall = result.summary["overall"]
    assert overall["end_reasons"] == {"user_ended": 2, "max_turns": 2, "solved": 2, "error": 2, "context": 0}
    assert overall["solved"]["solved"] == 2 and overall["solved"]["scored"] == 4
    assert result.summary["timings"]["conversations"] == 8


def test_single_turn_setting_sends_the_full_prompt(scripted, tmp_path):
    config = SimulationConfig(assistant=scripted["assistant"], user=None, scenarios=scripted["scenarios"])
    simulate(config, tmp_path / "run")
    records = _by_key(tmp_path / "run")
    assert _texts(records["m1", 0]) == [("user", scripted["rows"][0]["full_prompt"]),
                                        ("assistant", "That makes 3 + 4 = 7. The answer is 7.")]
    assert records["m1", 0].end_reason == "solved" and records["m2", 0].end_reason == "solved"
    assert records["o1", 0].end_reason == "max_turns" and records["o1", 0].solved is None
    assert all(r.user_model is None and r.setting == "single_turn" for r in records.values())


def test_concurrency_does_not_change_conversations(scripted, tmp_path):
    runs = {}
    for concurrency in (1, 3, 256):
        config = SimulationConfig(assistant=scripted["assistant"], user=scripted["user"], scenarios=scripted["scenarios"],
                                  n=3, concurrency=concurrency)
        simulate(config, tmp_path / str(concurrency))
        runs[concurrency] = {key: (_texts(r), r.end_reason, r.seed) for key, r in _by_key(tmp_path / str(concurrency)).items()}
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
    assert record.end_reason == "solved", record.messages[-1]
    assert record.messages[-1].classification == "answer_attempt"


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

    async def run() -> list[SimulatedConversation]:
        engine = SimulationEngine(assistant, user, RuleReplyClassifier(), score_reply, seed=5, max_user_turns=2,
                                  assistant_params=GenerationParams(max_new_tokens=8))
        records: list[SimulatedConversation] = []
        try:
            await engine.run(jobs, records.append)
        finally:
            await user_model.aclose()
            await assistant.aclose()
        return records

    texts = []
    for _ in range(2):
        records = asyncio.run(run())
        assert len(records) == 4 and not any(r.end_reason == "error" for r in records)
        user_messages = [m for r in records for m in r.messages if m.role == "user"]
        assert all(m.tokens.completion > 0 for m in user_messages)
        assert any(e["action"] == "ban" for m in user_messages for e in m.events)  # hf enforces the bans
        texts.append({r.key: _texts(r) for r in records})
    assert texts[0] == texts[1]


def test_job_hooks_last_word_empty_turns_and_context_ends():
    """What the RLHI loop drives its conversations with: a job's own assistant system message and fixed seeds,
    the user's reaction as the last word at the cap, an empty user turn as an ending, no classifier or scorer,
    and a prompt over a model's context ending that conversation with ``context``."""
    from userloop.models.base import ContextLengthError, GenerationParams
    from userloop.models.mock import MockModel
    from userloop.simulate.engine import END_REASONS, Job, SimulationEngine
    from userloop.simulate.scenarios import Scenario
    from userloop.userlm.simulator import GuardrailConfig, UserSimulator

    def user_reply(messages, **settings):   # messages[0]: the intent, "(NAME) ..."
        turn = sum(m["role"] == "user" for m in messages)
        if messages[0]["content"].startswith("(empty)") and turn == 1:
            return ""
        return f"Please tell me more about {messages[0]['content'].split()[0]}, turn {turn + 1}"

    def assistant_reply(messages, **settings):
        if "(long), turn 2" in messages[-1]["content"]:
            raise ContextLengthError("prompt of 90 tokens plus max_new_tokens 20 exceeds the context of mock (80 tokens)")
        return "Here is an answer."

    def scenario(name: str, persona: str = "") -> Scenario:
        return Scenario(id=name, kind="open", intent=f"({name}) You want help.", shards=[], full_prompt="Help me.",
                        metadata={"persona": persona})

    user_model, assistant = MockModel("user", replies=user_reply), MockModel("assistant", replies=assistant_reply)
    off = GuardrailConfig(filter_first_tokens=False, avoid_termination=False, length_thresholds=False,
                          filter_repetition=False, samples_per_call=1)
    user = UserSimulator(user_model, off, GenerationParams(max_new_tokens=20, seed=3))
    engine = SimulationEngine(assistant, user, assistant_params=GenerationParams(max_new_tokens=20), max_user_turns=3,
                              last_word="user", empty_turn_ends=True)
    jobs = [Job(scenario("brief", "Prefers brief answers."), 0, system_prompt="About the user: brief",
                user_seed=11, assistant_seed=5),
            Job(scenario("empty"), 0), Job(scenario("long"), 0)]
    records = {}
    asyncio.run(engine.run(jobs, lambda record: records.__setitem__(record.scenario_id, record)))

    brief, empty, long = records["brief"], records["empty"], records["long"]
    assert (brief.end_reason, [m.role for m in brief.messages]) == ("max_turns", ["user", "assistant"] * 2 + ["user"])
    assert (empty.end_reason, [m.role for m in empty.messages]) == ("user_ended", ["user", "assistant"])
    assert (long.end_reason, [m.role for m in long.messages]) == ("context", ["user", "assistant", "user"])
    assert "ContextLengthError" in long.error and brief.error is None
    assert {r.end_reason for r in records.values()} <= set(END_REASONS)
    assert all(m.classification is None and m.score is None for r in records.values() for m in r.messages)

    sent = [(messages, params) for messages, params in assistant.calls if "(brief)" not in str(messages)]
    brief_replies = [(m, p) for m, p in assistant.calls if m[0]["role"] == "system"]
    assert len(brief_replies) == 2 and all(m[0]["content"] == "About the user: brief" and p.seed == 5
                                           for m, p in brief_replies)
    assert all(messages[0]["role"] == "user" for messages, _ in sent)   # the others: the engine's (no) system prompt
    brief_turns = [p.seed for m, p in user_model.calls if m[0]["content"].startswith("(brief)")]
    assert brief_turns == [11 * 1_000_003 % 2**31] * 3                 # the job's seed on every user turn
    assert all("Your persona: Prefers brief answers." in m[0]["content"] for m, _ in user_model.calls
               if m[0]["content"].startswith("(brief)"))
