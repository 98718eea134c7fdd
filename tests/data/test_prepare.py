"""``userloop.data.prepare``: every filter on and off, dedupe, accounting and split files."""

from __future__ import annotations

import random
from dataclasses import fields
from pathlib import Path

import orjson
import pytest

from userloop.conversation import read_parquet
from userloop.data import prepare as prepare_module
from userloop.data.prepare import DROP_REASONS, PrepareConfig, prepare
from userloop.data.synthetic import write_wildchat
from userloop.data.users import SPLIT_NAMES, user_key
from userloop.errors import UserError

_VOCAB = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in "bdgklmnprst"]  # 880 words


def words(seed: int, n: int = 12) -> str:
    """A text of ``n`` random words, unrelated to the text of any other seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_VOCAB) for _ in range(n))


def record(cid: str, user_turns: list[str] | str | None = None, *, user: str | None = "u", assistant: str = "sure",
           **meta) -> dict:
    """An OpenAI-style record: alternating user / assistant turns plus metadata keys."""
    if user_turns is None:
        user_turns = [words(hash_seed(cid))]
    elif isinstance(user_turns, str):
        user_turns = [user_turns]
    messages = []
    for turn in user_turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": assistant}]
    out = {"messages": messages, "id": cid, **meta}
    if user is not None:
        out["user_id"] = user
    return out


def hash_seed(text: str) -> int:
    return int.from_bytes(text.encode(), "little") % (2**61)


def write(path: Path, lines: list) -> Path:
    """Write records (dicts) or raw lines (str / bytes) as JSON lines."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                f.write(orjson.dumps(line) + b"\n")
            elif isinstance(line, str):
                f.write(line.encode() + b"\n")
            else:
                f.write(line + b"\n")
    return path


def run(tmp_path: Path, records: list, name: str = "out", **config):
    """prepare() on ``records``; returns (report, {split: [Conversation]})."""
    config.setdefault("language", "any")
    src = write(tmp_path / f"{name}.jsonl", records)
    result = prepare([str(src)], tmp_path / name, PrepareConfig(**config))
    splits = {s: list(read_parquet(tmp_path / name / f"{s}.parquet")) for s in SPLIT_NAMES}
    check_report(result.report, splits)
    return result.report, splits


def check_report(report: dict, splits: dict) -> None:
    """The accounting invariants every report must satisfy."""
    lines = report["lines"]
    assert lines["lines_read"] == lines["blank_lines"] + lines["records_parsed"] + lines["bad_lines"]
    assert lines["bad_lines"] == sum(lines["bad_lines_by_reason"].values())
    conv = report["conversations"]
    assert set(conv["dropped"]) == set(DROP_REASONS)
    assert conv["read"] == sum(conv["dropped"].values()) + conv["kept"]
    assert conv["kept"] == sum(len(rows) for rows in splits.values())
    for name in SPLIT_NAMES:
        assert report["splits"][name]["conversations"] == len(splits[name])
        assert report["splits"][name]["users"] == len({user_key(c, report["config"]["user_identity"]) for c in splits[name]})


def kept_ids(splits: dict) -> list[str]:
    return sorted(c.id for rows in splits.values() for c in rows)


def dropped(report: dict) -> dict:
    return {k: v for k, v in report["conversations"]["dropped"].items() if v}


# --------------------------------------------------------------------------- language
LANGUAGE_RECORDS = [
    record("en-name", language="English"),
    record("en-code", language="en"),
    record("fr-name", language="French"),
    record("fr-code", language="fr"),
    record("zh-code", language="zh"),
    record("unknown"),  # no language recorded
]


@pytest.mark.parametrize(("language", "kept"), [
    ("English", {"en-name", "en-code", "unknown"}),
    ("english", {"en-name", "en-code", "unknown"}),
    ("en", {"en-name", "en-code", "unknown"}),
    ("French", {"fr-name", "fr-code", "unknown"}),
    ("fr", {"fr-name", "fr-code", "unknown"}),
    ("zh", {"zh-code", "unknown"}),
    ("any", {"en-name", "en-code", "fr-name", "fr-code", "zh-code", "unknown"}),
    ("ANY", {"en-name", "en-code", "fr-name", "fr-code", "zh-code", "unknown"}),
    (None, {"en-name", "en-code", "fr-name", "fr-code", "zh-code", "unknown"}),
])
def test_language_filter(tmp_path, language, kept):
    report, splits = run(tmp_path, LANGUAGE_RECORDS, language=language)
    assert set(kept_ids(splits)) == kept
    assert report["conversations"]["dropped"]["language"] == len(LANGUAGE_RECORDS) - len(kept)
    assert report["conversations"]["language_not_recorded"] == 1


