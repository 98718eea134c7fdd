"""``userloop intents``: one high-level intent per conversation, the task a user LM is conditioned on.

"Flipping the Dialogue" (arXiv 2510.06552, section 2) conditions its user LM on an intent that an
LLM writes from the whole conversation: the user's high-level goal, without the specific details,
starting with "You are a user chatting with an assistant language model to". :func:`write_intents`
follows that recipe with our own prompt and examples (:func:`intent_prompt`); each answer is
validated (:func:`intent_problem`), a failed one is asked for once more, and a second failure falls
back to :func:`offline_intent`, a rule-based intent from the first user turn that also serves runs
without a model. Conversations that already carry an intent (the testbed's are true ones) keep it
unless ``overwrite`` is set. Every conversation is counted in the report under how it got its intent.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from userloop.conversation import Conversation, read_parquet, write_parquet
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.files import read_user_json, write_atomic
from userloop.models import GenerationParams, load_model

INTENT_PREFIX = "You are a user chatting with an assistant language model to"
MAX_INTENT_WORDS = 60
BATCH_SIZE = 256

INSTRUCTIONS = f"""You summarise what a user wanted from a conversation with an AI assistant.
Read the whole conversation, then write the user's high-level intent: the goal that drove every user turn,
in one sentence of at most 40 words. Describe the kind of task, not its specifics: leave out names, numbers,
quoted text, code and exact constraints, so that another person could pursue the same goal in their own words.
If the user moved on to other tasks, join them with ", and then to".
Start with exactly "{INTENT_PREFIX}" and write nothing else."""

# (conversation, intent) pairs written for this prompt: they show the level of detail wanted.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (("USER: my landlord hasnt fixed the heating in 3 weeks, can u write him an email, firm but polite\n"
      "ASSISTANT: Subject: Heating repair request. Dear Mr. Alvarez, ...\n"
      "USER: shorter pls and mention my lease"),
     f"{INTENT_PREFIX} draft a firm but polite email to your landlord about a repair that has not been done."),
    (("USER: why does my python loop print the same number 10 times\n"
      "ASSISTANT: You are printing `total` instead of `i` inside the loop ...\n"
      "USER: ok that works. now how do i put the numbers in a list instead"),
     f"{INTENT_PREFIX} debug a short Python loop, and then to learn how to collect its results in a list."),
    (("USER: what are some good sci-fi books for someone who liked the martian\n"
      "ASSISTANT: You might enjoy Project Hail Mary, Red Mars, ...\n"
      "USER: anything less technical?"),
     f"{INTENT_PREFIX} get book recommendations similar to a novel you enjoyed, preferring less technical ones."),
)

# --------------------------------------------------------------------------- the model's side


def transcript(conversation: Conversation, max_chars: int = 6000, user_chars: int = 1200,
               assistant_chars: int = 400) -> str:
    """The conversation as ``USER:`` / ``ASSISTANT:`` lines, truncated for the prompt.

    Each user turn keeps its first ``user_chars`` characters and each assistant turn its first
    ``assistant_chars`` (user turns say more about the intent); turns past ``max_chars`` in all are
    replaced by a note of how many were left out, so the start of the conversation always shows.
    """
    lines: list[str] = []
    used = 0
    messages = [m for m in conversation.messages if m.role in ("user", "assistant")]
    for index, message in enumerate(messages):
        limit = user_chars if message.role == "user" else assistant_chars
        text = " ".join(message.content.split())
        text = text if len(text) <= limit else text[:limit].rstrip() + " [...]"
        line = f"{message.role.upper()}: {text}"
        if lines and used + len(line) > max_chars:
            lines.append(f"[... {len(messages) - index} more turns left out]")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def intent_prompt(conversation: Conversation) -> list[dict[str, str]]:
    """The chat messages that ask a model for ``conversation``'s intent (instructions, examples, the conversation)."""
    messages = [{"role": "system", "content": INSTRUCTIONS}]
    for example, intent in EXAMPLES:
        messages.append({"role": "user", "content": f"Conversation:\n{example}\n\nIntent:"})
        messages.append({"role": "assistant", "content": intent})
    messages.append({"role": "user", "content": f"Conversation:\n{transcript(conversation)}\n\nIntent:"})
    return messages


