import random
from collections import Counter

import orjson
import pytest

from userloop.data.prepare import PrepareConfig, prepare
from userloop.data.readers import read_conversations
from userloop.errors import UserError
from userloop.statistics import first_turn_diversity
from userloop.testbed import generate, read_truth
from userloop.testbed.dialogue import choose_task, converse
from userloop.testbed.persona import sample_persona


def test_same_seed_same_population_and_prefix_property():
    a, b = generate(40, seed=3), generate(40, seed=3)
    assert a.records == b.records and a.truth == b.truth
    c = generate(60, seed=3)
    assert c.records[: len(a.records)] == a.records  # the first N users do not depend on the population size
    assert generate(40, seed=4).records != a.records


def test_user_identity_matches_wildchat_grouping(population):
    users = population.user_truth()
    for record in population.records:
        assert record["hashed_ip"] in users
        user = users[record["hashed_ip"]]
        assert record["header"]["user-agent"] == user["user_agent"]
        assert record["country"] == user["country"]
    counts = Counter(r["hashed_ip"] for r in population.records)
    assert all(counts[uid] == u["conversations"] for uid, u in users.items())
    assert max(counts.values()) >= 10 and min(counts.values()) == 1  # long-tailed


def test_every_conversation_has_a_truth_record_with_the_reader_id(population):
    truth = population.conversation_truth()
    conversations = population.conversations()
    assert len(truth) == len(conversations) == len(population.records)
    for conv in conversations:
        t = truth[conv.id]
        assert conv.user_id == t["user_id"]
        assert conv.intent == t["intent"]
        assert t["intent"].startswith("You are a user chatting with an assistant language model to ")
        assert len(t["turns"]) == len(conv.messages)
        assert [m.role for m in conv.messages] == [x["role"] for x in t["turns"]]


def test_prepare_accepts_the_output_with_nothing_bad(tmp_path, population):
    population.write(tmp_path / "raw")
    result = prepare([str(tmp_path / "raw" / "conversations.jsonl")], tmp_path / "prepared", PrepareConfig())
    report = result.report
    assert report["lines"]["bad_lines"] == 0
    dropped = report["conversations"]["dropped"]
    assert sum(v for k, v in dropped.items() if k not in ("exact_duplicate", "near_duplicate")) == 0
    assert dropped["exact_duplicate"] + dropped["near_duplicate"] < 0.03 * len(population.records)
    users, truth = read_truth(tmp_path / "raw")
    kept = list(read_conversations([str(tmp_path / "prepared")]))
    assert kept and all(c.id in truth and c.intent == truth[c.id]["intent"] for c in kept)
    assert all(c.extra["detailed_intent"] == truth[c.id]["detailed_intent"] for c in kept)
    summary = orjson.loads((tmp_path / "raw" / "summary.json").read_bytes())
    assert summary["users"] == len(users) == 400


def test_read_truth_reports_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="no testbed truth"):
        read_truth(tmp_path)


def test_generate_rejects_no_users():
    with pytest.raises(UserError):
        generate(0)


def test_first_turn_diversity_above_target():
    population = generate(700, seed=11)
    turns = [r["conversation"][0]["content"] for r in population.records]
    sample = random.Random(0).sample(turns, 2000)
    assert first_turn_diversity(sample) > 85


def test_first_turn_forms_per_family_are_many():
    """Several hundred distinct first-turn forms per family, with the task's own content masked out."""
    rng = random.Random(5)
    forms: dict[str, set[str]] = {}
    for _ in range(6000):
        persona = sample_persona(rng)
        dialogue = converse(rng, persona, lambda f, d, p=persona: choose_task(rng, p, f, d))
        task = dialogue.tasks[0]
        text = dialogue.turns[0].text.lower()
        for piece in sorted([s.text.lower() for s in task.shards] + [task.full_request.lower()], key=len, reverse=True):
            text = text.replace(piece, "<task>")
        forms.setdefault(task.family, set()).add(text)
    assert all(len(f) >= 200 for f in forms.values()), {k: len(v) for k, v in forms.items()}


def test_the_detailed_intent_holds_every_task_in_full(population):
    for truth in population.conversation_truth().values():
        detailed = truth["detailed_intent"]
        assert detailed.startswith(truth["intent"][:-1].split(", and then to ")[0])
        assert all(f"{task['purpose']}: {task['full_request']}" in detailed for task in truth["tasks"])
        assert detailed.count(", and then to ") == truth["intent"].count(", and then to ") == len(truth["tasks"]) - 1
