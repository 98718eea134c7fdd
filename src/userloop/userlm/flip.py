"""Flipping conversations into user-LM training samples: token ids and a loss mask.

"Flipping the Dialogue" (arXiv 2510.06552, section 2.2) turns a conversation with intent I and K
user turns u_1..u_K into K+1 samples: (I) -> u_1, (I, u_1, a_1, ..., a_{k-1}) -> u_k, and
(I, whole conversation) -> ``<|endconversation|>``; the loss falls only on the target. Two schemes:

* ``per_turn``: exactly that, K+1 sequences, each with the mask on its last target only.
* ``packed``: one sequence per conversation with the mask on every target. A causal LM sees the
  same prefix before each target token in both, so the summed loss is the same, while the packed
  scheme processes about K times fewer tokens.

A target is a user turn's content followed by ``<|eot_id|>`` (the model learns to stop); the last
target is ``<|endconversation|><|eot_id|>`` (the end token is the content of a final user turn).
Rendering concatenates per-message token ids (``bos``, then per message ``header + content +
<|eot_id|>``), which equals tokenising the chat template's string (contents are trimmed, so the
newline after a header never merges with them) and makes both schemes see identical tokens.
The text between a header and the content is read from the tokenizer's own chat template when it
writes UserLM headers (a look-alike with Llama-3-instruct's ``\n\n`` is scored as it was trained),
else it is UserLM-8b's single newline.
A sample longer than ``max_length`` keeps the targets that end within it (the others are counted
as dropped); a conversation whose first target does not fit is skipped.

Real logs are untidy; where the paper is silent: an empty (or whitespace-only) user turn stays in
the context but is no target (a user LM should not learn to send nothing); a conversation that ends
on a user turn (no reply in the log) gets no ``<|endconversation|>`` target, since the user was
waiting for an answer, not leaving. Both are counted in :class:`FlipReport`.

The same rendering trains an assistant of the same kind (``role="assistant"``, the prompted-assistant
baseline of the paper's Table 2 and RLHI's policy): the targets are the non-empty assistant turns, the
system message is the source's own system prompt (the user's intent stays hidden from an assistant), and
there is no end target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from userloop.conversation import Conversation, read_parquet
from userloop.data.sources import prepared_splits
from userloop.errors import UserError
from userloop.userlm.intents import offline_intent
from userloop.userlm.template import (
    BEGIN_OF_TEXT,
    END_CONVERSATION,
    END_HEADER,
    END_OF_TURN,
    START_HEADER,
    special_token_ids,
)

SCHEMES = ("packed", "per_turn")
ROLES = ("user", "assistant")


@dataclass(slots=True)
class Sample:
    """One training sequence: token ids and a 0/1 loss mask of the same length (1 on target tokens)."""

    ids: list[int]
    mask: list[int]


@dataclass(slots=True)
class FlipReport:
    """What flipping did with the conversations it was given (nothing is dropped silently)."""

    role: str = "user"
    conversations: int = 0
    used: int = 0
    skipped_without_intent: int = 0
    skipped_too_long: int = 0
    skipped_without_targets: int = 0
    targets: int = 0
    targets_dropped_by_max_length: int = 0
    empty_turns: int = 0
    ending_on_a_user_turn: int = 0
    with_persona: int = 0
    without_persona: int = 0
    samples: int = 0
    tokens: int = 0
    target_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        line = (f"{self.used:,} of {self.conversations:,} conversations -> {self.samples:,} samples, "
                f"{self.tokens:,} tokens ({self.target_tokens:,} with loss)")
        skipped = [f"{n:,} {what}" for n, what in ((self.skipped_without_intent, "without an intent"),
                                                  (self.skipped_too_long, "whose first target exceeds max_length"),
                                                  (self.skipped_without_targets, f"without a non-empty {self.role} turn"),
                                                  (self.targets_dropped_by_max_length, "targets beyond max_length"),
                                                  (self.empty_turns, f"empty {self.role} turns (no target)"))
                   if n]
        unanswered = (f"; {self.ending_on_a_user_turn:,} conversations end on an unanswered user turn (no end target)"
                      if self.ending_on_a_user_turn else "")
        persona = (f"; {self.with_persona:,} used conversations with a persona, {self.without_persona:,} without"
                   if self.with_persona or self.without_persona else "")
        return line + (f"; skipped {', '.join(skipped)}" if skipped else "") + unanswered + persona


class Renderer:
    """Token ids of UserLM-formatted messages, built from per-message pieces (see the module docstring)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        ids = special_token_ids(tokenizer)
        self.bos, self.eot, self.end_conversation = ids[BEGIN_OF_TEXT], ids[END_OF_TURN], ids[END_CONVERSATION]
        self._start, self._end = ids[START_HEADER], ids[END_HEADER]
        self._newline = self.encode(header_separator(tokenizer))
        self._headers: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def header(self, role: str) -> list[int]:
        if role not in self._headers:
            self._headers[role] = [self._start, *self.encode(role), self._end, *self._newline]
        return self._headers[role]

    def bodies(self, messages: list[dict]) -> list[list[int]]:
        """Each message's content (trimmed, as the template does) and the end-of-turn token (one batched call)."""
        if not messages:
            return []
        encoded = self.tokenizer([m["content"].strip() for m in messages], add_special_tokens=False)["input_ids"]
        return [[*ids, self.eot] for ids in encoded]

    def prompt(self, messages: list[dict], role: str = "user") -> list[int]:
        """What the model reads before writing the next ``role`` turn (the template's full string)."""
        ids = [self.bos]
        for message, body in zip(messages, self.bodies(messages), strict=True):
            ids += self.header(message["role"]) + body
        return ids + self.header(role)


