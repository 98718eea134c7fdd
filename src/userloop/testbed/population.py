"""A population of simulated users and their conversations, in the WildChat layout, with the truth.

``generate(users, seed)`` draws every user's persona, identity (``hashed_ip``, user-agent, country)
and a long-tailed number of conversations, generated in time order. Each user has an independent
random stream derived from (seed, user index), so a population is the same for a seed whatever the
machine, and the first N users of a larger population equal a population of N users.

``Population.write(out)`` writes ``conversations.jsonl`` (WildChat-1M layout: readers and
``userloop data prepare`` take it as is), ``truth.jsonl`` (one ``user`` record per user, one
``conversation`` record per conversation) and ``summary.json`` (:func:`summarise`).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from userloop.conversation import Conversation
from userloop.data.formats import wildchat
from userloop.errors import UserError
from userloop.files import open_user_file, read_user_json, write_atomic
from userloop.statistics import first_turn_diversity
from userloop.testbed.dialogue import Dialogue, choose_task, converse
from userloop.testbed.persona import Persona, pick_weighted, sample_persona

TESTBED_VERSION = 2   # 2: records carry a detailed_intent (the dialogues are those of version 1)
ASSISTANT_MODEL = "testbed-assistant"
START = datetime(2023, 4, 9, tzinfo=UTC)    # WildChat's collection period
PERIOD_DAYS = 385
# Conversations per user: round(lognormal(mu, sigma)), at least 1, at most MAX_CONVERSATIONS.
CONVERSATIONS_MU, CONVERSATIONS_SIGMA, MAX_CONVERSATIONS = 1.0, 0.9, 80
COUNTRIES = {"United States": 0.25, "China": 0.10, "Russia": 0.09, "United Kingdom": 0.07, "India": 0.06, "Germany": 0.05,
             "Canada": 0.05, "France": 0.04, "Australia": 0.04, "Brazil": 0.04, "Japan": 0.03, "Philippines": 0.03,
             "Netherlands": 0.03, "Spain": 0.03, "Italy": 0.03, "Poland": 0.02, "Mexico": 0.02, "Nigeria": 0.02}
BROWSERS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{w}.1 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS {w}_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            "Mozilla/5.0 (Linux; Android {w}; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36")


@dataclass(slots=True)
class SimulatedUser:
    user_id: str          # the hashed_ip of all their conversations
    persona: Persona
    user_agent: str
    country: str

    def truth(self, n_conversations: int) -> dict[str, Any]:
        return {"type": "user", "user_id": self.user_id, "persona": self.persona.to_dict(),
                "description": self.persona.describe(), "user_agent": self.user_agent, "country": self.country,
                "conversations": n_conversations}


@dataclass(slots=True)
class Population:
    """Users, their conversations as WildChat records, and one truth record per user and conversation."""

    seed: int
    users: list[SimulatedUser]
    records: list[dict[str, Any]]        # WildChat layout, in time order per user
    truth: list[dict[str, Any]]          # user records first, then conversation records

    def conversations(self) -> list[Conversation]:
        """The conversations as :class:`Conversation`, exactly as the WildChat reader returns them."""
        # the reader consumes the record it is given, so it reads a copy
        return [wildchat(orjson.loads(orjson.dumps(record)), "testbed")[0] for record in self.records]

    def user_truth(self) -> dict[str, dict[str, Any]]:
        return {t["user_id"]: t for t in self.truth if t["type"] == "user"}

    def conversation_truth(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.truth if t["type"] == "conversation"}

    def write(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / "conversations.jsonl", self.records)
        _write_jsonl(out / "truth.jsonl", self.truth)
        write_atomic(out / "summary.json", orjson.dumps(summarise(self), option=orjson.OPT_INDENT_2))
        return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row))
            f.write(b"\n")


def _user(rng: random.Random, seed: int, index: int) -> SimulatedUser:
    persona = sample_persona(rng)
    user_id = hashlib.sha256(f"userloop-testbed-{seed}-{index}".encode()).hexdigest()
    agent = rng.choice(BROWSERS).format(v=rng.randint(100, 124), w=rng.randint(12, 17))
    return SimulatedUser(user_id, persona, agent, pick_weighted(rng, COUNTRIES))


def _conversation_count(rng: random.Random) -> int:
    return max(1, min(MAX_CONVERSATIONS, round(rng.lognormvariate(CONVERSATIONS_MU, CONVERSATIONS_SIGMA))))


def _record(rng: random.Random, user: SimulatedUser, dialogue: Dialogue, when: datetime, key: str) -> tuple[dict, str, datetime]:
    """The WildChat record of a dialogue, its conversation id (as the reader builds it) and its end time."""
    header = {"accept-language": "en-US,en;q=0.9", "user-agent": user.user_agent}
    turns, turn_id = [], 0
    for turn in dialogue.turns:
        common = {"content": turn.text, "language": "English", "redacted": False, "toxic": False, "state": None}
        if turn.role == "user":
            when += timedelta(seconds=rng.randint(20, 240))
            turn_id = rng.randrange(10**8, 10**9)
            turns.append({**common, "role": "user", "country": user.country, "hashed_ip": user.user_id, "header": header,
                          "timestamp": None, "turn_identifier": turn_id})
        else:
            when += timedelta(seconds=rng.randint(3, 40))
            turns.append({**common, "role": "assistant", "country": None, "hashed_ip": None, "header": None,
                          "timestamp": when.isoformat(), "turn_identifier": turn_id})
    conversation_hash = hashlib.md5(key.encode()).hexdigest()
    record = {
        "conversation_hash": conversation_hash, "model": ASSISTANT_MODEL, "timestamp": when.isoformat(),
        "conversation": turns, "turn": sum(t.role == "user" for t in dialogue.turns), "language": "English",
        "toxic": False, "redacted": False, "state": None, "country": user.country, "hashed_ip": user.user_id,
        "header": header, "intent": dialogue.intent, "detailed_intent": dialogue.detailed_intent,
    }
    return record, f"{conversation_hash}-{turns[0]['turn_identifier']}", when


def _conversation_truth(conversation_id: str, user_id: str, dialogue: Dialogue) -> dict[str, Any]:
    return {
        "type": "conversation", "id": conversation_id, "user_id": user_id, "intent": dialogue.intent,
        "detailed_intent": dialogue.detailed_intent,
        "shards": [s.text for s in dialogue.tasks[0].shards], "tasks": [t.truth() for t in dialogue.tasks],
        "end_reason": dialogue.end_reason, "solved": dialogue.solved,
        "turns": [{"index": i, "role": t.role, **t.label} for i, t in enumerate(dialogue.turns)],
    }


def generate_user(seed: int, index: int) -> tuple[SimulatedUser, list[dict], list[dict]]:
    """One user (index ``index`` of the population for ``seed``): identity, WildChat records, truth."""
    rows = list(_user_conversations(seed, index))  # every user has at least one conversation
    return rows[0][0], [record for _, _, record, _ in rows], [truth for _, _, _, truth in rows]


def user_dialogue(seed: int, index: int, conversation: int) -> tuple[SimulatedUser, Dialogue]:
    """User ``index`` of the population for ``seed`` and their conversation number ``conversation`` (0-based)
    as generated, with its :class:`Task` objects: what the interactive testbed users replay a logged user from."""
    for number, (user, dialogue, _, _) in enumerate(_user_conversations(seed, index)):
        if number == conversation:
            return user, dialogue
    raise UserError(f"testbed user {index} of seed {seed} has no conversation {conversation}")


def _user_conversations(seed: int, index: int) -> Iterator[tuple[SimulatedUser, Dialogue, dict, dict]]:
    """Each conversation of user ``index``, in order: the user, the dialogue, its WildChat record and its truth."""
    rng = random.Random(f"userloop-testbed-{seed}-{index}")
    user = _user(rng, seed, index)
    n = _conversation_count(rng)
    when = START + timedelta(days=rng.random() * PERIOD_DAYS * 0.7)
    for c in range(n):
        dialogue = converse(rng, user.persona, lambda family, domain: choose_task(rng, user.persona, family, domain))
        record, conversation_id, when = _record(rng, user, dialogue, when, f"{seed}-{index}-{c}")
        yield user, dialogue, record, _conversation_truth(conversation_id, user.user_id, dialogue)
        when += timedelta(hours=rng.expovariate(1 / 60))


def generate(users: int = 2000, seed: int = 0, on_progress: Callable[[int], None] | None = None) -> Population:
    """Generate a population of ``users`` simulated users (deterministic for ``seed``)."""
    if users < 1:
        raise UserError("the number of users must be at least 1")
    population = Population(seed, [], [], [])
    conversation_truth: list[dict] = []
    for index in range(users):
        user, records, truth = generate_user(seed, index)
        population.users.append(user)
        population.records.extend(records)
        population.truth.append(user.truth(len(records)))
        conversation_truth.extend(truth)
        if on_progress:
            on_progress(1)
    population.truth.extend(conversation_truth)
    return population


def read_truth(path: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """``truth.jsonl`` (or a folder holding it) as (users by user_id, conversations by id)."""
    path = Path(path)
    path = path / "truth.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"no testbed truth at {path}")
    users, conversations = {}, {}
    with open_user_file(path, "testbed truth file") as f:
        for line in f:
            row = orjson.loads(line)
            (users if row["type"] == "user" else conversations)[row["user_id"] if row["type"] == "user" else row["id"]] = row
    return users, conversations


def truth_folder(data: Path) -> Path | None:
    """Where the testbed truth of ``data`` is: the folder itself, or the input a prepared folder was made from."""
    if (data / "truth.jsonl").is_file():
        return data
    report = data / "report.json"
    if report.is_file():
        for source in read_user_json(report, "prepared data report").get("inputs", []):
            folder = Path(source) if Path(source).is_dir() else Path(source).parent
            if (folder / "truth.jsonl").is_file():
                return folder
    return None


def first_turn_diversity_sample(population: Population, n: int = 2000, seed: int = 0) -> list[str]:
    turns = [r["conversation"][0]["content"] for r in population.records]
    return random.Random(seed).sample(turns, min(n, len(turns)))


def summarise(population: Population) -> dict[str, Any]:
    """The population's measured figures (``docs/testbed.md`` reports those of the default population)."""
    users = [t for t in population.truth if t["type"] == "user"]
    conversations = [t for t in population.truth if t["type"] == "conversation"]
    per_user = sorted(u["conversations"] for u in users)
    user_turns = [sum(t["role"] == "user" for t in c["turns"]) for c in conversations]
    labels = [t for c in conversations for t in c["turns"] if t["role"] == "user"]
    follow_ups = [t for t in labels if t["relation"] is not None]
    with_feedback = [c for c in conversations if any(t.get("type") == "feedback" for t in c["turns"])]
    users_with_feedback = {c["user_id"] for c in with_feedback}
    checkable = [c for c in conversations if c["solved"] is not None]

    def share(counter: Counter, total: int) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in counter.most_common()}

    return {
        "testbed_version": TESTBED_VERSION,
        "seed": population.seed,
        "users": len(users),
        "conversations": len(conversations),
        "conversations_per_user": _distribution(per_user),
        "user_turns_per_conversation": _distribution(sorted(user_turns)),
        "user_turn_types": share(Counter(t["type"] for t in labels), len(labels)),
        "follow_up_relations": share(Counter(t["relation"] for t in follow_ups), len(follow_ups)),
        "follow_up_feedback_types": share(Counter(t["feedback_type"] for t in follow_ups), len(follow_ups)),
        "feedback_reasons": share(Counter(t["reason"] for t in labels if t["reason"]), sum(bool(t["reason"]) for t in labels) or 1),
        "end_reasons": share(Counter(c["end_reason"] for c in conversations), len(conversations)),
        "task_families": share(Counter(c["tasks"][0]["family"] for c in conversations), len(conversations)),
        "share_of_conversations_with_feedback": round(len(with_feedback) / len(conversations), 4),
        "share_of_users_with_feedback": round(len(users_with_feedback) / len(users), 4),
        "solved_share_of_checkable": round(sum(c["solved"] for c in checkable) / len(checkable), 4) if checkable else None,
        "first_turn_diversity": round(first_turn_diversity(first_turn_diversity_sample(population)), 2),
    }


def _distribution(values: list[int]) -> dict[str, float]:
    n = len(values)
    return {"mean": round(sum(values) / n, 2), "median": values[n // 2], "p95": values[min(n - 1, math.ceil(0.95 * n) - 1)],
            "max": values[-1]}

