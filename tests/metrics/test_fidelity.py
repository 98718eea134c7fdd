import asyncio
import json

import pytest

from userloop.conversation import Conversation, Message
from userloop.metrics.fidelity import (
    Behaviour,
    alternating_messages,
    classify_feedback,
    feedback_share,
    fidelity_distances,
    ks_statistic,
    real_behaviour,
    replay,
    simulated_behaviour,
    split_half,
    vocabulary_overlap,
    wasserstein,
)
from userloop.models.base import GenerationParams
from userloop.models.mock import MockModel
from userloop.rlhi.followups import Labels
from userloop.userlm.simulator import GuardrailConfig, UserSimulator, guardrails_for

RAW = GuardrailConfig(filter_first_tokens=False, avoid_termination=False, length_thresholds=False, filter_repetition=False,
                      samples_per_call=1)


def _conversation(turns, cid="c"):
    roles = ["user", "assistant"] * len(turns)
    return Conversation([Message(r, t) for r, t in zip(roles, turns)], id=cid, intent="get help with a trip")


def test_distances_by_hand():
    assert wasserstein([0, 1, 3], [5, 6, 8]) == pytest.approx(5.0)     # every point moves 5
    assert wasserstein([1, 2], [1, 2, 2, 1]) == 0.0
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert wasserstein([], [1]) is None and ks_statistic([1], []) is None
    assert vocabulary_overlap({"a", "b", "c"}, {"b", "c", "d"}) == pytest.approx(50.0)
    assert vocabulary_overlap(set(), set()) is None


def test_alternating_messages_drops_system_and_refuses_broken_order():
    conv = Conversation([Message("system", "be nice"), Message("user", "hi"), Message("assistant", "hello")])
    assert [m["role"] for m in alternating_messages(conv)] == ["user", "assistant"]
    assert alternating_messages(Conversation([Message("assistant", "hi"), Message("user", "yo")])) is None
    assert alternating_messages(Conversation([Message("user", "a"), Message("user", "b")])) is None


def test_replay_gold_and_predicted_ends(tmp_path):
    script = tmp_path / "sim.json"
    # opening, then one reply per real assistant turn (3 in the first conversation, 1 in the second)
    script.write_text(json.dumps(["plan my trip", "cheaper please", "<|endconversation|>", "ok", "hi", "more"]))
    simulator = UserSimulator(f"scripted:{script}", RAW)
    ends_on_assistant = _conversation(["plan a trip", "Here is a plan.", "cheaper", "Cheaper plan.", "thanks", "Welcome."])
    ends_on_user = _conversation(["hello", "Hi!", "unanswered"], "d")
    broken = Conversation([Message("assistant", "hi")], id="x")
    replays, counts = asyncio.run(replay(simulator, [ends_on_assistant, ends_on_user, broken]))
    assert counts == {"not_alternating": 1, "opening_unfit": 0, "shortened_histories": 0, "truncated": 0} and len(replays) == 2
    first, second = replays
    assert first.first.text == "plan my trip"
    assert first.predicted_end() == [False, True, False] and first.gold_end() == [False, False, True]
    assert second.predicted_end() == [False] and second.gold_end() == [False]   # no observed end
    assert first.simulated_end() == 2 and second.simulated_end() is None

    sim = simulated_behaviour(first)
    assert sim.turn_lengths == [3, 2] and sim.user_turns == 2 and sim.end_turn == 2
    assert [f.text for f in sim.followups] == ["cheaper please"]
    assert sim.followups[0].previous_assistant == "Here is a plan." and sim.followups[0].previous_user == "plan a trip"
    censored = simulated_behaviour(second)
    assert censored.user_turns == 2 and censored.end_turn is None   # never ended: real assistant turns + 1
    real = real_behaviour(first.conversation, first.messages)
    assert real.user_turns == 3 and real.end_turn == 3 and real.turn_lengths == [3, 1, 1]
    assert real_behaviour(second.conversation, second.messages).end_turn is None


class _Stub:
    def classify(self, followups, on_progress=None):
        return [Labels("extend", "positive" if "thanks" in f.text else "none", None) for f in followups]


