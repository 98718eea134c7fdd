"""Label consistency: the truth says exactly what happened in each conversation."""

from userloop.testbed.dialogue import FIT_THRESHOLD
from userloop.testbed.persona import Persona
from userloop.testbed.persona_match import score_components

STYLE_AXIS = {"too_long": "detail", "too_short": "detail", "wants_structure": "structure", "wants_prose": "structure",
              "too_casual": "tone", "too_formal": "tone", "too_technical": "expertise", "too_simple": "expertise"}
TYPES = {"new_request", "continuation", "clarification_answer", "feedback", "positive_ack"}
RELATIONS = {"new_request", "re_attempt", "new_variation", "extend", "answer_to_question", "none"}
FEEDBACK_TYPES = {"repeat_rephrase", "make_aware_with_correction", "make_aware_without_correction",
                  "ask_for_clarification", "positive", "none"}


def _pairs(population):
    users = population.user_truth()
    for record, truth in zip(population.records, (t for t in population.truth if t["type"] == "conversation")):
        yield Persona.from_dict(users[truth["user_id"]]["persona"]), record["conversation"], truth


def test_every_feedback_turn_follows_a_violating_or_wrong_answer(population):
    n_feedback = 0
    for persona, turns, truth in _pairs(population):
        for i, label in enumerate(truth["turns"]):
            if label["role"] != "user" or label["type"] != "feedback":
                continue
            n_feedback += 1
            previous = truth["turns"][i - 1]
            assert previous["role"] == "assistant"
            assert label["reason"] in previous["violations"]
            if label["reason"] in STYLE_AXIS:  # the scorer independently agrees the preference was missed
                fits = score_components(persona, turns[i - 1]["content"])
                assert fits[STYLE_AXIS[label["reason"]]] < FIT_THRESHOLD
            elif label["reason"] == "wrong_answer":
                assert previous["correct"] is False
            else:
                assert previous["act"] == {"off_topic": "discussion", "refused": "refusal"}[label["reason"]]
    assert n_feedback > 200


def test_label_vocabularies_and_verbatim_spans(population):
    for _, turns, truth in _pairs(population):
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        for i, label in enumerate(truth["turns"]):
            if label["role"] != "user":
                continue
            assert label["type"] in TYPES and label["feedback_type"] in FEEDBACK_TYPES
            assert (label["relation"] is None) == (i == 0)
            assert i == 0 or label["relation"] in RELATIONS
            if label["feedback_text"] is not None:
                assert label["feedback_text"] in turns[i]["content"]
            assert (label["feedback_type"] == "none") == (label["feedback_text"] is None)
            if label["type"] == "clarification_answer":
                assert truth["turns"][i - 1]["act"] == "clarification"


def test_shards_are_revealed_in_order_once(population):
    for _, _, truth in _pairs(population):
        revealed: dict[int, list[int]] = {}
        for label in truth["turns"]:
            if label["role"] == "user":
                revealed.setdefault(label["task"], []).extend(label["shards"])
        for task, shards in revealed.items():
            assert shards == list(range(1, len(shards) + 1))
            assert len(shards) <= len(truth["tasks"][task]["shards"])


def test_end_reasons_agree_with_the_last_exchange(population):
    users = population.user_truth()
    reasons = set()
    for persona, _, truth in _pairs(population):
        reasons.add(truth["end_reason"])
        last = truth["turns"][-1]
        assert last["role"] == "assistant"
        if truth["end_reason"] == "satisfied":
            assert last["act"] == "acknowledgement" or not last["violations"]
        elif truth["end_reason"] in ("tolerated", "gave_up"):
            assert last["violations"]
        if truth["end_reason"] == "gave_up":
            complaints = sum(t["role"] == "user" and t["type"] == "feedback" for t in truth["turns"])
            assert complaints == users[truth["user_id"]]["persona"]["patience"]
    assert reasons >= {"satisfied", "tolerated", "gave_up"}


def test_solved_matches_the_last_full_answer(population):
    checkable = [t for t in population.truth if t["type"] == "conversation" and t["solved"] is not None]
    assert checkable
    solved = sum(t["solved"] for t in checkable) / len(checkable)
    assert 0.7 < solved < 1.0
