"""Table-3 simulation statistics on hand-computed cases."""

from __future__ import annotations

import pytest
from record_helpers import simulated

from userloop.simulate.records import SimulatedConversation
from userloop.simulate.reveal_stats import (
    TurnFlags,
    content_words,
    covers,
    demand_turns,
    intent_coverage,
    numbers,
    repeated_turns,
    required_pieces,
    simulation_statistics,
    unigram_difference,
    unigram_jaccard_distance,
)
from userloop.simulate.scenarios import Scenario

APPLES = Scenario(id="a", kind="math", intent="Tom has 3 apples and buys 4 more. How many apples does he have now?",
                  shards=["Tom has 3 apples.", "He buys 4 more apples.", "How many apples does Tom have now?"],
                  full_prompt="Tom has 3 apples and buys 4 more. How many apples does he have now?", answer="7")
LONG = ["I need help with apples. Tom has 3 apples.", "He buys 4 more.",
        "Tom has 3 apples, remember? Also write it as a poem."]
SHORT = ["How many apples does Tom have now?"]


def record(scenario_id: str, turns: list[str], end_reason: str = "user_ended") -> SimulatedConversation:
    return simulated(scenario_id, [message for turn in turns for message in (("user", turn), ("assistant", "Got it."))],
                     end_reason)


def test_words_and_numbers():
    assert numbers("It was 1,200 dollars, then 2.50 and -3.") == {"1200", "2.5", "-3"}
    assert content_words("How many apples does Tom have now?") == {"many", "apple", "tom"}
    assert covers("He buys 4 more apples.", "He buys 4 more.")  # the number, and 1 of 2 content words
    assert not covers("Tom has 3 apples.", "Tom has apples.")  # a number is missing
    assert not covers("Tom has 3 apples.", "3 pears")  # no content word


def test_intent_coverage_is_the_share_of_shards_in_the_user_turns():
    assert intent_coverage(APPLES, LONG) == 1.0
    assert intent_coverage(APPLES, SHORT) == pytest.approx(1 / 3)
    assert intent_coverage(APPLES, []) == 0.0


def test_open_scenarios_use_the_intent_as_one_piece():
    poem = Scenario(id="o", kind="open", intent="You are a user chatting with an assistant language model to "
                    "write a poem about the sea.", shards=[], full_prompt="x")
    assert required_pieces(poem) == ["write a poem about the sea."]
    assert intent_coverage(poem, ["hi", "a poem about the sea please"]) == 1.0


def test_unigram_difference_and_jaccard():
    assert unigram_difference(APPLES.intent, SHORT) == 0.0
    assert unigram_jaccard_distance(APPLES.intent, SHORT) == pytest.approx(1 - 7 / 14)
    assert unigram_difference(APPLES.intent, LONG) == pytest.approx(11 / 19)
    assert unigram_jaccard_distance(APPLES.intent, LONG) == pytest.approx(1 - 8 / 25)
    assert unigram_difference("x", []) == 0.0


def test_repetition_and_new_demands():
    assert repeated_turns(APPLES, LONG) == [False, False, True]
    assert demand_turns(APPLES, record("a", LONG)) == [False, False, True]
    assert demand_turns(APPLES, record("a", SHORT)) == [False]
    # words the assistant used are not new: asking about them is no new demand
    asked = simulated("a", [("user", "Tom has 3 apples."), ("assistant", "Shall I use a table or a diagram?"),
                            ("user", "Use a diagram please.")])
    assert demand_turns(APPLES, asked) == [False, False]
    # asking for another attempt is no new demand
    assert demand_turns(APPLES, record("a", ["Can you try again?", "Please retry and continue."])) == [False, False]


def test_simulation_statistics_hand_computed():
    records = [record("a", LONG), record("a", SHORT), record("a", LONG, "error"), record("zzz", SHORT)]
    stats = simulation_statistics([APPLES], records)
    assert stats["conversations"] == 2 and stats["excluded_errors"] == 1 and stats["excluded_unknown_scenario"] == 1
    assert stats["intent_coverage"] == pytest.approx((1 + 1 / 3) / 2)
    assert stats["turns"] == {"mean": 2.0, "variance": 1.0, "min": 1, "max": 3}
    assert stats["unigram_difference"] == pytest.approx(11 / 19 / 2)
    assert stats["unigram_jaccard_distance"] == pytest.approx((17 / 25 + 0.5) / 2)
    assert stats["repetition_rate"] == pytest.approx(1 / 4)
    assert stats["new_demand_rate"] == pytest.approx(1 / 4)
    assert stats["judge"] == "rules"


def test_a_pluggable_judge_and_no_usable_records():
    class Everything:
        name = "everything"

        def flag_turns(self, items):
            return [TurnFlags([True] * r.n_user_turns, [True] * r.n_user_turns) for _, r in items]

    stats = simulation_statistics([APPLES], [record("a", LONG)], judge=Everything())
    assert stats["repetition_rate"] == 1.0 and stats["new_demand_rate"] == 1.0 and stats["judge"] == "everything"
    assert simulation_statistics([APPLES], [record("a", LONG, "error")]) == {
        "conversations": 0, "excluded_errors": 1, "excluded_unknown_scenario": 0}


def test_model_turn_judge_through_a_scripted_model(tmp_path):
    import json

    from userloop.simulate.reveal_stats import ModelTurnJudge

    script = tmp_path / "judge.json"
    answers = ['{"repeats": false, "new_demand": false}', 'Sure: {"repeats": true, "new_demand": false}', "dunno",
               '{"repeats": false, "new_demand": true}']
    script.write_text(json.dumps(answers), encoding="utf-8")
    judge = ModelTurnJudge(f"scripted:{script}")
    stats = simulation_statistics([APPLES], [record("a", LONG), record("a", SHORT)], judge=judge)
    # turn 3 of LONG fell back to the rules (repeats, new demand); SHORT's one turn: a new demand
    assert judge.fallbacks == 1
    assert stats["repetition_rate"] == pytest.approx(2 / 4) and stats["new_demand_rate"] == pytest.approx(2 / 4)
