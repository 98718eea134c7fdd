"""The issue's whole path through the CLI, as a user runs it: data -> intents -> flip + train -> perplexity -> simulate."""

import json

import orjson
from test_train import TINY
from typer.testing import CliRunner

from userloop.cli import app


def test_data_to_intents_to_training_to_a_simulated_user_turn(prepared_testbed, tmp_path):
    runner = CliRunner()
    with_intents = tmp_path / "with-intents"
    result = runner.invoke(app, ["intents", "--data", str(prepared_testbed), "--out", str(with_intents), "--overwrite"])
    assert result.exit_code == 0, result.output
    written = json.loads((with_intents / "report.json").read_text())["intents"]
    assert written["offline_fallback"] == written["conversations"] > 0 and written["kept"] == 0

    checkpoint = tmp_path / "user-lm"
    result = runner.invoke(app, ["train", "user-lm", "--data", str(with_intents), "--out", str(checkpoint),
                                 "--max_steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((checkpoint / "train_report.json").read_text())["flip"]["train"]["skipped_without_intent"] == 0

    result = runner.invoke(app, ["eval-ppl", str(checkpoint), "--data", str(with_intents), "--json"])
    assert result.exit_code == 0, result.output
    perplexity = json.loads(result.stdout[result.stdout.index("{"):])
    assert perplexity["with_intent"]["perplexity"] > 1 and perplexity["without_intent"]["perplexity"] > 1

    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"role": "user", "content": "help me write a poem about rain"},
                                   {"role": "assistant", "content": "Rain falls softly on the roof."}]))
    result = runner.invoke(app, ["user-turn", "--user", f"hf:{checkpoint}", "--history", str(history), "--seed", "1",
                                 "--intent", "You are a user chatting with an assistant language model to get a poem."])
    assert result.exit_code == 0, result.output
    turn = orjson.loads(result.stdout)
    assert set(turn) == {"text", "ended", "events"} and isinstance(turn["text"], str)
    assert turn["ended"] is False   # the second user turn may not end the conversation by default
    assert not turn["text"].startswith(("I ", "You ", "Here "))
