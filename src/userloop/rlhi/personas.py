"""User personas derived from each user's long-term history (RLHI section 2.2, persona-conditioned learning).

A persona has the testbed's structured fields, the four answer preferences of RLHI's personas
(``expertise``: novice / intermediate / expert, ``detail``: brief / detailed, ``tone``: casual / formal,
``structure``: prose / structured), the user's interest ``domains`` (the testbed's 12) and ``language``,
plus a one-sentence ``persona`` text in the style of :meth:`userloop.testbed.Persona.describe`.

Backends: :func:`derive_offline` (``offline:personas``, :class:`OfflinePersonas`) reads the user's own turns and their classified feedback: what their
complaints ask for ("shorter", "use bullet points", "explain it more simply", "more professional"),
preferences they state up front ("keep it short"), how they write (register: lower case, "pls", "thx"
against "Could you", "Thank you"), what they say about themselves ("I'm new to this", "skip the basics"),
whether they correct wrong answers themselves, what the answers they accepted without complaint are
like (length, lists, technicality, register: the implicit signal of RLHI's user feedback), and what their
first turns are about (the offline classifier's domain head). :class:`ModelPersonas` asks a chat model with our prompt for the same
fields as JSON (validated; retried once; the offline derivation on a second failure, counted).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from userloop.conversation import Conversation
from userloop.rlhi.followups import FollowUp, Labels, clip
from userloop.rlhi.llm import ask_validated, parse_json_object
from userloop.rlhi.taxonomy import NEGATIVE_FEEDBACK, REASON_PREFERENCE, feedback_reasons, normalise_label
from userloop.testbed.persona import DOMAINS, PERSONA_DISTRIBUTION
from userloop.testbed.persona_match import technicality, text_features

PREFERENCE_FIELDS: tuple[str, ...] = ("expertise", "detail", "tone", "structure")
FIELD_VALUES: dict[str, tuple[str, ...]] = {name: tuple(PERSONA_DISTRIBUTION[name]) for name in PREFERENCE_FIELDS}
DEFAULT_MIN_CONVERSATIONS = 3
# What the answers a user accepted reveal (:func:`revealed_preferences`), with thresholds calibrated on a
# testbed population that is not the default one (800 users, seed 5; docs/rlhi.md): detailed from this
# many words on average, structured from this share of answers with list lines, novice below / expert
# above this technicality (the scorer's long-word measure, 0-1).
DETAILED_ACCEPTED_WORDS = 80
STRUCTURED_ACCEPTED_SHARE = 0.35
NOVICE_BELOW, EXPERT_ABOVE = 0.2, 0.5
EXPERTISE_VOTE_MARGIN = 3   # expertise votes decide only with this lead (corrections are weak evidence)
MAX_DOMAINS = 3

# Preferences stated in a request ("..., keep it short"), by (axis, value).
STATED = {("detail", "brief"): r"keep it short|short answer|brief answer|be brief|concise",
          ("detail", "detailed"): r"in detail|thorough answer|detailed answer|explain (?:it )?thoroughly",
          ("structure", "structured"): r"bullet points|use a list|step by step|numbered list",
          ("structure", "prose"): r"no lists|just a paragraph|normal text|in prose",
          ("tone", "formal"): r"keep it professional|formal tone",
          ("tone", "casual"): r"keep it casual|no need to be formal"}
_STATED = tuple((key, re.compile(pattern, re.IGNORECASE)) for key, pattern in STATED.items())
# What users say about their own level.
SELF_NOVICE = re.compile(r"new to this|silly question|not very good at|beginner|don'?t really know much|newbie",
                         re.IGNORECASE)
SELF_EXPERT = re.compile(r"skip the basics|fairly experienced|already know the theory|professionally|"
                         r"work with this a lot|i'?m an expert|senior", re.IGNORECASE)
# How users write: casual and formal register markers in their own turns.
CASUAL_WRITING = re.compile(r"\b(?:pls|plz|thx|ty|u|lol|gimme|yo|hey|gonna|wanna|kinda|asap|btw|ok)\b")
FORMAL_WRITING = re.compile(r"\b(?:Could you|Would you|Please|Thank you|I would|Kindly|May I|Hello\.|Good morning)\b")


@dataclass(slots=True)
class DerivedPersona:
    """One line of ``personas.jsonl``."""

    user_id: str
    persona: str
    expertise: str | None     # None: unknown (a personas file without the axes)
    detail: str | None
    tone: str | None
    structure: str | None
    domains: list[str]
    language: str | None
    conversations: int
    backend: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> DerivedPersona:
        """A record of ``personas.jsonl`` (:func:`userloop.data.personas.persona_records`); an axis the record
        does not give is None (unknown)."""
        return cls(str(row["user_id"]), row["persona"] or "", *(row.get(axis) for axis in ("expertise", "detail", "tone", "structure")),
                   list(row.get("domains") or []), row.get("language"), int(row.get("conversations") or 0),
                   str(row.get("backend") or "file"), dict(row.get("evidence") or {}))


def describe(expertise: str, detail: str, tone: str, structure: str, domains: Sequence[str]) -> str:
    """The persona sentence, worded as :meth:`userloop.testbed.Persona.describe` words it."""
    article = "An" if expertise in ("expert", "intermediate") else "A"
    level = {"novice": "novice", "intermediate": "intermediate-level user", "expert": "expert"}[expertise]
    shape = "structured answers with lists or steps" if structure == "structured" else "answers in plain prose"
    interests = domains[0] if len(domains) == 1 else ", ".join(domains[:-1]) + " and " + domains[-1] if domains else ""
    return f"{article} {level} who prefers {detail}, {tone} {shape}" + (f", interested in {interests}." if interests else ".")


@dataclass(slots=True)
class UserHistory:
    """What persona derivation reads about one user."""

    user_id: str
    conversations: list[Conversation]
    feedback: list[tuple[FollowUp, Labels]]     # the user's classified follow-ups


def group_histories(conversations: Sequence[Conversation], labelled: Sequence[tuple[FollowUp, Labels]]) -> dict[str, UserHistory]:
    """Conversations and classified follow-ups by user (conversations without a user id are left out)."""
    histories: dict[str, UserHistory] = {}
    for conversation in conversations:
        if conversation.user_id:
            histories.setdefault(conversation.user_id, UserHistory(conversation.user_id, [], [])).conversations.append(conversation)
    for followup, labels in labelled:
        if followup.user_id in histories:
            histories[followup.user_id].feedback.append((followup, labels))
    return histories


def _requests(history: UserHistory) -> list[str]:
    """The user's turns that open a request (first turns and new requests)."""
    followup_index = {(f.conversation_id, f.index): labels for f, labels in history.feedback}
    out = []
    for conversation in history.conversations:
        for i, message in enumerate(conversation.messages):
            if message.role != "user":
                continue
            labels = followup_index.get((conversation.id, i))
            if labels is None or labels.relation in ("new_request", "new_variation"):
                out.append(message.content)
    return out


