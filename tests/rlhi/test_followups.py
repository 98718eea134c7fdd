"""Follow-up extraction, the taxonomy on hand-made turns, the verbatim-span check, the LLM judge path."""

from __future__ import annotations

import orjson
import pytest

from userloop.conversation import Conversation, Message
from userloop.models import load_model
from userloop.rlhi.extraction_eval import classification_table
from userloop.rlhi.followup_classifier import feedback_span
from userloop.rlhi.followups import FollowUp, JudgeClassifier, extract_followups, locate_span, parse_judgement
from userloop.rlhi.taxonomy import FEEDBACK_TYPES, RELATIONS, TESTBED_FEEDBACK_TYPE, TESTBED_RELATION, feedback_reasons

ASKED = "Sure! Before I answer, could you tell me how many people are coming?"
ANSWER = ("Certainly. Here is a short poem about the sea.\n\n- The waves roll in.\n- The gulls cry.\n\n"
          "Please let me know if you require further assistance.")


def followup(text: str, previous_assistant: str = ANSWER, previous_user: str = "Could you please write a poem about the sea?"):
    return FollowUp("c1", "u1", 2, text, previous_assistant, previous_user)


# One hand-made turn per class on each axis, in the testbed's phrasing.
RELATION_TURNS = {
    "answer_to_question": followup("yeah 4 people", ASKED, "can u help me split the bill"),
    "re_attempt": followup("That is too long. Could you make it shorter?"),
    "new_variation": followup("Now could you do a similar one? Please write a poem about the mountains."),
    "extend": followup("Could you tell me more about the sea?"),
    "new_request": followup("Next, could you please write an email to my landlord about the broken heater?"),
    "none": followup("Thank you very much."),
}
FEEDBACK_TURNS = {
    "repeat_rephrase": followup("That is not what I asked. Write a poem about the sea in four lines.",
                                "I am sorry, but I cannot help with that request."),
    "make_aware_with_correction": followup("Could you present this as bullet points?"),
    "make_aware_without_correction": followup("That does not seem right. Could you check it again?"),
    "ask_for_clarification": followup("I do not understand. Could you explain it more simply?"),
    "positive": followup("Perfect, thank you."),
    "none": followup("yeah 4 people", ASKED),
}


def test_testbed_labels_map_onto_the_issue_axes_exactly():
    assert set(TESTBED_RELATION.values()) == set(RELATIONS)
    assert set(TESTBED_FEEDBACK_TYPE.values()) == set(FEEDBACK_TYPES)
    assert set(RELATION_TURNS) == set(RELATIONS) and set(FEEDBACK_TURNS) == set(FEEDBACK_TYPES)


def test_extract_followups_takes_user_turns_after_assistant_turns():
    conversation = Conversation([Message("system", "be nice"), Message("user", "hi"), Message("assistant", "hello"),
                                 Message("user", "write a poem"), Message("user", "about cats"),
                                 Message("assistant", "a poem"), Message("user", "thanks")], id="c", user_id="u")
    found = extract_followups(conversation)
    assert [(f.index, f.text, f.previous_user) for f in found] == [(3, "write a poem", "hi"), (6, "thanks", "about cats")]


@pytest.mark.parametrize("relation", RELATIONS)
def test_relation_of_hand_made_turns(trained_classifier, relation):
    [labels] = trained_classifier.classify([RELATION_TURNS[relation]])
    assert labels.relation == relation


@pytest.mark.parametrize("feedback_type", FEEDBACK_TYPES)
def test_feedback_type_of_hand_made_turns(trained_classifier, feedback_type):
    turn = FEEDBACK_TURNS[feedback_type]
    [labels] = trained_classifier.classify([turn])
    assert labels.feedback_type == feedback_type
    if feedback_type == "none":
        assert labels.feedback_text is None
    else:
        assert labels.feedback_text and labels.feedback_text in turn.text


def test_feedback_span_rules_are_verbatim_slices():
    text = "Thanks, that works. Now write one about dogs."
    assert feedback_span(text, "positive") == "Thanks, that works."
    assert feedback_span("ok. That is wrong, it should be 52.  Also add a title", "make_aware_with_correction") == \
        "That is wrong, it should be 52."
    assert feedback_span("write me a haiku", "make_aware_without_correction") == "write me a haiku"   # no cue: whole turn
    assert feedback_span("anything", "none") is None


