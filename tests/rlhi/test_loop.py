"""The RLHI loop (userloop.rlhi.loop) end to end on tiny models, and its task checks (userloop.rlhi.tasks)."""

import dataclasses
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.rlhi import followup_classifier
from userloop.rlhi.loop import LoopConfig, run_loop, split_users
from userloop.rlhi.tasks import passes

# The simulated user: opens with a request, then complains about every answer's style (feedback the
# testbed rewriter can act on), so both kinds of pairs are made.
USER_SCRIPT = {"You are a user": "Can you help me work out the total cost for a dinner party?",
               "*": "That is too long, please make it shorter."}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from userloop.models.tiny import build_tiny_chat_model

    root = tmp_path_factory.mktemp("loop-models")
    policy = build_tiny_chat_model(root / "policy", hidden_size=32, layers=2)
    script = root / "user.json"
    script.write_text(json.dumps(USER_SCRIPT))
    return policy, f"scripted:{script}"


def config(models, prepared, **changes) -> LoopConfig:
    policy, user = models
    return LoopConfig(**({"policy": str(policy), "user": user, "rounds": 2, "data": str(prepared), "users": 4,
                          "eval_users": 3, "turns": 2, "n": 2, "max_steps": 2, "batch_size": 2, "max_new_tokens": 12,
                          "min_conversations": 1} | changes))


@pytest.fixture(scope="module")
def finished(models, prepared, tmp_path_factory, trained_classifier):
    """A 2-round loop, run once for the module, with the conftest's small offline classifier."""

    trained = trained_classifier
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    out = tmp_path_factory.mktemp("loop") / "run"
    try:
        report = run_loop(config(models, prepared), out)
        yield out, report, trained
    finally:
        monkeypatch.undo()


def test_two_rounds_train_evaluate_and_report(finished):
    out, report, _ = finished
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds[1:]:
        assert r["source"] == "simulated" and r["users"] == 4
        assert r["interaction"]["followups"] > 0 and r["interaction"]["feedback_rate"] > 0
        assert r["pairs"]["total"] == r["pairs"]["guided"] + r["pairs"]["sampled"] > 0
        assert r["training"]["trained"] and r["training"]["steps"] == 2
        assert (out / f"round-{r['round']}" / "model.safetensors").is_file()
        assert (out / f"round-{r['round']}" / "conversations.jsonl").is_file()
    assert rounds[2]["policy_start"] == rounds[1]["policy"]          # round 2 starts from round 1's policy
    for r in rounds:
        evaluation = r["eval"]
        assert 0 <= evaluation["persona_match"] <= 1 and 0 <= evaluation["task_success"] <= 1
        assert 0 <= evaluation["feedback_rate"] <= 1 and evaluation["followups"] > 0
    assert report["rounds"][-1]["policy"].endswith("round-2")
    changes = report["paired_changes_from_round_0"]
    assert [c["round"] for c in changes] == [1, 2] and all(c["users"] == rounds[0]["eval"]["conversations_with_an_answer"] for c in changes)
    assert "| 2 |" in (out / "report.md").read_text()


def test_roles_and_guard_are_recorded(finished, models):
    out, report, _ = finished
    policy, user = models
    assert report["roles"]["policy"] == str(policy) and report["roles"]["user"] == user
    assert report["roles"]["scorer"] == "testbed" and report["roles"]["rewriter"] == "testbed:rewriter"
    assert report["roles"]["judge"] == "testbed:judge"
    users = json.loads((out / "users.json").read_text())
    held_out = {e["user_id"] for e in users["held_out"]}
    assert held_out and not held_out & set(users["train_pool"])
    assert report["guard"]["shared_users"] == 0 and report["guard"]["shared_persona_texts"] == 0


def test_simulated_conversations_run_on_the_engine_and_end_in_its_vocabulary(finished):
    from userloop.conversation import read_jsonl
    from userloop.simulate.engine import END_REASONS

    out, _, _ = finished
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert all(set(r["eval"]["ends"]) <= set(END_REASONS) for r in rounds)
    assert all(set(r["interaction"]["ends"]) <= set(END_REASONS) for r in rounds[1:])
    conversations = list(read_jsonl(out / "round-1" / "conversations.jsonl"))
    assert len(conversations) == 4
    for conversation in conversations:   # the scripted user never ends: 2 answers, and its reaction is the last word
        assert conversation.extra["end"] == "max_turns"
        assert [m.role for m in conversation.messages] == ["user", "assistant", "user", "assistant", "user"]
        assert conversation.messages[-1].content == USER_SCRIPT["*"]


