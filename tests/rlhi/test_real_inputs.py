"""Regression tests from an adversarial pass: real-log layouts, messy LLM output, zero pairs, broken inputs."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import Conversation, Message
from userloop.errors import UserError
from userloop.rlhi.extraction_eval import read_oasst_labels
from userloop.rlhi.followups import parse_judgement
from userloop.rlhi.personas import UserHistory, parse_persona

runner = CliRunner()
LONG = "Python lists are ordered collections that you can change. " * 12
FEEDBACK = ["that's wrong, it should be 42", "shorter please", "use a table", "Thanks, perfect!",
            "I don't get it, explain it more simply", "more detail please"]


def write_chat_log(path) -> None:
    """OpenAI-messages JSONL as real logs come: user ids (three users with 3+ conversations), system prompts,
    an empty follow-up, a conversation opened by the assistant, one thread repeated (a shared tree prefix)."""
    rows = []
    for n in range(10):
        messages = [{"role": "system", "content": "You are a helpful assistant."}] if n % 2 == 0 else []
        messages += [{"role": "user", "content": f"How do I cook dish number {n} for dinner tonight?"},
                     {"role": "assistant", "content": LONG}, {"role": "user", "content": FEEDBACK[n % len(FEEDBACK)]},
                     {"role": "assistant", "content": "Sure, here it is again."}]
        if n == 3:
            messages.append({"role": "user", "content": "   "})
        rows.append({"id": f"c{n}", "user_id": f"u{n % 3}", "messages": messages})
    rows.append({**rows[1], "id": "c1-branch"})
    rows.append({"id": "greeting", "user_id": "u0", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi! How can I help you today?"},
        {"role": "user", "content": "No, that's wrong, make it shorter"}]})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


@pytest.fixture(scope="module")
def real_build(tmp_path_factory, trained_classifier):
    """``rlhi build`` on a chat log with scripted rewriter and judge (and the small classifier)."""
    from userloop.rlhi import followup_classifier

    folder = tmp_path_factory.mktemp("real")
    write_chat_log(folder / "log.jsonl")
    (folder / "rewriter.json").write_bytes(orjson.dumps(["A shorter answer, as a table.", "", LONG]))
    (folder / "judge.json").write_bytes(orjson.dumps({"*": 'Sure!\n```json\n{"addresses_feedback": true}\n```'}))
    original = followup_classifier.load_offline
    followup_classifier.load_offline = lambda cache=None: trained_classifier
    try:
        result = runner.invoke(app, ["rlhi", "build", "--data", str(folder / "log.jsonl"), "--out", str(folder / "out"),
                                     "--rewriter", f"scripted:{folder / 'rewriter.json'}",
                                     "--judge", f"scripted:{folder / 'judge.json'}"])
    finally:
        followup_classifier.load_offline = original
    assert result.exit_code == 0, (result.output, result.exception)
    return folder / "out"


def test_real_log_build_skips_and_counts_what_cannot_be_paired(real_build):
    import datasets

    report = orjson.loads((real_build / "report.json").read_bytes())
    followups = [orjson.loads(line) for line in (real_build / "followups.jsonl").read_bytes().splitlines()]
    assert report["followups"]["skipped_empty"] == 1 and all(f["text"].strip() for f in followups)
    rewrites = report["rewrites"]
    assert rewrites["skipped_no_request"] == 1       # the assistant spoke first: no request to pair with
    assert rewrites["skipped_duplicate"] >= 1        # the repeated thread is rewritten once
    assert sum(rewrites["outcomes"].values()) == rewrites["candidates"] and rewrites["outcomes"]["identical"] >= 1
    pairs = datasets.load_from_disk(str(real_build / "pairs_dataset"))
    assert pairs.num_rows == report["pairs"] > 0
    assert all(row["prompt"][-1]["role"] == "user" for row in pairs)
    assert any(row["prompt"][0]["role"] == "system" for row in pairs)
    personas = [orjson.loads(line) for line in (real_build / "personas.jsonl").read_bytes().splitlines()]
    assert len(personas) == 3 and all(p["domains"] for p in personas)   # first user turn after the system prompt


def test_pairs_with_a_system_prompt_train_one_dpo_step(real_build, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from userloop.models.tiny import build_tiny_chat_model

    dataset = datasets.load_from_disk(str(real_build / "pairs_dataset"))
    dataset = dataset.filter(lambda row: row["prompt"][0]["role"] == "system").select(range(2))
    path = build_tiny_chat_model(tmp_path / "tiny", hidden_size=32, layers=2, max_positions=1024)
    model, ref = AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, max_steps=1, per_device_train_batch_size=2,
                       report_to=[], max_length=512, save_strategy="no")
    assert DPOTrainer(model=model, ref_model=ref, args=config, train_dataset=dataset,
                      processing_class=tokenizer).train().global_step == 1


def test_zero_pairs_still_give_a_loadable_dataset_and_parquet(tmp_path, small_classifier):
    import datasets
    import pyarrow.parquet as pq

    write_chat_log(tmp_path / "log.jsonl")
    (tmp_path / "no.json").write_bytes(orjson.dumps({"*": '{"addresses_feedback": false}'}))
    (tmp_path / "rw.json").write_bytes(orjson.dumps(["A different answer."]))
    result = runner.invoke(app, ["rlhi", "build", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "out"),
                                 "--rewriter", f"scripted:{tmp_path / 'rw.json'}", "--judge", f"scripted:{tmp_path / 'no.json'}"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert " 0 pairs" in result.stdout
    dataset = datasets.load_from_disk(str(tmp_path / "out" / "pairs_dataset"))
    assert dataset.num_rows == 0 and {"prompt", "chosen", "rejected", "persona"} <= set(dataset.column_names)
    assert pq.read_table(tmp_path / "out" / "pairs.parquet").column_names == dataset.column_names


def test_judge_answers_with_other_spelling_and_curly_quotes_are_accepted():
    turn = "Hmm, that's wrong.  It should be 42."
    labels, error = parse_judgement('Here is my answer:\n```json\n{"relation": "Re-Attempt", "feedback_type": '
                                    '"Make aware with correction", "feedback_text": "that\u2019s wrong. It should be 42."}\n```'
                                    "\nLet me know!", turn)
    assert error is None and labels.relation == "re_attempt" and labels.feedback_type == "make_aware_with_correction"
    assert labels.feedback_text == "that's wrong.  It should be 42."          # the turn's own text
    assert parse_judgement('{"relation": "EXTEND", "feedback_type": "None", "feedback_text": null}', turn)[0].relation == "extend"
    assert parse_judgement('{"relation": "extend", "feedback_type": "positive", "feedback_text": "thats wrong"}', turn)[1] == \
        "feedback_text does not occur verbatim in the follow-up"


def test_persona_model_answers_with_other_spelling_are_accepted_and_partial_ones_rejected():
    history = UserHistory("u", [Conversation([Message("user", "hi")], id="c", user_id="u", language="German")], [])
    full = {"expertise": "Expert", "detail": "DETAILED", "tone": "formal", "structure": "Structured",
            "domains": ["Cooking"], "language": "German", "persona": "An expert who likes detail."}
    persona, error = parse_persona(orjson.dumps(full).decode(), history)
    assert error is None and (persona.expertise, persona.detail, persona.domains) == ("expert", "detailed", ["cooking"])
    assert persona.language == "German"
    assert parse_persona(orjson.dumps({"persona": "Someone."}).decode(), history)[1].startswith("expertise")


def test_broken_inputs_get_one_line(tmp_path, small_classifier, oasst_dir):
    write_chat_log(tmp_path / "log.jsonl")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "labels.jsonl").write_text('{"id": 1}\n')
    script = tmp_path / "yes.json"
    script.write_bytes(orjson.dumps(['{"addresses_feedback": true}']))
    models = ["--rewriter", f"scripted:{script}", "--judge", f"scripted:{script}"]
    cases = [
        (["rlhi", "build", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "o1")],
         "--rewriter testbed:rewriter and --judge testbed:judge need it"),
        (["rlhi", "build", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "a_file"), *models], "is a file"),
        (["rlhi", "build", "--data", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o2"), *models],
         "no conversations read"),
        (["rlhi", "build", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o3"), *models], "no such file"),
        (["personas", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path)], "is a folder"),
        (["personas", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "a_file" / "p.jsonl")], "is a file"),
        (["personas", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "p.jsonl"), "--min-conversations", "0"],
         "at least 1"),
        (["rlhi", "evaluate", "--data", str(tmp_path / "log.jsonl"), "--real-labels", str(tmp_path / "nope.jsonl"),
          "--oasst", str(oasst_dir)], "--real-labels file not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output, result.exception)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists()
    with pytest.raises(UserError, match="not a label row"):
        read_oasst_labels(tmp_path / "labels.jsonl", oasst_dir)
