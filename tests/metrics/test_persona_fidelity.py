"""Persona fidelity: statistics, the reproduction score, the end-to-end measurement (scripted and tiny
models on a small testbed), the CLI, and broken inputs."""

import json

import orjson
import pytest
from typer.testing import CliRunner

from userloop.cli import app
from userloop.errors import UserError
from userloop.metrics.persona_fidelity import (
    Behaviour,
    Estimate,
    PersonaSimConfig,
    behaviour_statistics,
    compare,
    evaluate_persona_sim,
    read_persona_fields,
)

# A scripted user LM whose first turn depends on the persona it reads (only the conditioned run sees one):
# users preferring brief answers open with three words, the others with ten, and everyone ends after the reply.
USER_SCRIPT = {"prefers brief": "Need short help now",
               "prefers detailed": "Need help with something today and please explain it well to me",
               "You are a user": "Need help with something today and please explain it well to me",
               "*": "<|endconversation|>"}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """A prepared 60-user testbed, its truth and its derived personas."""
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.rlhi.build import BuildConfig, derive_personas
    from userloop.testbed import generate

    root = tmp_path_factory.mktemp("persona-sim")
    raw = generate(60, seed=3).write(root / "raw")
    prepare([str(raw / "conversations.jsonl")], root / "prepared", PrepareConfig(splits="50/10/40"))
    derive_personas(root / "prepared", root / "personas.jsonl", BuildConfig(min_conversations=1))
    (root / "user.json").write_text(json.dumps(USER_SCRIPT))
    (root / "assistant.json").write_text(json.dumps(["Here is a short answer for you."]))
    return {"data": str(root / "prepared"), "truth": str(raw), "personas": str(root / "personas.jsonl"),
            "user": f"scripted:{root / 'user.json'}", "assistant": f"scripted:{root / 'assistant.json'}", "root": root}


def _config(population, **overrides) -> PersonaSimConfig:
    values = {"personas": population["personas"], "assistant": population["assistant"], "data": population["data"],
              "truth": population["truth"], "conditioned": population["user"], "unconditioned": population["user"],
              "min_group": 2, "max_user_turns": 3} | overrides
    return PersonaSimConfig(**values)


def test_statistics_of_a_group():
    group = [Behaviour("a", 2, True, [3, 5], ["extend"], [True]), Behaviour("b", 4, False, [2, 2, 2, 2], ["none", "extend", "new_request"],
                                                                          [False, False, True])]
    stats = behaviour_statistics(group)
    assert stats["feedback_rate"].value == pytest.approx(2 / 4) and stats["feedback_rate"].n == 4
    assert stats["followup_extend"].value == pytest.approx(2 / 4)
    assert stats["followup_re_attempt"].value == 0
    assert stats["user_turns"].value == 3 and stats["ended_by_user"].value == 0.5
    assert stats["turn_words"].value == pytest.approx(16 / 6)
    assert behaviour_statistics([])["feedback_rate"] is None


def _table(values: dict[str, float]) -> dict:
    return {v: {s: Estimate(x, 0.01, 100) for s in ("feedback_rate", "user_turns")} | {"turn_words": None}
            for v, x in values.items()}


def test_reproduction_is_one_for_the_real_differences_zero_for_none_and_negative_for_reversed():
    real = _table({"brief": 0.2, "detailed": 0.6})
    sizes = {"brief": (10, 10), "detailed": (10, 10)}
    shifted = compare(real, _table({"brief": 0.5, "detailed": 0.9}), sizes, 5)["feedback_rate"]
    assert shifted["reproduction"] == pytest.approx(1.0) and shifted["direction_agreement"] == 1.0
    assert shifted["matters"] and shifted["real_spread"] == pytest.approx(0.4)
    flat = compare(real, _table({"brief": 0.4, "detailed": 0.4}), sizes, 5)["feedback_rate"]
    assert flat["reproduction"] == pytest.approx(0.0)
    reversed_ = compare(real, _table({"brief": 0.6, "detailed": 0.2}), sizes, 5)["feedback_rate"]
    assert reversed_["reproduction"] == pytest.approx(-1.0) and reversed_["direction_agreement"] == 0.0
    small = compare(real, _table({"brief": 0.5, "detailed": 0.9}), {"brief": (10, 10), "detailed": (3, 10)}, 5)
    assert small["feedback_rate"]["reproduction"] is None and "fewer than 2 values" in small["feedback_rate"]["why"]