def test_language_default_is_english(tmp_path):
    src = write(tmp_path / "in.jsonl", LANGUAGE_RECORDS)
    report = prepare([str(src)], tmp_path / "out").report
    assert report["conversations"]["kept"] == 3
    assert report["conversations"]["dropped"]["language"] == 3


def test_language_names_kept_as_names_in_output(tmp_path):
    _, splits = run(tmp_path, LANGUAGE_RECORDS, language="en")
    languages = {c.id: c.language for rows in splits.values() for c in rows}
    assert languages == {"en-name": "English", "en-code": "English", "unknown": None}


# --------------------------------------------------------------------------- flags
def test_toxic_dropped_by_default_and_kept_when_off(tmp_path):
    records = [record("clean", toxic=False), record("toxic", toxic=True)]
    report, splits = run(tmp_path, records, name="on")
    assert kept_ids(splits) == ["clean"]
    assert dropped(report) == {"toxic": 1}
    report, splits = run(tmp_path, records, name="off", drop_toxic=False)
    assert kept_ids(splits) == ["clean", "toxic"]
    assert dropped(report) == {}
    assert {c.id: c.toxic for rows in splits.values() for c in rows} == {"clean": False, "toxic": True}


def test_redacted_kept_by_default_and_dropped_when_on(tmp_path):
    records = [record("plain"), record("redacted", redacted=True)]
    report, splits = run(tmp_path, records, name="default")
    assert kept_ids(splits) == ["plain", "redacted"]
    assert dropped(report) == {}
    report, splits = run(tmp_path, records, name="on", drop_redacted=True)
    assert kept_ids(splits) == ["plain"]
    assert dropped(report) == {"redacted": 1}


def test_synthetic_and_deleted_flags(tmp_path):
    records = [
        record("human", synthetic=False, deleted=False),
        record("synthetic", synthetic=True),
        record("deleted", deleted=True),
        record("both", synthetic=True, deleted=True),
    ]
    report, splits = run(tmp_path, records, name="on")
    assert kept_ids(splits) == ["human"]
    assert dropped(report) == {"synthetic": 2, "deleted": 1}  # 'both' counts under the first reason
    report, splits = run(tmp_path, records, name="off", drop_synthetic=False)
    assert kept_ids(splits) == sorted(r["id"] for r in records)
    assert dropped(report) == {}


def test_first_failing_filter_is_the_reason(tmp_path):
    records = [
        record("all-bad", language="French", toxic=True, redacted=True, synthetic=True),
        record("toxic-redacted", language="English", toxic=True, redacted=True),
        record("redacted-long", assistant="x" * 50, redacted=True),
    ]
    report, _ = run(tmp_path, records, language="en", drop_redacted=True, max_turn_chars=40)
    assert dropped(report) == {"language": 1, "toxic": 1, "redacted": 1}


def test_user_turn_limits(tmp_path):
    records = [record(f"turns-{n}", [words(100 * n + i) for i in range(n)]) for n in (1, 2, 3, 4, 6)]
    report, splits = run(tmp_path, records, name="limits", min_user_turns=2, max_user_turns=4)
    assert kept_ids(splits) == ["turns-2", "turns-3", "turns-4"]
    assert dropped(report) == {"too_few_user_turns": 1, "too_many_user_turns": 1}

    report, splits = run(tmp_path, records, name="nolimit", min_user_turns=0, max_user_turns=0)
    assert len(kept_ids(splits)) == 5
    assert dropped(report) == {}

    report, splits = run(tmp_path, records, name="defaults")  # 1..100
    assert len(kept_ids(splits)) == 5