def preference_votes(history: UserHistory) -> dict[str, Counter]:
    """Votes per persona axis from feedback reasons, stated preferences and self-descriptions."""
    votes: dict[str, Counter] = {name: Counter() for name in PREFERENCE_FIELDS}
    for _, labels in history.feedback:
        if labels.feedback_type in ("none", "positive"):
            continue
        for reason in feedback_reasons(labels.feedback_text):
            if reason in REASON_PREFERENCE:
                axis, value = REASON_PREFERENCE[reason]
                votes[axis][value] += 1
            elif reason == "wrong_answer":   # experts mostly say what the right answer is, novices mostly do not
                corrected = labels.feedback_type == "make_aware_with_correction"
                votes["expertise"]["expert" if corrected else "novice"] += 0.5
    for request in _requests(history):
        for (axis, value), pattern in _STATED:
            if pattern.search(request):
                votes[axis][value] += 1
        if SELF_NOVICE.search(request):
            votes["expertise"]["novice"] += 1
        if SELF_EXPERT.search(request):
            votes["expertise"]["expert"] += 1
    return votes


def accepted_answers(history: UserHistory) -> list[str]:
    """The answers the user accepted: assistant turns not followed by criticism (RLHI's implicit signal:
    a user who moves on from an answer without asking for a change was content with it)."""
    criticised = {(f.conversation_id, f.index - 1) for f, labels in history.feedback
                  if labels.feedback_type in NEGATIVE_FEEDBACK}
    return [m.content for c in history.conversations for i, m in enumerate(c.messages)
            if m.role == "assistant" and (c.id, i) not in criticised]


