"""Flipping: masks only on target turns, prefix-consistent tokens, per-turn and packed give the same loss."""

import pytest

from userloop.conversation import Conversation, Message
from userloop.userlm.flip import Renderer, flip, render, user_lm_messages
from userloop.userlm.template import END_CONVERSATION, END_OF_TURN


def _conversation(intent: str | None = "You are a user who wants a recipe.") -> Conversation:
    return Conversation(
        messages=[Message("system", "You are a helpful assistant."), Message("user", "a quick rice recipe please"),
                  Message("assistant", "Fry rice with beans."), Message("user", "shorter, and add a title"),
                  Message("assistant", "Rice & beans: fry them.")],
        id="c1", intent=intent)


def _decoded_targets(tokenizer, sample):
    """The runs of mask=1 tokens, decoded."""
    runs, current = [], []
    for token, bit in zip(sample.ids, sample.mask, strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_packed_mask_covers_user_turns_and_the_end_token_only(userlm_tokenizer):
    [sample], report = flip([_conversation()], userlm_tokenizer, "packed")
    assert _decoded_targets(userlm_tokenizer, sample) == [
        "a quick rice recipe please" + END_OF_TURN, "shorter, and add a title" + END_OF_TURN, END_CONVERSATION + END_OF_TURN]
    assert (report.used, report.samples, report.targets) == (1, 1, 3)
    assert sample.mask[-2:] == [1, 1] and sample.ids[-2:] == userlm_tokenizer.convert_tokens_to_ids([END_CONVERSATION, END_OF_TURN])


def test_assistant_role_masks_assistant_turns_and_keeps_the_system_prompt(userlm_tokenizer):
    [sample], report = flip([_conversation(intent=None)], userlm_tokenizer, "packed", role="assistant")
    assert _decoded_targets(userlm_tokenizer, sample) == ["Fry rice with beans." + END_OF_TURN,
                                                          "Rice & beans: fry them." + END_OF_TURN]
    text = userlm_tokenizer.decode(sample.ids)
    assert "You are a helpful assistant." in text and END_CONVERSATION not in text
    assert (report.used, report.skipped_without_intent) == (1, 0)
    per_turn, _ = flip([_conversation()], userlm_tokenizer, "per_turn", role="assistant")
    assert [sum(s.mask) for s in per_turn] == [sum(bits) for bits in _target_runs(sample)]


def _target_runs(sample):
    runs, current = [], []
    for bit in sample.mask:
        if bit:
            current.append(bit)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_per_turn_makes_k_plus_one_samples_with_the_mask_on_the_last_target(userlm_tokenizer):
    samples, _ = flip([_conversation()], userlm_tokenizer, "per_turn")
    assert len(samples) == 3
    for sample, target in zip(samples, ["a quick rice recipe please", "shorter, and add a title", END_CONVERSATION], strict=True):
        assert _decoded_targets(userlm_tokenizer, sample) == [target + END_OF_TURN]
        assert sample.mask[-1] == 1


def test_rendering_equals_tokenising_the_template_string(userlm_tokenizer, testbed_conversations):
    renderer = Renderer(userlm_tokenizer)
    for conv in testbed_conversations[:30]:
        messages = user_lm_messages(conv, end=False)
        text = userlm_tokenizer.apply_chat_template(messages, tokenize=False)
        assert renderer.prompt(messages) == userlm_tokenizer(text, add_special_tokens=False)["input_ids"]
        [packed], _, _ = render(renderer, messages + [{"role": "user", "content": END_CONVERSATION}], "packed", 10**6)
        assert packed.ids[:len(renderer.prompt(messages))] == renderer.prompt(messages)


def test_per_turn_samples_are_prefixes_of_the_packed_sequence(userlm_tokenizer, testbed_conversations):
    for conv in testbed_conversations[:30]:
        [packed], _ = flip([conv], userlm_tokenizer, "packed", max_length=10**6)
        per_turn, _ = flip([conv], userlm_tokenizer, "per_turn", max_length=10**6)
        assert len(per_turn) == conv.n_user_turns + 1
        assert all(s.ids == packed.ids[:len(s.ids)] for s in per_turn)
        assert sum(sum(s.mask) for s in per_turn) == sum(packed.mask)


def test_per_turn_and_packed_give_the_same_summed_loss(userlm_path, userlm_tokenizer, testbed_conversations):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(userlm_path, dtype=torch.float64).eval()

    def summed_loss(samples):
        total = torch.zeros((), dtype=torch.float64)
        for s in samples:
            ids = torch.tensor([s.ids])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            total += (nll * torch.tensor(s.mask[1:], dtype=torch.float64)).sum()
        return total.item()

    conversations = testbed_conversations[:6]
    packed, _ = flip(conversations, userlm_tokenizer, "packed")
    per_turn, _ = flip(conversations, userlm_tokenizer, "per_turn")
    assert summed_loss(per_turn) == pytest.approx(summed_loss(packed), rel=1e-9)
    assert sum(len(s.ids) for s in per_turn) > 1.5 * sum(len(s.ids) for s in packed)


def test_max_length_keeps_whole_targets_and_counts_the_rest(userlm_tokenizer):
    [full], _ = flip([_conversation()], userlm_tokenizer, "packed")
    [cut], report = flip([_conversation()], userlm_tokenizer, "packed", max_length=len(full.ids) - 1)
    assert report.targets_dropped_by_max_length == 1
    assert _decoded_targets(userlm_tokenizer, cut)[-1] == "shorter, and add a title" + END_OF_TURN
    samples, report = flip([_conversation()], userlm_tokenizer, "per_turn", max_length=5)
    assert samples == [] and report.skipped_too_long == 1


def test_conversations_without_intent_are_counted_not_silently_dropped(userlm_tokenizer):
    samples, report = flip([_conversation(None), _conversation()], userlm_tokenizer, "packed")
    assert (len(samples), report.skipped_without_intent, report.used) == (1, 1, 1)
    assert "1 without an intent" in report.summary()
    samples, report = flip([_conversation(None)], userlm_tokenizer, "packed", with_intent=False)
    assert len(samples) == 1 and userlm_tokenizer.decode(samples[0].ids).count("system") == 0


def _untidy_conversations() -> list[Conversation]:
    """Real-log shapes: a source system prompt, padded turns, an empty user turn, no final reply, non-English."""
    intent = "You are a user chatting with an assistant language model to get help with a letter."
    return [
        Conversation(messages=[Message("system", "Be brief."), Message("user", "  Bonjour, une lettre ?  \n"),
                               Message("assistant", "\nBien sûr : ...  "), Message("user", "plus court")], id="a", intent=intent),
        Conversation(messages=[Message("user", "write a python function"), Message("assistant", "def f(): pass"),
                               Message("user", "   "), Message("assistant", "Anything else?"),
                               Message("user", "make it recursive"), Message("assistant", "def f(): f()")], id="b", intent=intent),
        Conversation(messages=[Message("user", "写一首关于秋天的诗"), Message("assistant", "秋风起。")], id="c", intent=intent),
        Conversation(messages=[Message("user", " ")], id="d", intent=intent),
    ]


def test_empty_turns_are_no_targets_and_unanswered_endings_get_no_end_token(userlm_tokenizer):
    samples, report = flip(_untidy_conversations(), userlm_tokenizer, "packed")
    targets = [_decoded_targets(userlm_tokenizer, s) for s in samples]
    assert targets[0] == ["Bonjour, une lettre ?" + END_OF_TURN, "plus court" + END_OF_TURN]  # no end token
    assert targets[1] == ["write a python function" + END_OF_TURN, "make it recursive" + END_OF_TURN,
                          END_CONVERSATION + END_OF_TURN]  # the empty turn stays in the context only
    assert "   " in userlm_tokenizer.decode(samples[1].ids) or "Anything else?" in userlm_tokenizer.decode(samples[1].ids)
    assert (report.conversations, report.used, report.samples) == (4, 3, 3)
    assert (report.empty_turns, report.ending_on_a_user_turn, report.skipped_without_targets) == (2, 2, 1)
    assert "1 without a non-empty user turn" in report.summary() and "unanswered" in report.summary()


def test_per_turn_and_packed_agree_on_untidy_conversations(userlm_tokenizer):
    for conv in _untidy_conversations():
        packed, _ = flip([conv], userlm_tokenizer, "packed")
        per_turn, report = flip([conv], userlm_tokenizer, "per_turn")
        assert len(per_turn) == report.targets and sum(len(p.ids) for p in packed) <= sum(len(s.ids) for s in per_turn)
        for sample in per_turn:
            assert sample.ids == packed[0].ids[:len(sample.ids)]
        assert sum(sum(s.mask) for s in per_turn) == sum(sum(p.mask) for p in packed)
        if packed:  # what the model reads equals the checkpoint's own template (padded turns trimmed alike)
            messages = user_lm_messages(conv, end=False)
            text = userlm_tokenizer.apply_chat_template(messages, tokenize=False)
            template_ids = userlm_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert Renderer(userlm_tokenizer).prompt(messages) == template_ids
            common = min(len(template_ids), len(packed[0].ids))
            assert packed[0].ids[:common] == template_ids[:common]


def test_rendering_follows_a_lookalike_template_with_two_newlines(userlm_path):
    """A look-alike whose template writes Llama-3-instruct's blank line after the header is rendered as it says."""
    from transformers import AutoTokenizer

    from userloop.userlm.flip import header_separator

    tokenizer = AutoTokenizer.from_pretrained(userlm_path)  # a fresh copy, edited below
    tokenizer.chat_template = tokenizer.chat_template.replace("<|end_header_id|>\\n", "<|end_header_id|>\\n\\n")
    assert header_separator(tokenizer) == "\n\n"
    messages = user_lm_messages(_conversation(), end=False)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert "<|end_header_id|>\n\n" in text
    assert Renderer(tokenizer).prompt(messages) == tokenizer(text, add_special_tokens=False)["input_ids"]