def test_merged_user_turns_count_once(tmp_path):
    rec = {"id": "merged", "user_id": "u", "messages": [
        {"role": "user", "content": "first part"}, {"role": "user", "content": "second part"},
        {"role": "assistant", "content": "ok"}]}
    report, splits = run(tmp_path, [rec], max_user_turns=1)
    assert kept_ids(splits) == ["merged"]
    assert report["conversations"]["with_merged_turns"] == 1


def test_max_turn_chars(tmp_path):
    records = [
        record("short", "a" * 40),
        record("long-user", "b" * 41),
        record("long-assistant", "c" * 10, assistant="d" * 41),
    ]
    report, splits = run(tmp_path, records, name="on", max_turn_chars=40)
    assert kept_ids(splits) == ["short"]  # a turn of exactly the limit is kept; any role counts
    assert dropped(report) == {"turn_too_long": 2}
    report, splits = run(tmp_path, records, name="off", max_turn_chars=0)
    assert len(kept_ids(splits)) == 3
    assert dropped(report) == {}


# --------------------------------------------------------------------------- dedupe
def test_exact_dedupe_keeps_first_occurrence(tmp_path):
    turns = [words(1), words(2)]
    records = [
        record("other-1"),
        record("first", turns, user="alice"),
        record("copy-2", [f"  {turns[0]}\n", turns[1]], user="bob", assistant="different answer"),
        record("other-2"),
        record("copy-3", turns, user="carol"),
        record("reordered", [turns[1], turns[0]], user="dave"),  # not the same user turns
    ]
    report, splits = run(tmp_path, records, name="on", near_dedupe=False)
    assert kept_ids(splits) == ["first", "other-1", "other-2", "reordered"]
    assert dropped(report) == {"exact_duplicate": 2}

    report, splits = run(tmp_path, records, name="off", exact_dedupe=False, near_dedupe=False)
    assert len(kept_ids(splits)) == 6
    assert dropped(report) == {}


def test_exact_dedupe_only_counts_conversations_that_pass_filters(tmp_path):
    text = words(7)
    records = [record("toxic-first", text, toxic=True), record("clean-copy", text)]
    report, splits = run(tmp_path, records, near_dedupe=False)
    assert kept_ids(splits) == ["clean-copy"]
    assert dropped(report) == {"toxic": 1}


def test_identical_copies_are_near_duplicates_without_exact_dedupe(tmp_path):
    text = words(3, 40)
    records = [record("a", text, user="x"), record("b", text, user="y"), record("c", words(4, 40), user="z")]
    report, splits = run(tmp_path, records, exact_dedupe=False)
    assert kept_ids(splits) == ["a", "c"]
    assert dropped(report) == {"near_duplicate": 1}


