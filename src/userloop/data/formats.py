"""Record layouts: each turns one parsed record into conversations, or raises :class:`BadRecord`.

| format      | one record is                                                                 |
|-------------|-------------------------------------------------------------------------------|
| ``wildchat`` | a WildChat-1M / WildChat-4.8M conversation (``conversation`` list of turns)   |
| ``openai``  | ``{"messages": [{"role", "content"}, ...]}``; userloop's own JSON records too |
| ``sharegpt`` | ``{"conversations": [{"from", "value"}, ...]}``                               |
| ``oasst``   | an OpenAssistant message tree (``{"message_tree_id", "prompt"}``), a nested root
|             | message (``{"message_id", "replies"}``), or one flat message row (oasst1/oasst2 on
|             | the Hub: ``message_id``, ``parent_id``, ``message_tree_id``). Every root-to-leaf
|             | thread becomes one conversation.                                               |
| ``prompts`` | a JSON string: a one-turn conversation (OpenAssistant prompt lottery files)   |

Turn repair: consecutive turns of the same role are merged into one (joined by a blank line, the
merge counted in the read report), because a user LM learns one user turn per exchange. Records
that cannot be repaired are rejected with a reason: a system message after the first turn, a turn
that is not an object, a role outside system/user/assistant, content that is not text, an empty
conversation, or a conversation with no user turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from userloop.conversation import Conversation, Message

FORMATS = ("wildchat", "openai", "sharegpt", "oasst", "prompts")

LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "pt-br": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}


def language_name(value: Any) -> str | None:
    """WildChat names languages ("English"); other sources use ISO codes ("en"). Use names."""
    if not isinstance(value, str) or not value:
        return None
    return LANGUAGE_NAMES.get(value.lower(), value)


class BadRecord(Exception):
    """A record that cannot become a conversation; the message is the reason."""


def detect(record: Any) -> str | None:
    """The format a parsed record is in, or None when no layout matches."""
    if isinstance(record, str):
        return "prompts"
    if not isinstance(record, dict):
        return None
    if "conversation" in record:
        return "wildchat"
    if "messages" in record:  # before the WildChat keys: userloop's records of WildChat keep them in extras
        return "openai"
    if "conversation_hash" in record or "hashed_ip" in record:
        return "wildchat"
    if "conversations" in record:
        return "sharegpt"
    if "message_tree_id" in record or "message_id" in record:
        return "oasst"
    return None


# --------------------------------------------------------------------------- turns
def _normalise(messages: list[Message]) -> tuple[list[Message], int]:
    """Merge consecutive same-role turns; reject what cannot be repaired. Returns the turns and
    the number of merges."""
    if not messages:
        raise BadRecord("empty conversation")
    out: list[Message] = []
    merges = 0
    for m in messages:
        if m.role == "system" and out:
            raise BadRecord("system message after the first turn")
        if out and out[-1].role == m.role:
            last = out[-1]
            extra = {**last.extra, "merged_turns": last.extra.get("merged_turns", 1) + 1}
            if m.extra:  # the later turn's own fields are kept beside the first turn's
                extra["merged_extra"] = [*last.extra.get("merged_extra", []), m.extra]
            out[-1] = Message(last.role, f"{last.content}\n\n{m.content}", extra)
            merges += 1
        else:
            out.append(m)
    if not any(m.role == "user" for m in out):
        raise BadRecord("no user turn")
    return out, merges


def _turn(turn: Any, role_key: str, content_key: str, roles: dict[str, str] | None = None) -> Message:
    """A turn from a parsed record; the record's dict is reused as the turn's extra fields."""
    if not isinstance(turn, dict):
        raise BadRecord("turn is not an object")
    content = turn.pop(content_key, None)
    if not isinstance(content, str):
        content = _text_parts(content)
    raw_role = turn.pop(role_key, None)
    role = (roles or _IDENTITY_ROLES).get(raw_role.lower()) if isinstance(raw_role, str) else None
    if role is None:
        raise BadRecord(f"unknown role: {raw_role!r}")
    return Message(role, content, turn)


_IDENTITY_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def _text_parts(content: Any) -> str:
    """OpenAI content may be a list of parts; text parts are joined, anything else is rejected."""
    if isinstance(content, list) and content and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    raise BadRecord(f"turn without string content: {'missing' if content is None else type(content).__name__}")


def _turn_list(record: dict[str, Any], key: str) -> list[Any]:
    turns = record.get(key)
    if turns is None:
        raise BadRecord(f"missing list of turns: no '{key}'")
    if not isinstance(turns, list):
        raise BadRecord(f"missing list of turns: '{key}' is a {type(turns).__name__}")
    return turns


# --------------------------------------------------------------------------- formats
def wildchat(record: Any, where: str) -> list[Conversation]:
    """A WildChat record (``../shared/data/wildchat/SCHEMA.md``). The user is ``hashed_ip``;
    the user-agent stays in ``extra['header']`` (see :func:`userloop.data.users.user_key`)."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    turns = _turn_list(record, "conversation")
    messages = [_turn(t, "role", "content") for t in turns]
    messages, merges = _normalise(messages)
    first_turn_id = messages[0].extra.get("turn_identifier")
    conv_hash = record.get("conversation_hash")
    conv_id = f"{conv_hash}-{first_turn_id}" if conv_hash and first_turn_id is not None else (conv_hash or where)
    user_id = record.get("hashed_ip") or next(
        (m.extra.get("hashed_ip") for m in messages if m.role == "user" and m.extra.get("hashed_ip")), None
    )
    intent = record.get("intent")
    extra = {k: v for k, v in record.items() if k not in _WILDCHAT_CONSUMED or (k == "intent" and not isinstance(v, str))}
    conv = Conversation(
        messages=messages,
        id=str(conv_id),
        source="wildchat",
        user_id=user_id,
        language=language_name(record.get("language")),
        country=record.get("country"),
        model=record.get("model"),
        timestamp=record.get("timestamp"),
        toxic=bool(record.get("toxic", False)),
        redacted=bool(record.get("redacted", False)),
        intent=intent if isinstance(intent, str) else None,
        extra=extra,
    )
    return [_note_merges(conv, merges)]


