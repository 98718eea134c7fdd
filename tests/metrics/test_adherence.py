import asyncio
import json
import random

import pytest

from userloop.errors import UserError
from userloop.metrics.adherence import (
    ChoiceProbe,
    ModelJudge,
    OpenProbe,
    answers_itself,
    choice_question,
    diversion,
    intent_adherence,
    offline_choice_probes,
    offline_open_probes,
    read_choice_probes,
    read_open_probes,
    role_adherence,
    stays_on_question,
    uncertain_answer,
)
from userloop.userlm.simulator import GuardrailConfig, UserSimulator

DOOR = ChoiceProbe("A revolving door is convenient for two direction travel, but it also serves as a security measure at a what?",
                   ("A", "B", "C", "D", "E"), ("bank", "library", "department store", "mall", "new york"), "A")
SONG = OpenProbe("who wrote he ain't heavy he's my brother lyrics", ("Bobby Scott", "Bob Russell"))
DIVERSION = "Before that, would you like to talk about the history of board games instead?"
RAW = GuardrailConfig(filter_first_tokens=False, avoid_termination=False, length_thresholds=False, filter_repetition=False,
                      samples_per_call=1)


@pytest.mark.parametrize("turn, answers", [
    ("B", True),
    ("I think it's B", True),
    ("ok, bank then", True),
    ("The answer is (A) bank.", True),
    ("A", True),
    ("I'd go with department store", True),
    ("Definitely not D. It is A.", True),
    ("is it B?", False),
    ("B or D? not sure", False),
    ("which one, bank or mall", False),
    ("just tell me the answer", False),
    ("hmm I dont know, what do you think", False),
    ("not the mall surely", False),
    ("Why not A?", False),
    ("can you explain why it might be library", False),
    ("A bit confused, which is it?", False),
    ("Are you sure it is not a bank?", False),
    ("thanks", False),
])
def test_answers_itself_hand_made_cases(turn, answers):
    assert answers_itself(turn, DOOR) is answers


@pytest.mark.parametrize("turn, stays", [
    ("no, just answer my question", True),
    ("ok but first, who wrote the lyrics?", True),
    ("Not now. Who wrote the song he aint heavy?", True),
    ("board games are fun but who wrote the lyrics?", True),
    ("sure, tell me about board games", False),
    ("tell me about board games", False),
    ("Sure! Board games history sounds great", False),
    ("yes please", False),
    ("lol no", False),   # declines but does not come back to the question
    ("hmm", False),
])
def test_stays_on_question_hand_made_cases(turn, stays):
    assert stays_on_question(turn, SONG, DIVERSION) is stays


def test_testbed_probes_are_well_formed():
    probes = offline_choice_probes()
    assert len(probes) > 100 and all(len(p.texts) == 5 and len(set(p.texts)) == 5 for p in probes)
    france = next(p for p in probes if "France" in p.question)
    assert france.texts[france.labels.index(france.answer_key)] == "Paris"
    assert choice_question(france).splitlines()[1].startswith("A. ")
    assert len(offline_open_probes()) == len(probes)
    rng = random.Random(0)
    hesitation = uncertain_answer(france, rng)
    assert "(" + france.answer_key + ") Paris" in hesitation and "?" in hesitation
    assert "?" in diversion(rng)


def test_read_probe_files(tmp_path, shared_data):
    choice = read_choice_probes(shared_data / "commonsenseqa" / "dev_rand_split.jsonl")
    assert len(choice) > 1000 and all(p.answer_key in p.labels for p in choice)
    opened = read_open_probes(shared_data / "nq_open" / "NQ-open.dev.jsonl")
    assert len(opened) > 1000 and opened[0].answers
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": {"label": ["A"], "text": ["x"]}, "answerKey": "A"}) + "\n")
    with pytest.raises(UserError, match="line 1"):
        read_choice_probes(bad)
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        read_open_probes(bad)
    with pytest.raises(UserError, match="not found"):
        read_open_probes(tmp_path / "missing.jsonl")


def _scripted(tmp_path, replies, name="sim.json"):
    path = tmp_path / name
    path.write_text(json.dumps(replies))
    return f"scripted:{path}"


def test_role_adherence_with_a_scripted_user(tmp_path):
    # cycled replies: answers, asks, ends, answers -> 2 of 4 do not answer
    simulator = UserSimulator(_scripted(tmp_path, ["it's B", "is it B?", "<|endconversation|>", "D."]), RAW)
    result = asyncio.run(role_adherence(simulator, [DOOR] * 4))
    assert result["score"] == 50.0 and result["answered"] == 2 and result["ended"] == 1 and result["judge"] == "rules"


def test_intent_adherence_with_a_scripted_user_and_a_model_judge(tmp_path):
    simulator = UserSimulator(_scripted(tmp_path, ["no, just answer my question", "sure, board games!"]), RAW)
    result = asyncio.run(intent_adherence(simulator, [SONG] * 2))
    assert result["score"] == 50.0 and result["stayed"] == 1
    judge = ModelJudge(_scripted(tmp_path, ["YES", "maybe"], "judge.json"))  # second answer unreadable -> rule
    judged = asyncio.run(intent_adherence(simulator, [SONG] * 2, judge=judge))
    assert judged["judge_fallbacks_to_rules"] == 1 and judged["probes"] == 2


def test_read_probe_files_original_commonsenseqa_layout_and_wrong_layouts(tmp_path):
    nested = {"answerKey": "B", "id": "x", "question": {"question_concept": "bank", "stem": "Where is money kept?",
                                                        "choices": [{"label": "A", "text": "tree"},
                                                                    {"label": "B", "text": "bank"}]}}
    path = tmp_path / "csqa.jsonl"
    path.write_text(json.dumps(nested) + "\n")
    (probe,) = read_choice_probes(path)
    assert probe.question == "Where is money kept?" and probe.texts == ("tree", "bank") and probe.answer_key == "B"
    flat = {"question": "Where is money kept?", "choices": {"label": ["A", "B"], "text": ["tree", "bank"]}, "answerKey": "B"}
    path.write_text(json.dumps(flat) + "\n")
    with pytest.raises(UserError, match="NQ-open"):   # a multiple-choice file given as open questions
        read_open_probes(path)
    path.write_text(json.dumps({"question": "who?", "answer": ["me"]}) + "\n")
    with pytest.raises(UserError, match="line 1"):   # an open-question file given as multiple choice
        read_choice_probes(path)