def clean_intent(text: str) -> str:
    """The answer without surrounding whitespace or quotes."""
    return text.strip().strip("\"'`").strip()


def intent_problem(intent: str, conversation: Conversation) -> str | None:
    """Why ``intent`` is not acceptable for ``conversation``, or None.

    Acceptable: it starts with :data:`INTENT_PREFIX` and says something after it, is one paragraph
    of at most :data:`MAX_INTENT_WORDS` words, and copies no number from the user's turns (numbers
    are the commonest specific detail a summary should leave out).
    """
    if not intent.startswith(INTENT_PREFIX):
        return "does not start with the intent prefix"
    if len(intent[len(INTENT_PREFIX):].split()) < 2:
        return "says nothing after the prefix"
    if "\n" in intent:
        return "more than one line"
    if len(intent.split()) > MAX_INTENT_WORDS:
        return f"longer than {MAX_INTENT_WORDS} words"
    user_numbers = {n for turn in conversation.user_turns for n in _NUMBER.findall(turn)}
    if set(_NUMBER.findall(intent)) & user_numbers:
        return "copies a number from the user's turns"
    return None


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

# --------------------------------------------------------------------------- the offline fallback

KINDS = ("code", "writing", "math", "recommendation", "question", "other")

_ACRONYM = re.compile(r"\b(stand for|short for|abbreviation)\b")
_CODE_SYNTAX = re.compile(r"```|>>>|^\s*(def|class|import|from\s+\w+\s+import|#include|function)\b|\breturns?\b.*\(|\w\(\w*\)",
                          re.MULTILINE)
_WH_QUESTION = re.compile(r"^(who|whom|whose|when|where|which|why|what (is|was|are|were|does|did|do)\b(?! some))")
_CODE_TOOLS = re.compile(r"\b(python|javascript|typescript|java|c\+\+|c#|sql|html|css|rust|golang|bash|regex|"
                         r"script|compile[sd]?|bug|debug|stack trace|traceback)\b")
_CODE_WORDS = re.compile(r"\b(code|function)\b")
_LANGUAGES = {"python": "Python", "javascript": "JavaScript", "typescript": "TypeScript", "java": "Java",
              "c++": "C++", "c#": "C#", "sql": "SQL", "html": "HTML", "css": "CSS", "rust": "Rust", "golang": "Go",
              "bash": "Bash"}
_SUMMARY = re.compile(r"\b(summar(y|ise|ize|ising|izing)|tl;?dr)\b")
_FORMS = ("cover letter", "blog post", "email", "poem", "poetry", "story", "essay", "letter", "toast", "speech",
          "song", "lyrics", "tweet", "caption", "review", "article", "outline", "post", "invitation",
          "announcement", "slogan", "bio")
_WRITE = re.compile(r"\b(write|draft|compose|rewrite|proofread|paraphrase)\b")
_MATH = re.compile(r"\b(calculate|compute|work out|solve|equation|percent(age)?|average|budget|cost|spend|save up|"
                   r"afford|how much money|in total)\b")
_MATH_WITH_NUMBERS = re.compile(r"\b(how (much|many)|total|plus|minus|times|divided|multipl\w+)\b|[$%=]")
_RECOMMEND = re.compile(r"\b(recommend\w*|suggest\w*|what are some|any good|ideas?|some new|to try)\b")
_THING_AFTER = re.compile(r"\b(?:recommend|suggest|some|good|for|new)\s+(?:me\s+)?(?:some\s+|a few\s+|good\s+|new\s+)*"
                          r"([a-z]+s)\b")
_QUESTION = re.compile(r"^(what|who|when|where|which|why|how|is|are|does|do|did|can|could)\b|\?\s*$")
_NOT_THINGS = frozenset(("ideas", "suggestions", "recommendations", "things", "options", "thanks", "is", "was",
                         "this", "us", "has", "does", "yes", "as"))


