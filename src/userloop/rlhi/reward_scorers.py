"""Scorers of answers for a user (RLHI section 2.2: user-based rewards, persona-conditioned).

A scorer rates ``response`` as an answer to ``prompt`` for the user behind it; higher is better.
Three kinds, one :class:`Scorer` interface, chosen by a spec (:func:`load_scorer`, the ``scorer`` role of
:func:`userloop.models.registry.load_role`):

* ``testbed:scorer`` (:class:`TestbedScorer`): the testbed's ground truth, ``testbed.score(true persona,
  response)`` in [0, 1], the true persona looked up by ``user_id`` in ``truth.jsonl``. It ignores the
  derived persona the request carries (that is what a deployed system sees, not the truth).
* ``testbed:task-scorer`` (:class:`TestbedTaskScorer`): what the testbed user wants of an answer, its task
  solved and its style. Where the request was written by an interactive testbed user (``testbed:users``) in
  this process and states its whole task, the reward is the mean of the task's check (1 when the answer
  passes it, :func:`userloop.rlhi.tasks.passes`, the check ``rlhi loop`` measures task success with) and
  persona match; elsewhere persona match alone (counted as ``unchecked``). Persona match alone rewards a
  stylish wrong answer; this user would not.
* ``rm:PATH`` (:class:`RewardModelScorer`): a reward model trained by ``userloop train reward`` (or any
  ``save_pretrained`` sequence-classification folder with one label and a chat template): the scalar
  output for the conversation ``with_persona(prompt, persona) + [response]``, batched.
* any chat model spec (:class:`JudgeScorer`): an LLM judge rates how well the answer fits the user's
  persona from 1 to 10 (JSON ``{"rating": n}``); the rating r becomes (r - 1) / 9 in [0, 1]. An answer
  that is not a valid rating is asked again once (``rlhi.llm.ask_validated``); still invalid, the
  score is the neutral 0.5 and the case is counted (``counts["invalid"]``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from userloop.errors import UserError, missing_dependency
from userloop.models.registry import load_role
from userloop.rlhi.conditioning import with_persona
from userloop.rlhi.followups import clip
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.tasks import passes
from userloop.simulate.testbed_users import spoken
from userloop.testbed import read_truth, score
from userloop.testbed.population import truth_folder


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One answer to score for one user."""

    user_id: str
    persona: str | None          # the persona text the policy / reward model sees (derived)
    prompt: list[dict]           # messages up to and including the user's request (no persona)
    response: str


class Scorer(Protocol):
    name: str
    counts: Counter

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        ...


# ----------------------------------------------------------------------------- ground truth
@dataclass
class TestbedScorer:
    """The testbed's persona-match scorer with each user's true persona (exact; testbed only)."""

    __test__ = False   # not a pytest class, whatever its name
    true_personas: dict[str, dict[str, Any]]
    name: str = "testbed"
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def from_data(cls, data: Path | None) -> TestbedScorer:
        """The scorer for testbed ``data`` (a raw testbed folder, or a folder prepared from one)."""
        if data is None:
            raise UserError("the testbed scorer needs the testbed data (its truth.jsonl)")
        truth = truth_folder(Path(data))
        if truth is None:
            raise UserError(f"{data} is not the testbed (no truth.jsonl beside it or in the inputs it was prepared "
                            "from): the testbed scorer needs the truth; give a reward model (rm:PATH) or a judge model spec")
        users, _ = read_truth(truth)
        return cls({user_id: record["persona"] for user_id, record in users.items()})

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        out = []
        for request in requests:
            persona = self.true_personas.get(request.user_id)
            if persona is None:
                raise UserError(f"the testbed scorer has no true persona for user {request.user_id!r}: "
                                "the requests do not come from this testbed's data")
            out.append(score(persona, request.response))
        self.counts["scored"] += len(requests)
        return out


@dataclass
class TestbedTaskScorer(TestbedScorer):
    """Persona match, averaged with the task's check where the testbed user stated the whole task (module
    docstring)."""

    __test__ = False
    name: str = "testbed-task"

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        matches = super().score(requests)
        out = []
        for request, match in zip(requests, matches, strict=True):
            said = spoken(request.prompt)
            if said is None or said.revealed < len(said.task.shards):
                self.counts["unchecked"] += 1
                out.append(match)
                continue
            solved = passes(said.task.truth(), request.response)
            self.counts["checked_solved" if solved else "checked_unsolved"] += 1
            out.append((float(solved) + match) / 2)
        return out