# "intent" is not a WildChat field: the testbed writes it, so its conversations carry their true intent.
_WILDCHAT_CONSUMED = frozenset(("conversation", "hashed_ip", "language", "country", "model", "timestamp", "toxic", "redacted",
                                "intent"))


def openai(record: Any, where: str) -> list[Conversation]:
    """``{"messages": [...]}``; known metadata keys (:data:`userloop.conversation.METADATA_FIELDS`)
    are read, so userloop's own JSON records come back unchanged."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    messages = [_turn(t, "role", "content") for t in _turn_list(record, "messages")]
    messages, merges = _normalise(messages)
    conv = Conversation.from_dict({**record, "messages": []})
    conv.messages = messages
    for name in _TEXT_FIELDS:  # a number where text is expected (e.g. "id": 7) becomes text
        value = getattr(conv, name)
        if value is not None and not isinstance(value, str):
            setattr(conv, name, str(value))
    conv.id = conv.id or where
    conv.source = conv.source or "openai"
    conv.language = language_name(conv.language)
    conv.toxic, conv.redacted = bool(conv.toxic), bool(conv.redacted)
    return [_note_merges(conv, merges)]


_TEXT_FIELDS = ("id", "source", "user_id", "country", "model", "timestamp", "intent")

_SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant", "bard": "assistant", "bing": "assistant",
    "model": "assistant",
}


def sharegpt(record: Any, where: str) -> list[Conversation]:
    """``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    messages = [_turn(t, "from", "value", _SHAREGPT_ROLES) for t in _turn_list(record, "conversations")]
    messages, merges = _normalise(messages)
    extra = {k: v for k, v in record.items() if k not in ("conversations", "id", "user_id", "language", "lang")}
    user_id = record.get("user_id")
    conv = Conversation(messages=messages, id=where if record.get("id") is None else str(record["id"]), source="sharegpt",
                        user_id=None if user_id is None else str(user_id),
                        language=language_name(record.get("language") or record.get("lang")), extra=extra)
    return [_note_merges(conv, merges)]


def prompts(record: Any, where: str) -> list[Conversation]:
    """A bare JSON string: one user turn."""
    if not isinstance(record, str):
        raise BadRecord("not a JSON string")
    messages, _ = _normalise([Message("user", record)])
    return [Conversation(messages=messages, id=where, source="prompts")]


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
_OASST_NOT_EXTRA = frozenset(("text", "role", "replies"))