def request_kind(text: str) -> str:
    """The kind of request in a user turn (one of :data:`KINDS`), by keyword rules in a fixed order:
    code (syntax, a language or tool), a turn opening with a wh-question (and no numbers), the words
    "code" or "function", writing (a named
    piece of writing or a summary), arithmetic, recommendations, other questions, a bare request to
    write, anything else."""
    lowered = text.lower()
    if _CODE_SYNTAX.search(text) or _CODE_TOOLS.search(lowered) and not _ACRONYM.search(lowered):
        return "code"
    if _WH_QUESTION.search(lowered.strip()) and not re.search(r"\d", lowered):
        return "question"
    if _CODE_WORDS.search(lowered):
        return "code"
    if _SUMMARY.search(lowered) or _form(lowered):
        return "writing"
    if _MATH.search(lowered) or (re.search(r"\d", lowered) and _MATH_WITH_NUMBERS.search(lowered)):
        return "math"
    if _RECOMMEND.search(lowered):
        return "recommendation"
    if any(_QUESTION.search(sentence.strip()) for sentence in re.split(r"(?<=[.!?])\s+", lowered)):
        return "question"
    if _WRITE.search(lowered):
        return "writing"
    return "other"


def offline_intent(conversation: Conversation) -> str:
    """A high-level intent from the first user turn alone, without a model.

    The turn's request kind (:func:`request_kind`) picks a verb phrase, completed with what the rules
    can name safely: the programming language, the piece of writing, the kind of thing recommended.
    It sees neither later tasks nor the details that make an LLM-written intent specific to its
    conversation; docs/user-simulator.md reports how often its kind matches the testbed's truth.
    """
    turns = conversation.user_turns
    first = turns[0] if turns else ""
    lowered = first.lower()
    kind = request_kind(first)
    if kind == "code":
        language = next((name for key, name in _LANGUAGES.items() if re.search(rf"(?<!\w){re.escape(key)}(?!\w)",
                                                                              lowered)), None)
        phrase = f"get help with a programming task in {language}" if language else "get help with a programming task"
    elif kind == "writing":
        form = "summary" if _SUMMARY.search(lowered) else _form(lowered)
        phrase = ("get a short text summarised" if form == "summary" else "get help writing some poetry"
                  if form == "poetry" else f"get help writing {_article(form)} {form}" if form
                  else "get help with a piece of writing")
    elif kind == "math":
        phrase = "work out the answer to an everyday calculation"
    elif kind == "recommendation":
        things = [t for t in _THING_AFTER.findall(lowered) if t not in _NOT_THINGS]
        phrase = f"get some recommendations for {things[0]}" if things else "get some recommendations"
    elif kind == "question":
        phrase = "get an answer to a factual question"
    else:
        phrase = "get help with a request"
    return f"{INTENT_PREFIX} {phrase}."


def _form(lowered: str) -> str | None:
    return next((form for form in _FORMS if re.search(rf"\b{form}\b", lowered)), None)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"

# --------------------------------------------------------------------------- a prepared folder


@dataclass
class IntentsResult:
    out: Path
    report: dict[str, Any]


@dataclass
class _Counts:
    kept: int = 0                   # already had an intent
    model: int = 0                  # written by the model, valid at the first answer
    model_retried: int = 0          # written by the model, valid at the second answer
    offline: int = 0                # no model given: the offline fallback
    invalid_then_offline: int = 0   # two invalid answers: the offline fallback
    problems: Counter[str] = field(default_factory=Counter)