def writing_register(history: UserHistory) -> float:
    """Formal minus casual markers per user turn, lower case counting as casual (> 0: writes formally)."""
    turns = [m.content for c in history.conversations for m in c.messages if m.role == "user"]
    if not turns:
        return 0.0
    total = 0.0
    for turn in turns:
        total += len(FORMAL_WRITING.findall(turn)) - len(CASUAL_WRITING.findall(turn)) - (turn == turn.lower())
    return total / len(turns)


def revealed_preferences(history: UserHistory) -> dict[str, str]:
    """Each axis as revealed by the answers the user accepted: mean length, share with lists, mean
    technicality, formal minus casual markers (the scorer's measurements). Without accepted answers: tone
    from the user's own register, the other axes the middle values."""
    accepted = [text_features(a) for a in accepted_answers(history)]
    if not accepted:
        return {"detail": "brief", "structure": "structured", "expertise": "intermediate",
                "tone": "formal" if writing_register(history) >= 0 else "casual"}
    words = sum(f["words"] for f in accepted) / len(accepted)
    listed = sum(f["list_lines"] > 0 for f in accepted) / len(accepted)
    level = sum(technicality(f["long_word_share"]) for f in accepted) / len(accepted)
    return {"detail": "detailed" if words >= DETAILED_ACCEPTED_WORDS else "brief",
            "structure": "structured" if listed >= STRUCTURED_ACCEPTED_SHARE else "prose",
            "expertise": "novice" if level < NOVICE_BELOW else "expert" if level > EXPERT_ABOVE else "intermediate",
            "tone": "formal" if sum(f["formal_markers"] - f["casual_markers"] for f in accepted) >= 0 else "casual"}


def _leader(counter: Counter, margin: float = 0.5) -> str | None:
    """The value with the most votes when it leads the next by at least ``margin`` (votes come in halves,
    so the default means: no tie)."""
    ranked = counter.most_common(2)
    if not ranked or ranked[0][1] - (ranked[1][1] if len(ranked) == 2 else 0) < margin:
        return None
    return ranked[0][0]


def derive_offline(history: UserHistory, domain_of: Callable[[Sequence[str]], list[str]]) -> DerivedPersona:
    """A persona from the user's own turns and feedback (module docstring); ``domain_of`` maps first
    turns to testbed domains (the offline classifier's :meth:`~OfflineClassifier.domains`). Votes decide
    an axis when they have a winner (expertise: by :data:`EXPERTISE_VOTE_MARGIN`), otherwise what the
    accepted answers reveal (:func:`revealed_preferences`)."""
    votes = preference_votes(history)
    revealed = revealed_preferences(history)
    fields = {
        "expertise": _leader(votes["expertise"], EXPERTISE_VOTE_MARGIN) or revealed["expertise"],
        "detail": _leader(votes["detail"]) or revealed["detail"],
        "tone": _leader(votes["tone"]) or revealed["tone"],
        "structure": _leader(votes["structure"]) or revealed["structure"],
    }
    first_turns = [turns[0] for turns in (c.user_turns for c in history.conversations) if turns]   # after any system message
    domain_counts = Counter(domain_of(first_turns))
    enough = max(2, 0.25 * len(first_turns))
    domains = [d for d, n in domain_counts.most_common(MAX_DOMAINS) if n >= enough] or [domain_counts.most_common(1)[0][0]] if domain_counts else []
    languages = Counter(c.language for c in history.conversations if c.language)
    evidence = {"votes": {axis: dict(counter) for axis, counter in votes.items() if counter},
                "revealed": revealed, "domain_counts": dict(domain_counts.most_common())}
    return DerivedPersona(history.user_id, describe(**fields, domains=domains), **fields, domains=domains,
                          language=languages.most_common(1)[0][0] if languages else None,
                          conversations=len(history.conversations), backend="offline", evidence=evidence)


@dataclass(frozen=True)
class OfflinePersonas:
    """The ``offline:personas`` provider: :func:`derive_offline` for each history, no model."""

    domain_of: Callable[[Sequence[str]], list[str]]

    def derive(self, histories: Sequence[UserHistory], on_progress: Callable[[int], None] | None = None) -> list[DerivedPersona]:
        out = []
        for history in histories:
            out.append(derive_offline(history, self.domain_of))
            if on_progress:
                on_progress(1)
        return out


