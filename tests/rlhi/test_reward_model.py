"""The reward model: testbed pairs whose preference depends on the persona, the held-out split, training
with TRL's RewardTrainer (tiny), loading it back as a scorer, and the config parser."""

from collections import Counter

import orjson
import pytest

from userloop.errors import UserError
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.reward_model import (
    RewardTrainConfig,
    build_tokenizer,
    held_out_user,
    parse_config,
    population_oracle_accuracy,
    styled_pairs,
    tokenizer_and_model,
    train_reward_model,
    training_rows,
)
from userloop.rlhi.reward_scorers import RewardModelScorer, load_scorer
from userloop.testbed import score

TINY = {"hidden_size": 32, "layers": 2, "heads": 4, "vocab_size": 400, "max_steps": 3, "batch_size": 4, "bf16": "false"}


def test_testbed_pairs_prefer_what_the_user_prefers(prepared, small_classifier):
    counts = Counter()
    pairs, truth = styled_pairs(prepared, "train", 60, 0, "derived", counts)
    assert 0 < len(pairs) <= 60 and counts["pairs"] == len(pairs)
    flips = 0
    others = list(truth.values())
    for pair in pairs:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert score(truth[pair["user_id"]], chosen) > score(truth[pair["user_id"]], rejected)
        assert pair["prompt"][-1]["role"] == "user" and chosen != rejected
        flips += any(score(p, chosen) < score(p, rejected) for p in others)
    assert flips / len(pairs) > 0.9   # nearly every preference is reversed for some other user: it depends on the persona
    oracle = population_oracle_accuracy(pairs, truth)
    assert 0.4 < oracle < 0.9          # so a persona-blind reward cannot get them all right
    true_text, _ = styled_pairs(prepared, "train", 5, 0, "true", Counter())
    assert all(p["persona"].startswith(("A ", "An ")) for p in true_text)


def test_testbed_pairs_leave_out_near_ties(prepared):
    counts = Counter()
    pairs, truth = styled_pairs(prepared, "train", 60, 0, "true", counts, min_margin=0.15)
    assert len(pairs) == 60 and counts["skipped_near_tie"] > 0
    assert all(score(truth[p["user_id"]], p["chosen"][0]["content"]) - score(truth[p["user_id"]], p["rejected"][0]["content"]) >= 0.15
               for p in pairs)
    with pytest.raises(UserError, match="min_margin"):
        RewardTrainConfig(min_margin=1.0).validate()


def test_the_tokenizer_learns_the_persona_words(prepared):
    pairs, _ = styled_pairs(prepared, "train", 60, 0, "true", Counter())
    tokenizer, model = tokenizer_and_model(RewardTrainConfig(vocab_size=1024, bf16="false"), training_rows(pairs, True))
    blind = build_tokenizer((m["content"] for row in training_rows(pairs, False) for m in (*row["prompt"], *row["chosen"])), 1024)
    line = with_persona([], pairs[0]["persona"])[0]["content"]
    assert len(tokenizer.tokenize(line)) < 0.7 * len(blind.tokenize(line))   # the persona's words are (nearly) whole tokens
    assert tokenizer.tokenize(" brief formal") == ["Ġbrief", "Ġformal"]
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_held_out_users_are_a_stable_share():
    ids = [f"user{i}" for i in range(2000)]
    held = [held_out_user(i, 0.2, 0) for i in ids]
    assert 0.17 < sum(held) / len(ids) < 0.23
    assert held == [held_out_user(i, 0.2, 0) for i in ids]
    assert not held_out_user(None, 0.2, 0)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory, trained_classifier):
    from userloop.rlhi import followup_classifier

    original = followup_classifier.load_offline
    followup_classifier.load_offline = lambda cache=None: trained_classifier
    try:
        out = tmp_path_factory.mktemp("rm") / "rm"
        result = train_reward_model(RewardTrainConfig(data=str(prepared), out=str(out), max_pairs=40, **TINY))
    finally:
        followup_classifier.load_offline = original
    return result


def test_training_writes_a_loadable_reward_model_and_its_report(trained):
    report = orjson.loads((trained.out / "reward_report.json").read_bytes())
    assert report == trained.report
    assert report["steps"] == 3 and report["train_pairs"] + report["train_pairs_too_long"] == 40
    for key in ("held_out_accuracy", "held_out_accuracy_persona_removed", "population_oracle_accuracy", "train_accuracy"):
        assert 0 <= report[key] <= 1
    scorer = load_scorer(f"rm:{trained.out}", None)
    assert isinstance(scorer, RewardModelScorer)
    assert (trained.out / "train_config.yaml").is_file()


def test_training_from_pairs_files_holds_out_users(tmp_path):
    from userloop.rlhi.pairs import write_pairs

    rows = []
    for i in range(30):
        persona = "A novice who prefers brief answers." if i % 2 else "An expert who prefers detailed answers."
        short, long = "Sure, boil it.", "Certainly. " + "Consider the comprehensive methodology carefully. " * 8
        chosen, rejected = (short, long) if i % 2 else (long, short)
        rows.append({"prompt": [{"role": "user", "content": f"question {i}"}], "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}], "user_id": f"u{i}", "persona": persona,
                     "feedback": "too long", "conversation_id": f"c{i}"})
    write_pairs(rows, tmp_path / "pairs.parquet", tmp_path / "pairs_dataset")
    result = train_reward_model(RewardTrainConfig(pairs=str(tmp_path), out=str(tmp_path / "rm"), persona=False, held_out=0.3, **TINY))
    held = sum(held_out_user(f"u{i}", 0.3, 0) for i in range(30))
    assert result.report["held_out_pairs"] == held and result.report["train_pairs"] == 30 - held
    assert "held_out_accuracy_persona_removed" not in result.report   # the persona-agnostic control never saw one
    assert "population_oracle_accuracy" not in result.report


def test_parse_config_reads_flags_and_yaml(tmp_path):
    config_file = tmp_path / "rm.yaml"
    config_file.write_text("hidden_size: 32\npersona: false\n")
    config = parse_config(["--config", str(config_file), "--max_steps", "5"])
    assert (config.hidden_size, config.persona, config.max_steps) == (32, False, 5)
    with pytest.raises(UserError, match="persona_source"):
        parse_config(["--persona_source", "guessed"])
    with pytest.raises(UserError):
        parse_config(["--hidden_size", "many"])
    with pytest.raises(UserError, match="--config file not found"):
        parse_config(["--config", str(tmp_path / "missing.yaml")])


def test_train_reward_cli(tmp_path):
    from typer.testing import CliRunner

    from userloop.cli import app
    from userloop.rlhi.pairs import write_pairs

    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}], "chosen": [{"role": "assistant", "content": "Sure, boil it."}],
             "rejected": [{"role": "assistant", "content": "Certainly, consider it. " * 5}], "user_id": f"u{i}",
             "persona": "A novice.", "feedback": None, "conversation_id": f"c{i}"} for i in range(20)]
    write_pairs(rows, tmp_path / "pairs.parquet", tmp_path / "pairs_dataset")
    args = [f"--{k}={v}" for k, v in TINY.items()]
    runner = CliRunner()
    result = runner.invoke(app, ["train", "reward", "--pairs", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "rm"), *args])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "held-out pair accuracy" in result.stdout and (tmp_path / "rm" / "reward_report.json").is_file()
    bad = runner.invoke(app, ["train", "reward", "--pairs", str(tmp_path / "missing.parquet")])
    assert bad.exit_code == 2 and "no such file or folder" in bad.output
