"""Personas on constructed histories, rewrites, the pair format in TRL's DPOTrainer, the real fixture, the CLI."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message
from userloop.rlhi.followups import FollowUp, Labels, extract_followups
from userloop.rlhi.personas import UserHistory, derive_offline, group_histories
from userloop.rlhi.rewrites import ScorerJudge, TestbedRewriter, candidates, rewrite_and_filter
from userloop.rlhi.taxonomy import FEEDBACK_TYPES, RELATIONS
from userloop.testbed import Persona, generate, score

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
LONG_ANSWER = ("Certainly. Here is how to plan the trip. " + "Furthermore, it is a good idea to check the result once more. " * 30
               + "Please let me know if you require further assistance.")


def history(user_turns: list[tuple[str, str, str | None]], opener: str = "Could you please plan a trip to Lisbon?") -> UserHistory:
    """One conversation per (follow-up, feedback type, span) after a long prose answer."""
    conversations, feedback = [], []
    for n, (turn, feedback_type, span) in enumerate(user_turns):
        conversation = Conversation([Message("user", opener), Message("assistant", LONG_ANSWER), Message("user", turn)],
                                    id=f"c{n}", user_id="u", language="English")
        conversations.append(conversation)
        [followup] = extract_followups(conversation)
        feedback.append((followup, Labels("re_attempt", feedback_type, span)))
    return UserHistory("u", conversations, feedback)


def no_domains(first_turns):
    return ["travel"] * len(first_turns)


def test_a_user_who_keeps_asking_for_short_lists_is_brief_and_structured():
    turns = [("shorter pls, bullet points", "make_aware_with_correction", "shorter pls, bullet points"),
             ("too long. use a list", "make_aware_with_correction", "too long. use a list"),
             ("way too long, shorter pls", "make_aware_with_correction", "way too long, shorter pls")]
    persona = derive_offline(history(turns), no_domains)
    assert (persona.detail, persona.structure, persona.domains) == ("brief", "structured", ["travel"])
    assert persona.tone == "casual"    # writes "pls", lower case: no tone complaint, no accepted answer: the register decides
    assert persona.persona == "An intermediate-level user who prefers brief, casual structured answers with lists or steps, interested in travel."


def test_complaints_and_self_descriptions_set_expertise_tone_and_prose():
    turns = [("I do not understand. Could you explain it more simply?", "ask_for_clarification",
              "I do not understand. Could you explain it more simply?"),
             ("Could you write this as a paragraph instead of a list? Please keep the tone formal.", "make_aware_with_correction",
              "Could you write this as a paragraph instead of a list? Please keep the tone formal."),
             ("Could you explain that in simpler terms?", "ask_for_clarification", "Could you explain that in simpler terms?")]
    persona = derive_offline(history(turns, opener="I'm just a beginner. Could you please plan a trip to Lisbon?"), no_domains)
    assert (persona.expertise, persona.structure, persona.tone) == ("novice", "prose", "formal")
    assert persona.evidence["votes"]["expertise"]["novice"] == 5    # two complaints + the self-description in three requests


def test_persona_text_matches_the_testbed_wording():
    from userloop.rlhi.personas import describe

    truth = Persona("expert", "detailed", "formal", "prose", ("cooking", "music"), 2, "gradual", "formal", 0.0, False, 0.5, 0.5)
    assert describe(truth.expertise, truth.detail, truth.tone, truth.structure, truth.domains) == truth.describe()


def test_testbed_rewriter_follows_the_feedback_and_passes_the_scorer(small_classifier):
    population = generate(80, seed=5)
    conversations = population.conversations()
    todo = []
    for conversation in conversations:
        followups = extract_followups(conversation)
        todo.extend(candidates(conversation, list(zip(followups, small_classifier.classify(followups), strict=True))))
    assert todo and all(c.prompt[-1]["role"] == "user" for c in todo)
    personas = {u: t["persona"] for u, t in population.user_truth().items()}
    results = rewrite_and_filter(todo, [None] * len(todo), TestbedRewriter(), ScorerJudge(personas))
    passed = [r for r in results if r.accepted]
    assert len(results) == len(todo) and passed
    for result in passed:
        persona = personas[result.candidate.followup.user_id]
        assert score(persona, result.rewrite) > score(persona, result.candidate.original)
    shorter = [r for r in passed if "too long" in r.candidate.feedback.lower() or "shorter" in r.candidate.feedback.lower()]
    assert all(len(r.rewrite.split()) < len(r.candidate.original.split()) for r in shorter)


@pytest.fixture(scope="module")
def built(tmp_path_factory, trained_classifier):
    """``userloop rlhi build`` on a small testbed, end to end through the CLI."""
    from userloop.rlhi import followup_classifier

    folder = tmp_path_factory.mktemp("rlhi")
    generate(50, seed=3).write(folder / "testbed")
    original = followup_classifier.load_offline
    followup_classifier.load_offline = lambda cache=None: trained_classifier
    try:
        result = runner.invoke(app, ["rlhi", "build", "--data", str(folder / "testbed"), "--out", str(folder / "out")])
    finally:
        followup_classifier.load_offline = original
    assert result.exit_code == 0, (result.output, result.exception)
    return folder / "out", result


def test_rlhi_build_cli_writes_every_output(built):
    out, result = built
    report = orjson.loads((out / "report.json").read_bytes())
    assert "pairs" in result.stdout and f"{report['pairs']:,} pairs" in result.stdout
    followups = [orjson.loads(line) for line in (out / "followups.jsonl").read_bytes().splitlines()]
    assert len(followups) == report["followups"]["followups"] > 0
    assert {f["relation"] for f in followups} <= set(RELATIONS) and {f["feedback_type"] for f in followups} <= set(FEEDBACK_TYPES)
    assert sum(report["followups"]["by_feedback_type"].values()) == len(followups)
    personas = [orjson.loads(line) for line in (out / "personas.jsonl").read_bytes().splitlines()]
    assert len(personas) == report["personas"]["users_with_enough_history"] > 0
    assert all(p["persona"] and p["detail"] in ("brief", "detailed") for p in personas)
    rewrites = report["rewrites"]
    assert sum(rewrites["outcomes"].values()) == rewrites["candidates"]
    assert rewrites["passed_filter"] == report["pairs"] > 0


def test_pairs_are_trl_conversational_preference_rows(built):
    import datasets

    out, _ = built
    dataset = datasets.load_from_disk(str(out / "pairs_dataset"))
    row = dataset[0]
    assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["chosen"]] == ["assistant"]
    assert row["rejected"][0]["role"] == "assistant" and row["chosen"][0]["content"] != row["rejected"][0]["content"]
    assert {"user_id", "persona", "feedback", "conversation_id"} <= set(dataset.column_names)
    assert "mirror" not in dataset.column_names   # only rlhi build --mirrors adds it (tests/rlhi/test_mirrors.py)
    assert datasets.Dataset.from_parquet(str(out / "pairs.parquet")).num_rows == dataset.num_rows


def test_pairs_train_one_dpo_step(built, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from userloop.models.tiny import build_tiny_chat_model

    out, _ = built
    dataset = datasets.load_from_disk(str(out / "pairs_dataset")).select(range(4))
    path = build_tiny_chat_model(tmp_path / "tiny", hidden_size=32, layers=2, max_positions=2048)
    model, ref = AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, max_steps=1, per_device_train_batch_size=2,
                       report_to=[], max_length=256, save_strategy="no", logging_steps=1)
    trainer = DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1


def test_personas_cli_and_scorer_judge_needs_truth(tmp_path, small_classifier):
    generate(30, seed=4).write(tmp_path / "testbed")
    result = runner.invoke(app, ["personas", "--data", str(tmp_path / "testbed"), "--out", str(tmp_path / "p.jsonl"),
                                 "--min-conversations", "2"])
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(line) for line in (tmp_path / "p.jsonl").read_bytes().splitlines()]
    assert rows and all(r["conversations"] >= 2 and set(r) >= {"user_id", "persona", "expertise", "domains", "language"} for r in rows)
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "id": "a"}\n')
    result = runner.invoke(app, ["rlhi", "build", "--data", str(plain), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--judge testbed:judge need it" in result.stderr
    result = runner.invoke(app, ["rlhi", "build", "--classifier", "gpt4", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown model spec" in result.stderr


def test_real_fixture_labels_and_spans(oasst_dir):
    from userloop.rlhi.extraction_eval import read_oasst_labels

    rows = [orjson.loads(line) for line in (FIXTURES / "oasst_followups.jsonl").read_bytes().splitlines()]
    assert len(rows) >= 150 and len({r["message_id"] for r in rows}) == len(rows)
    followups, labels = read_oasst_labels(FIXTURES / "oasst_followups.jsonl", oasst_dir)
    assert len({f.conversation_id.split("-")[0] for f in followups}) >= 50     # spread over trees (ids of leaves)
    for row, followup, label in zip(rows, followups, labels, strict=True):
        assert label.relation in RELATIONS and label.feedback_type in FEEDBACK_TYPES
        assert (label.feedback_type == "none") == (row["feedback_span_start"] is None)
        if label.feedback_text is not None:
            assert label.feedback_text.strip() == label.feedback_text and label.feedback_text in followup.text


def test_rlhi_evaluate_cli_on_a_small_testbed(tmp_path, small_classifier, oasst_dir):
    generate(40, seed=6).write(tmp_path / "testbed")
    result = runner.invoke(app, ["rlhi", "evaluate", "--data", str(tmp_path / "testbed"), "--json",
                                 "--real-labels", str(FIXTURES / "oasst_followups.jsonl"), "--oasst", str(oasst_dir)])
    assert result.exit_code == 0, (result.output, result.exception)
    report = orjson.loads(result.stdout)
    assert report["testbed"]["relation"]["accuracy"] > 0.8 and report["oasst"]["relation"]["n"] >= 150
    assert report["handmade_cv"]["relation"]["n"] >= 150
    assert set(report["personas"]["fields"]) == {"expertise", "detail", "tone", "structure", "domains"}


def test_group_histories_skips_conversations_without_user():
    conversation = Conversation([Message("user", "hi"), Message("assistant", "hello"), Message("user", "thanks")], id="x")
    followups = extract_followups(conversation)
    assert group_histories([conversation], [(followups[0], Labels("none", "positive", "thanks"))]) == {}
    assert isinstance(followups[0], FollowUp)