def count_conversations(data: str | Path) -> int:
    """How many conversations the prepared folder ``data`` holds (from the Parquet metadata)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in prepared_splits(Path(data)).values())


def write_intents(data: str | Path, out: str | Path, model=None, overwrite: bool = False, seed: int = 0,
                  on_progress: Callable[[int], None] | None = None) -> IntentsResult:
    """Copy the prepared folder ``data`` to ``out`` (same splits) with every ``Conversation.intent`` filled.

    ``model`` is a :class:`~userloop.models.ChatModel` or a spec string; without one, intents come
    from :func:`offline_intent`. ``out/report.json`` is ``data``'s report plus an ``intents`` section
    counting how each conversation got its intent; ``on_progress`` gets the number of conversations done.
    """
    data, out = Path(data), Path(out)
    splits = prepared_splits(data)
    if not splits:
        raise UserError(f"{data} is not a prepared folder (no report.json and train.parquet): "
                        "run 'userloop data prepare' first")
    if out.resolve() == data.resolve():
        raise UserError("--out must differ from --data (the prepared folder is read while the copy is written)")
    if isinstance(model, str):
        model = load_model(model)
    out.mkdir(parents=True, exist_ok=True)
    counts = _Counts()
    per_split = {}
    with asyncio.Runner() as runner:
        try:
            for split, path in splits.items():
                conversations = _with_intents(read_parquet(path), model, overwrite, seed, counts, runner, on_progress)
                per_split[split] = write_parquet(conversations, out / f"{split}.parquet")
        finally:
            if model is not None:
                runner.run(model.aclose())
    report = read_user_json(data / "report.json", "prepared data report")
    report["intents"] = {
        "model": model.name if model is not None else None, "overwrite": overwrite,
        "conversations": sum(per_split.values()), "per_split": per_split,
        "kept": counts.kept, "written_by_model": counts.model + counts.model_retried,
        "written_by_model_after_retry": counts.model_retried, "offline_fallback": counts.offline,
        "invalid_then_offline_fallback": counts.invalid_then_offline,
        "invalid_answers_by_reason": dict(counts.problems.most_common()),
    }
    write_atomic(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if (data / "bad_lines.jsonl").is_file():
        shutil.copyfile(data / "bad_lines.jsonl", out / "bad_lines.jsonl")
    return IntentsResult(out, report)


def _with_intents(conversations: Iterator[Conversation], model, overwrite: bool, seed: int, counts: _Counts,
                  runner: asyncio.Runner, on_progress) -> Iterator[Conversation]:
    batch: list[Conversation] = []
    for conversation in conversations:
        batch.append(conversation)
        if len(batch) == BATCH_SIZE:
            yield from _fill_batch(batch, model, overwrite, seed, counts, runner, on_progress)
            batch = []
    yield from _fill_batch(batch, model, overwrite, seed, counts, runner, on_progress)


def _fill_batch(batch: list[Conversation], model, overwrite: bool, seed: int, counts: _Counts,
                runner: asyncio.Runner, on_progress) -> list[Conversation]:
    todo = [c for c in batch if overwrite or not c.intent]
    counts.kept += len(batch) - len(todo)
    if model is None:
        for conversation in todo:
            conversation.intent = offline_intent(conversation)
        counts.offline += len(todo)
    else:
        runner.run(_ask_model(todo, model, seed, counts))
    if on_progress and batch:
        on_progress(len(batch))
    return batch


async def _ask_model(conversations: Sequence[Conversation], model, seed: int, counts: _Counts) -> None:
    """Ask once, ask the failures again, and give the offline intent to those that failed twice."""
    pending = list(conversations)
    for attempt in range(2):
        if not pending:
            return
        params = GenerationParams(max_new_tokens=96, temperature=0.7, seed=seed + attempt)
        completions = await model.agenerate([intent_prompt(c) for c in pending], params)
        failed = []
        for conversation, completion in zip(pending, completions):
            intent = clean_intent(completion.text)
            problem = intent_problem(intent, conversation)
            if problem is None:
                conversation.intent = intent
                if attempt:
                    counts.model_retried += 1
                else:
                    counts.model += 1
            else:
                counts.problems[problem] += 1
                failed.append(conversation)
        pending = failed
    for conversation in pending:
        conversation.intent = offline_intent(conversation)
    counts.invalid_then_offline += len(pending)