def header_separator(tokenizer) -> str:
    """What the tokenizer's chat template writes between a header and the message content: the text after
    ``<|end_header_id|>`` and before a probe content (one newline, UserLM-8b's, when there is no such template)."""
    probe = "Userloopprobe"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False)
    except Exception:  # noqa: BLE001 - no template, or one that refuses the probe: the UserLM default
        return "\n"
    before, found, _ = text.partition(probe)
    _, header, separator = before.rpartition(END_HEADER)
    return separator if found and header and not separator.strip() else "\n"


USER_PERSONA_PREFIX = "Your persona: "


def user_system_message(intent: str, persona: str | None = None) -> str:
    """The user LM's system message: the intent, and for a persona-conditioned user LM the persona
    after a blank line as ``"Your persona: {persona}"`` (whitespace collapsed). Training and simulation
    both build it here, so a simulator sees exactly the text it was trained on; ``None`` or an empty
    persona gives the bare intent, UserLM-8b's format."""
    if persona is None or not persona.strip():
        return intent
    return f"{intent}\n\n{USER_PERSONA_PREFIX}{' '.join(persona.split())}"


def user_lm_messages(conv: Conversation, with_intent: bool = True, end: bool = True,
                     persona: str | None = None) -> list[dict]:
    """The conversation as the user LM sees it: the intent as system message (when ``with_intent``;
    with ``persona``, :func:`user_system_message`), the user and assistant turns (a source's own system
    prompt is the assistant's, not the user's: left out), and with ``end`` a final user turn
    ``<|endconversation|>`` after the last assistant turn (none when the conversation ends on an
    unanswered user turn, see the module docstring)."""
    messages = [{"role": "system", "content": user_system_message(conv.intent, persona)}] if with_intent else []
    messages += [{"role": m.role, "content": m.content} for m in conv.messages if m.role in ("user", "assistant")]
    if end and messages and messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": END_CONVERSATION})
    return messages


def assistant_messages(conv: Conversation) -> list[dict]:
    """The conversation as an assistant sees it: the source's system prompt (if any) and the user and
    assistant turns; no intent and no end turn."""
    return [{"role": m.role, "content": m.content} for m in conv.messages if m.role in ("system", "user", "assistant")]