def test_the_testbed_users_play_the_loop_as_ground_truth(models, prepared, tmp_path, trained_classifier, monkeypatch):
    """--user testbed:users: each episode's user is the testbed user of its logged conversation, reading the
    policy's text; their feedback becomes pairs and the held-out users are testbed users too."""
    from userloop.conversation import read_jsonl
    from userloop.simulate.testbed_users import TestbedUsers, testbed_scenarios

    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained_classifier)
    out = tmp_path / "run"
    report = run_loop(config(models, prepared, user=" testbed:users ", rounds=1), out)
    assert report["roles"]["user"] == "testbed:users" and "the testbed users" in report["roles"]["evaluation"]
    users = json.loads((out / "users.json").read_text())
    openings = {s.id: s for split in ("train", "test") for s in testbed_scenarios(prepared, split).scenarios}
    for name, episodes in (("round-1/conversations.jsonl", None), ("round-0/eval_conversations.jsonl", users["held_out"])):
        conversations = list(read_jsonl(out / name))
        assert conversations and all(c.messages[0].role == "user" for c in conversations)
        if episodes is not None:   # held-out user i opens as the testbed user of its logged conversation, seed i
            for i, (conversation, episode) in enumerate(zip(conversations, episodes, strict=True)):
                scenario = dataclasses.replace(openings[episode["conversation_id"]], id=f"eval-{i}")
                assert conversation.user_id == episode["user_id"]
                assert conversation.messages[0].content == TestbedUsers().next_turn(scenario, [], i).text
    [round_one] = report["rounds"][1:]
    assert round_one["interaction"]["followups"] > 0 and round_one["pairs"]["total"] > 0
    assert round_one["training"]["trained"] and 0 <= round_one["eval"]["persona_match"] <= 1
    again = run_loop(config(models, prepared, user="testbed:users", rounds=1), out)   # the same users: resumed as it was
    assert again["rounds"] == report["rounds"]


def test_a_user_lm_loop_can_be_evaluated_by_the_testbed_users(finished, models, prepared, tmp_path, monkeypatch):
    """--eval-user testbed:users: the user LM trains the policy, the ground truth evaluates it (the same
    held-out conversations as a loop of testbed users before any training)."""
    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    report = run_loop(config(models, prepared, eval_user="testbed:users", rounds=1), tmp_path / "run")
    truth = run_loop(config(models, prepared, user="testbed:users", rounds=1), tmp_path / "truth")
    assert report["roles"]["user"] == models[1] and report["roles"]["eval_user"] == "testbed:users"
    assert report["rounds"][0]["eval"] == truth["rounds"][0]["eval"]   # round 0: the same policy, the same users
    assert report["rounds"][1]["interaction"]["ends"] == {"max_turns": 4}   # the scripted user LM never ends


def test_mirrors_reverse_round_pairs_for_training_users_the_judge_agrees_with(finished, models, prepared, tmp_path,
                                                                           monkeypatch):
    """--mirrors: each round pair is offered, reversed, to another training user; a mirror is kept only when
    the testbed judge (true persona) prefers its chosen answer, and held-out users never get one."""
    import pyarrow.parquet as pq

    from userloop.testbed import read_truth, score
    from userloop.testbed.population import truth_folder

    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    out = tmp_path / "run"
    report = run_loop(config(models, prepared, mirrors=True, rounds=1, users=6, n=4, max_new_tokens=24), out)
    [round_one] = report["rounds"][1:]
    counts, made = round_one["counts"], round_one["pairs"]
    originals = made["guided"] + made["sampled"]
    assert made["total"] == originals + made["mirrors"]
    outcomes = {k: v for k, v in counts.items() if k.startswith("mirror_")}
    assert sum(outcomes.values()) == originals and outcomes.get("mirror_passed", 0) == made["mirrors"]
    rows = pq.read_table(out / "round-1" / "pairs.parquet").to_pylist()
    assert [r["mirror"] for r in rows] == [False] * originals + [True] * made["mirrors"]
    true_personas = {u: r["persona"] for u, r in read_truth(truth_folder(prepared))[0].items()}
    users = json.loads((out / "users.json").read_text())
    originals_by_answers = {(r["conversation_id"], r["chosen"][0]["content"], r["rejected"][0]["content"]): r
                            for r in rows if not r["mirror"]}
    for mirror in (r for r in rows if r["mirror"]):
        original = originals_by_answers[(mirror["conversation_id"], mirror["rejected"][0]["content"], mirror["chosen"][0]["content"])]
        assert mirror["user_id"] in users["train_pool"] and mirror["persona"] != original["persona"]
        truth = true_personas[mirror["user_id"]]
        assert score(truth, mirror["chosen"][0]["content"]) > score(truth, mirror["rejected"][0]["content"])
    assert made["mirrors"] > 0
    more = run_loop(config(models, prepared, mirrors=True, rounds=2, users=6, n=4, max_new_tokens=24), out)  # --rounds 2:
    assert [r["round"] for r in more["rounds"]] == [0, 1, 2] and more["rounds"][:2] == report["rounds"]  # goes on
    assert json.loads((out / "config.json").read_text())["rounds"] == 2


