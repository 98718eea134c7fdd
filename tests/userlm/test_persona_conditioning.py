"""Persona-conditioned user LMs: flipping with personas, ``train user-lm --personas``, broken personas files."""

import json

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.conversation import read_parquet
from userloop.errors import UserError
from userloop.userlm.flip import USER_PERSONA_PREFIX, Renderer, flip, user_system_message
from userloop.userlm.train import UserLMTrainConfig, train_user_lm

TINY = ["--hidden_size", "32", "--layers", "1", "--vocab_size", "400", "--batch_size", "4", "--max_length", "512",
        "--logging_steps", "1", "--eval_steps", "0", "--save_steps", "0"]


@pytest.fixture(scope="module")
def persona_file(prepared_testbed, tmp_path_factory):
    """Personas for every other training user and one validation user, plus a user of no split (unknown)."""
    train_users = sorted({c.user_id for c in read_parquet(prepared_testbed / "train.parquet")})
    validation_users = sorted({c.user_id for c in read_parquet(prepared_testbed / "validation.parquet")})
    chosen = train_users[::2] + validation_users[:1]
    path = tmp_path_factory.mktemp("personas") / "personas.jsonl"
    rows = [{"user_id": user, "persona": f"A novice number {n} who prefers brief answers."} for n, user in enumerate(chosen)]
    rows.append({"user_id": "nobody-in-this-data", "persona": "An expert."})
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path, set(chosen)


def _system_messages(samples, tokenizer):
    """The system message text of each sample (between the first header and the first end of turn)."""
    renderer = Renderer(tokenizer)
    texts = []
    for sample in samples:
        body = sample.ids[1 + len(renderer.header("system")):]
        texts.append(tokenizer.decode(body[:body.index(renderer.eot)]))
    return texts


def test_flip_puts_the_persona_after_the_intent_for_users_who_have_one(testbed_conversations, userlm_tokenizer):
    conversations = testbed_conversations[:12]
    with_one = {c.user_id for c in conversations[::3]}
    personas = {user: "A casual expert who wants lists." for user in with_one}
    samples, report = flip(conversations, userlm_tokenizer, personas=personas)
    systems = _system_messages(samples, userlm_tokenizer)
    for conv, system in zip(conversations, systems, strict=True):
        expected = user_system_message(conv.intent, personas.get(conv.user_id))
        assert system == expected
        assert (USER_PERSONA_PREFIX in system) == (conv.user_id in with_one)
    conditioned = sum(c.user_id in with_one for c in conversations)
    assert (report.with_persona, report.without_persona) == (conditioned, len(conversations) - conditioned)
    assert f"{conditioned:,} used conversations with a persona" in report.summary()


def test_flip_without_personas_is_unchanged_and_counts_nothing(testbed_conversations, userlm_tokenizer):
    conversations = testbed_conversations[:6]
    plain, plain_report = flip(conversations, userlm_tokenizer)
    empty, empty_report = flip(conversations, userlm_tokenizer, personas={})
    assert [s.ids for s in plain] == [s.ids for s in empty]
    assert (plain_report.with_persona, plain_report.without_persona) == (0, 0)
    assert (empty_report.with_persona, empty_report.without_persona) == (0, len(conversations))
    _, assistant_report = flip(conversations, userlm_tokenizer, role="assistant",
                               personas={c.user_id: "x" for c in conversations})
    assert assistant_report.with_persona == assistant_report.without_persona == 0


def test_train_user_lm_with_personas_reports_the_counts(prepared_testbed, persona_file, tmp_path):
    path, chosen = persona_file
    out = tmp_path / "persona-lm"
    result = CliRunner().invoke(app, ["train", "user-lm", "--data", str(prepared_testbed), "--out", str(out),
                                      "--personas", str(path), "--max_steps", "1", *TINY])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["personas"] == {"file": str(path), "records": len(chosen) + 1, "matched": len(chosen), "unmatched": 1}
    train_flip = report["flip"]["train"]
    trained_users = [c.user_id for c in read_parquet(prepared_testbed / "train.parquet")]
    assert train_flip["with_persona"] == sum(user in chosen for user in trained_users)
    assert train_flip["with_persona"] + train_flip["without_persona"] == train_flip["used"]
    assert report["flip"]["validation"]["with_persona"] >= 1


def test_personas_of_other_data_and_broken_files_are_one_line_errors(prepared_testbed, tmp_path):
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text('{"user_id": "someone-else", "persona": "An expert."}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"user_id": "u1", "persona": "An expert."}\nnot json\n')
    for path, fragment in ((stranger, "none of its 1 personas"), (broken, "broken.jsonl:2: not a persona record"),
                           (tmp_path / "missing.jsonl", "personas file not found")):
        config = UserLMTrainConfig(data=str(prepared_testbed), out=str(tmp_path / "out"), personas=str(path))
        with pytest.raises(UserError, match=fragment):
            train_user_lm(config)
        result = CliRunner().invoke(app, ["train", "user-lm", "--data", str(prepared_testbed), "--out",
                                          str(tmp_path / "out"), "--personas", str(path), *TINY])
        assert result.exit_code != 0 and fragment in result.output and "Traceback" not in result.output
    with pytest.raises(UserError, match="role user"):
        UserLMTrainConfig(role="assistant", personas=str(stranger)).validate()
