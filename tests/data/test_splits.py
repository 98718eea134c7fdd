"""User identity and user-level splits: ``userloop.data.users`` and ``prepare`` end to end."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userloop.conversation import Conversation, Message, read_parquet
from userloop.data import formats
from userloop.data.prepare import PrepareConfig, prepare
from userloop.data.synthetic import wildchat_records
from userloop.data.users import SPLIT_NAMES, assign_splits, parse_ratios, user_key
from userloop.errors import UserError

SETTINGS = settings(max_examples=30, deadline=None)

COUNTRIES = st.sampled_from(["United States", "China", "Germany", "Brazil", None])
USER_KEYS = st.text(alphabet="abcdef0123456789|:", min_size=1, max_size=12)
USERS = st.dictionaries(USER_KEYS, COUNTRIES, max_size=120)


@st.composite
def ratios(draw) -> tuple[float, float, float]:
    parts = draw(st.lists(st.integers(0, 100), min_size=3, max_size=3).filter(lambda p: sum(p) > 0))
    return parse_ratios("/".join(map(str, parts)))


# --------------------------------------------------------------------------- assign_splits
@SETTINGS
@given(users=USERS, split_ratios=ratios(), seed=st.integers(0, 2**32 - 1))
def test_every_user_gets_exactly_one_split(users, split_ratios, seed):
    out = assign_splits(users, split_ratios, seed)
    assert set(out) == set(users)
    assert set(out.values()) <= {0, 1, 2}
    for index, share in enumerate(split_ratios):
        if share == 0:
            assert index not in out.values()


@SETTINGS
@given(users=USERS, split_ratios=ratios(), seed=st.integers(0, 2**32 - 1))
def test_deterministic_for_a_seed(users, split_ratios, seed):
    assert assign_splits(users, split_ratios, seed) == assign_splits(dict(users), split_ratios, seed)


@SETTINGS
@given(users=USERS, split_ratios=ratios(), seed=st.integers(0, 2**16), data=st.data())
def test_independent_of_input_order(users, split_ratios, seed, data):
    items = data.draw(st.permutations(list(users.items())))
    assert assign_splits(dict(items), split_ratios, seed) == assign_splits(users, split_ratios, seed)


@SETTINGS
@given(sizes=st.dictionaries(st.sampled_from(["US", "CN", "DE", "BR"]), st.integers(100, 400), min_size=1),
       small=st.integers(0, 60), split_ratios=ratios(), seed=st.integers(0, 2**16))
def test_proportions_within_each_large_country(sizes, small, split_ratios, seed):
    users = {f"{country}-{i}": country for country, n in sizes.items() for i in range(n)}
    users.update({f"small-{i}": f"tiny-{i % 7}" for i in range(small)})  # countries of < 20 users each
    out = assign_splits(users, split_ratios, seed)
    for country, n in sizes.items():
        counts = Counter(out[f"{country}-{i}"] for i in range(n))
        for index, share in enumerate(split_ratios):
            assert abs(counts[index] - share * n) <= max(2, 0.02 * n), (country, index, counts)


def test_seed_changes_assignment():
    users = {f"u{i}": "US" for i in range(200)}
    split_ratios = parse_ratios("80/10/10")
    assert assign_splits(users, split_ratios, 0) != assign_splits(users, split_ratios, 1)


def test_users_of_small_countries_are_split_too():
    users = {f"u{i}": f"country-{i}" for i in range(100)}  # 100 countries of one user each
    counts = Counter(assign_splits(users, parse_ratios("50/25/25"), 0).values())
    assert counts == {0: 50, 1: 25, 2: 25}


def test_empty():
    assert assign_splits({}, parse_ratios("90/5/5"), 0) == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("90/5/5", (0.9, 0.05, 0.05)),
    ("0.8,0.1,0.1", (0.8, 0.1, 0.1)),
    ("1/1/2", (0.25, 0.25, 0.5)),
    ("100/0/0", (1.0, 0.0, 0.0)),
])
def test_parse_ratios(text, expected):
    assert parse_ratios(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["90/10", "", "a/b/c", "90/5/5/0", "-1/1/1", "0/0/0"])
def test_parse_ratios_rejects(text):
    with pytest.raises(UserError, match="--splits"):
        parse_ratios(text)


# --------------------------------------------------------------------------- user_key
def _wildchat(ip: str | None, agent: str | None, conversation_hash: str = "h1") -> Conversation:
    record = {"conversation_hash": conversation_hash, "hashed_ip": ip, "country": "X",
              "conversation": [{"role": "user", "content": "hello", "turn_identifier": 7},
                               {"role": "assistant", "content": "hi"}]}
    if agent is not None:
        record["header"] = {"accept-language": "en", "user-agent": agent}
    return formats.wildchat(record, "file:1")[0]


def test_wildchat_identity_is_hashed_ip_plus_agent():
    a = _wildchat("ip1", "firefox")
    assert a.user_id == "ip1"
    assert user_key(a) == user_key(a, "user+agent")
    assert "ip1" in user_key(a) and "firefox" in user_key(a)
    assert user_key(a) == user_key(_wildchat("ip1", "firefox", "h2"))  # same user, other conversation
    assert user_key(a) != user_key(_wildchat("ip1", "chrome"))  # same IP, other browser: other user
    assert user_key(a) != user_key(_wildchat("ip2", "firefox"))


def test_user_identity_is_hashed_ip_only():
    assert user_key(_wildchat("ip1", "firefox"), "user") == "ip1"
    assert user_key(_wildchat("ip1", "chrome"), "user") == "ip1"
    assert user_key(_wildchat("ip2", "firefox"), "user") == "ip2"


def test_no_agent_falls_back_to_user_id():
    assert user_key(_wildchat("ip1", None)) == "ip1"
    assert user_key(_wildchat("ip1", None), "user") == "ip1"


def test_synthetic_wildchat_records_identity():
    for record in wildchat_records(20, seed=3):
        ip, agent = record["hashed_ip"], record["header"]["user-agent"]
        conv = formats.wildchat(orjson.loads(orjson.dumps(record)), "f:1")[0]
        assert user_key(conv, "user") == ip
        assert ip in user_key(conv) and agent in user_key(conv)


def test_conversation_without_user_id_is_its_own_user():
    a = Conversation([Message("user", "hi")], id="c1")
    b = Conversation([Message("user", "hi")], id="c2")
    c = Conversation([Message("user", "hi")], id="c3", user_id="", extra={"header": {"user-agent": "firefox"}})
    keys = {user_key(a), user_key(b), user_key(c)}
    assert len(keys) == 3
    assert user_key(a, "user") == user_key(a) and "c1" in user_key(a)
    assert user_key(_wildchat(None, "firefox", "h1")) != user_key(_wildchat(None, "firefox", "h2"))


def test_non_wildchat_user_id():
    conv = Conversation([Message("user", "hi")], id="c1", user_id="alice")
    assert user_key(conv) == user_key(conv, "user") == "alice"


# --------------------------------------------------------------------------- prepare end to end
USER_SPECS = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 2), st.integers(1, 4)),  # ip, agent, conversations
    min_size=1, max_size=40,
)


def _records(specs, countries) -> list[dict]:
    records = []
    for n, (ip, agent, count) in enumerate(specs):
        for k in range(count):
            rng = random.Random(f"{n}-{k}")
            text = " ".join(f"w{rng.randrange(10**6)}" for _ in range(8))
            records.append({
                "conversation_hash": f"h{n}-{k}", "hashed_ip": f"ip{ip}", "header": {"user-agent": f"agent{agent}"},
                "country": countries[ip % len(countries)], "language": "English",
                "conversation": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}],
            })
    return records


def _prepare(folder: Path, records: list[dict], **config) -> dict[str, list[Conversation]]:
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = prepare([str(src)], folder / "out", PrepareConfig(**config))
    assert result.report["conversations"]["kept"] == len(records)
    return {s: list(read_parquet(folder / "out" / f"{s}.parquet")) for s in SPLIT_NAMES}


@SETTINGS
@given(specs=USER_SPECS, identity=st.sampled_from(["user+agent", "user"]), seed=st.integers(0, 1000),
       split_text=st.sampled_from(["90/5/5", "34/33/33", "50/50/0"]), data=st.data())
def test_prepare_keeps_each_user_in_one_split(specs, identity, seed, split_text, data):
    records = _records(specs, ["US", "CN", None])
    config = {"user_identity": identity, "seed": seed, "splits": split_text}
    with tempfile.TemporaryDirectory() as tmp:
        splits = _prepare(Path(tmp) / "a", records, **config)
        split_of_user: dict[str, str] = {}
        for name, rows in splits.items():
            for conv in rows:
                assert split_of_user.setdefault(user_key(conv, identity), name) == name
        # the IP alone is a user under 'user'; under 'user+agent' every (ip, agent) is one
        expected = {r["hashed_ip"] if identity == "user" else (r["hashed_ip"], r["header"]["user-agent"]) for r in records}
        assert len(split_of_user) == len(expected)

        ids = {name: sorted(c.id for c in rows) for name, rows in splits.items()}
        assert ids == {name: sorted(c.id for c in rows) for name, rows in _prepare(Path(tmp) / "b", records, **config).items()}

        shuffled = data.draw(st.permutations(records))
        assert ids == {name: sorted(c.id for c in rows) for name, rows in _prepare(Path(tmp) / "c", shuffled, **config).items()}
