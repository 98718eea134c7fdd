"""Model roles: every built-in provider resolves through the registry, chat model specs fill any role, old
spellings still name their built-in, and a wrong spec is one clear line."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from userloop.errors import UserError
from userloop.models.mock import MockModel
from userloop.models.registry import ALIASES, BUILTIN_PROVIDERS, ROLES, load_role, needs_testbed, role_spec
from userloop.testbed import generate


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roles") / "testbed"
    generate(12, seed=5).write(folder)
    return folder


def test_every_built_in_names_roles_and_a_factory_that_exists():
    import importlib

    for spec, roles in BUILTIN_PROVIDERS.items():
        assert spec.count(":") == 1 and set(roles) <= set(ROLES), spec
        for target in roles.values():
            module, _, path = target.partition(":")
            factory = importlib.import_module(module)
            for name in path.split("."):
                factory = getattr(factory, name)
            assert callable(factory), target


def test_each_built_in_resolves_to_its_object(testbed):
    from userloop.rlhi.pairwise_judges import TestbedJudge
    from userloop.rlhi.personas import OfflinePersonas
    from userloop.rlhi.reward_scorers import TestbedScorer
    from userloop.rlhi.rewrites import ScorerJudge, TestbedRewriter
    from userloop.simulate.reply_kinds import RuleReplyClassifier

    offline = object()   # the caller's loaded offline classifier stands for itself
    assert isinstance(load_role("scorer", "testbed:scorer", data=testbed), TestbedScorer)
    assert isinstance(load_role("rewriter", "testbed:rewriter"), TestbedRewriter)
    judge = load_role("judge", "testbed:judge", data=testbed)
    assert isinstance(judge, ScorerJudge) and len(judge.true_personas) == 12
    assert isinstance(load_role("usereval_judge", "testbed:judge", data=testbed), TestbedJudge)
    assert load_role("followup_classifier", "offline:classifier", offline=offline) is offline
    personas = load_role("persona_model", "offline:personas", domain_of=len, batch_size=8)
    assert isinstance(personas, OfflinePersonas) and personas.domain_of is len
    assert isinstance(load_role("reply_classifier", "rules:classifier"), RuleReplyClassifier)
    assert role_spec("scorer", "rm:runs/rm") == "rm:runs/rm"


def test_a_chat_model_spec_plays_any_role_through_the_callers_wrapper():
    from userloop.rlhi.rewrites import ModelRewriter

    rewriter = load_role("rewriter", "mock:writer", ModelRewriter)
    assert isinstance(rewriter, ModelRewriter) and isinstance(rewriter.model, MockModel)
    assert load_role("user", "mock:user").name == "mock:user"   # no wrapper: the model itself


@pytest.mark.parametrize(("role", "old"), sorted(ALIASES))
def test_old_spellings_still_name_their_built_in(role, old):
    spec = role_spec(role, old)
    assert spec == ALIASES[(role, old)] and role in BUILTIN_PROVIDERS[spec]


@pytest.mark.parametrize(("role", "spec", "message"), [
    ("scorer", "bogus", "unknown model spec 'bogus' for the scorer: give testbed:scorer, testbed:task-scorer, rm:PATH"),
    ("reply_classifier", "offline", ("unknown model spec 'offline' for the reply classifier: give rules:classifier, "
                                     "a chat model spec (hf:")),
    ("followup_classifier", "rules",
     "unknown model spec 'rules' for the follow-up classifier: give offline:classifier"),
    ("rewriter", "testbed:judge", ("testbed:judge is not a rewriter: give testbed:rewriter, testbed:editor, testbed:corrector, "
                                         "a chat model spec")),
    ("judge", "testbed:nothing", "unknown model spec 'testbed:nothing' for the rewrite judge"),
    ("scorer", "rm:", "names nothing: expected rm:PATH"),
    ("rewriter", "hf:", "names no model"),
])
def test_a_wrong_spec_is_one_line_naming_what_the_role_takes(role, spec, message):
    with pytest.raises(UserError) as err:
        role_spec(role, spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_only_testbed_built_ins_need_the_testbed():
    assert needs_testbed("judge", "testbed:judge") and needs_testbed("rewriter", "testbed")   # old spelling too
    assert not needs_testbed("judge", "mock:j") and not needs_testbed("reply_classifier", "rules:classifier")


def test_config_defaults_are_valid_role_specs():
    from userloop.rlhi.build import ROLE_FIELDS, BuildConfig
    from userloop.rlhi.dpo import DPOTrainConfig
    from userloop.rlhi.loop import LoopConfig
    from userloop.rlhi.user_rewards import RewardsConfig
    from userloop.rlhi.usereval import UserEvalConfig
    from userloop.simulate.runs import SimulationConfig

    defaults = {f.name: f.default for f in fields(BuildConfig)}
    for name, role in ROLE_FIELDS.items():
        assert role_spec(role, defaults[name]) == defaults[name]
    loop = {f.name: f.default for f in fields(LoopConfig)}
    for role in ("scorer", "rewriter", "judge"):
        assert role_spec(role, loop[role]) == loop[role]
    for config, name, role in ((DPOTrainConfig, "scorer", "scorer"), (RewardsConfig, "scorer", "scorer"),
                               (UserEvalConfig, "judge", "usereval_judge"),
                               (SimulationConfig, "classifier", "reply_classifier")):
        default = next(f.default for f in fields(config) if f.name == name)
        assert role_spec(role, default) == default, config


def test_the_registry_imports_no_higher_layer_until_a_built_in_is_asked_for():
    higher = ("testbed", "userlm", "simulate", "metrics", "rlhi", "report", "integrations", "demo", "cli")
    code = ("import sys; from userloop.models.registry import role_spec; role_spec('judge', 'testbed:judge'); "
            f"print(sorted(m for m in sys.modules if m.startswith('userloop.') and m.split('.')[1] in {higher!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
