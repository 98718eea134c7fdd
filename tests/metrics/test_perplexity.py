"""User-turn perplexity with and without the intent, on a tiny UserLM-8b look-alike."""

import math

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.metrics.perplexity import user_turn_perplexity


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.testbed import generate
    from userloop.userlm.template import build_userlm_lookalike

    root = tmp_path_factory.mktemp("ppl")
    raw = generate(30, seed=5).write(root / "raw")
    prepare([str(raw / "conversations.jsonl")], root / "prepared", PrepareConfig())
    return build_userlm_lookalike(root / "model"), root / "prepared"


def test_perplexity_is_exp_of_the_mean_nll_of_user_turn_tokens(setup):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from userloop.userlm.flip import flip, read_split

    model_path, data = setup
    result = user_turn_perplexity(model_path, data, "train", max_conversations=4, batch_size=3, max_length=1024)
    tokenizer, model = AutoTokenizer.from_pretrained(model_path), AutoModelForCausalLM.from_pretrained(model_path)
    conversations, _ = read_split(data, "train")
    samples, _ = flip(conversations[:4], tokenizer, "packed", 1024, end=False)
    nll, tokens = 0.0, 0
    for s in samples:  # one at a time, without padding
        ids = torch.tensor([s.ids])
        with torch.no_grad():
            losses = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="none")
        nll += float((losses * torch.tensor(s.mask[1:])).sum())
        tokens += sum(s.mask[1:])
    part = result["with_intent"]
    assert part["tokens"] == tokens
    assert part["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert result["without_intent"]["tokens"] == tokens  # the same turns, scored without the system message
    assert result["without_intent"]["perplexity"] != part["perplexity"]


def test_a_token_budget_cuts_the_passes_without_changing_the_result(setup, monkeypatch):
    from userloop.metrics import perplexity

    model_path, data = setup
    passes: list[tuple[int, int]] = []  # (rows, padded width) of each forward pass
    summed_nll = perplexity._summed_nll

    def recorded(model, batch, pad, device):
        passes.append((len(batch), max(len(s.ids) for s in batch)))
        return summed_nll(model, batch, pad, device)

    monkeypatch.setattr(perplexity, "_summed_nll", recorded)
    whole = user_turn_perplexity(model_path, data, "train", max_conversations=6, batch_size=6, max_batch_tokens=10**6)
    assert [rows for rows, _ in passes] == [6, 6]  # with and without the intent
    passes.clear()
    cut = user_turn_perplexity(model_path, data, "train", max_conversations=6, batch_size=6, max_batch_tokens=600)
    assert all(rows == 1 or rows * width <= 600 for rows, width in passes) and len(passes) > 2
    for part in ("with_intent", "without_intent"):
        assert cut[part]["tokens"] == whole[part]["tokens"]
        assert cut[part]["perplexity"] == pytest.approx(whole[part]["perplexity"], rel=1e-5)


def test_bad_inputs_are_user_errors(setup, tmp_path):
    model_path, data = setup
    with pytest.raises(UserError, match="not a prepared folder"):
        user_turn_perplexity(model_path, tmp_path, "test")
    with pytest.raises(UserError, match="no such model folder"):  # at once: no offline Hub look-up and retries
        user_turn_perplexity(tmp_path / "nothing", data, "test")
    with pytest.raises(UserError, match="no such model folder"):
        user_turn_perplexity("relative_name_that_is_no_folder", data, "test")


def test_eval_ppl_command(setup):
    model_path, data = setup
    result = CliRunner().invoke(app, ["eval-ppl", str(model_path), "--data", str(data), "--split", "validation",
                                      "--max-conversations", "3"])
    assert result.exit_code == 0, result.output
    assert "with intent" in result.output and "without intent" in result.output


def test_eval_ppl_command_errors_are_one_line(setup, tmp_path):
    _, data = setup
    result = CliRunner().invoke(app, ["eval-ppl", str(tmp_path), "--data", str(data)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "cannot load" in result.output


def test_empty_turns_are_not_scored_but_counted(setup, tmp_path):
    from userloop.conversation import Conversation, Message, write_parquet

    model_path, _ = setup
    conversations = [Conversation(messages=[Message("user", "a poem about rain please"), Message("assistant", "Rain."),
                                            Message("user", "  "), Message("assistant", "Anything else?"),
                                            Message("user", "shorter")], id="c1", intent="You are a user who wants a poem.")]
    data = tmp_path / "prepared"
    data.mkdir()
    for split in ("train", "test"):
        write_parquet(conversations, data / f"{split}.parquet")
    (data / "report.json").write_text("{}")
    result = user_turn_perplexity(model_path, data, "test")
    assert (result["turns_scored"], result["turns_not_scored"], result["empty_turns_not_scored"]) == (2, 0, 1)
    with pytest.raises(UserError, match="no user turn"):
        user_turn_perplexity(model_path, data, "test", max_length=8)
