"""Role and intent adherence ("Flipping the Dialogue", arXiv 2510.06552, Table 2): does the simulated
user stay a user, and stay on its task, when the assistant invites it not to?

**Role adherence** (higher is better). Probe: a multiple-choice question (CommonsenseQA layout:
``question``, ``choices`` ``{label, text}``, ``answerKey``; the paper used CommonsenseQA and GPT-4o as
the assistant). The user's intent is to get the question answered; its first turn asks the question
with its choices; the assistant answers while expressing uncertainty between two choices
(:func:`uncertain_answer`, or an assistant model told to do so); the simulator writes the next turn.
Score: the share of those turns that do **not** answer the question themselves, x100 (a user who
answers its own question has slipped into the assistant's role). A turn that ends the conversation
answers nothing: it counts as adherent.

**Intent adherence** (higher is better). Probe: an open question (NQ-open layout: ``question``,
``answer``). The user asks it; the assistant suggests talking about something unrelated instead
(:func:`diversion`); score: the share of next turns that decline and stay on the original question,
x100. An ending turn does not stay on the question.

Judges: the rule-based :func:`answers_itself` and :func:`stays_on_question` (defined in their
docstrings; hand-made cases in the tests), or any :class:`~userloop.models.ChatModel` through
:class:`ModelJudge` (answers YES/NO; an unreadable answer falls back to the rule, counted).

Offline probes (no file given): built from the testbed's fact tables (:mod:`userloop.testbed.families.facts`):
each (subject, answer) row is a question whose four distractors are other answers of the same relation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from userloop.errors import UserError
from userloop.files import read_user_lines
from userloop.metrics.simulator_metrics import content_words
from userloop.models import GenerationParams, load_model
from userloop.testbed.families.facts import RELATIONS
from userloop.userlm.intents import INTENT_PREFIX


@dataclass(frozen=True)
class ChoiceProbe:
    """A multiple-choice question (CommonsenseQA layout)."""

    question: str
    labels: tuple[str, ...]
    texts: tuple[str, ...]
    answer_key: str


@dataclass(frozen=True)
class OpenProbe:
    """An open question with its accepted answers (NQ-open layout)."""

    question: str
    answers: tuple[str, ...]


# --------------------------------------------------------------------------- reading probes
def _jsonl(path: str | Path, what: str) -> list[tuple[int, dict]]:
    rows = []
    for number, line in read_user_lines(path, f"{what} file"):
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise UserError(f"{what} file {path}, line {number}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise UserError(f"{what} file {path}, line {number}: expected a JSON object")
        rows.append((number, row))
    if not rows:
        raise UserError(f"{what} file {path} holds no probe")
    return rows


def read_choice_probes(path: str | Path) -> list[ChoiceProbe]:
    """Multiple-choice probes from a JSONL file in the CommonsenseQA layout (the Hugging Face one, ``question``
    and ``choices {label, text}``, or the original release's ``question {stem, choices [{label, text}]}``),
    with ``answerKey``; a malformed line is an error."""
    probes = []
    for number, row in _jsonl(path, "role probes"):
        question, choices, key = row.get("question"), row.get("choices"), row.get("answerKey")
        if isinstance(question, dict):  # the original release: "question": {"stem", "choices": [{label, text}]}
            question, choices = question.get("stem"), question.get("choices")
            if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
                choices = {"label": [c.get("label") for c in choices], "text": [c.get("text") for c in choices]}
        labels = choices.get("label") if isinstance(choices, dict) else None
        texts = choices.get("text") if isinstance(choices, dict) else None
        if not (isinstance(question, str) and question.strip() and isinstance(labels, list) and isinstance(texts, list)
                and len(labels) == len(texts) >= 2 and all(isinstance(x, str) and x.strip() for x in labels + texts)
                and key in labels):
            raise UserError(f"role probes file {path}, line {number}: expected 'question', 'choices' "
                            "{'label': [...], 'text': [...]} (two or more) and an 'answerKey' among the labels")
        probes.append(ChoiceProbe(question.strip(), tuple(labels), tuple(t.strip() for t in texts), key))
    return probes


def read_open_probes(path: str | Path) -> list[OpenProbe]:
    """Open-question probes from a JSONL file in the NQ-open layout; a malformed line is an error."""
    probes = []
    for number, row in _jsonl(path, "intent probes"):
        question, answers = row.get("question"), row.get("answer")
        answers = [answers] if isinstance(answers, str) else answers
        if not (isinstance(question, str) and question.strip() and isinstance(answers, list)
                and all(isinstance(a, str) for a in answers)):  # "answer" required: a multiple-choice file fails here
            raise UserError(f"intent probes file {path}, line {number}: expected a 'question' string and an "
                            "'answer' list of strings (NQ-open layout)")
        probes.append(OpenProbe(question.strip(), tuple(answers)))
    return probes


def _fact_questions() -> list[tuple[str, str, list[str]]]:
    """(question, answer, other answers of the same relation) for every row of the testbed's fact tables."""
    out = []
    for _domain, forms, _sentence, rows in RELATIONS.values():
        for index, (subject, answer) in enumerate(rows):
            question = forms[index % len(forms)].format(s=subject).rstrip("?")
            out.append((f"{question[0].upper()}{question[1:]}?", answer, list(dict.fromkeys(a for _, a in rows if a != answer))))
    return out


def offline_choice_probes(seed: int = 0) -> list[ChoiceProbe]:
    """Offline multiple-choice probes: each testbed fact with four distractors from its relation, labels A-E."""
    rng = random.Random(seed)
    probes = []
    for question, answer, others in _fact_questions():
        texts = [answer, *rng.sample(others, min(4, len(others)))]
        rng.shuffle(texts)
        labels = tuple("ABCDE"[: len(texts)])
        probes.append(ChoiceProbe(question, labels, tuple(texts), labels[texts.index(answer)]))
    return probes


def offline_open_probes() -> list[OpenProbe]:
    """Offline open-question probes: the testbed's fact questions with their answers."""
    return [OpenProbe(question, (answer,)) for question, answer, _ in _fact_questions()]


# --------------------------------------------------------------------------- the probe conversations
def choice_intent(probe: ChoiceProbe) -> str:
    return f"{INTENT_PREFIX} get the answer to a multiple-choice question: {probe.question}"


def open_intent(probe: OpenProbe) -> str:
    return f"{INTENT_PREFIX} find out the answer to a question: {probe.question}"


def choice_question(probe: ChoiceProbe) -> str:
    """The first user turn: the question with its choices, as a user pastes it."""
    return f"{probe.question}\n" + "\n".join(f"{label}. {text}" for label, text in zip(probe.labels, probe.texts))


UNCERTAIN_TEMPLATES = (
    "I'm not completely sure. It might be ({a}) {a_text}, but ({b}) {b_text} also seems possible. What do you think?",
    "Hmm, this one is tricky. I'd lean towards ({a}) {a_text}, though ({b}) {b_text} could fit too. Which one seems right to you?",
    "I can't say for certain: ({a}) {a_text} and ({b}) {b_text} both look plausible to me. What's your take?",
)
DIVERSION_TEMPLATES = (
    "Before that, would you like to talk about {topic} instead?",
    "Happy to help with that. But first, have you ever thought about {topic}? We could chat about that instead.",
    "Sure, though I'd rather talk about {topic} for a bit. Shall we?",
)
DIVERSION_TOPICS = ("the history of board games", "how bees make honey", "planning a garden for spring",
                    "the best way to brew coffee", "training for a marathon", "the rules of cricket",
                    "learning to play the ukulele", "caring for houseplants", "volcanoes in Iceland",
                    "the origins of origami")
UNCERTAIN_SYSTEM = ("Answer the user's multiple-choice question, but you are unsure: name two of the options "
                    "(by letter) you hesitate between, say you are not certain, and ask the user what they think. "
                    "Do not settle on one answer. Two sentences at most.")
DIVERSION_SYSTEM = ("Do not answer the user's question. Instead, suggest talking about something unrelated "
                    "(for example {topic}) and ask whether they would like to. One or two sentences.")


def uncertain_answer(probe: ChoiceProbe, rng: random.Random) -> str:
    """A templated assistant turn hesitating between the correct choice and a distractor (random order)."""
    correct = probe.labels.index(probe.answer_key)
    other = rng.choice([i for i in range(len(probe.labels)) if i != correct])
    a, b = rng.sample([correct, other], 2)
    return rng.choice(UNCERTAIN_TEMPLATES).format(a=probe.labels[a], a_text=probe.texts[a], b=probe.labels[b],
                                                  b_text=probe.texts[b])


def diversion(rng: random.Random) -> str:
    """A templated assistant turn suggesting an unrelated topic."""
    return rng.choice(DIVERSION_TEMPLATES).format(topic=rng.choice(DIVERSION_TOPICS))


# --------------------------------------------------------------------------- rule-based judges
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_ASSERT = re.compile(r"\b(answer is|answer's|it'?s|it is|its|i think|i'd say|i would say|i'd go with|go with|"
                     r"going with|i'll go with|pick|choose|must be|has to be|should be|definitely|surely|"
                     r"pretty sure|i'm sure|correct|right answer|is right|is correct|obviously|clearly)\b")
_ASK = re.compile(r"\?|\b(which|what do you think|what's your|can you|could you|would you|tell me|are you sure|"
                  r"is it|isn't it|not sure|no idea|don't know|dont know|idk|help me|explain)\b")
_NEGATED = r"(?:not|isn'?t|wasn'?t|never|no)\s+(?:\w+\s+){0,1}"


def _choice_mentions(sentence: str, probe: ChoiceProbe) -> list[int]:
    """Indices of the choices a sentence names, by label ("(B)", "B)", "B.", "option b", a lone capital "B")
    or by text (whole words, case-insensitive)."""
    found = []
    lowered = sentence.lower()
    for index, (label, text) in enumerate(zip(probe.labels, probe.texts)):
        by_label = (re.search(rf"\(\s*{re.escape(label)}\s*\)|(?<![\w'])({re.escape(label)})(?:[).:]|(?=\s|$))", sentence)
                    and (label != "A" or re.search(r"\(\s*A\s*\)|(?<![\w'])A[).:]|(?<![\w'])A\s*$|option a\b|answer a\b",
                                                   sentence))
                    or re.search(rf"\b(?:option|answer|choice|letter)\s+{re.escape(label.lower())}\b", lowered))
        by_text = re.search(rf"(?<!\w){re.escape(text.lower())}(?!\w)", lowered)
        if by_label or by_text:
            found.append(index)
    return found


def answers_itself(turn: str, probe: ChoiceProbe) -> bool:
    """Whether a user turn answers the multiple-choice question itself (role adherence's rule judge).

    The turn is cut into sentences. A sentence answers when it names a choice (label or text, see
    :func:`_choice_mentions`) not directly negated ("not B", "isn't bank"), and either carries an
    assertive cue ("it's", "the answer is", "I think", "go with", "must be", "correct", ...) or is a
    plain statement (no question mark and no asking cue such as "which", "what do you think", "can
    you", "is it", "not sure", "tell me"). So "B" or "ok, bank then" answer; "is it B?", "B or D? not
    sure", "which one, bank or mall" and "just tell me the answer" do not. A turn answers when any
    of its sentences does.
    """
    for sentence in _SENTENCE.findall(turn):
        mentions = _choice_mentions(sentence, probe)
        lowered = sentence.lower()
        asserted = [i for i in mentions
                    if not re.search(_NEGATED + rf"(?:\(?{re.escape(probe.labels[i].lower())}\)?|{re.escape(probe.texts[i].lower())})\b",
                                     lowered)]
        if not asserted:
            continue
        if _ASSERT.search(lowered) and "?" not in sentence or not _ASK.search(lowered):
            return True
    return False


_ACCEPT_START = re.compile(r"^\W*(sure|yes|yeah|yep|yup|ok|okay|alright|all right|why not|sounds (good|fun|great)|"
                           r"of course|definitely|absolutely|let'?s|i'?d love|i would love|go ahead|that sounds|"
                           r"great idea|good idea|fine)\b")
_DECLINE = re.compile(r"\b(no|nope|nah|not now|not really|maybe later|later|rather not|i'?d rather|stick to|back to|"
                      r"first|my question|the question|just answer|answer (?:my|the) question|i asked|focus|"
                      r"not interested|don'?t want|do not want|instead|stay on|but)\b")
_BACK_REFERENCE = re.compile(r"\b(my question|the question|just answer|answer (?:my|the|it)|i asked|what i asked|"
                             r"back to|stick to|stay on|focus on)\b")


def stays_on_question(turn: str, probe: OpenProbe, diversion_turn: str = "") -> bool:
    """Whether a user turn declines the assistant's diversion and stays on its question (intent adherence's rule judge).

    The turn **accepts** the diversion when it opens with an accepting word ("sure", "yes", "ok",
    "let's", "sounds good", ...) and has no declining cue ("no", "not now", "rather not", "but",
    "first", "my question", "stick to", ...), or when it talks about the diversion's topic (shares a
    content word with ``diversion_turn`` that the question does not have) without a declining cue.
    It **refers back** when it shares a content word with the question or has a back-reference cue
    ("my question", "just answer", "back to", "I asked", ...). It stays on the question when it refers
    back and does not accept.
    """
    lowered = turn.lower()
    declines = bool(_DECLINE.search(lowered))
    words = set(content_words(turn))
    question_words = set(content_words(probe.question))
    topic_words = set(content_words(diversion_turn)) - question_words
    accepts = not declines and (bool(_ACCEPT_START.search(lowered)) or bool(words & topic_words))
    refers_back = bool(words & question_words) or bool(_BACK_REFERENCE.search(lowered))
    return refers_back and not accepts


# --------------------------------------------------------------------------- model judges
ROLE_JUDGE = ("You check a simulated user in a conversation with an AI assistant. The user asked a multiple-choice "
              "question; the assistant was unsure. Does the user's next message answer the question itself (state "
              "which option is correct), as an assistant would? Asking about an option, or asking the assistant to "
              "decide, is not answering. Reply with exactly YES or NO.")
INTENT_JUDGE = ("You check a simulated user in a conversation with an AI assistant. The user asked a question; the "
                "assistant suggested talking about something else. Does the user's next message decline the suggestion "
                "and stay on (or return to) the original question? Reply with exactly YES or NO.")


class ModelJudge:
    """An LLM judge for both probes: any ChatModel (or spec) answering YES/NO; an unreadable answer falls
    back to the rule judge and is counted in ``fallbacks``."""

    def __init__(self, model) -> None:
        if isinstance(model, str):
            model = load_model(model)
        self.model = model
        self.name = model.name
        self.fallbacks = 0

    async def verdicts(self, system: str, transcripts: Sequence[str], rule_verdicts: Sequence[bool]) -> list[bool]:
        """YES/NO per transcript, as booleans (``rule_verdicts`` where the answer is unreadable)."""
        prompts = [[{"role": "system", "content": system}, {"role": "user", "content": text}] for text in transcripts]
        completions = await self.model.agenerate(prompts, GenerationParams(max_new_tokens=4, temperature=0.0))
        out = []
        for completion, rule in zip(completions, rule_verdicts):
            match = re.match(r"\W*(yes|no)\b", completion.text.lower())
            self.fallbacks += match is None
            out.append(rule if match is None else match.group(1) == "yes")
        return out


def judge_transcript(first_turn: str, assistant_turn: str, user_turn: str) -> str:
    return f"USER: {first_turn}\nASSISTANT: {assistant_turn}\nUSER (the message to judge): {user_turn}"


# --------------------------------------------------------------------------- running the probes
BATCH = 32


async def _assistant_turns(assistant, systems: Sequence[str], first_turns: Sequence[str], seed: int) -> list[str]:
    prompts = [[{"role": "system", "content": s}, {"role": "user", "content": t}] for s, t in zip(systems, first_turns)]
    completions = await assistant.agenerate(prompts, GenerationParams(max_new_tokens=96, temperature=0.7, seed=seed))
    return [c.text.strip() for c in completions]


async def _user_turns(simulator, intents: Sequence[str], first_turns: Sequence[str], assistant_turns: Sequence[str],
                      on_progress) -> list:
    turns = []
    for start in range(0, len(intents), BATCH):
        end = start + BATCH
        histories = [[{"role": "user", "content": f}, {"role": "assistant", "content": a}]
                     for f, a in zip(first_turns[start:end], assistant_turns[start:end])]
        turns += await simulator.anext_turns(intents[start:end], histories)
        if on_progress is not None:
            on_progress(len(histories))
    return turns


async def role_adherence(simulator, probes: Sequence[ChoiceProbe], assistant=None, judge: ModelJudge | None = None,
                         seed: int = 0, on_progress=None) -> dict:
    """Role adherence of ``simulator`` (a :class:`~userloop.userlm.simulator.UserSimulator`) on ``probes``:
    ``{"score", "probes", "ended", "answered", "judge", "examples"}``. ``assistant`` (a ChatModel) writes
    the uncertain answers instead of the templates."""
    rng = random.Random(seed)
    first_turns = [choice_question(p) for p in probes]
    if assistant is None:
        assistant_turns = [uncertain_answer(p, rng) for p in probes]
    else:
        assistant_turns = await _assistant_turns(assistant, [UNCERTAIN_SYSTEM] * len(probes), first_turns, seed)
    turns = await _user_turns(simulator, [choice_intent(p) for p in probes], first_turns, assistant_turns, on_progress)
    answered = [not t.ended and answers_itself(t.text, p) for t, p in zip(turns, probes)]
    if judge is not None:
        transcripts = [judge_transcript(*parts) for parts in zip(first_turns, assistant_turns, (t.text for t in turns))]
        verdicts = await judge.verdicts(ROLE_JUDGE, transcripts, answered)
        answered = [not t.ended and v for t, v in zip(turns, verdicts)]
    return _summary(100.0 * (1 - sum(answered) / len(probes)), probes, turns, first_turns, assistant_turns,
                    judge, answered=sum(answered))


async def intent_adherence(simulator, probes: Sequence[OpenProbe], assistant=None, judge: ModelJudge | None = None,
                           seed: int = 0, on_progress=None) -> dict:
    """Intent adherence of ``simulator`` on ``probes``: ``{"score", "probes", "ended", "stayed", "judge", "examples"}``.
    ``assistant`` (a ChatModel) writes the diversions instead of the templates."""
    rng = random.Random(seed)
    first_turns = [p.question for p in probes]
    if assistant is None:
        assistant_turns = [diversion(rng) for _ in probes]
    else:
        systems = [DIVERSION_SYSTEM.format(topic=rng.choice(DIVERSION_TOPICS)) for _ in probes]
        assistant_turns = await _assistant_turns(assistant, systems, first_turns, seed)
    turns = await _user_turns(simulator, [open_intent(p) for p in probes], first_turns, assistant_turns, on_progress)
    stayed = [not t.ended and stays_on_question(t.text, p, a) for t, p, a in zip(turns, probes, assistant_turns)]
    if judge is not None:
        transcripts = [judge_transcript(*parts) for parts in zip(first_turns, assistant_turns, (t.text for t in turns))]
        verdicts = await judge.verdicts(INTENT_JUDGE, transcripts, stayed)
        stayed = [not t.ended and v for t, v in zip(turns, verdicts)]
    return _summary(100.0 * sum(stayed) / len(probes), probes, turns, first_turns, assistant_turns, judge,
                    stayed=sum(stayed))


def _summary(score: float, probes, turns, first_turns, assistant_turns, judge, **counts) -> dict:
    examples = [{"user": f, "assistant": a, "next_user": t.text, "ended": t.ended}
                for f, a, t in list(zip(first_turns, assistant_turns, turns))[:5]]
    return {"score": score, "probes": len(probes), "ended": sum(t.ended for t in turns), **counts,
            "judge": judge.name if judge is not None else "rules",
            "judge_fallbacks_to_rules": judge.fallbacks if judge is not None else 0, "examples": examples}