def test_the_task_scorer_and_corrector_play_the_loop(finished, models, prepared, tmp_path, monkeypatch):
    """--scorer testbed:task-scorer --rewriter testbed:corrector --sft-weight 1 --reference initial with the
    testbed users: every
    sampled answer is scored, with the task's check where its request states a whole task; what each role did
    is counted per round; DPO trains with the SFT term."""
    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    report = run_loop(config(models, prepared, user="testbed:users", rounds=1, users=6, n=2, max_new_tokens=24,
                             scorer="testbed:task-scorer", rewriter="testbed:corrector", sft_weight=1.0,
                             reference="initial"),
                      tmp_path / "run")
    [round_one] = report["rounds"][1:]
    counts = round_one["counts"]
    scored = sum(n for k, n in counts.items() if k in ("scorer_checked_solved", "scorer_checked_unsolved", "scorer_unchecked"))
    assert scored == counts["scorer_scored"] == round_one["sampling"]["requests"] * 2
    assert counts.get("scorer_checked_solved", 0) + counts.get("scorer_checked_unsolved", 0) > 0
    assert report["roles"]["scorer"] == "testbed-task" and report["roles"]["rewriter"] == "testbed:corrector"
    assert round_one["training"]["trained"] and report["config"]["sft_weight"] == 1.0   # DPO with the SFT term,
    assert report["config"]["reference"] == "initial"                                  # against the initial policy


def test_checked_anchors_are_the_initial_policys_passing_answers_and_join_every_rounds_loss(finished, models, prepared,
                                                                                            tmp_path, monkeypatch):
    """--anchors N: the initial policy answers N training tasks once; those passing the check (here every task
    but math's, by a stand-in check: the tiny policy passes none) are the anchors, and DPO adds their NLL."""
    from userloop.rlhi import task_answers
    from userloop.rlhi.anchors import read_anchors

    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    monkeypatch.setattr(task_answers, "passes", lambda task, answer: task["family"] != "math")
    report = run_loop(config(models, prepared, rounds=1, anchors=12, anchor_weight=0.5), tmp_path / "run")
    anchors = read_anchors(tmp_path / "run" / "anchors.jsonl")
    counts = report["anchors"]
    assert counts["tried"] == 12 and counts["passed"] == len(anchors) == 12 - counts["by_family"].get("math", [0, 0])[1]
    assert all(a["family"] != "math" and a["completion"][0]["role"] == "assistant" for a in anchors)
    assert {a["user_id"] for a in anchors} <= set(json.loads((tmp_path / "run" / "users.json").read_text())["train_pool"])
    assert all(a["persona"] and a["prompt"][0]["role"] == "user" for a in anchors)   # persona kept apart
    training = report["rounds"][1]["training"]
    assert training["trained"] and training["anchor_nll_mean"] > 0
    monkeypatch.setattr(task_answers, "passes", lambda task, answer: False)
    with pytest.raises(UserError, match="none of the initial policy's 12 answers"):
        run_loop(config(models, prepared, rounds=1, anchors=12), tmp_path / "none")


def test_renewed_anchors_take_each_tasks_newest_passing_answer(finished, models, prepared, tmp_path, monkeypatch):
    """--anchors-refresh: round 2's starting policy answers the same tasks again; a task it passes gets the new
    answer, one it no longer passes keeps its anchor (here the stand-in check passes all but math for the
    initial anchors, then facts only)."""
    from userloop.rlhi import task_answers
    from userloop.rlhi.anchors import read_anchors

    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    calls = Counter()

    def stand_in(task, answer):
        calls["n"] += 1
        return task["family"] == "fact" or (calls["n"] <= 12 and task["family"] != "math")

    monkeypatch.setattr(task_answers, "passes", stand_in)
    report = run_loop(config(models, prepared, rounds=2, anchors=12, anchors_refresh=True), tmp_path / "run")
    initial = read_anchors(tmp_path / "run" / "anchors.jsonl")
    facts = [a["conversation_id"] for a in initial if a["family"] == "fact"]
    assert facts and len(facts) < len(initial)
    assert not (tmp_path / "run" / "round-1" / "anchors.jsonl").exists()     # round 1 starts from the initial policy
    renewed = read_anchors(tmp_path / "run" / "round-2" / "anchors.jsonl")
    assert [a["conversation_id"] for a in renewed] == [a["conversation_id"] for a in initial]
    counts = report["rounds"][2]["counts"]
    assert counts["anchors_renewed"] == len(facts) and counts["anchors_gained"] == 0
    assert counts["anchors_kept_from_before"] == len(initial) - len(facts)
    kept = {a["conversation_id"]: a for a in initial}
    assert all(a == kept[a["conversation_id"]] for a in renewed if a["family"] != "fact")


