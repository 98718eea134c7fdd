"""Checked anchors (userloop.rlhi.anchors): their file, their tokens and their term in the DPO loss."""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userloop.errors import UserError
from userloop.rlhi.anchors import AnchorBatches, anchor_row, read_anchors, tokenized_anchors, write_anchors
from userloop.rlhi.conditioning import persona_line
from userloop.rlhi.dpo import DPOTrainConfig, train_dpo

PERSONA = "An expert who likes brief, structured, formal answers."
ANSWER = "def add(a, b):\n    return a + b"
PAIR = {"prompt": [{"role": "user", "content": "List three primes."}],
        "chosen": [{"role": "assistant", "content": "- 2\n- 3\n- 5"}],
        "rejected": [{"role": "assistant", "content": "Sure! Two, three and five are primes, and many more."}],
        "persona": PERSONA}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from userloop.models.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "policy", hidden_size=32, layers=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors")
    pairs = root / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([PAIR] * 8), pairs)
    anchors = root / "anchors.jsonl"
    write_anchors([anchor_row([{"role": "user", "content": "Write add(a, b)."}], PERSONA, ANSWER, family="code"),
                   anchor_row([{"role": "user", "content": "What is 2 + 2?"}], None, "2 + 2 = 4.", family="math")],
                  anchors)
    return pairs, anchors


def test_an_anchor_is_labelled_on_its_answer_only_with_the_persona_in_its_prompt(tiny, files):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    rows = read_anchors(files[1])
    [(ids, labels), _] = tokenized_anchors(rows, tokenizer, persona=True, max_length=1024)
    answer = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
    prompt = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label == -100])
    assert answer.startswith(ANSWER) and "Write add" not in answer
    assert persona_line(PERSONA) in prompt and "Write add(a, b)." in prompt
    [(agnostic, _), _] = tokenized_anchors(rows, tokenizer, persona=False, max_length=1024)
    assert persona_line(PERSONA) not in tokenizer.decode(agnostic)
    [(cut, cut_labels), _] = tokenized_anchors(rows, tokenizer, persona=True, max_length=10)
    assert cut == ids[:10] and cut_labels == labels[:10]     # the start (the persona) stays


def test_anchor_batches_cycle_every_anchor_before_repeating_one(tiny, files):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokens = tokenized_anchors(read_anchors(files[1]), tokenizer, persona=True, max_length=1024)
    batches = AnchorBatches(tokens, batch_size=1, seed=0)
    seen = [tuple(batches.next("cpu")["input_ids"][0].tolist()) for _ in range(4)]
    assert set(seen[:2]) == set(seen[2:]) == {tuple(ids) for ids, _ in tokens}
    both = AnchorBatches(tokens, batch_size=2, seed=0).next("cpu")
    assert both["input_ids"].shape == both["labels"].shape == both["attention_mask"].shape
    assert (both["labels"][both["attention_mask"] == 0] == -100).all()   # padding is never a target
    assert batches.cut == 0
    with pytest.raises(UserError, match="raise --max-length"):
        AnchorBatches(tokenized_anchors(read_anchors(files[1]), tokenizer, True, 3), 1, 0)


def test_the_anchor_term_adds_the_anchors_negative_log_likelihood_to_dpo(tiny, files, tmp_path):
    """At the first update the policy is its reference, so the DPO term is log 2 and the rest is
    anchor_weight x the anchor batch's mean token NLL, which the report also gives."""
    pairs, anchors = files
    reports = {}
    for weight in (1.0, 2.0):
        reports[weight] = train_dpo(DPOTrainConfig(policy=str(tiny), pairs=str(pairs), out=str(tmp_path / f"a{weight}"),
                                                   anchors=str(anchors), anchor_weight=weight, max_steps=1, batch_size=2,
                                                   warmup=0, learning_rate=1e-2, logging_steps=1)).report
    nll = reports[1.0]["anchor_nll_last"]
    assert nll > 0.5 and reports[2.0]["anchor_nll_last"] == pytest.approx(nll, rel=1e-4)
    assert reports[1.0]["loss_last"] == pytest.approx(math.log(2) + nll, abs=1e-3)
    assert reports[2.0]["loss_last"] == pytest.approx(math.log(2) + 2 * nll, abs=1e-3)
    assert reports[1.0]["anchors"] == 2 and reports[1.0]["anchors_cut_to_no_answer"] == 0


def test_anchor_errors_are_one_line(tiny, files, tmp_path):
    pairs, anchors = files
    with pytest.raises(UserError, match="no such file"):
        DPOTrainConfig(policy=str(tiny), pairs=str(pairs), anchors=str(tmp_path / "none.jsonl")).validate()
    with pytest.raises(UserError, match="positive anchor_weight"):
        DPOTrainConfig(policy=str(tiny), pairs=str(pairs), anchors=str(anchors), anchor_weight=0).validate()
    with pytest.raises(UserError, match="needs method dpo"):
        DPOTrainConfig(policy=str(tiny), pairs=str(pairs), anchors=str(anchors), method="sft").validate()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(anchor_row([{"role": "user", "content": "q"}], None, "a")) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: not a JSON line"):
        read_anchors(bad)
    bad.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    with pytest.raises(UserError, match=r":1: an anchor needs 'prompt' and 'completion'"):
        read_anchors(bad)
    bad.write_text("\n")
    with pytest.raises(UserError, match="no anchors in it"):
        read_anchors(bad)
