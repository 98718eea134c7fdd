"""Random conversations in the exact WildChat-1M layout, for benchmarks and the first run.

The text is word salad, not a user population (the testbed has behaviour and ground truth);
what matters here is the layout and the mix a real dump has: several languages, toxic and
redacted records, per-turn OpenAI and Detoxify moderation results, users with several
conversations, exact and near duplicates, and turn counts from 1 to many.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

_WORDS = ["the", "a", "to", "of", "and", "in", "is", "it", "you", "that", "for", "on", "with", "as", "can", "this", "be", "are", "what", "how", "do", "i", "my", "me", "write", "code", "python", "function", "list", "data", "make", "explain", "story", "email", "help", "please", "about", "between", "difference", "why", "when", "where", "which", "best", "way", "use", "example", "error", "fix", "problem", "question", "answer", "make", "sure", "more", "short", "long", "simple", "detailed", "letter", "poem", "summary", "essay", "article", "blog", "post", "table", "json", "file", "api", "model", "train", "learn", "understand", "number", "sum", "total", "price", "cost", "time", "day", "week", "plan", "trip", "recipe", "food", "health", "exercise", "music", "movie", "book", "game", "character", "world", "history", "science", "math", "physics", "chemistry", "biology", "language", "english", "translate", "sentence", "word", "paragraph", "grammar", "improve", "rewrite", "tone", "formal", "casual", "friendly", "professional", "business", "market", "product", "customer", "sales", "strategy", "idea", "name", "title"]
_MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm", "self-harm/instructions",
    "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic",
)
_DETOXIFY = ("identity_attack", "insult", "obscene", "severe_toxicity", "sexual_explicit", "threat", "toxicity")
_LANGUAGES = (("English", 0.8), ("Chinese", 0.08), ("Russian", 0.05), ("French", 0.04), ("Spanish", 0.03))
_COUNTRIES = ("United States", "China", "Russia", "India", "United Kingdom", "Germany", "France", "Brazil", "Japan", "Canada")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
    "Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X)",
)
_MODELS = ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613", "gpt-4-0314", "gpt-4-1106-preview")


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=n_words))


def _moderation(rng: random.Random) -> tuple[dict[str, Any], dict[str, float]]:
    scores = {c: round(rng.random() * 1e-3, 8) for c in _MODERATION_CATEGORIES}
    openai = {"categories": dict.fromkeys(_MODERATION_CATEGORIES, False), "category_scores": scores, "flagged": False}
    return openai, {k: round(rng.random() * 1e-3, 8) for k in _DETOXIFY}


def wildchat_records(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``n`` WildChat-layout records. About 3% repeat an earlier conversation's user turns
    exactly and 5% nearly (one word changed); users have a long-tailed number of conversations."""
    rng = random.Random(seed)
    n_users = max(1, n // 4)
    users = []
    for u in range(n_users):
        ip = hashlib.sha256(f"{seed}-{u}".encode()).hexdigest()
        users.append((ip, rng.choice(_AGENTS), rng.choice(_COUNTRIES)))
    languages, weights = zip(*_LANGUAGES)
    recent: list[list[str]] = []
    start = datetime(2023, 4, 9, tzinfo=UTC)
    for i in range(n):
        ip, agent, country = users[int(n_users * rng.random() ** 2)]  # long-tailed: low indices are heavy users
        language = rng.choices(languages, weights)[0]
        roll = rng.random()
        if recent and roll < 0.03:
            user_turns = list(rng.choice(recent))
        elif recent and roll < 0.08:
            user_turns = list(rng.choice(recent))
            words = user_turns[0].split()
            words[rng.randrange(len(words))] = rng.choice(_WORDS)
            user_turns[0] = " ".join(words)
        else:
            n_turns = min(1 + int(rng.expovariate(0.7)), 12)
            user_turns = [_sentence(rng, rng.randint(4, 60)) for _ in range(n_turns)]
        recent.append(user_turns)
        if len(recent) > 64:
            recent.pop(0)
        when = start + timedelta(seconds=i * 37)
        header = {"accept-language": "en-US,en;q=0.9", "user-agent": agent}
        conversation, openai_moderation, detoxify_moderation = [], [], []
        for t, text in enumerate(user_turns):
            turn_id = rng.randrange(10**8)
            common = {"language": language, "redacted": False, "toxic": False, "turn_identifier": turn_id}
            conversation.append({"content": text, "country": country, "hashed_ip": ip, "header": header, "role": "user",
                                 "state": None, "timestamp": None, **common})
            conversation.append({"content": _sentence(rng, rng.randint(20, 120)), "country": None, "hashed_ip": None,
                                 "header": None, "role": "assistant", "state": None,
                                 "timestamp": (when + timedelta(seconds=30 * t)).isoformat(), **common})
            for _ in range(2):
                o, d = _moderation(rng)
                openai_moderation.append(o)
                detoxify_moderation.append(d)
        toxic = rng.random() < 0.02
        yield {
            "conversation_hash": hashlib.md5(repr(user_turns).encode()).hexdigest(),
            "model": rng.choice(_MODELS),
            "timestamp": when.isoformat(),
            "conversation": conversation,
            "turn": len(user_turns),
            "language": language,
            "openai_moderation": openai_moderation,
            "detoxify_moderation": detoxify_moderation,
            "toxic": toxic,
            "redacted": rng.random() < 0.03,
            "state": None,
            "country": country,
            "hashed_ip": ip,
            "header": header,
        }


def write_wildchat(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write :func:`wildchat_records` as JSON lines (``.jsonl``, or gzip for ``.jsonl.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    else:
        opener = open
    with opener(path, "wb") as f:
        for record in wildchat_records(n, seed):
            f.write(orjson.dumps(record) + b"\n")
    return path
