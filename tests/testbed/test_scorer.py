import pytest

from userloop.testbed import score, score_components

EXPERT_BRIEF_FORMAL_LIST = {"expertise": "expert", "detail": "brief", "tone": "formal", "structure": "structured"}
NOVICE_DETAILED_CASUAL_PROSE = {"expertise": "novice", "detail": "detailed", "tone": "casual", "structure": "prose"}

FORMAL_TECHNICAL_LIST = """Certainly. The implementation therefore requires careful consideration:
- Parameterisation ensures reproducibility.
- Consequently, documentation facilitates maintainability.
- Furthermore, verification prevents inconsistencies."""
CASUAL_SIMPLE_PROSE = ("Sure! So here's the thing, it's pretty easy. You just add the two numbers and then you split it "
                       "in half. That's it, no big deal. " * 6)


def test_fitting_response_beats_misfitting_one_for_each_persona():
    assert score(EXPERT_BRIEF_FORMAL_LIST, FORMAL_TECHNICAL_LIST) > 0.85
    assert score(EXPERT_BRIEF_FORMAL_LIST, CASUAL_SIMPLE_PROSE) < 0.2
    assert score(NOVICE_DETAILED_CASUAL_PROSE, CASUAL_SIMPLE_PROSE) > 0.85
    assert score(NOVICE_DETAILED_CASUAL_PROSE, FORMAL_TECHNICAL_LIST) < 0.2


@pytest.mark.parametrize("axis, preference, better, worse", [
    ("detail", {"detail": "brief"}, "The answer is 42.", "word " * 300),
    ("detail", {"detail": "detailed"}, "word " * 200, "The answer is 42."),
    ("structure", {"structure": "structured"}, "- one\n- two\n- three", "One, two and three."),
    ("structure", {"structure": "prose"}, "One, two and three.", "1. one\n2. two\n3. three"),
    ("tone", {"tone": "formal"}, "Certainly. I would therefore recommend it.", "Hey! It's super cool, you'll love it!"),
    ("tone", {"tone": "casual"}, "Hey! It's super cool, you'll love it!", "Certainly. I would therefore recommend it."),
    ("expertise", {"expertise": "expert"}, "Asymptotically, memoization substantially outperforms recomputation.",
     "You can save the old answers so you do not do the work twice."),
    ("expertise", {"expertise": "novice"}, "You can save the old answers so you do not do the work twice.",
     "Asymptotically, memoization substantially outperforms recomputation."),
])
def test_each_axis_orders_hand_made_pairs(axis, preference, better, worse):
    persona = {"expertise": "intermediate", "detail": "brief", "tone": "formal", "structure": "prose", **preference}
    assert score_components(persona, better)[axis] > score_components(persona, worse)[axis]


def test_intermediate_prefers_a_middle_vocabulary():
    persona = {"expertise": "intermediate", "detail": "brief", "tone": "formal", "structure": "prose"}
    middle = "You can store previous results to avoid repeated computation in the function."
    plain = "You can keep the old answers so you do not do the work two times."
    dense = "Asymptotically, memoization substantially outperforms recomputation systematically."
    fits = [score_components(persona, text)["expertise"] for text in (plain, middle, dense)]
    assert fits[1] > fits[0] and fits[1] > fits[2]


def test_range_empty_and_bad_persona():
    for text in ("", FORMAL_TECHNICAL_LIST, CASUAL_SIMPLE_PROSE, "x" * 5000, "!!!\n- \n- "):
        assert 0.0 <= score(EXPERT_BRIEF_FORMAL_LIST, text) <= 1.0
    assert score(EXPERT_BRIEF_FORMAL_LIST, "") == 0.0
    with pytest.raises(ValueError, match="tone"):
        score({**EXPERT_BRIEF_FORMAL_LIST, "tone": "sarcastic"}, "hi")
