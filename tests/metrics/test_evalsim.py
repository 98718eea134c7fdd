"""eval-sim end to end on a tiny testbed, with a tiny UserLM look-alike and a scripted simulator."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.metrics.evalsim import HUMAN, METRICS, EvalSimConfig, eval_sim, parse_sims


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.testbed import generate

    root = tmp_path_factory.mktemp("evalsim")
    raw = generate(40, seed=3).write(root / "raw")
    prepare([str(raw / "conversations.jsonl")], root / "prepared", PrepareConfig())
    return root / "prepared"


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("script") / "user.json"
    path.write_text(json.dumps(["hey can u help me plan something", "no, just answer my question first", "B",
                                "<|endconversation|>", "ok thanks that helps"]))
    return f"scripted:{path}"


@pytest.fixture(scope="module")
def run(prepared, scripted, tmp_path_factory):
    from userloop.userlm.template import build_userlm_lookalike

    root = tmp_path_factory.mktemp("run")
    userlm = build_userlm_lookalike(root / "userlm")
    out = root / "out"
    metrics = eval_sim({"tiny": f"hf:{userlm}", "script": scripted}, prepared, out,
                       EvalSimConfig(n_first_turns=8, max_conversations=4, n_probes=3, max_new_tokens=8),
                       cache=root / "cache")
    return metrics, out


def test_writes_every_metric_for_every_row(run):
    metrics, out = run
    assert list(metrics) == [HUMAN, "tiny", "script"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for name in ("tiny", "script"):
        assert set(metrics[name]) == set(METRICS)
        for metric in ("first_turn_diversity", "naturalness", "termination_f1", "role_adherence", "intent_adherence"):
            assert metrics[name][metric] is not None, (name, metric)
    # the look-alike's 512-token context cuts the testbed's replays short: they are left out of fidelity
    for metric in ("fidelity_turn_length_wasserstein", "fidelity_user_turns_ks", "fidelity_vocabulary_overlap"):
        assert metrics["script"][metric] is not None, metric
    assert metrics["tiny"]["perplexity_with_intent"] > 1 and metrics["script"]["perplexity_with_intent"] is None
    human = metrics[HUMAN]
    assert human["termination_f1"] is None and human["role_adherence"] is None and human["perplexity_with_intent"] is None
    assert 0 < human["first_turn_diversity"] <= 100 and human["fidelity_user_turns_ks"] is not None


def test_scripted_user_scores_follow_its_script(run):
    _metrics, out = run
    details = json.loads((out / "details.json").read_text())
    assert details["setup"]["detector_heldout_accuracy"] > 50
    termination = details["script"]["termination"]
    assert termination["decision_points"] == termination["true_positives"] + termination["false_positives"] \
        + termination["false_negatives"] + termination["true_negatives"]
    for key in ("precision", "recall", "f1"):
        assert 0 <= termination[key] <= 100
    assert details["script"]["role_adherence"]["probes"] == 3
    tiny = details["tiny"]["termination"]["conversations_skipped"]
    assert tiny["truncated"] == details["tiny"]["fidelity"]["left_out_truncated"]
    assert "n/a" in details["script"]["perplexity"]


def test_table_and_charts(run):
    _, out = run
    table = (out / "table.md").read_text()
    assert "| tiny |" in table and "| paper: UserLM-8b | 94.55 | 2.69 | 63.54 |" in table
    charts = {p.stem for p in (out / "charts").glob("*.png")}
    assert {"first_turn_diversity", "termination_f1", "perplexity_with_intent", "fidelity_end_turn_ks"} <= charts


def test_parse_sims():
    assert parse_sims(["a=hf:x", "prompted:hf:y", "hf:p=q"]) == {"a": "hf:x", "prompted:hf:y": "prompted:hf:y",
                                                                  "hf:p=q": "hf:p=q"}
    with pytest.raises(UserError):
        parse_sims(["Human=hf:x"])
    with pytest.raises(UserError):
        parse_sims(["a=hf:x", "a=hf:y"])


class HalfDetector:
    def p_human(self, texts):
        return [0.5] * len(texts)


def test_cli_human_only_and_user_errors(prepared, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval-sim", "--data", str(prepared), "--out", str(tmp_path / "out"),
                                 "--n-first-turns", "10", "--max-conversations", "3", "--detector", f"{__name__}:HalfDetector"])
    assert result.exit_code == 0, result.output
    assert "| Human |" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics) == [HUMAN] and metrics[HUMAN]["naturalness"] == 50.0
    bad = runner.invoke(app, ["eval-sim", "--data", str(prepared), "--out", str(tmp_path / "o2"), "--guardrails", "maybe"])
    assert bad.exit_code == 2 and "--guardrails" in bad.output
    missing = runner.invoke(app, ["eval-sim", "--data", str(prepared), "--out", str(tmp_path / "o3"),
                                  "--role-probes", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_parse_sims_names_may_be_provider_words_and_specs_are_checked_at_once():
    assert parse_sims(["prompted=prompted:hf:ckpt/a", "hf=hf:x"]) == {"prompted": "prompted:hf:ckpt/a", "hf": "hf:x"}
    with pytest.raises(UserError, match="unknown model spec"):
        parse_sims(["a=hf:x", "b=nonsense"])


def test_out_that_is_a_file_fails_before_any_work(prepared, tmp_path):
    out = tmp_path / "taken"
    out.write_text("")
    with pytest.raises(UserError, match="is a file"):
        eval_sim({}, tmp_path / "no-such-data", out)


def test_first_turns_skip_empty_and_repeated_openings(prepared, tmp_path):
    import shutil

    from userloop.conversation import Conversation, Message, write_parquet

    data = tmp_path / "data"
    shutil.copytree(prepared, data)

    def conv(cid, first, intent="You are a user chatting with an assistant language model to plan a trip."):
        return Conversation([Message("user", first), Message("assistant", "Sure.")], id=cid, intent=intent)

    write_parquet([conv("a", "plan a trip to rome"), conv("b", "plan a trip to rome"), conv("c", "  "),
                   conv("d", "fix my bike"), conv("e", "write a haiku")], data / "test.parquet")
    eval_sim({}, data, tmp_path / "out", EvalSimConfig(max_conversations=2, detector=f"{__name__}:HalfDetector"))
    setup = json.loads((tmp_path / "out" / "details.json").read_text())["setup"]
    assert setup["first_turn_conversations"] == 3
    assert setup["first_turn_conversations_without_user_opening"] == 1
    assert setup["first_turn_conversations_repeating_an_opening"] == 1