def test_mirrors_with_a_personas_file_of_texts_only(finished, models, prepared, tmp_path, monkeypatch):
    """A personas file without the axes (user_id and persona only): a rewrite pair's mirror needs a user known
    to prefer the opposite, so none is made; a sampled pair's needs only another persona text."""
    import pyarrow.parquet as pq

    from userloop.rlhi.build import read_split_conversations
    from userloop.rlhi.user_rewards import derive_personas, label_followups

    _, _, trained = finished
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    texts: dict[str, str] = {}
    for split in ("train", "test"):
        conversations = read_split_conversations(prepared, split)
        texts |= derive_personas(conversations, label_followups(conversations, None, Counter()), 1)
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps({"user_id": u, "persona": t}) + "\n" for u, t in texts.items()))
    out = tmp_path / "run"
    report = run_loop(config(models, prepared, mirrors=True, rounds=1, users=6, n=4, max_new_tokens=24,
                             personas=str(personas)), out)
    [round_one] = report["rounds"][1:]
    rows = pq.read_table(out / "round-1" / "pairs.parquet").to_pylist()
    assert round_one["pairs"]["guided"] > 0 and round_one["pairs"]["mirrors"] > 0
    assert all(row["feedback"] is None for row in rows if row["mirror"])
    assert round_one["counts"]["mirror_no_user_prefers_the_opposite"] >= round_one["pairs"]["guided"] - \
        round_one["counts"].get("mirror_no_style_change_asked", 0)


def test_rounds_written_with_old_end_reasons_are_read_in_todays(tmp_path):
    from userloop.rlhi.loop import _read_rounds

    rows = [{"round": 0, "eval": {"ends": {"turn_cap": 2}}},
            {"round": 1, "interaction": {"ends": {"context": 1, "turn_cap": 3}}, "eval": {"ends": {"user_ended": 2}}}]
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    rounds = _read_rounds(tmp_path)
    assert rounds[0]["eval"]["ends"] == {"max_turns": 2}
    assert rounds[1]["interaction"]["ends"] == {"context": 1, "max_turns": 3} and rounds[1]["eval"]["ends"] == {"user_ended": 2}
    assert "turn_cap" not in (tmp_path / "rounds.jsonl").read_text()   # rewritten as read


def test_a_round_whose_every_conversation_fails_is_one_error():
    from userloop.models import GenerationParams
    from userloop.models.mock import MockModel
    from userloop.rlhi.loop import Episode, UserSide, converse
    from userloop.userlm.simulator import UserSimulator

    def unreachable(messages, **settings):
        raise RuntimeError("server gone")

    user = UserSimulator(MockModel("user", replies=["Help me plan a dinner for six people"]))
    episodes = [Episode("u1", "Prefers brief answers.", "c1", "You are a user planning a dinner.")]
    with pytest.raises(UserError, match="every simulated conversation failed.*server gone"):
        converse(MockModel("policy", replies=unreachable), UserSide(user, None), episodes, 2, GenerationParams(max_new_tokens=8), True, "t")


def test_rerun_resumes_without_redoing_rounds(finished, models, prepared):
    out, _, trained = finished
    before = (out / "rounds.jsonl").read_bytes()
    stamp = (out / "round-1" / "model.safetensors").stat().st_mtime_ns
    monkeypatch = pytest.MonkeyPatch()

    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    try:
        run_loop(config(models, prepared), out)
        assert (out / "rounds.jsonl").read_bytes() == before
        assert (out / "round-1" / "model.safetensors").stat().st_mtime_ns == stamp
        with pytest.raises(UserError, match="different config"):
            run_loop(config(models, prepared, users=5), out)
        saved = json.loads((out / "config.json").read_text())  # written before the role providers ("testbed") and
        saved.pop("mirrors")                                    # before --mirrors (absent: its default)
        (out / "config.json").write_text(json.dumps({**saved, "scorer": "testbed", "rewriter": "testbed"}))
        run_loop(config(models, prepared), out)
        assert (out / "rounds.jsonl").read_bytes() == before
    finally:
        monkeypatch.undo()