def test_the_conditioned_scripted_user_reproduces_the_detail_difference_and_the_unconditioned_cannot(population, tmp_path):
    report = evaluate_persona_sim(_config(population), tmp_path / "run")
    assert report["held_out"]["scenarios"] > 0 and report["held_out"]["users_with_persona"] > 0
    assert set(report["truth_agreement"]) == {"expertise", "detail", "tone", "structure"}
    detail = report["fields"]["detail"]
    assert set(detail["real"]) <= {"brief", "detailed"} and "real_by_true_value" in detail
    conditioned = detail["simulators"]["conditioned"]["statistics"]
    unconditioned = detail["simulators"]["unconditioned"]["statistics"]
    assert conditioned["brief"]["turn_words"]["value"] < conditioned["detailed"]["turn_words"]["value"]
    assert unconditioned["brief"]["turn_words"]["value"] == unconditioned["detailed"]["turn_words"]["value"]
    words = detail["simulators"]["unconditioned"]["comparison"]["turn_words"]
    assert words["reproduction"] == pytest.approx(0.0) and words["direction_agreement"] == 0.0
    for name in ("conditioned", "unconditioned"):
        run = report["simulators"][name]
        assert run["conversations"] == report["held_out"]["scenarios"] and run["errors"] == 0
        assert run["end_reasons"] == {"user_ended": run["conversations"]}
    assert report["overall"]["conditioned"]["ended_by_user"]["value"] == 1.0
    scenario = json.loads((tmp_path / "run" / "scenarios-conditioned.jsonl").read_text().splitlines()[0])
    plain = json.loads((tmp_path / "run" / "scenarios-unconditioned.jsonl").read_text().splitlines()[0])
    assert scenario["metadata"]["persona"] and "persona" not in plain["metadata"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## detail" in markdown and "conditioned R" in markdown
    again = evaluate_persona_sim(_config(population), tmp_path / "run")   # resumes: nothing simulated twice
    assert again["simulators"]["conditioned"]["conversations"] == report["simulators"]["conditioned"]["conversations"]


def test_tiny_hf_user_lm_and_assistant_run_end_to_end(population, tmp_path):
    from userloop.models.tiny import build_tiny_chat_model
    from userloop.userlm.template import build_userlm_lookalike

    user = build_userlm_lookalike(tmp_path / "user", hidden_size=32, layers=1)
    assistant = build_tiny_chat_model(tmp_path / "assistant", hidden_size=32, layers=1)
    config = _config(population, conditioned=f"hf:{user}", unconditioned=None, assistant=f"hf:{assistant}",
                     max_conversations=4, max_user_turns=2, assistant_max_new_tokens=8, user_max_new_tokens=8)
    report = evaluate_persona_sim(config, tmp_path / "run")
    run = report["simulators"]["conditioned"]
    assert run["conversations"] == 4 and "unconditioned" not in report["simulators"]
    assert (tmp_path / "run" / "report.json").is_file()


def test_cli_writes_the_report(population, tmp_path):
    result = CliRunner().invoke(app, ["eval-persona-sim", "--personas", population["personas"], "--assistant",
                                      population["assistant"], "--conditioned", population["user"], "--data",
                                      population["data"], "--truth", population["truth"], "--min-group", "2",
                                      "--max-conversations", "6", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "report.md").is_file()
    assert "detail" in result.output


def test_broken_personas_files_and_unknown_users(population, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"user_id": "u1", "persona": "A novice.", "detail": "brief"}\n{oops\n')
    with pytest.raises(UserError, match="broken.jsonl:2: not a persona record"):
        read_persona_fields(broken)
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(orjson.dumps({"user_id": "u1", "persona": "A novice.", "detail": "huge", "tone": "casual"}) + b"\n"
                        + orjson.dumps({"user_id": "u2", "persona": None}) + b"\n")
    records, counts = read_persona_fields(partial)
    assert records == {"u1": {"persona": "A novice.", "tone": "casual"}}
    assert counts["detail_missing_or_unknown"] == 1 and counts["without_persona_text"] == 1
    with pytest.raises(UserError, match="none of its 1 users has a conversation"):
        evaluate_persona_sim(_config(population, personas=str(partial)), tmp_path / "x")
    with pytest.raises(UserError, match="at least one simulator"):
        _config(population, conditioned=None, unconditioned=None).validate()
    result = CliRunner().invoke(app, ["eval-persona-sim", "--personas", str(broken), "--assistant",
                                      population["assistant"], "--conditioned", population["user"], "--data",
                                      population["data"], "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "broken.jsonl:2" in result.output and "Traceback" not in result.output
