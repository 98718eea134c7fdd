"""What the trainers share: the bf16 rule, the LM head that scores labelled positions only (on a CPU), large
allocations returned to the system when freed."""

import platform
import subprocess
import sys
from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from userloop.train.common import _right_padded, cpu_has_native_bf16, score_labelled_positions, use_bf16


@pytest.mark.parametrize(("flags", "native"), [("fpu avx2 avx512f avx512bw", False), ("fpu avx2 avx512f avx512_bf16", True),
                                               ("fpu avx2 amx_bf16 amx_tile", True), ("fpu sse2 avx2", False)])
def test_bf16_is_native_only_with_avx512_bf16_or_amx(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_explicit_bf16_settings_win():
    assert use_bf16("true") is True and use_bf16("false") is False


def _tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=True))


@pytest.mark.parametrize(("num_items_in_batch", "padding"), [(None, "right"), (7, "right"), (None, "left")])
def test_labelled_positions_head_matches_trls_fused_head(num_items_in_batch, padding):
    """Same per-token log-probabilities, entropy, mean logit, top-1 flags, loss and gradients as TRL's head
    (which always applies the attention mask; ours drops a right-padded batch's)."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    trl_model, ours = _tiny_llama(), _tiny_llama()
    add_fused_lm_head(trl_model, outputs=outputs)
    add_fused_lm_head(ours, outputs=outputs)
    score_labelled_positions(SimpleNamespace(args=SimpleNamespace(device=torch.device("cpu")), model=ours,
                                             accelerator=SimpleNamespace(autocast=nullcontext)))
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 300, (3, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    padded = slice(11, None) if padding == "right" else slice(None, 5)
    attention_mask[1, padded] = 0
    labels = input_ids.masked_fill(torch.rand(input_ids.shape, generator=generator) < 0.5, -100)
    labels[1, padded] = -100
    results = []
    for model in (trl_model, ours):
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                    num_items_in_batch=num_items_in_batch)
        out.loss.backward()
        results.append((out, {name: p.grad.clone() for name, p in model.named_parameters()}))
    (theirs, their_grads), (mine, my_grads) = results
    for field in ("loss", "log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(mine, field), getattr(theirs, field), rtol=1e-5, atol=1e-5)
    assert torch.equal(mine.is_top1, theirs.is_top1) and torch.equal(mine.label_mask, theirs.label_mask)
    for name, grad in their_grads.items():
        torch.testing.assert_close(my_grads[name], grad, rtol=1e-4, atol=1e-6)
    plain = trl_model(input_ids=input_ids, attention_mask=attention_mask)  # without fused_lm_head: the model's own forward
    assert plain.logits.shape == ours(input_ids=input_ids).logits.shape == (3, 16, 300)


def test_right_padding_is_recognised():
    import torch

    assert _right_padded(torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]]))
    assert not _right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))  # left padding keeps its mask
    assert not _right_padded(torch.tensor([[1, 0, 1]])) and not _right_padded(None)
    assert not _right_padded(torch.ones(1, 1, 3, 3))  # a 4-D mask is kept as it is


_HOLES = """
import sys

from userloop.train.common import large_allocations_mapped

scope = large_allocations_mapped()
if sys.argv[1] == "mapped":     # inside a training's scope
    scope.__enter__()
elif sys.argv[1] == "restored":  # after one
    with large_allocations_mapped():
        pass


def resident_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))


block = 4 << 20
large = b"x" * (16 << 20)
del large  # a large block freed: glibc's own threshold rises above the blocks below
kept, freed = [], []
for index in range(40):  # interleaved: the freed blocks are holes between kept ones, not the top of the heap
    (kept if index % 2 else freed).append(b"x" * block)
before = resident_kib()
freed.clear()
print((before - resident_kib()) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_large_blocks_go_back_to_the_system_while_training_only():
    """Within :func:`large_allocations_mapped`, 20 freed 4 MiB blocks between kept ones (a batch's activations)
    leave the resident memory at once; after it the thresholds are glibc's own again (blocks this size come
    from its heap and their holes stay, as in a process that never trained, where generation is faster)."""
    def returned_mib(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", _HOLES, mode], capture_output=True, text=True,
                                  check=True).stdout)

    assert returned_mib("mapped") >= 76
    assert returned_mib("restored") <= 8 and returned_mib("default") <= 8


def test_the_process_group_a_launcher_made_ends_with_the_command(tmp_path):
    """``accelerate launch`` leaves a gloo process group; the training commands destroy it before exiting."""
    import torch.distributed as dist

    from userloop.train.common import end_process_group

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    end_process_group()                                                          # none: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_process_group()
    assert not dist.is_initialized()