# ----------------------------------------------------------------------------- reward model
def load_reward_model(path: str | Path):
    """``(tokenizer, model)`` of a reward model folder, in eval mode; a bad folder is one line."""
    try:
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise missing_dependency("transformers", "train") from None
    transformers.utils.logging.disable_progress_bar()   # the CLI shows its own progress
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"no such reward model folder: {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"cannot load the reward model {path}: {(lines or [type(err).__name__])[0][:300]}") from None
    if model.config.num_labels != 1:
        raise UserError(f"{path} is not a reward model: it has {model.config.num_labels} labels, a reward model has 1")
    if not tokenizer.chat_template:
        raise UserError(f"{path}: the tokenizer has no chat template (the reward model reads conversations)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model.eval()


def reward_inputs(tokenizer, conversations: Sequence[list[dict]], max_length: int) -> dict:
    """Token ids of whole conversations as the reward trainer tokenizes them (chat template, no generation
    prompt), right-padded; a conversation longer than ``max_length`` keeps its last ``max_length`` tokens
    (the end, where the answer is)."""
    import torch

    rows = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"][-max_length:] for c in conversations]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class RewardModelScorer:
    """A trained reward model; the persona goes into the context with :func:`with_persona`."""

    tokenizer: Any
    model: Any
    name: str = "rm"
    batch_size: int = 32
    max_length: int = 1024
    use_persona: bool = True
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def from_path(cls, path: str | Path, **options) -> RewardModelScorer:
        tokenizer, model = load_reward_model(path)
        return cls(tokenizer, model, name=f"rm:{path}", **options)

    def conversation(self, request: ScoreRequest) -> list[dict]:
        persona = request.persona if self.use_persona else None
        return [*with_persona(request.prompt, persona), {"role": "assistant", "content": request.response}]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        import torch

        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(requests), self.batch_size):
                batch = [self.conversation(r) for r in requests[start:start + self.batch_size]]
                inputs = reward_inputs(self.tokenizer, batch, self.max_length)
                out.extend(self.model(**inputs).logits[:, 0].float().tolist())
        self.counts["scored"] += len(requests)
        return out


# ----------------------------------------------------------------------------- LLM judge
JUDGE_SYSTEM = """You rate how well a chat assistant's answer suits the user who asked. You get a description of the user (their expertise, how much detail they want, the tone and the structure they prefer), the conversation up to their request, and the answer. Rate the fit of the answer for THIS user from 1 (a poor fit: wrong length, tone, structure or level for them) to 10 (exactly what they want). Answer with one JSON object and nothing else: {"rating": an integer from 1 to 10}"""
JUDGE_RETRY = 'Your answer was not usable: {error}. Answer with {{"rating": N}} only, N an integer from 1 to 10.'
FALLBACK_SCORE = 0.5


def judge_messages(request: ScoreRequest) -> list[dict[str, str]]:
    history = "\n\n".join(f"[{m['role']}]\n{clip(m['content'])}" for m in request.prompt)
    user = (f"The user: {request.persona or 'unknown'}\n\nConversation:\n<<<\n{history}\n>>>\n\n"
            f"Answer:\n<<<\n{clip(request.response, 6000)}\n>>>")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_rating(answer: str) -> tuple[int | None, str | None]:
    """The 1-10 rating in a judge's answer, or ``(None, reason)``."""
    data = parse_json_object(answer)
    rating = None if data is None else data.get("rating")
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 10:
        return None, 'no {"rating": N} object with N an integer from 1 to 10'
    return rating, None


@dataclass
class JudgeScorer:
    """An LLM judge (any chat model) rating the answer's fit for the persona, 1-10, mapped to [0, 1]."""

    model: Any
    batch_size: int = 256
    name: str = "judge"
    counts: Counter = field(default_factory=Counter)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start:start + self.batch_size]
            ratings = ask_validated(self.model, [judge_messages(r) for r in batch],
                                    lambda i, answer: parse_rating(answer), JUDGE_RETRY, 20, self.counts)
            out.extend(FALLBACK_SCORE if r is None else (r - 1) / 9 for r in ratings)
        return out


def load_scorer(spec: str, data: Path | None) -> Scorer:
    """``testbed:scorer`` (needs testbed ``data``), ``rm:PATH`` (a reward model folder) or a chat model spec (a judge)."""
    return load_role("scorer", spec, lambda model: JudgeScorer(model, name=f"judge:{spec}"), data=data)
