"""A small demo folder for the report tests, made by the real library functions on tiny models.

Each stage writes where ``userloop demo`` writes (``userloop.demo.OUTPUTS``); the manifest is written
here by hand, so the report is tested without running the whole demo. About 30 s on 2 CPU cores.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

MATH = [{"id": f"m{i}", "kind": "math", "intent": f"You want to know what {i} plus {i + 1} is.",
         "shards": [f"I have {i} apples.", f"Then I get {i + 1} more."], "full_prompt": f"What is {i} plus {i + 1}?",
         "answer": str(2 * i + 1)} for i in range(4)]


def demo_folder(root: Path) -> Path:
    """The demo folder under ``root`` (built on the first call, reused after).

    Built in a thread of its own: Playwright's sync API (the browser fixture) keeps an event loop running
    in the main thread, where the simulation's ``asyncio.run`` would refuse to start."""
    if not (root / "manifest.json").is_file():
        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(_build, root).result()
    return root


def _build(root: Path) -> None:
    from userloop.data.prepare import PrepareConfig, prepare
    from userloop.demo import OUTPUTS, STAGES
    from userloop.metrics.evalsim import EvalSimConfig, eval_sim
    from userloop.metrics.run_realism import simulate_with_realism
    from userloop.metrics.validity import ValidityConfig, eval_validity
    from userloop.rlhi import followup_classifier
    from userloop.rlhi.build import BuildConfig, build
    from userloop.rlhi.dpo import DPOTrainConfig, train_dpo
    from userloop.rlhi.usereval import UserEvalConfig, eval_personal
    from userloop.simulate.assistant_eval import evaluate_assistant
    from userloop.simulate.runs import SimulationConfig
    from userloop.simulate.scenarios import build_scenario_file
    from userloop.testbed import generate
    from userloop.userlm.train import UserLMTrainConfig, train_user_lm

    out = {name: root / path for name, path in OUTPUTS.items()}
    generate(60, seed=3).write(out["testbed"])
    prepare([str(out["testbed"] / "conversations.jsonl")], out["prepare"], PrepareConfig())
    tiny = {"data": str(out["prepare"]), "hidden_size": 32, "layers": 2, "heads": 2, "vocab_size": 512, "max_steps": 6,
            "eval_steps": 3, "logging_steps": 1, "save_steps": 0, "batch_size": 4, "max_length": 512}
    train_user_lm(UserLMTrainConfig(out=str(out["user_lm"]), **tiny))
    train_user_lm(UserLMTrainConfig(out=str(out["assistant"]), role="assistant", **tiny))
    user, assistant = f"hf:{out['user_lm']}", f"hf:{out['assistant']}"
    short = {"max_user_turns": 3, "assistant_max_new_tokens": 16, "user_max_new_tokens": 12}
    build_scenario_file(root / "open-scenarios.jsonl", out["prepare"], limit=6)
    simulate_with_realism(SimulationConfig(assistant=assistant, user=user, scenarios=str(root / "open-scenarios.jsonl"),
                                           data=str(out["prepare"]), **short), out["simulate"])
    (root / "math-scenarios.jsonl").write_text("".join(json.dumps(task) + "\n" for task in MATH))
    evaluate_assistant(assistant, user, root / "math-scenarios.jsonl", out["evaluate_assistant"], **short)
    # eval-validity needs math problems of held-out users: the 60-user testbed's test split has none
    generate(200, seed=3).write(root / "validity-testbed")
    prepare([str(root / "validity-testbed" / "conversations.jsonl")], root / "validity-prepared", PrepareConfig())
    eval_validity(ValidityConfig(sim=(f"user-lm={user}",), data=str(root / "validity-prepared"), intents=3,
                                 max_user_turns=3, bootstrap=50), out["validity"])
    eval_sim({"tiny user LM": user}, out["prepare"], out["metrics"],
             EvalSimConfig(n_first_turns=8, max_conversations=4, n_probes=3, max_new_tokens=8), cache=root / "cache")
    with pytest.MonkeyPatch.context() as patch:  # a small follow-up classifier instead of the cached default one
        small = followup_classifier.train(generate(40, seed=11), followup_classifier.read_handmade())
        patch.setattr(followup_classifier, "load_offline", lambda cache=None: small)
        build(out["prepare"], out["rlhi"], BuildConfig())
        train_dpo(DPOTrainConfig(policy=str(out["assistant"]), pairs=str(out["rlhi"] / "pairs.parquet"),
                                 out=str(out["dpo"]), max_steps=2, batch_size=4, warmup=0, logging_steps=1))
        eval_personal(out["prepare"], out["usereval"], UserEvalConfig(policy=f"hf:{out['dpo']}", baseline=assistant,
                                                                      max_requests=6, max_new_tokens=16))
    paths = {"raw": OUTPUTS["testbed"], "prepared": OUTPUTS["prepare"], "user_lm": OUTPUTS["user_lm"],
             "assistant": OUTPUTS["assistant"], "simulations": {"open": OUTPUTS["simulate"]},
             "evaluate_assistant": OUTPUTS["evaluate_assistant"], "validity": OUTPUTS["validity"],
             "metrics": OUTPUTS["metrics"], "rlhi": OUTPUTS["rlhi"],
             "dpo": OUTPUTS["dpo"], "usereval": OUTPUTS["usereval"]}
    write_manifest(root, paths, [{"name": name, "title": title, "seconds": 1.5, "status": "done", "detail": ""}
                                 for name, title in STAGES])


def write_manifest(root: Path, paths: dict, stages: list[dict], **fields) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"version": 1, "command": "userloop demo --out demo", "started": "2026-11-21T15:00:00Z",
                "finished": "2026-11-21T15:09:00Z", "data": "testbed",
                "models": {"user": "hf:demo/models/user-lm", "assistant": "hf:demo/models/assistant", "judge": "testbed",
                           "policy": "hf:demo/models/dpo"},
                "stages": stages, "paths": paths, "report": "report/index.html", **fields}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root