def _one_word_changed(seed: int, n: int = 200) -> tuple[str, str]:
    tokens = words(seed, n).split()
    changed = list(tokens)
    changed[n // 2] = "replacedword"
    return " ".join(tokens), " ".join(changed)


def test_near_dedupe_drops_copy_with_one_word_changed(tmp_path):
    original, near_copy = _one_word_changed(11)
    records = [
        record("unrelated-1", words(21, 200), user="p"),
        record("original", original, user="q"),
        record("unrelated-2", words(22, 200), user="r"),
        record("near-copy", near_copy, user="s"),
        record("unrelated-3", words(23, 200), user="t"),
    ]
    report, splits = run(tmp_path, records, name="on")
    assert kept_ids(splits) == ["original", "unrelated-1", "unrelated-2", "unrelated-3"]
    assert dropped(report) == {"near_duplicate": 1}
    assert report["near_dedupe"]["threshold"] == 0.8
    bands, rows = report["near_dedupe"]["bands_rows"]
    assert bands * rows <= report["near_dedupe"]["num_perm"]

    report, splits = run(tmp_path, records, name="off", near_dedupe=False)
    assert len(kept_ids(splits)) == 5
    assert dropped(report) == {}
    assert report["near_dedupe"] is None


def test_near_dedupe_over_multi_turn_conversations(tmp_path):
    original, near_copy = _one_word_changed(12, 60)
    turns = [words(31, 60), words(32, 60)]
    records = [record("orig", [turns[0], original, turns[1]], user="a"),
               record("copy", [turns[0], near_copy, turns[1]], user="b"),
               record("other", [turns[1], words(33, 60)], user="c")]
    report, splits = run(tmp_path, records)
    assert kept_ids(splits) == ["orig", "other"]
    assert dropped(report) == {"near_duplicate": 1}


def test_near_dedupe_threshold_one_only_drops_equal_signatures(tmp_path):
    original, near_copy = _one_word_changed(13, 30)  # one changed word spoils 3 of 28 shingles
    records = [record("orig", original, user="a"), record("copy", near_copy, user="b")]
    _report, splits = run(tmp_path, records, near_dup_threshold=1.0)
    assert kept_ids(splits) == ["copy", "orig"]


def test_near_dedupe_ignores_user_turns_without_words(tmp_path):
    records = [record("dots-1", "..."), record("dots-2", "... "), record("q-1", "???"), record("q-2", "?!")]
    _report, splits = run(tmp_path, records, exact_dedupe=False)
    assert len(kept_ids(splits)) == 4


# --------------------------------------------------------------------------- accounting
def test_report_accounts_for_every_line(tmp_path):
    a = write(tmp_path / "a.jsonl", [
        record("a1", toxic=True),
        "",
        "{not json",
        record("a2"),
        '"a bare string in an openai file"',
        {"messages": [{"role": "assistant", "content": "no user turn"}], "id": "x"},
        "   ",
        record("a3"),
    ])
    b = write(tmp_path / "b.jsonl", [
        record("b1"),
        {"messages": [{"role": "robot", "content": "beep"}]},
        b"\xff\xfe not utf-8",
        record("b2", language="French"),
    ])
    result = prepare([str(a), str(b)], tmp_path / "out", PrepareConfig(language="English"))
    report = result.report
    splits = {s: list(read_parquet(tmp_path / "out" / f"{s}.parquet")) for s in SPLIT_NAMES}
    check_report(report, splits)
    assert report["lines"]["lines_read"] == 12
    assert report["lines"]["blank_lines"] == 2
    assert report["lines"]["bad_lines"] == 5
    assert report["lines"]["records_parsed"] == 5
    assert report["conversations"]["read"] == 5
    assert dropped(report) == {"toxic": 1, "language": 1}
    assert kept_ids(splits) == ["a2", "a3", "b1"]
    assert report["formats"] == {str(a): "openai", str(b): "openai"}

    bad = [orjson.loads(line) for line in (tmp_path / "out" / "bad_lines.jsonl").read_bytes().splitlines()]
    assert [(x["file"], x["line"]) for x in bad] == [(str(a), 3), (str(a), 5), (str(a), 6), (str(b), 2), (str(b), 3)]
    assert all(isinstance(x["reason"], str) and x["reason"] for x in bad)
    assert "no user turn" in bad[2]["reason"]
    assert "robot" in bad[3]["reason"]
    assert report["bad_line_examples"] == bad
    assert report["bad_lines_file"] == "bad_lines.jsonl"
    assert sorted(report["lines"]["bad_lines_by_reason"]) == sorted(
        {"invalid JSON", "invalid UTF-8", "not a JSON object", "no user turn", "unknown role"})


def test_report_file_matches_result(tmp_path):
    src = write(tmp_path / "in.jsonl", [record(f"c{i}", user=f"u{i}") for i in range(20)])
    result = prepare([str(src)], tmp_path / "out", PrepareConfig(language="any", seed=3))
    on_disk = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert on_disk == result.report
    assert on_disk["config"]["seed"] == 3
    assert on_disk["inputs"] == [str(src)]
    assert result.out == tmp_path / "out"
    assert not (tmp_path / "out" / ".prepare-work").exists()
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"train.parquet", "validation.parquet", "test.parquet",
                                                              "report.json", "bad_lines.jsonl"}