def _oasst_threads(root: dict[str, Any], tree_id: str | None, tree_extra: dict[str, Any]) -> list[Conversation]:
    """Every root-to-leaf path of a nested OASST tree."""
    out: list[Conversation] = []
    stack: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, dict):
            raise BadRecord("message is not an object")
        path = [*path, node]
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise BadRecord("'replies' is not a list")
        if replies:
            stack.extend((child, path) for child in reversed(replies))
        else:
            out.append(_oasst_conversation(path, tree_id, tree_extra))
    return out


def _oasst_conversation(path: list[dict[str, Any]], tree_id: str | None, tree_extra: dict[str, Any]) -> Conversation:
    messages = []
    for node in path:
        if not isinstance(node, dict):
            raise BadRecord("message is not an object")
        raw_role = node.get("role")
        text, role = node.get("text"), _OASST_ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if not isinstance(text, str):
            raise BadRecord("message without text")
        if role is None:
            raise BadRecord(f"unknown role: {raw_role!r}")
        messages.append(Message(role, text, {k: v for k, v in node.items() if k not in _OASST_NOT_EXTRA}))
    messages, _ = _normalise(messages)  # OASST alternates by construction
    root, leaf = path[0], path[-1]
    extra = {
        **tree_extra,
        "message_tree_id": tree_id or root.get("message_tree_id") or root.get("message_id"),
        "synthetic": any(bool(n.get("synthetic")) for n in path),
        "deleted": any(bool(n.get("deleted")) for n in path),
    }
    return Conversation(
        messages=messages,
        id=str(leaf.get("message_id")),
        source="oasst",
        user_id=root.get("user_id"),
        language=language_name(root.get("lang")),
        timestamp=leaf.get("created_date"),
        extra=extra,
    )


class OasstFlatTrees:
    """Flat OASST message rows (as on the Hub) are collected per ``message_tree_id`` and turned
    into threads when the tree ends. Rows of one tree must be contiguous (they are in the
    releases); a tree that shows up again later is reported as a bad line."""

    def __init__(self) -> None:
        self.tree_id: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.finished: set[str] = set()

    def add(self, record: dict[str, Any]) -> None:
        """Add a row of the current tree (call :meth:`flush` first when the tree changes)."""
        tree_id = record.get("message_tree_id")
        if not isinstance(tree_id, str):
            raise BadRecord("flat OASST message without message_tree_id")
        if not isinstance(record.get("message_id"), str) or not isinstance(record.get("parent_id"), (str, type(None))):
            raise BadRecord("flat OASST message without a text message_id and parent_id")
        if tree_id in self.finished:
            raise BadRecord(f"OASST tree not contiguous: message of tree {tree_id} after that tree ended")
        self.tree_id = tree_id
        self.rows.append(record)

    def flush(self) -> list[Conversation]:
        if self.tree_id is None:
            return []
        rows, tree_id = self.rows, self.tree_id
        self.finished.add(tree_id)
        self.tree_id, self.rows = None, []
        nodes = {r.get("message_id"): {**r, "replies": []} for r in rows}
        roots = []
        for node in nodes.values():
            parent = node.get("parent_id")
            if parent is None:
                roots.append(node)
            elif parent in nodes:
                nodes[parent]["replies"].append(node)
            else:
                raise BadRecord(f"OASST orphan message: {node.get('message_id')} has no parent {parent} in tree {tree_id}")
        if len(roots) != 1:
            raise BadRecord(f"OASST tree without one root: {len(roots)} roots in tree {tree_id}")
        return _oasst_threads(roots[0], tree_id, {})


def oasst(record: Any, where: str) -> list[Conversation]:
    """A nested OASST tree or root message (flat rows go through :class:`OasstFlatTrees`)."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    if "prompt" in record:
        tree_extra = {k: v for k, v in record.items() if k not in ("prompt", "message_tree_id")}
        return _oasst_threads(record["prompt"], record.get("message_tree_id"), tree_extra)
    if "replies" in record:
        return _oasst_threads(record, record.get("message_tree_id"), {})
    raise BadRecord("OASST record without 'prompt' or 'replies'")


def is_flat_oasst(record: Any) -> bool:
    return isinstance(record, dict) and "parent_id" in record and "replies" not in record and "prompt" not in record


def _note_merges(conv: Conversation, merges: int) -> Conversation:
    if merges:
        conv.extra["merged_turns"] = merges
    return conv


CONVERTERS: dict[str, Callable[[Any, str], list[Conversation]]] = {
    "wildchat": wildchat, "openai": openai, "sharegpt": sharegpt, "oasst": oasst, "prompts": prompts,
}