# ----------------------------------------------------------------------------- the LLM backend
PERSONA_SYSTEM = f"""You read everything one user wrote to a chat assistant over several conversations, plus the feedback they gave, and describe what kind of answers this user wants.

Fields:
- expertise: the level answers should be pitched at: novice (plain words, no jargon), intermediate, or expert (technical, skip the basics).
- detail: brief (short answers) or detailed (thorough answers).
- tone: casual or formal.
- structure: prose (paragraphs) or structured (lists, steps, headings).
- domains: up to {MAX_DOMAINS} of the user's interests, from: {", ".join(DOMAINS)}.
- language: the language the user writes in.
- persona: one sentence describing the user's preferences and interests.

Base every field on evidence: complaints ("too long", "use bullet points", "explain it more simply"), stated preferences, how the user writes, what they say about themselves, what they ask about.

Answer with one JSON object and nothing else: {{"expertise": ..., "detail": ..., "tone": ..., "structure": ..., "domains": [...], "language": ..., "persona": ...}}"""
PERSONA_RETRY = "Your answer was not usable: {error}. Answer again with the JSON object only, values from the lists."
HISTORY_CONVERSATIONS = 20   # at most this many conversations of a user go into the prompt
HISTORY_TURN_CHARS = 600


def persona_messages(history: UserHistory) -> list[dict[str, str]]:
    lines = []
    for n, conversation in enumerate(history.conversations[:HISTORY_CONVERSATIONS], 1):
        turns = [m.content for m in conversation.messages if m.role == "user"]
        lines.append(f"Conversation {n}:\n" + "\n".join(f"- {clip(t, HISTORY_TURN_CHARS)}" for t in turns))
    return [{"role": "system", "content": PERSONA_SYSTEM}, {"role": "user", "content": "\n\n".join(lines)}]


def parse_persona(answer: str, history: UserHistory) -> tuple[DerivedPersona | None, str | None]:
    data = parse_json_object(answer)
    if data is None:
        return None, "no JSON object"
    data = {**data, **{name: normalise_label(data.get(name)) for name in FIELD_VALUES}}
    if isinstance(data.get("domains"), list):
        data["domains"] = [normalise_label(d) for d in data["domains"]]
    for name, values in FIELD_VALUES.items():
        if data.get(name) not in values:
            return None, f"{name} must be one of {', '.join(values)}"
    domains = data.get("domains")
    if not isinstance(domains, list) or len(domains) > MAX_DOMAINS or any(d not in DOMAINS for d in domains):
        return None, f"domains must be a list of at most {MAX_DOMAINS} of the listed domains"
    text, language = data.get("persona"), data.get("language")
    if not isinstance(text, str) or not text.strip():
        return None, "persona must be a non-empty sentence"
    fields = {name: data[name] for name in PREFERENCE_FIELDS}
    return DerivedPersona(history.user_id, text.strip(), **fields, domains=list(domains),
                          language=language if isinstance(language, str) else None,
                          conversations=len(history.conversations), backend="model"), None


@dataclass
class ModelPersonas:
    """Personas summarised by a chat model, batched; invalid twice -> the offline derivation (counted)."""

    model: Any
    domain_of: Callable[[Sequence[str]], list[str]]
    batch_size: int = 128
    max_new_tokens: int = 300
    counts: Counter = field(default_factory=Counter)

    def derive(self, histories: Sequence[UserHistory], on_progress: Callable[[int], None] | None = None) -> list[DerivedPersona]:
        out: list[DerivedPersona] = []
        for start in range(0, len(histories), self.batch_size):
            batch = histories[start:start + self.batch_size]
            personas = ask_validated(self.model, [persona_messages(h) for h in batch],
                                     lambda i, answer, batch=batch: parse_persona(answer, batch[i]),
                                     PERSONA_RETRY, self.max_new_tokens, self.counts)
            for history, persona in zip(batch, personas, strict=True):
                if persona is None:
                    self.counts["fallback"] += 1
                    persona = derive_offline(history, self.domain_of)
                out.append(persona)
            if on_progress:
                on_progress(len(batch))
        return out