def test_fidelity_distances_by_hand():
    real = [real_behaviour(c, alternating_messages(c)) for c in
            (_conversation(["a b", "A.", "thanks c", "B."]), _conversation(["a", "A."], "e"))]
    simulated = [Behaviour([2], 1, 1, [], {"a", "b"}), Behaviour([2, 4], 2, None, [], {"z"})]
    classify_feedback(real + simulated, _Stub())
    assert feedback_share(real) == 100.0 and feedback_share(simulated) is None
    d = fidelity_distances(simulated, real)
    assert d["fidelity_turn_length_wasserstein"] == pytest.approx(1.0)   # sorted {2,2,4} vs {1,2,2}: (1+0+2)/3
    assert d["fidelity_user_turns_wasserstein"] == 0.0                           # {1,2} vs {2,1}
    assert d["fidelity_end_turn_ks"] == pytest.approx(0.5)                        # {1} vs {2,1}
    assert d["fidelity_feedback_share_diff"] is None
    assert d["fidelity_vocabulary_overlap"] == pytest.approx(100 * 2 / 5)        # {a,b,z} vs {a,b,thanks,c}: 2 shared of 5


def test_split_half_is_a_partition():
    items = [Behaviour([i], 1, 1, [], set()) for i in range(7)]
    a, b = split_half(items, seed=1)
    assert len(a) == 3 and len(b) == 4 and sorted(x.turn_lengths[0] for x in a + b) == list(range(7))


class _ShortContext:
    """A simulator whose context holds at most ``limit`` history messages (refuses longer ones like an hf: model)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, []

    async def anext_turns(self, intents, histories):
        from userloop.errors import UserError
        from userloop.userlm.simulator import UserTurn

        if len(histories[0]) > self.limit:
            raise UserError("prompt exceeds the context")
        self.seen.append([m["content"] for m in histories[0]])
        return [UserTurn("<|endconversation|>" if len(self.seen) > 3 else "go on", False, [])]


def test_replay_cuts_a_long_history_from_the_start_instead_of_dropping_the_end():
    long = _conversation(["u1", "a1", "u2", "a2", "u3", "a3"])
    simulator = _ShortContext(limit=2)
    replays, counts = asyncio.run(replay(simulator, [long]))
    assert counts["shortened_histories"] == 2 and counts["truncated"] == 0
    (item,) = replays
    assert not item.truncated and item.gold_end() == [False, False, True]   # the real end is still a decision point
    assert max(map(len, simulator.seen)) == 2 and ["u2", "a2"] in simulator.seen and ["u3", "a3"] in simulator.seen
    replays, counts = asyncio.run(replay(_ShortContext(limit=0), [long]))   # not even one exchange fits
    assert counts["truncated"] == 1 and replays[0].after == [] and replays[0].gold_end() == []


def test_each_decision_point_samples_with_its_own_seed():
    """One seed for every point would make all end decisions the same draw (a random threshold, not sampling)."""
    seeds = []

    def reply(messages, seed=None, **settings):
        seeds.append(seed)
        return "<|endconversation|>" if seed % 2 else "go on"

    conversations = [_conversation(["u1", "a1", "u2", "a2", "u3", "a3"], cid=f"c{i}") for i in range(6)]
    raw = guardrails_for("off")
    simulator = UserSimulator(MockModel(replies=reply), raw, GenerationParams(seed=5))
    replays, _ = asyncio.run(replay(simulator, conversations))
    assert len(set(seeds)) == len(seeds) == 6 * 4          # opening turn + 3 decision points per conversation
    ends = [end for item in replays for end in item.predicted_end()]
    assert 0 < sum(ends) < len(ends)                        # decisions differ between points
    again_replays, _ = asyncio.run(replay(UserSimulator(MockModel(replies=reply), raw, GenerationParams(seed=5)),
                                          list(reversed(conversations))))
    again = {item.conversation.id: item.predicted_end() for item in again_replays}
    assert again == {item.conversation.id: item.predicted_end() for item in replays}   # per point, whatever the order