def test_prepare_wildchat_layout(tmp_path):
    src = write_wildchat(tmp_path / "wildchat.jsonl", 400, seed=5)
    with open(src, "ab") as f:
        f.write(b"\n{truncated\n")
    result = prepare([str(src)], tmp_path / "out", PrepareConfig(language="English", drop_redacted=True))
    report = result.report
    splits = {s: list(read_parquet(tmp_path / "out" / f"{s}.parquet")) for s in SPLIT_NAMES}
    check_report(report, splits)
    assert report["formats"] == {str(src): "wildchat"}
    assert report["lines"] == {"lines_read": 402, "blank_lines": 1, "records_parsed": 400, "bad_lines": 1,
                               "bad_lines_by_reason": {"invalid JSON": 1}}
    d = report["conversations"]["dropped"]
    for reason in ("language", "toxic", "redacted", "exact_duplicate", "near_duplicate"):
        assert d[reason] > 0, reason  # the synthetic mix has all of these
    assert report["conversations"]["without_user_id"] == 0
    kept = [c for rows in splits.values() for c in rows]
    assert all(c.language == "English" and not c.toxic and not c.redacted for c in kept)
    assert len({c.id for c in kept}) == len(kept)
    # round trip: the WildChat extras survive into the split files
    assert all(c.source == "wildchat" and c.extra["header"]["user-agent"] for c in kept)
    users_by_split = [{user_key(c) for c in splits[s]} for s in SPLIT_NAMES]
    assert not (users_by_split[0] & users_by_split[1] or users_by_split[0] & users_by_split[2]
                or users_by_split[1] & users_by_split[2])


def test_user_identity_groups_agents(tmp_path):
    def wild(cid: str, ip: str, agent: str) -> dict:
        return {"conversation_hash": cid, "hashed_ip": ip, "header": {"user-agent": agent}, "country": "X",
                "language": "English", "conversation": [{"role": "user", "content": words(hash_seed(cid))},
                                                        {"role": "assistant", "content": "ok"}]}
    records = [wild("c1", "ip1", "firefox"), wild("c2", "ip1", "chrome"), wild("c3", "ip1", "firefox"),
               wild("c4", "ip2", "firefox")]
    report, _ = run(tmp_path, records, name="agent")
    assert sum(s["users"] for s in report["splits"].values()) == 3
    report, _ = run(tmp_path, records, name="user", user_identity="user")
    assert sum(s["users"] for s in report["splits"].values()) == 2


def test_conversations_without_user_id_are_counted_and_split_alone(tmp_path):
    records = [record(f"anon-{i}", user=None) for i in range(30)] + [record("known", user="someone")]
    report, splits = run(tmp_path, records, splits="50/25/25")
    assert report["conversations"]["without_user_id"] == 30
    assert sum(s["users"] for s in report["splits"].values()) == 31
    assert sum(1 for rows in splits.values() if rows) == 3  # 31 separate users spread over all splits


def test_all_dropped_writes_empty_splits(tmp_path):
    report, splits = run(tmp_path, [record("t1", toxic=True), record("t2", toxic=True)])
    assert report["conversations"]["kept"] == 0
    assert all(not rows for rows in splits.values())
    assert all(report["splits"][s] == {"conversations": 0, "users": 0, "file": f"{s}.parquet"} for s in SPLIT_NAMES)


def test_on_progress_counts_every_conversation(tmp_path):
    src = write(tmp_path / "in.jsonl", [record(f"c{i}", user=f"u{i}") for i in range(25)] + ["{bad"])
    seen: list[int] = []
    prepare([str(src)], tmp_path / "out", PrepareConfig(language="any"), on_progress=seen.append)
    assert sum(seen) == 25


def test_strict_stops_at_first_bad_line(tmp_path):
    src = write(tmp_path / "in.jsonl", [record("ok"), "{bad"])
    with pytest.raises(UserError, match="in.jsonl:2"):
        prepare([str(src)], tmp_path / "out", PrepareConfig(language="any", strict=True))


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        prepare([str(tmp_path / "missing.jsonl")], tmp_path / "out", PrepareConfig())


def test_forced_format(tmp_path):
    src = write(tmp_path / "in.jsonl", ['"just a prompt"', '"another prompt"'])
    report, _splits = run(tmp_path, [], name="empty")  # an empty input is fine
    assert report["conversations"]["read"] == 0
    result = prepare([str(src)], tmp_path / "out", PrepareConfig(language="any", format="prompts"))
    assert result.report["conversations"]["kept"] == 2
    result = prepare([str(src)], tmp_path / "out2", PrepareConfig(language="any", format="openai"))
    assert result.report["conversations"]["read"] == 0
    assert result.report["lines"]["bad_lines"] == 2


