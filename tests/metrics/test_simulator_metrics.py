import random
import time

import pytest

from userloop.metrics.simulator_metrics import (
    content_words,
    first_turn_diversity,
    intent_decomposition,
    intent_overlap,
    termination_scores,
)


def test_content_words_drop_stopwords_and_punctuation():
    assert content_words("Hey, can you write me a POEM about the sea?!") == ["hey", "write", "poem", "sea"]
    assert content_words("the and of") == []


def test_intent_overlap_by_hand():
    intent = "You are a user chatting with an assistant language model to write a poem about the sea."
    # content words: write, poem, sea, waves -> 3 of 4 occur in the intent
    assert intent_overlap("write a poem on sea waves", intent) == pytest.approx(3 / 4)
    assert intent_overlap("hello there", intent) == 0.0
    assert intent_overlap("the of", intent) is None


def test_intent_decomposition_averages_turns_with_content_words():
    intents = ["get a cake recipe", "get a cake recipe", "get a cake recipe"]
    turns = ["cake recipe please", "how do i bake bread", "??"]  # 2/2, 0/2 (bake, bread), no content word
    assert intent_decomposition(turns, intents) == pytest.approx(100 * (1.0 + 0.0) / 2)
    with pytest.raises(ValueError):
        intent_decomposition(["??"], ["x"])


def test_termination_scores_by_hand():
    predicted = [True, False, True, False, True]
    gold = [True, True, False, False, False]
    s = termination_scores(predicted, gold)
    assert (s["true_positives"], s["false_positives"], s["false_negatives"], s["true_negatives"]) == (1, 2, 1, 1)
    assert s["precision"] == pytest.approx(100 / 3)
    assert s["recall"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(100 * 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    never = termination_scores([False, False], [True, False])
    assert never["precision"] == never["recall"] == never["f1"] == 0.0


def test_diversity_of_2000_turns_is_vectorised():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    turns = [" ".join(rng.choices(vocab, k=rng.randint(3, 30))) for _ in range(2000)]
    started = time.perf_counter()
    value = first_turn_diversity(turns)
    print(f"diversity of 2,000 turns: {time.perf_counter() - started:.3f} s")  # measured, not asserted
    assert 99 < value <= 100
