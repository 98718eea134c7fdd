"""Scorers: the testbed's ground truth, a reward model folder, an LLM judge (scripted), and the spec loader."""

import json

import pytest

from userloop.errors import UserError
from userloop.rlhi.reward_scorers import (
    FALLBACK_SCORE,
    JudgeScorer,
    RewardModelScorer,
    ScoreRequest,
    TestbedScorer,
    load_scorer,
    parse_rating,
)
from userloop.testbed import score

BRIEF = {"expertise": "novice", "detail": "brief", "tone": "casual", "structure": "prose"}
SHORT = "Sure! Just boil it for ten minutes and you're done."
LONG = "\n".join(f"- Certainly, therefore consider the {i}th comprehensive methodological consideration." for i in range(40))


def request(response: str, user_id: str = "u1", persona: str | None = "A novice.") -> ScoreRequest:
    return ScoreRequest(user_id, persona, [{"role": "user", "content": "How do I cook an egg?"}], response)


def test_testbed_scorer_uses_the_true_persona():
    scorer = TestbedScorer({"u1": BRIEF})
    values = scorer.score([request(SHORT), request(LONG, persona=None)])
    assert values == [score(BRIEF, SHORT), score(BRIEF, LONG)]
    assert values[0] > values[1]
    assert scorer.counts["scored"] == 2


def test_testbed_scorer_refuses_an_unknown_user():
    with pytest.raises(UserError, match="no true persona for user 'ghost'"):
        TestbedScorer({"u1": BRIEF}).score([request(SHORT, user_id="ghost")])


def test_testbed_scorer_needs_testbed_data(tmp_path):
    with pytest.raises(UserError, match="not the testbed"):
        load_scorer("testbed", tmp_path)


@pytest.mark.parametrize(("answer", "rating"), [('{"rating": 7}', 7), ('Sure: {"rating": 10.0}', 10), ('{"rating": 0}', None),
                                                 ('{"rating": "7"}', None), ("seven", None), ('{"rating": true}', None)])
def test_parse_rating(answer, rating):
    assert parse_rating(answer)[0] == rating


def test_judge_scorer_maps_ratings_and_falls_back_after_one_retry(tmp_path):
    from userloop.models import load_model

    script = tmp_path / "judge.json"
    # first round: a valid 10, a valid 1, junk; the retry of the junk is junk again
    script.write_text(json.dumps(['{"rating": 10}', '{"rating": 1}', "no idea", "still no idea"]))
    judge = JudgeScorer(load_model(f"scripted:{script}"))
    assert judge.score([request(SHORT), request(LONG), request(SHORT)]) == [1.0, 0.0, FALLBACK_SCORE]
    assert judge.counts["valid"] == 2 and judge.counts["invalid"] == 1


def test_load_scorer_specs(tmp_path):
    script = tmp_path / "judge.json"
    script.write_text(json.dumps(['{"rating": 5}']))
    assert isinstance(load_scorer(f"scripted:{script}", None), JudgeScorer)
    with pytest.raises(UserError, match="unknown model spec 'bogus' for the scorer"):
        load_scorer("bogus", None)
    with pytest.raises(UserError, match="names nothing: expected rm:PATH"):
        load_scorer("rm:", None)
    with pytest.raises(UserError, match="no such reward model folder"):
        load_scorer(f"rm:{tmp_path / 'missing'}", None)


def test_reward_model_scorer_reads_the_persona(tmp_path):
    """A random reward model gives different scores with and without the persona, in batches or one by one."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from userloop.rlhi.reward_model import build_tokenizer

    tokenizer = build_tokenizer([SHORT, LONG, "A novice who prefers brief answers."], 300)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                       num_labels=1, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    scorer = load_scorer(f"rm:{tmp_path / 'rm'}", None)
    assert isinstance(scorer, RewardModelScorer)
    batch = [request(SHORT), request(LONG), request(SHORT, persona=None)]
    together = scorer.score(batch)
    scorer.batch_size = 1
    alone = scorer.score(batch)
    assert together == pytest.approx(alone, abs=1e-4)
    assert together[0] != pytest.approx(together[2], abs=1e-6)   # the persona is in the input