def test_reads_shared_oasst_trees(tmp_path, shared_data):
    src = shared_data / "oasst" / "en_100_tree.jsonl"
    result = prepare([str(src)], tmp_path / "on", PrepareConfig(language="en"))
    report = result.report
    splits = {s: list(read_parquet(tmp_path / "on" / f"{s}.parquet")) for s in SPLIT_NAMES}
    check_report(report, splits)
    assert report["lines"]["records_parsed"] == 100
    assert report["conversations"]["dropped"]["synthetic"] > 0  # 5 root prompts are synthetic
    kept = [c for rows in splits.values() for c in rows]
    assert kept and all(c.extra.get("synthetic") is False and c.source == "oasst" for c in kept)
    off = prepare([str(src)], tmp_path / "off", PrepareConfig(language="en", drop_synthetic=False)).report
    assert off["conversations"]["dropped"]["synthetic"] == 0
    assert off["conversations"]["kept"] > report["conversations"]["kept"]


# --------------------------------------------------------------------------- seeds
def _many_users(n: int = 300) -> list[dict]:
    countries = ["US", "DE", "FR", None]
    return [record(f"c{i}", user=f"user{i % (n // 2)}", country=countries[(i % (n // 2)) % 4]) for i in range(n)]


def _split_ids(splits: dict) -> dict[str, list[str]]:
    return {s: [c.id for c in rows] for s, rows in splits.items()}


def test_same_seed_gives_identical_splits_and_different_seed_differs(tmp_path):
    records = _many_users()
    _, first = run(tmp_path, records, name="s0a", seed=0)
    _, again = run(tmp_path, records, name="s0b", seed=0)
    _, other = run(tmp_path, records, name="s1", seed=1)
    assert _split_ids(first) == _split_ids(again)
    for split in SPLIT_NAMES:
        assert (tmp_path / "s0a" / f"{split}.parquet").read_bytes() == (tmp_path / "s0b" / f"{split}.parquet").read_bytes()
    assert _split_ids(first) != _split_ids(other)
    assert kept_ids(first) == kept_ids(other)  # the seed moves users between splits, nothing else


def test_preparing_a_prepared_folder_changes_nothing(tmp_path):
    src = write_wildchat(tmp_path / "in.jsonl", 400, seed=6)
    config = PrepareConfig(language="any", drop_redacted=True)
    first = prepare([str(src)], tmp_path / "once", config).report
    second = prepare([str(tmp_path / "once")], tmp_path / "twice", config).report
    assert second["conversations"]["kept"] == first["conversations"]["kept"] > 0
    assert not any(second["conversations"]["dropped"].values())  # filters and dedupe are idempotent
    assert set(second["formats"].values()) == {"userloop"}
    for split in SPLIT_NAMES:  # same users, same countries, same seed: same splits
        once = [c.to_dict() for c in read_parquet(tmp_path / "once" / f"{split}.parquet")]
        twice = [c.to_dict() for c in read_parquet(tmp_path / "twice" / f"{split}.parquet")]
        assert sorted(once, key=lambda c: c["id"]) == sorted(twice, key=lambda c: c["id"])


def test_rerun_into_same_folder_replaces_output(tmp_path):
    records = _many_users(60)
    _, first = run(tmp_path, records, name="out", seed=0)
    _, second = run(tmp_path, records, name="out", seed=0)
    assert _split_ids(first) == _split_ids(second)


def test_split_ratios_are_respected(tmp_path):
    records = [record(f"c{i}", user=f"u{i}", country="US") for i in range(200)]
    _report, splits = run(tmp_path, records, splits="50/30/20", near_dedupe=False)
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 100, "validation": 60, "test": 40}
    _report, splits = run(tmp_path, records, name="alltrain", splits="1/0/0", near_dedupe=False)
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 200, "validation": 0, "test": 0}


HAS_WORKERS = "workers" in {f.name for f in fields(PrepareConfig)}


def _stable(report: dict) -> dict:
    return {k: report[k] for k in ("lines", "conversations", "splits", "formats", "bad_line_examples")}


@pytest.mark.parametrize(("batch_size", "workers"), [(40, 1), (40, 2), (2048, 2)])
def test_batch_size_and_workers_do_not_change_the_result(tmp_path, monkeypatch, batch_size, workers):
    """Exact dedupe, near dedupe, users and bad lines work across chunk boundaries and processes."""
    if workers > 1 and not HAS_WORKERS:
        pytest.skip("no parallel reading")
    src = write_wildchat(tmp_path / "in.jsonl", 300, seed=9)
    with open(src, "ab") as f:
        f.write(b"{bad\n\n" + orjson.dumps(record("openai-layout-in-a-wildchat-file")) + b"\n")
    extra = {"workers": workers} if HAS_WORKERS else {}

    def once(name: str) -> tuple[dict, dict]:
        out = tmp_path / name
        report = prepare([str(src)], out, PrepareConfig(language="any", **extra)).report
        return _stable(report), {s: [c.id for c in read_parquet(out / f"{s}.parquet")] for s in SPLIT_NAMES}

    if HAS_WORKERS:
        extra["workers"] = 1
    baseline = once("baseline")
    if HAS_WORKERS:
        extra["workers"] = workers
    monkeypatch.setattr(prepare_module, "BATCH_SIZE", batch_size, raising=False)
    changed = once("changed")
    assert changed == baseline
    report = baseline[0]
    assert report["lines"]["lines_read"] == 303 and report["lines"]["bad_lines"] == 2
    assert report["conversations"]["dropped"]["exact_duplicate"] > 0
    assert report["conversations"]["dropped"]["near_duplicate"] > 0


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("options", [
    {"splits": "90/5"},
    {"splits": "90/5/5/5"},
    {"splits": "ninety/5/5"},
    {"splits": "-10/60/50"},
    {"splits": "0/0/0"},
    {"near_dup_threshold": 0.0},
    {"near_dup_threshold": -0.5},
    {"near_dup_threshold": 1.01},
    {"user_identity": "ip"},
    {"min_user_turns": 3, "max_user_turns": 2},
    {"min_user_turns": -1},
    {"max_user_turns": -1},
    {"max_turn_chars": -5},
    {"format": "csv"},
    {"language": "   "},
])
def test_bad_config_is_a_user_error(tmp_path, options):
    with pytest.raises(UserError):
        PrepareConfig(**options).validate()
    src = write(tmp_path / "in.jsonl", [record("a")])
    with pytest.raises(UserError):
        prepare([str(src)], tmp_path / "out", PrepareConfig(**options))
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("options", [
    {"splits": "0.8,0.1,0.1"},
    {"splits": "1/1/1"},
    {"near_dup_threshold": 1.0},
    {"user_identity": "user"},
    {"min_user_turns": 3, "max_user_turns": 0},  # 0: no upper limit
    {"min_user_turns": 2, "max_user_turns": 2},
    {"format": "wildchat"},
    {"language": "any"},
    {"language": None},
])
def test_good_config_validates(options):
    PrepareConfig(**options).validate()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_parallel_reading_reports_bad_lines_at_their_true_line(tmp_path, monkeypatch, suffix):
    """Workers read byte ranges (plain files) or line chunks (gzip); bad lines keep file line numbers."""
    import gzip

    lines = write_wildchat(tmp_path / "clean.jsonl", 120, seed=3).read_bytes().splitlines()
    for position in (7, 50, 51, 99):  # bad lines spread over several ranges
        lines.insert(position, b"{truncated")
    data = b"\n".join(lines) + b"\n"
    src = tmp_path / f"in{suffix}"
    src.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    monkeypatch.setattr(prepare_module, "RANGE_BYTES", 20_000)
    monkeypatch.setattr(prepare_module, "BATCH_SIZE", 16)
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        report = prepare([str(src)], out, PrepareConfig(language="any", workers=workers)).report
        bad = [orjson.loads(line) for line in (out / "bad_lines.jsonl").read_bytes().splitlines()]
        outputs[workers] = (_stable(report), bad, {s: [c.id for c in read_parquet(out / f"{s}.parquet")] for s in SPLIT_NAMES})
    assert outputs[2] == outputs[1]
    assert [b["line"] for b in outputs[1][1]] == [8, 51, 52, 100]
    with pytest.raises(UserError, match=r":8: invalid JSON"):
        prepare([str(src)], tmp_path / "strict", PrepareConfig(language="any", workers=2, strict=True))