def test_feedback_reasons_read_what_a_span_asks_for():
    assert feedback_reasons("too long, and can you use bullet points") == ["wants_structure", "too_long"]
    assert feedback_reasons("no bullet points pls, just write it normally") == ["wants_prose"]
    assert feedback_reasons("i don't get it, explain simpler") == ["too_technical"]
    assert feedback_reasons(None) == []


def test_locate_span_accepts_verbatim_and_whitespace_variants_only():
    turn = "Hmm.  That is  too long.\nCould you make it shorter?"
    assert locate_span("That is  too long.", turn) == "That is  too long."
    assert locate_span("That is too long. Could you make it shorter?", turn) == "That is  too long.\nCould you make it shorter?"
    assert locate_span("That is far too long.", turn) is None
    assert locate_span("   ", turn) is None


def test_parse_judgement_validates_labels_and_span():
    turn = "That is too long.  Shorter please."
    ok, error = parse_judgement('```json\n{"relation": "re_attempt", "feedback_type": "make_aware_with_correction", '
                                '"feedback_text": "That is too long. Shorter please."}\n```', turn)
    assert error is None and ok.feedback_text == "That is too long.  Shorter please."   # the turn's own whitespace
    assert parse_judgement('{"relation": "rewrite", "feedback_type": "none", "feedback_text": null}', turn)[1].startswith("relation")
    assert parse_judgement('{"relation": "extend", "feedback_type": "positive", "feedback_text": "Great job"}', turn)[1] == \
        "feedback_text does not occur verbatim in the follow-up"
    assert parse_judgement("I think it is a re-attempt.", turn) == (None, "no JSON object")
    none, error = parse_judgement('{"relation": "extend", "feedback_type": "none", "feedback_text": "ignored"}', turn)
    assert error is None and none.feedback_text is None


def test_llm_judge_path_with_a_scripted_model(tmp_path, trained_classifier):
    valid = {"relation": "re_attempt", "feedback_type": "make_aware_with_correction", "feedback_text": "too long"}
    not_verbatim = {"relation": "extend", "feedback_type": "positive", "feedback_text": "Wonderful!"}
    script = tmp_path / "judge.json"
    script.write_bytes(orjson.dumps([orjson.dumps(valid).decode(), orjson.dumps(not_verbatim).decode(), "not json at all"]))
    judge = JudgeClassifier(load_model(f"scripted:{script}"), trained_classifier)
    turns = [followup("way too long, shorter pls"), followup("Perfect, thank you.")]
    first, second = judge.classify(turns)
    assert first.relation == "re_attempt" and first.feedback_text == "too long"
    assert second.feedback_type == "positive" and second.feedback_text in turns[1].text   # from the fallback
    assert judge.counts["valid"] == 1 and judge.counts["invalid"] == 1 and judge.counts["fallback"] == 1
    assert judge.counts["error: feedback_text does not occur verbatim in the follow-up"] == 1


def test_offline_classifier_beats_a_floor_on_a_held_out_population(trained_classifier, held_out):
    from userloop.rlhi.followup_classifier import testbed_examples

    followups, truth, _, _ = testbed_examples(held_out)
    predicted = trained_classifier.classify(followups)
    relation = classification_table([t.relation for t in truth], [p.relation for p in predicted], RELATIONS)
    feedback = classification_table([t.feedback_type for t in truth], [p.feedback_type for p in predicted], FEEDBACK_TYPES)
    assert relation["accuracy"] >= 0.9 and feedback["accuracy"] >= 0.9
    assert relation["macro_f1"] >= 0.8 and feedback["macro_f1"] >= 0.8
    assert all(p.feedback_text is None or p.feedback_text in f.text for f, p in zip(followups, predicted, strict=True))


def test_classification_table_counts():
    table = classification_table(["a", "a", "b"], ["a", "b", "b"], ["a", "b", "c"])
    assert table["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2, "predicted": 1}
    assert table["per_class"]["b"]["precision"] == 0.5 and table["macro_f1"] == round((0.667 + 0.667) / 2, 3)
    assert table["confusion"] == {"a": {"a": 1, "b": 1}, "b": {"b": 1}}