def test_training_and_held_out_users_and_personas_are_disjoint():
    from userloop.conversation import Conversation, Message

    def conversation(user_id):
        return Conversation([Message("user", "hi")], id=f"c-{user_id}", user_id=user_id, intent="You are a user.")

    personas = {"a": "P1", "b": "P2", "c": "P1", "d": "P3", "t1": "P1", "t2": "P4"}
    train = [conversation(u) for u in ("a", "b", "c", "d", "t2")]
    test = [conversation(u) for u in ("t1", "t2")]
    population = split_users(train, test, personas, eval_users=5, seed=0)
    assert {e.user_id for e in population.held_out} == {"t1", "t2"}
    assert set(population.train) == {"b", "d"}       # a and c share t1's persona, t2 is held out
    assert population.guard["train_users_left_out_sharing_a_held_out_persona"] == 3    # a, c and t2 itself
    assert population.guard["train_users_left_out_also_in_test"] == 1
    with pytest.raises(UserError, match="nothing to evaluate"):
        split_users(train, test, {"a": "P1"}, eval_users=5, seed=0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"policy": ""}, "--policy is required"),
    ({"policy": "/no/such/folder"}, "no such model folder"),
    ({"user": ""}, "--user is required"),
    ({"user": "nonsense:x"}, "unknown model spec"),
    ({"eval_user": "nonsense:x"}, "unknown model spec"),
    ({"baseline": "replay"}, "--baseline must be one of"),
    ({"rounds": 0}, "rounds must be at least 1"),
    ({"n": 1}, "n must be at least 2"),
    ({"rewriter": "bad"}, "unknown model spec"),
    ({"personas": "/no/such.jsonl"}, "no such file"),
    ({"reference": "base"}, "--reference must be one of previous, initial"),
    ({"sft_weight": -1.0}, "sft_weight must be 0"),
    ({"anchors": -1}, "anchors must be 0"),
    ({"anchors": 4, "anchor_weight": 0.0}, "anchor_weight positive"),
])
def test_config_errors_are_one_line(models, prepared, changes, message):
    with pytest.raises(UserError, match=message):
        config(models, prepared, **changes).validate()


def test_loop_needs_the_testbed_truth(models, tmp_path):
    from userloop.conversation import Conversation, Message, write_parquet

    folder = tmp_path / "plain"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        write_parquet([Conversation([Message("user", "hi")], id=split, user_id="u")], folder / f"{split}.parquet")
    with pytest.raises(UserError, match="not the testbed"):
        run_loop(config(models, folder), tmp_path / "out")


def test_cli_rlhi_loop(finished, models, prepared):
    out, _, trained = finished
    policy, user = models

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(followup_classifier, "load_offline", lambda cache=None: trained)
    try:   # the finished run, resumed through the command: nothing new to do, the summary printed
        result = CliRunner().invoke(app, ["rlhi", "loop", "--policy", str(policy), "--user", user, "--rounds", "2",
                                          "--data", str(prepared), "--out", str(out), "--users", "4", "--eval-users", "3",
                                          "--n", "2", "--max-steps", "2", "--batch-size", "2", "--max-new-tokens", "12",
                                          "--min-conversations", "1"])
        assert result.exit_code == 0, result.output
        assert "round 2" in result.output and "persona match" in result.output
        bad = CliRunner().invoke(app, ["rlhi", "loop", "--policy", str(policy), "--user", user, "--out",
                                       str(out.parent / "x"), "--rounds", "0"])
        assert bad.exit_code == 2 and "rounds must be at least 1" in bad.output
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize(("task", "good", "bad"), [
    ({"family": "math", "check": {"answer": 52}}, "So the total is 52.", "So the total is 57."),
    ({"family": "fact", "check": {"answer": "Lima"}}, "The capital of Peru is Lima.", "It is Cusco."),
    ({"family": "writing", "check": {"max_words": 20, "must_include": ["apron"]}},
     "Here is the email.\n\nDear teacher, I will bring my apron.\n\nFeel free to adjust it.", "Dear teacher, see you."),
    ({"family": "recommendation", "domain": "cooking", "check": {"tag": "vegetarian", "matching": ["lentil soup", "shakshuka"]}},
     "Try lentil soup or shakshuka.", "Try lentil soup or beef stew."),
    ({"family": "code", "check": {"entry_point": "clamp", "tests": "assert clamp(50) == 50\nassert clamp(-5) == 0"}},
     "```python\ndef clamp(value):\n    return max(0, min(100, value))\n```", "def clamp(value):\n    return value"),
])
def test_task_checks(task, good, bad):
    assert passes(task, good) and not passes(task, bad)
