"""What makes the offline backends carry over to real users: the hand-made development set, phrasing-independent
features, class priors, cross-validation on the dev set, personas from the answers a user accepted."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from userloop.conversation import Conversation, Message
from userloop.errors import UserError
from userloop.rlhi.extraction_eval import cross_validate_handmade
from userloop.rlhi.features import assistant_asked, context_features
from userloop.rlhi.followup_classifier import FEEDBACK_PRIOR, RELATION_PRIOR, read_handmade, training_weights
from userloop.rlhi.followups import FollowUp, Labels, extract_followups
from userloop.rlhi.personas import UserHistory, derive_offline
from userloop.rlhi.taxonomy import FEEDBACK_TYPES, RELATIONS


@pytest.fixture(scope="module")
def handmade():
    return read_handmade()


def test_handmade_dev_set_covers_every_class_with_verbatim_spans(handmade):
    followups, labels = handmade
    assert len(followups) >= 150 and len({f.conversation_id for f in followups}) == len(followups)
    relations, feedback = Counter(x.relation for x in labels), Counter(x.feedback_type for x in labels)
    assert set(relations) == set(RELATIONS) and min(relations.values()) >= 5
    assert set(feedback) == set(FEEDBACK_TYPES) and min(feedback.values()) >= 5
    assert relations.most_common(1)[0][0] == "extend"          # as in real logs
    for followup, label in zip(followups, labels, strict=True):
        assert (label.feedback_text is None) == (label.feedback_type == "none")
        assert label.feedback_text is None or label.feedback_text in followup.text
        assert followup.previous_user and followup.previous_assistant


def test_read_handmade_rejects_a_span_that_is_not_in_the_turn(tmp_path):
    row = {"id": "x-1", "previous_user": "hi", "previous_assistant": "hello", "text": "thanks a lot",
           "relation": "none", "feedback_type": "positive", "feedback_text": "thank you"}
    (tmp_path / "dev.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    with pytest.raises(UserError, match="dev.jsonl:1: feedback_text does not occur in text"):
        read_handmade(tmp_path / "dev.jsonl")
    with pytest.raises(UserError, match="not found"):
        read_handmade(tmp_path / "missing.jsonl")


def test_assistant_asked_tells_a_specific_question_from_a_generic_offer():
    assert assistant_asked("Sure. How many people are coming, and what is the budget?")
    assert assistant_asked("To give an accurate answer, I need to know how long it should be.")
    assert not assistant_asked("Paris is the capital of France. Is there anything else I can help you with?")
    assert not assistant_asked("Here you go. Let me know if you have any other questions!")


def turn(text: str, answer: str = "The capital of Australia is Sydney.", request: str = "What is the capital of Australia?"):
    return FollowUp("c", None, 2, text, answer, request)


def test_context_features_read_meaning_not_templates():
    correction = context_features(turn("No, it's Canberra."))
    assert correction["cue_negation"] and correction["cue_affirm"] and not correction["topic_shift"]
    shift = context_features(turn("How do I install numpy on Windows?"))
    assert shift["topic_shift"] and shift["cue_wh_start"] and shift["question"]
    variation = context_features(turn("What about New Zealand?"))
    assert variation["cue_what_about"] and not variation["cue_negation"]
    clarification = context_features(turn("What does 'capital' mean here?"))
    assert clarification["cue_clarify"]
    answer = context_features(turn("about 10 days", answer="How long will you stay?"))
    assert answer["assistant_asked_short_reply"]


def test_training_weights_give_each_class_its_prior_and_the_handmade_set_its_share():
    classes = ["re_attempt"] * 90 + ["extend"] * 10 + ["extend", "new_request"]
    handmade = [False] * 100 + [True, True]
    weights = training_weights(classes, handmade, {"re_attempt": 0.5, "extend": 0.3, "new_request": 0.2})
    total = sum(weights)
    by_class = Counter()
    for c, w in zip(classes, weights, strict=True):
        by_class[c] += w
    assert {c: round(w / total, 6) for c, w in by_class.items()} == {"re_attempt": 0.5, "extend": 0.3, "new_request": 0.2}
    assert weights[100] > 10 * weights[90]          # a hand-made extend outweighs a testbed one
    assert set(RELATION_PRIOR) == set(RELATIONS) and set(FEEDBACK_PRIOR) == set(FEEDBACK_TYPES)
    assert abs(sum(RELATION_PRIOR.values()) - 1) < 1e-9 and abs(sum(FEEDBACK_PRIOR.values()) - 1) < 1e-9


def test_cross_validation_on_the_dev_set_beats_the_majority_class(held_out, handmade):
    report = cross_validate_handmade(held_out, handmade, folds=3)
    relation, feedback = report["relation"], report["feedback_type"]
    majority = Counter(x.relation for x in handmade[1]).most_common(1)[0][1] / relation["n"]
    assert relation["n"] == len(handmade[0]) and relation["accuracy"] > majority + 0.2
    assert relation["macro_f1"] >= 0.5 and feedback["macro_f1"] >= 0.45


LONG_LIST = "Here is the plan.\n" + "".join(f"- Step {i}: walk to the old town and look at the river for a while.\n"
                                           for i in range(12))
SHORT_PROSE = "Lisbon is lovely in spring. Take the tram."


def history_of(answers: list[str], criticised: set[int]) -> UserHistory:
    conversations, feedback = [], []
    for n, answer in enumerate(answers):
        conversation = Conversation([Message("user", "plan a day in Lisbon"), Message("assistant", answer),
                                     Message("user", "ok")], id=f"c{n}", user_id="u")
        conversations.append(conversation)
        [followup] = extract_followups(conversation)
        feedback.append((followup, Labels("re_attempt", "make_aware_without_correction", "ok") if n in criticised
                         else Labels("none", "none", None)))
    return UserHistory("u", conversations, feedback)


def test_personas_read_what_the_user_accepted_without_complaint():
    accepts_long_lists = derive_offline(history_of([LONG_LIST] * 3, criticised=set()), lambda turns: ["travel"] * len(turns))
    assert (accepts_long_lists.detail, accepts_long_lists.structure) == ("detailed", "structured")
    # The same answers, but the user complained about each long one and accepted only the short prose.
    picky = derive_offline(history_of([LONG_LIST, LONG_LIST, SHORT_PROSE], criticised={0, 1}),
                           lambda turns: ["travel"] * len(turns))
    assert (picky.detail, picky.structure) == ("brief", "prose")
    assert picky.evidence["revealed"]["detail"] == "brief"