def render(renderer: Renderer, messages: list[dict], scheme: str, max_length: int,
           max_targets: int | None = None, role: str = "user") -> tuple[list[Sample], int, int]:
    """Samples of one flipped conversation; returns ``(samples, targets, targets dropped)``.

    Every non-empty ``role`` message is a target (user: the user LM; assistant: an assistant). ``packed``: one sample, mask on all kept targets; ``per_turn``:
    one sample per kept target, the conversation up to it with the mask on it alone. Targets are
    kept when they end within ``max_length`` tokens, and only the first ``max_targets`` when given.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    ids, mask, spans = [renderer.bos], [0], []
    for message, body in zip(messages, renderer.bodies(messages), strict=True):
        head = renderer.header(message["role"])
        is_target = message["role"] == role and bool(message["content"].strip())
        ids += head + body
        mask += [0] * len(head) + [int(is_target)] * len(body)
        if is_target:
            spans.append((len(ids) - len(body), len(ids)))
    kept = [(start, stop) for start, stop in spans if stop <= max_length][:max_targets]
    dropped = len(spans) - len(kept)
    if not kept:
        return [], len(spans), dropped
    if scheme == "packed":
        stop = kept[-1][1]
        return [Sample(ids[:stop], mask[:stop])], len(spans), dropped
    return [Sample(ids[:stop], [0] * start + [1] * (stop - start)) for start, stop in kept], len(spans), dropped


def flip(conversations: Iterable[Conversation], tokenizer, scheme: str = "packed", max_length: int = 2048,
         with_intent: bool = True, end: bool = True, role: str = "user",
         personas: Mapping[str, str] | None = None) -> tuple[list[Sample], FlipReport]:
    """Flip conversations into samples (see the module docstring) and account for every one.

    Conversations without an intent are skipped and counted when ``with_intent`` (fill intents
    first with ``userloop.userlm.intents``); ``end=False`` leaves out the ``<|endconversation|>``
    target (perplexity of real user turns only). ``role="assistant"`` renders assistant samples
    instead (:func:`assistant_messages`; intent and end do not apply). ``personas`` (persona text by
    user id) makes a persona-conditioned user LM: a conversation whose user has one gets it in the
    system message (:func:`user_system_message`), the others keep the bare intent; the used
    conversations of each kind are counted (``with_persona`` / ``without_persona``).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    renderer = tokenizer if isinstance(tokenizer, Renderer) else Renderer(tokenizer)
    samples: list[Sample] = []
    report = FlipReport(role=role)
    conditioned = personas is not None and role == "user" and with_intent
    for conv in conversations:
        report.conversations += 1
        persona = personas.get(conv.user_id or "") if conditioned else None
        if role == "assistant":
            messages = assistant_messages(conv)
        elif with_intent and not (conv.intent or "").strip():
            report.skipped_without_intent += 1
            continue
        else:
            messages = user_lm_messages(conv, with_intent, end, persona)
            report.ending_on_a_user_turn += bool(end and messages and messages[-1]["content"] != END_CONVERSATION)
        report.empty_turns += sum(m["role"] == role and not m["content"].strip() for m in messages)
        flipped, targets, dropped = render(renderer, messages, scheme, max_length, role=role)
        report.targets += targets
        report.targets_dropped_by_max_length += dropped
        if not targets:
            report.skipped_without_targets += 1
            continue
        if not flipped:
            report.skipped_too_long += 1
            continue
        report.used += 1
        if conditioned:
            report.with_persona += bool(persona)
            report.without_persona += not persona
        samples += flipped
    report.samples = len(samples)
    report.tokens = sum(len(s.ids) for s in samples)
    report.target_tokens = sum(sum(s.mask) for s in samples)
    return samples, report


def read_split(data: str | Path, split: str) -> tuple[list[Conversation], int]:
    """One split of a prepared folder, every conversation with an intent: a missing one gets the
    rule-based offline intent (:func:`userloop.userlm.intents.offline_intent`); returns how many did."""
    splits = prepared_splits(Path(data))
    if split not in splits:
        raise UserError(f"{data}: not a prepared folder with a {split} split (run 'userloop data prepare' first)")
    conversations = list(read_parquet(splits[split]))
    missing = [conv for conv in conversations if not (conv.intent or "").strip()]
    for conv in missing:
        conv.intent = offline_intent(conv)
    return conversations, len(missing)
